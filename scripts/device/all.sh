#!/usr/bin/env bash
# The three pilots back to back on a GPU machine, each time-boxed (540 s in all), to measure
# paper-scale costs before committing to a full run:
#   bench (150 s), figure 7 paper_fashion pilot (250 s: 12 runs x ITERS7 iterations, seeds
#   batched), figure 5 paper_fashion pilot (140 s: 8 runs x ITERS5 iterations, no post step).
# On the GPU machine, in a copy of the repository that includes .device/ (filled by
# `bash scripts/device/prepare.sh` on a machine that has the data and the .venv):
#   OUT=/path/to/outputs bash scripts/device/all.sh
# Writes to $OUT: bench.csv, figure7_metrics.csv, figure7_runs.json,
# figure5_metrics.csv, figure5_runs.json, all.log (every job's log), device.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:?set OUT}
{
  BUDGET=${BUDGET_BENCH:-150} bash scripts/device/bench.sh
  ITERS=${ITERS7:-1000} EVERY=${EVERY7:-500} BUDGET=${BUDGET7:-250} bash scripts/device/figure7_paper_fashion.sh
  ITERS=${ITERS5:-40} EVERY=${EVERY5:-10} POST=0 BUDGET=${BUDGET5:-140} bash scripts/device/figure5_paper_fashion.sh
} > "$OUT/all.log" 2>&1
rm -f "$OUT"/bench.log "$OUT"/figure7.log "$OUT"/figure5.log  # already in all.log
tail -n 40 "$OUT/all.log"
