"""Config composition and validation: Hydra configs in, library objects out.

This is the only place that turns configuration into `pes` objects.  Every problem with a
config is raised as `ConfigError` with a one-line message naming the value and what is
allowed, before any compute starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import hydra
import jax
import optax
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import pes
from experiments import artefacts, compilation_cache
from experiments.cli import EXIT_CONFIG, Problem, one_line
from pes import horizons, outer, tasks
from pes.estimators import GradientEstimator
from pes.tasks import Task

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"
# Keys that do not change a run's results (excluded from its fingerprint).
NON_RESULT_KEYS = ("progress", "resume", "overwrite", "results_root", "run_id", "max_result_mb")
BOOL_KEYS = ("x64", "resume", "overwrite", "progress")
NON_RESULT_TRAIN_KEYS = ("chunk_size", "keep_checkpoints")
# Profile keys that say how a profile is judged, not how it runs (configs/profile/*.yaml `scale`).
NON_RESULT_PROFILE_KEYS = ("scale",)
# Keys added after runs were recorded, left out of the fingerprint while they hold their
# null default, so that existing runs keep their identity (group, key).
LATE_NULL_KEYS = (
    ("outer_optimizer", "clip_value"),
    ("task", "channels"),
    ("estimator", "horizon_schedule"),
    ("train", "nonfinite"),
)
# Particle settings of the ES-family estimators (pes, es, nres, gpes), `estimator.particles`:
# lockstep (every pair at the same step of its episode) or step_unlocked (the NRES paper's
# step-unlocked workers: each pair at its own random phase of the episode, entered by the
# library's unbiased burn-in).  The library's flag is `stagger` (true = step_unlocked); a config
# spells it `particles` only.  `stagger` is read only in recorded configs (run.json of runs
# made before `particles` existed), so that their fingerprints stay as they were.
PARTICLE_SETTINGS = {"lockstep": False, "step_unlocked": True}


class ConfigError(Problem, ValueError):
    """A configuration problem, described in one line."""

    exit_code = EXIT_CONFIG


# ----------------------------------------------------------------------------- profiles


PROFILE_DIR = CONFIG_DIR / "profile"
MAIN_PROFILES = ("quick", "paper")  # every figure offers them; the others only where it defines them


def profile_names() -> tuple[str, ...]:
    """The suite's profiles, one per ``configs/profile/<name>.yaml``: quick and paper first,
    then the others in name order.  The one list of them: the figure schema, the post-steps,
    the claims, the checks and the generated docs all read it."""
    names = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
    return tuple([n for n in MAIN_PROFILES if n in names] + [n for n in names if n not in MAIN_PROFILES])


def check_profile_name(profile, key: str = "profile") -> str:
    """``profile`` names a profile of `profile_names` (one-line `ConfigError` otherwise)."""
    names = profile_names()
    if profile not in names:
        raise ConfigError(f"{key}={profile} is unknown; allowed: {', '.join(names)}")
    return str(profile)


def _compose_error(err: Exception, overrides: Sequence[str]) -> ConfigError:
    text = str(err)
    if isinstance(err, MissingConfigException) or "Could not find" in text:
        m = re.search(r"Could not find '([^/']+)/([^']+)'", text)
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        if m:
            group, option = m.groups()
            allowed = ", ".join(options) if options else "see configs/" + group
            return ConfigError(f"{group}={option} is unknown; allowed: {allowed}")
    m = re.search(r"Could not override '([\w.]+)'", text)
    if m:
        key = m.group(1)
        parent, _, leaf = key.rpartition(".")
        allowed = _allowed_keys(parent, overrides, key)
        where = f"under '{parent}'" if parent else "at the top level"
        return ConfigError(f"{key} is not a config key; allowed {where}: {allowed}")
    cause = f" ({one_line(err.__cause__)})" if err.__cause__ else ""
    return ConfigError(one_line(text) + cause)


def _allowed_keys(parent: str, overrides: Sequence[str], bad_key: str) -> str:
    rest = [o for o in overrides if not o.lstrip("+~").startswith(bad_key + "=")]
    try:
        cfg = _compose_raw(rest)
    except (HydraException, OmegaConfBaseException):
        return "(could not compose the config without the bad key)"
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig):
        return ", ".join(str(k) for k in node.keys())
    return f"'{parent}' is not a group of keys"


def _compose_raw(overrides: Sequence[str]) -> DictConfig:
    with hydra.initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return hydra.compose("config", overrides=list(overrides))


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the root config with command-line style overrides; a relative
    ``results_root`` becomes absolute (`absolute_root`)."""
    try:
        cfg = _compose_raw(overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise _compose_error(err, overrides) from err
    root = cfg.get("results_root")
    if isinstance(root, str) and root and not any(ord(c) < 32 or ord(c) == 127 for c in root):
        cfg.results_root = absolute_root(root)
    return cfg


# ----------------------------------------------------------------------------- building


class Built(NamedTuple):
    task: Task
    estimator: GradientEstimator
    optimizer: optax.GradientTransformation
    num_steps: int
    log_every: int
    chunk_size: int
    nonfinite: str | None = None  # train.nonfinite: what the outer loop does with a non-finite estimate


def _params(node: DictConfig) -> dict[str, Any]:
    params = OmegaConf.to_container(node, resolve=True)
    assert isinstance(params, dict)
    params.pop("name", None)
    return params


def particle_setting(estimator: dict) -> str | None:
    """The particle setting of an estimator config: lockstep, step_unlocked, or None.

    ``estimator`` holds the config's estimator keys.  None when the estimator has neither
    ``particles`` nor ``stagger`` (gradient methods).  ``stagger: true`` means
    step_unlocked; ``particles: step_unlocked`` with an explicit ``stagger: false`` is a
    contradiction.
    """
    if "particles" not in estimator and "stagger" not in estimator:
        return None
    particles = estimator.get("particles") or "lockstep"
    stagger = estimator.get("stagger")
    if particles not in PARTICLE_SETTINGS:
        raise ConfigError(
            f"estimator.particles={particles!r} is invalid; allowed: {', '.join(PARTICLE_SETTINGS)}"
        )
    if stagger is not None and not isinstance(stagger, bool):
        raise ConfigError(f"estimator.stagger={stagger!r} is invalid; allowed: true, false, null")
    if particles == "step_unlocked" and stagger is False:
        raise ConfigError(
            "estimator.particles=step_unlocked contradicts estimator.stagger=false; allowed: set "
            "particles only (stagger is its older boolean spelling: true = step_unlocked)"
        )
    return "step_unlocked" if stagger or particles == "step_unlocked" else "lockstep"


def _estimator_params(node: DictConfig) -> dict[str, Any]:
    """The estimator factory's keyword arguments (``particles`` becomes ``stagger``)."""
    params = _params(node)
    if "stagger" in params:  # e.g. +estimator.stagger=true: the library's name, not a config key
        raise ConfigError(
            f"estimator.stagger={params['stagger']!r} is not a config key; allowed: "
            "estimator.particles=lockstep or step_unlocked"
        )
    setting = particle_setting(params)
    params.pop("particles", None)
    if setting is not None:
        params["stagger"] = PARTICLE_SETTINGS[setting]
    if params.get("horizon_schedule") is not None:
        try:
            params["horizon_schedule"] = horizons.from_config(params["horizon_schedule"])
        except ValueError as err:
            raise ConfigError(f"estimator.{err}") from err
    return params


def nonfinite(cfg: DictConfig) -> str | None:
    """``train.nonfinite``: None, "skip" or "zero" (validated)."""
    value = cfg.train.get("nonfinite")
    try:
        outer.check_nonfinite(value)
    except ValueError as err:
        raise ConfigError(f"train.{err}") from err
    return value


def _positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} is invalid; allowed: an integer >= 1")
    return value


def keep_checkpoints(cfg: DictConfig) -> int:
    """``train.keep_checkpoints``: how many earlier checkpoints a run keeps (validated)."""
    value = cfg.train.get("keep_checkpoints", 10)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"train.keep_checkpoints={value!r} is invalid; allowed: an integer >= 0")
    return value


MAX_RESULT_KEY = "max_result_mb"


def max_result_mb(cfg: DictConfig) -> float | None:
    """``max_result_mb`` of a config: a number of MB > 0, or None (no size guard; `experiments.sizes`)."""
    value = cfg.get(MAX_RESULT_KEY)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ConfigError(
            f"{MAX_RESULT_KEY}={value!r} is invalid; allowed: a number of MB > 0, or null (no limit)"
        )
    return float(value)


def _optimizer_arg_error(name: str, factory, key: str, value) -> str | None:
    """Why ``value`` cannot be optax.<name>'s argument ``key`` (None if it can), judged by its type hints."""
    params = inspect.signature(factory).parameters
    if key not in params:
        return f"is not an argument of optax.{name}; allowed: {', '.join(params)}, clip_norm"
    hint = params[key].annotation
    kinds = typing.get_args(hint) or (hint,)
    if hint is bool:
        ok, allowed = isinstance(value, bool), "true or false"
    elif float in kinds:
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = number or (value is None and type(None) in kinds)
        allowed = "null or a finite number" if type(None) in kinds else "a finite number"
    else:
        return None  # e.g. a dtype or mask: left to the trial update in `build`
    return None if ok else f"is invalid; allowed: {allowed}"


def build_optimizer(node: DictConfig) -> optax.GradientTransformation:
    """The optax optimizer named by ``node``; every argument is type-checked first."""
    params = _params(node)
    name = node.get("name")
    clip_norm = params.pop("clip_norm", None)
    clip_value = params.pop("clip_value", None)
    factory = getattr(optax, str(name), None) if name else None
    if factory is None or not callable(factory):
        raise ConfigError(
            f"outer_optimizer.name={name!r} is unknown; allowed: an optax optimizer such as sgd, adam"
        )
    lr = params.get("learning_rate")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"outer_optimizer.learning_rate={lr!r} is invalid; allowed: a finite number > 0")
    if clip_norm is not None and (
        isinstance(clip_norm, bool) or not isinstance(clip_norm, (int, float)) or not clip_norm > 0
    ):
        raise ConfigError(
            f"outer_optimizer.clip_norm={clip_norm!r} is invalid; allowed: null or a number > 0"
        )
    if clip_value is not None and (
        isinstance(clip_value, bool) or not isinstance(clip_value, (int, float)) or not clip_value > 0
    ):
        raise ConfigError(
            f"outer_optimizer.clip_value={clip_value!r} is invalid; allowed: null or a number > 0"
        )
    for key, value in params.items():
        problem = _optimizer_arg_error(str(name), factory, key, value)
        if problem:
            raise ConfigError(f"outer_optimizer.{key}={value!r} {problem}")
    try:
        opt = factory(**params)
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"outer_optimizer: optax.{name} rejected {sorted(params)}: {one_line(err)}"
        ) from err
    if clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(float(clip_norm)), opt)
    if clip_value is not None:  # element-wise, before any norm clipping and the optimizer
        opt = optax.chain(optax.clip(float(clip_value)), opt)
    return opt


def _check_optimizer_on(opt: optax.GradientTransformation, node: DictConfig, theta) -> None:
    """Trace one update on the task's theta (shapes only, no compile): any argument problem shows now."""
    try:
        jax.eval_shape(lambda t: opt.update(t, opt.init(t), t), theta)
    except Exception as err:  # noqa: BLE001 - any failure is a config problem, reported in one line
        raise ConfigError(
            f"outer_optimizer: optax.{node.get('name')}({_params(node)}) fails on this task's theta: "
            f"{type(err).__name__}: {one_line(err)[:300]}"
        ) from err


def _check_top_level(cfg: DictConfig) -> None:
    for key in BOOL_KEYS:
        value = cfg.get(key)
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is invalid; allowed: true or false")
    root = cfg.get("results_root")
    if (
        isinstance(root, bool)
        or not isinstance(root, (str, int))
        or str(root) == ""
        or any(ord(c) < 32 or ord(c) == 127 for c in str(root))
    ):
        raise ConfigError(f"results_root={root!r} is invalid; allowed: a folder path (no control characters)")
    check_name(cfg.figure_id, "figure_id")
    profile = cfg.get("profile")
    check_name(profile.get("name") if isinstance(profile, DictConfig) else None, "profile.name")


def _devices_param(cfg: DictConfig) -> dict[str, Any]:
    """The estimator keyword for the top-level ``devices`` switch (1 = no sharding)."""
    devices = cfg.get("devices", 1)
    if devices in (1, None):
        return {}
    if not (
        devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool) and devices > 1)
    ):
        raise ConfigError(f"devices={devices!r} is invalid; allowed: auto or an integer >= 1")
    name = str(cfg.estimator.name)
    if "devices" not in pes.estimators.hparam_names(name):
        sharded = [n for n in sorted(pes.estimators.REGISTRY) if "devices" in pes.estimators.hparam_names(n)]
        raise ConfigError(
            f"devices={devices} is invalid with estimator={name}; allowed: 1 "
            f"(particles are sharded only by {', '.join(sharded)})"
        )
    return {"devices": devices}


def _as_task_keys(text: str, node: DictConfig) -> str:
    """A task's message with its parameters named as config keys (``data_dir=`` -> ``task.data_dir=``)."""
    names = sorted((str(k) for k in node.keys() if k != "name"), key=len, reverse=True)
    if not names:
        return text
    return re.sub(rf"(?<![\w.])({'|'.join(map(re.escape, names))})=", r"task.\1=", text)


class _Settings(NamedTuple):
    optimizer: optax.GradientTransformation
    num_steps: int
    log_every: int
    chunk_size: int
    est_params: dict
    nonfinite: str | None


def _check_settings(cfg: DictConfig) -> _Settings:
    """Every setting that needs neither the task nor its data (see `build`)."""
    _check_top_level(cfg)
    optimizer = build_optimizer(cfg.outer_optimizer)
    num_steps = _positive_int(cfg.train.num_outer_steps, "train.num_outer_steps")
    log_every = _positive_int(cfg.train.log_every, "train.log_every")
    chunk_size = _positive_int(cfg.train.chunk_size, "train.chunk_size")
    keep_checkpoints(cfg)
    guard = nonfinite(cfg)
    if num_steps % log_every:
        raise ConfigError(
            f"train.num_outer_steps={num_steps} is invalid with train.log_every={log_every}; "
            "allowed: a multiple of log_every"
        )
    chunk_size = max(log_every, chunk_size - chunk_size % log_every)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed!r} is invalid; allowed: an integer >= 0")
    run_id(cfg)  # validates an explicit run id
    name = str(cfg.estimator.name)
    est_params = _estimator_params(cfg.estimator)
    if name not in pes.estimators.REGISTRY:  # the estimator's name and keys (its values need the task)
        known = ", ".join(sorted(pes.estimators.REGISTRY))
        raise ConfigError(f"estimator={name!r} is unknown; allowed: {known}")
    unknown = sorted(set(est_params) - set(pes.estimators.hparam_names(name)))
    if unknown:
        raise ConfigError(
            f"estimator '{name}' has no hyperparameter {', '.join(unknown)}; "
            f"allowed: {', '.join(pes.estimators.hparam_names(name))}"
        )
    return _Settings(optimizer, num_steps, log_every, chunk_size, est_params, guard)


def check_settings(cfg: DictConfig) -> None:
    """One-line `ConfigError` for any setting that can be checked without the task's data."""
    _check_settings(cfg)


def set_x64(on: bool) -> None:
    """Switch JAX's float64 on or off (`use_x64` for a config; a run's spec holds ``x64``).
    The first call also switches on the persistent compilation cache
    (`experiments.compilation_cache`), since every computation of the suite comes after one."""
    compilation_cache.enable()
    jax.config.update("jax_enable_x64", bool(on))


def use_x64(cfg: DictConfig) -> None:
    """Switch JAX's float64 on or off as ``cfg.x64`` says: the one place the suite sets it.

    JAX's flag is process-wide, and one process may hold configs of both precisions (a
    figure whose runs or post-steps set ``x64`` differently, several figures in turn), so it
    is set from the config at hand when its objects are built (`make_task`, `build`) and
    again before a computation that may follow another config's work (a post-step's
    compute, a job's part of one).  `pes` itself never sets it."""
    set_x64(bool(cfg.x64))


def make_task(cfg: DictConfig) -> Task:
    """The task of ``cfg`` (its ``task`` group), built under ``cfg.x64``: the one place a config
    becomes a `pes` task.  A bad setting or missing data is a one-line `ConfigError` naming
    the config key (``task.<name>=``)."""
    use_x64(cfg)
    try:
        return tasks.make(str(cfg.task.name), **_params(cfg.task))
    except FileNotFoundError as err:  # missing data: after every setting above was checked
        raise ConfigError(
            _as_task_keys(one_line(err), cfg.task) + " (`make data` fetches what this machine can get)"
        ) from err
    except (ValueError, TypeError) as err:
        raise ConfigError(_as_task_keys(one_line(err), cfg.task)) from err


def build(cfg: DictConfig) -> Built:
    """Validate ``cfg`` and build the task, estimator and optimizer (no compute).

    The order is the suite's validation order: first every setting that needs no data
    (`check_settings`: top level, outer optimizer, train, seed, run id, the estimator's
    name and keys), then the task (which checks its own settings before it loads its
    data: a missing dataset fails here), then what depends on the task (the estimator's
    values on the task's system, the optimizer on its theta)."""
    optimizer, num_steps, log_every, chunk_size, est_params, guard = _check_settings(cfg)
    name = str(cfg.estimator.name)
    task = make_task(cfg)
    # estimators that differentiate the step (read off the registry) need a differentiable objective
    if not task.differentiable and pes.estimators.differentiates_step(name):
        raise ConfigError(
            f"estimator={name} is invalid for task {task.name} with objective {task.objective!r}, "
            f"which is not differentiable; allowed: {', '.join(pes.estimators.derivative_free())}"
        )
    est_params.update(_devices_param(cfg))
    try:
        estimator = pes.estimators.make(name, task.system, **est_params)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from err
    _check_optimizer_on(optimizer, cfg.outer_optimizer, task.theta_init)
    return Built(task, estimator, optimizer, num_steps, log_every, chunk_size, guard)


# ----------------------------------------------------------------------------- identity


def result_config(config: DictConfig | dict) -> dict:
    """The part of a (resolved) config that affects a run's results, as a plain dict."""
    data = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
    assert isinstance(data, dict)
    data = {k: v for k, v in data.items() if k not in (*NON_RESULT_KEYS, "hydra")}
    if isinstance(data.get("train"), dict):
        data["train"] = {k: v for k, v in data["train"].items() if k not in NON_RESULT_TRAIN_KEYS}
    if isinstance(data.get("profile"), dict):
        data["profile"] = {k: v for k, v in data["profile"].items() if k not in NON_RESULT_PROFILE_KEYS}
    for group, key in LATE_NULL_KEYS:
        if isinstance(data.get(group), dict) and key in data[group] and data[group][key] is None:
            data[group] = {k: v for k, v in data[group].items() if k != key}
    est = data.get("estimator")
    if isinstance(est, dict) and ("particles" in est or "stagger" in est):
        # one spelling of the particle setting: runs from before `particles` keep their identity
        est = {k: v for k, v in est.items() if k != "particles"}
        est["stagger"] = PARTICLE_SETTINGS[particle_setting(data["estimator"])]
        data["estimator"] = est
    return data


def fingerprint(cfg: DictConfig | dict) -> str:
    """A hash of everything in ``cfg`` that affects the run's results."""
    return artefacts.fingerprint(result_config(cfg))


def recorded_fingerprint(meta: dict) -> str | None:
    """The fingerprint of the config a run.json records, under today's rules: a key that was
    declared not to affect results after the run was recorded (such as a profile's ``scale``)
    leaves the run's identity as it is.  Without a recorded config, the recorded fingerprint."""
    config = meta.get("config")
    return fingerprint(config) if isinstance(config, dict) else meta.get("fingerprint")


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_diff(old: DictConfig | dict, new: DictConfig | dict, limit: int = 4) -> str:
    """The result-affecting keys whose values differ, as ``key old->new`` (at most ``limit`` named)."""
    a, b = _flat(result_config(old)), _flat(result_config(new))
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "<unset>") != b.get(k, "<unset>"))
    parts = [f"{k} {a.get(k, '<unset>')}->{b.get(k, '<unset>')}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return ", ".join(parts) or "no key (the recorded config has no fingerprint or another format)"


NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
NAME_MAX = 128
NAME_ALLOWED = f"letters, digits, '.', '_', '-', not starting with '.' or '-', at most {NAME_MAX} characters"


def check_name(value, key: str) -> str:
    """``value`` as a name that becomes one folder or file name under a results root (a run
    id, a figure id, a profile): letters, digits, '.', '_' and '-', not starting with '.' or
    '-' (so never '.', '..' or a hidden file), no separator, no control character.  The one
    check of every such name; a `ConfigError` naming ``key`` otherwise."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None or len(text) > NAME_MAX or not NAME_PATTERN.fullmatch(text):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ConfigError(f"{key}={shown} is invalid; allowed: {NAME_ALLOWED}")
    return text


def absolute_root(root) -> str:
    """A results root as an absolute path: a relative one is taken from the current folder
    (where the command runs), once, so that every file and every subprocess sees one place."""
    return os.path.abspath(os.path.expanduser(str(root)))


def run_id(cfg: DictConfig) -> str:
    if cfg.run_id:
        return check_name(cfg.run_id, "run_id")
    k = cfg.estimator.get("trunc_len", "na")
    return f"{cfg.task.name}-{cfg.estimator.name}-k{k}-seed{cfg.seed}-{fingerprint(cfg)[:6]}"


def run_dir(cfg: DictConfig) -> Path:
    """``<results_root>/<profile>/<figure_id>/runs/<run_id>`` (absolute; every part checked)."""
    parts = (check_name(cfg.profile.name, "profile.name"), check_name(cfg.figure_id, "figure_id"))
    return Path(absolute_root(cfg.results_root)).joinpath(*parts, "runs", run_id(cfg))


def run_info(cfg: DictConfig) -> dict:
    """The per-run columns of the results schema."""
    est = cfg.estimator
    return {
        "run_id": run_id(cfg),
        "figure": str(cfg.figure_id),
        "task": str(cfg.task.name),
        "estimator": str(est.name),
        "trunc_len": int(est.get("trunc_len", 0)),
        "sigma": float(est.sigma) if "sigma" in est else float("nan"),
        "num_particles": int(est.num_particles) if "num_particles" in est else -1,
        "seed": int(cfg.seed),
    }


# ----------------------------------------------------------------------------- the run specification


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """A run's ``train`` group, validated (`build`)."""

    num_outer_steps: int
    log_every: int
    chunk_size: int  # outer steps per compiled call: a multiple of log_every, at least log_every
    keep_checkpoints: int  # earlier checkpoints kept beside the last one
    nonfinite: str | None  # what the outer loop does with a non-finite estimate: None, skip, zero


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run, validated and built once from its composed config (`RunSpec.from_config`).

    Everything the run path (`experiments.runner`, `experiments.batched`, `experiments.sizes`)
    needs; none of it reads the config again.  ``config`` is the resolved config as plain data,
    exactly what run.json records (not to be changed)."""

    config: dict  # the resolved config (OmegaConf.to_container(cfg, resolve=True))
    run_id: str
    run_dir: Path  # <results_root>/<profile>/<figure_id>/runs/<run_id>, absolute
    fingerprint: str  # of the config's result-affecting keys (`fingerprint`)
    figure_id: str
    profile: str
    seed: int
    x64: bool
    resume: bool
    overwrite: bool
    progress: bool
    max_result_mb: float | None  # the size guard's limit (None: no guard)
    train: TrainSettings
    run_info: dict  # the per-run columns of the results schema (`run_info`)
    built: Built  # the task, estimator and outer optimizer

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RunSpec:
        """Validate ``cfg`` (every check of `build`, then ``max_result_mb``) and build its objects;
        a one-line `ConfigError` before any compute."""
        built = build(cfg)
        limit = max_result_mb(cfg)
        config = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(config, dict)
        train = TrainSettings(
            built.num_steps, built.log_every, built.chunk_size, keep_checkpoints(cfg), built.nonfinite
        )
        return cls(
            config=config,
            run_id=run_id(cfg),
            run_dir=run_dir(cfg),
            fingerprint=fingerprint(config),
            figure_id=str(cfg.figure_id),
            profile=str(cfg.profile.name),
            seed=int(cfg.seed),
            x64=bool(cfg.x64),
            resume=bool(cfg.resume),
            overwrite=bool(cfg.overwrite),
            progress=bool(cfg.progress),
            max_result_mb=limit,
            train=train,
            run_info=run_info(cfg),
            built=built,
        )


def as_spec(run: DictConfig | RunSpec) -> RunSpec:
    """A run's spec: ``run`` itself, or built from a composed config (the run path's door)."""
    return run if isinstance(run, RunSpec) else RunSpec.from_config(run)
