"""A figure as jobs of a Hydra launcher: its runs and post-step parts across processes,
accelerators or a cluster.

    python -m experiments.reproduce figure=figure6 jobs=2                    # joblib, 2 processes
    python -m experiments.reproduce figure=figure6 hydra/launcher=submitit_local
    python -m experiments.reproduce figure=figure7 profile=paper hydra/launcher=submitit_slurm \\
        hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 hydra.launcher.timeout_min=600
    make reproduce-figure-9 JOBS=2

With ``jobs=<k>`` (k > 1; shorthand for ``hydra/launcher=joblib hydra.launcher.n_jobs=<k>``)
or ``hydra/launcher=<name>``, `experiments.reproduce` checks the whole figure as always, then
makes one job of

* every run that is not finished (or, with ``launch.batch_seeds=<n>``, every group of up
  to n runs that differ only in their seed: `experiments.batched`);
* every part of a post-step whose result does not read the runs (`EARLY`): a random-search
  seed (or ``launch.search_shard`` configurations of it), a tile of ``launch.grid_tile``
  points of a grid of full trainings (or the whole grid), a task of the truncation-variance
  study, and the whole Adam baseline or variance study,

and hands them to the launcher as one Hydra sweep over ``job=range(0,<jobs>)`` of
``configs/launch.yaml``.  With ``launch.workers=<k>`` (what ``jobs=<k>`` sets beside a named
launcher, e.g. ``jobs=2 hydra/launcher=submitit_local``) the sweep is k workers instead, each
taking the next job no other worker has taken (a claim file per job) until none is left: k
processes however many jobs there are.  With ``launch.late_jobs`` (by default on submitit_slurm only, so
that a login node computes nothing heavy) a second sweep follows once the runs are done: one
job per post-step that reads them.  When every job has finished, the ordinary pipeline runs
once in this process: it verifies and skips the finished runs, reuses the finished steps and
parts, computes the steps still to do, merges, plots and records (so the merged table is the
serial one, value for value, unless seeds are batched).  A job that failed or was killed
leaves its run or part resumable; the command then names each such job in one line, merges
nothing and exits 1; the same command again submits only what is unfinished.

Each job records what happened in ``<fig_dir>/jobs/<job>.json`` (status, process, host,
devices it saw, wall time, the error in one line); ``<fig_dir>/jobs/jobs.json`` lists the
jobs of the last submission.  The launcher's own files (``multirun.yaml``, submitit's logs
in ``.submitit/<job id>/``) go to ``hydra.sweep.dir``, by default the same folder.

Device pinning (``launch.device_ids=[0,1,...]``, ``launch.devices_per_job=<n>``): each job
process takes a free slot of n ids (a lock file per slot, dropped by the kernel when the
process ends) and sets ``CUDA_VISIBLE_DEVICES`` before JAX starts, so it sees only its own
devices; a job finding every slot taken waits for one.  On SLURM the scheduler assigns GPUs
(``hydra.launcher.gpus_per_node``) and pinning stays off.

Two commands on the same figure: the second waits for the first (one line), then finds
everything done (`pipeline.figure_lock`, which the serial pipeline takes too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import math
import os
import re
import shlex
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from experiments import artefacts, cli, config, io

JOBS_DIR = "jobs"  # <fig_dir>/jobs: the job table, one status record per job, launcher files
TABLE = "jobs.json"
CLAIM = ".claim"  # <fig_dir>/jobs/<job>.claim: the job was taken by a worker (launch.workers)
LAUNCH_CONFIG = "launch"  # configs/launch.yaml
# Post-steps whose result depends only on their settings and task config (their `inputs`
# read neither the runs' rows nor their folders): they run as jobs beside the runs.
EARLY = ("grid", "random_search", "truncation_variance", "adam_baseline", "variance")
FINISHED = ("complete", "diverged")


class JobsFailed(cli.Problem):
    """Some jobs did not finish; nothing was merged."""


# ----------------------------------------------------------------------------- command line


def split(extra: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the job layer's arguments, the rest): ``jobs=``, ``launch.*``, ``hydra/*``, ``hydra.*``."""
    mine, rest = [], []
    for arg in extra:
        key = arg.lstrip("+~").partition("=")[0]
        if key == "jobs" or key.startswith(("launch.", "hydra/", "hydra.")):
            mine.append(arg)
        else:
            rest.append(arg)
    return mine, rest


def launcher_overrides(args: Sequence[str]) -> list[str] | None:
    """The Hydra overrides of the launch config, or None for the serial pipeline (no
    launcher named and ``jobs`` absent or 1)."""
    out, jobs = [], None
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "jobs":
            if not value.isdigit() or int(value) < 1:
                raise config.ConfigError(f"jobs={value} is invalid; allowed: an integer >= 1 (parallel jobs)")
            jobs = int(value)
        else:
            out.append(arg)
    named = next((a.partition("=")[2] for a in out if a.lstrip("+~").startswith("hydra/launcher=")), None)
    if jobs is not None and jobs > 1:
        if named == "joblib":
            raise config.ConfigError(
                f"jobs={jobs} and hydra/launcher=joblib both given; allowed: one of them (jobs=<k> "
                "alone is hydra/launcher=joblib hydra.launcher.n_jobs=<k>)"
            )
        if named:  # k workers of that launcher, each taking the next unstarted job
            out = [*out, f"launch.workers={jobs}"]
        else:
            out = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", *out]
    elif not named:
        if out:
            raise config.ConfigError(
                f"{out[0]} needs a launcher; allowed: add jobs=<k> (k > 1) or hydra/launcher=joblib|"
                "submitit_local|submitit_slurm"
            )
        return None
    return out


def launch_config(overrides: Sequence[str], sweep_dir: Path) -> DictConfig:
    """configs/launch.yaml with ``overrides`` (and the sweep folder), checked: one line per problem."""
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    full = [f"hydra.sweep.dir={sweep_dir}", *overrides]
    try:
        with hydra.initialize_config_dir(str(config.CONFIG_DIR), version_base="1.3"):
            cfg = hydra.compose(LAUNCH_CONFIG, overrides=full, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as err:
        text = str(err)
        m = re.search(r"Could not find 'hydra/launcher/([^']+)'", text)
        if m:
            options = re.findall(r"^\t(\S+)$", text, flags=re.M)
            extra = "" if "joblib" in options else " (joblib, submitit: pip install -e '.[sweep]')"
            raise config.ConfigError(
                f"hydra/launcher={m.group(1)} is unknown; allowed: {', '.join(options)}{extra}"
            ) from err
        raise config._compose_error(err, full) from err
    spec = cfg.launch
    ids = spec.device_ids
    if ids is not None:
        ids = OmegaConf.to_container(ids) if isinstance(ids, ListConfig) else ids
        if (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
            or len(set(ids)) != len(ids)
        ):
            raise config.ConfigError(
                f"launch.device_ids={spec.device_ids} is invalid; allowed: null or a list of distinct "
                "device numbers >= 0, e.g. [0,1,2,3]"
            )
        if "basic" in str(cfg.hydra.launcher._target_).lower():
            raise config.ConfigError(
                "launch.device_ids needs one process per job; allowed launchers: joblib, submitit_local"
            )
    per = spec.devices_per_job
    if not isinstance(per, int) or isinstance(per, bool) or per < 1 or (ids and per > len(ids)):
        most = f" and at most {len(ids)} (the number of device_ids)" if ids else ""
        raise config.ConfigError(f"launch.devices_per_job={per} is invalid; allowed: an integer >= 1{most}")
    for key in ("batch_seeds",):
        value = spec[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise config.ConfigError(f"launch.{key}={value} is invalid; allowed: an integer >= 1")
    if spec.late_jobs not in (None, True, False):
        raise config.ConfigError(f"launch.late_jobs={spec.late_jobs} is invalid; allowed: null, true, false")
    for key in ("search_shard", "grid_tile", "workers"):
        value = spec[key]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise config.ConfigError(f"launch.{key}={value} is invalid; allowed: null or an integer >= 1")
    return cfg


def launcher_name(cfg: DictConfig) -> str:
    """joblib, submitit_local, submitit_slurm, basic, ... (from the launcher's class)."""
    target = str(cfg.hydra.launcher._target_)
    for name, key in (
        ("joblib", "Joblib"),
        ("submitit_slurm", "SlurmLauncher"),
        ("submitit_local", "LocalLauncher"),
        ("basic", "BasicLauncher"),
    ):
        if key in target:
            return name
    return target.rsplit(".", 1)[-1]


# ----------------------------------------------------------------------------- one figure at a time



# ----------------------------------------------------------------------------- jobs


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run_finished(spec: config.RunSpec) -> bool:
    """The run's folder records a finished run of this very config (verified again by the
    merge, which recomputes whatever does not verify)."""
    try:
        meta = io.read_json(spec.run_dir / "run.json")
    except io.FileProblem:
        return False
    return bool(
        meta
        and meta.get("status") in FINISHED
        and meta.get("fingerprint") == spec.fingerprint
        and (spec.run_dir / "checkpoint.npz").is_file()
    )


def _search_parts(ctx, plan, shard: int | None) -> list[dict]:
    """Random-search parts: one per seed, or ranges of ``shard`` configurations (rounded up
    to the step's chunk size, so every compiled call scores the same configurations as in
    one process); seeds already complete are left out."""
    n, chunk = plan.settings["num_configs"], plan.settings["chunk_size"]
    parts = []
    for seed in plan.seeds:
        if _search_done(ctx, plan, seed) == n:
            continue
        if shard is None or shard >= n:
            parts.append({"seed": seed})
            continue
        size = math.ceil(shard / chunk) * chunk
        parts += [{"seed": seed, "lo": lo, "hi": min(lo + size, n)} for lo in range(0, n, size)]
    return parts


def _search_file(ctx, seed: int, lo: int | None = None, hi: int | None = None) -> Path:
    name = f"seed{seed}.npz" if lo is None else f"seed{seed}-{lo}-{hi}.npz"
    return ctx.fig_dir / "random_search_partial" / name


def _search_done(ctx, plan, seed: int, lo=None, hi=None) -> int:
    """Configurations of ``seed`` (or of its part lo..hi) scored and kept, for this plan's stamp."""
    import numpy as np

    from experiments.steps import random_search

    path = _search_file(ctx, seed, lo, hi)
    if not path.is_file():
        return 0
    try:
        with np.load(path) as saved:
            if str(saved["stamp"]) != random_search._stamp(plan, seed):
                return 0
            return int(saved["done"])
    except (OSError, ValueError, KeyError):
        return 0


def _score_search_part(ctx, plan, seed: int, lo: int, hi: int) -> None:
    """Score configurations lo..hi-1 of ``seed`` exactly as `random_search.search_seed` scores
    them in one process (same configurations, same chunks, same padding) into a part file."""
    import jax
    import numpy as np

    from experiments.steps import random_search
    from pes import search

    if _search_done(ctx, plan, seed, lo, hi) == hi:
        return
    s, task = plan.settings, plan.built.task
    config.use_x64(plan.cfg)
    n, chunk = s["num_configs"], s["chunk_size"]
    low, high = task.search_space
    configs = search.uniform_configs(jax.random.key(seed), low, high, n, like=task.theta_init)
    run = random_search.scorer(task)
    scores = np.full(hi - lo, np.nan)
    for a in range(lo, hi, chunk):
        b = min(a + chunk, n)
        part = jax.tree.map(lambda x, a=a, b=b: x[a:b], configs)
        if b - a < chunk:  # as search_seed pads its last chunk
            pad = chunk - (b - a)
            part = jax.tree.map(lambda x, m=pad: np.concatenate([x, np.repeat(x[:1], m, 0)]), part)
        scores[a - lo : b - lo] = np.asarray(run(part))[: b - a]
    path = _search_file(ctx, seed, lo, hi)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), stamp=random_search._stamp(plan, seed), done=hi, scores=scores)
    path.with_suffix(".tmp.npz").replace(path)


def join_search_parts(ctx, plan, shard: int | None) -> None:
    """Every seed whose range parts are all scored gets its ``seed<s>.npz`` (what
    `random_search.search_seed` resumes from: it then scores nothing)."""
    import numpy as np

    from experiments.steps import random_search

    if shard is None:
        return
    n, chunk = plan.settings["num_configs"], plan.settings["chunk_size"]
    size = math.ceil(shard / chunk) * chunk
    if size >= n:
        return
    for seed in plan.seeds:
        if _search_done(ctx, plan, seed) == n:
            continue
        ranges = [(lo, min(lo + size, n)) for lo in range(0, n, size)]
        if any(_search_done(ctx, plan, seed, lo, hi) != hi for lo, hi in ranges):
            continue
        scores = []
        for lo, hi in ranges:
            with np.load(_search_file(ctx, seed, lo, hi)) as saved:
                scores.append(np.asarray(saved["scores"]))
        path = _search_file(ctx, seed)
        stamp = random_search._stamp(plan, seed)
        np.savez(path.with_suffix(".tmp.npz"), stamp=stamp, done=n, scores=np.concatenate(scores))
        path.with_suffix(".tmp.npz").replace(path)


def grid_tiles(plan, tile: int | None) -> list[tuple[int, int]] | None:
    """Point ranges of a grid of fresh full trainings, ``tile`` points each rounded up to the
    step's chunk size (so every compiled call evaluates the points it evaluates in one
    process), or None: an ``evaluate`` grid, no ``tile``, or one tile would hold it all."""
    from pes import grid

    s = plan.settings
    if tile is None or s["of"] != "full_run":
        return None
    n = len(grid.grid_points(plan.axes))
    chunk = min(int(s["chunk_size"]), n)
    size = math.ceil(tile / chunk) * chunk
    if size >= n:
        return None
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def _tile_file(ctx, lo: int, hi: int) -> Path:
    return ctx.fig_dir / "grid_partial" / f"points-{lo}-{hi}.npz"


def _tile_done(ctx, lo: int, hi: int, stamp: str) -> bool:
    import numpy as np

    path = _tile_file(ctx, lo, hi)
    try:
        with np.load(path) as saved:
            return str(saved["stamp"]) == stamp
    except (OSError, ValueError, KeyError):
        return False


def _grid_tile(ctx, plan, lo: int, hi: int, stamp: str) -> None:
    """The grid's values at points lo..hi-1, computed as `grid.compute` computes them in one
    process (same chunks and padding, same keys), into a tile file."""
    import jax
    import numpy as np

    from experiments.steps.evaluation import evaluate_thetas
    from pes import grid

    if _tile_done(ctx, lo, hi, stamp):
        return
    s, task = plan.settings, plan.built.task
    config.use_x64(plan.cfg)
    points = grid.grid_points(plan.axes)[lo:hi]
    chunk = int(s["chunk_size"])
    if len(points) < chunk:  # the grid's last chunk, padded with its first point as in one process
        points = np.concatenate([points, np.broadcast_to(points[:1], (chunk - len(points), points.shape[1]))])
    key = jax.random.key(int(plan.cfg.seed))
    means = evaluate_thetas(task.full_run, points, s["num_runs"], chunk, key, ctx.progress)
    path = _tile_file(ctx, lo, hi)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = {f"metric/{m}": np.asarray(means[m][: hi - lo, 0]) for m in s["metrics"]}
    np.savez(path.with_suffix(".tmp.npz"), stamp=stamp, **values)
    path.with_suffix(".tmp.npz").replace(path)


def _grid_from_tiles(tiles: list[tuple[int, int]]):
    """A `grid` compute that reads the tiles instead of computing (same rows and table)."""

    def compute(ctx, plan):
        import numpy as np
        import pandas as pd

        from experiments import steps
        from experiments.steps.grid import summary_rows
        from pes import grid, results

        s, task = plan.settings, plan.built.task
        points = grid.grid_points(plan.axes)
        values = {m: [] for m in s["metrics"]}
        for lo, hi in tiles:
            with np.load(_tile_file(ctx, lo, hi)) as saved:
                for m in values:
                    values[m].append(np.asarray(saved[f"metric/{m}"]))
        values = {m: np.concatenate(v) for m, v in values.items()}
        surface = pd.concat(
            [results.grid_frame(task.name, m, points, values[m]) for m in s["metrics"]], ignore_index=True
        )
        rows = summary_rows(str(ctx.fig.id), task, int(plan.cfg.seed), points, values)
        mins = {m: float(np.nanmin(v)) for m, v in values.items()}
        info = {"num_points": len(points), "min": mins, "tiles": len(tiles)}
        return steps.StepOutput(results.frame(rows), {"grid": surface}, info)

    return compute


def join_grid_tiles(plan, item, tile: int | None) -> None:
    """A grid whose tiles are all computed is stored as the step's result (what the merge
    then reuses), through the pipeline's own `run_step`."""
    from experiments import pipeline

    tiles = grid_tiles(item.plan, tile)
    if tiles is None:
        return
    stamp = pipeline.step_fingerprint(item, plan.ctx)
    if artefacts.lookup(plan.ctx.fig_dir / pipeline.STEPS / "grid.json", stamp, plan.ctx.fig_dir):
        return
    if not all(_tile_done(plan.ctx, lo, hi, stamp) for lo, hi in tiles):
        return
    step = dataclasses.replace(item.step, compute=_grid_from_tiles(tiles))
    allow = list(plan.fig.get("allow_nonfinite") or [])
    pipeline.run_step(pipeline.PreparedStep(step, item.settings, item.plan), plan.ctx, True, allow)


def plan_jobs(plan, spec: DictConfig) -> list[dict]:
    """The unfinished jobs of a prepared figure (`experiments.pipeline.Plan`), longest first:
    post-step parts that do not read the runs, then the runs (or seed groups)."""
    from experiments import pipeline

    # a job carries what a job process can receive: these steps read no run (ctx.runs left out)
    ctx = dataclasses.replace(plan.ctx, log=_log, rows=None, runs=[])
    allow = list(plan.fig.get("allow_nonfinite") or [])
    jobs: list[dict] = []
    for item in plan.steps:
        name = item.step.name
        if name not in EARLY:
            continue
        fp = pipeline.step_fingerprint(item, plan.ctx)
        if artefacts.lookup(ctx.fig_dir / pipeline.STEPS / f"{name}.json", fp, ctx.fig_dir):
            continue
        base = {"kind": "step", "step": name, "settings": item.settings, "ctx": ctx, "allow_nonfinite": allow}
        if name == "random_search":
            for part in _search_parts(ctx, item.plan, spec.search_shard):
                tail = f"seed{part['seed']}" + (f"-{part['lo']}-{part['hi']}" if "lo" in part else "")
                jobs.append(dict(base, name=f"step-{name}-{tail}", part=part))
        elif name == "grid" and grid_tiles(item.plan, spec.grid_tile):
            for lo, hi in grid_tiles(item.plan, spec.grid_tile):
                if not _tile_done(ctx, lo, hi, fp):
                    part = {"lo": lo, "hi": hi, "stamp": fp}
                    jobs.append(dict(base, name=f"step-{name}-{lo}-{hi}", part=part))
        elif name == "truncation_variance":
            for label in item.plan.tasks:
                jobs.append(dict(base, name=f"step-{name}-{label}", part={"task": label}))
        else:
            jobs.append(dict(base, name=f"step-{name}", part=None))
    return jobs + _run_jobs(plan, int(spec.batch_seeds))


def _run_jobs(plan, batch_seeds: int) -> list[dict]:
    """A job per unfinished run, or per group of up to ``batch_seeds`` runs that differ only in
    their seed.  A job carries its runs' composed configs (what a job process can receive)
    and rebuilds their specs there."""
    from experiments import batched

    pairs = zip(plan.ctx.runs, plan.run_configs, strict=True)
    todo = [(rs, cfg) for rs, cfg in pairs if not _run_finished(rs)]
    if batch_seeds <= 1:
        return [{"kind": "run", "name": f"run-{rs.run_id}", "cfg": cfg} for rs, cfg in todo]
    cfg_of = {rs.run_id: cfg for rs, cfg in todo}
    jobs = []
    for group in batched.group_runs([rs for rs, _ in todo], batch_seeds):
        ids = [rs.run_id for rs in group]
        if len(group) == 1:
            jobs.append({"kind": "run", "name": f"run-{ids[0]}", "cfg": cfg_of[ids[0]]})
        else:
            jobs.append({"kind": "batch", "name": "batch-" + "+".join(ids), "cfgs": [cfg_of[i] for i in ids]})
    return jobs


CHEAP = ("compute_axis",)  # steps that only rearrange the runs' rows: never worth a job


def late_jobs(plan, spec: DictConfig, launcher: str) -> list[dict]:
    """After the runs: a job for every unfinished post-step that reads them (not `EARLY`,
    not `CHEAP`), with the runs' rows as the pipeline gives them (verified first).  Only
    with ``launch.late_jobs`` true, or null on submitit_slurm."""
    from experiments import pipeline
    from pes import results

    wanted = spec.late_jobs if spec.late_jobs is not None else launcher == "submitit_slurm"
    todo = [i for i in plan.steps if i.step.name not in EARLY + CHEAP]
    if not wanted or not todo:
        return []
    run_rows, records = pipeline.run_all(plan)  # every run finished by now: verified and read
    diverged = [rid for rid, r in records.items() if r["status"] == "diverged"]
    allow = list(plan.fig.get("allow_nonfinite") or [])
    allow += sorted(set(run_rows.loc[run_rows["run_id"].isin(diverged), "metric"]))
    # the runs travel as their composed configs; the job process builds their specs (`_execute`)
    rows = results.merge([(results.RUN_SOURCE, run_rows)])
    ctx = dataclasses.replace(plan.ctx, log=_log, rows=rows, runs=[])
    jobs = []
    for item in todo:
        fp = pipeline.step_fingerprint(item, dataclasses.replace(ctx, runs=plan.ctx.runs))
        if artefacts.lookup(ctx.fig_dir / pipeline.STEPS / f"{item.step.name}.json", fp, ctx.fig_dir):
            continue
        jobs.append(
            {
                "kind": "step",
                "name": f"step-{item.step.name}",
                "step": item.step.name,
                "settings": item.settings,
                "ctx": ctx,
                "run_configs": list(plan.run_configs),
                "allow_nonfinite": allow,
                "part": None,
            }
        )
    return jobs


def _pin(spec: DictConfig, folder: Path) -> str | None:
    """Take a free device slot for this process (kept until it ends); its ids go to
    CUDA_VISIBLE_DEVICES before JAX starts.  None without ``device_ids``."""
    if spec.device_ids is None:
        return None
    global _SLOT
    if _SLOT is None:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            raise cli.Problem(
                "launch.device_ids: JAX had started in this job process before it was pinned; "
                "fix: use hydra/launcher=joblib or submitit_local (one fresh process per worker)"
            )
        ids, per = list(spec.device_ids), int(spec.devices_per_job)
        slots = [ids[i : i + per] for i in range(0, len(ids) - per + 1, per)]
        while _SLOT is None:
            for k, slot in enumerate(slots):
                fd = os.open(folder / f".device-slot-{k}.lock", os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                _SLOT = (k, slot, fd)
                break
            else:
                time.sleep(0.5)
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in _SLOT[1])
    return os.environ["CUDA_VISIBLE_DEVICES"]


_SLOT: tuple[int, list[int], int] | None = None


@contextlib.contextmanager
def _own_hydra() -> Iterator[None]:
    """Let the job compose configs (`experiments.config.compose`) while the launcher's Hydra is
    set up in this process; restored afterwards."""
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    saved = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def _execute(job: dict) -> None:
    from experiments import batched, pipeline, runner, steps

    if job["kind"] == "run":
        runner.run(job["cfg"])
    elif job["kind"] == "batch":
        batched.run_batch(job["cfgs"])
    else:
        ctx, settings = job["ctx"], job["settings"]
        if job.get("run_configs"):  # a step that reads the runs: their specs, built here
            ctx = dataclasses.replace(ctx, runs=[config.RunSpec.from_config(c) for c in job["run_configs"]])
        step = steps.get(job["step"], f"job {job['name']}")
        plan = step.prepare(ctx, settings)
        part = job["part"]
        if part is None:
            pipeline.run_step(pipeline.PreparedStep(step, settings, plan), ctx, True, job["allow_nonfinite"])
        elif job["step"] == "truncation_variance":
            step.compute(ctx, plan._replace(tasks={part["task"]: plan.tasks[part["task"]]}))
        elif job["step"] == "grid":
            _grid_tile(ctx, plan, part["lo"], part["hi"], part["stamp"])
        elif "lo" in part:
            _score_search_part(ctx, plan, part["seed"], part["lo"], part["hi"])
        else:
            step.compute(ctx, plan._replace(seeds=[part["seed"]]))


class Jobs:
    """The Hydra task function of the sweep: runs job ``cfg.job`` and records it in
    ``<folder>/<job name>.json``; never raises for a failed job (the launcher would stop the
    others), it records the failure instead."""

    def __init__(self, jobs: list[dict], folder: Path, workers: int | None = None):
        self.jobs, self.folder, self.workers = jobs, Path(folder), workers

    def __call__(self, cfg: DictConfig) -> dict | list[dict]:
        if not self.workers:
            return self.run_one(self.jobs[int(cfg.job)], cfg)
        # worker cfg.job of `workers`: the next job no other worker has taken, until none is left
        return [self.run_one(job, cfg) for job in self.jobs if _claim(self.folder, job["name"])]

    def run_one(self, job: dict, cfg: DictConfig) -> dict:
        path = self.folder / f"{job['name']}.json"
        record = {
            "job": job["name"],
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        t0, cpu0 = time.perf_counter(), time.process_time()
        try:
            record["CUDA_VISIBLE_DEVICES"] = _pin(cfg.launch, self.folder)
            if record["CUDA_VISIBLE_DEVICES"] is None:
                record["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES")
            io.write_json(path, record)
            with _own_hydra():
                _execute(job)
            import jax

            record.update(status="done", devices=[str(d) for d in jax.devices()])
        except BaseException as err:  # noqa: BLE001 - recorded; the launcher must not stop the others
            text = cli.one_line(err) or type(err).__name__
            if isinstance(err, KeyboardInterrupt):
                text = f"interrupted ({text})" if text != "KeyboardInterrupt" else "interrupted"
            record.update(status="failed", error=text)
        record.update(
            wall_time_s=time.perf_counter() - t0,
            cpu_time_s=time.process_time() - cpu0,
            ended=time.strftime("%Y-%m-%d %H:%M:%S"),
        )
        io.write_json_anyhow(path, record)
        return {"job": job["name"], "status": record["status"], "error": record.get("error")}


def jobs_cpu_time(folder: Path, names: Sequence[str]) -> float:
    """The processor time the named jobs' records report, summed over the jobs that ran in other
    processes (a launcher that runs jobs in this process counts them in its own time already;
    a record without one counts 0)."""
    total = 0.0
    for name in names:
        record = io.read_json(folder / f"{name}.json") or {}
        if (record.get("pid"), record.get("host")) != (os.getpid(), socket.gethostname()):
            total += float(record.get("cpu_time_s") or 0.0)
    return total


def _claim(folder: Path, name: str) -> bool:
    """Claim a job for this worker: True for the one worker whose claim file was created."""
    try:
        os.close(os.open(folder / f"{name}{CLAIM}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


# ----------------------------------------------------------------------------- the driver


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _verdict(folder: Path, name: str) -> tuple[str, str]:
    """(status, words) of a job after the sweep: done, failed, killed or not run."""
    try:
        rec = io.read_json(folder / f"{name}.json") or {}
    except io.FileProblem:
        rec = {}
    status = rec.get("status")
    if status == "done":
        return "done", ""
    if status == "failed":
        return "failed", f"failed: {rec.get('error')}"
    if status == "running":
        here = rec.get("host") == socket.gethostname()
        if here and not _pid_alive(int(rec.get("pid", 0))):
            return "killed", (
                f"killed: its process {rec.get('pid')} ended without a word (a signal, out of memory "
                "or out of time)"
            )
        return "running", f"still running as process {rec.get('pid')} on {rec.get('host')}"
    return "not run", "not run (the launcher stopped before it started)"


def _fresh_records(folder: Path, jobs: list[dict], command: str) -> None:
    """Write the submission's job table and drop what these jobs left last time (records, claims):
    it is not this submission's verdict."""
    folder.mkdir(parents=True, exist_ok=True)
    table = [{"job": i, "name": j["name"], "kind": j["kind"]} for i, j in enumerate(jobs)]
    io.write_json(folder / TABLE, {"command": command, "jobs": table})
    for job in jobs:
        for suffix in (".json", CLAIM):
            with contextlib.suppress(FileNotFoundError):
                (folder / f"{job['name']}{suffix}").unlink()


def _multirun(plan, task_function: Jobs, sweep: list[str]) -> str | None:
    """One Hydra multirun of the launch config; the launcher's error in one line, if it raised one."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        app = Hydra.create_main_hydra2(
            task_name=f"pes-{plan.fig.id}",
            config_search_path=create_config_search_path(str(config.CONFIG_DIR)),
        )
        app.multirun(
            config_name=LAUNCH_CONFIG,
            task_function=task_function,
            overrides=sweep,
            with_log_configuration=False,
        )
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - a killed worker, a failed submission: the records say which jobs
        return cli.one_line(err) or type(err).__name__
    finally:
        GlobalHydra.instance().clear()
    return None


def run_jobs(plan, jobs: list[dict], overrides: list[str], launch_cfg: DictConfig, command: str) -> None:
    """Hand ``jobs`` to the launcher as one Hydra sweep; raise `JobsFailed` naming each job
    that did not finish."""
    folder = plan.ctx.fig_dir / JOBS_DIR
    _fresh_records(folder, jobs, command)
    name = launcher_name(launch_cfg)
    workers = launch_cfg.launch.workers
    workers = min(int(workers), len(jobs)) if workers else None
    width = f" (n_jobs={launch_cfg.hydra.launcher.n_jobs})" if name == "joblib" else ""
    width += f" ({workers} workers)" if workers else ""
    _log(
        f"{plan.fig.id} ({plan.ctx.profile}): {len(jobs)} job(s) through {name}{width}: "
        f"{', '.join(j['name'] for j in jobs)}"
    )
    sweep = [
        f"hydra.sweep.dir={launch_cfg.hydra.sweep.dir}",
        f"hydra.job.name=pes-{plan.fig.id}",
        *overrides,
        f"job=range(0,{workers or len(jobs)})",
    ]
    t0 = time.perf_counter()
    error = _multirun(plan, Jobs(jobs, folder, workers), sweep)
    verdicts = [(job["name"], *_verdict(folder, job["name"])) for job in jobs]
    bad = [(n, s, w) for n, s, w in verdicts if s != "done"]
    _log(
        f"{plan.fig.id}: {len(jobs) - len(bad)} of {len(jobs)} job(s) finished in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    if not bad:
        return
    for job_name, _, words in bad:
        _log(f"job {job_name} {words}; what it computed is kept; resume: {command}")
    why = f" ({name}: {error})" if error else ""
    raise JobsFailed(
        f"{plan.fig.id} ({plan.ctx.profile}): {len(bad)} of {len(jobs)} job(s) did not finish{why}; "
        f"nothing merged; the records are in {folder}; rerun the same command: it submits only "
        "what is unfinished"
    )


def reproduce(
    figure: str,
    profile: str,
    extra: Sequence[str],
    overrides: Sequence[str],
    *,
    plot_figure: bool = True,
    command: str | None = None,
) -> Path:
    """`experiments.reproduce.reproduce` with the figure's jobs handed to a launcher first
    (``overrides``: from `launcher_overrides`); returns the merged CSV."""
    from experiments import pipeline

    since = (artefacts.now(), time.perf_counter(), time.process_time())
    plan = pipeline.prepare(figure, profile, extra)  # every check, before anything is computed
    folder = plan.ctx.fig_dir / JOBS_DIR
    sweep_dir = next(
        (a.partition("=")[2] for a in overrides if a.startswith("hydra.sweep.dir=")), str(folder)
    )
    launch_cfg = launch_config(overrides, Path(sweep_dir))
    spec = launch_cfg.launch
    command = command or "python -m experiments.reproduce " + shlex.join(
        [f"figure={figure}", f"profile={profile}", *extra, *overrides]
    )
    with pipeline.figure_lock(plan.ctx.fig_dir, plan.ctx.log, f"figure {plan.fig.id} ({profile})"):
        jobs = plan_jobs(plan, spec)
        t0 = time.perf_counter()
        if jobs:
            run_jobs(plan, jobs, list(overrides), launch_cfg, command)
        else:
            _log(f"{plan.fig.id} ({profile}): every job had finished; merging")
        for item in plan.steps:
            if item.step.name == "random_search":
                join_search_parts(plan.ctx, item.plan, spec.search_shard)
            if item.step.name == "grid":
                join_grid_tiles(plan, item, spec.grid_tile)
        late = late_jobs(plan, spec, launcher_name(launch_cfg))
        if late:
            run_jobs(plan, late, list(overrides), launch_cfg, command)
        jobs = jobs + late
        record = {
            "launcher": launcher_name(launch_cfg),
            "overrides": list(overrides),
            "submitted": [j["name"] for j in jobs],
            "wall_time_s": time.perf_counter() - t0,
            "cpu_time_s": jobs_cpu_time(folder, [j["name"] for j in jobs]),
            "records": f"{JOBS_DIR}/",
        }
        return pipeline.reproduce(
            figure, profile, extra, plot_figure=plot_figure, plan=plan, since=since, jobs=record
        )

