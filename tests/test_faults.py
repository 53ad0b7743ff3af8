"""Fault injection on a cheap run: every case ends in the reference result or one line, data untouched.

The cases of the robustness table (docs/robustness.md): a second process on the same run,
SIGKILL and Ctrl-C at any point (inside a write included), truncated and garbled CSVs,
corrupt checkpoint and run.json, a changed config under the same run id, diverging
runs, unusable results roots, failed downloads, bad optimizer arguments and file modes.
Reference: the same config run once, uninterrupted; "identical" means byte-identical CSV.
The 50-SIGKILL figure-2 run is `tests/kill_resume.py` (slow test at the end).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments import config, figures, io, reproduce, runner
from pes.data import images
from tests import kill_resume, test_runner

ROOT = Path(__file__).resolve().parent.parent
CHEAP = [*test_runner.BASE, "run_id=cheap"]  # linear-quadratic PES, 40 steps in 4 chunks


def compose(root: Path, *extra: str):
    return config.compose([*CHEAP, f"results_root={root}", *extra])


def folder(root: Path) -> Path:
    return root / "quick" / "adhoc" / "runs" / "cheap"


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (the lock file aside) and its bytes."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != io.LOCK
    }


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A complete, uninterrupted run of the cheap config."""
    root = tmp_path_factory.mktemp("reference")
    return runner.run(compose(root))


LONGER = ["train.num_outer_steps=400", "train.chunk_size=5"]  # 80 checkpoints: room for a signal


@pytest.fixture(scope="module")
def longer_reference(tmp_path_factory) -> bytes:
    """The CSV of an uninterrupted run of the cheap config with 400 steps."""
    return csv_bytes(runner.run(compose(tmp_path_factory.mktemp("longer"), *LONGER)))


@pytest.fixture
def finished(reference, tmp_path) -> Path:
    """A copy of the complete reference run under ``tmp_path``."""
    shutil.copytree(reference, folder(tmp_path))
    return folder(tmp_path)


def csv_bytes(out: Path) -> bytes:
    return (out / runner.CSV).read_bytes()


def interrupted_after(monkeypatch, tmp_path, checkpoints: int) -> Path:
    """A run stopped by Ctrl-C right after its ``checkpoints``-th checkpoint."""
    calls = {"n": 0}
    save = io.save_checkpoint

    def save_then_interrupt(*args, **kwargs):
        save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == checkpoints:
            raise KeyboardInterrupt

    monkeypatch.setattr(io, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt, match=r"stopped at outer step \d+ of 40.*rerun the same command"):
        runner.run(compose(tmp_path))
    monkeypatch.setattr(io, "save_checkpoint", save)
    out = folder(tmp_path)
    assert json.loads((out / runner.META).read_text())["status"] == "interrupted"
    return out


# ----------------------------------------------------------------------------- locks


def test_a_second_process_on_a_locked_run_exits_at_once_naming_the_holder(finished, tmp_path):
    before = snapshot(finished)
    with io.FolderLock(finished):
        with pytest.raises(io.Busy, match=rf"{re.escape(str(finished))} is in use by PID {os.getpid()} on "):
            runner.run(compose(tmp_path, "resume=false"))  # would otherwise delete the rows
        t0 = time.perf_counter()
        out = cli("experiments.run", *CHEAP, f"results_root={tmp_path}")
        assert out.returncode == 1
        line = one_line(out.stderr)
        assert line.startswith(f"error: {finished} is in use by PID {os.getpid()}"), line
        assert time.perf_counter() - t0 < 120  # no waiting for the holder
    assert snapshot(finished) == before


def test_a_lock_left_by_a_killed_process_is_taken_over(reference, finished, tmp_path):
    # another process takes the lock the way FolderLock does (flock, holder info), stdlib only
    code = (
        "import fcntl, json, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); "
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': 'h'}).encode()); "
        "print('locked', flush=True); time.sleep(600)"
    )
    lock = str(finished / io.LOCK)
    holder = subprocess.Popen([sys.executable, "-c", code, lock], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert f"PID {holder.pid} on" in io.lock_holder(finished)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert io.lock_holder(finished) is None
    assert runner.run(compose(tmp_path)) == finished
    assert csv_bytes(finished) == csv_bytes(reference)


def test_sigkill_leaves_running_which_is_recognised_as_stale_and_resumed(longer_reference, tmp_path, capfd):
    root = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *CHEAP, *LONGER, f"results_root={root}"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    ck = folder(root) / runner.CKPT
    deadline = time.time() + 240
    while not ck.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    meta = json.loads((folder(root) / runner.META).read_text())
    if meta["status"] == "complete":
        pytest.skip("the run finished before the kill (machine too fast for this test's timing)")
    assert meta["status"] == "running" and runner.status(folder(root)) == "killed"
    capfd.readouterr()
    runner.run(compose(root, *LONGER))
    assert f"left 'running' by PID {proc.pid}" in capfd.readouterr().err
    assert csv_bytes(folder(root)) == longer_reference
    assert runner.status(folder(root)) == "complete"
    attempts = json.loads((folder(root) / runner.META).read_text())["attempts"]
    assert [a.get("status") for a in attempts] == [None, "complete"]  # the killed one never ended


# ----------------------------------------------------------------------------- verified results


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: int(len(b) * 0.3)], id="cut-at-30%"),
        pytest.param(lambda b: b[:-3], id="cut-inside-the-last-number"),
        pytest.param(lambda b: b.replace(b",0.", b",1.", 1), id="garbled-cell"),
        pytest.param(lambda b: b[: b.index(b"\n") + 1] + b[b.index(b"\n", 300) + 1 :], id="rows-deleted"),
    ],
)
def test_a_damaged_finished_csv_is_recomputed_and_kept_aside(reference, finished, tmp_path, damage, capfd):
    """Recomputed from the latest kept earlier checkpoint whose rows the damaged CSV still
    starts with (the rule, restated from the checkpoints' records), else from scratch."""
    damaged = damage(csv_bytes(finished))
    (finished / runner.CSV).write_bytes(damaged)
    expected = max((s for s, rec in kept_records(finished).items() if holds(damaged, rec)), default=0)
    capfd.readouterr()
    runner.run(compose(tmp_path))
    note = one_line(capfd.readouterr().err)
    assert note.startswith("note: cheap: "), note
    if expected:
        assert note.endswith(f"resuming from the earlier checkpoint at outer step {expected}"), note
    else:
        assert "recomputing it from scratch" in note, note
    assert json.loads((finished / runner.META).read_text())["attempts"][-1]["from_outer_step"] == expected
    assert csv_bytes(finished) == csv_bytes(reference)
    (kept,) = finished.glob(f"{runner.CSV}.unverified-*")
    assert kept.read_bytes() == damaged  # nothing lost


def kept_records(out: Path) -> dict[int, dict]:
    """The CSV records of a run folder's kept earlier checkpoints, by outer step."""
    records = {}
    for step, path in runner.kept_checkpoints(out).items():
        with np.load(path) as data:
            records[step] = json.loads(bytes(data["__meta__"]).decode())
    return records


def holds(data: bytes, record: dict) -> bool:
    """Whether ``data`` starts with the rows ``record`` (a checkpoint's CSV record) describes."""
    head = data[: record["csv_bytes"]]
    return len(head) == record["csv_bytes"] and hashlib.sha256(head).hexdigest() == record["csv_sha256"]


def test_earlier_checkpoints_are_kept_spread_over_the_run_and_a_damaged_csv_resumes_from_one(
    longer_reference, tmp_path, capfd
):
    """A week-long run whose CSV lost its last 70 % must not be recomputed from scratch: the
    run keeps up to `train.keep_checkpoints` earlier checkpoints, one per 1/(keep + 1) of the
    run, and resumes from the latest one whose rows the CSV still holds."""
    out = runner.run(compose(tmp_path, *LONGER))  # 400 steps, a checkpoint every 5
    steps = sorted(runner.kept_checkpoints(out))
    assert [s * 11 // 400 for s in steps] == list(range(1, 11))  # one per eleventh of the run
    assert all(s % 5 == 0 and (s - 5) * 11 // 400 < s * 11 // 400 for s in steps)  # its first checkpoint
    text = csv_bytes(out)
    damaged = text[: int(len(text) * 0.3)]
    (out / runner.CSV).write_bytes(damaged)
    records = kept_records(out)
    expected = max((s for s, rec in records.items() if holds(damaged, rec)), default=0)
    assert 0 < expected <= 0.3 * 400  # rows are about the same size at every step
    capfd.readouterr()
    runner.run(compose(tmp_path, *LONGER))
    note = one_line(capfd.readouterr().err)
    assert note.endswith(f"resuming from the earlier checkpoint at outer step {expected}"), note
    assert json.loads((out / runner.META).read_text())["attempts"][-1]["from_outer_step"] == expected
    assert csv_bytes(out) == longer_reference
    (kept,) = out.glob(f"{runner.CSV}.unverified-*")
    assert kept.read_bytes() == damaged
    assert sorted(runner.kept_checkpoints(out)) == steps  # the later ones were made again
    # keep_checkpoints=0: only the last checkpoint, so the same damage means from scratch
    none = tmp_path / "none"
    out0 = runner.run(compose(none, *LONGER, "train.keep_checkpoints=0"))
    assert not (out0 / runner.KEPT).exists()
    (out0 / runner.CSV).write_bytes(damaged)
    runner.run(compose(none, *LONGER, "train.keep_checkpoints=0"))
    assert json.loads((out0 / runner.META).read_text())["attempts"][-1]["from_outer_step"] == 0
    assert csv_bytes(out0) == longer_reference
    # resume=false starts over: no earlier checkpoint of the old attempt survives
    (out / runner.KEPT / "step-999999.npz").write_bytes(b"from an old attempt")
    runner.run(compose(tmp_path, *LONGER, "resume=false"))
    assert sorted(runner.kept_checkpoints(out)) == steps


def test_rows_missing_before_the_checkpoint_of_a_partial_run(reference, tmp_path, monkeypatch):
    out = interrupted_after(monkeypatch, tmp_path, checkpoints=3)
    text = csv_bytes(out)
    (out / runner.CSV).write_bytes(text[: int(len(text) * 0.3)])
    runner.run(compose(tmp_path))
    assert csv_bytes(out) == csv_bytes(reference)


def test_a_write_cut_short_after_the_checkpoint_is_dropped_on_resume(reference, tmp_path, monkeypatch):
    out = interrupted_after(monkeypatch, tmp_path, checkpoints=2)
    tail = csv_bytes(reference)[len(csv_bytes(out)):]
    with open(out / runner.CSV, "ab") as f:
        f.write(tail[: len(tail) // 3])  # rows of the next chunk, the last one cut mid-number
    (out / ".run.json.123.abcd.tmp").write_text("{")  # an atomic write killed half-way
    runner.run(compose(tmp_path))
    assert csv_bytes(out) == csv_bytes(reference)
    assert not list(out.glob(".*.tmp"))


def test_a_resume_with_another_chunk_size_gives_the_same_bytes(reference, tmp_path, monkeypatch):
    out = interrupted_after(monkeypatch, tmp_path, checkpoints=1)
    runner.run(compose(tmp_path, "train.chunk_size=15"))  # chunk_size is not part of the run's identity
    assert csv_bytes(out) == csv_bytes(reference)


def test_killed_between_the_checkpoint_and_run_json_is_finished_not_rerun(reference, finished, tmp_path):
    meta = json.loads((finished / runner.META).read_text())
    (finished / runner.META).write_text(json.dumps(dict(meta, status="running")))
    stamp = (finished / runner.CSV).stat().st_mtime_ns
    runner.run(compose(tmp_path))
    assert (finished / runner.CSV).stat().st_mtime_ns == stamp
    assert json.loads((finished / runner.META).read_text())["status"] == "complete"


def refused_then_resume_false(finished: Path, tmp_path: Path, bad: str, check) -> dict[str, bytes]:
    """``check`` refuses the damaged folder in one line naming ``bad`` and resume=false, touching
    nothing; then resume=false recomputes.  Returns the folder's files before."""
    before = snapshot(finished)
    with pytest.raises(io.FileProblem) as info:
        check(compose(tmp_path))
    text = one_line(str(info.value))
    assert str(finished / bad) in text and "resume=false" in text
    assert snapshot(finished) == before
    runner.run(compose(tmp_path, "resume=false"))
    return before


def test_a_corrupt_checkpoint_is_one_line_and_resume_false_recomputes(reference, finished, tmp_path):
    (finished / runner.CKPT).write_bytes(b"PK\x03\x04 not really a zip")
    refused_then_resume_false(finished, tmp_path, runner.CKPT, runner.run)
    assert csv_bytes(finished) == csv_bytes(reference)


def test_a_corrupt_checkpoint_names_the_latest_kept_one_and_copying_it_resumes(reference, finished, tmp_path):
    (finished / runner.CKPT).write_bytes(b"PK\x03\x04 not really a zip")
    latest = max(runner.kept_checkpoints(finished))
    kept = finished / runner.KEPT / f"step-{latest}.npz"
    with pytest.raises(io.FileProblem) as info:
        runner.run(compose(tmp_path))
    assert str(info.value).endswith(f", or copy {kept} over it to resume from outer step {latest}")
    shutil.copyfile(kept, finished / runner.CKPT)  # what the message says
    runner.run(compose(tmp_path))
    assert json.loads((finished / runner.META).read_text())["attempts"][-1]["from_outer_step"] == latest
    assert csv_bytes(finished) == csv_bytes(reference)


def test_a_corrupt_run_json_is_one_line_and_resume_false_starts_clean(reference, finished, tmp_path):
    for content in ("[1, 2]", "\xff\xfe"):
        (finished / runner.META).write_text(content, encoding="latin-1")
        with pytest.raises(io.FileProblem, match=f"{re.escape(str(finished / runner.META))}.*resume=false"):
            runner.run(compose(tmp_path))
    (finished / runner.META).write_text('{"status": "complete",\n"fingerprint": ')
    with pytest.raises(io.FileProblem, match=r"run.json, line 2: invalid JSON"):
        runner.check(compose(tmp_path))
    before = refused_then_resume_false(finished, tmp_path, runner.META, runner.check)
    assert csv_bytes(finished) == csv_bytes(reference)
    (aside,) = finished.parent.glob("cheap.old-*")
    assert snapshot(aside) == before  # moved, not deleted


def test_a_parse_error_in_a_results_csv_names_file_and_line(reference, tmp_path):
    path = tmp_path / "metrics.csv"
    lines = csv_bytes(reference).decode().splitlines(keepends=True)
    lines[7] = lines[7].rsplit(",", 1)[0] + ",0.26x\n"  # a garbled value cell
    path.write_text("".join(lines))
    with pytest.raises(io.FileProblem) as info:
        io.read_csv(path, fix="rebuild it")
    assert str(info.value) == f"{path}, line 8: value='0.26x' is not a number; fix: rebuild it"
    path.write_text("".join(lines[:7]) + "a,b\n" + "".join(lines[8:]))  # a row of 2 fields
    with pytest.raises(io.FileProblem, match=rf"{re.escape(str(path))}.* line 8"):
        io.read_csv(path)


# ----------------------------------------------------------------------------- changed config


def test_a_changed_config_is_refused_naming_keys_and_overwrite_moves_it_aside(reference, finished, tmp_path):
    before = snapshot(finished)
    changed = ["estimator.sigma=0.2", "train.num_outer_steps=20"]
    out = cli("experiments.run", *CHEAP, f"results_root={tmp_path}", *changed)
    assert out.returncode == 2
    line = one_line(out.stderr)
    fp = json.loads((finished / runner.META).read_text())["fingerprint"]
    assert f"fingerprint {fp} -> " in line and "overwrite=true" in line
    assert "estimator.sigma 0.1->0.2" in line and "train.num_outer_steps 40->20" in line
    assert snapshot(finished) == before
    runner.run(compose(tmp_path, "estimator.sigma=0.2", "overwrite=true"))
    (aside,) = finished.parent.glob("cheap.old-*")
    assert snapshot(aside) == before
    assert json.loads((finished / runner.META).read_text())["config"]["estimator"]["sigma"] == 0.2


def test_same_config_with_non_result_keys_changed_is_the_same_run(reference, finished, tmp_path):
    stamp = (finished / runner.CSV).stat().st_mtime_ns
    runner.run(compose(tmp_path, "train.chunk_size=20", "progress=true"))
    assert (finished / runner.CSV).stat().st_mtime_ns == stamp


# ----------------------------------------------------------------------------- divergence


def test_divergence_rule():
    f32 = np.float32
    steps = np.array([5, 10, 15])
    ok = {"outer_step": steps, "loss": np.array([1.0, 1e18, 1e19], f32), "theta": np.ones(3, f32)}
    assert runner.divergence(ok) is None
    huge = dict(ok, loss=np.array([1.0, 3.7e20, 1.0], f32))  # theta finite, loss absurd
    assert runner.divergence(huge) == (10, "loss", pytest.approx(3.7e20, rel=1e-6))
    nan = dict(ok, grad_norm=np.array([1.0, 1.0, np.nan], f32), theta=np.array([1, np.inf, 1], f32))
    assert runner.divergence(nan)[:2] == (10, "theta")
    assert runner.divergence(dict(ok, loss=np.array([1.0, 1e150, 1.0]))) is None  # float64 limit 1.3e154
    assert runner.divergence(dict(ok, loss=np.array([1.0, 1e155, 1.0])))[0] == 10


DIVERGING = ["task=linear_quadratic", "task.horizon=12", "estimator=tbptt", "estimator.trunc_len=4",
             "outer_optimizer=sgd", "outer_optimizer.learning_rate=0.15", "train.num_outer_steps=400",
             "train.log_every=5", "train.chunk_size=10", "progress=false", "run_id=cheap"]


def test_a_diverging_run_stops_with_its_rows_ending_at_the_first_bad_point(tmp_path, capfd):
    a = runner.run(config.compose([*DIVERGING, f"results_root={tmp_path / 'a'}"]))
    note = capfd.readouterr().err
    meta = json.loads((a / runner.META).read_text())
    step = meta["diverged_at_outer_step"]
    assert meta["status"] == "diverged" and runner.status(a) == "diverged"
    assert f"diverged at outer step {step}" in note
    df = io.read_csv(a / runner.CSV, any_nonfinite=True)
    assert 35 < df["outer_step"].max() == step < 400  # past a few chunks of either size below
    assert sorted(df["outer_step"].unique())[:2] == [0, 5]
    marker = df[df["metric"] == runner.DIVERGED]
    assert marker["outer_step"].tolist() == [step] and marker["value"].tolist() == [1.0]
    assert runner.divergence({"outer_step": np.array([step]), "x": np.array([1.0])}) is None
    last = df[(df["outer_step"] == step) & (df["metric"] != runner.DIVERGED)]["value"].to_numpy(np.float32)
    assert runner.divergence({"outer_step": np.full(len(last), step), "v": last}) is not None
    b = runner.run(config.compose([*DIVERGING, f"results_root={tmp_path / 'b'}", "train.chunk_size=35"]))
    assert csv_bytes(a) == csv_bytes(b)  # the same rows whatever the chunking
    stamp = (b / runner.CSV).stat().st_mtime_ns
    runner.run(config.compose([*DIVERGING, f"results_root={tmp_path / 'b'}"]))
    assert (b / runner.CSV).stat().st_mtime_ns == stamp  # a verified diverged run is finished


# ----------------------------------------------------------------------------- interrupts


def _interrupt_cli(root: Path, *extra: str, after: str) -> subprocess.CompletedProcess:
    """Run the CLI, send SIGINT once ``after`` ("start": inside the imports, or "checkpoint")
    happened; return the result."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *CHEAP, *extra, f"results_root={root}"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    ck = folder(root) / runner.CKPT
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.time() + 240

    def happened() -> bool:
        if after == "checkpoint":
            return ck.exists()
        try:  # NumPy's C extension is mapped: the entry point is importing its heavy modules
            return "_multiarray_umath" in maps.read_text()
        except OSError:
            return False

    while not happened() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("after", ["start", "checkpoint"])
def test_ctrl_c_exits_130_with_one_line_and_resumes_to_the_reference(longer_reference, tmp_path, after):
    out = _interrupt_cli(tmp_path, *LONGER, after=after)
    if out.returncode == 0:
        pytest.skip("the run finished before the interrupt (machine too fast for this test's timing)")
    assert out.returncode == 130, out.stderr
    line = one_line(out.stderr)
    assert line.startswith("interrupted: ") and "rerun the same command to resume" in line
    if after == "start":  # during the imports: nothing was written
        assert line == "interrupted: nothing was lost; rerun the same command to resume"
        assert not tmp_path.joinpath("quick").exists()
        return
    assert "cheap stopped at outer step" in line and str(folder(tmp_path) / runner.CSV) in line
    assert json.loads((folder(tmp_path) / runner.META).read_text())["status"] == "interrupted"
    assert csv_bytes(runner.run(compose(tmp_path, *LONGER))) == longer_reference


@pytest.mark.parametrize(
    "signals, stdout, line",
    [
        (1, "imports done\n", "interrupted: nothing was lost; rerun the same command to resume"),
        (2, "", "interrupted: stopped at once (second signal); rows up to the last checkpoint are kept; "
                "rerun the same command to resume"),
    ],
)
def test_an_interrupt_during_imports_waits_for_them_and_a_second_one_leaves_at_once(signals, stdout, line):
    """`cli.clean_imports` in a bare interpreter: the process signals itself while "importing"."""
    code = (
        "import os, signal, time\n"
        "from experiments import cli\n"
        "with cli.clean_imports(True):\n"
        f"    for _ in range({signals}):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(0.2)\n"
        "    print('imports done', flush=True)\n"
        "print('not reached', flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (130, stdout, line + "\n")


def test_an_interrupt_swallowed_by_a_finaliser_still_ends_the_program_in_one_line():
    """Python swallows an exception raised in ``__del__`` ("Exception ignored in ...", a
    traceback) and goes on; the slow Ctrl-C test met this in tqdm's ``__del__``. The
    interrupt must still end the program at once with the one line and exit 130."""
    code = (
        "import os, signal, time\n"
        "from experiments import cli\n"
        "class Finalised:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        for _ in range(10000):\n"  # the handler runs here, inside __del__
        "            pass\n"
        "def body():\n"
        "    Finalised()\n"
        "    for _ in range(1000):\n"
        "        time.sleep(0.01)\n"
        "    print('work finished', flush=True)\n"
        "cli.main(body)\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (
        130, "", "interrupted: nothing was lost; rerun the same command to resume\n")
    assert time.perf_counter() - t0 < 8  # not after the 10 s of work


# ----------------------------------------------------------------------------- unusable places


@pytest.mark.parametrize("kind", ["a-file", "read-only"])
def test_an_unusable_results_root_is_one_line_before_compute(tmp_path, kind):
    if kind == "a-file":
        root = tmp_path / "results"
        root.write_text("not a folder")
    elif os.geteuid() != 0:
        root = tmp_path / "ro"
        root.mkdir(mode=0o555)
    elif Path("/sys").is_dir():  # root ignores modes; sysfs refuses new folders to anyone
        root = Path("/sys/pes-results")
    else:
        pytest.skip("no read-only place to test as root")
    with pytest.raises(io.FileProblem) as info:
        runner.check(compose(root))
    text = one_line(str(info.value))
    assert str(folder(root)) in text and "results_root=" in text



def test_a_write_error_mid_run_is_one_line_and_resume_gives_the_reference(reference, tmp_path, monkeypatch):
    append = io._append
    calls = {"n": 0}

    def disk_full(path, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device", str(path))
        append(path, data)

    monkeypatch.setattr(io, "_append", disk_full)
    with pytest.raises(io.FileProblem) as info:
        runner.run(compose(tmp_path))
    text = one_line(str(info.value))
    assert text.startswith(f"cannot write {folder(tmp_path) / runner.CSV}: No space left on device")
    monkeypatch.setattr(io, "_append", append)
    runner.run(compose(tmp_path))
    assert csv_bytes(folder(tmp_path)) == csv_bytes(reference)


def test_files_follow_the_umask(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        out = interrupted_after(monkeypatch, tmp_path, checkpoints=2)
        runner.run(compose(tmp_path))  # the resume rewrites run.json and the checkpoint, appends the CSV
    finally:
        os.umask(old)
    for name in (runner.CSV, runner.CKPT, runner.META, io.LOCK):
        assert (out / name).stat().st_mode & 0o777 == 0o640, name


# ----------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["outer_optimizer=sgd", "outer_optimizer.momentum=abc"],
         "outer_optimizer.momentum='abc' is invalid; allowed: null or a finite number"),
        (["outer_optimizer=sgd", "+outer_optimizer.nesterov=1"],
         "outer_optimizer.nesterov=1 is invalid; allowed: true or false"),
        (["outer_optimizer=sgd", "+outer_optimizer.b1=0.9"],
         "outer_optimizer.b1=0.9 is not an argument of optax.sgd"),
        # caught by the trial update on the task's theta (no type to check)
        (["outer_optimizer.name=adamw", "+outer_optimizer.mask=[1,2,3]"], "outer_optimizer: optax.adamw({"),
        (["outer_optimizer.name=lbfgs", "~outer_optimizer.b1", "~outer_optimizer.b2", "~outer_optimizer.eps"],
         "missing 3 required keyword-only arguments: 'value', 'grad', and 'value_fn'"),
        (["outer_optimizer.b1=inf"], "outer_optimizer.b1=inf is invalid; allowed: a finite number"),
        (["resume=maybe"], "resume='maybe' is invalid; allowed: true or false"),
        (["x64=1"], "x64=1 is invalid; allowed: true or false"),
    ],
)
def test_bad_values_are_refused_before_compute_and_leave_no_folder(tmp_path, overrides, message):
    with pytest.raises(config.ConfigError) as info:
        runner.run(compose(tmp_path, *overrides))
    assert message in one_line(str(info.value))
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- 50 kills


@pytest.mark.slow
def test_fifty_random_sigkills_during_figure2_resume_to_the_uninterrupted_result(tmp_path):
    report = kill_resume.run(tmp_path, kills=50, seed=0, per_figure=5)
    assert report["kills"] == 50
    assert report["identical"], report
    assert report["figures_completed"] >= 10  # every 5 kills, a figure is finished and compared
    points = report["kill_points"]  # spread over the whole figure, not bunched at its end
    assert min(points) < 0.25 and max(points) > 0.75 and 0.25 < float(np.median(points)) < 0.75, points


# ----------------------------------------------------------------------------- hints name real keys

HINT_KEY = re.compile(r"(?<![\w./~-])([A-Za-z_]\w*(?:\.\w+)*)=")
_ABSENT = object()


def assert_hints_are_config_keys(message: str, cfg) -> None:
    """Every ``key=`` in ``message`` is a key of the composed config ``cfg``."""
    keys = HINT_KEY.findall(message)
    assert keys, message
    missing = [k for k in keys if OmegaConf.select(cfg, k, default=_ABSENT) is _ABSENT]
    assert not missing, f"{missing} in: {message}"


def _figure_config(figure: str, profile: str, run_index: int, *extra: str):
    fig = figures.load(figure)
    return config.compose(figures.run_overrides(fig, figures.runs(fig, profile)[run_index], profile, extra))


def _no_tfds(*args, **kwargs):
    raise images.DataUnavailableError("no prepared TFDS data and the TFDS host is unreachable (no network?)")


DATA_PROBLEMS = {  # overrides ({d}: an empty folder) whose build fails on missing or bad data
    "mnist-idx": ["task=mnist_lr_schedule", "task.data_source=idx", "task.data_dir={d}"],
    "mnist-npz": ["task=mnist_lr_schedule", "task.data_source=npz", "task.data_dir={d}"],
    "mnist-auto": ["task=mnist_lr_schedule", "task.data_dir={d}"],
    "cifar10-idx": ["task=lopt_image_mlp", "task.dataset=cifar10", "task.data_source=idx",
                    "task.data_dir={d}"],
    "ptb-char-file": ["task=ptb_lstm", "task.source=char_file", "task.data_path={d}"],
    "ptb-download-offline": ["task=ptb_lstm", "task.source=download", "task.data_path={d}"],
    "ptb-bad-source": ["task=ptb_lstm", "task.source=web"],
    "mlp-hparams-npz": ["task=mlp_hparams", "task.data_source=npz", "task.data_dir={d}"],
    "yacht-file-missing": ["task=uci_yacht", "task.data_source=file", "task.data_path={d}/none.data"],
    "yacht-url-offline": ["task=uci_yacht", "task.data_source=url", "task.data_url=http://192.0.2.1/y.data"],
}


@pytest.mark.parametrize("case", ["figure5-paper", *DATA_PROBLEMS])
def test_every_data_hint_names_a_config_key(tmp_path, monkeypatch, case):
    monkeypatch.setattr(images, "load_tfds", _no_tfds)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    if case == "figure5-paper":  # the paper profile of figure 5 on a machine without MNIST
        cfg = _figure_config("figure5", "paper", 0, f"task.data_dir={tmp_path}")
    else:
        cfg = config.compose([o.format(d=tmp_path) for o in DATA_PROBLEMS[case]])
    with pytest.raises(config.ConfigError) as info:
        config.build(cfg)
    message = one_line(str(info.value))
    assert_hints_are_config_keys(message, cfg)
    if "download" in cfg.task.get("source", ""):
        assert "PTB download from http" in message and "failed" in message


def test_every_runner_hint_names_a_config_key(finished, tmp_path):
    cfg = compose(tmp_path)
    (finished / runner.META).write_text("{")
    with pytest.raises(io.FileProblem) as info:
        runner.check(cfg)
    assert_hints_are_config_keys(str(info.value), cfg)
    (finished / runner.META).write_text(json.dumps({"fingerprint": "0", "config": {}}))
    with pytest.raises(runner.ConfigChanged) as info:
        runner.check(cfg)
    assert_hints_are_config_keys(str(info.value), cfg)
    root = tmp_path / "file"
    root.write_text("")
    with pytest.raises(io.FileProblem) as info:
        runner.check(compose(root))
    assert_hints_are_config_keys(str(info.value), cfg)


def test_a_failed_tfds_download_is_one_line_naming_the_dataset_and_the_leftovers(tmp_path, monkeypatch):
    def split(tfds, name, split_name, *, download, **kwargs):
        if not download:
            raise FileNotFoundError("no prepared data")
        raise ConnectionResetError(104, "Connection reset by peer\nwhile reading")

    monkeypatch.setattr(images, "_import_tfds", lambda: None)
    monkeypatch.setattr(images, "_tfds_split", split)
    monkeypatch.setattr(images, "host_reachable", lambda *a, **k: True)
    with pytest.raises(images.DataUnavailableError) as info:
        images.load_tfds("mnist", tfds_data_dir=tmp_path)
    text = one_line(str(info.value))
    assert "'mnist': the TFDS download failed" in text and "Connection reset by peer" in text
    assert str(tmp_path) in text


def _rows_bytes(root: Path) -> int:
    """Bytes of run CSVs under ``root``: the progress of a run or a figure, whatever the load."""
    return sum(p.stat().st_size for p in root.glob(f"**/runs/*/{runner.CSV}") if p.is_file())


def _start(module: str, args: list[str], root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args, f"results_root={root}"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_until(proc: subprocess.Popen, done, poll: float = 0.005) -> None:
    while proc.poll() is None and not done():
        time.sleep(poll)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["experiments.run", "experiments.reproduce"])
def test_ctrl_c_at_20_random_points_never_crashes_and_resumes_to_the_reference(tmp_path, module):
    """Seeded random SIGINTs over a whole process life (imports, compile, compute, writes).

    The schedule follows the process's own progress, not the clock, so that a loaded machine
    moves no signal past the end of the work: a quarter of the signals land at a random time
    before the first row of the reference run appeared (imports, config, compile), the rest
    when the run CSVs have grown by a random share (2-90 %) of what is left to write (or,
    when a folder has all its rows, at a random time before the first row). Four
    folders take five interrupts each (resumes in between), then one plain run each must
    end in the reference CSV byte for byte. A signal in the first milliseconds, before the
    interpreter runs any code, kills the process by the OS's default action (status -2,
    nothing printed or written), which a shell reports as 130 too.
    """
    if module == "experiments.run":
        args, csv = [*CHEAP, "train.num_outer_steps=20000", "train.chunk_size=20"], None  # ~3 s of rows
    else:
        args, csv = ["figure=figure2", "profile=quick", "train.chunk_size=100"], "quick/figure2/metrics.csv"
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    proc = _start(module, args, ref)
    _wait_until(proc, lambda: _rows_bytes(ref) > 0)
    first_row = time.perf_counter() - t0
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr
    total = _rows_bytes(ref)
    assert total > 0 and first_row > 0
    rng = np.random.default_rng(0)
    codes, roots = [], [tmp_path / f"int{g}" for g in range(4)]
    for trial in range(20):
        root = roots[trial // 5]
        before = _rows_bytes(root)
        proc = _start(module, args, root)
        if rng.uniform() < 0.25 or before >= total:  # (all rows there: only the start is left)
            time.sleep(rng.uniform(0.0, first_row))
        else:
            target = before + rng.uniform(0.02, 0.9) * (total - before)
            _wait_until(proc, lambda root=root, target=target: _rows_bytes(root) >= target)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=600)
        codes.append(proc.returncode)
        if proc.returncode == -signal.SIGINT:  # the signal came before the interpreter ran any code:
            assert stderr == "", (trial, stderr)  # the OS's default action (a shell shows 130)
            continue
        assert proc.returncode in (0, 130), (trial, proc.returncode, stderr)
        assert "Traceback" not in stderr, (trial, stderr)
        if proc.returncode == 130:  # (reproduce prints a line per finished run before)
            assert stderr.strip().splitlines()[-1].startswith("interrupted: "), (trial, stderr)
    assert codes.count(130) >= 10, codes
    for root in roots:
        assert cli(module, *args, f"results_root={root}", timeout=900).returncode == 0
        if csv is None:
            assert csv_bytes(folder(root)) == csv_bytes(folder(ref)), root
        else:
            assert (root / csv).read_bytes() == (ref / csv).read_bytes(), root


# ----------------------------------------------------------------------------- figures


def test_a_figure_with_a_diverged_run_is_merged_with_its_rows_marked(tmp_path):
    """No figure's compute is lost to a merge error: the diverged run's rows (NaN included)
    are merged and marked; rerunning re-verifies every run and rebuilds the merged CSV."""
    spec = {
        "id": "figurex", "title": "x", "task": "linear_quadratic", "plot": "tests/figures/plot_tiny.py",
        "expected": "x", "base": [*DIVERGING[:2], "train.num_outer_steps=400", "train.log_every=5",
                                  "train.chunk_size=50", "progress=false"],
        "runs": [
            {"id": "stable", "overrides": ["estimator=tbptt", "estimator.trunc_len=4"]},
            {"id": "diverges", "overrides": DIVERGING[2:6]},
        ],
    }
    yaml_path = tmp_path / "figurex.yaml"
    yaml_path.write_text(json.dumps(spec))
    args = (str(yaml_path), "quick", [f"results_root={tmp_path}"])
    path = reproduce.reproduce(*args, plot_figure=False)
    df = io.read_csv(path, any_nonfinite=True)
    assert set(df["run_id"]) == {"stable", "diverges"}
    marker = df[df["metric"] == runner.DIVERGED]
    assert marker["run_id"].tolist() == ["diverges"]
    assert df[df["run_id"] == "diverges"]["outer_step"].max() == marker["outer_step"].iloc[0] < 400
    assert df[df["run_id"] == "stable"]["outer_step"].max() == 400
    record = json.loads((path.parent / "figure.json").read_text())["runs"]
    assert record["diverges"]["status"] == "diverged" and record["stable"]["status"] == "complete"
    merged = path.read_bytes()
    (path.parent / "runs" / "stable" / runner.CSV).write_bytes(b"")  # a run lost its rows
    assert reproduce.reproduce(*args, plot_figure=False) == path
    assert path.read_bytes() == merged  # recomputed and merged again


def test_ctrl_c_in_reproduce_exits_130_and_the_same_command_resumes_to_the_reference(tmp_path):
    """Figure level: SIGINT while the figure's second run computes -> exit 130, the last line
    names that run and where its rows are kept, no traceback, figure.json says
    ``interrupted``; the same command again writes the merged CSV of an uninterrupted figure."""
    spec = {
        "id": "figurey", "title": "y", "task": "linear_quadratic", "plot": "tests/figures/plot_tiny.py",
        "expected": "y", "base": [*test_runner.BASE[1:-1], *LONGER],
        "runs": [{"id": "first", "overrides": ["seed=1"]}, {"id": "second", "overrides": ["seed=2"]}],
    }
    yaml_path = tmp_path / "figurey.yaml"
    yaml_path.write_text(json.dumps(spec))
    reference = reproduce.reproduce(str(yaml_path), "quick", [f"results_root={tmp_path / 'ref'}"],
                                    plot_figure=False)
    args = [f"figure={yaml_path}", "profile=quick", "plot=false", f"results_root={tmp_path / 'int'}"]
    fig_dir = tmp_path / "int" / "quick" / "figurey"
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.reproduce", *args], cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 240
    while not (fig_dir / "runs" / "second" / runner.CKPT).exists() and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=240)
    if proc.returncode == 0:
        pytest.skip("the figure finished before the interrupt (machine too fast for this test's timing)")
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: second stopped at outer step "), stderr
    assert str(fig_dir / "runs" / "second" / runner.CSV) in last and last.endswith(
        "rerun the same command to resume"), last
    assert json.loads((fig_dir / reproduce.RECORD).read_text())["status"] == "interrupted"
    assert json.loads((fig_dir / "runs" / "first" / runner.META).read_text())["status"] == "complete"
    assert not (fig_dir / "metrics.csv").exists()
    csv = reproduce.reproduce(str(yaml_path), "quick", [args[3]], plot_figure=False)
    assert csv.read_bytes() == reference.read_bytes()
    record = json.loads((fig_dir / reproduce.RECORD).read_text())
    assert record["status"] == "complete" and set(record["runs"]) == {"first", "second"}
