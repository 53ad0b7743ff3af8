"""Run one composed config: compiled chunks of outer steps, rows appended as they come.

Layout of a run directory::

    metrics.csv      tidy long-format rows (pes.results.COLUMNS), appended per chunk
    checkpoint.npz   the TrainState after the last logged chunk (atomic)
    run.json         resolved config, fingerprint, git commit, versions, machine, status, wall time

Rerunning the same config resumes from the checkpoint (rows past it are dropped first),
or does nothing if the run is complete.  A run directory holding a different config is
started clean.  An interrupted run keeps every row it logged.

A task whose ``cost_metric`` field names a metric (``env_steps`` for control tasks)
also gets that metric logged: outer steps times the estimator's ``cost_per_estimate``,
i.e. every inner step the estimator took (all particles, truncated ES's mean trajectory
included; evaluation excluded).  A chunk that fails with an error (a simulator error,
say) marks the run ``failed`` in run.json, keeps every row logged before it, and raises
`RunFailed` with a one-line message naming the run, seed and outer steps.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import jax
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from experiments import artefacts, io
from experiments import config as C
from pes import outer, results

CSV, CKPT, META = "metrics.csv", "checkpoint.npz", "run.json"


class RunFailed(RuntimeError):
    """A run stopped on an error; its rows up to the last finished chunk are kept."""


def _last_line(err: BaseException) -> str:
    """The innermost message of an error (a host-callback error arrives wrapped by XLA)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error:" in line or "Error " in line:
            return line
    return lines[-1] if lines else type(err).__name__


def _clean(out_dir: Path) -> None:
    for name in (CSV, CKPT, META):
        (out_dir / name).unlink(missing_ok=True)


def _first_nonfinite_step(metrics: dict) -> int | None:
    """The first logged outer step at which theta is NaN or infinite, if any."""
    steps = np.asarray(metrics["outer_step"])
    bad = np.zeros(steps.shape, bool)
    for key, values in metrics.items():
        if key.startswith("theta"):
            bad |= ~np.isfinite(np.asarray(values, dtype=np.float64))
    return int(steps[bad][0]) if bad.any() else None


def run(cfg: DictConfig, *, out_dir: Path | None = None) -> Path:
    """Run ``cfg`` (validated first); returns the run directory."""
    built = C.build(cfg)
    rid = C.run_id(cfg)
    out_dir = Path(out_dir) if out_dir is not None else C.run_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    fp = C.fingerprint(cfg)
    meta = io.read_json(out_dir / META)
    same = meta is not None and meta.get("fingerprint") == fp
    if same and meta.get("status") in ("complete", "diverged") and cfg.resume:
        return out_dir
    if not (same and cfg.resume and (out_dir / CKPT).exists()):
        _clean(out_dir)
        meta = None

    key = jax.random.key(int(cfg.seed))
    state = outer.init_state(key, built.task.theta_init, built.estimator, built.optimizer)
    wall_before = 0.0
    if meta is not None:
        state, ck = io.load_checkpoint(out_dir / CKPT, state)
        io.truncate_rows(out_dir / CSV, int(ck["outer_step"]))
        wall_before = float(meta.get("wall_time_s", 0.0))

    info = C.run_info(cfg)
    meta = {
        **artefacts.provenance(),  # git commit, packages, machine: the suite's one run-info head
        "run_id": rid,
        "fingerprint": fp,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "profile": str(cfg.profile.name),
        "estimator_cost_per_outer_step": built.estimator.cost_per_estimate,
        # the task's static facts (e.g. which dataset was loaded and from where)
        "task_info": built.task.info(),
        "status": "running",
        "wall_time_s": wall_before,
    }
    io.write_json(out_dir / META, meta)

    chunks: dict[int, object] = {}
    done = int(state.step)
    cost_metric = built.task.cost_metric

    def add_cost(metrics):
        """Inner steps taken so far, e.g. training environment steps (evaluation excluded)."""
        if cost_metric:
            steps = np.asarray(metrics["outer_step"], np.float64)
            metrics[cost_metric] = steps * float(built.estimator.cost_per_estimate)
        return metrics

    def failed(err, steps):
        msg = (
            f"{rid} (seed {cfg.seed}): failed during {steps}: {_last_line(err)}; "
            f"rows up to outer step {done} are kept in {out_dir / CSV}"
        )
        meta.update(status="failed", error=msg, failed_after_outer_step=done)
        meta["wall_time_s"] = wall_before + time.perf_counter() - start
        io.write_json(out_dir / META, meta)
        return RunFailed(msg)

    start = time.perf_counter()
    if done == 0:  # the starting point: theta and the task's evaluation before any update
        try:
            first = jax.device_get(outer.make_initial_metrics(built.task.evaluate)(state))
        except Exception as err:  # noqa: BLE001 - reported with the run's identity, then re-raised
            raise failed(err, "the initial evaluation") from err
        io.append_rows(out_dir / CSV, results.rows(info, add_cost(first), built.estimator.steps_per_estimate))
    bar = tqdm(
        total=built.num_steps,
        initial=done,
        desc=rid,
        unit="step",
        disable=None if cfg.progress else True,  # None: only on a terminal
        file=sys.stderr,
        leave=False,
    )
    try:
        while done < built.num_steps:
            n = min(built.chunk_size, built.num_steps - done)
            if n not in chunks:
                chunks[n] = outer.make_chunk(
                    built.estimator,
                    built.optimizer,
                    log_every=built.log_every,
                    num_logs=n // built.log_every,
                    evaluate=built.task.evaluate,
                )
            try:
                state, metrics = chunks[n](state)
                metrics = jax.device_get(metrics)
            except Exception as err:  # noqa: BLE001 - reported with the run's identity, then re-raised
                raise failed(err, f"outer steps {done + 1}..{done + n}") from err
            add_cost(metrics)
            io.append_rows(out_dir / CSV, results.rows(info, metrics, built.estimator.steps_per_estimate))
            done = int(state.step)
            io.save_checkpoint(out_dir / CKPT, state, {"outer_step": done})
            meta["wall_time_s"] = wall_before + time.perf_counter() - start
            io.write_json(out_dir / META, meta)
            bar.update(n)
            bad_step = _first_nonfinite_step(metrics)
            if bad_step is not None:
                # A diverged method: keep its rows, stop spending compute on NaNs.
                meta["status"] = "diverged"
                meta["diverged_at_outer_step"] = bad_step
                io.write_json(out_dir / META, meta)
                print(
                    f"{rid}: theta became non-finite at outer step {bad_step}; run stopped, rows kept",
                    file=sys.stderr,
                )
                return out_dir
    except KeyboardInterrupt:
        meta["status"] = "interrupted"
        io.write_json(out_dir / META, meta)
        raise
    finally:
        bar.close()
    meta["status"] = "complete"
    meta["wall_time_s"] = wall_before + time.perf_counter() - start
    io.write_json(out_dir / META, meta)
    return out_dir


def remove(out_dir: Path) -> None:
    """Delete a run directory (used to start a figure clean)."""
    shutil.rmtree(out_dir, ignore_errors=True)
