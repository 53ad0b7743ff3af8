"""What the command-line entry points share: one line per problem, exit codes, interrupts.

`main(body)` runs ``body`` so that a user never sees a traceback for a problem they can
fix: every `Problem` (bad config, busy or damaged run folder, failed run) is printed as
one line ``error: ...`` and exits with the problem's code; Ctrl-C (SIGINT) and SIGTERM
(what cluster schedulers send before SIGKILL) print one line saying what was kept and
how to resume, and exit 130 / 143 -- also when the interrupt broke a library on its way
out (an exception raised after the signal is reported as the interrupt).  A second
signal leaves at once (run.json then still says ``running``, which the next start
recognises as a killed run).

This module imports only the standard library, so that an interrupt during the (slow)
import of JAX is handled too: entry points import their heavy modules inside
``with clean_imports(__name__ == "__main__"):``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import NoReturn

EXIT_FAILED = 1
EXIT_CONFIG = 2
INTERRUPT_HINT = "rerun the same command to resume"


class Problem(Exception):
    """A problem the user can fix, described in one line; ``exit_code`` is the CLI's status."""

    exit_code = EXIT_FAILED


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM reached a run; the message says what was kept and how to resume."""


_signals: list[int] = []  # the signals received by this process
_deferring: list[bool] = []  # non-empty while interrupts wait (`clean_imports`)
_FORCED = (
    b"interrupted: stopped at once (second signal); rows up to the last checkpoint are kept; "
    b"rerun the same command to resume\n"
)


def _on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    """SIGINT/SIGTERM: raise KeyboardInterrupt (or remember it while deferring); a second one
    leaves at once."""
    _signals.append(signum)
    if len(_signals) > 1:
        os.write(2, _FORCED)  # not print(): the interrupted code may be inside a write to stderr
        os._exit(128 + _signals[0])
    if not _deferring:
        raise KeyboardInterrupt


def _exit_now(code: int) -> NoReturn:
    """Flush stdout/stderr and leave without interpreter teardown.

    After an interrupt, a compiled chunk may still be running on XLA's threads; tearing
    down the runtime under it crashed in native code after every Python frame had finished
    (faulthandler: "Segmentation fault", main thread, "<no Python frame>"; 5 of 116 Ctrl-Cs
    of `experiments.reproduce` before this module existed).  Every file the runner writes is fsynced and
    closed by then, so skipping teardown loses nothing.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def fail(err: Problem) -> NoReturn:
    """Print ``err`` as one line and exit with its code (also from inside Hydra's main,
    which would print a traceback for any other exception)."""
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(err.exit_code)


_in_unraisable_hook: list[bool] = []  # non-empty while `_on_unraisable` runs


def _redeliver(signum: int) -> None:
    # The signal must land after the hook has returned: a handler that raises inside the
    # hook is itself swallowed ("Exception ignored in sys.unraisablehook").
    while _in_unraisable_hook:
        time.sleep(0.001)
    time.sleep(0.001)
    os.kill(os.getpid(), signum)


def _on_unraisable(unraisable) -> None:
    """An interrupt raised while a finaliser ran (``__del__``, a weakref callback) is
    swallowed by Python ("Exception ignored in ...", with a traceback) and the program goes
    on as if no signal had come.  Take such an interrupt back, silently, and deliver the
    same signal again from a helper thread, so that it lands in ordinary code."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt) and _signals:
        signum = _signals.pop()
        _in_unraisable_hook.append(True)
        try:
            threading.Thread(target=_redeliver, args=(signum,), daemon=True).start()
        finally:
            _in_unraisable_hook.clear()
        return
    _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook


def _install() -> None:
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    sys.unraisablehook = _on_unraisable


def _interrupted_line(err: BaseException | None) -> NoReturn:
    msg = str(err) if isinstance(err, Interrupted) else f"nothing was lost; {INTERRUPT_HINT}"
    print(f"interrupted: {msg}", file=sys.stderr)
    _exit_now(128 + (_signals[0] if _signals else signal.SIGINT))


@contextlib.contextmanager
def clean_imports(is_main: bool) -> Iterator[None]:
    """Around an entry point's heavy imports: an interrupt waits until they are done, then
    ends the program with the one line (an interrupt inside a C extension's initialisation,
    NumPy's, prints a traceback before Python sees it).  Does nothing unless ``is_main``
    (the module runs as the program), so importing the module elsewhere is unaffected."""
    if not is_main:
        yield
        return
    _install()
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.clear()
    if _signals:
        _interrupted_line(None)


def main(body: Callable[[], object]) -> None:
    """Run ``body`` as a command: one-line errors, clean interrupts, exit codes."""
    _install()
    printable_output()
    try:
        body()
    except BaseException as err:  # noqa: BLE001 - an interrupt, or whatever it broke on the way out
        interrupted = isinstance(err, KeyboardInterrupt) or (_signals and not isinstance(err, SystemExit))
        if not interrupted:
            if isinstance(err, Problem):
                fail(err)
            if isinstance(err, OSError) and err.filename:  # a file problem nobody described yet
                fail(file_problem(err))
            raise
        _interrupted_line(err)


def size_text(num_bytes: float) -> str:
    """A byte count for people: 512 B, 3.4 kB, 12 MB, 240 GB (powers of 1000, as df -H)."""
    value = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.2g} {unit}"
        value /= 1000
    return f"{value:.0f} TB"


def free_space(folder) -> str:
    """The free space on the disk holding ``folder`` (or its nearest existing parent)."""
    path = os.path.abspath(str(folder))
    while path and not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return size_text(shutil.disk_usage(path).free)
    except OSError:
        return "unknown"


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def file_problem(err: OSError, *, need: float | None = None, what: str = "") -> Problem:
    """One line for an OSError about a file: the file, what is wrong and the fix.

    ``need``: bytes still to be written (named with a full disk: what to free); ``what``:
    words to add after the problem (e.g. which rows are kept)."""
    path = err.filename or "a file"
    folder = os.path.dirname(os.path.abspath(str(path))) if err.filename else "the results folder"
    reason = err.strerror or type(err).__name__
    more = f"; {what}" if what else ""
    need = need if need is not None else getattr(err, "needed_bytes", None)
    if err.errno in DISK_FULL:
        amount = f"at least {size_text(need)}" if need else "space"
        fix = f"free {amount} on the disk holding {folder} (free now: {free_space(folder)}), then rerun"
        return Problem(f"cannot write {path}: {reason}{more}; fix: {fix}")
    if err.errno == errno.EISDIR:
        return Problem(
            f"{path} is a folder where a file belongs{more}; fix: move that folder away, then rerun"
        )
    if err.errno == errno.ENOTDIR:
        return Problem(
            f"a part of {path} is a file where a folder belongs{more}; fix: move that file away, then rerun"
        )
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Problem(
            f"cannot write {path}: {reason}{more}; fix: make {folder} writable or pass "
            "results_root=<a writable folder>"
        )
    return Problem(f"cannot use {path}: {reason}{more}; fix: check that disk and folder, then rerun")


def printable_output() -> None:
    """Let stdout and stderr print any character: one their encoding lacks (an ASCII
    terminal, ``PYTHONIOENCODING=ascii``) is written as a ``\\u`` escape instead of ending
    the program with a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # not a text stream that can be reconfigured
            pass


def one_line(text: object) -> str:
    """``text`` with its lines joined (messages must stay on one line)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())
