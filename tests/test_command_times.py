"""scripts/command_times.py: the per-figure wall-time table of a results folder, from figure.json only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import command_times  # noqa: E402


def write(root: Path, figure: str, **record) -> None:
    folder = root / "quick" / figure
    folder.mkdir(parents=True)
    (folder / "figure.json").write_text(json.dumps(record))


def test_table_lists_figures_in_number_order_with_totals(tmp_path):
    write(
        tmp_path,
        "figure10",
        wall_time_s=90.0,
        compute_wall_time_s=150.0,
        cpu_time_s=171.0,
        jobs={"launcher": "joblib", "submitted": ["a", "b", "c"]},
        start_time="s10",
        end_time="e10",
    )
    write(tmp_path, "figure2", wall_time_s=30.5, compute_wall_time_s=20.0, start_time="s2", end_time="e2")
    text = command_times.table(command_times.rows(tmp_path, "quick"))
    lines = text.splitlines()
    assert lines[2].startswith("| figure2 | 0 min 30.5 s | 0 min 20.0 s | — | — | serial | s2 | e2 |")
    row10 = "| figure10 | 1 min 30.0 s | 2 min 30.0 s | 2 min 51.0 s | 1.90 | joblib, 3 jobs |"
    assert lines[3].startswith(row10)
    assert lines[4].startswith("| all (2) | 2 min 00.5 s | 2 min 50.0 s | — | — |")  # one record lacks it
    write(tmp_path, "figure3", wall_time_s=10.0, compute_wall_time_s=9.0, cpu_time_s=12.0)
    (tmp_path / "quick" / "figure2" / "figure.json").write_text(
        json.dumps(dict(wall_time_s=30.5, compute_wall_time_s=20.0, cpu_time_s=30.0))
    )
    total = command_times.table(command_times.rows(tmp_path, "quick")).splitlines()[-1]
    assert total.startswith("| all (3) | 2 min 10.5 s | 2 min 59.0 s | 3 min 33.0 s | 1.63 |")


def test_no_results_is_one_line_and_exit_3(tmp_path, capsys):
    assert command_times.main([str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fix:" in err
