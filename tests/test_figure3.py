"""End to end: quick Figure 3 (runs + grid), the plot script and the notebook."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from experiments import config, reproduce
from pes import results
from tests import notebook_runner, plotcheck

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_figure(tmp_path_factory):
    """The quick profile of figure 3 with a coarser grid (101^2) to keep the test short."""
    root = tmp_path_factory.mktemp("results")
    path = reproduce.reproduce("figure3", "quick", [f"results_root={root}", "progress=false", "grid.num=101"])
    jax.config.update("jax_enable_x64", True)
    return path


def test_quick_profile_ordering_and_grid(quick_figure):
    merged = results.validate(pd.read_csv(quick_figure), expected_runs=["tbptt", "rtrl", "uoro", "es", "pes"])
    df = results.run_rows(merged)
    final = results.final_values(df, "meta_objective")
    # Every method makes K=10 inner steps per outer iteration: the x-axis is outer_step * 10.
    assert (df["inner_steps"] == df["outer_step"] * 10).all()
    assert final["pes"] <= 600  # PES reaches the valley
    assert final["pes"] < final["es"] < min(final["tbptt"], final["rtrl"])
    assert final["tbptt"] > 2300 and final["rtrl"] > 2300  # truncation bias: stalled near 2423
    assert final["uoro"] > 1000  # UORO does not reach the valley
    axes, values = results.grid_array(pd.read_csv(quick_figure.with_name("grid.csv")))
    assert values.shape == (101, 101)
    assert values[10, 10] == pytest.approx(2488.0, rel=1e-3)  # theta = (-4, -4)
    assert np.nanmin(values) == pytest.approx(552.0, rel=0.02)
    # the grid post-step's summary rows: the minimum and the value at the start
    grid = results.source_rows(merged, "grid").set_index("metric")["value"]
    assert grid["meta_objective/min"] == np.nanmin(values)
    assert grid["meta_objective/at_init"] == values[10, 10]


def test_rerun_skips_grid_and_runs(quick_figure, capsys):
    root = quick_figure.parent.parent.parent
    mtime = quick_figure.with_name("grid.csv").stat().st_mtime_ns
    reproduce.reproduce(
        "figure3", "quick", [f"results_root={root}", "progress=false", "grid.num=101"], plot_figure=False
    )
    assert quick_figure.with_name("grid.csv").stat().st_mtime_ns == mtime
    assert "[post] figure3 grid: reused" in capsys.readouterr().err


def test_plot_script_writes_png_and_pdf(quick_figure):
    out = quick_figure.parent.parent / "figures" / "figure3.png"  # drawn by reproduce
    assert out.stat().st_size > 10_000 and out.with_suffix(".pdf").exists()


def test_plot_draws_the_grid_and_every_runs_trajectory(quick_figure):
    """Read back from the axes: panel (a) colours the grid CSV's values and draws each run's
    theta path from the start through its logged theta/0, theta/1; panel (b) each run's
    meta-objective against inner iterations."""
    import matplotlib.pyplot as plt

    mod = plotcheck.plot_module(3)
    df, axes, values = mod.load(quick_figure, None)
    fig = mod.plot(df, axes, values)
    titled = {ax.get_title()[:3]: ax for ax in fig.axes}  # (not the colour bar)
    ax_a, ax_b = titled["(a)"], titled["(b)"]
    grid = pd.read_csv(quick_figure.with_name("grid.csv"))
    mesh = ax_a.collections[0].get_array()
    np.testing.assert_allclose(np.sort(np.ravel(mesh)), np.sort(grid["value"].to_numpy()), rtol=1e-12)
    for run, est in mod.runs_in_order(df):
        label = mod.LABELS[est]
        x, y = plotcheck.line(ax_a, label)
        steps, t0 = plotcheck.series(df, run, "theta/0")
        _, t1 = plotcheck.series(df, run, "theta/1")
        np.testing.assert_allclose(x, np.concatenate([[-4.0], t0]), rtol=1e-12)
        np.testing.assert_allclose(y, np.concatenate([[-4.0], t1]), rtol=1e-12)
        plotcheck.assert_same_curve(
            plotcheck.line(ax_b, label), plotcheck.series(df, run, mod.METRIC, "inner_steps")
        )
    assert sorted(plotcheck.labels(ax_b)) == sorted(mod.LABELS[e] for _, e in mod.runs_in_order(df))
    assert ax_b.get_xscale() == "log"
    plt.close(fig)


def _plot_main():
    spec = importlib.util.spec_from_file_location("plot_figure3", ROOT / "scripts/plot_figure3.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_plot_errors_are_one_line(quick_figure, tmp_path, capsys):
    main = _plot_main()
    out = str(tmp_path / "x.png")

    def fails(*args):
        with pytest.raises(SystemExit) as exc:
            main([str(quick_figure), out, *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err

    assert "start: theta=(-6.0, -4.0) lies outside the grid range theta0 in [-5.0, 5.0]" in fails(
        "--start=-6,-4"
    )
    # a grid that does not cover the trajectories: an error, unless --clip
    small = tmp_path / "grid.csv"
    pts = np.stack(np.meshgrid(np.linspace(-5, 0, 3), np.linspace(-5, 0, 3), indexing="ij"), -1).reshape(
        -1, 2
    )
    results.grid_frame("toy_regression", "meta_objective", pts, np.ones(9)).to_csv(small, index=False)
    err = fails("--grid", str(small))
    assert "lies outside the grid range" in err and "--clip" in err
    main([str(quick_figure), out, "--grid", str(small), "--clip"])
    assert Path(out).exists()
    assert "does not exist" in fails("--grid", str(tmp_path / "none.csv"))
    assert "far from --start" in fails("--start=0,0")
    empty = tmp_path / "empty.csv"
    results.grid_frame("toy_regression", "meta_objective", np.zeros((0, 2)), np.zeros(0)).to_csv(
        empty, index=False
    )
    assert "zero rows" in fails("--grid", str(empty))


def test_notebook_executes(quick_figure):
    nb = notebook_runner.execute(3, quick_figure)
    assert not [o for o in notebook_runner.outputs(nb) if o.output_type == "error"]
    assert notebook_runner.has_image(nb)
    text = notebook_runner.text(nb)
    assert "Meta-loss surface (grid)" in text and "L at the grid point nearest the start" in text


def test_bad_grid_settings_fail_before_compute(tmp_path):
    root = f"results_root={tmp_path}"
    with pytest.raises(config.ConfigError, match=r"num\[0\]=0 gives a grid with zero points"):
        reproduce.reproduce("figure3", "quick", [root, "grid.num=0"])
    with pytest.raises(
        config.ConfigError, match=r"grid.size is not a setting; allowed: overrides, metrics, low"
    ):
        reproduce.reproduce("figure3", "quick", [root, "grid.size=3"])
    with pytest.raises(config.ConfigError, match=r"grid.metrics has 'accuracy', which task toy_regression's"):
        reproduce.reproduce("figure3", "quick", [root, "grid.metrics=[accuracy]"])
    assert not list(tmp_path.iterdir())  # nothing was computed


@pytest.mark.slow
def test_paper_profile_claims(tmp_path):
    """Paper profile (20000 outer steps, float64, 2000^2 grid): about 2 min on 2 CPU cores."""
    path = reproduce.reproduce("figure3", "paper", [f"results_root={tmp_path}", "progress=false"])
    jax.config.update("jax_enable_x64", True)
    df = results.run_rows(results.validate(pd.read_csv(path)))
    final = results.final_values(df, "meta_objective")
    late = results.metric_table(df, "meta_objective").iloc[-200:].mean()  # last 2000 outer steps
    assert final["pes"] <= 600 and late["pes"] <= 600  # reaches the valley and stays
    assert 1100 <= late["es"] <= 1900  # truncated ES (sigma 1) stalls, oscillating around ~1500
    assert min(final["tbptt"], final["rtrl"]) > 2300
    assert final["uoro"] > 1000
    axes, values = results.grid_array(pd.read_csv(path.with_name("grid.csv")))
    assert values.shape == (2000, 2000)
    assert np.nanmin(values) == pytest.approx(552.0, rel=0.01)
