"""Run a figure's seeds batched: runs that differ only in their seed share compiled calls.

    python -m experiments.batched figure=figure7 profile=paper_fashion [max_batch=6] [override ...]

For an accelerator, where one run's particles do not fill the device.  The figure's runs
(composed and validated exactly as ``experiments.reproduce`` does) are grouped by their
resolved config without ``seed``, ``run_id`` and ``task.init_seed`` (the seed may set the
task's initial theta, nothing else of the task: a task setting that interpolates the seed
makes its own group).  Each group, up to ``max_batch`` runs at a time, is meta-trained by
`pes.outer.make_batched_chunk` (vmapped over the runs), and every run still gets its own run
directory -- ``metrics.csv``, ``checkpoint.npz``, ``run.json`` with the same fingerprint as
a separate run -- so ``experiments.reproduce`` afterwards finds the runs complete, merges
them and runs the figure's post steps.  Numbers match separate runs up to the rounding of
batched kernels (``tests/test_batched_runs.py`` measures it).

A batch resumes from its members' checkpoints when all of them stopped at the same outer
step with the same config; otherwise its unfinished members start clean.  A member whose
theta becomes non-finite is marked ``diverged`` and gets no more rows; the others go on.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments import config as C
from experiments import figures, io, runner
from experiments.reproduce import parse
from pes import outer, results

DEFAULT_MAX_BATCH = 16


def batch_signature(cfg: DictConfig) -> str:
    """The resolved config without the per-seed keys: runs with equal signatures batch."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in ("seed", "run_id", *C.NON_RESULT_KEYS):
        data.pop(key, None)
    data.get("task", {}).pop("init_seed", None)
    data.pop("hydra", None)
    return OmegaConf.to_yaml(OmegaConf.create(data), sort_keys=True)


def group_runs(cfgs: list[DictConfig], max_batch: int) -> list[list[DictConfig]]:
    """Runs grouped by `batch_signature` (first-seen order), split into batches."""
    groups: OrderedDict[str, list[DictConfig]] = OrderedDict()
    for cfg in cfgs:
        groups.setdefault(batch_signature(cfg), []).append(cfg)
    out = []
    for members in groups.values():
        out += [members[i : i + max_batch] for i in range(0, len(members), max_batch)]
    return out


def _meta(cfg: DictConfig, built: C.Built, batch_ids: list[str]) -> dict:
    """run.json content, as `experiments.runner.run` writes it, plus the batch."""
    return {
        "run_id": C.run_id(cfg),
        "fingerprint": C.fingerprint(cfg),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "profile": str(cfg.profile.name),
        "git_commit": io.git_commit(C.ROOT),
        "packages": io.package_versions(),
        "machine": io.machine(),
        "estimator_cost_per_outer_step": built.estimator.cost_per_estimate,
        "task_info": built.task.info(),
        "status": "running",
        "wall_time_s": 0.0,
        "batched_with": batch_ids,
    }


def _take(tree, r: int):
    return jax.tree.map(lambda x: x[r], tree)


def _stack(trees):
    return jax.tree.map(lambda *x: jnp.stack(x), *trees)


def run_batch(cfgs: list[DictConfig]) -> list[Path]:
    """Run one batch of runs that differ only in their seed; returns their directories."""
    builts = [C.build(cfg) for cfg in cfgs]
    dirs = [C.run_dir(cfg) for cfg in cfgs]
    ids = [C.run_id(cfg) for cfg in cfgs]
    fps = [C.fingerprint(cfg) for cfg in cfgs]
    metas_old = [io.read_json(d / runner.META) for d in dirs]
    finished = ("complete", "diverged")
    done = [
        m is not None and m.get("fingerprint") == fp and m.get("status") in finished and cfg.resume
        for m, fp, cfg in zip(metas_old, fps, cfgs)
    ]
    todo = [i for i, d in enumerate(done) if not d]
    if not todo:
        return dirs
    cfgs = [cfgs[i] for i in todo]
    builts = [builts[i] for i in todo]
    dirs_todo = [dirs[i] for i in todo]
    ids_todo = [ids[i] for i in todo]
    first = builts[0]
    est, opt, task = first.estimator, first.optimizer, first.task
    for d in dirs_todo:
        d.mkdir(parents=True, exist_ok=True)

    keys = jnp.stack([jax.random.key(int(cfg.seed)) for cfg in cfgs])
    states = outer.init_states(keys, _stack([b.task.theta_init for b in builts]), est, opt)
    step0 = 0
    resumable = all(
        m is not None and m.get("fingerprint") == fp and cfg.resume and (d / runner.CKPT).exists()
        for m, fp, cfg, d in zip(
            [metas_old[i] for i in todo], [fps[i] for i in todo], cfgs, dirs_todo
        )
    )
    walls_before = [0.0] * len(cfgs)
    if resumable:
        loaded = [io.load_checkpoint(d / runner.CKPT, _take(states, 0)) for d in dirs_todo]
        steps = {int(ck["outer_step"]) for _, ck in loaded}
        if len(steps) == 1:
            states = _stack([s for s, _ in loaded])
            step0 = steps.pop()
            for d in dirs_todo:
                io.truncate_rows(d / runner.CSV, step0)
            walls_before = [float((metas_old[i] or {}).get("wall_time_s", 0.0)) for i in todo]
        else:
            resumable = False
    if not resumable:
        for d in dirs_todo:
            runner._clean(d)

    metas = [_meta(cfg, b, ids_todo) for cfg, b in zip(cfgs, builts)]
    for d, m, w in zip(dirs_todo, metas, walls_before):
        m["wall_time_s"] = w
        io.write_json(d / runner.META, m)
    infos = [C.run_info(cfg) for cfg in cfgs]
    cost_metric = task.cost_metric
    live = [True] * len(cfgs)

    def write(metrics, r):
        m = {k: np.asarray(v[r]) for k, v in metrics.items()}
        if cost_metric:
            m[cost_metric] = np.asarray(m["outer_step"], np.float64) * float(est.cost_per_estimate)
        io.append_rows(dirs_todo[r] / runner.CSV, results.rows(infos[r], m, est.steps_per_estimate))
        return m

    start = time.perf_counter()
    if step0 == 0:
        initial = jax.jit(jax.vmap(outer.make_initial_metrics(task.evaluate)))
        first_metrics = jax.device_get(initial(states))
        for r in range(len(cfgs)):
            write(first_metrics, r)
    chunks = {}
    step = step0
    num_steps, log_every, chunk_size = first.num_steps, first.log_every, first.chunk_size
    while step < num_steps:
        n = min(chunk_size, num_steps - step)
        if n not in chunks:
            chunks[n] = outer.make_batched_chunk(
                est, opt, log_every=log_every, num_logs=n // log_every, evaluate=task.evaluate
            )
        states, metrics = chunks[n](states)
        metrics = jax.device_get(metrics)
        step = int(np.asarray(states.step)[0])
        wall = time.perf_counter() - start
        for r in range(len(cfgs)):
            if not live[r]:
                continue
            m = write(metrics, r)
            io.save_checkpoint(dirs_todo[r] / runner.CKPT, _take(states, r), {"outer_step": step})
            metas[r]["wall_time_s"] = walls_before[r] + wall
            metas[r]["batch_wall_time_s"] = wall
            bad = runner._first_nonfinite_step(m)
            if bad is not None:
                live[r] = False
                metas[r].update(status="diverged", diverged_at_outer_step=bad)
                msg = f"{ids_todo[r]}: theta became non-finite at outer step {bad}; rows kept"
                print(msg, file=sys.stderr)
            io.write_json(dirs_todo[r] / runner.META, metas[r])
        print(f"  batch {','.join(ids_todo)}: {step}/{num_steps} outer steps, {wall:.0f} s", file=sys.stderr)
        if not any(live):
            break
    for r in range(len(cfgs)):
        if live[r]:
            metas[r]["status"] = "complete"
            io.write_json(dirs_todo[r] / runner.META, metas[r])
    return dirs


def run_figure(figure: str, profile: str, extra: list[str], max_batch: int = DEFAULT_MAX_BATCH) -> list[Path]:
    """Every run of ``figure`` under ``profile``, batched; returns the run directories."""
    fig = figures.load(figure)
    figures.check_profile(fig, profile)
    if not figures.runs(fig, profile):
        raise C.ConfigError(f"figure {fig.id} has no runs under profile={profile}; nothing to batch")
    cfgs = []
    for run in figures.runs(fig, profile):
        cfg = C.compose(figures.run_overrides(fig, run, profile, extra))
        C.build(cfg)  # validate everything before any compute
        cfgs.append(cfg)
    out = []
    for batch in group_runs(cfgs, max_batch):
        t0 = time.perf_counter()
        out += run_batch(batch)
        print(
            f"{fig.id}: batch of {len(batch)} ({', '.join(C.run_id(c) for c in batch)}) "
            f"in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
    return out


def main() -> None:
    argv = sys.argv[1:]
    max_batch = DEFAULT_MAX_BATCH
    rest = []
    for arg in argv:
        if arg.startswith("max_batch="):
            value = arg.split("=", 1)[1]
            if not value.isdigit() or int(value) < 1:
                print(f"error: max_batch={value} is invalid; allowed: an integer >= 1", file=sys.stderr)
                sys.exit(2)
            max_batch = int(value)
        else:
            rest.append(arg)
    try:
        figure, profile, extra, _ = parse(rest)
        run_figure(figure, profile, extra, max_batch)
    except C.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: logged rows are kept; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
