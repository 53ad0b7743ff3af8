"""Side-by-side wall time of `experiments.reproduce` in two checkouts (A/B), interleaved.

    python benchmarks/runner_ab.py A_DIR B_DIR [--pairs 6] [--figure figure2] [--profile quick]

Each pair runs A then B (B then A on odd pairs) in fresh results roots, so drifting load
hits both alike.  Per process it records the wall time, the sum of the runs' ``wall_time_s``
from run.json (the runner's own time, imports excluded) and the 1-minute load average
before the start.  Prints one line per process and the median ratio B/A of both times.
Each checkout runs with its own ``.venv/bin/python`` and ``PYTHONPATH`` set to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def _once(repo: Path, figure: str, profile: str) -> dict:
    root = Path(tempfile.mkdtemp(prefix="runner_ab-"))
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run(
        [str(repo / ".venv/bin/python"), "-m", "experiments.reproduce", f"figure={figure}",
         f"profile={profile}", f"results_root={root}", "progress=false"],
        cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)), capture_output=True, text=True,
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{repo}: exit {out.returncode}: {out.stderr[-2000:]}")
    runner = sum(
        json.loads(p.read_text())["wall_time_s"] for p in root.glob(f"{profile}/{figure}/runs/*/run.json")
    )
    shutil.rmtree(root)
    return {"wall_s": wall, "runner_s": runner, "load1": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--figure", default="figure2")
    parser.add_argument("--profile", default="quick")
    args = parser.parse_args()
    rows = {"A": [], "B": []}
    for i in range(args.pairs):
        order = ("A", "B") if i % 2 == 0 else ("B", "A")
        for side in order:
            r = _once(args.a if side == "A" else args.b, args.figure, args.profile)
            rows[side].append(r)
            print(f"pair {i} {side}: wall {r['wall_s']:.2f} s, runner {r['runner_s']:.2f} s, "
                  f"load {r['load1']:.1f}", flush=True)
    for key in ("wall_s", "runner_s"):
        ratios = [b[key] / a[key] for a, b in zip(rows["A"], rows["B"])]
        med_a = statistics.median(r[key] for r in rows["A"])
        med_b = statistics.median(r[key] for r in rows["B"])
        print(f"{key}: median A {med_a:.2f}, median B {med_b:.2f}, median pairwise B/A "
              f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
