"""Seeded random SIGKILLs during a figure-2 run; every resumed result must equal the uninterrupted one.

    python -m tests.kill_resume [--kills 50] [--per-figure 5] [--seed 0] [--root DIR] [--timeout 3600]

A reference figure is computed once, uninterrupted.  Then, figure after figure in fresh
results roots, ``per_figure`` kill points are drawn uniformly over the figure's logged rows
(as fractions of the reference's CSV bytes, summed over its runs) and sorted; the figure is
started again and again, each process killed with SIGKILL once the rows pass the next
point, plus a random 0-50 ms, so kills land anywhere in the computation, between and
during file writes.  After every kill, each run's CSV must start
with exactly the bytes of the reference CSV up to what its checkpoint records; after the
last kill point the figure is left to finish, and every run CSV and the merged CSV must
be byte-identical to the reference.  This repeats until ``kills`` kills happened (or
``timeout`` seconds passed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# chunk_size is not part of a run's identity: smaller chunks mean more checkpoints to hit.
ARGS = ["figure=figure2", "profile=quick", "train.chunk_size=50"]


def _start(results_root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.reproduce", *ARGS, f"results_root={results_root}"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _csv_sizes(fig_dir: Path) -> int:
    total = 0
    for path in fig_dir.glob("runs/*/metrics.csv"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # replaced at this very moment
            pass
    return total


def _checkpoint_bytes(path: Path) -> int:
    with np.load(path) as data:
        return int(json.loads(bytes(data["__meta__"]).decode())["csv_bytes"])


def _verified_prefixes_match(fig_dir: Path, ref_dir: Path) -> list[str]:
    """Runs whose CSV, up to the size its checkpoint records, differs from the reference."""
    bad = []
    for ck in fig_dir.glob("runs/*/checkpoint.npz"):
        size = _checkpoint_bytes(ck)
        mine = (ck.parent / "metrics.csv").read_bytes()[:size]
        ref = (ref_dir / "runs" / ck.parent.name / "metrics.csv").read_bytes()[:size]
        if len(mine) != size or mine != ref:
            bad.append(ck.parent.name)
    return bad


def _identical(fig_dir: Path, ref_dir: Path) -> list[str]:
    """Files of a finished figure that differ from the reference."""
    names = ["metrics.csv", *(f"runs/{p.name}/metrics.csv" for p in (ref_dir / "runs").iterdir())]
    return [n for n in names if (fig_dir / n).read_bytes() != (ref_dir / n).read_bytes()]


def run(root: Path, kills: int = 50, seed: int = 0, timeout: float = 3600.0, per_figure: int = 5) -> dict:
    """Do the experiment under ``root``; returns a report (``identical`` is the verdict)."""
    root = Path(root)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    ref = _start(root / "reference")
    _, err = ref.communicate()
    if ref.returncode != 0:
        raise RuntimeError(f"reference run failed ({ref.returncode}): {err[-2000:]}")
    ref_wall = time.perf_counter() - t0
    ref_dir = root / "reference" / "quick" / "figure2"
    total = _csv_sizes(ref_dir)
    report = {"kills": 0, "figures_completed": 0, "restarts": 0, "mismatches": [], "errors": [],
              "reference_wall_s": round(ref_wall, 1), "kill_points": []}
    deadline = time.perf_counter() + timeout
    cycle = 0
    while report["kills"] < kills and time.perf_counter() < deadline:
        fig_root = root / f"killed-{cycle}"
        fig_dir = fig_root / "quick" / "figure2"
        points = sorted(rng.uniform(0.0, 1.0) for _ in range(min(per_figure, kills - report["kills"])))
        while time.perf_counter() < deadline:
            targets = [p for p in points if p * total > _csv_sizes(fig_dir)]
            proc = _start(fig_root)
            report["restarts"] += 1
            if targets:
                points = targets[1:]
                while proc.poll() is None and _csv_sizes(fig_dir) < targets[0] * total:
                    time.sleep(0.002)
                time.sleep(rng.uniform(0.0, 0.05))
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                    report["kills"] += 1
                    report["kill_points"].append(round(_csv_sizes(fig_dir) / total, 3))
                    bad = _verified_prefixes_match(fig_dir, ref_dir)
                    if bad:
                        report["mismatches"].append({"after_kill": report["kills"], "runs": bad})
                    continue
            _, err = proc.communicate()
            if proc.returncode != 0:
                report["errors"].append(err.strip()[-500:])
                break
            report["figures_completed"] += 1
            differ = _identical(fig_dir, ref_dir)
            if differ:
                report["mismatches"].append({"completed_figure": cycle, "files": differ})
            break
        if report["errors"]:
            break
        shutil.rmtree(fig_root)
        cycle += 1
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    report["identical"] = not report["mismatches"] and not report["errors"] and report["kills"] == kills
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--per-figure", type=int, default=5, help="kill points per figure computed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before giving up")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="kill_resume-"))
    report = run(root, args.kills, args.seed, args.timeout, args.per_figure)
    print(json.dumps({k: v for k, v in report.items() if k != "kill_points"}, indent=2))
    points = np.array(report["kill_points"])
    if len(points):
        print(f"kill points (fraction of the figure's rows logged): min {points.min():.2f}, "
              f"median {np.median(points):.2f}, max {points.max():.2f}")
    sys.exit(0 if report["identical"] else 1)


if __name__ == "__main__":
    main()
