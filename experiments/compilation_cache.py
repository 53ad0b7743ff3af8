"""JAX's persistent compilation cache for the suite's commands.

Every run of a figure builds its estimator and task afresh, so JAX compiles the same
programs again for each run (and again in the next command): on the 2-core development
machine about 25 s per learned-optimizer run of figure 7.  JAX's persistent compilation
cache keeps each compiled program on disk under a key made of the program, the compiler
options, the XLA flags, the device and the JAX version; a later compilation of the same
program loads it instead.  A loaded program is the program the compiler would produce, so
results do not change (the suite's tests compare runs with and without the cache byte for
byte).

Where it lives (read once per process, before the first compilation):

* ``PES_COMPILATION_CACHE`` unset: ``$XDG_CACHE_HOME/pes-repro/jax`` (``~/.cache/pes-repro/jax``);
* ``PES_COMPILATION_CACHE=<folder>``: that folder;
* ``PES_COMPILATION_CACHE=off``: no cache;
* JAX's own ``JAX_COMPILATION_CACHE_DIR`` (or ``jax_compilation_cache_dir``), when set, wins.

Every compiled program is kept (JAX's ``jax_persistent_cache_min_compile_time_secs`` is set to 0
unless ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise).

The folder may be deleted at any time (it only costs compile time).  An entry JAX cannot
read (a process killed while writing it) is reported by JAX as a warning and compiled
again.  The folder in use is recorded with every run (``machine.compilation_cache`` in
``run.json`` and ``figure.json``), since wall times depend on it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax

ENV = "PES_COMPILATION_CACHE"
OFF = ("off", "0", "false", "no", "none", "")

_state: dict[str, str] = {}


def default_folder() -> Path:
    """``$XDG_CACHE_HOME/pes-repro/jax``, or ``~/.cache/pes-repro/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pes-repro" / "jax"


def requested_folder() -> Path | None:
    """The folder ``PES_COMPILATION_CACHE`` asks for (None: off)."""
    value = os.environ.get(ENV)
    if value is None:
        return default_folder()
    if value.strip().lower() in OFF:
        return None
    return Path(value).expanduser()


def enable() -> str:
    """Switch the cache on as the environment says, once per process; returns `folder()`."""
    if "folder" in _state:
        return _state["folder"]
    own = jax.config.jax_compilation_cache_dir  # JAX_COMPILATION_CACHE_DIR, or set by the caller
    if own:
        _state["folder"] = str(own)
        return _state["folder"]
    wanted = requested_folder()
    if wanted is None:
        _state["folder"] = "off"
        return "off"
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        if not os.access(wanted, os.W_OK):
            raise PermissionError(f"{wanted} is not writable")
    except OSError as err:
        print(
            f"warning: compilation cache off: cannot use {wanted} ({err}); "
            f"set {ENV} to a writable folder, or {ENV}=off",
            file=sys.stderr,
        )
        _state["folder"] = "off"
        return "off"
    jax.config.update("jax_compilation_cache_dir", str(wanted))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        # JAX keeps only programs that took >= 1 s to compile; the suite's many small ones
        # add up (a figure-7 run: 7 entries and 65 s warm at the default, 117 entries and
        # 55 s at 0, same 34 MB; 113 s cold; 2 loaded cores).
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    _state["folder"] = str(wanted)
    return _state["folder"]


def folder() -> str:
    """The cache folder this process uses, ``off``, or ``not set up`` before `enable`."""
    if "folder" in _state:
        return _state["folder"]
    return str(jax.config.jax_compilation_cache_dir or "not set up")
