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

Each member's folder is locked, verified and resumed as `experiments.runner` does (the same
checkpoint record, the same CSV bytes): a batch resumes from its members' checkpoints when all
unfinished members stopped at the same outer step; otherwise those that had started begin
again (runs are deterministic, so the result is the same).  A member that diverges (the
runner's rule) gets the runner's marker row and no more rows; the others go on.
"""

from __future__ import annotations

import copy
import sys
import time
from collections import OrderedDict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments import cli, config, figures, runner, sizes
from experiments.pipeline import parse
from pes import outer

DEFAULT_MAX_BATCH = 16


def batch_signature(spec: config.RunSpec) -> str:
    """The resolved config without the per-seed keys: runs with equal signatures batch."""
    data = copy.deepcopy(spec.config)
    for key in ("seed", "run_id", *config.NON_RESULT_KEYS):
        data.pop(key, None)
    data.get("task", {}).pop("init_seed", None)
    data.pop("hydra", None)
    return OmegaConf.to_yaml(OmegaConf.create(data), sort_keys=True)


def group_runs(specs: list[config.RunSpec], max_batch: int) -> list[list[config.RunSpec]]:
    """Runs grouped by `batch_signature` (first-seen order), split into batches."""
    groups: OrderedDict[str, list[config.RunSpec]] = OrderedDict()
    for spec in specs:
        groups.setdefault(batch_signature(spec), []).append(spec)
    out = []
    for members in groups.values():
        out += [members[i : i + max_batch] for i in range(0, len(members), max_batch)]
    return out


def _take(tree, r: int):
    return jax.tree.map(lambda x: x[r], tree)


def _stack(trees):
    return jax.tree.map(lambda *x: jnp.stack(x), *trees)


def run_batch(runs: list[DictConfig | config.RunSpec]) -> list[Path]:
    """Run one batch of runs that differ only in their seed (composed configs, validated and
    built first, or their specs); returns their directories.

    Every member's folder is locked, judged and resumed exactly as `experiments.runner.run`
    does (same checks, same verified CSV, same checkpoint record), so either runner can
    continue what the other started."""
    specs = [config.as_spec(run) for run in runs]
    dirs = [spec.run_dir for spec in specs]
    locks = []
    try:
        recorded = []
        for spec in specs:
            lock, rec = runner.lock_folder(spec, spec.run_dir)
            locks.append(lock)
            recorded.append(rec)
        starts = _starts(specs, recorded)
        todo = [r for r, st in enumerate(starts) if not st.finished]
        if todo:
            _train_batch([specs[r] for r in todo], [starts[r] for r in todo])
    finally:
        for lock in locks:
            lock.release()
    return dirs


def _starts(specs: list[config.RunSpec], recorded: list[runner.Recorded]) -> list[runner.Start]:
    """Where each member starts (`experiments.runner.begin`); when the unfinished members
    stopped at different outer steps, those that had started begin again."""
    first = specs[0].built
    config.set_x64(specs[0].x64)  # the specs may have been built before another config's
    keys = jnp.stack([jax.random.key(spec.seed) for spec in specs])
    thetas = _stack([spec.built.task.theta_init for spec in specs])
    fresh = outer.init_states(keys, thetas, first.estimator, first.optimizer)
    starts = [
        runner.begin(spec, spec.run_dir, rec, _take(fresh, r))
        for r, (spec, rec) in enumerate(zip(specs, recorded))
    ]
    todo = [r for r, st in enumerate(starts) if not st.finished]
    if len({int(starts[r].state.step) for r in todo}) > 1:  # members stopped at different steps
        for r in todo:
            if int(starts[r].state.step) > 0:
                print(
                    f"{specs[r].run_id}: batch members stopped at different outer steps; restarting it",
                    file=sys.stderr,
                )
                starts[r] = runner.from_scratch(specs[r].run_dir, _take(fresh, r))
    return starts


def _member(metrics, r: int) -> dict:
    """Member r's log points."""
    return {name: np.asarray(v[r]) for name, v in metrics.items()}


def _train_batch(specs: list[config.RunSpec], starts: list[runner.Start]) -> None:
    """Meta-train the unfinished members together from their (common) outer step; each
    member's rows, checkpoints and run.json are kept by `experiments.runner.RunLog`, as for a
    run alone."""
    ids = [spec.run_id for spec in specs]
    members = [runner.RunLog(spec, spec.run_dir, st, batched_with=ids) for spec, st in zip(specs, starts)]
    total, chunk_size = specs[0].train.num_outer_steps, specs[0].train.chunk_size
    states = _stack([st.state for st in starts])
    step, t0 = int(starts[0].state.step), time.perf_counter()
    try:
        if step == 0:
            initial = jax.jit(jax.vmap(outer.make_initial_metrics(specs[0].built.task.evaluate)))
            first = jax.device_get(initial(states))
            for r, run in enumerate(members):
                run.log_start(_member(first, r))
        chunk = runner.make_chunks(specs[0], outer.make_batched_chunk)
        while step < total and any(run.live for run in members):
            n = min(chunk_size, total - step)
            states, metrics = chunk(n)(states)
            metrics = jax.device_get(metrics)
            step = int(np.asarray(states.step)[0])
            for r, run in enumerate(members):
                if run.live:
                    run.log_chunk(_member(metrics, r), _take(states, r))
            print(
                f"  batch {','.join(ids)}: {step}/{total} outer steps, {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
            )
    except KeyboardInterrupt:
        for run in members:
            run.interrupted()
        raise


def run_figure(figure: str, profile: str, extra: list[str], max_batch: int = DEFAULT_MAX_BATCH) -> list[Path]:
    """Every run of ``figure`` under ``profile``, batched; returns the run directories."""
    fig = figures.load(figure)
    figures.check_profile(fig, profile)
    if not figures.runs(fig, profile):
        raise config.ConfigError(f"figure {fig.id} has no runs under profile={profile}; nothing to batch")
    specs, estimates = [], {}
    for run in figures.runs(fig, profile):
        # every run validated and built before any compute
        spec = config.RunSpec.from_config(config.compose(figures.run_overrides(fig, run, profile, extra)))
        estimates[str(run.id)] = sizes.pending(spec, spec.run_dir)
        specs.append(spec)
    sizes.check_figure(estimates, specs[0].max_result_mb, f"figure {fig.id} ({profile})")
    out = []
    for batch in group_runs(specs, max_batch):
        t0 = time.perf_counter()
        out += run_batch(batch)
        print(
            f"{fig.id}: batch of {len(batch)} ({', '.join(spec.run_id for spec in batch)}) "
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
    except cli.Problem as err:  # a config or file problem: one line
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except OSError as err:
        if not err.filename:
            raise
        print(f"error: {cli.file_problem(err)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: logged rows are kept; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
