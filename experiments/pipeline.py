"""The figure pipeline: one paper figure's runs, its post-steps, one merged table, the plot.

`experiments.reproduce` is its command line.  Every figure goes through the same stages:

1. check, in the suite's validation order (`prepare`): the YAML against the figure schema
   (`experiments.figures`), every run composed and every post-step's settings checked
   (`experiments.steps`), then every run's spec built (`config.RunSpec`: a missing dataset
   fails here, after every setting) and every post-step prepared: any problem is a one-line
   error before anything is computed;
2. runs, in order, through `experiments.runner` (`run_all`: a finished run is verified, then
   skipped; an interrupted one resumes from its checkpoint; a diverged one is merged with its
   rows and its ``diverged`` marker row);
3. post-steps, in order (`run_step`): each writes its rows ``<fig_dir>/steps/<step>.csv``, its
   record ``<fig_dir>/steps/<step>.json`` and extra tables ``<fig_dir>/<table>.csv``
   (``grid.csv``), and is reused while the fingerprint of its settings and inputs is
   unchanged (the artefact cache of `experiments.artefacts`);
4. merge: the runs' rows and the post-steps' rows in ``<fig_dir>/metrics.csv``, with the
   column ``source`` (``run`` or the step's name; `pes.results.FIGURE_COLUMNS`);
5. plot: ``<plot script> <metrics.csv> <results_root>/<profile>/figures/<figure>.png``;
6. ``<fig_dir>/figure.json``: the record of the whole (`figure_record`).

``<fig_dir>`` is ``<results_root>/<profile>/<figure id>``.  One command per figure and results
folder at a time: another waits (`figure_lock`).  `experiments.launch` runs stages 2 and 3 as
jobs of a Hydra launcher first, then hands its plan to `reproduce`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import yaml
from omegaconf import DictConfig

from experiments import artefacts, cli, config, figures, integrity, io, runner, sizes, steps
from pes import results

RECORD = "figure.json"
STEPS = "steps"  # <fig_dir>/steps/<step>.csv (rows) and <step>.json (record), beside runs/


class PlotFailed(cli.Problem):
    """The plot script failed; the merged table is kept."""


class PreparedStep(NamedTuple):
    step: steps.PostStep
    settings: dict
    plan: Any


class Plan(NamedTuple):
    fig: DictConfig
    where: str
    ctx: steps.Context
    cfg: DictConfig  # the figure's own config (results_root, progress, resume)
    steps: list[PreparedStep]
    size_estimate: dict | None = None  # rows and bytes the runs will write (`experiments.sizes`)
    run_configs: tuple[DictConfig, ...] = ()  # the runs' composed configs (order of ctx.runs), for jobs


# ----------------------------------------------------------------------------- command line


def parse(argv: Sequence[str]) -> tuple[str, str, list[str], bool]:
    """(figure, profile, other arguments, plot?) from ``key=value`` arguments."""
    figure, profile, plot, extra = None, "quick", True, []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "figure":
            figure = value
        elif key == "profile":
            profile = value
        elif key == "plot":
            if value.lower() not in ("true", "false"):
                raise config.ConfigError(f"plot={value} is invalid; allowed: true, false")
            plot = value.lower() == "true"
        else:
            extra.append(arg)
    if figure is None:
        raise config.ConfigError(
            f"figure=<name> is required; allowed: {', '.join(figures.figure_names())} or a figure YAML path"
        )
    return figure, profile, extra, plot


def split_changes(fig: DictConfig, extra: Sequence[str]) -> tuple[list[str], dict[str, dict]]:
    """Hydra overrides, and ``<step>.<setting>=<value>`` changes per post-step of ``fig``."""
    in_figure = [str(p.step) for p in fig.get("post") or []]
    registered = steps.names()
    hydra, changes = [], {}
    for arg in extra:
        key, _, value = arg.lstrip("+").partition("=")
        if key in ("figure_id", "run_id"):
            raise config.ConfigError(f"{key}= is set by the figure config; allowed: other Hydra overrides")
        name, dot, setting = key.partition(".")
        if not dot or name not in registered:
            hydra.append(arg)
            continue
        if name not in in_figure:
            raise config.ConfigError(
                f"{key} is invalid: figure {fig.id} has no post-step {name!r}; its steps: "
                f"{', '.join(in_figure) or 'none'}"
            )
        changes.setdefault(name, {})[setting] = yaml.safe_load(value)
    return hydra, changes


# ----------------------------------------------------------------------------- 1. check


def prepare(figure: str, profile: str, extra: Sequence[str]) -> Plan:
    """Load and check everything the figure will compute; nothing is computed."""
    fig = figures.load(figure)
    where = figures.display_path(figures.figure_path(figure))
    figures.check_profile(fig, profile)
    hydra, changes = split_changes(fig, extra)
    tail = [f"profile={profile}", f"figure_id={fig.id}", *hydra]
    cfg = config.compose([*figures.base_overrides(fig, profile), *tail])
    # Validation order: settings first (every run's that need no task, every post-step's),
    # then each run built (a task checks its settings, then loads its data), then the
    # post-steps prepared on their tasks, then the run folders; compute comes after all.
    fig_runs = figures.runs(fig, profile)
    composed = [config.compose(figures.run_overrides(fig, run, profile, hydra)) for run in fig_runs]
    for run_cfg in composed:
        config.check_settings(run_cfg)
    chosen = []
    for i, entry in enumerate(fig.get("post") or []):
        at = f"{where}: post[{i}]"
        step = steps.get(entry.step, at)
        chosen.append((step, steps.settings(entry, profile, at, changes.get(step.name, {}))))
    run_specs, estimates = [], {}
    for run_cfg in composed:
        run_specs.append(config.RunSpec.from_config(run_cfg))
        estimates[run_specs[-1].run_id] = sizes.pending(run_specs[-1], run_specs[-1].run_dir)
    # refused above max_result_mb, before anything is computed
    estimate = sizes.check_figure(estimates, config.max_result_mb(cfg), f"figure {fig.id} ({profile})")
    fig_dir = Path(cfg.results_root) / profile / str(fig.id)
    ctx = steps.Context(
        fig=fig,
        profile=profile,
        fig_dir=fig_dir,
        head=figures.base_overrides(fig, profile),
        tail=tail,
        runs=run_specs,
        progress=bool(cfg.progress),
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    prepared = [PreparedStep(step, settings, step.prepare(ctx, settings)) for step, settings in chosen]
    io.expect_files(fig_dir, ("metrics.csv", RECORD))
    for spec in run_specs:  # last (it creates the run folders): usable, and holding this config or none
        runner.check(spec)
    return Plan(fig, where, ctx, cfg, prepared, estimate, tuple(composed))


# ----------------------------------------------------------------------------- 2. runs


def run_all(plan: Plan) -> tuple[pd.DataFrame, dict]:
    """Run (or resume, or skip) every run; their rows and per-run records.

    A diverged run's rows may hold NaN/inf (its last log point); they are kept and its
    record says ``diverged`` with ``diverged_at_outer_step``.
    """
    frames, records = [], {}
    specs = plan.ctx.runs
    for i, spec in enumerate(specs, 1):
        t0 = time.perf_counter()
        out = runner.run(spec)
        meta = io.read_json(out / runner.META) or {}
        diverged = meta.get("status") == "diverged"
        status = meta.get("status")
        if diverged:
            status = f"diverged at outer step {meta.get('diverged_at_outer_step')} (rows kept, marked)"
        plan.ctx.log(
            f"[{i}/{len(specs)}] {plan.fig.id} {spec.run_id}: {status} "
            f"({time.perf_counter() - t0:.1f} s now, {meta.get('wall_time_s', 0):.1f} s total) -> {out}"
        )
        csv_digest = artefacts.digest(io.read_bytes(out / runner.CSV))  # what the merged table is built from
        frames.append(io.read_csv(out / runner.CSV, fix=f"delete {out} and rerun", any_nonfinite=diverged))
        records[spec.run_id] = {
            "status": meta.get("status"),
            "wall_time_s": meta.get("wall_time_s"),
            "fingerprint": meta.get("fingerprint"),
            "dir": out.relative_to(plan.ctx.fig_dir).as_posix(),
            "csv": csv_digest,
            **({"diverged_at_outer_step": meta.get("diverged_at_outer_step")} if diverged else {}),
        }
    rows = pd.concat(frames, ignore_index=True) if frames else results.frame([])
    return rows, records


# ----------------------------------------------------------------------------- 3. post-steps


def step_fingerprint(item: PreparedStep, ctx: steps.Context) -> str:
    """The fingerprint of a step's result: its name, result-relevant settings and inputs."""
    settings = {k: v for k, v in item.settings.items() if k not in item.step.non_result}
    return artefacts.fingerprint(
        {"step": item.step.name, "settings": settings, "inputs": item.step.inputs(ctx, item.plan)}
    )


def run_step(
    item: PreparedStep, ctx: steps.Context, resume: bool, allow_nonfinite
) -> tuple[pd.DataFrame, dict]:
    """Compute one post-step, or reuse its files; its rows and its summary for figure.json."""
    name = item.step.name
    fp = step_fingerprint(item, ctx)
    record_path = ctx.fig_dir / STEPS / f"{name}.json"
    csv = ctx.fig_dir / STEPS / f"{name}.csv"
    record = artefacts.lookup(record_path, fp, ctx.fig_dir, ctx.log) if resume else None
    cached = record is not None
    if cached:
        rows = pd.read_csv(csv)
        ctx.log(f"[post] {ctx.fig.id} {name}: reused ({record['wall_time_s']:.1f} s when computed) -> {csv}")
    else:
        t0 = time.perf_counter()
        out = item.step.compute(ctx, item.plan)
        wall = time.perf_counter() - t0
        rows = results.validate(out.rows, allow_nonfinite=allow_nonfinite)
        io.atomic_write_text(csv, rows.to_csv(index=False))
        files = [csv]
        for table, frame in out.tables.items():
            files.append(ctx.fig_dir / f"{table}.csv")
            io.atomic_write_text(files[-1], frame.to_csv(index=False))
        record = artefacts.store(
            record_path,
            fp,
            files,
            ctx.fig_dir,
            wall,
            step=name,
            profile=ctx.profile,
            settings=item.settings,
            **out.info,
        )
        ctx.log(f"[post] {ctx.fig.id} {name}: computed in {wall:.1f} s -> {', '.join(record['files'])}")
    summary = {
        "wall_time_s": record["wall_time_s"],
        "cached": cached,
        "fingerprint": fp,
        "files": record["files"],
        "digests": record.get("digests")
        or {f: artefacts.digest(io.read_bytes(ctx.fig_dir / f)) for f in record["files"]},
    }
    return rows, summary


# ----------------------------------------------------------------------------- 5. plot


def figure_png(plan: Plan) -> Path:
    return Path(plan.cfg.results_root) / plan.ctx.profile / "figures" / f"{plan.fig.id}.png"


def plot(plan: Plan, csv: Path) -> dict:
    """Run the figure's plot script on the merged table."""
    script, png = figures.plot_path(plan.fig), figure_png(plan)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(config.ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), str(csv), str(png)],
        capture_output=True,
        text=True,
        env=env,
        cwd=config.ROOT,
    )
    if proc.stdout.strip():
        print(proc.stdout.rstrip(), file=sys.stderr)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise PlotFailed(
            f"plot script {script} failed (exit {proc.returncode}): {lines[-1] if lines else 'no message'}; "
            f"the merged table is kept in {csv}"
        )
    files = sorted(str(p.relative_to(png.parent.parent)) for p in png.parent.glob(f"{plan.fig.id}*"))
    return {"script": str(plan.fig.plot), "files": files, "wall_time_s": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- 6. the record


def figure_record(plan: Plan, extra: Sequence[str], started: str, status: str, **parts) -> dict:
    """``figure.json``: what was reproduced, where, with what, how long each part took.

    Keys: figure, title, config (the YAML), profile, arguments, git_commit, packages,
    machine, start_time, end_time, wall_time_s (this invocation), status, runs
    ({run id: {status, wall_time_s, fingerprint, dir}}: wall time summed over resumes),
    steps ({name: {wall_time_s, cached, fingerprint, files}}: wall_time_s is the compute
    time, also when the files were reused), plot ({script, files, wall_time_s}),
    compute_wall_time_s (runs + steps: the cost of reproducing from scratch),
    cpu_time_s (processor time of this invocation: its own process, all threads, plus its jobs'
    processes while they ran its jobs; with wall_time_s, how many cores it kept busy),
    metrics_csv, rows ({source: count}).
    """
    record = {
        "figure": str(plan.fig.id),
        "title": str(plan.fig.title),
        "config": plan.where,
        "profile": plan.ctx.profile,
        "arguments": list(extra),
        **artefacts.provenance(),
        "start_time": started,
        "end_time": artefacts.now(),
        "status": status,
        **parts,
    }
    walls = [r.get("wall_time_s") or 0.0 for r in record.get("runs", {}).values()]
    walls += [s.get("wall_time_s") or 0.0 for s in record.get("steps", {}).values()]
    record["compute_wall_time_s"] = float(sum(walls))
    return record


# ----------------------------------------------------------------------------- one figure at a time

_HELD: dict[str, int] = {}  # figure folders whose lock this process holds (re-entrant)


@contextlib.contextmanager
def figure_lock(fig_dir: Path, log, what: str) -> Iterator[None]:
    """Hold ``<fig_dir>/.lock`` while one command reproduces the figure: a second command on
    the same results waits for it (one line) and then finds its work done.  The kernel drops
    the lock of a killed holder."""
    key = os.path.abspath(fig_dir)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    Path(fig_dir).mkdir(parents=True, exist_ok=True)
    lock = io.FolderLock(Path(fig_dir))
    try:
        lock.acquire()
    except io.Busy as err:
        log(f"{what} is being reproduced by {err.holder}; waiting for it to finish (Ctrl-C stops waiting)")
        while True:
            time.sleep(1.0)
            try:
                lock.acquire()
                break
            except io.Busy:
                continue
    _HELD[key] = 1
    try:
        yield
    finally:
        del _HELD[key]
        lock.release()


# ----------------------------------------------------------------------------- the pipeline


def previous_record(fig_dir: Path) -> dict | None:
    """The figure.json of an earlier invocation, if it can be read (it is rewritten anyway)."""
    try:
        return io.read_json(fig_dir / RECORD)
    except io.FileProblem:
        return None


def keep_changed(csv: Path, digests: dict | None, new: bytes, log) -> None:
    """Before the merged table is rebuilt as ``new``: a table that no longer matches the digest
    recorded when it was written (edited by hand, cut short) is kept as
    ``metrics.csv.unverified-<time>`` with a note, rather than replaced silently.  (One that
    already holds ``new`` -- a process killed between writing it and its record -- is not.)"""
    want = (digests or {}).get(csv.name)
    if want is None or not csv.is_file():
        return
    have = artefacts.digest(io.read_bytes(csv))
    if have in (want, artefacts.digest(new)):
        return
    kept = csv.with_name(f"{csv.name}.unverified-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(csv, kept)
    log(
        f"note: {csv} differed from the table written last time (changed by hand or cut short); "
        f"kept as {kept.name}, rebuilt from the runs"
    )


def reproduce(
    figure: str,
    profile: str = "quick",
    extra: Sequence[str] = (),
    *,
    plot_figure: bool = True,
    plan: Plan | None = None,
    since: tuple[str, float, float] | None = None,
    jobs: dict | None = None,
) -> Path:
    """Reproduce ``figure`` under ``profile`` (see the module docstring); returns the merged CSV.
    One command at a time per figure and results folder: another waits (`figure_lock`).
    `experiments.launch` passes its ``plan``, start (``since``: time, perf counter, process
    time) and ``jobs`` (recorded in figure.json, with their processor time) after the figure's
    jobs ran."""
    since = since or (artefacts.now(), time.perf_counter(), time.process_time())
    plan = plan or prepare(figure, profile, extra)
    with figure_lock(plan.ctx.fig_dir, plan.ctx.log, f"figure {plan.fig.id} ({profile})"):
        return _reproduce(plan, extra, plot_figure, since, jobs)


def _reproduce(
    plan: Plan, extra, plot_figure: bool, since: tuple[str, float, float], jobs: dict | None
) -> Path:
    ctx, fig_dir = plan.ctx, plan.ctx.fig_dir
    csv = fig_dir / "metrics.csv"
    parts: dict[str, Any] = {"runs": {}, "steps": {}, "plot": None, "size_estimate": plan.size_estimate}
    if jobs is not None:
        parts["jobs"] = jobs
    previous = previous_record(fig_dir)
    if previous and csv.is_file():  # the merged table on disk and what it was built from, until rebuilt
        parts.update({k: previous[k] for k in (integrity.DIGESTS, "runs") if k in previous})

    started, t0, cpu0 = since

    def record(status: str, *, after_error: bool = False) -> None:
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0 + float((jobs or {}).get("cpu_time_s") or 0.0)
        data = figure_record(plan, extra, started, status, wall_time_s=wall, cpu_time_s=cpu, **parts)
        if after_error:  # the error on its way out is the one to report, even if this write fails
            io.write_json_anyhow(fig_dir / RECORD, data)
        else:
            io.write_json(fig_dir / RECORD, data)

    fig_dir.mkdir(parents=True, exist_ok=True)
    record("running")
    allow_nonfinite = list(plan.fig.get("allow_nonfinite") or [])
    try:
        run_rows, parts["runs"] = run_all(plan)
        diverged = [rid for rid, r in parts["runs"].items() if r["status"] == "diverged"]
        # NaN is allowed in diverged runs' metrics (their last rows), so the merge keeps them
        allow_nonfinite += sorted(set(run_rows.loc[run_rows["run_id"].isin(diverged), "metric"]))
        tables = [(results.RUN_SOURCE, run_rows)]
        ctx.rows = results.merge(tables)
        for item in plan.steps:
            rows, parts["steps"][item.step.name] = run_step(item, ctx, bool(plan.cfg.resume), allow_nonfinite)
            tables.append((item.step.name, rows[list(results.COLUMNS)]))
            ctx.rows = results.merge(tables)
        merged = results.validate(
            ctx.rows, expected_runs=[spec.run_id for spec in ctx.runs], allow_nonfinite=allow_nonfinite
        )
        text = merged.to_csv(index=False).encode()
        keep_changed(csv, (previous or {}).get(integrity.DIGESTS), text, ctx.log)
        io.atomic_write_bytes(csv, text)
        parts[integrity.DIGESTS] = {
            csv.name: artefacts.digest(text),
            **{name: digest for s in parts["steps"].values() for name, digest in s["digests"].items()},
        }
        parts.update(metrics_csv=csv.name, rows=merged[results.SOURCE].value_counts().sort_index().to_dict())
        if plot_figure:
            parts["plot"] = plot(plan, csv)
    except KeyboardInterrupt:
        record("interrupted", after_error=True)
        raise
    except BaseException:
        record("failed", after_error=True)
        raise
    record("complete")
    print(csv)
    return csv


