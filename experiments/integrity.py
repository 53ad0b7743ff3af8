"""Verified results: the digests of the tables a verdict is read from, and strict reading of them.

A table's **digest** is ``{rows, bytes, sha256}`` of its CSV text (of the text inside a
gzipped table): the number of lines after the header, the size in bytes and the SHA-256.
A figure folder's ``figure.json`` holds

* ``digests``: ``{file name: digest}`` of the tables `experiments.check` reads (``metrics.csv``,
  ``grid.csv``, gzipped or not) and of the post-steps' tables, recorded when they are written
  (`experiments.reproduce`; `experiments.docs` for the reference store);
* ``runs.<run id>.csv``: the digest of each run's ``metrics.csv`` as the merged table was
  built from it (`experiments.reproduce`).
* ``migrated`` (stored tables written before the current columns): what `experiments.migrate`
  changed, with the old columns, the rule or evidence for the added ``source`` and the old digest.

`verify` (called by `experiments.check` before any claim is measured) checks every table the
check reads against its digest, and every run CSV that is still there against the digest it
was merged with; `read_table` then parses every number strictly.  A problem is `Damaged`
(exit code 4, not 1: nothing was measured): one line naming the file, what is wrong with it
and how to rebuild or restore it (`rebuild_hint`).
"""

from __future__ import annotations

import csv
import gzip
import io as _io
import json
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from experiments import artefacts, config, io
from experiments.cli import Problem, one_line

EXIT_DAMAGED = 4
RECORD = "figure.json"
DIGESTS = "digests"
DIGEST_KEYS = ("rows", "bytes", "sha256")
STORE = config.ROOT / "results" / "reference"

# The numbers of a results table, as pandas writes them (NaN as an empty cell).
_FLOAT = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf"
NUMBER = re.compile(_FLOAT)
NUMBER_OR_EMPTY = re.compile(f"{_FLOAT}|")
INTEGER = re.compile(r"[+-]?\d+")
METRICS_NUMBERS = {
    "trunc_len": INTEGER,
    "num_particles": INTEGER,
    "seed": INTEGER,
    "outer_step": INTEGER,
    "inner_steps": INTEGER,
    "sigma": NUMBER_OR_EMPTY,
    "value": NUMBER_OR_EMPTY,
}
_KIND = {INTEGER.pattern: "an integer", NUMBER.pattern: "a number", NUMBER_OR_EMPTY.pattern: "a number"}


class Damaged(Problem):
    """Results that are present but damaged or cannot be verified; nothing was measured."""

    exit_code = EXIT_DAMAGED


# ----------------------------------------------------------------------------- digests


digest = artefacts.digest  # {rows, bytes, sha256} of a CSV text


def table_bytes(path: Path, fix: str) -> bytes:
    """The CSV text of a table file (of a ``.gz`` file: the text inside), or `Damaged`."""
    path = Path(path)
    if path.is_dir():
        raise Damaged(
            f"{path} is a folder where a table file belongs; fix: move that folder away, then {fix}"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise Damaged(f"{path} is missing; fix: {fix}") from err
    except OSError as err:
        raise Damaged(f"{path} cannot be read ({err.strerror or one_line(err)}); fix: {fix}") from err
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise Damaged(f"{path} is not a complete gzip file ({one_line(err)}); fix: {fix}") from err
    return data


def file_digest(path: Path) -> dict:
    """The digest of a table file (`digest` of its CSV text)."""
    return digest(table_bytes(path, "rewrite it"))


def difference(have: Mapping, want: Mapping) -> str:
    """How a table differs from its recorded digest, in words."""
    now = (
        f"now {have['rows']} rows, {have['bytes']} bytes; recorded {want['rows']} rows, {want['bytes']} bytes"
    )
    if have["bytes"] < want["bytes"]:
        return f"it is shorter than when it was written ({now}): cut short or rows removed"
    if have["bytes"] > want["bytes"]:
        return f"it is longer than when it was written ({now}): rows added or values changed"
    return f"its content changed after it was written (same size, {have['rows']} rows, another SHA-256)"


def _well_formed(want) -> bool:
    return (
        isinstance(want, Mapping)
        and all(k in want for k in DIGEST_KEYS)
        and isinstance(want["rows"], int)
        and isinstance(want["bytes"], int)
        and isinstance(want["sha256"], str)
    )


def check(path: Path, data: bytes, want, record: Path, fix: str, *, what: str = "") -> None:
    """`Damaged` unless ``data`` (the text of ``path``) has the digest ``want``."""
    if not _well_formed(want):
        raise Damaged(f"{record}: the digest of {path.name} is malformed; fix: {fix}")
    have = digest(data)
    if have != {k: want[k] for k in DIGEST_KEYS}:
        raise Damaged(
            f"{path} does not match {what or 'its digest in ' + str(record)}: "
            f"{difference(have, want)}; fix: {fix}"
        )


# ----------------------------------------------------------------------------- figure records


def read_record(path: Path, fix: str) -> dict | None:
    """A figure folder's ``figure.json`` (None when there is none), or `Damaged`."""
    path = Path(path)
    if path.is_dir():
        raise Damaged(f"{path} is a folder where a file belongs; fix: move that folder away, then {fix}")
    try:
        return io.read_json(path, fix=fix)
    except io.FileProblem as err:
        raise Damaged(str(err)) from err


def run_csv(fig_dir: Path, run_id: str, info: Mapping, record: Path, fix: str) -> Path:
    """The CSV of run ``run_id`` recorded in ``figure.json``: ``<fig_dir>/runs/<run id>/metrics.csv``
    (a recorded folder outside ``runs/`` is refused, never read)."""
    rel = str(info.get("dir", f"runs/{run_id}"))
    parts = PurePosixPath(rel).parts
    try:
        ok = len(parts) == 2 and parts[0] == "runs" and config.check_name(parts[1], "dir") == parts[1]
    except config.ConfigError:
        ok = False
    if not ok:
        raise Damaged(f"{record}: runs.{run_id}.dir is not a run folder of this figure; fix: {fix}")
    return Path(fig_dir) / parts[0] / parts[1] / "metrics.csv"


def verify(
    fig_dir: Path, tables: Sequence[Path | None], names: Iterable[str], fix: str
) -> tuple[dict | None, dict[Path, bytes]]:
    """Verify the tables a check reads before anything is measured.

    ``tables``: the files the check reads (None: absent); ``names``: every table name it
    could read (one recorded in ``figure.json`` but absent is damage too).  Returns the record
    and each table's verified text.  Raises `Damaged`: a table without a record or a recorded
    digest (not verifiable), one that differs from its digest, a recorded table that is
    missing, or a run CSV that differs from the one the merged table was built from.
    """
    fig_dir = Path(fig_dir)
    record_path = fig_dir / RECORD
    record = read_record(record_path, fix)
    tables = [Path(t) for t in tables if t is not None]
    texts: dict[Path, bytes] = {}
    if not tables:
        return record, texts
    if record is None:
        raise Damaged(f"{tables[0]} cannot be verified: there is no {record_path}; fix: {fix}")
    digests = record.get(DIGESTS)
    if not isinstance(digests, Mapping):
        raise Damaged(
            f"{tables[0]} cannot be verified: {record_path} records no digests (results written "
            f"before digests were recorded); fix: {fix}"
        )
    for name in names:
        if name in digests and not (fig_dir / name).exists():
            raise Damaged(f"{fig_dir / name} is missing ({record_path} records it); fix: {fix}")
    for path in tables:
        if path.name not in digests:
            raise Damaged(f"{path} cannot be verified: {record_path} records no digest of it; fix: {fix}")
        texts[path] = table_bytes(path, fix)
        check(path, texts[path], digests[path.name], record_path, fix)
    runs = record.get("runs")
    for run_id, info in runs.items() if isinstance(runs, Mapping) else ():
        if not isinstance(info, Mapping) or "csv" not in info:
            continue
        path = run_csv(fig_dir, str(run_id), info, record_path, fix)
        if path.exists() or path.is_symlink():
            what = f"the run CSV the merged table {tables[0].name} was built from (digest in {record_path})"
            check(path, table_bytes(path, fix), info["csv"], record_path, fix, what=what)
    return record, texts


def record_digests(fig_dir: Path, names: Iterable[str] | None = None, *, ensure_ascii: bool = True) -> dict:
    """Record in ``<fig_dir>/figure.json`` the digests of its tables as they are now (every
    ``*.csv`` and ``*.csv.gz`` of the folder, or ``names``); returns the record.  For results
    written by hand or before digests were recorded: what it records is trusted from then on."""
    fig_dir = Path(fig_dir)
    record = read_record(fig_dir / RECORD, "delete it") or {}
    if names is None:
        names = sorted(
            p.name for p in fig_dir.iterdir() if p.is_file() and p.name.endswith((".csv", ".csv.gz"))
        )
    record[DIGESTS] = {name: file_digest(fig_dir / name) for name in names}
    text = json.dumps(record, indent=2, sort_keys=True, default=str, ensure_ascii=ensure_ascii) + "\n"
    (fig_dir / RECORD).write_text(text, encoding="utf-8")
    return record


def rebuild_hint(fig_dir: Path) -> str:
    """How to get a verified copy of a figure folder's results back, for a ``fix:``."""
    fig_dir = Path(fig_dir)
    root, profile, figure = fig_dir.parent.parent, fig_dir.parent.name, fig_dir.name
    number = figure.removeprefix("figure")
    known = (config.CONFIG_DIR / "figure" / f"{figure}.yaml").is_file()
    if root.resolve() == STORE.resolve():
        try:
            where = fig_dir.resolve().relative_to(config.ROOT.resolve())
        except ValueError:
            where = fig_dir
        again = f" or store it again (make store-figure-{number} PROFILE={profile})" if known else ""
        return f"restore the committed files with `git checkout -- {where}`{again}"
    if known:
        results = (
            "" if root.resolve() == (config.ROOT / "results").resolve() else f" RESULTS={root.resolve()}"
        )
        command = f"make reproduce-figure-{number} PROFILE={profile}{results}"
    else:
        command = f"python -m experiments.reproduce figure=<its YAML> profile={profile} results_root={root}"
    return f"rebuild it with `{command}` (runs whose CSVs verify are reused, not recomputed)"


# ----------------------------------------------------------------------------- strict reading


def read_table(
    path: Path,
    data: bytes,
    required: Sequence[str],
    numbers: Mapping[str, re.Pattern] | None = None,
    *,
    fix: str,
    prefixed: tuple[str, re.Pattern] | None = None,
) -> pd.DataFrame:
    """Parse a verified table strictly: every line has the header's fields, the text ends with
    a complete line, and every cell of a number column is a number as pandas writes them
    (an empty cell, NaN, only where ``numbers`` allows it).  ``prefixed``: (prefix, pattern)
    for the columns whose names start with the prefix (e.g. a grid's ``theta/<i>``).  A bad cell is `Damaged`
    naming the file, the line and the column; missing columns are a `config.ConfigError`."""
    path = Path(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise Damaged(f"{path}, line {line}: not UTF-8 text; fix: {fix}") from err
    if text and not text.endswith("\n"):
        raise Damaged(
            f"{path}, line {text.count(chr(10)) + 1}: the file ends inside a line (cut short); fix: {fix}"
        )
    reader = csv.reader(_io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise Damaged(f"{path} is empty; fix: {fix}")
    missing = [c for c in required if c not in header]
    if missing:
        raise config.ConfigError(
            f"{path}: columns {missing} are missing (have {header}); "
            "fix: rerun the figure, or see pes/results.py for the schema"
        )
    rows, lines = [], []
    for row in reader:
        if len(row) != len(header):
            raise Damaged(
                f"{path}, line {reader.line_num}: {len(row)} fields where the header has "
                f"{len(header)}; fix: {fix}"
            )
        rows.append(row)
        lines.append(reader.line_num)
    raw = (
        pd.DataFrame(rows, columns=header, dtype=object)
        if rows
        else pd.DataFrame(columns=header, dtype=object)
    )
    patterns = dict(numbers or {})
    if prefixed is not None:
        patterns.update({c: prefixed[1] for c in header if c.startswith(prefixed[0])})
    return _parse_numbers(raw, patterns, lines, path, fix)


def _parse_numbers(
    raw: pd.DataFrame, patterns: Mapping[str, re.Pattern], lines: list[int], path: Path, fix: str
) -> pd.DataFrame:
    """``raw`` (text cells) with each column of ``patterns`` checked against its pattern and
    converted (int64 or float; an empty cell is NaN); a bad cell is `Damaged` naming its line."""
    df = raw.copy()
    for col, pattern in patterns.items():
        if col not in raw.columns:
            continue
        cells = raw[col].astype(str)
        ok = cells.str.fullmatch(pattern.pattern).to_numpy(dtype=bool)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            cell = cells.iloc[i]
            what = f"{col} is empty" if cell == "" else f"{col}={cell!r} is not {_KIND[pattern.pattern]}"
            raise Damaged(f"{path}, line {lines[i]}: {what}; fix: {fix}")
        if pattern is INTEGER:
            df[col] = cells.astype(np.int64)
        else:
            df[col] = cells.replace("", "nan").astype(float)
    return df
