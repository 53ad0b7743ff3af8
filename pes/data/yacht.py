"""UCI Yacht Hydrodynamics: 308 hulls, 6 features, residuary resistance as the target.

The figure-9 regression data (`pes.tasks.uci_yacht`).  A copy of the UCI file ships with
the package (``pes/data/uci/``, CC BY 4.0, attribution in its README), so nothing needs the
network.  Sources (``source=``):

* ``"package"``: the packaged copy;
* ``"file"``: a local copy at ``path``;
* ``"url"``: a download from ``url`` (default: the UCI archive), with a hard time limit of
  ``timeout`` seconds (DNS included), so a blocked network fails in seconds;
* ``"auto"`` (default): ``path`` if one is given, else the packaged copy.

Every source is checked the same way before use: 7 numeric, finite columns on every row,
308 rows, and the md5 of the text (line endings and trailing blanks normalised) equal to
`MD5`.  A file that fails any check raises `YachtFileError`, a one-line message naming the
file, what is wrong and the fix; a shorter or altered dataset is never used silently.
``verify_checksum=False`` accepts a deliberately modified file (any number of rows, still 7
numeric columns).

`split` prepares the data as the paper's experiment does: features and target
standardised with the mean and (population, ddof 0) standard deviation of **all** rows, then
an 80/20 split by a permutation drawn by NumPy's legacy generator seeded with 1 (246 train,
62 validation rows).
"""

from __future__ import annotations

import hashlib
import threading
import urllib.request
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pes.data.images import DataUnavailableError

URL = "http://archive.ics.uci.edu/ml/machine-learning-databases/00243/yacht_hydrodynamics.data"
FILE_NAME = "yacht_hydrodynamics.data"
MD5 = "d98905b47e16b5b79dd0a7a366905699"
NUM_ROWS = 308
NUM_COLUMNS = 7
FEATURES = (
    "longitudinal position of the centre of buoyancy",
    "prismatic coefficient",
    "length-displacement ratio",
    "beam-draught ratio",
    "length-beam ratio",
    "Froude number",
)
TARGET = "residuary resistance per unit weight of displacement"
SOURCES = ("auto", "package", "file", "url")
DOWNLOAD_TIMEOUT_S = 5.0
SPLIT_SEED = 1
TRAIN_FRACTION = 0.8


class YachtFileError(ValueError):
    """The yacht file is malformed, truncated or not the expected data (one-line message)."""


class Table(NamedTuple):
    """The raw table (rows x 7 columns, float64) and where it came from."""

    values: np.ndarray
    origin: str  # "package:<path>", "file:<path>" or "url:<url>"
    md5: str  # of the normalised text


class YachtData(NamedTuple):
    """Standardised train/validation split (float64)."""

    x_train: np.ndarray  # (246, 6)
    y_train: np.ndarray  # (246,)
    x_val: np.ndarray  # (62, 6)
    y_val: np.ndarray  # (62,)
    mean: np.ndarray  # (7,) column means of all rows (features, then target)
    std: np.ndarray  # (7,) column standard deviations (ddof 0)
    origin: str
    md5: str


def packaged_path() -> Path:
    """The path of the packaged copy."""
    return Path(str(resources.files("pes.data") / "uci" / FILE_NAME))


def _fix(where: str) -> str:
    del where
    return f"fix: use the packaged copy (data_source=package) or a fresh copy of the UCI file ({URL})"


def normalized_md5(text: str) -> str:
    """md5 of the text with CRLF -> LF, trailing blanks and blank lines removed, no final newline."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    body = "\n".join(line for line in lines if line)
    return hashlib.md5(body.encode()).hexdigest()


def parse(data: bytes | str, where: str, *, verify_checksum: bool = True) -> Table:
    """Check and parse the file's contents; ``where`` names the file in error messages."""
    if isinstance(data, bytes):
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as err:
            raise YachtFileError(
                f"yacht file {where} is not a text file (byte {err.start} is not ASCII); {_fix(where)}"
            ) from err
    else:
        text = data
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != NUM_COLUMNS:
            raise YachtFileError(
                f"yacht file {where}: line {number} has {len(fields)} columns, expected {NUM_COLUMNS} "
                f"(6 features and the target); {_fix(where)}"
            )
        try:
            values = [float(f) for f in fields]
        except ValueError as err:
            raise YachtFileError(
                f"yacht file {where}: line {number} has a non-numeric value ({err}); {_fix(where)}"
            ) from err
        if not all(np.isfinite(values)):
            raise YachtFileError(f"yacht file {where}: line {number} has a non-finite value; {_fix(where)}")
        rows.append(values)
    if not rows:
        raise YachtFileError(f"yacht file {where} holds no data rows; {_fix(where)}")
    digest = normalized_md5(text)
    if verify_checksum:
        if len(rows) != NUM_ROWS:
            raise YachtFileError(
                f"yacht file {where} has {len(rows)} rows, expected {NUM_ROWS} (truncated or altered); "
                f"{_fix(where)}"
            )
        if digest != MD5:
            raise YachtFileError(
                f"yacht file {where} fails its checksum (md5 {digest}, expected {MD5}): corrupt or "
                f"altered; {_fix(where)}, or set verify_checksum=false to use an altered file on purpose"
            )
    return Table(np.asarray(rows, np.float64), where, digest)


def _download(url: str, timeout: float) -> bytes:
    """The bytes at ``url``, or `DataUnavailableError` within about ``timeout`` seconds."""
    result: dict = {}

    def fetch():
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - user URL
                result["data"] = response.read()
        except Exception as err:  # noqa: BLE001 - reported below
            result["error"] = err

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(timeout)
    if "data" in result:
        return result["data"]
    why = (
        f"{type(result['error']).__name__}: {result['error']}"
        if "error" in result
        else (f"no answer within {timeout:g} s")
    )
    raise DataUnavailableError(
        f"yacht data: download from {url} failed ({why}); ways to provide it: "
        f"(1) data_source=package, the copy shipped with pes (no network); "
        f"(2) data_source=file with data_path=<local copy of {FILE_NAME}>; "
        f"(3) data_source=url with a reachable data_url"
    )


def read(
    source: str = "auto",
    *,
    path: str | Path | None = None,
    url: str = URL,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    verify_checksum: bool = True,
) -> Table:
    """The raw, checked table from ``source`` (see the module docstring)."""
    if source not in SOURCES:
        raise ValueError(f"data_source={source!r} is unknown; allowed: {', '.join(SOURCES)}")
    if source == "file" and path is None:
        raise ValueError("data_source=file needs data_path=<path of yacht_hydrodynamics.data>")
    if source == "url":
        return parse(_download(url, timeout), f"url:{url}", verify_checksum=verify_checksum)
    if source == "package" or (source == "auto" and path is None):
        p, kind = packaged_path(), "package"
    else:
        p, kind = Path(path).expanduser(), "file"
    if not p.is_file():
        raise DataUnavailableError(
            f"yacht data: no file at {p}; ways to provide it: (1) data_source=package (the copy "
            f"shipped with pes); (2) data_path=<local copy of {FILE_NAME}>; (3) data_source=url "
            f"(downloads {URL})"
        )
    return parse(p.read_bytes(), f"{kind}:{p}", verify_checksum=verify_checksum)


def permutation(num_rows: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """The row order of the split: NumPy's legacy generator seeded with ``seed``."""
    return np.random.RandomState(seed).permutation(num_rows)


def split(table: Table, *, seed: int = SPLIT_SEED, train_fraction: float = TRAIN_FRACTION) -> YachtData:
    """Standardise with all rows' mean/std, then split train/validation by a seeded permutation."""
    values = table.values
    mean, std = values.mean(axis=0), values.std(axis=0)
    if np.any(std == 0):
        col = int(np.flatnonzero(std == 0)[0]) + 1
        raise YachtFileError(f"yacht file {table.origin}: column {col} is constant; {_fix(table.origin)}")
    z = (values - mean) / std
    n = len(z)
    order = permutation(n, seed)
    cut = int(round(n * train_fraction))
    if not 0 < cut < n:
        raise ValueError(f"train_fraction={train_fraction} leaves an empty split of {n} rows")
    train, val = z[order[:cut]], z[order[cut:]]
    return YachtData(train[:, :-1], train[:, -1], val[:, :-1], val[:, -1], mean, std, table.origin, table.md5)


def load(
    source: str = "auto",
    *,
    path: str | Path | None = None,
    url: str = URL,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    verify_checksum: bool = True,
) -> YachtData:
    """`read` then `split`: the standardised 246/62 train/validation split."""
    return split(read(source, path=path, url=url, timeout=timeout, verify_checksum=verify_checksum))


__all__ = [
    "Table",
    "YachtData",
    "YachtFileError",
    "load",
    "normalized_md5",
    "packaged_path",
    "parse",
    "permutation",
    "read",
    "split",
]
