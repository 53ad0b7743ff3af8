"""Image classification datasets (MNIST, Fashion-MNIST, CIFAR-10) as NumPy arrays.

The paper's splits (its experimental setup): validation = the last 10,000 images of the official
train split, train = the images before them (MNIST / Fashion-MNIST 50,000, CIFAR-10
40,000), test = the official test split.  Normalisation: pixels / 255, then
(x - mean) / std per channel with the dataset's constants (`SPECS`; MNIST uses the
paper's 0.13066 / 0.30811).  Images are NHWC (N, H, W, C).

Sources (``source=``):

* ``"tfds"``: TensorFlow Datasets.  Prepared data in ``tfds_data_dir`` is used as is;
  otherwise it downloads, but only after a quick reachability probe of the TFDS host
  (a blocked network fails in seconds instead of TFDS's ~200 s of retries).
* ``"idx"``: MNIST-format files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
* ``"npz"``: ``<name>.npz`` holding ``x_train, y_train, x_test, y_test`` (uint8 images).
* ``"auto"`` (default): local IDX/npz files, else prepared TFDS data, else a TFDS
  download if the host is reachable, else `DataUnavailableError` naming the dataset and
  every way to provide it.

Errors are one line naming the dataset, where it was looked for and every way to provide
it.  Hints name the arguments ``source`` and ``data_dir``; a caller that exposes them under
other names (a task's ``data_source``) passes ``keys={"source": "data_source"}``.

Local files are looked up in ``<data_dir>/<name>/`` (also ``<data_dir>/<name>.npz``);
``data_dir`` defaults to ``$PES_DATA_DIR``, else ``$XDG_DATA_HOME/pes``, else
``~/.local/share/pes``.  With the default ``data_dir``, system-wide copies are searched
too (Debian's ``dataset-fashion-mnist`` installs IDX files under
``/usr/share/datasets/fashion-mnist``), unless ``$PES_NO_SYSTEM_DATA`` is set to ``1``: then
only the data folder and TFDS count, as on a machine without those packages (the test
suite's fresh-machine pass uses it).
"""

from __future__ import annotations

import gzip
import os
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

SOURCES = ("auto", "tfds", "idx", "npz")
NUM_VAL = 10_000
TFDS_HOST = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 3.0
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class Spec(NamedTuple):
    shape: tuple[int, int, int]  # H, W, C
    num_classes: int
    mean: tuple[float, ...]  # per channel, of pixels / 255
    std: tuple[float, ...]
    system_dirs: tuple[str, ...]  # system-wide IDX/npz locations searched with the default data_dir
    idx: bool  # distributed in IDX format


SPECS = {
    "mnist": Spec((28, 28, 1), 10, (0.13066,), (0.30811,), (), True),
    "fashion_mnist": Spec(
        (28, 28, 1), 10, (0.2860,), (0.3530,), ("/usr/share/datasets/fashion-mnist",), True
    ),
    "cifar10": Spec((32, 32, 3), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), (), False),
}


class DataUnavailableError(FileNotFoundError):
    """The dataset could not be found locally, in TFDS, or downloaded."""


class RawData(NamedTuple):
    """The official train and test splits, uint8 NHWC images and int32 labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    origin: str  # where the arrays came from (source and path), for logs and run.json


class ImageData(NamedTuple):
    """The paper's splits; images float32 normalised (or uint8 with normalize=False)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    origin: str


# ----------------------------------------------------------------------------- helpers


def _key(keys: Mapping[str, str] | None, arg: str) -> str:
    """The name under which the caller exposes argument ``arg`` (for hints)."""
    return (keys or {}).get(arg, arg)


def _check_name(name: str) -> Spec:
    if name not in SPECS:
        raise ValueError(f"dataset={name!r} is unknown; allowed: {', '.join(SPECS)}")
    return SPECS[name]


def default_data_dir() -> Path:
    """``$PES_DATA_DIR``, else ``$XDG_DATA_HOME/pes`` (default ``~/.local/share/pes``)."""
    if os.environ.get("PES_DATA_DIR"):
        return Path(os.environ["PES_DATA_DIR"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "pes"


def system_data_hidden() -> bool:
    """Whether ``$PES_NO_SYSTEM_DATA=1`` hides the system-wide dataset folders."""
    return os.environ.get("PES_NO_SYSTEM_DATA", "") == "1"


def _local_dirs(name: str, data_dir: str | Path | None) -> list[Path]:
    """Directories that may hold ``name``'s IDX files or ``<name>.npz``."""
    spec = _check_name(name)
    root = default_data_dir() if data_dir is None else Path(data_dir).expanduser()
    searched = data_dir is None and not system_data_hidden()
    system = [Path(d) for d in spec.system_dirs] if searched else []
    return [root / name, *system]


def normalize(images: np.ndarray, name: str) -> np.ndarray:
    """uint8 images -> float32 (x / 255 - mean) / std per channel."""
    spec = _check_name(name)
    mean = np.asarray(spec.mean, np.float32)
    std = np.asarray(spec.std, np.float32)
    return ((images.astype(np.float32) / np.float32(255.0)) - mean) / std


def split(raw: RawData, name: str, *, normalize_images: bool = True, num_val: int = NUM_VAL) -> ImageData:
    """The paper's splits: train = all but the last ``num_val`` of train, val = those."""
    n = len(raw.train_images)
    if not 0 < num_val < n:
        raise ValueError(f"num_val={num_val} is invalid for {n} training images; allowed: 1..{n - 1}")
    prep = (lambda x: normalize(x, name)) if normalize_images else (lambda x: x)
    cut = n - num_val
    return ImageData(
        name,
        prep(raw.train_images[:cut]),
        raw.train_labels[:cut],
        prep(raw.train_images[cut:]),
        raw.train_labels[cut:],
        prep(raw.test_images),
        raw.test_labels,
        raw.origin,
    )


def _finish(images, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
    spec = _check_name(name)
    images = np.asarray(images)
    if images.ndim == 3 and spec.shape[2] == 1:
        images = images[..., None]
    if images.shape[1:] != spec.shape:
        raise ValueError(f"dataset {name!r}: images have shape {images.shape[1:]}, expected {spec.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"dataset {name!r}: images have dtype {images.dtype}, expected uint8")
    labels = np.asarray(labels).astype(np.int32).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"dataset {name!r}: {len(images)} images but {len(labels)} labels")
    return np.ascontiguousarray(images), labels


# ----------------------------------------------------------------------------- IDX


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed if the name ends in .gz)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but the file holds {arr.size} values")
    return arr.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip if the name ends in .gz)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx writes uint8 arrays; got {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _find_idx(directory: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in IDX_FILES.items():
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def load_idx(name: str, directory: str | Path) -> RawData:
    """Dataset ``name`` from the IDX files (plain or ``.gz``) in ``directory``."""
    _check_name(name)
    directory = Path(directory)
    files = _find_idx(directory)
    if files is None:
        raise DataUnavailableError(
            f"dataset {name!r}: no IDX files in {directory} "
            f"(need {', '.join(s + '[.gz]' for s in IDX_FILES.values())})"
        )
    train_x, train_y = _finish(read_idx(files["train_images"]), read_idx(files["train_labels"]), name)
    test_x, test_y = _finish(read_idx(files["test_images"]), read_idx(files["test_labels"]), name)
    return RawData(train_x, train_y, test_x, test_y, f"idx:{directory}")


# ----------------------------------------------------------------------------- npz


def _find_npz(name: str, directory: Path) -> Path | None:
    # <root>/<name>/<name>.npz or <root>/<name>.npz
    for candidate in (directory / f"{name}.npz", directory.parent / f"{name}.npz"):
        if candidate.is_file():
            return candidate
    return None


def load_npz(name: str, path: str | Path) -> RawData:
    """Read ``x_train, y_train, x_test, y_test`` from an npz file."""
    path = Path(path)
    with np.load(path) as data:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data]
        if missing:
            raise ValueError(f"{path} lacks arrays {missing}; expected x_train, y_train, x_test, y_test")
        train_x, train_y = _finish(data["x_train"], data["y_train"], name)
        test_x, test_y = _finish(data["x_test"], data["y_test"], name)
    return RawData(train_x, train_y, test_x, test_y, f"npz:{path}")


def save_npz(path: str | Path, raw: RawData) -> None:
    """Write raw splits in the npz layout `load_npz` reads (to carry data offline)."""
    np.savez_compressed(
        path,
        x_train=raw.train_images,
        y_train=raw.train_labels,
        x_test=raw.test_images,
        y_test=raw.test_labels,
    )


# ----------------------------------------------------------------------------- TFDS


def host_reachable(host: tuple[str, int] = TFDS_HOST, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (DNS included)."""
    result = []

    def probe():
        try:
            with socket.create_connection(host, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _import_tfds():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415
    except ImportError as err:
        raise ImportError(
            f"TFDS is not usable ({err}); install tensorflow-datasets, importlib_resources and "
            "tensorflow-cpu (pip install 'pes-repro[data]' tensorflow-cpu)"
        ) from err
    return tfds


def _tfds_split(tfds, name: str, split_name: str, *, download: bool, tfds_data_dir, batch_size: int):
    # An explicit batch size: batch_size=-1 aborts the interpreter under tfds mock data.
    ds = tfds.load(
        name,
        split=split_name,
        batch_size=batch_size,
        download=download,
        data_dir=None if tfds_data_dir is None else str(tfds_data_dir),
        shuffle_files=False,
    )
    images, labels = [], []
    for batch in tfds.as_numpy(ds):
        images.append(batch["image"])
        labels.append(batch["label"])
    return _finish(np.concatenate(images), np.concatenate(labels), name)


def load_tfds(
    name: str,
    *,
    tfds_data_dir: str | Path | None = None,
    download: bool = True,
    batch_size: int = 10_000,
) -> RawData:
    """Load via TFDS: prepared data first; a download only if allowed and the host answers."""
    _check_name(name)
    tfds = _import_tfds()
    kwargs = dict(tfds_data_dir=tfds_data_dir, batch_size=batch_size)
    try:
        train = _tfds_split(tfds, name, "train", download=False, **kwargs)
        test = _tfds_split(tfds, name, "test", download=False, **kwargs)
        where = "prepared"
    except (AssertionError, FileNotFoundError, OSError) as err:
        if not download:
            raise DataUnavailableError(f"dataset {name!r}: no prepared TFDS data ({err})") from err
        if not host_reachable():
            raise DataUnavailableError(
                f"dataset {name!r}: no prepared TFDS data and the TFDS host {TFDS_HOST[0]} is "
                f"unreachable (no network?)"
            ) from err
        try:
            train = _tfds_split(tfds, name, "train", download=True, **kwargs)
            test = _tfds_split(tfds, name, "test", download=True, **kwargs)
        except Exception as failed:  # noqa: BLE001 - any download failure: one line, the cause chained
            reason = " ".join(str(failed).split())[:300] or type(failed).__name__
            raise DataUnavailableError(
                f"dataset {name!r}: the TFDS download failed ({reason}); a partial download may be left "
                f"in {tfds_data_dir or '~/tensorflow_datasets'} (delete its {name} folder before retrying)"
            ) from failed
        where = "downloaded"
    location = tfds_data_dir if tfds_data_dir is not None else "default TFDS data_dir"
    return RawData(*train, *test, f"tfds:{name} ({where}, {location})")


# ----------------------------------------------------------------------------- entry point


def _how_to_provide(name: str, dirs: list[Path], keys: Mapping[str, str] | None) -> str:
    spec = SPECS[name]
    ways = [
        f"{_key(keys, 'source')}=tfds on a machine that reaches {TFDS_HOST[0]} (downloads once; "
        "then copy ~/tensorflow_datasets to offline machines)",
    ]
    if spec.idx:
        ways.append(
            f"IDX files {'/'.join(IDX_FILES.values())}[.gz] in {dirs[0]} "
            f"(or in <folder>/{name} with {_key(keys, 'data_dir')}=<folder>)"
        )
    ways.append(f"{dirs[0].parent / (name + '.npz')} with uint8 arrays x_train, y_train, x_test, y_test")
    if name == "fashion_mnist":
        ways.append(
            "apt-get install dataset-fashion-mnist (Debian; IDX files in /usr/share/datasets/fashion-mnist)"
        )
    return "; ".join(f"({i}) {w}" for i, w in enumerate(ways, 1))


def load_raw(
    name: str,
    *,
    source: str = "auto",
    data_dir: str | Path | None = None,
    tfds_data_dir: str | Path | None = None,
    keys: Mapping[str, str] | None = None,
) -> RawData:
    """The official train/test splits as uint8 arrays from the chosen source.

    ``keys`` renames the arguments in error hints (see the module docstring).
    """
    _check_name(name)
    if source not in SOURCES:
        raise ValueError(f"{_key(keys, 'source')}={source!r} is unknown; allowed: {', '.join(SOURCES)}")
    dirs = _local_dirs(name, data_dir)
    if source == "tfds":
        return load_tfds(name, tfds_data_dir=tfds_data_dir)
    if source in ("idx", "auto") and SPECS[name].idx:
        for d in dirs:
            if _find_idx(d) is not None:
                return load_idx(name, d)
    if source in ("npz", "auto"):
        for d in dirs:
            path = _find_npz(name, d)
            if path is not None:
                return load_npz(name, path)
    if source == "idx":
        if not SPECS[name].idx:
            raise ValueError(
                f"{_key(keys, 'source')}=idx is invalid for {name!r} (not distributed as IDX); "
                "allowed: auto, tfds, npz"
            )
        raise DataUnavailableError(
            f"dataset {name!r}: no IDX files in {', '.join(map(str, dirs))}; ways to provide it: "
            + _how_to_provide(name, dirs, keys)
        )
    if source == "npz":
        raise DataUnavailableError(
            f"dataset {name!r}: no {name}.npz in {', '.join(map(str, dirs))}; ways to provide it: "
            + _how_to_provide(name, dirs, keys)
        )
    # auto: TFDS (prepared, else a download if the host answers)
    try:
        return load_tfds(name, tfds_data_dir=tfds_data_dir)
    except (DataUnavailableError, ImportError) as err:
        raise DataUnavailableError(
            f"dataset {name!r} is not available: no local files in {', '.join(map(str, dirs))}; "
            f"TFDS: {err}. Ways to provide it: {_how_to_provide(name, dirs, keys)}"
        ) from err


def load_first(
    names: tuple[str, ...], *, source: str, data_dir: str | Path | None, keys: Mapping[str, str] | None = None
) -> tuple[str, RawData]:
    """(name, data) of the first of ``names`` that `load_raw` finds; if none is found, one
    `DataUnavailableError` with every name's reason."""
    errors = []
    for name in names:
        try:
            return name, load_raw(name, source=source, data_dir=data_dir, keys=keys)
        except DataUnavailableError as err:
            errors.append(str(err))
    raise DataUnavailableError(" | ".join(errors))


def load(
    name: str,
    *,
    source: str = "auto",
    data_dir: str | Path | None = None,
    tfds_data_dir: str | Path | None = None,
    normalize_images: bool = True,
    num_val: int = NUM_VAL,
    keys: Mapping[str, str] | None = None,
) -> ImageData:
    """``name`` with the paper's train/val/test splits (see the module docstring)."""
    raw = load_raw(name, source=source, data_dir=data_dir, tfds_data_dir=tfds_data_dir, keys=keys)
    return split(raw, name, normalize_images=normalize_images, num_val=num_val)


def find_local(name: str, *, data_dir: str | Path | None = None) -> Path | None:
    """The folder or npz file that ``source="auto"`` would read ``name`` from locally, or None."""
    dirs = _local_dirs(name, data_dir)
    for d in dirs if SPECS[name].idx else ():
        if _find_idx(d) is not None:
            return d
    for d in dirs:
        path = _find_npz(name, d)
        if path is not None:
            return path
    return None


def available(name: str, *, data_dir: str | Path | None = None) -> bool:
    """Whether local IDX/npz files for ``name`` exist (no TFDS, no network)."""
    return find_local(name, data_dir=data_dir) is not None


__all__ = [
    "DataUnavailableError",
    "ImageData",
    "RawData",
    "available",
    "find_local",
    "default_data_dir",
    "host_reachable",
    "load",
    "load_idx",
    "load_npz",
    "load_raw",
    "load_tfds",
    "normalize",
    "read_idx",
    "save_npz",
    "split",
    "write_idx",
]
