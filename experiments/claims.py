"""Claims as code: what a figure must show, checked against its merged results table.

A figure config lists ``claims:`` (the language is documented in ``docs/claims.md``).
`validate` checks them (one-line `ConfigError` naming the key and what is allowed) before
any compute; `evaluate` turns them into `Result` rows over a results table in the tidy schema
of `pes.results` (plus the ``source`` column); `table` renders the rows and `exit_code` says
what ``python -m experiments.check`` exits with.  Everything here is a pure function of its
arguments: reading files is `experiments.check`'s job.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import yaml

from experiments import config
from experiments.config import CONFIG_DIR, ConfigError
from pes import results

# A claim's scale: `any` = what the method's mechanism predicts at any size (decides every
# profile's verdict); `paper` = a statement about the paper's horizons, budgets or numbers
# (decides only on a profile of scale `paper`, and is shown as indicative on a smaller one).
SCALES = ("any", "paper")
# A profile's scale, declared by its file configs/profile/<name>.yaml (`scale: small | paper`).
PROFILE_SCALES = ("small", "paper")
INDICATIVE = "paper-scale, indicative"
REPORTED = "finding, not counted"
SOURCE_COLUMN = results.SOURCE  # which run or post-step wrote a row of the merged table
DIVERGED_METRIC = "diverged"  # the marker row a diverged run ends with (experiments.runner)
PASS, FAIL, NOT_RUN = "PASS", "FAIL", "NOT RUN"
# exit codes of `python -m experiments.check` (docs/claims.md)
EXIT_OK, EXIT_FAIL, EXIT_CONFIG, EXIT_NO_RESULTS = 0, 1, 2, 3

CLAIM_KEYS = ("id", "claim", "scale", "source", "profiles", "check", "note", "finding", "counted")
SOURCE_HINT = (
    "a quote or figure reading from the paper, 'the paper's own code run here: <file>, <how>', "
    "or 'project-derived: <reason>'"
)
CHECK_KEYS = {
    "range": ("type", "of", "above", "below", "min", "max", "z"),
    "close": ("type", "of", "to", "rtol", "atol"),
    "order": ("type", "ascending", "descending", "margin", "per_seed", "z"),
}
MEASURE_KEYS = (
    "metric",
    "run",
    "label",
    "estimator",
    "seed",
    "source",
    "where",
    "stat",
    "x",
    "n",
    "x_at",
    "x_frac",
    "threshold",
    "x_min",
    "x_max",
    "window",
    "seeds",
    "pool",
    "diverged",
    "table",
    "name",
    "transform",
    "se",
    "se_model",
    "se_floor",
)
# How a measure's `se:` metric becomes its standard error: `plain` (it is one); `squared_norm` (it is
# the noise part v of a debiased squared-norm estimate b, e.g. bias2_se of bias2; with se_floor the
# noise of the reference it was measured against is added to v): sqrt(4 max(b, 0) v + 2 v^2).
SE_MODELS = ("plain", "squared_norm")
STATS = ("final", "first", "min", "max", "mean_last", "at", "change", "first_below", "first_above", "slope")
SEEDS = ("mean", "median", "min", "max", "spread", "std", "each", "mean_curve")
PER_SEED = ("no", "paired", "all")
DIVERGED = ("fail", "inf", "-inf")
TABLES = ("metrics", "grid")
WINDOWS = ("upper_half",)
TRANSFORMS = {"exp": np.exp, "log10": np.log10}  # applied to the metric's values before the stat
ID_RE = re.compile(r"[a-z0-9][a-z0-9.-]*")
GLOB_CHARS = set("*?[")


# ----------------------------------------------------------------------------- scales


@functools.cache
def profile_scale(profile: str) -> str:
    """The scale a profile declares in configs/profile/<profile>.yaml: ``small`` or ``paper``.

    The one definition of which claims decide a profile's verdict: a new profile joins by
    declaring ``scale:`` in its file.  A missing file or key is a one-line `ConfigError`.
    """
    path = CONFIG_DIR / "profile" / f"{profile}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        fix = "fix: a profile file with name: and scale:"
        raise ConfigError(f"{path}: cannot be read ({err}); {fix}") from err
    scale = data.get("scale") if isinstance(data, Mapping) else None
    if scale not in PROFILE_SCALES:
        raise ConfigError(
            f"{path}: scale={scale!r} is invalid; allowed: {', '.join(PROFILE_SCALES)} "
            "(which claims decide this profile's verdict, docs/claims.md)"
        )
    return str(scale)


def decides(claim: Mapping, profile: str) -> bool:
    """Whether ``claim`` (validated) decides ``profile``'s verdict when it applies to it."""
    if claim.get("counted", True) is False:
        return False
    return claim.get("scale") != "paper" or profile_scale(profile) == "paper"


# ----------------------------------------------------------------------------- validation


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_per_profile(value) -> bool:
    return isinstance(value, Mapping) and bool(value) and set(value) <= set(config.profile_names())


def figure_profiles(fig) -> list[str]:
    """The profiles a figure defines (its ``profiles:`` keys), else every known profile."""
    profs = (fig or {}).get("profiles") if isinstance(fig, Mapping) else None
    if isinstance(profs, Mapping) and profs:
        return [str(p) for p in profs]
    return list(config.profile_names())


def _per_profile(value, where: str, profiles: Sequence[str], check) -> None:
    """``value`` is a thing ``check`` accepts, or {profile: such a thing} covering ``profiles``."""
    if _is_per_profile(value):
        missing = [p for p in profiles if p not in value]
        if missing:
            raise ConfigError(
                f"{where}={dict(value)} has no value for profile {missing[0]}; "
                f"allowed: a value for every profile the claim applies to ({', '.join(profiles)})"
            )
        for p in profiles:
            check(value[p], f"{where}.{p}")
        return
    check(value, where)


def _number(what: str, *, positive=False, integer=False, nonneg=False):
    allowed = (
        "an integer >= 1"
        if integer
        else "a number > 0"
        if positive
        else ("a number >= 0" if nonneg else "a number")
    )

    def check(v, where):
        ok = _is_number(v) and math.isfinite(v) or (not integer and _is_number(v) and math.isinf(v))
        if integer:
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 1
        elif positive:
            ok = ok and v > 0
        elif nonneg:
            ok = ok and v >= 0
        if not ok:
            raise ConfigError(f"{where}={v!r} is invalid; allowed: {allowed} ({what})")

    return check


def _one_of(options: Sequence[str]):
    def check(v, where):
        if v not in options:
            raise ConfigError(f"{where}={v!r} is invalid; allowed: {', '.join(options)}")

    return check


def _unknown(keys, allowed: Sequence[str], where: str) -> None:
    for k in keys:
        if k not in allowed:
            raise ConfigError(f"{where}: key {k!r} is unknown; allowed: {', '.join(allowed)}")


def _run_ids(fig) -> tuple[set[str], dict[str, list[str]]]:
    """The figure's run ids and label -> run ids (every profile)."""
    ids, labels = set(), {}
    for run in (fig.get("runs") or []) if fig is not None else []:
        ids.add(str(run["id"]))
        if run.get("label") is not None:
            labels.setdefault(str(run["label"]), []).append(str(run["id"]))
    return ids, labels


def _run_known(pattern: str, ids: set[str]) -> bool:
    return (
        not ids
        or bool(GLOB_CHARS & set(pattern))
        or pattern in ids
        or any(pattern.startswith(f"{i}-") for i in ids)
    )


# the settings each stat needs (and only it uses)
STAT_SETTINGS = {
    "n": ("mean_last",),
    "x_at": ("at", "change"),
    "x_frac": ("at", "change"),
    "threshold": ("first_below", "first_above"),
    "x_min": ("slope",),
    "x_max": ("slope",),
    "window": ("slope",),
}


def _validate_choices(m: Mapping, where: str) -> str:
    """A measure's metric and its one-of settings (stat, seeds, diverged, table, pool); returns the stat."""
    if not isinstance(m.get("metric"), str) or not m["metric"]:
        raise ConfigError(f"{where}.metric is missing; allowed: a metric name, e.g. loss")
    stat = m.get("stat", "final")
    _one_of(STATS)(stat, f"{where}.stat")
    _one_of(SEEDS)(m.get("seeds", "mean"), f"{where}.seeds")
    _one_of(DIVERGED)(str(m.get("diverged", "fail")), f"{where}.diverged")
    _one_of(TABLES)(m.get("table", "metrics"), f"{where}.table")
    if m.get("table", "metrics") == "grid" and stat not in ("min", "max"):
        raise ConfigError(f"{where}.stat={stat!r} is invalid with table: grid; allowed: min, max")
    if "pool" in m and not isinstance(m["pool"], bool):
        raise ConfigError(f"{where}.pool={m['pool']!r} is invalid; allowed: true, false")
    return stat


def _validate_stat_settings(m: Mapping, stat: str, where: str, profiles) -> None:
    """The settings a stat needs (n, x_at or x_frac, threshold), the optional ones, and none it
    does not use."""
    if stat == "mean_last":
        if "n" not in m:
            raise ConfigError(
                f"{where}: stat mean_last needs n; allowed: an integer >= 1 (how many last values)"
            )
        _per_profile(m["n"], f"{where}.n", profiles, _number("values averaged", integer=True))
    if stat in ("at", "change"):
        if ("x_at" in m) == ("x_frac" in m):
            raise ConfigError(
                f"{where}: stat {stat} needs one of x_at (an x value) or x_frac "
                "(a fraction of the logged x range, 0..1)"
            )
        if "x_at" in m:
            _per_profile(m["x_at"], f"{where}.x_at", profiles, _number("an x value"))
        else:
            _per_profile(m["x_frac"], f"{where}.x_frac", profiles, _number("a fraction", nonneg=True))
    if stat in ("first_below", "first_above"):
        if "threshold" not in m:
            raise ConfigError(f"{where}: stat {stat} needs threshold; allowed: a number")
        _per_profile(m["threshold"], f"{where}.threshold", profiles, _number("the value to reach"))
    for k in ("x_min", "x_max"):
        if k in m:
            _per_profile(m[k], f"{where}.{k}", profiles, _number("an x bound"))
    if "window" in m:
        _one_of(WINDOWS)(m["window"], f"{where}.window")
    if "transform" in m:
        _one_of(tuple(TRANSFORMS))(m["transform"], f"{where}.transform")
    for k, needs in STAT_SETTINGS.items():
        if k in m and stat not in needs:
            raise ConfigError(f"{where}.{k} is only used with stat {' or '.join(needs)}; here stat is {stat}")


def _validate_se(m: Mapping, where: str, profiles, fig) -> None:
    """The string settings, and se / se_model / se_floor (a measure of its own)."""
    for k in ("x", "source", "estimator", "name", "se"):
        if k in m and not isinstance(m[k], str):
            raise ConfigError(f"{where}.{k}={m[k]!r} is invalid; allowed: a string")
    if "se_model" in m or "se_floor" in m:
        if "se" not in m:
            raise ConfigError(f"{where}: se_model and se_floor need se: <metric of the standard error>")
        _one_of(SE_MODELS)(m.get("se_model", "plain"), f"{where}.se_model")
    if "se_floor" in m:
        if m.get("se_model") != "squared_norm":
            raise ConfigError(f"{where}.se_floor is only used with se_model: squared_norm")
        _validate_measure(m["se_floor"], f"{where}.se_floor", profiles, fig)


def _validate_selection(m: Mapping, where: str, fig) -> None:
    """``where:``, ``run:`` and ``label:`` name columns, runs and labels of the figure."""
    if "where" in m and not isinstance(m["where"], Mapping):
        raise ConfigError(f"{where}.where={m['where']!r} is invalid; allowed: {{column: value or list}}")
    ids, labels = _run_ids(fig)
    if "run" in m:
        runs = m["run"] if isinstance(m["run"], (list, tuple)) else [m["run"]]
        if not runs or not all(isinstance(r, str) and r for r in runs):
            raise ConfigError(
                f"{where}.run={m['run']!r} is invalid; allowed: a run id, a list of run ids or a glob"
            )
        post_rows = m.get("source") not in (None, "run")
        for r in runs:
            if not post_rows and not _run_known(r, ids):
                raise ConfigError(
                    f"{where}.run={r!r} is not a run of the figure; allowed: {', '.join(sorted(ids))} "
                    "(or a glob; rows of a post-step need source: <step>)"
                )
    if "label" in m and labels and m["label"] not in labels:
        raise ConfigError(f"{where}.label={m['label']!r} is unknown; allowed: {', '.join(sorted(labels))}")


def _validate_measure(m, where: str, profiles, fig) -> None:
    """One measure of a check (keys: `MEASURE_KEYS`)."""
    if not isinstance(m, Mapping):
        raise ConfigError(f"{where}={m!r} is invalid; allowed: a measure, e.g. {{run: pes-k1, metric: loss}}")
    _unknown(m, MEASURE_KEYS, where)
    stat = _validate_choices(m, where)
    _validate_stat_settings(m, stat, where, profiles)
    _validate_se(m, where, profiles, fig)
    _validate_selection(m, where, fig)


def _containers(claims, fig):
    """``claims`` and ``fig`` as plain Python containers (OmegaConf nodes resolved)."""
    if hasattr(claims, "_metadata") or (fig is not None and hasattr(fig, "_metadata")):
        from omegaconf import OmegaConf

        if hasattr(claims, "_metadata"):
            claims = OmegaConf.to_container(claims, resolve=True)
        if fig is not None and hasattr(fig, "_metadata"):
            fig = OmegaConf.to_container(fig, resolve=True)
    return claims, fig


def _claim_where(c, i: int, fig_id, seen: set) -> str:
    """The claim's name in messages (``<figure> claim '<id>'``) once its id is valid and unique."""
    where = f"{fig_id} claims[{i}]"
    if not isinstance(c, Mapping):
        raise ConfigError(f"{where}={c!r} is invalid; allowed: a mapping with keys {', '.join(CLAIM_KEYS)}")
    cid = c.get("id")
    if not isinstance(cid, str) or not ID_RE.fullmatch(cid):
        raise ConfigError(f"{where}.id={cid!r} is invalid; allowed: lowercase letters, digits, '.', '-'")
    where = f"{fig_id} claim {cid!r}"
    if cid in seen:
        raise ConfigError(f"{where}: the id is used twice; allowed: a unique id per figure")
    seen.add(cid)
    return where


def _validate_words(c: Mapping, where: str) -> None:
    """The claim's keys and words: claim, scale, source, finding, counted."""
    _unknown(c, CLAIM_KEYS, where)
    if not isinstance(c.get("claim"), str) or not c["claim"].strip():
        raise ConfigError(f"{where}: claim is missing; allowed: the claim in words (a string)")
    if "scale" not in c:
        raise ConfigError(f"{where}: scale is missing; allowed: {', '.join(SCALES)} (docs/claims.md)")
    _one_of(SCALES)(c["scale"], f"{where}.scale")
    source = c.get("source")
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"{where}: source is missing; allowed: {SOURCE_HINT}")
    head, colon, reason = source.partition(":")
    if head.strip().lower() == "project-derived" and not (colon and reason.strip()):
        raise ConfigError(
            f"{where}.source={source!r} gives no reason; allowed: 'project-derived: <why the project "
            "sets this threshold>'"
        )
    if "finding" in c and not (isinstance(c["finding"], str) and c["finding"].strip()):
        raise ConfigError(
            f"{where}.finding={c['finding']!r} is invalid; allowed: a one-line reason (a string)"
        )
    if "counted" in c and not isinstance(c["counted"], bool):
        raise ConfigError(f"{where}.counted={c['counted']!r} is invalid; allowed: true, false")
    if c.get("counted") is False and "finding" not in c:
        raise ConfigError(
            f"{where}: counted: false needs finding: (why the claim is reported but not counted)"
        )


def _claim_profiles(c: Mapping, where: str, fig, profiles: Sequence[str]) -> list:
    """The profiles the claim applies to: its ``profiles:``, else the figure's (among ``profiles``)."""
    cprof = c.get("profiles", [p for p in figure_profiles(fig) if p in profiles] or list(profiles))
    if not isinstance(cprof, list) or not cprof or any(p not in profiles for p in cprof):
        raise ConfigError(
            f"{where}.profiles={cprof!r} is invalid; allowed: a non-empty list of {', '.join(profiles)}"
        )
    return cprof


def _validate_of(check: Mapping, w: str, cprof, fig) -> None:
    """A range or close check's ``of:``: a measure or a list of measures."""
    of = check.get("of")
    if of is None:
        raise ConfigError(f"{w}.of is missing; allowed: a measure or a list of measures")
    for j, m in enumerate(of if isinstance(of, list) else [of]):
        _validate_measure(m, f"{w}.of[{j}]" if isinstance(of, list) else f"{w}.of", cprof, fig)


def _validate_range(check: Mapping, w: str, cprof) -> None:
    bounds = [k for k in ("above", "below", "min", "max") if k in check]
    if not bounds:
        raise ConfigError(f"{w}: no bound; allowed: above, below (strict), min, max (inclusive)")
    for k in bounds:
        _per_profile(check[k], f"{w}.{k}", cprof, _number("a bound"))


def _validate_close(check: Mapping, w: str, cprof, fig) -> None:
    if "to" not in check:
        raise ConfigError(f"{w}.to is missing; allowed: a number or a measure")
    if isinstance(check["to"], Mapping) and "metric" in check["to"]:
        _validate_measure(check["to"], f"{w}.to", cprof, fig)
    else:
        _per_profile(check["to"], f"{w}.to", cprof, _number("the target"))
    if "rtol" not in check and "atol" not in check:
        raise ConfigError(f"{w}: no tolerance; allowed: rtol and/or atol (numbers >= 0)")
    for k in ("rtol", "atol"):
        if k in check:
            _per_profile(check[k], f"{w}.{k}", cprof, _number("a tolerance", nonneg=True))


def _validate_order(check: Mapping, w: str, cprof, fig) -> None:
    keys = [k for k in ("ascending", "descending") if k in check]
    if len(keys) != 1:
        raise ConfigError(f"{w}: give exactly one of ascending, descending (a list of >= 2 measures)")
    seq = check[keys[0]]
    if not isinstance(seq, list) or len(seq) < 2:
        raise ConfigError(f"{w}.{keys[0]}={seq!r} is invalid; allowed: a list of >= 2 measures")
    for j, m in enumerate(seq):
        _validate_measure(m, f"{w}.{keys[0]}[{j}]", cprof, fig)
    if "margin" in check:
        _per_profile(check["margin"], f"{w}.margin", cprof, _number("a margin", nonneg=True))
    per_seed = check.get("per_seed", "no")
    per_seed = "no" if per_seed is False else per_seed
    _one_of(PER_SEED)(per_seed, f"{w}.per_seed")
    if per_seed != "no" and any(m.get("seeds") not in (None, "each") for m in seq):
        raise ConfigError(
            f"{w}: per_seed: {per_seed} compares seeds one by one; allowed: no seeds: key on its measures"
        )


def _validate_z(check: Mapping, ctype: str, w: str, cprof) -> None:
    """A range or order check's ``z:`` and its measures' ``se:`` come together."""
    measures = (
        (check["of"] if isinstance(check["of"], list) else [check["of"]])
        if ctype == "range"
        else check[[k for k in ("ascending", "descending") if k in check][0]]
    )
    with_se = [isinstance(m, Mapping) and "se" in m for m in measures]
    if "z" in check:
        _per_profile(check["z"], f"{w}.z", cprof, _number("standard errors", positive=True))
        if not all(with_se):
            raise ConfigError(
                f"{w}.z needs se: on every measure; allowed: se: <metric of its standard error>"
            )
        if check.get("per_seed", "no") not in ("no", False):
            raise ConfigError(f"{w}.z is only used with per_seed: no")
    elif any(with_se):
        raise ConfigError(f"{w}: a measure has se: but the check has no z; allowed: z: <standard errors>")


def _validate_check(check, where: str, cprof, fig) -> None:
    """A claim's ``check:``: its type, its keys, and the measures and numbers of that type."""
    if not isinstance(check, Mapping):
        raise ConfigError(f"{where}.check is missing; allowed: a mapping with type: {', '.join(CHECK_KEYS)}")
    ctype = check.get("type")
    if ctype not in CHECK_KEYS:
        raise ConfigError(f"{where}.check.type={ctype!r} is invalid; allowed: {', '.join(CHECK_KEYS)}")
    w = f"{where}.check"
    _unknown(check, CHECK_KEYS[ctype], w)
    if ctype in ("range", "close"):
        _validate_of(check, w, cprof, fig)
    if ctype == "range":
        _validate_range(check, w, cprof)
    if ctype == "close":
        _validate_close(check, w, cprof, fig)
    if ctype == "order":
        _validate_order(check, w, cprof, fig)
    if ctype in ("range", "order"):
        _validate_z(check, ctype, w, cprof)


def validate(claims, fig=None, profiles: Sequence[str] | None = None) -> list[dict]:
    """Check a figure's ``claims:`` list; returns it as plain dicts.

    ``fig`` (the figure config, a mapping with ``runs``) lets run ids and labels be checked.
    ``profiles``: the profiles a claim may name (default: every profile in configs/profile/);
    a claim without ``profiles:`` applies to the figure's profiles.
    Raises `ConfigError` with one line naming the claim, the key and what is allowed.
    """
    if claims is None:
        return []
    claims, fig = _containers(claims, fig)
    profiles = list(profiles) if profiles is not None else list(config.profile_names())
    fig_id = (fig or {}).get("id", "figure")
    if not isinstance(claims, list):
        raise ConfigError(
            f"{fig_id}: claims={claims!r} is invalid; allowed: a list of claims (docs/claims.md)"
        )
    seen: set = set()
    for i, c in enumerate(claims):
        where = _claim_where(c, i, fig_id, seen)
        _validate_words(c, where)
        cprof = _claim_profiles(c, where, fig, profiles)
        _validate_check(c.get("check"), where, cprof, fig)
        if "note" in c and not isinstance(c["note"], str):
            raise ConfigError(f"{where}.note={c['note']!r} is invalid; allowed: a string")
    return [dict(c) for c in claims]


# ----------------------------------------------------------------------------- evaluation


@dataclass
class Result:
    """One claim's verdict on one profile."""

    id: str
    claim: str
    profiles: list[str]
    verdict: str
    measured: str
    note: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    scale: str = "any"
    source: str = ""
    finding: str = ""
    counted: bool = True  # False: shown, never decides the verdict or the exit code
    role: str = ""  # why not counted: INDICATIVE (paper-scale claim, small profile) or REPORTED

    @property
    def shown_verdict(self) -> str:
        """The verdict as the tables show it: 'FAIL (paper-scale, indicative)' when not counted."""
        return f"{self.verdict} ({self.role})" if self.role else self.verdict

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class _NotRun(Exception):
    """The rows a measure needs are absent."""


class _Broken(Exception):
    """The claim cannot be evaluated on these rows (e.g. an ambiguous selection)."""


@dataclass
class _Measured:
    name: str
    value: float | None  # combined over members (None when seeds: each)
    members: dict[Any, float]  # member key -> value (key: seed, or run id / seed)
    diverged: dict[Any, str]  # member key -> "diverged at step N"
    fail_diverged: bool
    stat: str
    se: float | None = None  # the standard error read from the measure's se: metric


def _resolve(value, profile: str):
    if _is_per_profile(value):
        return value[profile]
    return value


def fmt(v: float | None, stat: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    if math.isinf(v):
        if stat in ("first_below", "first_above"):
            return "never"
        return "inf" if v > 0 else "-inf"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4g}"


def _status(statuses: Mapping | None, run_id: str) -> tuple[str | None, Any]:
    if not statuses or run_id not in statuses:
        return None, None
    s = statuses[run_id]
    if isinstance(s, Mapping):
        return s.get("status"), s.get("diverged_at_outer_step")
    return str(s), None


def _match_run(run_id: str, patterns: Sequence[str]) -> bool:
    for p in patterns:
        if run_id == p or fnmatch.fnmatchcase(run_id, p) or re.fullmatch(re.escape(p) + r"-seed\d+", run_id):
            return True
    return False


def _selection(m: Mapping, fig_labels: Mapping[str, list[str]]) -> list[str] | None:
    runs = None
    if "run" in m:
        runs = list(m["run"]) if isinstance(m["run"], (list, tuple)) else [m["run"]]
    if "label" in m:
        by_label = fig_labels.get(m["label"], [])
        runs = by_label if runs is None else [r for r in runs if r in by_label]
    return runs


def _describe(m: Mapping) -> str:
    parts = []
    for k in ("run", "label", "estimator", "seed", "source"):
        if k in m:
            parts.append(f"{k} {m[k]}")
    parts.append(f"metric {m['metric']}")
    return ", ".join(parts)


def _name(m: Mapping) -> str:
    if m.get("name"):
        return str(m["name"])
    if "label" in m:
        return str(m["label"])
    if "run" in m:
        r = m["run"]
        return "/".join(r) if isinstance(r, (list, tuple)) else str(r)
    if m.get("table") == "grid":
        return f"grid {m.get('stat')}"
    return str(m["metric"])


def _curve_stat(x: np.ndarray, y: np.ndarray, m: Mapping, profile: str) -> float:
    stat = m.get("stat", "final")
    if len(x) == 0:
        raise _NotRun("no finite values")
    if stat == "final":
        return float(y[-1])
    if stat == "first":
        return float(y[0])
    if stat == "min":
        return float(np.min(y))
    if stat == "max":
        return float(np.max(y))
    if stat == "mean_last":
        n = int(_resolve(m["n"], profile))
        return float(np.mean(y[-n:]))
    if stat in ("at", "change"):
        if "x_frac" in m:  # a fraction of the logged x range: protocol-independent "half-way"
            x_at = float(x[0] + float(_resolve(m["x_frac"], profile)) * (x[-1] - x[0]))
        else:
            x_at = float(_resolve(m["x_at"], profile))
        before = np.nonzero(x <= x_at)[0]
        if len(before) == 0:
            raise _NotRun(f"nothing logged at x <= {fmt(x_at)}")
        at = float(y[before[-1]])
        return at if stat == "at" else float(y[-1]) - at
    if stat in ("first_below", "first_above"):
        thr = float(_resolve(m["threshold"], profile))
        hit = np.nonzero(y <= thr if stat == "first_below" else y >= thr)[0]
        return float(x[hit[0]]) if len(hit) else math.inf
    if stat == "slope":
        keep = (x > 0) & (y > 0)
        if "x_min" in m:
            keep &= x >= float(_resolve(m["x_min"], profile))
        if "x_max" in m:
            keep &= x <= float(_resolve(m["x_max"], profile))
        if m.get("window") == "upper_half" and keep.any():
            lo, hi = np.log(x[keep].min()), np.log(x[keep].max())
            keep &= np.log(x) >= (lo + hi) / 2 - 1e-12
        if keep.sum() < 2:
            raise _NotRun("fewer than 2 positive points for a slope")
        return float(np.polyfit(np.log10(x[keep]), np.log10(y[keep]), 1)[0])
    raise AssertionError(stat)


def _rows(df: pd.DataFrame, m: Mapping, fig_labels, expected_runs) -> pd.DataFrame:
    sel = df[df["metric"] == m["metric"]]
    runs = _selection(m, fig_labels)
    if runs is not None:
        if expected_runs is not None:
            want = [r for r in expected_runs if _match_run(r, runs)]
            missing = sorted(set(want) - set(df["run_id"]))
            if missing:
                raise _NotRun(f"missing runs: {', '.join(missing)}")
        sel = sel[sel["run_id"].map(lambda r: _match_run(r, runs))]
    for k in ("estimator", "seed"):
        if k in m:
            vals = m[k] if isinstance(m[k], (list, tuple)) else [m[k]]
            sel = sel[sel[k].isin(vals)]
    if "source" in m:
        sel = sel[sel["source"] == m["source"]]
    for col, v in (m.get("where") or {}).items():
        if col not in df.columns:
            raise _Broken(f"where: column {col!r} is not in the table; have {', '.join(df.columns)}")
        sel = sel[sel[col].isin(v if isinstance(v, (list, tuple)) else [v])]
    if sel.empty:
        raise _NotRun(f"no rows for {_describe(m)}")
    return sel


def _with_x(df: pd.DataFrame, sel: pd.DataFrame, x: str) -> pd.DataFrame:
    if x in df.columns:
        out = sel.assign(_x=pd.to_numeric(sel[x], errors="raise"))  # the loader parsed numbers strictly
        return out
    xs = df[df["metric"] == x][["run_id", "seed", "outer_step", "value"]].rename(columns={"value": "_x"})
    if xs.empty:
        raise _NotRun(f"no rows for the x axis {x!r}")
    out = sel.merge(xs, on=["run_id", "seed", "outer_step"], how="inner")
    if out.empty:
        raise _NotRun(f"x axis {x!r} is not logged at the steps of metric {sel['metric'].iloc[0]!r}")
    return out


@dataclass(frozen=True)
class Evidence:
    """What a claim is measured on: one figure's results under one profile.

    Built once per `evaluate` call by `Evidence.of`, which normalises the table; every
    measure reads it and nothing else."""

    profile: str
    df: pd.DataFrame | None  # the merged table, values numeric, run ids strings; None: no results
    labels: Mapping[str, Any]  # label -> run ids (the figure's runs)
    statuses: Mapping | None = None  # run_id -> status or {status, diverged_at_outer_step}
    grid: pd.DataFrame | None = None  # the grid table, for `table: grid` measures
    expected_runs: Sequence[str] | None = None  # the run ids the profile should have
    markers: Mapping[tuple[str, int], int] = field(default_factory=dict)  # (run, seed) -> step

    @classmethod
    def of(cls, df: pd.DataFrame | None, profile: str, labels: Mapping, **more) -> Evidence:
        """The evidence of a results table ``df`` (copied and normalised, never changed)."""
        if df is None:
            return cls(profile, None, labels, **more)
        if SOURCE_COLUMN not in df.columns:
            raise ConfigError(
                f"the results table has no {SOURCE_COLUMN!r} column (columns {list(df.columns)}); "
                f"fix: a figure's merged table has {', '.join(results.FIGURE_COLUMNS)} "
                "(a stored table without it: python -m experiments.migrate folder=<its folder>)"
            )
        df = df.copy()
        df["value"] = pd.to_numeric(df["value"], errors="raise")  # never a silent NaN
        df["run_id"] = df["run_id"].astype(str)
        mk = df[df["metric"] == DIVERGED_METRIC]
        markers = {(str(r.run_id), int(r.seed)): int(r.outer_step) for r in mk.itertuples()}
        return cls(profile, df, labels, markers=markers, **more)


def _measure(m: Mapping, ev: Evidence) -> _Measured:
    """One measure's value: from the grid table, or from the selected runs' curves, combined
    over seeds as ``seeds:`` says."""
    if m.get("table", "metrics") == "grid":
        return _grid_measure(m, ev)
    members, diverged = _member_curves(m, ev)
    return _combine(m, members, diverged, ev.profile)


def _grid_measure(m: Mapping, ev: Evidence) -> _Measured:
    stat = m.get("stat", "final")
    if ev.grid is None:
        raise _NotRun("no grid table")
    vals = ev.grid[ev.grid["metric"] == m["metric"]]["value"].to_numpy(dtype=float)
    vals = vals[np.isfinite(vals)]
    if len(vals) == 0:
        raise _NotRun(f"no finite grid values for metric {m['metric']}")
    v = float(vals.min() if stat == "min" else vals.max())
    return _Measured(_name(m), v, {"grid": v}, {}, False, stat)


Curves = dict[Any, tuple[np.ndarray, np.ndarray]]


def _member_curves(m: Mapping, ev: Evidence) -> tuple[Curves, dict[Any, str]]:
    """Each member's finite (x, y) curve (a member: a seed, a run/seed, or the pooled rows)
    and the members that diverged (``"diverged at step N"``)."""
    df, pool = ev.df, bool(m.get("pool"))
    sel = _with_x(df, _rows(df, m, ev.labels, ev.expected_runs), m.get("x", "outer_step"))
    members: Curves = {}
    diverged: dict[Any, str] = {}
    groups = [("all", sel)] if pool else list(sel.groupby(["run_id", "seed"], sort=True))
    seeds_of = [key[1] for key, _ in groups] if not pool else []
    keyed_by_seed = not pool and len(set(seeds_of)) == len(seeds_of)
    for key, g in groups:
        g = g.sort_values("_x")
        if g["_x"].duplicated().any():
            where = "the pooled runs" if pool else f"run {key[0]}, seed {key[1]}"
            raise _Broken(f"{_name(m)}: several values at one x in {where} (narrow the selection)")
        x, y = g["_x"].to_numpy(float), g["value"].to_numpy(float)
        if "transform" in m:  # e.g. a log-space parameter read on its natural scale
            with np.errstate(all="ignore"):
                y = TRANSFORMS[m["transform"]](y)
        mkey = key if pool else (int(key[1]) if keyed_by_seed else f"{key[0]}/{key[1]}")
        at = _diverged_at(ev, None if pool else (str(key[0]), int(key[1])), g, y)
        if at is not None:
            diverged[mkey] = f"diverged at step {at}"
        keep = np.isfinite(y) & np.isfinite(x)
        members[mkey] = (x[keep], y[keep])
    if keyed_by_seed:  # seeds in numeric order in the table
        members = dict(sorted(members.items()))
    return members, diverged


def _diverged_at(ev: Evidence, run: tuple[str, int] | None, g: pd.DataFrame, y: np.ndarray) -> int | None:
    """The outer step a member diverged at (its run's status or marker row, or a last
    non-finite value), or None when it did not.  ``run``: (run id, seed); None when pooled."""
    status, at = (None, None) if run is None else _status(ev.statuses, run[0])
    marker = None if run is None else ev.markers.get(run)
    if marker is not None:  # the runner's marker row: metric "diverged" at the first bad step
        status, at = "diverged", marker if at is None else at
    bad = ~np.isfinite(y)
    if not (status == "diverged" or (len(y) and bad[-1])):
        return None
    if at is not None:
        return at
    return int(g["outer_step"].to_numpy()[bad][0]) if bad.any() else int(g["outer_step"].max())


SEED_COMBINERS = {
    "mean": np.mean,
    "median": np.median,
    "min": np.min,
    "max": np.max,
    "spread": lambda a: np.max(a) - np.min(a),
    "std": lambda a: np.std(a, ddof=1),
}


def _combine(m: Mapping, members: Curves, diverged: dict[Any, str], profile: str) -> _Measured:
    """The members' statistic (``stat:``), combined over them as ``seeds:`` says; a diverged
    member's value is what ``diverged:`` says (fail: NaN and the check fails)."""
    name, stat, mode = _name(m), m.get("stat", "final"), m.get("seeds", "mean")
    how = str(m.get("diverged", "fail"))
    if mode == "mean_curve" and len(members) > 0:
        if diverged:
            v = {"inf": math.inf, "-inf": -math.inf}.get(how, math.nan)
            return _Measured(name, v, {k: v for k in members}, diverged, how == "fail", stat)
        frames = [pd.Series(y, index=x) for x, y in members.values()]
        joined = pd.concat(frames, axis=1, join="inner").sort_index()
        if joined.empty:
            raise _NotRun(f"{name}: the seeds share no x value")
        xs, ys = joined.index.to_numpy(float), joined.mean(axis=1).to_numpy(float)
        v = _curve_stat(xs, ys, m, profile)
        return _Measured(name, v, {"mean curve": v}, {}, False, stat)
    values: dict[Any, float] = {}
    for k, (x, y) in members.items():
        if k in diverged:
            values[k] = {"inf": math.inf, "-inf": -math.inf}.get(how, math.nan)
        else:
            values[k] = _curve_stat(x, y, m, profile)
    arr = np.array(list(values.values()), float)
    combined = None
    if mode != "each":
        if mode in ("spread", "std") and len(arr) < 2:
            raise _NotRun(f"{name}: a spread needs at least 2 seeds, have {len(arr)}")
        with np.errstate(invalid="ignore"):
            combined = float(SEED_COMBINERS[mode](arr))
    return _Measured(name, combined, values, diverged, how == "fail" and bool(diverged), stat)


def _members_text(ms: _Measured) -> str:
    if len(ms.members) <= 1 and not ms.diverged:
        return ""
    parts = []
    for k, v in ms.members.items():
        label = f"seed {k}" if isinstance(k, (int, np.integer)) else str(k)
        parts.append(f"{label} {ms.diverged[k] if k in ms.diverged else fmt(v, ms.stat)}")
    return " [" + ", ".join(parts) + "]"


def _value_text(ms: _Measured, mode: str = "") -> str:
    if ms.stat in ("first_below", "first_above"):  # a step, not a value of the metric
        ms = _Measured(f"{ms.name} first at", ms.value, ms.members, ms.diverged, ms.fail_diverged, ms.stat)
    if ms.diverged and len(ms.members) == 1:  # one run, diverged: say so, and what it counts as
        why = next(iter(ms.diverged.values()))
        counted = "" if ms.value is None or math.isnan(ms.value) else f" (counted as {fmt(ms.value)})"
        return f"{ms.name} {why}{counted}"
    if ms.value is None:  # seeds: each
        if len(ms.members) == 1 and not ms.diverged:
            return f"{ms.name} {fmt(next(iter(ms.members.values())), ms.stat)}"
        return f"{ms.name}{_members_text(ms)}"
    if ms.diverged and ms.members.get("mean curve") is not None:
        return f"{ms.name} {fmt(ms.value, ms.stat)} [" + "; ".join(ms.diverged.values()) + "]"
    extra = _members_text(ms) if len(ms.members) > 1 or ms.diverged else ""
    se = f" ± {fmt(ms.se)} (se)" if ms.se is not None else ""
    return f"{ms.name} {fmt(ms.value, ms.stat)}{se}{extra}"


def _vals(ms: _Measured) -> list[float]:
    return list(ms.members.values()) if ms.value is None else [ms.value]


def _check_range(check, measures, profile) -> tuple[bool, str]:
    b = {k: float(_resolve(check[k], profile)) for k in ("above", "below", "min", "max") if k in check}
    z = float(_resolve(check.get("z", 0.0), profile))
    ok = True
    for ms in measures:
        if ms.fail_diverged:
            ok = False
        for v in _vals(ms):
            ok &= not math.isnan(v)
            if z:  # the bound must hold with z standard errors to spare
                lo_side = v - z * ms.se
                hi_side = v + z * ms.se
                ok &= all(
                    (
                        "above" not in b or lo_side > b["above"],
                        "below" not in b or hi_side < b["below"],
                        "min" not in b or lo_side >= b["min"],
                        "max" not in b or hi_side <= b["max"],
                    )
                )
                continue
            ok &= all(
                (
                    "above" not in b or v > b["above"],
                    "below" not in b or v < b["below"],
                    "min" not in b or v >= b["min"],
                    "max" not in b or v <= b["max"],
                )
            )
    lo = f"> {fmt(b['above'])}" if "above" in b else f">= {fmt(b['min'])}" if "min" in b else ""
    hi = f"< {fmt(b['below'])}" if "below" in b else f"<= {fmt(b['max'])}" if "max" in b else ""
    want = " and ".join(s for s in (lo, hi) if s) + (f", by {fmt(z)} standard errors" if z else "")
    return ok, "; ".join(_value_text(ms) for ms in measures) + f" (want {want})"


def _check_close(check, measures, target, profile) -> tuple[bool, str]:
    rtol = float(_resolve(check.get("rtol", 0.0), profile))
    atol = float(_resolve(check.get("atol", 0.0), profile))
    if isinstance(target, _Measured):
        t, tname = target.value, f"{target.name} {fmt(target.value)}"
    else:
        t, tname = float(target), fmt(float(target))
    ok = t is not None and math.isfinite(t)
    diffs = []
    for ms in measures:
        ok &= not ms.fail_diverged
        for v in _vals(ms):
            ok &= math.isfinite(v) and abs(v - t) <= atol + rtol * abs(t)
            diffs.append(abs(v - t))
    tol = " + ".join(
        s for s in ((f"{fmt(atol)}" if atol else ""), (f"{rtol:.3g} relative" if rtol else "")) if s
    )
    off = ""
    if diffs and t is not None and math.isfinite(t):
        worst = max(diffs)
        off = f"; off by {worst / abs(t):.2%}" if rtol and t else f"; off by {fmt(worst)}"
    return bool(ok), "; ".join(_value_text(ms) for ms in measures) + f" vs {tname} (want within {tol}{off})"


class _Order(NamedTuple):
    """An order claim's direction and margin."""

    ascending: bool
    margin: float

    @property
    def sym(self) -> str:
        return "<" if self.ascending else ">"

    def before(self, a: float, b: float) -> bool:
        """a strictly before b in the order, by more than the margin (never with NaN)."""
        if math.isnan(a) or math.isnan(b):
            return False
        if math.isinf(a) and a == b:
            return False
        return (b - a if self.ascending else a - b) > self.margin

    def rel(self, good: bool) -> str:
        """The relation as measured: "<" where it holds, "not <" where not."""
        return self.sym if good else f"not {self.sym}"


def _order_pooled(order: _Order, measures, z: float) -> tuple[bool, str]:
    """Each measure's value before the next's (by more than z combined standard errors, if z)."""
    ok, text = True, _value_text(measures[0])
    for a, b in zip(measures, measures[1:]):
        if z:  # the gap must exceed margin + z combined standard errors
            need = order.margin + z * math.hypot(a.se, b.se)
            gap = (b.value - a.value) if order.ascending else (a.value - b.value)
            good = not (math.isnan(gap) or math.isinf(need)) and gap > need
            ok &= good
            text += f" {order.rel(good)} {_value_text(b)} (gap {fmt(gap)}, want > {fmt(need)} = "
            text += f"{fmt(z)} combined se" + (f" + margin {fmt(order.margin)}" if order.margin else "") + ")"
            continue
        good = order.before(a.value, b.value)
        ok &= good
        text += f" {order.rel(good)} {_value_text(b)}"
    return ok, text


def _order_paired(order: _Order, measures) -> tuple[bool, str]:
    """Seed by seed: each shared seed's value before the next measure's."""
    ok, parts = True, []
    for a, b in zip(measures, measures[1:]):
        shared = [k for k in a.members if k in b.members]
        if not shared:
            raise _NotRun(f"{a.name} and {b.name} share no seed")
        for k in shared:
            good = order.before(a.members[k], b.members[k])
            ok &= good
            parts.append(f"seed {k}: {fmt(a.members[k])} {order.rel(good)} {fmt(b.members[k])}")
    return ok, f"{' vs '.join(ms.name for ms in measures)}: " + ", ".join(parts)


def _order_all(order: _Order, measures) -> tuple[bool, str]:
    """The worst member of each measure before the best of the next."""
    asc, ok, parts = order.ascending, True, []
    for a, b in zip(measures, measures[1:]):
        av, bv = np.array(list(a.members.values())), np.array(list(b.members.values()))
        if np.isnan(av).any() or np.isnan(bv).any():
            ok = False
            continue
        worst_a, best_b = (av.max(), bv.min()) if asc else (av.min(), bv.max())
        good = order.before(worst_a, best_b)
        ok &= good
        ka = list(a.members)[int(np.argmax(av) if asc else np.argmin(av))]
        kb = list(b.members)[int(np.argmin(bv) if asc else np.argmax(bv))]
        parts.append(
            f"{a.name} {'worst' if asc else 'lowest'} {fmt(worst_a)} (seed {ka}) {order.rel(good)} "
            f"{b.name} {'best' if asc else 'highest'} {fmt(best_b)} (seed {kb})"
        )
    members = "; ".join(f"{ms.name}{_members_text(ms) or ' ' + fmt(ms.value)}" for ms in measures)
    return ok, "; ".join(parts) + " | " + members


def _check_order(check, measures, profile) -> tuple[bool, str]:
    margin = float(_resolve(check.get("margin", 0.0), profile))
    z = float(_resolve(check.get("z", 0.0), profile))
    per_seed = check.get("per_seed", "no")
    per_seed = "no" if per_seed is False else per_seed
    order = _Order("ascending" in check, margin)
    if per_seed == "no":
        good, text = _order_pooled(order, measures, z)
    elif per_seed == "paired":
        good, text = _order_paired(order, measures)
    else:
        good, text = _order_all(order, measures)
    ok = not any(ms.fail_diverged for ms in measures) and good
    if margin and not z:
        text += f" (margin {fmt(margin)})"
    return bool(ok), text


def evaluate(
    claims: Sequence[Mapping],
    df: pd.DataFrame | None,
    *,
    profile: str,
    fig=None,
    statuses: Mapping | None = None,
    grid: pd.DataFrame | None = None,
    expected_runs: Sequence[str] | None = None,
) -> list[Result]:
    """Evaluate validated ``claims`` on a results table for ``profile``.

    Args:
      df: the merged table (tidy schema, optional ``source`` column); None = no results.
      fig: the figure config (for labels).
      statuses: run_id -> status string or {status, diverged_at_outer_step}.
      grid: the figure's grid table, for ``table: grid`` measures.
      expected_runs: the run ids the profile should have; a selection that names one of them
        while its rows are absent is NOT RUN (instead of a mean over fewer seeds).
    """
    if fig is not None and hasattr(fig, "_metadata"):
        from omegaconf import OmegaConf

        fig = OmegaConf.to_container(fig, resolve=True)
    _, labels = _run_ids(fig)
    ev = Evidence.of(df, profile, labels, statuses=statuses, grid=grid, expected_runs=expected_runs)
    out = []
    for c in claims:
        profiles = list(c.get("profiles") or figure_profiles(fig))
        res = Result(
            str(c["id"]),
            str(c["claim"]).strip(),
            profiles,
            NOT_RUN,
            "",
            str(c.get("note", "")),
            scale=str(c.get("scale", "any")),
            source=" ".join(str(c.get("source", "")).split()),
            finding=" ".join(str(c.get("finding", "")).split()),
        )
        out.append(res)
        if profile not in profiles:
            res.measured = f"not applicable to {profile} (applies to {', '.join(profiles)})"
            continue
        if not decides(c, profile):
            res.counted = False
            res.role = REPORTED if c.get("counted", True) is False else INDICATIVE
        check = c["check"]
        try:
            if df is None and not (check.get("of") and _only_grid(check)):
                raise _NotRun(f"no results for {profile}")
            ok, text, measures = _run_check(check, ev, profile)
            res.verdict, res.measured = (PASS if ok else FAIL), text
            res.values = {
                ms.name: (ms.value if ms.value is not None else dict(ms.members)) for ms in measures
            }
        except _NotRun as why:
            res.measured = str(why)
        except _Broken as why:
            res.verdict, res.measured = FAIL, f"cannot evaluate: {why}"
    return out


def _run_check(check: Mapping, ev: Evidence, profile: str) -> tuple[bool, str, list[_Measured]]:
    """Measure a claim's check on the evidence: (holds, what was measured, the measures)."""
    if check["type"] in ("range", "close"):
        of = check["of"] if isinstance(check["of"], list) else [check["of"]]
        measures = [_measure_se(m, ev) for m in of]
        if check["type"] == "range":
            ok, text = _check_range(check, measures, profile)
        else:
            to = check["to"]
            target = _measure(to, ev) if isinstance(to, Mapping) and "metric" in to else _resolve(to, profile)
            ok, text = _check_close(check, measures, target, profile)
    else:
        seq = check.get("ascending", check.get("descending"))
        measures = [_measure_se(m, ev) for m in seq]
        ok, text = _check_order(check, measures, profile)
    return ok, text, measures


def _measure_se(m: Mapping, ev: Evidence) -> _Measured:
    """A measure, with its standard error when it names one (``se: <metric>``)."""
    ms = _measure(m, ev)
    if "se" in m:
        sm = {k: v for k, v in m.items() if k not in ("se", "se_model", "se_floor", "name", "transform")}
        sm["metric"] = m["se"]
        se = _measure(sm, ev).value
        if "se_floor" in m:
            floor = _measure(m["se_floor"], ev).value
            se = None if se is None or floor is None else se + floor
        if ms.value is None or se is None or not math.isfinite(se) or se < 0:
            raise _Broken(f"{ms.name}: se needs one combined value and a finite standard error")
        if m.get("se_model", "plain") == "squared_norm":
            se = math.sqrt(4.0 * max(ms.value, 0.0) * se + 2.0 * se * se)
        ms.se = float(se)
    return ms


def _only_grid(check) -> bool:
    of = check["of"] if isinstance(check["of"], list) else [check["of"]]
    return all(isinstance(m, Mapping) and m.get("table") == "grid" for m in of)


# ----------------------------------------------------------------------------- output


def exit_code(results: Sequence[Result]) -> int:
    """0: no counted claim failed; 1: one failed (codes 2, 3 come from the CLI).

    Paper-scale claims on a small profile (indicative) and claims kept as findings
    (``counted: false``) never decide it.
    """
    return EXIT_FAIL if any(r.verdict == FAIL and r.counted for r in results) else EXIT_OK


def counts(results: Sequence[Result]) -> dict[str, int]:
    """PASS / FAIL / NOT RUN of the counted claims, and how many are indicative or reported findings."""
    out = {v: sum(r.verdict == v and r.counted for r in results) for v in (PASS, FAIL, NOT_RUN)}
    out[INDICATIVE] = sum(r.role == INDICATIVE for r in results)
    out[REPORTED] = sum(r.role == REPORTED for r in results)
    return out


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(results: Sequence[Result]) -> str:
    """A pipe table: claim | measured | verdict (markdown, also readable in a terminal)."""
    lines = ["| claim | measured | verdict |", "|---|---|---|"]
    for r in results:
        verdict = f"**{r.verdict}**" if r.verdict == FAIL and r.counted else r.verdict
        if r.role:
            verdict += f" ({r.role})"
        lines.append(f"| `{r.id}`: {_cell(r.claim)} | {_cell(r.measured)} | {verdict} |")
    return "\n".join(lines)


def summary(results: Sequence[Result]) -> str:
    c = counts(results)
    text = f"{c[PASS]} PASS, {c[FAIL]} FAIL, {c[NOT_RUN]} NOT RUN"
    for role in (INDICATIVE, REPORTED):
        shown = [r for r in results if r.role == role]
        if shown:
            plural = "s" if len(shown) > 1 else ""
            word = (
                f"paper-scale claim{plural} shown as indicative"
                if role == INDICATIVE
                else f"finding{plural} not counted"
            )
            each = ", ".join(f"{r.id} {r.verdict}" for r in shown)
            text += f"; {len(shown)} {word} ({each})"
    return text
