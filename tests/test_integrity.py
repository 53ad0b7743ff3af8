"""Integrity around the runner: verified inputs for every verdict, ids and paths that cannot
escape, working-folder independence, one line for every file problem, the size guard.

Each case a skeptical user tried is here, on the stored figure 2 results (no compute), the
cheap linear-quadratic run of tests/test_faults.py or the tiny figure (tests/figures/tiny.yaml).
The table in docs/robustness.md lists the cases with their tests.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from experiments import check, claims, cli, config, figures, integrity, io, reproduce, runner, sizes
from pes import results
from tests import test_runner
from tests.helpers import make_quick

ROOT = Path(__file__).resolve().parent.parent
STORED2 = ROOT / "results" / "reference" / "quick" / "figure2"  # figure 2, quick, with its digest
TINY = "tests/figures/tiny.yaml"
CHEAP = [*test_runner.BASE, "run_id=cheap"]  # linear-quadratic PES, 40 steps in 4 chunks
PES_3000 = "pes-k1,figure2,influence_balancing,pes,1,0.1,1000,3,3000,3000,loss,8.704148513061227e-14,run\n"


def one_line(text: str) -> str:
    """The one line a problem prints (besides the check's closing ``check: ...`` outcome line)."""
    lines = [line for line in text.strip().splitlines() if line.strip() and not line.startswith("check: ")]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def cheap(root: Path, *extra: str):
    return config.compose([*CHEAP, f"results_root={root}", *extra])


def stored_copy(root: Path) -> Path:
    """A results root holding a copy of the stored figure 2 (quick) results."""
    fig_dir = root / "quick" / "figure2"
    shutil.copytree(STORED2, fig_dir)
    return fig_dir


def check2(root: Path, capsys) -> tuple[int, str]:
    code = check.run(["figure=figure2", "profile=quick", f"results_root={root}"])
    return code, capsys.readouterr().out


# ----------------------------------------------------------------------------- verified inputs


def test_an_untouched_merged_csv_checks_as_before(tmp_path, capsys):
    stored_copy(tmp_path)
    code, out = check2(tmp_path, capsys)
    assert code == claims.EXIT_OK  # every claim passes on these results, as before
    assert "10 PASS, 0 FAIL, 0 NOT RUN" in out and "pes-k1 first at 2200 (want <= 2250) | PASS" in out


def _edit(fig_dir: Path, old: bytes, new: bytes) -> Path:
    csv = fig_dir / "metrics.csv"
    data = csv.read_bytes()
    assert data.count(old) == 1
    csv.write_bytes(data.replace(old, new))
    return csv


def test_a_hand_edited_value_is_refused_not_measured(tmp_path, capsys):
    fig_dir = stored_copy(tmp_path)
    edited = PES_3000.replace("e-14", "e-04")  # PES's final loss x 1e10: same size, other bytes
    csv = _edit(fig_dir, PES_3000.encode(), edited.encode())
    # negative control: read without verification, the edit flips pes-converges to FAIL (exit 1)
    fig = figures.load("figure2")
    rows = claims.evaluate(claims.validate(fig.claims, fig), pd.read_csv(csv), profile="quick", fig=fig)
    assert {r.id: r.verdict for r in rows}["pes-converges"] == claims.FAIL and claims.exit_code(
        rows
    ) == claims.EXIT_FAIL
    code, out = check2(tmp_path, capsys)
    assert code == integrity.EXIT_DAMAGED
    line = one_line(out)
    assert line.startswith(f"figure2 (quick): not checked: {csv} does not match its digest in ")
    assert "content changed after it was written (same size, 6314 rows, another SHA-256)" in line
    assert "fix: rebuild it with `make reproduce-figure-2 PROFILE=quick RESULTS=" in line
    assert "PASS" not in out


def test_a_garbled_cell_is_refused_naming_file_line_and_column(tmp_path, capsys):
    fig_dir = stored_copy(tmp_path)
    csv = _edit(fig_dir, b"2.1760371282653068e-10", b"2.17603x1282653068e-10")  # step 2000's loss
    code, out = check2(tmp_path, capsys)
    assert code == integrity.EXIT_DAMAGED and f"{csv} does not match its digest" in one_line(out)
    # the same cell in a table whose digest was recorded with it: the strict parser says where
    integrity.record_digests(fig_dir)
    code, out = check2(tmp_path, capsys)
    assert code == integrity.EXIT_DAMAGED
    assert f"{csv}, line 4161: value='2.17603x1282653068e-10' is not a number; fix: " in one_line(out)


@pytest.mark.parametrize(
    "cell, problem",
    [
        ("", "seed is empty"),
        ("3.5", "seed='3.5' is not an integer"),
        ("NULL", "seed='NULL' is not an integer"),
    ],
)
def test_strict_numbers_in_integer_columns(tmp_path, cell, problem):
    path = tmp_path / "metrics.csv"
    text = ",".join(results.COLUMNS) + "\n"
    text += "a,f,t,pes,1,0.1,2,0,0,0,loss,1.0\n"
    text += f"a,f,t,pes,1,,2,{cell},1,1,loss,inf\n"
    with pytest.raises(integrity.Damaged, match=f"line 3: {problem}; fix: x"):
        integrity.read_table(path, text.encode(), results.COLUMNS, integrity.METRICS_NUMBERS, fix="x")
    fine = integrity.read_table(
        path,
        text.replace(f",{cell},1,1", ",7,1,1").encode(),
        results.COLUMNS,
        integrity.METRICS_NUMBERS,
        fix="x",
    )
    assert (
        fine["seed"].tolist() == [0, 7]
        and np.isnan(fine["sigma"].iloc[1])
        and fine["value"].iloc[1] == np.inf
    )
    for bad, what in (("NULL", "value='NULL' is not a number"), ("nan", "value='nan' is not a number")):
        with pytest.raises(integrity.Damaged, match=what):
            integrity.read_table(
                path,
                text.replace(",inf\n", f",{bad}\n").replace(f",{cell},", ",1,").encode(),
                results.COLUMNS,
                integrity.METRICS_NUMBERS,
                fix="x",
            )


def test_a_truncated_merged_csv_is_refused_not_measured(tmp_path, capsys):
    fig_dir = stored_copy(tmp_path)
    csv = fig_dir / "metrics.csv"
    csv.write_bytes(csv.read_bytes()[:300_000])  # cut mid-line
    code, out = check2(tmp_path, capsys)
    assert code == integrity.EXIT_DAMAGED
    line = one_line(out)
    assert f"{csv} does not match its digest" in line and "shorter than when it was written" in line
    assert "NOT RUN" not in out and "es-diverges" not in out
    csv.write_bytes(csv.read_bytes()[:299_990])  # mid-line (300,000 bytes end a line of this file)
    integrity.record_digests(fig_dir)  # recorded as it is now: the parser still sees the cut line
    code, out = check2(tmp_path, capsys)
    assert code == integrity.EXIT_DAMAGED and "the file ends inside a line (cut short)" in out


def test_results_without_a_digest_are_not_verifiable_and_a_missing_recorded_table_is_damage(tmp_path, capsys):
    fig_dir = stored_copy(tmp_path)
    (fig_dir / "figure.json").unlink()
    code, out = check2(tmp_path, capsys)
    assert (
        code == integrity.EXIT_DAMAGED and f"cannot be verified: there is no {fig_dir / 'figure.json'}" in out
    )
    record = json.loads((STORED2 / "figure.json").read_text())
    record["digests"]["grid.csv"] = record["digests"]["metrics.csv"]
    (fig_dir / "figure.json").write_text(json.dumps(record))
    code, out = check2(tmp_path, capsys)
    assert code == integrity.EXIT_DAMAGED and f"{fig_dir / 'grid.csv'} is missing" in out
    (fig_dir / "figure.json").write_text("{\n  truncated")
    code, out = check2(tmp_path, capsys)
    assert code == integrity.EXIT_DAMAGED and "figure.json, line 2: invalid JSON" in out


def test_a_folder_where_the_merged_csv_belongs(tmp_path, capsys):
    fig_dir = stored_copy(tmp_path)
    (fig_dir / "metrics.csv").unlink()
    (fig_dir / "metrics.csv").mkdir()
    code, out = check2(tmp_path, capsys)
    assert code == integrity.EXIT_DAMAGED
    assert f"{fig_dir / 'metrics.csv'} is a folder where a table file belongs" in one_line(out)


def test_every_stored_reference_result_verifies_and_restoring_is_the_fix():
    stored = sorted(
        p
        for p in (ROOT / "results" / "reference").glob("*/figure*")
        if p.is_dir()
        and p.parent.name in config.profile_names()  # official/ holds the official code's outcomes
    )
    assert len(stored) >= 14
    for fig_dir in stored:
        res = check.load(fig_dir)  # verified against its figure.json's digests, parsed strictly
        assert (
            res.metrics is not None
            and len(res.metrics)
            == json.loads((fig_dir / "figure.json").read_text())["digests"][res.metrics_path.name]["rows"]
        )
    assert integrity.rebuild_hint(STORED2).startswith(
        "restore the committed files with `git checkout -- results/reference/quick/figure2`"
    )


def test_the_check_never_crashes_on_an_output_encoding_without_the_characters():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.check",
            "figure=figure2",
            "profile=quick",
            "results_root=results/reference",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="ascii"),
        capture_output=True,
        timeout=300,
    )
    assert out.returncode == claims.EXIT_OK, out.stderr.decode()  # every claim passes: exit 0, not a crash
    assert b"Traceback" not in out.stderr and b"\\u2014 machine" in out.stdout
    assert b"10 PASS, 0 FAIL, 0 NOT RUN" in out.stdout


# ----------------------------------------------------------------------------- ids and paths


@pytest.mark.parametrize(
    "override, key",
    [
        ("run_id=..", "run_id"),
        ("run_id=.", "run_id"),
        ("run_id=.hidden", "run_id"),
        ("run_id='../../x'", "run_id"),
        ("run_id=a/b", "run_id"),
        ("run_id=/abs", "run_id"),
        ("run_id='a\\nb'", "run_id"),
        ("run_id=-x", "run_id"),
        (f"run_id={'a' * 129}", "run_id"),
        ("figure_id=..", "figure_id"),
        ("profile.name=../../x", "profile.name"),
    ],
)
def test_ids_that_become_paths_cannot_escape(tmp_path, override, key):
    with pytest.raises(config.ConfigError) as info:
        runner.run(cheap(tmp_path, override))
    text = one_line(str(info.value))
    assert text.startswith(f"{key}=") and "is invalid; allowed: letters, digits" in text
    assert not any(tmp_path.iterdir())  # refused before anything is created


def test_overwrite_only_moves_the_runs_own_folder(tmp_path):
    cfg = config.RunSpec.from_config(cheap(tmp_path))
    out = runner.check(cfg)
    for other in (out.parent, out.parent.parent, tmp_path):  # runs/, the figure, the results root
        with pytest.raises(io.FileProblem, match="overwrite=true only moves a run's own folder aside"):
            runner.own_folder(cfg, other)
    out.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.symlink_to(elsewhere)  # the run folder is a link to another folder: not moved either
    with pytest.raises(io.FileProblem, match="is not the run folder"):
        runner.own_folder(cfg, out)
    out.unlink()
    runner.check(cfg)
    runner.own_folder(cfg, out)  # its own folder: allowed


@pytest.mark.parametrize("figure", ["../../etc/passwd", "/etc/passwd", "figure../../x"])
def test_a_figure_path_that_is_not_a_figure_yaml_is_refused_without_its_content(figure, tmp_path):
    with pytest.raises(config.ConfigError) as info:
        reproduce.prepare(figure, "quick", [f"results_root={tmp_path}"])
    text = one_line(str(info.value))
    assert "root:" not in text and len(text) < 300
    assert text.startswith("figure=") and "allowed: figure2" in text


def test_a_yaml_that_is_not_a_figure_never_echoes_its_content(tmp_path):
    path = tmp_path / "notes.yaml"
    path.write_text("secret-" + "x" * 2000 + ": 1\n")
    with pytest.raises(config.ConfigError) as info:
        figures.load(str(path))
    assert len(one_line(str(info.value))) < 400 and "x" * 100 not in str(info.value)


def test_a_relative_results_root_is_taken_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = cheap("relres")
    assert cfg.results_root == str(tmp_path / "relres")
    assert config.run_dir(cfg) == tmp_path / "relres" / "quick" / "adhoc" / "runs" / "cheap"


# ----------------------------------------------------------------------------- the tiny figure


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    reproduce.reproduce(TINY, "quick", [f"results_root={root}", "progress=false"], plot_figure=False)
    return root


@pytest.fixture
def tiny(tiny_root, tmp_path) -> tuple[Path, list[str]]:
    root = tmp_path / "results"
    shutil.copytree(tiny_root, root)
    return root / "quick" / "tiny", [f"results_root={root}", "progress=false"]


def test_the_record_holds_the_merged_tables_digest_and_the_runs_it_was_merged_from(tiny):
    fig_dir, _ = tiny
    record = json.loads((fig_dir / "figure.json").read_text())
    assert record["digests"]["metrics.csv"] == integrity.file_digest(fig_dir / "metrics.csv")
    assert record["digests"]["grid.csv"] == integrity.file_digest(fig_dir / "grid.csv")
    for run in ("pes", "es"):
        assert record["runs"][run]["csv"] == integrity.file_digest(fig_dir / "runs" / run / "metrics.csv")
    assert record["size_estimate"]["rows"] > 0


def test_a_run_csv_that_changed_after_the_merge_is_named(tiny, capsys):
    fig_dir, args = tiny
    run_csv = fig_dir / "runs" / "es" / "metrics.csv"
    run_csv.write_bytes(run_csv.read_bytes()[:-20])
    assert check.run([f"figure={TINY}", "profile=quick", args[0]]) == integrity.EXIT_DAMAGED
    line = one_line(capsys.readouterr().out)
    assert f"{run_csv} does not match the run CSV the merged table metrics.csv was built from" in line
    assert "fix: rebuild it with `python -m experiments.reproduce figure=<its YAML> profile=quick" in line


def test_reproduce_keeps_a_hand_edited_merge_aside_and_rebuilds_it(tiny, capfd):
    fig_dir, args = tiny
    csv = fig_dir / "metrics.csv"
    original = csv.read_bytes()
    csv.write_bytes(original.replace(b",full_loss,", b",full_loss,9", 1))
    edited = csv.read_bytes()
    reproduce.reproduce(TINY, "quick", args, plot_figure=False)
    assert csv.read_bytes() == original
    (kept,) = fig_dir.glob("metrics.csv.unverified-*")
    assert kept.read_bytes() == edited
    assert f"note: {csv} differed from the table written last time" in capfd.readouterr().err
    # killed after writing the table but before its record: the table is the one being written, no note
    record = json.loads((fig_dir / "figure.json").read_text())
    record["digests"]["metrics.csv"] = integrity.digest(edited)
    (fig_dir / "figure.json").write_text(json.dumps(record))
    reproduce.reproduce(TINY, "quick", args, plot_figure=False)
    assert len(list(fig_dir.glob("metrics.csv.unverified-*"))) == 1 and "note:" not in capfd.readouterr().err


def test_a_changed_step_table_is_computed_again_not_reused(tiny, capfd):
    fig_dir, args = tiny
    grid = fig_dir / "grid.csv"
    original = grid.read_bytes()
    grid.write_bytes(original.replace(b"full_loss", b"full_lost", 1))
    reproduce.reproduce(TINY, "quick", args, plot_figure=False)
    assert grid.read_bytes() == original
    err = capfd.readouterr().err
    assert f"note: {grid} changed after it was written; computing it again" in err
    assert json.loads((fig_dir / "figure.json").read_text())["steps"]["grid"]["cached"] is False


def _disk_full_on(monkeypatch, name: str) -> None:
    """ENOSPC when the temporary file of an atomic write of ``name`` is synced (as a real
    full disk fails a write: an OSError without a file name)."""
    fsync = os.fsync

    def full(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", full)


@pytest.fixture
def as_a_command():
    """Run a callable as `experiments.cli.main` does, then give the test session its signal
    handlers back."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    yield cli.main
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    sys.unraisablehook = hook


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_a_full_disk_while_writing_the_merged_csv_is_one_line(tiny, monkeypatch, capsys, as_a_command):
    fig_dir, args = tiny
    (fig_dir / "metrics.csv").unlink()
    _disk_full_on(monkeypatch, "metrics.csv")
    with pytest.raises(SystemExit) as info:
        as_a_command(lambda: reproduce.reproduce(TINY, "quick", args, plot_figure=False))
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    line = err.strip().splitlines()[-1]  # after the progress lines of the runs and the step
    assert line.startswith(
        f"error: cannot write {fig_dir / 'metrics.csv'}: No space left on device; fix: free at least "
    )
    assert f"on the disk holding {fig_dir} (free now: " in line
    assert json.loads((fig_dir / "figure.json").read_text())["status"] == "failed"


def test_a_folder_where_a_results_file_belongs_is_one_line_before_compute(tiny, tmp_path):
    fig_dir, args = tiny
    (fig_dir / "metrics.csv").unlink()
    (fig_dir / "metrics.csv").mkdir()
    with pytest.raises(
        io.FileProblem, match=r"metrics.csv is a folder where a file belongs; fix: move that folder"
    ):
        reproduce.prepare(TINY, "quick", args)
    out = runner.check(cheap(tmp_path))
    (out / runner.CSV).mkdir()
    with pytest.raises(io.FileProblem) as info:
        runner.run(cheap(tmp_path))
    assert one_line(str(info.value)) == (
        f"{out / runner.CSV} is a folder where a file belongs; fix: move that folder away, then rerun"
    )


# ----------------------------------------------------------------------------- a full disk mid-run


@pytest.fixture(scope="module")
def reference_csv(tmp_path_factory) -> bytes:
    return (runner.run(cheap(tmp_path_factory.mktemp("reference"))) / runner.CSV).read_bytes()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
@pytest.mark.parametrize("where", ["metrics.csv", "checkpoint.npz", "run.json"])
def test_a_full_disk_mid_run_names_the_file_keeps_a_consistent_step_and_no_running_status(
    reference_csv, tmp_path, monkeypatch, where
):
    """The disk fills up at the CSV's 3rd append, the 2nd checkpoint or the 3rd run.json write;
    from then on every new file fails too (only an overwrite in place still works)."""
    calls = {"n": 0, "full": False}
    append, atomic = io._append, io.atomic_write_bytes
    enospc = OSError(errno.ENOSPC, "No space left on device")

    def full_append(path, data):
        if Path(path).name == where:
            calls["n"] += 1
            calls["full"] |= calls["n"] == 3
        if calls["full"]:
            raise io.naming(enospc, Path(path))
        append(path, data)

    def full_atomic(path, data):
        if Path(path).name == where != "metrics.csv":  # (the CSV's one atomic write: its creation)
            calls["n"] += 1
            calls["full"] |= calls["n"] == (2 if where == "checkpoint.npz" else 3)
        if calls["full"]:
            raise io.naming(enospc, Path(path), len(data))
        atomic(path, data)

    monkeypatch.setattr(io, "_append", full_append)
    monkeypatch.setattr(io, "atomic_write_bytes", full_atomic)
    with pytest.raises(io.FileProblem) as info:
        runner.run(cheap(tmp_path))
    out = config.run_dir(cheap(tmp_path))
    text = one_line(str(info.value))
    assert text.startswith(f"cannot write {out / where}: No space left on device; rows up to outer step ")
    assert "fix: free at least " in text and f"on the disk holding {out} (free now: " in text
    step = int(text.split("rows up to outer step ")[1].split(" ")[0])
    meta = json.loads((out / runner.META).read_text())
    assert meta["status"] == "failed" and meta["failed_after_outer_step"] == step  # not left "running"
    ckpt_step = io.load_checkpoint(out / runner.CKPT, _fresh_state())[1]["outer_step"]
    assert ckpt_step == step  # the message's kept rows are where the rerun resumes
    monkeypatch.undo()
    runner.run(cheap(tmp_path))
    assert (out / runner.CSV).read_bytes() == reference_csv


def _fresh_state():
    import jax

    from pes import outer

    built = config.build(cheap("unused"))
    return outer.init_state(jax.random.key(0), built.task.theta_init, built.estimator, built.optimizer)


# ----------------------------------------------------------------------------- the size guard


def test_an_absurd_size_is_refused_with_the_estimate_and_the_override(tmp_path):
    with pytest.raises(config.ConfigError) as info:
        runner.run(cheap(tmp_path, "train.num_outer_steps=1000000000"))
    text = one_line(str(info.value))
    assert text.startswith("run cheap would write about ") and " GB (" in text
    assert "above max_result_mb=10000; fix: lower train.num_outer_steps or raise train.log_every" in text
    confirm = text.split("confirm with ")[1].split(" ")[0]
    assert not any(tmp_path.iterdir())
    confirmed = config.RunSpec.from_config(cheap(tmp_path, "train.num_outer_steps=1000000000", confirm))
    sizes.check_run(confirmed, tmp_path / "x")
    with pytest.raises(config.ConfigError, match="max_result_mb=0 is invalid"):
        runner.run(cheap(tmp_path, "max_result_mb=0"))
    # a figure: the sum of its runs, refused before any of them runs
    with pytest.raises(config.ConfigError) as info:
        reproduce.prepare(TINY, "quick", [f"results_root={tmp_path}", "train.num_outer_steps=1000000000"])
    text = one_line(str(info.value))
    assert text.startswith("figure tiny (quick) would write about ") and "its largest run, " in text
    assert not any(tmp_path.iterdir())


def test_the_estimate_is_recorded_and_close_to_what_the_run_wrote(tmp_path):
    out = runner.run(cheap(tmp_path))
    estimate = json.loads((out / runner.META).read_text())["size_estimate"]
    rows = len(pd.read_csv(out / runner.CSV))
    assert estimate["rows"] == rows
    assert 0.8 < estimate["csv_bytes"] / (out / runner.CSV).stat().st_size < 1.25
    assert 0.8 < estimate["checkpoint_bytes"] / (out / runner.CKPT).stat().st_size < 1.25


def test_the_figure2_estimate_is_close_to_the_stored_results():
    fig = figures.load("figure2")
    runs = {}
    for run in figures.runs(fig, "quick"):
        cfg = config.compose(figures.run_overrides(fig, run, "quick"))
        runs[str(run.id)] = sizes.run_estimate(config.RunSpec.from_config(cfg))
    estimate = sizes.figure_estimate(runs)
    stored = json.loads((STORED2 / "figure.json").read_text())["digests"]["metrics.csv"]
    assert estimate["rows"] == stored["rows"]
    assert 0.8 < estimate["csv_bytes"] / stored["bytes"] < 1.25


# ----------------------------------------------------------------------------- make check-figure-2


@pytest.mark.parametrize("damage", ["untouched", "hand-edited", "garbled", "truncated"])
def test_make_check_figure_2_refuses_damaged_results_naming_the_file(tmp_path, damage):
    """What a user types, on a copy of the stored figure 2 (quick) results."""
    csv = stored_copy(tmp_path) / "metrics.csv"
    data = csv.read_bytes()
    if damage == "hand-edited":
        data = data.replace(PES_3000.encode(), PES_3000.replace("e-14", "e-04").encode())
    elif damage == "garbled":
        data = data.replace(b"2.1760371282653068e-10", b"2.17603x1282653068e-10")
    elif damage == "truncated":
        data = data[:300_000]
    csv.write_bytes(data)
    out = make_quick("check-figure-2", tmp_path, timeout=300)
    if damage == "untouched":  # as before: the table, every claim passes: exit 0
        assert "10 PASS, 0 FAIL, 0 NOT RUN" in out.stdout and out.returncode == 0, out.stderr
        return
    assert "Error 4" in out.stderr and "| claim |" not in out.stdout
    assert f"figure2 (quick): not checked: {csv}" in out.stdout


# ----------------------------------------------------------------------------- another working folder


DUMP_PLOT = """
import json, sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import pandas as pd
sys.path.insert(0, {figures!r})
import plot_tiny
from pes import results
csv, out = Path(sys.argv[1]), Path(sys.argv[2])
fig = plot_tiny.figures(results.validate(pd.read_csv(csv)), csv.parent)[""]
lines = {{ln.get_label(): [list(map(float, ln.get_xdata())), list(map(float, ln.get_ydata()))]
         for ln in fig.axes[0].get_lines()}}
out.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(out)
out.with_suffix(".json").write_text(json.dumps({{"csv": str(csv), "cwd": str(Path.cwd()), "lines": lines}}))
"""


def test_reproduce_from_another_folder_draws_that_runs_data(tmp_path):
    """From another folder, with the default results root: runs, merged CSV and figure land
    under that folder, and the plot shows that CSV's data (not the project's results)."""
    script = tmp_path / "plot_dump.py"
    script.write_text(DUMP_PLOT.format(figures=str(ROOT / "tests" / "figures")))
    data = yaml.safe_load((ROOT / TINY).read_text())
    data["plot"] = str(script)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    project_results = ROOT / "results" / "quick" / "tiny"
    assert not project_results.exists()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.reproduce",
            f"figure={tmp_path / 'tiny.yaml'}",
            "profile=quick",
            "progress=false",
        ],
        cwd=elsewhere,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    csv = elsewhere / "results" / "quick" / "tiny" / "metrics.csv"
    assert out.stdout.strip() == str(csv) and not project_results.exists()
    drawn = json.loads((elsewhere / "results" / "quick" / "figures" / "tiny.json").read_text())
    assert drawn["csv"] == str(csv)
    df = results.validate(pd.read_csv(csv))
    for run in ("pes", "es"):
        rows = df[(df.run_id == run) & (df.metric == "full_loss") & (df.source == "run")].sort_values(
            "outer_step"
        )
        x, y = drawn["lines"][run]
        np.testing.assert_array_equal(x, rows["outer_step"].to_numpy(float))
        np.testing.assert_array_equal(y, rows["value"].to_numpy(float))
    assert (
        check.run(
            [f"figure={tmp_path / 'tiny.yaml'}", "profile=quick", f"results_root={elsewhere / 'results'}"]
        )
        == claims.EXIT_OK
    )  # verifies
