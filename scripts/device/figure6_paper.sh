#!/usr/bin/env bash
# Device job: figure 6, profile paper (real Fashion-MNIST 28x28, MLP 5x100, T=1000, 29
# hyperparameters; PES and truncated ES with K=10, N=10, sigma 0.3, Adam 1e-2; seeds 3, 5, 7, 11),
# the 8 runs batched by seed (experiments.batched: one compiled call per method), then the merge,
# the compute axis and random search (configurations vmapped, random_search.chunk_size at a time).
#   ITERS   outer iterations per run (default 50000, the profile's; a pilot: 500)
#   EVERY   log every this many iterations (default 100, the figure's)
#   RS      random-search configurations (default 10000, the figure's; a pilot: 64)
#   RSCHUNK configurations per compiled call (default 8, the figure's)
#   BUDGET  seconds for the whole job (default 540)
#   TINY=1  CPU test sizes
# Brings back: figure6_metrics.csv, figure6_random_search.csv, figure6_runs.json, figure6.log,
# device.txt.  The runs resume where a previous call stopped (same RESULTS folder on a warm
# machine); random search is cached once complete.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/device/env.sh
ITERS=${ITERS:-50000}; EVERY=${EVERY:-100}; RS=${RS:-10000}; RSCHUNK=${RSCHUNK:-8}; BUDGET=${BUDGET:-540}
ROOT_RESULTS=${RESULTS:-/tmp/pes_results}
args=(figure=figure6 profile=paper "results_root=$ROOT_RESULTS" progress=false
      "train.num_outer_steps=$ITERS" "train.log_every=$EVERY" "train.chunk_size=$((EVERY * 10 < ITERS ? EVERY * 10 : ITERS))")
if [ "${TINY:-0}" = 1 ]; then
  args+=(task.num_val=40 task.horizon=8 task.batch_size=8 task.objective_batch_size=8 "task.hidden=[6,5]"
         task.downsample=4 task.num_eval_runs=2 estimator.trunc_len=4 estimator.num_particles=4)
fi
start=$(date +%s)
timeout "$BUDGET" "$PYTHON" -m experiments.batched "${args[@]}" 2>&1 | tee "$OUT/figure6.log"
[ "${PIPESTATUS[0]}" = 124 ] && echo "runs stopped by BUDGET=$BUDGET s; rerun to resume" | tee -a "$OUT/figure6.log"
left=$((BUDGET - ($(date +%s) - start)))
if [ "$left" -gt 5 ]; then
  timeout "$left" "$PYTHON" -m experiments.reproduce "${args[@]}" "random_search.num_configs=$RS" \
    "random_search.chunk_size=$RSCHUNK" 2>&1 | tee -a "$OUT/figure6.log"
fi
fig="$ROOT_RESULTS/paper/figure6"
[ -f "$fig/random_search_configs.csv" ] && cp "$fig/random_search_configs.csv" "$OUT/figure6_random_search.csv"
if [ -f "$fig/metrics.csv" ]; then
  cp "$fig/metrics.csv" "$OUT/figure6_metrics.csv"
  "$PYTHON" scripts/device/collect_runs.py "$fig" "$OUT/figure6_runs.json"
  "$PYTHON" -m experiments.check figure=figure6 profile=paper "results_root=$ROOT_RESULTS" report_only=true \
    >> "$OUT/figure6.log" 2>&1
else  # stopped by the budget before the merge: the runs' rows as they are
  "$PYTHON" scripts/device/collect_runs.py "$fig" "$OUT/figure6_runs.json" --csv "$OUT/figure6_metrics.csv"
fi
echo "figure6 paper: $(( $(date +%s) - start )) s" | tee -a "$OUT/figure6.log"
