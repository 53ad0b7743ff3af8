"""experiments.compare: a figure's results against its stored reference, value by value."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest

from experiments import compare, config, integrity
from experiments.config import ROOT

STORED = ROOT / "results" / "reference" / "quick" / "figure9"


def _table(values, source="run", metric="loss"):
    return pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(len(values))],
            "outer_step": list(range(len(values))),
            "metric": metric,
            "source": source,
            "value": values,
        }
    )


def test_equal_tables_compare_identical_and_nan_equals_nan():
    stored = _table([1.0, np.nan, -0.0])
    c = compare.compare_tables("metrics", stored, _table([1.0, np.nan, 0.0]).iloc[::-1])
    assert c.identical and c.stored_rows == 3 and c.extra == 0 and c.measured == 0
    assert compare.table_lines(c) == ["metrics: 3 stored rows, every one found; 3 values equal"]


def test_the_smallest_change_a_missing_row_and_an_extra_row_are_each_found():
    stored = _table([1.0, 2.0, 3.0])
    new = _table([1.0, float(np.nextafter(2.0, 3.0)), 3.0]).drop(index=2)
    new = pd.concat([new, _table([9.0]).assign(run_id="only-new")], ignore_index=True)
    c = compare.compare_tables("metrics", stored, new)
    assert not c.identical
    changed = float(np.nextafter(2.0, 3.0))
    assert c.differ[["run_id", "value", "value_new"]].values.tolist() == [["r1", 2.0, changed]]
    assert c.differ["abs_diff"].iloc[0] == pytest.approx(2 * np.finfo(float).eps)
    assert c.missing["run_id"].tolist() == ["r2"] and c.extra == 1
    text = "\n".join(compare.table_lines(c))
    assert "3 stored rows, 1 not found; 1 values equal, 1 differ; 1 rows only in the new table" in text
    assert "run/loss: 1 row(s) of 1 run(s); largest |difference| 4.44e-16 at source run, run_id r1" in text


def test_a_value_that_became_nan_is_the_largest_difference():
    stored = _table([1.0, 2.0], metric="loss")
    stored = pd.concat([stored, _table([5.0], metric="acc")], ignore_index=True)
    new = stored.assign(value=[1.0, 2.5, np.nan])
    c = compare.compare_tables("metrics", stored, new)
    assert len(c.differ) == 2
    lines = compare.table_lines(c)
    assert lines[1].startswith("  run/acc: 1 row(s) of 1 run(s); largest |difference| inf")  # listed first
    assert "(stored 5, new nan)" in lines[1] and lines[2].startswith("  run/loss: 1 row(s)")


def test_wall_clock_rows_are_looked_up_not_compared():
    timing = {"source": "timing", "metric": "s_per_step"}
    stored = pd.concat([_table([1.0]), _table([0.5], **timing)], ignore_index=True)
    new = pd.concat([_table([1.0]), _table([0.7], **timing)], ignore_index=True)
    c = compare.compare_tables("metrics", stored, new)
    assert c.identical and c.measured == 1
    assert "1 rows of timing (wall-clock measurements) not compared" in compare.table_lines(c)[0]
    # negative control: the same difference in a run's row is a finding
    assert not compare.compare_tables("metrics", _table([0.5]), _table([0.7])).identical
    # and a timing row the new table lacks is still missing
    assert not compare.compare_tables("metrics", stored, _table([1.0])).identical


def test_tables_that_cannot_be_compared_fail_in_one_line():
    lacks = "the new table lacks the stored table's column\\(s\\) source"
    with pytest.raises(config.ConfigError, match=lacks):
        compare.compare_tables("metrics", _table([1.0]), _table([1.0]).drop(columns="source"))
    twice = pd.concat([_table([1.0]), _table([2.0])], ignore_index=True)
    with pytest.raises(config.ConfigError, match="1 row\\(s\\) of the stored table repeat another row's key"):
        compare.compare_tables("metrics", twice, _table([1.0]))


def _run(*args):
    out = io.StringIO()
    code = compare.run(list(args), out=out)
    return code, out.getvalue()


def test_a_copy_of_the_stored_results_reproduces_every_value(tmp_path):
    shutil.copytree(STORED, tmp_path / "quick" / "figure9")
    code, text = _run("figure=9", f"results_root={tmp_path}")
    assert code == 0, text
    assert "metrics: " in text and "every one found" in text and " differ" not in text.split("\n")[1]
    assert text.rstrip().endswith("compare: every stored value reproduced (exit 0)")


def test_a_changed_verified_table_is_a_finding_and_a_damaged_one_is_refused(tmp_path):
    fig_dir = tmp_path / "quick" / "figure9"
    shutil.copytree(STORED, fig_dir)
    path = fig_dir / "metrics.csv.gz"
    df = pd.read_csv(path)
    df.loc[df.index[-1], "value"] = np.nextafter(df.loc[df.index[-1], "value"], np.inf)
    path.unlink()
    df.to_csv(fig_dir / "metrics.csv", index=False)
    integrity.record_digests(fig_dir)  # a genuinely different, verified table
    code, text = _run("figure=9", f"results_root={tmp_path}")
    assert code == 1, text
    assert ", 1 differ" in text and f"run_id {df['run_id'].iloc[-1]}" in text
    assert text.rstrip().endswith("(exit 1)")
    # the same change without its digest: damaged, nothing compared
    df.loc[df.index[0], "value"] += 1.0
    df.to_csv(fig_dir / "metrics.csv", index=False)
    with pytest.raises(integrity.Damaged):
        _run("figure=9", f"results_root={tmp_path}")


def test_no_results_and_bad_arguments(tmp_path):
    code, text = _run("figure=9", f"results_root={tmp_path}")
    assert code == 3 and "run `make reproduce-figure-9 PROFILE=quick` first" in text
    shutil.copytree(STORED, tmp_path / "quick" / "figure9")
    code, text = _run("figure=9", f"results_root={tmp_path}", f"against={tmp_path / 'nothing'}")
    assert code == 3 and "against=<folder>" in text
    with pytest.raises(config.ConfigError, match="argument 'x=1' is invalid; allowed: figure=..."):
        _run("figure=9", "x=1")
