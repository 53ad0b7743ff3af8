"""One fingerprint function, one provenance record and one artefact cache for the suite.

* `fingerprint(data)`: 12 hex digits identifying plain data (a resolved config, a step's
  settings and inputs); runs, post-steps and the variance study's scenarios all use it.
* `provenance()`: where and with what something was computed (git commit, packages,
  machine); every ``run.json``, step record and ``figure.json`` starts from it.
* `lookup` / `store`: a computed artefact is a set of files plus a JSON record
  ``{fingerprint, status, files, digests, wall_time_s, ...}`` (files relative to a base
  folder, the figure's; `digest` of each); `lookup` returns the record when the
  fingerprint matches, the computation finished and every file is still there with its
  digest, so the caller reuses the files instead of computing again.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from experiments import io

ROOT = Path(__file__).resolve().parent.parent


def plain(data: Any) -> Any:
    """``data`` as JSON-like Python values (numpy scalars and arrays, tuples and paths converted)."""
    if isinstance(data, Mapping):
        return {str(k): plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [plain(v) for v in data]
    if isinstance(data, np.ndarray):
        return plain(data.tolist())
    if isinstance(data, np.generic):
        return data.item()
    if isinstance(data, Path):
        return str(data)
    return data


def fingerprint(data: Any) -> str:
    """12 hex digits of the SHA-256 of ``data``'s YAML form (sorted keys)."""
    text = OmegaConf.to_yaml(OmegaConf.create(plain(data)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def file_digest(path: Path) -> str:
    """12 hex digits of the SHA-256 of a file's bytes (e.g. a run's checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def digest(data: bytes) -> dict:
    """``{rows, bytes, sha256}`` of a CSV text (rows: the lines after the header): what a
    record says of a table it wrote, so that a later reader can tell it is the same."""
    return {
        "rows": max(data.count(b"\n") - 1, 0),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def provenance() -> dict:
    """Git commit, package versions and machine: the common head of every record."""
    return {"git_commit": io.git_commit(ROOT), "packages": io.package_versions(), "machine": io.machine()}


def lookup(record: Path, fp: str, base: Path, log=None) -> dict | None:
    """The record at ``record`` if it is complete with fingerprint ``fp`` and its files (paths
    relative to ``base``) exist with the digests it recorded (a changed file is not reused:
    ``log`` is told which, and the caller computes it again)."""
    meta = io.read_json(record)
    if not meta or meta.get("fingerprint") != fp or meta.get("status") != "complete":
        return None
    files = [Path(base) / name for name in meta.get("files", [])]
    if not all(path.is_file() for path in files):
        return None
    digests = meta.get("digests") or {}
    for name, path in zip(meta.get("files", []), files):
        if name in digests and digest(path.read_bytes()) != digests[name]:
            if log is not None:
                log(f"note: {path} changed after it was written; computing it again")
            return None
    return meta


def store(record: Path, fp: str, files: Iterable[Path], base: Path, wall_time_s: float, **info) -> dict:
    """Write the record of a finished computation whose outputs are ``files`` (under ``base``)."""
    meta = {
        **provenance(),
        "fingerprint": fp,
        "status": "complete",
        "files": sorted(Path(f).relative_to(base).as_posix() for f in files),
        "digests": {Path(f).relative_to(base).as_posix(): digest(Path(f).read_bytes()) for f in files},
        "wall_time_s": wall_time_s,
        "finished": now(),
        **plain(info),
    }
    io.write_json(record, meta)
    return meta
