"""Post-steps: registered computations that follow a figure's runs.

A figure lists them, in order, under ``post:`` (``{step: <name>, <settings>, <profile>:
{<settings>}}``); ``<name>.<setting>=<value>`` on the ``experiments.reproduce`` command line
changes one setting.  Every step:

* declares its settings (name -> default, `REQUIRED` for those without one) and checks
  them (``check``), so a bad setting fails when the figure is loaded;
* ``prepare(ctx, settings)``: composes and builds what it needs (tasks, the task fields
  it requires), without computing, before any run starts;
* ``inputs(ctx, plan)``: after the runs, what its result depends on besides its settings
  (the task config, the runs' final thetas or checkpoints); fingerprinted together with
  the settings (minus ``non_result`` ones such as chunk sizes) by the pipeline's artefact
  cache, which reuses the step's files while the fingerprint is unchanged;
* ``compute(ctx, plan) -> StepOutput``: rows in the results schema (kept in
  ``<fig_dir>/steps/<name>.csv`` and merged into the figure's ``metrics.csv`` with
  ``source=<name>``) and optional extra tables (``<fig_dir>/<table>.csv``, e.g. ``grid.csv``).

Registered steps (module):

=============== ====================================================================
grid            a task metric (or a fresh full training's) on a regular theta grid
                (`experiments.steps.grid`; figures 3 and 5)
evaluation      every run's final theta evaluated by fresh full-horizon trainings
                (`experiments.steps.evaluation`; figure 5)
variance        the PES variance study at fixed theta (`experiments.steps.variance`;
                figure 4)
adam_baseline   Adam on the inner task, learning rate tuned on the evaluation runs,
                with its inner training curve (`experiments.steps.lopt`; figure 7)
inner_curves    inner training curves of the runs' final and initial learned
                optimizers (`experiments.steps.lopt`; figure 7)
compute_axis    total compute (N K inner steps per outer iteration) and a best-so-far
                curve of every run (`experiments.steps.compute_axis`; figures 6, 9)
random_search   random search in the task's search space, scored on the task's
                evaluation runs (`experiments.steps.random_search`; figure 6)
truncation_variance  per-truncation gradient variance of PES, NRES, GPES-K and truncated
                ES (`experiments.steps.estimator_comparison`; figure 10)
timing          every run's seconds per outer step, timed side by side in one process
                (`experiments.steps.estimator_comparison`; figure 10)
=============== ====================================================================
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from experiments import config
from pes import results

MODULES = ("grid", "evaluation", "variance", "lopt", "compute_axis", "random_search",
           "estimator_comparison")
REQUIRED = object()  # marks a setting without a default
COMMON = {"overrides": []}  # every step: Hydra overrides of the step's own task config


class StepOutput(NamedTuple):
    """What a step computed: rows in the results schema, extra tables and facts to record."""

    rows: pd.DataFrame
    tables: Mapping[str, pd.DataFrame] = {}
    info: Mapping[str, Any] = {}


@dataclasses.dataclass
class Context:
    """What a step sees of the figure being reproduced."""

    fig: DictConfig
    profile: str
    fig_dir: Path
    head: list[str]  # the figure's base + profile overrides
    tail: list[str]  # profile=, figure_id= and the command line's Hydra overrides
    runs: list[config.RunSpec]  # the figure's runs, validated and built (experiments.config)
    progress: bool = False
    rows: pd.DataFrame | None = None  # runs' rows and earlier steps' (set by the pipeline)
    log: Callable[[str], None] = print

    def task_config(self, overrides=()) -> DictConfig:
        """The figure's own config (no run) with a step's ``overrides``."""
        return config.compose([*self.head, *overrides, *self.tail])

    def run_rows(self) -> pd.DataFrame:
        """The rows the figure's runs logged."""
        return results.run_rows(self.rows)


@dataclasses.dataclass(frozen=True)
class PostStep:
    """A registered post-step (see the module docstring)."""

    name: str
    summary: str
    defaults: Mapping[str, Any]
    check: Callable[[dict, str], dict]
    prepare: Callable[[Context, dict], Any]
    inputs: Callable[[Context, Any], dict]
    compute: Callable[[Context, Any], StepOutput]
    non_result: tuple[str, ...] = ()


REGISTRY: dict[str, PostStep] = {}


def register(step: PostStep) -> PostStep:
    if step.name in REGISTRY:
        raise ValueError(f"post-step {step.name!r} is registered twice")
    REGISTRY[step.name] = step
    return step


def _load() -> dict[str, PostStep]:
    for module in MODULES:
        importlib.import_module(f"experiments.steps.{module}")
    return REGISTRY


def names() -> list[str]:
    return sorted(_load())


def get(name, where: str) -> PostStep:
    """The registered step ``name``; a one-line `ConfigError` listing the names otherwise."""
    registry = _load()
    if name not in registry:
        close = difflib.get_close_matches(str(name), list(registry), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise config.ConfigError(f"{where}: step={name!r} is unknown{hint}; allowed: {', '.join(names())}")
    return registry[name]


def settings(
    entry: Mapping, profile: str, where: str, changes: Mapping[str, Any] | None = None, complete: bool = True
) -> dict | None:
    """A post entry's settings under ``profile`` (its profile block and ``changes`` win), checked.

    With ``complete=False`` (the schema check of every profile) a profile that leaves a
    required setting unset is not an error (None is returned): only reproducing the figure
    under that profile is."""
    step = get(entry["step"], where)
    profiles = config.profile_names()
    entry = OmegaConf.to_container(entry, resolve=True) if isinstance(entry, DictConfig) else dict(entry)
    merged = {k: v for k, v in entry.items() if k != "step" and k not in profiles}
    merged.update(entry.get(profile) or {})
    merged.update(changes or {})
    allowed = {**COMMON, **step.defaults}
    for key in merged:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise config.ConfigError(
                f"{where}: {step.name}.{key} is not a setting{hint}; allowed: {', '.join(allowed)}"
            )
    for key, default in allowed.items():
        if key not in merged:
            if default is REQUIRED and not complete:
                return None
            if default is REQUIRED:
                raise config.ConfigError(f"{where}: {step.name}.{key} is missing (profile={profile})")
            merged[key] = default
    over = merged["overrides"]
    if not isinstance(over, list) or not all(isinstance(o, str) and "=" in o for o in over):
        raise config.ConfigError(
            f"{where}: {step.name}.overrides={over!r} is invalid; allowed: a list of Hydra overrides"
        )
    return step.check(merged, f"{where}: {step.name}")


# ----------------------------------------------------------------------------- helpers for steps


def task_inputs(cfg: DictConfig, task) -> dict:
    """What a step's result depends on in its task config: the task's settings, x64, the
    seed and the dataset actually loaded (``mnist_or_fashion`` resolves at build time)."""
    return {
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        "x64": bool(cfg.x64),
        "seed": int(cfg.seed),
        "dataset": task.dataset.name if task.dataset is not None else None,
    }


def require(task, fields: tuple[str, ...], step: str, fig_id: str) -> None:
    """The task provides ``fields`` (one-line `ConfigError` otherwise, before any compute)."""
    try:
        task.require(*fields, by=f"post-step {step!r} of {fig_id}")
    except ValueError as err:
        raise config.ConfigError(str(err)) from err


def is_int(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_int(settings: dict, key: str, minimum: int, where: str) -> None:
    if not is_int(settings[key], minimum):
        raise config.ConfigError(
            f"{where}.{key}={settings[key]!r} is invalid; allowed: an integer >= {minimum}"
        )


def check_choice(settings: dict, key: str, choices: tuple[str, ...], where: str) -> None:
    if settings[key] not in choices:
        raise config.ConfigError(f"{where}.{key}={settings[key]!r} is invalid; allowed: {', '.join(choices)}")


def check_names(settings: dict, key: str, where: str) -> None:
    value = settings[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise config.ConfigError(f"{where}.{key}={value!r} is invalid; allowed: a non-empty list of names")


def info_row(fig_id: str, task: str, run_id: str, estimator: str, seed: int = 0, **columns) -> dict:
    """The run columns of a row that no optimisation run logged (a baseline, a grid, ...)."""
    row = dict(
        run_id=run_id,
        figure=fig_id,
        task=task,
        estimator=estimator,
        trunc_len=0,
        sigma=float("nan"),
        num_particles=-1,
        seed=int(seed),
    )
    row.update(columns)
    return row


__all__ = [
    "REGISTRY",
    "REQUIRED",
    "Context",
    "PostStep",
    "StepOutput",
    "get",
    "names",
    "register",
    "settings",
]
