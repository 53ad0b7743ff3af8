"""The size guard: the rows and bytes a run or a figure will write, estimated from its settings
before anything is computed, and a refusal above ``max_result_mb``.

A run logs at its starting point and every ``train.log_every`` outer steps, one row per
metric: theta (entry by entry up to 16 entries, else its norm), the task's evaluation metrics
and its cost metric, and after the start also the estimator's ``loss`` and ``grad_norm``.
The evaluation's metrics are read from the shapes of ``task.evaluate`` (traced, not run).
A row holds the run's constant columns, the two step counts, the metric's name and a value
(``VALUE_CHARS`` characters, the length of a float64's shortest repr, a little more than most).
On disk a run also holds its checkpoint and up to ``train.keep_checkpoints`` earlier ones,
each the size of the state (read from the shapes of the initial state).  A figure writes its
runs, and its merged table holds their rows again (plus the ``source`` column); the
post-steps' own tables are not counted.

``max_result_mb`` (top-level config key, default in ``configs/config.yaml``; not part of a run's
identity) is the largest estimate, in MB, that runs without asking: above it a run or a figure
is refused in one line that gives the estimate and the value that confirms it; ``null``
turns the guard off.  ``run.json`` records the estimate (``size_estimate``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments import artefacts, config, io
from experiments.cli import size_text
from pes import outer

KEY = config.MAX_RESULT_KEY  # validated by `config.max_result_mb` (a run's spec holds it)
VALUE_CHARS = 19  # e.g. 4.991753578186035 (17), 2.176031282653068e-10 (21)
HEADER_BYTES = 100  # the CSV header line
NPZ_ENTRY_BYTES = 240  # an array's npy header and zip entries in checkpoint.npz
_CACHE: dict[tuple, Any] = {}  # traced shapes are the slow part: once per task and per run config


def _metric_names(spec: config.RunSpec) -> tuple[list[str], list[str]]:
    """(metrics of the starting point, metrics of every later log point)."""
    key = ("names", artefacts.fingerprint({"task": spec.config.get("task"), "x64": spec.x64}))
    if key in _CACHE:
        return _CACHE[key]
    built = spec.built
    theta = built.task.theta_init
    size = sum(int(np.size(x)) for x in jax.tree.leaves(theta))
    if size > outer.MAX_LOGGED_THETA:
        names = ["theta_norm"]
    else:
        names = ["theta"] if size == 1 else [f"theta/{i}" for i in range(size)]
    if built.task.evaluate is not None:
        shapes = jax.eval_shape(built.task.evaluate, theta, jax.random.key(0))
        names += [str(k) for k in shapes]
    if built.task.cost_metric:
        names.append(str(built.task.cost_metric))
    later = list(dict.fromkeys(["loss", "grad_norm", *names]))  # an evaluated loss replaces the aux one
    _CACHE[key] = names, later
    return _CACHE[key]


def _state_bytes(built: config.Built) -> int:
    shapes = jax.eval_shape(
        lambda key: outer.init_state(key, built.task.theta_init, built.estimator, built.optimizer),
        jax.random.key(0),
    )
    total = 512  # the metadata record
    for leaf in jax.tree.leaves(shapes):
        total += NPZ_ENTRY_BYTES
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            total += 8 * int(np.prod(leaf.shape, dtype=np.int64))  # saved as its key data (2 x uint32)
        else:
            total += int(np.prod(leaf.shape, dtype=np.int64)) * leaf.dtype.itemsize
    return total


def run_estimate(spec: config.RunSpec) -> dict:
    """Rows and bytes a run writes (see the module docstring), without computing anything."""
    key = (spec.fingerprint, spec.run_id, spec.figure_id, spec.train.keep_checkpoints)
    if key in _CACHE:
        return dict(_CACHE[key])
    first, later = _metric_names(spec)
    steps = spec.train.num_outer_steps
    logs = steps // spec.train.log_every
    rows = len(first) + logs * len(later)
    info = spec.run_info
    constant = sum(len("" if isinstance(v, float) and math.isnan(v) else str(v)) for v in info.values())
    inner = steps * max(int(spec.built.estimator.steps_per_estimate), 1)
    name_chars = sum(map(len, first)) + logs * sum(map(len, later))
    row_bytes = constant + len(str(steps)) + len(str(inner)) + VALUE_CHARS + len(info) + 4  # + separators
    csv_bytes = int(HEADER_BYTES + rows * row_bytes + name_chars)
    checkpoints = 1 + spec.train.keep_checkpoints
    state = _state_bytes(spec.built)
    estimate = {
        "rows": int(rows),
        "csv_bytes": csv_bytes,
        "checkpoint_bytes": int(state),
        "checkpoints": int(checkpoints),
        "total_bytes": int(csv_bytes + checkpoints * state),
    }
    _CACHE[key] = estimate
    return dict(estimate)


def figure_estimate(runs: Mapping[str, Mapping]) -> dict:
    """A figure's rows and bytes from its runs' estimates: the runs, and the merged table."""
    rows = sum(r["rows"] for r in runs.values())
    csv_bytes = sum(r["csv_bytes"] for r in runs.values())
    merged = csv_bytes + rows * len(",run")
    return {
        "rows": int(rows),
        "csv_bytes": int(csv_bytes),
        "merged_csv_bytes": int(merged),
        "total_bytes": int(sum(r["total_bytes"] for r in runs.values()) + merged),
    }


def _confirm(total: int) -> str:
    mb = total / 1e6
    step = 10 ** max(math.floor(math.log10(max(mb, 1.0))) - 1, 0)  # two significant digits
    return f"{KEY}={int(math.ceil(mb * 1.1 / step) * step)}"


def guard(estimate: Mapping, limit: float | None, what: str, fixes: Sequence[str]) -> None:
    """A one-line `config.ConfigError` when ``estimate`` is above ``limit`` MB."""
    if limit is None or estimate["total_bytes"] <= limit * 1e6:
        return
    detail = f"{estimate['rows']:,} rows, {size_text(estimate['csv_bytes'])} of CSV"
    if "checkpoints" in estimate:
        detail += f", {estimate['checkpoints']} checkpoints of {size_text(estimate['checkpoint_bytes'])}"
    raise config.ConfigError(
        f"{what} would write about {size_text(estimate['total_bytes'])} ({detail}), above "
        f"{KEY}={limit:g}; fix: {' or '.join(fixes)}, or confirm with {_confirm(estimate['total_bytes'])} "
        "(null: no limit)"
    )


RUN_FIXES = ("lower train.num_outer_steps", "raise train.log_every")


def finished(spec: config.RunSpec, out_dir: Path) -> bool:
    """Whether ``out_dir`` holds this run's finished results (it writes nothing more)."""
    try:
        meta = io.read_json(Path(out_dir) / "run.json") or {}
    except io.FileProblem:
        return False
    same = config.recorded_fingerprint(meta) == spec.fingerprint
    return same and meta.get("status") in ("complete", "diverged")


def pending(spec: config.RunSpec, out_dir: Path) -> dict:
    """What a run of a figure will write: its estimate, or for a finished run nothing more
    (``total_bytes`` 0) and its CSV's size (which the merged table holds again)."""
    if finished(spec, out_dir):
        csv = Path(out_dir) / "metrics.csv"
        size = csv.stat().st_size if csv.is_file() else 0
        return {"rows": 0, "csv_bytes": int(size), "total_bytes": 0, "finished": True}
    return run_estimate(spec)


def check_run(spec: config.RunSpec, out_dir: Path) -> dict | None:
    """The estimate of a run still to compute (None for a finished one); a one-line
    `config.ConfigError` when it is above ``max_result_mb``."""
    if finished(spec, out_dir):
        return None
    estimate = run_estimate(spec)
    guard(estimate, spec.max_result_mb, f"run {spec.run_id}", RUN_FIXES)
    return estimate


def check_figure(runs: Mapping[str, Mapping], limit: float | None, what: str) -> dict:
    """A figure's estimate from `pending` of each run; a one-line `config.ConfigError` when
    the figure, or one of its runs, is above ``limit`` MB (``max_result_mb``; None: no guard)."""
    estimate = figure_estimate(runs)
    fixes = RUN_FIXES
    if runs:
        largest, big = max(runs.items(), key=lambda item: item[1]["total_bytes"])
        if big["total_bytes"]:
            fixes = (
                *RUN_FIXES[:1],
                f"{RUN_FIXES[1]} (its largest run, {largest}: {size_text(big['total_bytes'])})",
            )
    guard(estimate, limit, what, fixes)
    return estimate
