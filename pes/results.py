"""The results schema: one tidy long-format table shared by every experiment.

Every CSV the suite writes (``metrics.csv`` of a run, the merged ``metrics.csv`` of a
figure) has exactly these columns, one row per logged scalar:

| column          | meaning                                                              |
|-----------------|----------------------------------------------------------------------|
| `run_id`        | deterministic id of the run inside its figure (e.g. `pes-k1`)         |
| `figure`        | figure id (`figure2`) or `adhoc` for single runs                      |
| `task`          | task name (`influence_balancing`)                                     |
| `estimator`     | estimator name (`pes`, `es`, `tbptt`, `rtrl`, `uoro`)                 |
| `trunc_len`     | truncation length K                                                  |
| `sigma`         | perturbation standard deviation (empty for gradient methods)         |
| `num_particles` | particles N, both signs counted (empty for gradient methods)         |
| `seed`          | the run's seed                                                       |
| `outer_step`    | outer iterations taken when the value was logged                     |
| `inner_steps`   | inner steps taken by one trajectory (outer_step * K, for every method) |
| `metric`        | metric name; vectors are split into `name/0`, `name/1`, ...           |
| `value`         | the scalar value (float)                                             |

No cell ever holds an array repr.  This module only builds and checks tables; reading
and writing files is the runner's job (`experiments.io`).

A figure's merged table (``<results_root>/<profile>/<figure>/metrics.csv``) has one more
column, `source` (`FIGURE_COLUMNS`): ``run`` for the rows an optimisation run logged,
otherwise the name of the post-step that wrote the row (``grid``, ``evaluation``,
``variance``, ``adam_baseline``, ``inner_curves``, ...; see `experiments.steps`).  Rows of a
baseline, an inner curve or an evaluation are told apart by `source` (and `estimator`,
`metric`), never by run-id prefixes.  A (run_id, seed, metric, outer_step) is unique within
a source.

Grid-search CSVs (``grid.csv`` of a figure, written by the ``grid`` post-step)
have their own schema, one row per grid point:

| column             | meaning                                                         |
|--------------------|-----------------------------------------------------------------|
| `task`             | task name (`toy_regression`)                                     |
| `metric`           | the evaluated metric (`meta_objective`)                          |
| `theta/0` ... `theta/{d-1}` | the grid point's coordinates (one column per dimension)  |
| `value`            | the metric at that point (float; may be inf/NaN where it diverges) |

Rows are in C order of the regular grid (last dimension fastest); `grid_frame`,
`validate_grid` and `grid_array` build, check and reshape such tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from pes._extras import require

pd = require("pandas", extra="suite", by="pes.results")

COLUMNS = (
    "run_id",
    "figure",
    "task",
    "estimator",
    "trunc_len",
    "sigma",
    "num_particles",
    "seed",
    "outer_step",
    "inner_steps",
    "metric",
    "value",
)
"""The columns of every tidy CSV, in order (see the module docstring)."""
RUN_COLUMNS = COLUMNS[:8]
"""The columns that are constant within a run."""
SOURCE = "source"
"""The extra column of a figure's merged table: which run or post-step wrote the row."""
RUN_SOURCE = "run"
"""The `SOURCE` of rows logged by an optimisation run."""
FIGURE_COLUMNS = (*COLUMNS, SOURCE)
"""The columns of a figure's merged table."""


class SchemaError(ValueError):
    """A results table does not follow the schema."""


def rows(run_info: Mapping, metrics: Mapping[str, np.ndarray], trunc_len: int) -> list[dict]:
    """Long-format rows from stacked metrics (``metrics["outer_step"]`` gives the steps).

    Args:
      run_info: values of `RUN_COLUMNS` for the run.
      metrics: name -> array of shape (num_logs,), including ``"outer_step"``.
      trunc_len: K, to compute ``inner_steps``.
    """
    missing = [c for c in RUN_COLUMNS if c not in run_info]
    if missing:
        raise SchemaError(f"run_info lacks {missing}")
    steps = np.asarray(metrics["outer_step"]).astype(np.int64)
    out = []
    for name, values in sorted(metrics.items()):
        if name == "outer_step":
            continue
        values = np.asarray(values, dtype=np.float64)
        if values.shape != steps.shape:
            raise SchemaError(f"metric {name!r} has shape {values.shape}, expected {steps.shape}")
        for step, value in zip(steps, values):
            out.append(
                dict(
                    run_info,
                    outer_step=int(step),
                    inner_steps=int(step) * int(trunc_len),
                    metric=name,
                    value=float(value),
                )
            )
    return out


def frame(records: Iterable[Mapping]) -> pd.DataFrame:
    """A DataFrame with the schema's columns in order."""
    return pd.DataFrame.from_records(list(records), columns=list(COLUMNS))


def validate(
    df: pd.DataFrame,
    *,
    expected_runs: Iterable[str] | None = None,
    allow_nonfinite: Iterable[str] = (),
) -> pd.DataFrame:
    """Check a results table (`COLUMNS`, or a figure's `FIGURE_COLUMNS`); return it with
    normalised dtypes.

    Raises `SchemaError` on wrong columns, missing expected runs (among the ``run`` rows of
    a figure's table), non-numeric values, duplicate (source, run, seed, metric, step)
    rows, or NaN values in metrics not listed in ``allow_nonfinite`` (a diverging method
    may legitimately log inf).
    """
    if tuple(df.columns) not in (COLUMNS, FIGURE_COLUMNS):
        raise SchemaError(
            f"columns are {list(df.columns)}; expected {list(COLUMNS)} (+ {SOURCE!r} in a figure's table)"
        )
    merged = SOURCE in df.columns
    df = df.copy()
    try:
        df["value"] = pd.to_numeric(df["value"], errors="raise").astype(float)
        for col in ("trunc_len", "seed", "outer_step", "inner_steps"):
            df[col] = pd.to_numeric(df[col], errors="raise").astype(np.int64)
    except (ValueError, TypeError) as err:
        raise SchemaError(f"non-numeric cell: {err}") from err
    df["run_id"] = df["run_id"].astype(str)
    df["metric"] = df["metric"].astype(str)
    if merged:
        df[SOURCE] = df[SOURCE].astype(str)
    if expected_runs is not None:
        missing = sorted(set(expected_runs) - set(run_rows(df)["run_id"]))
        if missing:
            raise SchemaError(f"missing runs: {missing}")
    dup = df.duplicated(subset=[SOURCE] * merged + ["run_id", "seed", "metric", "outer_step"])
    if dup.any():
        first = df[dup].iloc[0]
        where = f" ({SOURCE} {first[SOURCE]})" if merged else ""
        raise SchemaError(
            f"duplicate rows, e.g. run {first.run_id} metric {first.metric} step {first.outer_step}{where}"
        )
    allowed = set(allow_nonfinite)
    bad = df["value"].isna() & ~df["metric"].isin(allowed)
    if bad.any():
        first = df[bad].iloc[0]
        raise SchemaError(f"NaN value: run {first.run_id} metric {first.metric} step {first.outer_step}")
    return df


def merge(parts: Iterable[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """One figure table from (source, table) parts: their rows, with the `source` column."""
    frames = []
    for source, table in parts:
        if tuple(table.columns) != COLUMNS:
            raise SchemaError(
                f"rows of {source!r} have columns {list(table.columns)}; expected {list(COLUMNS)}"
            )
        if len(table):  # (an empty table would turn numeric columns into objects)
            frames.append(table.assign(**{SOURCE: source}))
    if not frames:
        return pd.DataFrame(columns=list(FIGURE_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(FIGURE_COLUMNS)]


def run_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows logged by optimisation runs (all rows of a table without a `source` column)."""
    return df[df[SOURCE] == RUN_SOURCE] if SOURCE in df.columns else df


def source_rows(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """The rows a post-step (or, for ``run``, the runs) wrote."""
    if SOURCE not in df.columns:
        raise SchemaError(f"the table has no {SOURCE!r} column; is it a figure's merged metrics.csv?")
    return df[df[SOURCE] == source]


def metric_table(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Wide view of one metric: index outer_step, one column per run_id."""
    sub = df[df["metric"] == metric]
    if sub.empty:
        raise SchemaError(f"no rows for metric {metric!r}; have {sorted(df['metric'].unique())}")
    return sub.pivot_table(index="outer_step", columns="run_id", values="value", aggfunc="mean")


def final_values(df: pd.DataFrame, metric: str) -> pd.Series:
    """The last logged value of ``metric`` per run (mean over seeds)."""
    sub = df[df["metric"] == metric]
    last = sub.loc[sub.groupby(["run_id", "seed"])["outer_step"].idxmax()]
    return last.groupby("run_id")["value"].mean()


def is_finite(x: float | None) -> bool:
    """True for a number that is neither None, NaN nor infinite."""
    return x is not None and math.isfinite(x)


# ----------------------------------------------------------------------------- grid CSVs

GRID_FIXED_COLUMNS = ("task", "metric")
"""The columns of a grid table besides ``theta/i`` and ``value``."""


def grid_columns(dim: int) -> tuple[str, ...]:
    """The columns of a grid table over a ``dim``-dimensional theta."""
    return (*GRID_FIXED_COLUMNS, *(f"theta/{i}" for i in range(dim)), "value")


def grid_frame(task: str, metric: str, points: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """A grid table from points (P, dim) and values (P,)."""
    points = np.asarray(points, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if points.ndim != 2 or points.shape[0] != values.shape[0]:
        raise SchemaError(f"points {points.shape} and values {values.shape} do not match")
    data = {"task": task, "metric": metric}
    data.update({f"theta/{i}": points[:, i] for i in range(points.shape[1])})
    data["value"] = values
    return pd.DataFrame(data, columns=list(grid_columns(points.shape[1])))


def validate_grid(df: pd.DataFrame) -> pd.DataFrame:
    """Check a grid table's columns and numeric cells; return it with float columns."""
    dim = sum(1 for c in df.columns if str(c).startswith("theta/"))
    if dim == 0 or tuple(df.columns) != grid_columns(dim):
        raise SchemaError(f"grid columns are {list(df.columns)}; expected task, metric, theta/0.., value")
    if df.empty:
        raise SchemaError("the grid table has zero rows")
    df = df.copy()
    try:
        for col in grid_columns(dim)[2:]:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
    except (ValueError, TypeError) as err:
        raise SchemaError(f"non-numeric grid cell: {err}") from err
    return df


def grid_array(df: pd.DataFrame) -> tuple[list[np.ndarray], np.ndarray]:
    """(axes, values) of a regular grid table; values has shape (len(axes[0]), ...)."""
    df = validate_grid(df)
    dim = len(df.columns) - 3
    axes = [np.unique(df[f"theta/{i}"].to_numpy()) for i in range(dim)]
    shape = tuple(len(a) for a in axes)
    if int(np.prod(shape)) != len(df):
        raise SchemaError(f"the grid table has {len(df)} rows, not a full regular grid of shape {shape}")
    order = np.lexsort([df[f"theta/{i}"].to_numpy() for i in reversed(range(dim))])
    return axes, df["value"].to_numpy()[order].reshape(shape)
