"""`experiments.migrate`: a stored figure table without `source` becomes the current schema with
every cell unchanged, only where its source is provable; a table without the column is refused.

On copies of the stored figure 2 (quick) results turned back into the old schema (no compute).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from experiments import check, claims, config, integrity, migrate
from pes import results

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "results" / "reference"
STORED2 = STORE / "quick" / "figure2"
STORED3 = STORE / "quick" / "figure3"


def legacy_copy(root: Path, src: Path = STORED2, *, gz: bool = False) -> tuple[Path, bytes]:
    """A copy of a stored figure folder whose merged table has no ``source`` column (as tables
    were written before it existed), digests recorded; returns the folder and the old CSV text."""
    fig_dir = root / src.parent.name / src.name
    shutil.copytree(src, fig_dir)
    path = fig_dir / "metrics.csv"
    lines = path.read_text().splitlines()
    assert lines[0].endswith(",source")
    text = "".join(line.rsplit(",", 1)[0] + "\n" for line in lines).encode()
    path.unlink()
    if gz:
        (fig_dir / "metrics.csv.gz").write_bytes(gzip.compress(text))
    else:
        path.write_bytes(text)
    record = json.loads((fig_dir / "figure.json").read_text())
    record.pop("migrated", None)
    (fig_dir / "figure.json").write_text(json.dumps(record))
    integrity.record_digests(fig_dir)
    return fig_dir, text


def run_check(root: Path, capsys, figure: str = "figure2") -> tuple[int, str]:
    code = check.run([f"figure={figure}", "profile=quick", f"results_root={root}"])
    return code, capsys.readouterr().out


def test_a_table_without_source_is_refused_with_the_migration_command(tmp_path, capsys, monkeypatch):
    fig_dir, _ = legacy_copy(tmp_path)
    argv = ["figure=figure2", "profile=quick", f"results_root={tmp_path}"]
    monkeypatch.setattr("sys.argv", ["check", *argv])
    with pytest.raises(SystemExit) as exit_:
        check.main()
    assert exit_.value.code == claims.EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"error: {fig_dir / 'metrics.csv'}: no 'source' column")
    assert f"fix: python -m experiments.migrate folder={fig_dir} -- check: a configuration problem" in line


@pytest.mark.parametrize("gz", [False, True])
def test_migration_keeps_every_cell_and_the_check_reads_as_before(tmp_path, capsys, gz):
    fig_dir, old = legacy_copy(tmp_path, gz=gz)
    before = integrity.digest(old)
    assert migrate.main([f"folder={fig_dir}"]) == 0
    assert "source=run (figure2 has no post-steps" in capsys.readouterr().out
    name = "metrics.csv.gz" if gz else "metrics.csv"
    data = integrity.table_bytes(fig_dir / name, "")
    assert not (fig_dir / ("metrics.csv" if gz else "metrics.csv.gz")).exists()
    if gz:
        assert gzip.decompress((fig_dir / name).read_bytes()) == data  # still gzip
    new_lines, old_lines = data.decode().splitlines(), old.decode().splitlines()
    assert new_lines == [old_lines[0] + ",source"] + [line + ",run" for line in old_lines[1:]]
    assert data == (STORED2 / "metrics.csv").read_bytes()  # what the store holds now
    record = json.loads((fig_dir / "figure.json").read_text())
    (entry,) = record["migrated"]
    assert entry["before"] == before and entry["source"] == "run" and entry["table"] == name
    assert entry["from_columns"] == list(results.COLUMNS)
    assert entry["to_columns"] == list(results.FIGURE_COLUMNS)
    assert record["digests"][name] == integrity.digest(data)
    code, out = run_check(tmp_path, capsys)
    assert code == 0 and "10 PASS, 0 FAIL, 0 NOT RUN" in out
    assert migrate.main([f"folder={fig_dir}"]) == 0  # a second time: nothing to do
    assert "already in the current schema" in capsys.readouterr().out
    assert json.loads((fig_dir / "figure.json").read_text()) == record


def test_a_row_of_no_run_is_not_labelled_run(tmp_path):
    fig_dir, old = legacy_copy(tmp_path)
    first = old.decode().splitlines()[1]
    extra = "baseline," + first.split(",", 1)[1] + "\n"
    (fig_dir / "metrics.csv").write_bytes(old + extra.encode())
    integrity.record_digests(fig_dir)
    with pytest.raises(
        config.ConfigError, match=r"run ids baseline are not runs of figure2 under profile quick"
    ):
        migrate.migrate(fig_dir)
    assert (fig_dir / "metrics.csv").read_bytes() == old + extra.encode()  # untouched


def test_duplicate_rows_are_refused_naming_the_file(tmp_path):
    fig_dir, old = legacy_copy(tmp_path)
    first = old.decode().splitlines()[1]
    (fig_dir / "metrics.csv").write_bytes(old + (first + "\n").encode())
    integrity.record_digests(fig_dir)
    with pytest.raises(
        config.ConfigError, match=r"csv cannot be migrated: duplicate rows, e.g. run tbptt-k1"
    ):
        migrate.migrate(fig_dir)


def test_runs_and_post_steps_need_stated_evidence(tmp_path):
    fig_dir, old = legacy_copy(tmp_path, STORED3)
    with pytest.raises(
        config.ConfigError, match=r"figure3 has runs and post-steps \(grid\), so the rows' source"
    ):
        migrate.migrate(fig_dir)
    with pytest.raises(config.ConfigError, match="source= needs reason="):
        migrate.migrate(fig_dir, source="run")
    with pytest.raises(
        config.ConfigError, match="'evaluation' is not a post-step of figure3; allowed: run, grid"
    ):
        migrate.migrate(fig_dir, source="evaluation", reason="x")
    # the stored quick table has grid rows (run id "grid"): stated `run` is still checked
    with pytest.raises(config.ConfigError, match="run ids grid are not runs of figure3"):
        migrate.migrate(fig_dir, source="run", reason="all runs")
    assert (fig_dir / "metrics.csv").read_bytes() == old


def test_a_damaged_table_is_not_migrated(tmp_path):
    fig_dir, old = legacy_copy(tmp_path)
    (fig_dir / "metrics.csv").write_bytes(old.replace(b"e-14", b"e-04", 1))
    with pytest.raises(integrity.Damaged, match="does not match its digest"):
        migrate.migrate(fig_dir)


def test_every_stored_table_has_the_current_columns_and_verifies():
    """The reference store after its migration: every merged table has `FIGURE_COLUMNS` and
    matches the digest in its figure.json; a migrated one records where it came from."""
    folders = sorted(p.parent for p in STORE.glob("*/figure*/figure.json"))
    assert len(folders) >= 17
    for fig_dir in folders:
        path = migrate._table(fig_dir)
        record, texts = integrity.verify(fig_dir, [path], migrate.METRICS_NAMES, "restore it")
        header = texts[path].split(b"\n", 1)[0].decode()
        assert tuple(header.split(",")) == results.FIGURE_COLUMNS, path
        for entry in record.get("migrated", []):
            assert entry["tool"] == migrate.TOOL and entry["evidence"]
            assert entry["before"]["rows"] == record["digests"][entry["table"]]["rows"]
