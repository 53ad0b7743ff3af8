"""Summarise a figure's run directories for a device job's $OUT (reads results only).

    python scripts/device/collect_runs.py <results>/<profile>/<figure> OUT.json [--csv OUT.csv]

Writes per run: status, wall time, outer steps done, the batch it ran in, the machine; with
``--csv`` also the runs' metrics.csv files concatenated (when the merged CSV is missing, e.g.
a job stopped by its time budget).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figure_dir")
    parser.add_argument("out")
    parser.add_argument("--csv", default=None)
    args = parser.parse_args(argv)
    runs = Path(args.figure_dir) / "runs"
    out, frames = {}, []
    for d in sorted(runs.glob("*")) if runs.exists() else []:
        meta = json.loads((d / "run.json").read_text()) if (d / "run.json").exists() else {}
        rows = pd.read_csv(d / "metrics.csv") if (d / "metrics.csv").exists() else pd.DataFrame()
        frames.append(rows)
        out[d.name] = {
            "status": meta.get("status"),
            "wall_time_s": meta.get("wall_time_s"),
            "batch_wall_time_s": meta.get("batch_wall_time_s"),
            "batched_with": meta.get("batched_with"),
            "outer_steps_done": int(rows["outer_step"].max()) if len(rows) else 0,
            "num_outer_steps": (meta.get("config") or {}).get("train", {}).get("num_outer_steps"),
            "machine": meta.get("machine"),
            "packages": meta.get("packages"),
        }
    Path(args.out).write_text(json.dumps(out, indent=1))
    if args.csv and frames:
        pd.concat(frames, ignore_index=True).to_csv(args.csv, index=False)
    summary = ", ".join(f"{k} {v['status']} {v['outer_steps_done']}" for k, v in out.items())
    print(f"{len(out)} runs: {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
