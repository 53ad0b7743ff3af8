"""The figure schema: what a ``configs/figure/*.yaml`` may hold, and the checks of its parts.

    id: figure3                    # results go to <results_root>/<profile>/<id>/
    title: Toy 2D regression       # one line
    task: toy_regression           # the task the figure is about (a label)
    plot: scripts/plot_figure3.py  # plot script, relative to the repository root
    expected: ...                  # what the paper shows, in words
    description: ...               # optional: more words for the notebook
    base: [task=..., seed=3]       # Hydra overrides of every run and post-step
    profiles:                      # optional: more overrides per profile (configs/profile/*)
      quick: [train.num_outer_steps=2000]
      paper: [x64=true]
    seeds: [3, 5]                  # optional (or {quick: [...], paper: [...]}): each run once
                                   # per seed, as run <id>-seed<s> with the override seed=<s>
    runs:                          # optimisation runs (experiments.runner), may be []
      - id: pes                    # letters, digits, '.', '_', '-'; unique after seed expansion
        label: PES                 # optional legend label
        overrides: [estimator=pes]
        only: [paper]              # optional: the profiles the run belongs to
        quick: [...]               # optional: more overrides under one profile
    post:                          # optional: registered post-steps, run in order after the runs
      - step: grid                 # a name from `experiments.steps` (see its docstring)
        low: [-5, -5]              # the step's settings ...
        quick: {num: 401}          # ... and per-profile changes to them
    claims: [...]                  # optional: checked by experiments.claims
    allow_nonfinite: [loss]        # optional: metrics that may be NaN in the merged table

Each run is composed from ``base``, the profile's overrides, the run's ``overrides``, the
run's per-profile overrides and the command line (later ones win).

This module holds the schema's keys and the checks of its parts (keys, ids, override
lists, per-profile sections, runs); every problem is a one-line `ConfigError` naming the
file, the key and what is allowed.  It imports neither the figure loader
(`experiments.figures`, which checks a whole file with these parts and the post-steps'
own checks) nor the post-steps (`experiments.steps`, whose settings use the same parts),
so both of them import it.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from experiments.config import ConfigError, check_name

ID_PATTERN = r"[A-Za-z0-9._-]+"
REQUIRED = ("id", "title", "task", "plot", "expected", "base", "runs")
OPTIONAL = ("description", "profiles", "seeds", "post", "claims", "allow_nonfinite")
RUN_KEYS = ("id", "label", "overrides", "only")


def shown(value, limit: int = 80) -> str:
    """``value`` for a message: its repr (a string: as it is) cut to ``limit`` characters, so
    that a message never carries a long value read from a file."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown_repr(value) -> str:
    """``repr(value)`` for a message (strings quoted), cut as `shown` cuts it."""
    return shown(repr(value))


def check_keys(mapping: dict, required: Sequence[str], optional: Sequence[str], where: str) -> None:
    """Unknown keys (with a close match, if any) and missing required keys."""
    allowed = [*required, *optional]
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: {shown_repr(key)} is not a key{hint}; allowed: {', '.join(allowed)}")
    missing = [k for k in required if k not in mapping]
    if missing:
        raise ConfigError(f"{where}: {missing[0]!r} is missing; required: {', '.join(required)}")


def check_id(value, where: str) -> None:
    """An id that becomes a folder name (`experiments.config.check_name`)."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}={shown_repr(value)} is invalid; allowed: a string")
    check_name(value, where)


def check_overrides(value, where: str) -> None:
    """A list of Hydra overrides ``key=value``."""
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise ConfigError(
            f"{where}={shown_repr(value)} is invalid; allowed: a list of Hydra overrides 'key=value'"
        )


def check_profile_sections(sections, profiles: Sequence[str], where: str, check_one) -> None:
    """``{profile: section}`` with known profile names, each section checked by ``check_one``."""
    if not isinstance(sections, dict):
        raise ConfigError(f"{where}={shown_repr(sections)} is invalid; allowed: a mapping {{profile: ...}}")
    for name, section in sections.items():
        if name not in profiles:
            raise ConfigError(f"{where}: profile {name!r} is unknown; allowed: {', '.join(profiles)}")
        check_one(section, f"{where}.{name}")


def check_mapping(section, where: str) -> None:
    """A mapping of settings (or nothing)."""
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"{where}={shown_repr(section)} is invalid; allowed: a mapping of settings")


def check_run(run, profiles: Sequence[str], where: str) -> None:
    """One entry of ``runs:`` (its id's uniqueness is checked over the expanded runs)."""
    if not isinstance(run, dict):
        raise ConfigError(
            f"{where}={shown_repr(run)} is invalid; allowed: a mapping with keys {', '.join(RUN_KEYS)}"
        )
    check_keys(run, ("id", "overrides"), ("label", "only", *profiles), where)
    check_id(run["id"], f"{where}.id")
    check_overrides(run["overrides"], f"{where}.overrides")
    only = run.get("only")
    if only is not None and (not isinstance(only, list) or not set(only) <= set(profiles) or not only):
        raise ConfigError(
            f"{where}.only={shown_repr(only)} is invalid; allowed: a non-empty list of {', '.join(profiles)}"
        )
    for profile in profiles:
        if run.get(profile) is not None:
            check_overrides(run[profile], f"{where}.{profile}")
