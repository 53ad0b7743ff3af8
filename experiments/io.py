"""File I/O for runs: atomic writes, appendable CSV logs, checkpoints, run metadata."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from pes import results

PACKAGES = ("jax", "jaxlib", "flax", "optax", "hydra-core", "omegaconf", "numpy", "pandas", "pes-repro")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def csv_text(records: list[dict], header: bool) -> str:
    buf = io.StringIO()
    results.frame(records).to_csv(buf, index=False, header=header)
    return buf.getvalue()


def append_rows(path: Path, records: list[dict]) -> None:
    """Append complete rows with a single write (header first if the file is new)."""
    if not records:
        return
    path = Path(path)
    text = csv_text(records, header=not path.exists() or path.stat().st_size == 0)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def truncate_rows(path: Path, max_outer_step: int) -> None:
    """Keep only complete rows with ``outer_step <= max_outer_step`` (atomic rewrite)."""
    path = Path(path)
    if not path.exists():
        return
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # drop a partial last line
    reader = csv.DictReader(io.StringIO(text))
    kept = [row for row in reader if int(row["outer_step"]) <= max_outer_step]
    atomic_write_text(path, csv_text(kept, header=True) if kept else "")


def read_csv(path: Path, **validate_kwargs) -> pd.DataFrame:
    """Read and validate a results CSV."""
    return results.validate(pd.read_csv(path), **validate_kwargs)


# ----------------------------------------------------------------------------- checkpoints


def _to_numpy(leaf) -> tuple[np.ndarray, bool]:
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(leaf)), True
    return np.asarray(leaf), False


def save_checkpoint(path: Path, state: Any, meta: dict) -> None:
    """Save a pytree of arrays (typed PRNG keys included) atomically."""
    leaves = jax.tree.leaves(state)
    arrays = {}
    is_key = []
    for i, leaf in enumerate(leaves):
        arrays[f"leaf{i}"], k = _to_numpy(leaf)
        is_key.append(k)
    arrays["__meta__"] = np.frombuffer(json.dumps(dict(meta, is_key=is_key)).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, template: Any) -> tuple[Any, dict]:
    """Load a checkpoint into the structure of ``template``; returns (state, meta)."""
    with np.load(path) as data:
        meta = json.loads(bytes(data["__meta__"]).decode())
        leaves, treedef = jax.tree.flatten(template)
        if len(leaves) != len(meta["is_key"]):
            raise ValueError(f"checkpoint {path} does not match this run's state structure")
        out = []
        for i, (leaf, is_key) in enumerate(zip(leaves, meta["is_key"])):
            arr = data[f"leaf{i}"]
            if is_key:
                out.append(jax.random.wrap_key_data(arr))
            else:
                out.append(jax.numpy.asarray(arr, dtype=leaf.dtype))
    return jax.tree.unflatten(treedef, out), meta


# ----------------------------------------------------------------------------- metadata


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# CPU features that change XLA:CPU's code (vector width, FMA) and so the last bits of results
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


def cpu_info() -> dict:
    """CPU model and the ISA flags in `ISA_FLAGS` (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(
        line.split(":", 1) for line in text.splitlines()[:60] if ":" in line
    )
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {
        "cpu_model": fields.get("model name", ""),
        "cpu_family": fields.get("cpu family", ""),
        "cpu_isa": [f for f in ISA_FLAGS if f in flags],
    }


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        **cpu_info(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text())
