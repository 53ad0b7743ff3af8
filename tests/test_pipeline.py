"""The figure pipeline end to end on the tiny test figure (tests/figures/tiny.yaml):
runs -> post-step -> one merged CSV with `source` -> plot -> figure.json -> notebook;
the artefact cache of post-steps; the merged table's schema."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from experiments import artefacts, reproduce, runner
from experiments.steps import grid as grid_step
from pes import results
from tests import notebook_runner

ROOT = Path(__file__).resolve().parent.parent
TINY = "tests/figures/tiny.yaml"


def record(csv: Path) -> dict:
    return json.loads((csv.parent / "figure.json").read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    args = [f"results_root={root}", "progress=false"]
    return reproduce.reproduce(TINY, "quick", args), args


def test_merged_table_has_the_runs_and_the_step_told_apart_by_source(tiny):
    csv, _ = tiny
    df = results.validate(pd.read_csv(csv), expected_runs=["pes", "es"])
    assert tuple(df.columns) == results.FIGURE_COLUMNS
    assert set(df["source"]) == {"run", "grid"}
    runs = results.run_rows(df)
    assert set(runs["run_id"]) == {"pes", "es"} and set(runs["estimator"]) == {"pes", "es"}
    assert sorted(runs["outer_step"].unique()) == [0, 2, 4]
    grid = results.source_rows(df, "grid").set_index("metric")["value"]
    assert set(results.source_rows(df, "grid")["run_id"]) == {"grid"}
    surface = pd.read_csv(csv.with_name("grid.csv"))
    assert list(surface.columns) == ["task", "metric", "theta/0", "theta/1", "value"] and len(surface) == 9
    assert grid["full_loss/min"] == surface["value"].min() and grid["full_loss/max"] == surface["value"].max()
    best = surface.loc[surface["value"].idxmin()]
    assert (grid["full_loss/argmin/0"], grid["full_loss/argmin/1"]) == (best["theta/0"], best["theta/1"])
    at_init = surface[(surface["theta/0"] == 0) & (surface["theta/1"] == 0)]["value"].iloc[0]
    assert grid["full_loss/at_init"] == at_init  # theta_init = (0, 0) is a grid point
    # the step's own file holds exactly its rows; nothing rewrote a run's CSV
    own = pd.read_csv(csv.parent / "steps" / "grid.csv")
    assert tuple(own.columns) == results.COLUMNS and len(own) == len(grid)
    run_csv = pd.read_csv(csv.parent / "runs" / "pes" / runner.CSV)
    assert tuple(run_csv.columns) == results.COLUMNS


def test_figure_record(tiny):
    csv, _ = tiny
    rec = record(csv)
    assert rec["figure"] == "tiny" and rec["profile"] == "quick" and rec["status"] == "complete"
    assert rec["config"] == TINY
    for key in ("git_commit", "machine", "packages", "start_time", "end_time", "wall_time_s"):
        assert key in rec, key
    assert set(rec["runs"]) == {"pes", "es"}
    for run in rec["runs"].values():
        assert run["status"] == "complete" and run["wall_time_s"] > 0 and len(run["fingerprint"]) == 12
    step = rec["steps"]["grid"]
    assert (
        step["cached"] is False
        and step["wall_time_s"] > 0
        and step["files"] == ["grid.csv", "steps/grid.csv"]
    )
    assert rec["rows"] == {"grid": 7, "run": int((pd.read_csv(csv)["source"] == "run").sum())}
    assert rec["compute_wall_time_s"] >= step["wall_time_s"]
    assert 0 < rec["cpu_time_s"] and "jobs" not in rec  # serial: this process's time alone
    png = csv.parent.parent / "figures" / "tiny.png"
    assert png.stat().st_size > 5_000 and rec["plot"]["files"] == ["figures/tiny.png"]


def test_rerun_reuses_runs_and_step_and_a_changed_setting_recomputes(tiny, tmp_path, monkeypatch):
    root = tmp_path / "results"  # a copy: the other tests keep the module's results
    shutil.copytree(tiny[0].parent.parent.parent, root)
    args = [f"results_root={root}", "progress=false"]
    csv = root / "quick" / "tiny" / "metrics.csv"
    runs_before = {p: p.stat().st_mtime_ns for p in (csv.parent / "runs").glob("*/metrics.csv")}
    surface = csv.with_name("grid.csv")
    before = surface.stat().st_mtime_ns
    with monkeypatch.context() as m:
        m.setattr(grid_step, "evaluate_blocks", lambda *a, **k: pytest.fail("the grid was recomputed"))
        reproduce.reproduce(
            TINY, "quick", [*args, "grid.chunk_size=2"], plot_figure=False
        )  # memory knob only
    assert record(csv)["steps"]["grid"]["cached"] is True and surface.stat().st_mtime_ns == before
    assert {p: p.stat().st_mtime_ns for p in runs_before} == runs_before
    # a result-relevant setting changes the fingerprint: computed again, runs still reused
    reproduce.reproduce(TINY, "quick", [*args, "grid.num=4"], plot_figure=False)
    rec = record(csv)
    assert rec["steps"]["grid"]["cached"] is False and len(pd.read_csv(surface)) == 16
    assert {p: p.stat().st_mtime_ns for p in runs_before} == runs_before
    # a changed task changes both: the runs (moved aside with overwrite=true) and the grid are recomputed
    reproduce.reproduce(TINY, "quick", [*args, "task.target=2.0", "overwrite=true"], plot_figure=False)
    rec = record(csv)
    assert rec["steps"]["grid"]["cached"] is False
    assert all(p.stat().st_mtime_ns != t for p, t in runs_before.items())
    # a deleted output file is noticed: recomputed, not trusted
    surface.unlink()
    reproduce.reproduce(TINY, "quick", [*args, "task.target=2.0", "overwrite=true"], plot_figure=False)
    assert record(csv)["steps"]["grid"]["cached"] is False and surface.exists()


def test_notebook_runs_the_figures_plot_code(tiny):
    csv, _ = tiny
    nb = notebook_runner.execute(TINY, csv)
    assert not [o for o in notebook_runner.outputs(nb) if o.output_type == "error"]
    assert notebook_runner.has_image(nb)
    text = notebook_runner.text(nb)
    assert "Tiny test figure" in text and "final full_loss" in text


def test_a_failing_plot_is_one_line_and_keeps_the_table(tiny, tmp_path):
    csv, args = tiny
    script = tmp_path / "plot_broken.py"
    script.write_text("import sys\nprint('error: no such metric', file=sys.stderr)\nsys.exit(2)\n")
    data = yaml.safe_load((ROOT / TINY).read_text())
    data["plot"] = str(script)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(reproduce.PlotFailed) as info:
        reproduce.reproduce(str(path), "quick", args)
    assert str(info.value) == (
        f"plot script {script} failed (exit 2): error: no such metric; the merged table is kept in {csv}"
    )
    assert csv.exists() and record(csv)["status"] == "failed"


def test_merge_and_validate_keep_sources_apart():
    row = dict(
        run_id="a", figure="f", task="t", estimator="pes", trunc_len=1, sigma=0.1, num_particles=2, seed=0
    )
    run = results.frame([dict(row, outer_step=0, inner_steps=0, metric="loss", value=1.0)])
    curve = results.frame([dict(row, outer_step=0, inner_steps=0, metric="loss", value=2.0)])
    merged = results.validate(results.merge([("run", run), ("inner_curves", curve)]), expected_runs=["a"])
    assert list(merged["source"]) == ["run", "inner_curves"]  # same key, other source: allowed
    with pytest.raises(
        results.SchemaError, match="duplicate rows, e.g. run a metric loss step 0 .source run"
    ):
        results.validate(results.merge([("run", run), ("run", run)]))
    with pytest.raises(results.SchemaError, match=r"missing runs: \['a'\]"):
        results.validate(results.merge([("inner_curves", curve)]), expected_runs=["a"])
    with pytest.raises(results.SchemaError, match="rows of 'x' have columns"):
        results.merge([("x", run.assign(extra=1))])
    assert tuple(results.merge([]).columns) == results.FIGURE_COLUMNS


def test_one_fingerprint_function():
    assert artefacts.fingerprint({"a": 1, "b": [1.0, 2]}) == artefacts.fingerprint({"b": [1.0, 2], "a": 1})
    assert artefacts.fingerprint({"a": np.float64(1.5)}) == artefacts.fingerprint({"a": 1.5})
    assert artefacts.fingerprint({"a": 1}) != artefacts.fingerprint({"a": 2})


def test_reproduce_writes_nothing_but_the_record_when_interrupted(tiny, tmp_path, monkeypatch):
    _, args = tiny
    root = tmp_path / "r"

    def interrupt(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", interrupt)
    with pytest.raises(KeyboardInterrupt):
        reproduce.reproduce(TINY, "quick", [f"results_root={root}", "progress=false"])
    rec = json.loads((root / "quick" / "tiny" / "figure.json").read_text())
    assert rec["status"] == "interrupted" and not (root / "quick" / "tiny" / "metrics.csv").exists()
    shutil.rmtree(root)
