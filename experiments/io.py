"""File I/O for runs: atomic writes, verifiable CSV logs, checkpoints, run metadata, folder locks.

Every problem with a file is raised as `FileProblem`, one line naming the path, what is
wrong and how to fix it.  New files get the user's umask (like any file the user creates).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import time
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from experiments import compilation_cache
from experiments.cli import Problem, one_line
from pes import results

PACKAGES = ("jax", "jaxlib", "flax", "optax", "hydra-core", "omegaconf", "numpy", "pandas", "pes-repro")
LOCK = ".lock"


class FileProblem(Problem):
    """A file or folder is unusable; the message (one line) names it, the problem and the fix."""


def _reason(err: OSError) -> str:
    return err.strerror or one_line(err) or type(err).__name__


# ----------------------------------------------------------------------------- atomic writes


def naming(err: OSError, path: Path, need: int | None = None) -> OSError:
    """``err`` with ``path`` as its file name (a failed ``write`` names none), and the bytes it
    still had to write (``needed_bytes``), for a one-line message (`cli.file_problem`)."""
    if err.filename is None or need is not None:
        named = type(err)(err.errno, err.strerror or str(err), str(err.filename or path))
        named.needed_bytes = need
        return named
    return err


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix.

    The temporary file is created with mode 0666 minus the umask (`tempfile.mkstemp` would
    make it 0600), so the final file has the permissions of any file the user creates.
    An OSError names ``path`` (not the temporary file) and the bytes it needed.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as err:
        raise naming(err, path, len(data) if err.errno in (errno.ENOSPC, errno.EDQUOT) else None) from err


def overwrite_in_place(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path``'s own bytes (no new file): the last resort for a small
    record when the disk is full, since it needs no new space when ``data`` is not longer."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def expect_files(folder: Path, names) -> None:
    """`FileProblem` when one of ``names`` in ``folder`` is there but is not a file (a folder
    where a results file belongs): said before any compute, not after."""
    for name in names:
        path = Path(folder) / name
        if path.exists() and not path.is_file():
            raise FileProblem(
                f"{path} is a folder where a file belongs; fix: move that folder away, then rerun"
            )


def read_bytes(path: Path, *, fix: str = "rebuild it") -> bytes:
    """A file's bytes; `FileProblem` naming it when it is missing, a folder or unreadable."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError as err:
        raise FileProblem(f"{path} is missing; fix: {fix}") from err
    except IsADirectoryError as err:
        raise FileProblem(
            f"{path} is a folder where a file belongs; fix: move that folder away, then {fix}"
        ) from err
    except OSError as err:
        raise FileProblem(f"{path} cannot be read ({_reason(err)}); fix: {fix}") from err


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporaries of atomic writes that a killed process left (call while holding the lock)."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src``: a hard link (no copy; an atomic replace of
    ``src`` later leaves ``dst`` as it was), or a copy where links are not supported.
    ``dst`` appears complete or not at all."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        try:
            os.link(src, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def move_aside(folder: Path) -> Path:
    """Rename ``folder`` to ``<folder>.old-<time>`` (never overwriting) and return the new path."""
    folder = Path(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{folder.name}.old-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.old-{stamp}-{n}")
    os.rename(folder, target)
    return target


# ----------------------------------------------------------------------------- folder locks


class Busy(Problem):
    """Another process holds the lock of a run folder; ``holder`` says which."""

    def __init__(self, folder: Path, holder: str):
        super().__init__(f"{folder} is in use by {holder}; wait for it to finish or stop it, then rerun")
        self.holder = holder


def _holder_text(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process"
    return f"PID {info['pid']} on {info.get('host', '?')} (since {info.get('since', '?')})"


class FolderLock:
    """An exclusive OS lock (``flock``) on ``<folder>/.lock``, held until `release` or exit.

    The kernel drops the lock when its holder dies, even by SIGKILL, so a lock left by a
    dead process is simply taken over; the file itself stays (deleting lock files races).
    The holder writes its PID, host and start time into the file for others' messages.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise FileProblem(
                f"cannot create the lock file {self.path}: {_reason(err)}; "
                "fix: make the folder writable or choose another results_root"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _holder_text(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise Busy(self.folder, holder) from err
            raise FileProblem(
                f"cannot lock {self.path}: {_reason(err)} (the file system may not support locks); "
                "fix: choose a results_root on a local or NFSv4 file system"
            ) from err
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(folder: Path) -> str | None:
    """Who holds ``folder``'s lock (text for messages), or None when nobody does."""
    try:
        with FolderLock(folder):
            return None
    except Busy as err:
        return err.holder
    except FileProblem:
        return None


# ----------------------------------------------------------------------------- CSV logs


def csv_text(records: list[dict], header: bool) -> str:
    buf = io.StringIO()
    results.frame(records).to_csv(buf, index=False, header=header)
    return buf.getvalue()


def append_rows(path: Path, records: list[dict]) -> None:
    """Append complete rows with a single write (header first if the file is new)."""
    if records:
        path = Path(path)
        _append(path, csv_text(records, header=not path.exists() or path.stat().st_size == 0).encode())


def _append(path: Path, data: bytes) -> None:
    try:
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise naming(err, path) from err


class CsvLog:
    """An append-only results CSV whose size, row count and SHA-256 are tracked as it grows.

    `record` is what a checkpoint stores; `resume` checks that the file still starts with
    exactly those bytes (cutting anything written after them) and continues from there.
    """

    def __init__(self, path: Path, rows: int = 0, size: int = 0, digest=None):
        self.path = Path(path)
        self.rows = rows
        self.size = size
        self._hash = digest if digest is not None else hashlib.sha256()

    @classmethod
    def create(cls, path: Path) -> CsvLog:
        atomic_write_bytes(path, b"")
        return cls(path)

    @classmethod
    def resume(cls, path: Path, record: dict) -> CsvLog:
        """The log continued after ``record``; raises `ValueError` saying how the file differs."""
        path, rows, size, digest = cls._verified(path, record)
        if path.stat().st_size > size:
            os.truncate(path, size)  # rows logged after the checkpoint (or a write cut short)
        return cls(path, rows, size, digest)

    @classmethod
    def matches(cls, path: Path, record: dict) -> bool:
        """Whether the file starts with the rows ``record`` describes (the file is not changed)."""
        try:
            cls._verified(path, record)
        except ValueError:
            return False
        return True

    @staticmethod
    def _verified(path: Path, record: dict):
        path = Path(path)
        rows, size, want = int(record["csv_rows"]), int(record["csv_bytes"]), str(record["csv_sha256"])
        if not path.exists():
            raise ValueError(f"{path} is missing (the checkpoint recorded {rows} rows)")
        with open(path, "rb") as f:
            data = f.read(size)
        if len(data) < size:
            have = max(data.count(b"\n") - 1, 0)
            raise ValueError(f"{path} holds {have} complete rows where the checkpoint recorded {rows}")
        digest = hashlib.sha256(data)
        if digest.hexdigest() != want:
            raise ValueError(f"the first {rows} rows of {path} differ from those the checkpoint recorded")
        return path, rows, size, digest

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        data = csv_text(records, header=self.size == 0).encode()
        _append(self.path, data)
        self._hash.update(data)
        self.size += len(data)
        self.rows += len(records)

    def record(self) -> dict:
        return {"csv_rows": self.rows, "csv_bytes": self.size, "csv_sha256": self._hash.hexdigest()}


INT_COLUMNS = ("trunc_len", "num_particles", "seed", "outer_step", "inner_steps")


def _first_bad_cell(df: pd.DataFrame) -> tuple[int, str] | None:
    """(line, problem) of the first empty integer cell or non-numeric numeric cell, if any."""
    found = None
    for col in (*INT_COLUMNS, "sigma", "value"):
        if col not in df.columns:
            continue
        raw = df[col]
        numeric = pd.to_numeric(raw, errors="coerce")
        bad = (numeric.isna() & raw.notna()) | (raw.isna() if col in INT_COLUMNS else False)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            problem = f"{col} is empty" if pd.isna(raw.iloc[i]) else f"{col}={raw.iloc[i]!r} is not a number"
            if found is None or i + 2 < found[0]:
                found = (i + 2, problem)  # line 1 is the header
    return found


def read_csv(path: Path, *, fix: str = "rebuild it", any_nonfinite: bool = False,
             **validate_kwargs) -> pd.DataFrame:
    """Read and validate a results CSV; problems name the file (and line) and ``fix``.

    ``any_nonfinite``: NaN is allowed in every metric (a diverged run's last rows).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError as err:
        raise FileProblem(f"{path} is missing; fix: {fix}") from err
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise FileProblem(f"{path} cannot be parsed ({one_line(err)}); fix: {fix}") from err
    if any_nonfinite and "metric" in df.columns:
        validate_kwargs["allow_nonfinite"] = list(df["metric"].astype(str).unique())
    try:
        return results.validate(df, **validate_kwargs)
    except results.SchemaError as err:
        bad = _first_bad_cell(pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""]))
        if bad is not None:
            raise FileProblem(f"{path}, line {bad[0]}: {bad[1]}; fix: {fix}") from err
        raise FileProblem(f"{path}: {err}; fix: {fix}") from err


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


def load_checkpoint(path: Path, template: Any, *, fix: str = "delete it") -> tuple[Any, dict]:
    """Load a checkpoint into the structure of ``template``; returns (state, meta).

    An unreadable file or one of another structure raises `FileProblem` naming ``fix``.
    """
    leaves, treedef = jax.tree.flatten(template)
    try:
        with np.load(path) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            if len(leaves) != len(meta["is_key"]):
                raise ValueError("it does not match this run's state structure")
            out = []
            for i, (leaf, is_key) in enumerate(zip(leaves, meta["is_key"])):
                arr = data[f"leaf{i}"]
                if is_key:
                    out.append(jax.random.wrap_key_data(arr))
                elif arr.shape != np.shape(leaf):
                    raise ValueError(f"array {i} has shape {arr.shape}, this run's has {np.shape(leaf)}")
                else:
                    out.append(jax.numpy.asarray(arr, dtype=leaf.dtype))
    except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as err:
        raise FileProblem(f"checkpoint {path} is unreadable ({one_line(err)}); fix: {fix}") from err
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
        "compilation_cache": compilation_cache.folder(),
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_json_anyhow(path: Path, data: dict) -> bool:
    """`write_json`, and when that fails (a full disk), the same record without indentation
    over the file's own bytes (`overwrite_in_place`): a status must not stay ``running``
    because the disk is full.  True when one of the two worked."""
    try:
        write_json(path, data)
        return True
    except OSError:
        pass
    try:
        overwrite_in_place(Path(path), (json.dumps(data, sort_keys=True, default=str) + "\n").encode())
        return True
    except OSError:
        return False


def read_json(path: Path, *, fix: str = "delete it") -> dict | None:
    """The JSON object in ``path``, None if there is no file; `FileProblem` if it is unreadable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise FileProblem(f"{path} is unreadable ({one_line(err)}); fix: {fix}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise FileProblem(f"{path}, line {err.lineno}: invalid JSON ({err.msg}); fix: {fix}") from err
    if not isinstance(data, dict):
        raise FileProblem(f"{path} holds a JSON {type(data).__name__}, not an object; fix: {fix}")
    return data
