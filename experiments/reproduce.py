"""Reproduce one paper figure: run its explicit run list, then merge the CSVs.

    python -m experiments.reproduce figure=figure2 profile=quick [results_root=...] [any override]

Runs are composed exactly like single runs (configs/figure/<figure>.yaml lists them);
finished runs are skipped and interrupted ones resume, so rerunning is cheap.  The merged
table goes to <results_root>/<profile>/<figure>/metrics.csv.  A figure config with
``kind: variance`` is handed to `experiments.variance` (the PES variance study).
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from experiments import cli


def parse(argv: list[str]) -> tuple[str, str, list[str]]:
    from experiments import config as C

    figure, profile, extra = None, "quick", []
    for arg in argv:
        if arg.startswith("figure="):
            figure = arg.split("=", 1)[1]
        elif arg.startswith("profile="):
            profile = arg.split("=", 1)[1]
        else:
            extra.append(arg)
    if figure is None:
        raise C.ConfigError(f"figure=<name> is required; allowed: {', '.join(C.figure_names())}")
    return figure, profile, extra


def figure_dir(results_root: str, profile: str, figure_id: str) -> Path:
    return Path(str(results_root)) / profile / figure_id


def reproduce(figure: str, profile: str = "quick", extra: list[str] = ()) -> Path:
    """Run (or resume) every run of ``figure`` and write the merged CSV; returns its path."""
    import pandas as pd

    from experiments import config as C
    from experiments import io, runner
    from pes import results

    fig = C.load_figure(figure)
    if fig.get("kind", "runs") == "variance":  # a measurement, not optimisation runs
        from experiments import variance

        return variance.reproduce(fig, profile, extra)
    if fig.get("grid") is not None:  # check the grid settings early; `grid.<key>=` args are its own
        from experiments import grid

        grid.grid_settings(fig, profile, list(extra))
    run_extra = [a for a in extra if not a.startswith("grid.")]
    runs = C.figure_runs(fig, profile)
    cfgs = []
    for run in runs:  # compose and validate every run before computing anything
        cfg = C.compose(C.figure_run_overrides(fig, run, profile, run_extra))
        C.build(cfg)
        runner.check(cfg)  # the run folder is usable and holds this config (or overwrite=true)
        cfgs.append(cfg)
    frames, allowed = [], _nonfinite_ok(fig)
    for i, cfg in enumerate(cfgs, 1):
        t0 = time.perf_counter()
        out = runner.run(cfg)
        meta = io.read_json(out / runner.META) or {}
        status = meta.get("status")
        if status == "diverged":
            status = f"diverged at outer step {meta.get('diverged_at_outer_step')} (rows kept, marked)"
        print(
            f"[{i}/{len(cfgs)}] {fig.id} {cfg.run_id}: {status} "
            f"({time.perf_counter() - t0:.1f} s now, {meta.get('wall_time_s', 0):.1f} s total) -> {out}",
            file=sys.stderr,
        )
        diverged = meta.get("status") == "diverged"  # NaN allowed in its rows; it ends with a marker row
        df = io.read_csv(out / runner.CSV, fix=f"delete {out} and rerun", any_nonfinite=diverged,
                         allow_nonfinite=allowed)
        if diverged:
            allowed = sorted(set(allowed) | set(df["metric"]))
        frames.append(df)
    merged = results.validate(
        pd.concat(frames, ignore_index=True), expected_runs=[r.id for r in runs], allow_nonfinite=allowed
    )
    path = figure_dir(cfgs[0].results_root, profile, fig.id) / "metrics.csv"
    io.atomic_write_text(path, merged.to_csv(index=False))
    if fig.get("grid") is not None:  # background surface (e.g. figure 3): grid.csv beside metrics.csv
        grid.figure_grid(fig, profile, list(extra), results_root=str(cfgs[0].results_root))
    if fig.get("post"):  # figure-specific steps after the runs (figure 5: grid, evaluations)
        importlib.import_module(str(fig.post)).run(fig, profile, list(extra), path)
    print(path)
    return path


def _nonfinite_ok(fig) -> list[str]:
    return list(fig.get("allow_nonfinite", []) or [])


def main() -> None:
    cli.main(lambda: reproduce(*parse(sys.argv[1:])), preload=("pandas", "experiments.runner"))


if __name__ == "__main__":
    main()
