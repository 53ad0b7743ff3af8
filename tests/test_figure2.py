"""End to end: quick Figure 2 (influence balancing) from configs to CSV, plot and notebook."""

from pathlib import Path

import pytest

from experiments import reproduce
from pes import results
from scripts import _style
from tests import notebook_runner, plotcheck
from tests.helpers import make_quick

ROOT = Path(__file__).resolve().parent.parent
RUNS = ["tbptt-k1", "tbptt-k10", "tbptt-k100", "es-k1", "pes-k1", "uoro-k1", "rtrl-k1"]


@pytest.fixture(scope="module")
def figure2_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return reproduce.reproduce("figure2", "quick", [f"results_root={root}", "progress=false"])


def test_schema_and_runs(figure2_csv):
    df = _style.read(figure2_csv, expected_runs=RUNS)
    assert set(df["run_id"]) == set(RUNS)
    assert df["outer_step"].max() == 3000
    assert (df["seed"] == 3).all()


def test_paper_ordering_holds_in_the_quick_profile(figure2_csv):
    df = _style.read(figure2_csv)
    loss = results.final_values(df, "loss")
    theta = results.final_values(df, "theta")
    for run in ("pes-k1", "rtrl-k1", "tbptt-k100"):
        assert abs(theta[run] + 1 / 6) < 1e-3, (run, theta[run])
    assert loss["pes-k1"] < 1e-10 and loss["rtrl-k1"] < 1e-10
    assert loss["tbptt-k1"] > 1e2 and loss["es-k1"] > 1e2 and loss["tbptt-k10"] > 1e11
    assert loss["pes-k1"] < loss["es-k1"] * 1e-10


def test_plot_and_notebook(figure2_csv):
    notebook_runner.assert_figure_and_notebook(2, figure2_csv, "Last logged loss and theta per run")


def test_plot_draws_every_runs_loss_curve(figure2_csv):
    """What the figure shows, read back from its axes: one curve per run, exactly the
    run's logged loss against the outer step (non-finite values left out), log y."""
    import matplotlib.pyplot as plt

    mod = plotcheck.plot_module(2)
    df = _style.read(figure2_csv, expected_runs=RUNS)
    fig, ax = plt.subplots()
    mod.plot(df, ax)
    assert sorted(plotcheck.labels(ax)) == sorted(mod.LABELS[r] for r in RUNS)
    for run in RUNS:
        got = plotcheck.line(ax, mod.LABELS[run])
        plotcheck.assert_same_curve(got, plotcheck.series(df, run, "loss"))
    assert ax.get_yscale() == "log" and ax.get_xlim()[1] == df["outer_step"].max()
    plt.close(fig)


@pytest.mark.integration
def test_make_target_reproduces_the_figure(tmp_path):
    """What a user types: make reproduce-figure-2 (here into a temporary results root)."""
    out = make_quick("reproduce-figure-2", tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "quick" / "figures" / "figure2.png").stat().st_size > 10_000
    # ... and `make check-figure-2` after it: the claims table, with the paper's central claims passing
    assert "| claim | measured | verdict |" in out.stdout  # reproduce prints the table at its end
    check = make_quick("check-figure-2", tmp_path, timeout=300)
    rows = {
        line.split("`")[1]: line.rsplit("|", 2)[1].strip()
        for line in check.stdout.splitlines()
        if line.startswith("| `")
    }
    for cid in ("pes-converges", "rtrl-converges", "tbptt1-diverges", "es-diverges", "tbptt100-converges"):
        assert rows[cid] == "PASS", (cid, check.stdout)
    # a failed claim: the command exits 1, which make reports as "Error 1" (and exits 2 itself)
    failed = "**FAIL**" in rows.values()
    assert (check.returncode != 0) == failed and ("Error 1" in check.stderr) == failed, (
        check.stdout + check.stderr
    )
