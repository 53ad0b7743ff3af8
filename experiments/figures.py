"""Figure configs: loading, the check of a whole file, and run expansion.

    python -m experiments.figures            # list the figures (`make list-figures`)

A figure config (``configs/figure/*.yaml``; its keys are described in
`experiments.figure_schema`) is checked when it is loaded, before anything is composed or
computed: its parts by `experiments.figure_schema`, its ``post:`` entries by the post-steps
they name (`experiments.steps`), its ``claims:`` by `experiments.claims`.  Every problem is a
one-line `ConfigError` naming the file, the key and what is allowed.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from experiments import config, steps
from experiments.config import CONFIG_DIR, ROOT, ConfigError, compose, particle_setting
from experiments.figure_schema import (
    ID_PATTERN,
    OPTIONAL,
    REQUIRED,
    check_id,
    check_keys,
    check_mapping,
    check_overrides,
    check_profile_sections,
    check_run,
    shown,
)
from experiments.figure_schema import shown_repr as _r

FIGURE_DIR = CONFIG_DIR / "figure"


# ----------------------------------------------------------------------------- names and paths


def figure_names() -> list[str]:
    """The suite's figures in numeric order (figure2, ..., figure9, figure10)."""
    stems = [p.stem for p in FIGURE_DIR.glob("figure*.yaml")]
    return sorted(stems, key=lambda s: (int(s[6:]) if s[6:].isdigit() else float("inf"), s))


def figure_path(name: str) -> Path:
    """The YAML file of ``name``: ``figure2``, ``2`` or a path to a ``.yaml`` file.

    A path must end in ``.yaml`` or ``.yml`` (so that no other file is read as a figure);
    nothing of a refused file's content is ever shown."""
    name = str(name)
    if name.endswith((".yaml", ".yml")) or "/" in name or "\\" in name:
        if not name.endswith((".yaml", ".yml")):
            raise ConfigError(
                f"figure={shown(name)} is not a figure YAML; allowed: {_names()} or a path to a .yaml file"
            )
        path = Path(name)
        if not path.is_absolute() and not path.exists():
            path = ROOT / path
        if not path.is_file():
            raise ConfigError(
                f"figure={shown(name)}: no such file; allowed: a figure YAML file or {_names()}"
            )
        return path
    stem = name if name.startswith("figure") else f"figure{name}"
    path = FIGURE_DIR / f"{stem}.yaml"
    if not re.fullmatch(ID_PATTERN, stem) or not path.is_file():
        raise ConfigError(f"figure={shown(stem)} is unknown; allowed: {_names()}")
    return path


def _names() -> str:
    return ", ".join(figure_names())


def display_path(path: Path) -> str:
    """``path`` relative to the repository root when inside it (for messages and records)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def plot_path(fig: DictConfig) -> Path:
    """The figure's plot script (``plot:`` is relative to the repository root)."""
    path = Path(str(fig.plot))
    return path if path.is_absolute() else ROOT / path


# ----------------------------------------------------------------------------- loading


def load(name: str) -> DictConfig:
    """The figure config ``name`` (see `figure_path`), checked against the schema."""
    path = figure_path(name)
    where = display_path(path)
    try:  # OmegaConf's YAML reading (e.g. 1.0e2 is a number), as Hydra reads the other configs
        data = OmegaConf.to_container(OmegaConf.load(path))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}: not valid YAML{at}: {shown(getattr(err, 'problem', err))}") from err
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(
            f"{where}: cannot be read as YAML ({type(err).__name__}); allowed: a figure YAML"
        ) from err
    check(data, where, stem=path.stem if path.parent.resolve() == FIGURE_DIR.resolve() else None)
    fig = OmegaConf.create(data)
    _check_claims(fig, where)
    return fig


def _check_claims(fig: DictConfig, where: str) -> None:
    """Hand ``claims:`` to experiments.claims when that module exists (else accept it)."""
    if fig.get("claims") is None or importlib.util.find_spec("experiments.claims") is None:
        return
    claims = importlib.import_module("experiments.claims")
    try:
        claims.validate(fig.claims, fig, profiles=config.profile_names())
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from err


# ----------------------------------------------------------------------------- the schema


def check(data, where: str, stem: str | None = None) -> None:
    """Check a figure config (plain data) against the schema; raise a one-line `ConfigError`.

    ``stem``: the file name a figure under configs/figure must match with its ``id``.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a figure config is a mapping of keys; allowed: {', '.join(REQUIRED)}")
    check_keys(data, REQUIRED, OPTIONAL, where)
    profiles = config.profile_names()
    for key in ("id", "title", "task", "plot", "expected", "description"):
        if key in data and not (isinstance(data[key], str) and data[key].strip()):
            raise ConfigError(f"{where}: {key}={_r(data[key])} is invalid; allowed: a non-empty string")
    check_id(data["id"], f"{where}: id")
    if stem is not None and data["id"] != stem:
        raise ConfigError(f"{where}: id={_r(data['id'])} is invalid; allowed: {stem!r} (the file name)")
    plot = Path(data["plot"]) if Path(data["plot"]).is_absolute() else ROOT / data["plot"]
    if not plot.is_file():
        raise ConfigError(
            f"{where}: plot={data['plot']} does not exist; allowed: a plot script path relative to {ROOT}"
        )
    check_overrides(data["base"], f"{where}: base")
    check_profile_sections(data.get("profiles") or {}, profiles, f"{where}: profiles", check_overrides)
    if isinstance(data.get("seeds"), dict):  # the lists themselves are checked by runs()
        check_profile_sections(data["seeds"], profiles, f"{where}: seeds", lambda section, at: None)
    if not isinstance(data["runs"], list):
        raise ConfigError(f"{where}: runs={_r(data['runs'])} is invalid; allowed: a list of runs (may be [])")
    for i, run in enumerate(data["runs"]):
        check_run(run, profiles, f"{where}: runs[{i}]")
    for profile in profiles:
        check_unique_run_ids(data, profile, where)
    check_post(data.get("post") or [], profiles, where)
    nonfinite = data.get("allow_nonfinite") or []
    if not isinstance(nonfinite, list) or not all(isinstance(m, str) for m in nonfinite):
        raise ConfigError(
            f"{where}: allow_nonfinite={_r(nonfinite)} is invalid; allowed: a list of metric names"
        )
    if "claims" in data and not isinstance(data["claims"], (list, type(None))):
        raise ConfigError(f"{where}: claims={_r(data['claims'])} is invalid; allowed: a list of claims")


def check_unique_run_ids(data: dict, profile: str, where: str) -> None:
    """Run ids are unique under ``profile``, also after seed expansion."""
    seen = set()
    for run in runs(OmegaConf.create(data), profile, where=where):
        if run.id in seen:
            raise ConfigError(
                f"{where}: run id {run.id!r} is used twice under profile={profile}; allowed: unique run ids"
            )
        seen.add(run.id)


def check_post(post, profiles: Sequence[str], where: str) -> None:
    if not isinstance(post, list):
        raise ConfigError(f"{where}: post={_r(post)} is invalid; allowed: a list of {{step: <name>, ...}}")
    names = []
    for i, entry in enumerate(post):
        at = f"{where}: post[{i}]"
        if not isinstance(entry, dict) or "step" not in entry:
            raise ConfigError(f"{at}={_r(entry)} is invalid; allowed: a mapping {{step: <name>, <settings>}}")
        step = steps.get(entry["step"], at)
        if step.name in names:
            raise ConfigError(f"{at}: step {step.name!r} is listed twice; allowed: each step once")
        names.append(step.name)
        check_profile_sections(
            {p: entry[p] for p in profiles if p in entry}, profiles, f"{at}", check_mapping
        )
        for profile in profiles:  # unknown keys and invalid values (missing ones: when reproduced)
            steps.settings(entry, profile, at, complete=False)


# ----------------------------------------------------------------------------- runs


def runs(fig: DictConfig, profile: str, where: str | None = None) -> list[DictConfig]:
    """The runs of a figure under ``profile``, with multi-seed runs expanded.

    With ``seeds`` every run ``r`` becomes runs ``r-seed<s>`` with the override
    ``seed=<s>`` (after the run's own overrides), so seeds share one run definition and
    plots average over them.  A run with ``only: [...]`` belongs to those profiles only.
    """
    where = where or str(fig.id)
    selected = [r for r in fig.runs if not r.get("only") or profile in r.only]
    seeds = fig.get("seeds")
    if seeds is None:
        return selected
    if isinstance(seeds, DictConfig):
        if profile not in seeds:
            return []  # this profile is not offered (reproduce() says so)
        seeds = seeds[profile]
    seeds = list(seeds) if OmegaConf.is_list(seeds) else seeds
    if (
        not isinstance(seeds, list)
        or not seeds
        or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in seeds)
    ):
        raise ConfigError(
            f"{where}: seeds={_r(seeds)} is invalid; allowed: a non-empty list of integers >= 0"
        )
    out = []
    for run in selected:
        for seed in seeds:
            expanded = OmegaConf.merge(run, {"id": f"{run.id}-seed{seed}"})
            expanded.overrides = [*run.overrides, f"seed={seed}"]
            out.append(expanded)
    return out


def check_profile(fig: DictConfig, profile: str) -> None:
    """``profile`` is a known profile the figure can be reproduced under."""
    config.check_profile_name(profile)
    profiles = fig.get("profiles") or {}
    if profile not in config.MAIN_PROFILES and profile not in profiles:  # stand-ins: only where defined
        defined = [*config.MAIN_PROFILES, *[p for p in profiles if p not in config.MAIN_PROFILES]]
        raise ConfigError(f"figure {fig.id} has no profile {profile}; allowed: {', '.join(defined)}")
    seeds = fig.get("seeds")
    if isinstance(seeds, DictConfig) and profile not in seeds:
        raise ConfigError(
            f"figure {fig.id}: seeds has no list for profile={profile}; allowed: {', '.join(seeds)}"
        )


def base_overrides(fig: DictConfig, profile: str) -> list[str]:
    """The figure's ``base`` and its profile's overrides."""
    profiles = fig.get("profiles") or {}
    return [*fig.base, *(profiles.get(profile) or [])]


def run_overrides(fig: DictConfig, run: DictConfig, profile: str, extra: Sequence[str] = ()) -> list[str]:
    """Overrides composing one run of a figure under a profile (later ones win)."""
    return [
        *base_overrides(fig, profile),
        *run.overrides,
        *(run.get(profile) or []),
        f"profile={profile}",
        f"figure_id={fig.id}",
        f"run_id={run.id}",
        *extra,
    ]


def figure_overrides(fig: DictConfig, profile: str, extra: Sequence[str] = (), more: Sequence[str] = ()):
    """Overrides of the figure's own task config (no run): base, profile, ``more``, command line."""
    return [*base_overrides(fig, profile), *more, f"profile={profile}", f"figure_id={fig.id}", *extra]


# ----------------------------------------------------------------------------- listing


def main() -> None:
    for name in figure_names():
        fig = load(name)
        number = name.removeprefix("figure")
        steps_ = ", ".join(str(p.step) for p in fig.get("post") or []) or "none"
        print(
            f"Figure {number}: {fig.title}  (make reproduce-figure-{number}; task: {fig.task}; "
            f"{len(fig.runs)} runs; post-steps: {steps_})"
        )
        print(textwrap.indent(textwrap.fill(f"expected: {fig.expected}", 96), "    "))
        print(f"    particles: {particles_summary(particles(fig))}")


def particles(fig: DictConfig, profile: str = "quick") -> dict[str, str]:
    """Each run's particle setting (lockstep / step_unlocked; gradient methods: none)."""
    out = {}
    for run in runs(fig, profile):
        cfg = compose(run_overrides(fig, run, profile))
        out[str(run.id)] = particle_setting(OmegaConf.to_container(cfg.estimator, resolve=True)) or "none"
    return out


def particles_summary(settings: dict[str, str]) -> str:
    """'lockstep' when every ES-family run is lockstep, else the runs of each setting."""
    kinds = sorted({s for s in settings.values() if s != "none"})
    if len(kinds) <= 1:
        return (kinds[0] if kinds else "none") + " (every ES-family run)" * bool(kinds)
    return "; ".join(f"{k}: {', '.join(r for r, s in settings.items() if s == k)}" for k in kinds)


if __name__ == "__main__":
    main()
