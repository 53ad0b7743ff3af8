#!/usr/bin/env bash
# Device job: figure 5, profile paper_fashion (Fashion-MNIST 28x28, 784-100-100-10, T=5000,
# N=1000, sigma 0.1, Adam 1e-2), 8 runs (ES/PES, K=10/100, train loss / val accuracy); runs
# with equal settings but seeds would batch (experiments.batched; here each run is its own
# group), then the merge and the post step (background grid, final-theta evaluations).
#   ITERS   outer iterations per run (default 5000, the profile's; a pilot: 100)
#   EVERY   theta logged every this many iterations (default 2)
#   POST    1 (default): merge and run the post step (background grid 40x40 x 10 trainings,
#           evaluations) after the runs; 0: runs only (a pilot; the grid's cost is then the
#           cost model's, benchmarks/cost_model.py)
#   BUDGET  seconds for the whole job (default 540)
#   TINY=1  CPU test sizes (POST defaults to 0)
# Brings back: figure5_metrics.csv, figure5_grid.csv, figure5_evaluation.csv,
# figure5_runs.json, figure5.log, device.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/device/env.sh
ITERS=${ITERS:-5000}; EVERY=${EVERY:-2}; BUDGET=${BUDGET:-540}
POST=${POST:-$([ "${TINY:-0}" = 1 ] && echo 0 || echo 1)}
ROOT_RESULTS=${RESULTS:-/tmp/pes_results}
args=(figure=figure5 profile=paper_fashion "results_root=$ROOT_RESULTS" progress=false
      "train.num_outer_steps=$ITERS" "train.log_every=$EVERY" "train.chunk_size=$((ITERS < 250 ? ITERS : 250))")
if [ "${TINY:-0}" = 1 ]; then
  args+=(task.horizon=100 task.hidden=[8] task.batch_size=8 task.objective_batch_size=8 task.num_val=100
         estimator.num_particles=4)
fi
start=$(date +%s)
timeout "$BUDGET" "$PYTHON" -m experiments.batched "${args[@]}" 2>&1 | tee "$OUT/figure5.log"
[ "${PIPESTATUS[0]}" = 124 ] && echo "runs stopped by BUDGET=$BUDGET s; rerun to resume" | tee -a "$OUT/figure5.log"
left=$((BUDGET - ($(date +%s) - start)))
if [ "$POST" = 1 ] && [ "$left" -gt 5 ]; then
  timeout "$left" "$PYTHON" -m experiments.reproduce "${args[@]}" 2>&1 | tee -a "$OUT/figure5.log"
fi
fig="$ROOT_RESULTS/paper_fashion/figure5"
for f in grid evaluation; do [ -f "$fig/$f.csv" ] && cp "$fig/$f.csv" "$OUT/figure5_$f.csv"; done
if [ -f "$fig/metrics.csv" ]; then
  cp "$fig/metrics.csv" "$OUT/figure5_metrics.csv"
  "$PYTHON" scripts/device/collect_runs.py "$fig" "$OUT/figure5_runs.json"
else
  "$PYTHON" scripts/device/collect_runs.py "$fig" "$OUT/figure5_runs.json" --csv "$OUT/figure5_metrics.csv"
fi
echo "figure5 paper_fashion: $(( $(date +%s) - start )) s" | tee -a "$OUT/figure5.log"
