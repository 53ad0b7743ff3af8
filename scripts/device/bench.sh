#!/usr/bin/env bash
# Device job: `make bench`'s default grid (ours vs evosax-in-scan and evosax-loop at every N, K
# and theta dimension), on the accelerator.  Brings back bench.csv, bench.log, device.txt.
#   BUDGET  seconds (default 400); TINY=1: the --tiny grid (CPU test)
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/device/env.sh
BUDGET=${BUDGET:-400}
extra=()
[ "${TINY:-0}" = 1 ] && extra=(--tiny)
timeout "$BUDGET" "$PYTHON" benchmarks/bench.py --devices 1 --out "$OUT/bench" "${extra[@]}" 2>&1 | tee "$OUT/bench.log"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && echo "bench stopped by BUDGET=$BUDGET s (bench.csv is written at the end: none)" | tee -a "$OUT/bench.log"
[ -f "$OUT/bench/bench.csv" ] && mv "$OUT/bench/bench.csv" "$OUT/bench.csv"
rmdir "$OUT/bench" 2>/dev/null
exit "$rc"
