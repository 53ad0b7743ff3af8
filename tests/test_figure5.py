"""End to end: a tiny quick Figure 5 on test-written data (runs, grid, final-theta
evaluations), the plot script and the notebook."""

from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
import yaml

from experiments import reproduce
from experiments.steps import evaluation
from pes import results, tasks
from tests import notebook_runner, plotcheck
from tests.test_mnist_lr_schedule import write_npz

ROOT = Path(__file__).resolve().parent.parent
RUNS = ["pes-k10", "val-pes-k10"]


@pytest.fixture(scope="module")
def tiny_figure(tmp_path_factory):
    """figure5.yaml with three runs and tiny grid/evaluation sizes, on a toy npz dataset."""
    tmp = tmp_path_factory.mktemp("fig5")
    data = write_npz(tmp / "data")
    spec = yaml.safe_load((ROOT / "configs/figure/figure5.yaml").read_text())
    spec["runs"] = [r for r in spec["runs"] if r["id"] in RUNS]
    spec.pop("claims")  # they name the runs left out here
    grid, evaluation = spec["post"]
    grid["quick"] = {"num": 3, "num_runs": 1, "chunk_size": 4}
    evaluation["quick"] = {"num_runs": 2}
    figure = tmp / "figure5.yaml"
    figure.write_text(yaml.safe_dump(spec))
    extra = [
        f"results_root={tmp / 'results'}",
        "progress=false",
        f"task.data_dir={data}",
        "task.data_source=npz",
        "task.dataset=mnist",
        "task.num_val=40",
        "task.horizon=20",
        "task.hidden=[6]",
        "task.downsample=4",
        "task.batch_size=8",
        "task.objective_batch_size=8",
        "estimator.num_particles=4",
        "train.num_outer_steps=6",
        "train.chunk_size=6",
    ]
    try:
        path = reproduce.reproduce(str(figure), "quick", extra)
    finally:
        jax.config.update("jax_enable_x64", True)
    return path, extra, figure, data


def test_merged_table(tiny_figure):
    path, *_ = tiny_figure
    df = results.validate(pd.read_csv(path), expected_runs=RUNS)
    assert set(df["source"]) == {"run", "grid", "evaluation"}
    metrics = set(results.run_rows(df)["metric"])
    assert {
        "theta/0",
        "theta/1",
        "dataset/mnist",
        "objective/train_sum_loss",
        "objective/val_sum_acc",
    } <= metrics
    evaluation = results.source_rows(df, "evaluation")
    assert set(evaluation["run_id"]) == set(RUNS) | {"init"}
    for rid in RUNS + ["init"]:
        sub = evaluation[evaluation["run_id"] == rid]
        for m in ("train_sum_loss", "final_val_acc", "final_test_acc"):
            assert len(sub[sub["metric"] == m]) == 1 and len(sub[sub["metric"] == f"{m}_se"]) == 1
    assert set(evaluation[evaluation["run_id"] == "init"]["estimator"]) == {"init"}
    assert set(evaluation[evaluation["run_id"] == "pes-k10"]["estimator"]) == {"pes"}
    assert df[df["run_id"] == "val-pes-k10"]["metric"].eq("objective/val_sum_acc").any()
    assert np.isfinite(df["value"]).all()


def test_grid_csv_layout(tiny_figure):
    path, *_ = tiny_figure
    grid = pd.read_csv(path.parent / "grid.csv")
    assert list(grid.columns) == ["task", "metric", "theta/0", "theta/1", "value"]
    assert sorted(grid["metric"].unique()) == ["final_val_acc", "train_sum_loss"]
    assert len(grid) == 2 * 9
    np.testing.assert_allclose(np.unique(grid["theta/0"]) / np.log(10), [-3.0, -1.75, -0.5], rtol=1e-12)
    np.testing.assert_allclose(np.unique(grid["theta/1"]) / np.log(10), [-2.2, 0.0, 2.2], atol=1e-12)
    acc = grid[grid["metric"] == "final_val_acc"]["value"]
    assert acc.between(0, 1).all()


@pytest.mark.numerics
def test_final_evaluation_is_the_mean_at_each_runs_final_theta(tiny_figure):
    """Recompute one run's evaluation independently (bookkeeping: right theta, right keys)."""
    path, extra, *_ = tiny_figure
    df = results.validate(pd.read_csv(path))
    runs, evaluation = results.run_rows(df), results.source_rows(df, "evaluation")
    sub = runs[(runs["run_id"] == "pes-k10") & (runs["outer_step"] == 6)].set_index("metric")["value"]
    evaluated = evaluation[evaluation["run_id"] == "pes-k10"].set_index("metric")["value"]
    assert (evaluation[evaluation["run_id"] == "pes-k10"]["outer_step"] == 6).all()
    theta = np.array([sub["theta/0"], sub["theta/1"]], np.float32)
    kw = dict(
        dataset="mnist",
        data_source="npz",
        data_dir=[e.split("=", 1)[1] for e in extra if e.startswith("task.data_dir")][0],
        num_val=40,
        horizon=20,
        hidden=[6],
        downsample=4,
        batch_size=8,
        objective_batch_size=8,
    )
    jax.config.update("jax_enable_x64", False)  # as in the run (x64=false); conftest restores it
    task = tasks.make("mnist_lr_schedule", **kw)
    keys = jax.random.split(jax.random.key(12345), 2)  # the evaluation step's default key_seed
    vals = [float(jax.jit(task.full_run)(theta, k)["train_sum_loss"]) for k in keys]
    np.testing.assert_allclose(evaluated["train_sum_loss"], np.mean(vals), rtol=1e-4)
    np.testing.assert_allclose(
        evaluated["train_sum_loss_se"], np.std(vals) / np.sqrt(2), rtol=1e-3, atol=1e-6
    )


def test_rerun_reuses_everything(tiny_figure, monkeypatch):
    path, extra, figure, _ = tiny_figure
    files = ("grid.csv", "steps/evaluation.csv", "runs/pes-k10/metrics.csv")
    before = {p: p.stat().st_mtime_ns for p in (path.parent / f for f in files)}
    monkeypatch.setattr(evaluation, "evaluate_thetas", lambda *a, **k: pytest.fail("recomputed"))
    reproduce.reproduce(str(figure), "quick", extra, plot_figure=False)
    jax.config.update("jax_enable_x64", True)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    results.validate(pd.read_csv(path), expected_runs=RUNS)


def test_plot_script_writes_png_and_pdf(tiny_figure):
    path, *_ = tiny_figure
    out = path.parent.parent / "figures" / "figure5.png"  # drawn by reproduce
    assert out.stat().st_size > 10_000 and out.with_suffix(".pdf").exists()


def test_plot_draws_each_runs_theta_path_over_the_grid(tiny_figure):
    """Read back from the axes: each panel draws its objective's runs as the path of
    (theta/1, theta/0) / ln 10 from the init, over the grid's surface."""
    import matplotlib.pyplot as plt

    path, *_ = tiny_figure
    mod = plotcheck.plot_module(5)
    df = results.validate(pd.read_csv(path))
    grid = pd.read_csv(path.parent / "grid.csv")
    fig = mod.draw(df, grid)
    init = df[df["run_id"] == "init"].set_index("metric")["value"]
    panels = [ax for ax in fig.axes if ax.get_title()]  # (not the colour bars)
    assert len(panels) == 2
    for ax, (objective, _, _) in zip(panels, mod.PANELS):
        runs = sorted(r for r, o in mod.run_objectives(df).items() if o == objective)
        assert runs, objective
        for run in runs:
            sub = df[df["run_id"] == run]
            label = f"{sub['estimator'].iloc[0].upper()} K={int(sub['trunc_len'].iloc[0])}"
            x, y = plotcheck.line(ax, label)
            _, t0 = plotcheck.series(df, run, "theta/0")
            _, t1 = plotcheck.series(df, run, "theta/1")
            np.testing.assert_allclose(x, np.concatenate([[init["theta/1"]], t1]) / np.log(10), rtol=1e-12)
            np.testing.assert_allclose(y, np.concatenate([[init["theta/0"]], t0]) / np.log(10), rtol=1e-12)
    plt.close(fig)


def test_notebook_executes(tiny_figure):
    path, _, figure, _ = tiny_figure
    nb = notebook_runner.execute(str(figure), path)
    assert not [o for o in notebook_runner.outputs(nb) if o.output_type == "error"]
    assert notebook_runner.has_image(nb)
    assert "Final theta of every run" in notebook_runner.text(nb)
