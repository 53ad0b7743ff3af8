"""End to end: a tiny quick Figure 5 on test-written data (runs, grid, final-theta
evaluations), the plot script and the notebook."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from experiments import config as C
from experiments import figure5 as F5
from experiments import reproduce
from pes import results, tasks
from tests import notebook_runner
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
    spec["background"]["quick"] = {"num": 3, "num_runs": 1, "chunk_size": 4}
    spec["evaluation"]["quick"] = {"num_runs": 2}
    figdir = tmp / "figures"
    figdir.mkdir()
    (figdir / "figure5.yaml").write_text(yaml.safe_dump(spec))
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
    mp = pytest.MonkeyPatch()
    mp.setattr(C, "FIGURE_DIR", figdir)
    try:
        path = reproduce.reproduce("figure5", "quick", extra)
    finally:
        mp.undo()
        jax.config.update("jax_enable_x64", True)
    return path, extra, figdir, data


def test_merged_table(tiny_figure):
    path, *_ = tiny_figure
    df = results.validate(pd.read_csv(path), expected_runs=RUNS + ["init"])
    metrics = set(df["metric"])
    assert {
        "theta/0",
        "theta/1",
        "dataset/mnist",
        "objective/train_sum_loss",
        "objective/val_sum_acc",
    } <= metrics
    for rid in RUNS + ["init"]:
        sub = df[df["run_id"] == rid]
        for m in ("train_sum_loss", "final_val_acc", "final_test_acc"):
            assert (
                len(sub[sub["metric"] == f"final/{m}"]) == 1
                and len(sub[sub["metric"] == f"final/{m}_se"]) == 1
            )
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


def test_final_evaluation_is_the_mean_at_each_runs_final_theta(tiny_figure):
    """Recompute one run's evaluation independently (bookkeeping: right theta, right keys)."""
    path, extra, *_ = tiny_figure
    df = results.validate(pd.read_csv(path))
    sub = df[(df["run_id"] == "pes-k10") & (df["outer_step"] == 6)].set_index("metric")["value"]
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
    keys = jax.random.split(jax.random.key(F5.EVAL_KEY_SEED), 2)
    vals = [float(jax.jit(task.full_run)(theta, k)["train_sum_loss"]) for k in keys]
    np.testing.assert_allclose(sub["final/train_sum_loss"], np.mean(vals), rtol=1e-4)
    np.testing.assert_allclose(
        sub["final/train_sum_loss_se"], np.std(vals) / np.sqrt(2), rtol=1e-3, atol=1e-6
    )


def test_rerun_reuses_everything(tiny_figure, monkeypatch):
    path, extra, figdir, _ = tiny_figure
    before = {p: p.stat().st_mtime_ns for p in (path.parent / "grid.csv", path.parent / "evaluation.csv")}
    monkeypatch.setattr(C, "FIGURE_DIR", figdir)
    monkeypatch.setattr(F5, "evaluate_thetas", lambda *a, **k: pytest.fail("recomputed"))
    reproduce.reproduce("figure5", "quick", extra)
    jax.config.update("jax_enable_x64", True)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    results.validate(pd.read_csv(path), expected_runs=RUNS + ["init"])


def _env():
    env = dict(os.environ, MPLBACKEND="Agg", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_plot_script_writes_png_and_pdf(tiny_figure, tmp_path):
    path, *_ = tiny_figure
    out = tmp_path / "figure5.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/plot_figure5.py"), str(path), str(out)],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 10_000 and out.with_suffix(".pdf").exists()


def test_notebook_executes(tiny_figure):
    path, *_ = tiny_figure
    nb = notebook_runner.execute(5, path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert notebook_runner.has_image(nb)


def test_missing_post_section_is_a_config_error():
    bad = yaml.safe_load((ROOT / "configs/figure/figure5.yaml").read_text())
    del bad["background"]
    with pytest.raises(C.ConfigError, match="figure figure5 has no background section"):
        C.figure_section(OmegaConf.create(bad), "background", "quick")
