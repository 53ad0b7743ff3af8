#!/usr/bin/env bash
# One device call for a short lease (the 15-minute budget): the three pilots back to back,
# each time-boxed, 540 s in all, so the call ends inside its 600 s limit.
#   bench (150 s), figure 7 paper_fashion pilot (250 s: 12 runs x ITERS7 iterations, seeds
#   batched), figure 5 paper_fashion pilot (140 s: 8 runs x ITERS5 iterations, no post step).
# Device call: command "bash scripts/device/all.sh", carry [".device"], timeout_s 600
# (after `bash scripts/device/prepare.sh` here).  Files back: bench.csv, figure7_metrics.csv,
# figure7_runs.json, judged.json, figure5_metrics.csv, figure5_runs.json, all.log, device.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:?set OUT}
{
  BUDGET=${BUDGET_BENCH:-150} bash scripts/device/bench.sh
  ITERS=${ITERS7:-1000} EVERY=${EVERY7:-500} BUDGET=${BUDGET7:-250} bash scripts/device/figure7_paper_fashion.sh
  ITERS=${ITERS5:-40} EVERY=${EVERY5:-10} POST=0 BUDGET=${BUDGET5:-140} bash scripts/device/figure5_paper_fashion.sh
} > "$OUT/all.log" 2>&1
rm -f "$OUT"/bench.log "$OUT"/figure7.log "$OUT"/figure5.log  # in all.log; keeps $OUT within 8 files
tail -n 40 "$OUT/all.log"
