#!/usr/bin/env bash
# Device job: figure 7, profile paper_fashion (Fashion-MNIST through CIFAR-10 8x8 colour's
# shapes, 256 particles, K=10, T=1000), 6 LOpt inits x {PES, truncated ES}, each method's
# seeds batched in one compiled call (experiments.batched), then the figure's merge and post
# step (tuned Adam, inner curves) by experiments.reproduce.
#   ITERS   outer iterations per run (default 100000, the profile's; a pilot: 2000)
#   EVERY   evaluation every this many iterations (default 1000)
#   BUDGET  seconds for the whole job (default 540): the runs stop there and resume on a rerun
#   TINY=1  CPU test sizes (seconds)
# Brings back (under $OUT): figure7_metrics.csv (merged), figure7_runs.json (per-run status and
# wall time), figure7.log (ending with the figure's claims table, experiments.check), device.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/device/env.sh
ITERS=${ITERS:-100000}; EVERY=${EVERY:-1000}; BUDGET=${BUDGET:-540}
ROOT_RESULTS=${RESULTS:-/tmp/pes_results}
args=(figure=figure7 profile=paper_fashion "results_root=$ROOT_RESULTS" progress=false
      "train.num_outer_steps=$ITERS" "train.log_every=$EVERY" "train.chunk_size=$((EVERY * 5 < ITERS ? EVERY * 5 : ITERS))")
if [ "${TINY:-0}" = 1 ]; then
  args+=(task.horizon=20 task.batch_size=16 task.num_eval_runs=2 task.hidden=[8] estimator.trunc_len=5
         estimator.num_particles=4)
fi
start=$(date +%s)
timeout "$BUDGET" "$PYTHON" -m experiments.batched "${args[@]}" max_batch=6 2>&1 | tee "$OUT/figure7.log"
[ "${PIPESTATUS[0]}" = 124 ] && echo "runs stopped by BUDGET=$BUDGET s; rerun to resume" | tee -a "$OUT/figure7.log"
left=$((BUDGET - ($(date +%s) - start)))
if [ "$left" -gt 5 ]; then
  timeout "$left" "$PYTHON" -m experiments.reproduce "${args[@]}" 2>&1 | tee -a "$OUT/figure7.log"
fi
fig="$ROOT_RESULTS/paper_fashion/figure7"
if [ -f "$fig/metrics.csv" ]; then
  cp "$fig/metrics.csv" "$OUT/figure7_metrics.csv"
  "$PYTHON" scripts/device/collect_runs.py "$fig" "$OUT/figure7_runs.json"
else  # stopped by the budget before the merge: the runs' rows as they are
  "$PYTHON" scripts/device/collect_runs.py "$fig" "$OUT/figure7_runs.json" --csv "$OUT/figure7_metrics.csv"
fi
if [ -f "$fig/metrics.csv" ]; then  # the figure's claims (configs/figure/figure7.yaml) on the merged results
  "$PYTHON" -m experiments.check figure=figure7 profile=paper_fashion "results_root=$ROOT_RESULTS" report_only=true \
    >> "$OUT/figure7.log" 2>&1
fi
echo "figure7 paper_fashion: $(( $(date +%s) - start )) s" | tee -a "$OUT/figure7.log"
