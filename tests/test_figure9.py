"""Figure 9 (UCI yacht): the config follows the paper's settings; end to end at test size with
the compute axis, the claims table, the plot and the notebook."""

import io

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from experiments import check, claims, config, figures, reproduce
from pes import results
from tests import notebook_runner

INITS = (5.0, 3.0, 1.0, -1.0, -3.0, -5.0)


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_figure9_runs_have_the_papers_settings(profile):
    fig = figures.load("figure9")
    runs = figures.runs(fig, profile)
    assert len(runs) == 12
    inits = {"pes": [], "es": []}
    for run in runs:
        cfg = config.compose(figures.run_overrides(fig, run, profile))
        built = config.build(cfg)
        est = cfg.estimator
        assert (est.trunc_len, est.sigma, est.num_particles) == (1, 0.01, 4)
        assert cfg.outer_optimizer.name == "adam" and cfg.outer_optimizer.learning_rate == 3e-3
        assert cfg.outer_optimizer.get("b1", 0.9) == 0.9 and cfg.outer_optimizer.get("b2", 0.999) == 0.999
        assert cfg.train.num_outer_steps == 50_000 and cfg.seed == 3 and not cfg.x64
        assert built.task.system.horizon is None and built.task.optimum == pytest.approx(1.333, abs=1e-3)
        inits[est.name].append(float(built.task.theta_init))
    assert sorted(inits["pes"]) == sorted(INITS) and sorted(inits["es"]) == sorted(INITS)


@pytest.fixture(scope="module")
def tiny9(tmp_path_factory):
    """Figure 9 with two of its runs (PES and ES from theta = 3), 300 outer iterations."""
    tmp = tmp_path_factory.mktemp("fig9")
    fig = OmegaConf.load(figures.figure_path("figure9"))
    fig.runs = [r for r in fig.runs if r.id in ("pes-init3", "es-init3")]
    OmegaConf.save(fig, tmp / "figure9.yaml")
    extra = [
        f"results_root={tmp}",
        "progress=false",
        "train.num_outer_steps=300",
        "train.log_every=50",
        "train.chunk_size=300",
    ]
    csv = reproduce.reproduce(str(tmp / "figure9.yaml"), "quick", extra)
    return tmp, csv


def test_figure9_end_to_end(tiny9):
    tmp, csv = tiny9
    df = results.validate(pd.read_csv(csv), expected_runs=["pes-init3", "es-init3"])
    runs = results.run_rows(df)
    assert set(runs["metric"]) >= {"theta", "theta_error", "theta_optimum", "loss", "val_loss_converged"}
    opt = runs[runs.metric == "theta_optimum"]["value"].unique()
    assert len(opt) == 1 and opt[0] == pytest.approx(1.333, abs=1e-3)
    theta = runs[runs.metric == "theta"].set_index(["run_id", "outer_step"])["value"]
    err = runs[runs.metric == "theta_error"].set_index(["run_id", "outer_step"])["value"]
    np.testing.assert_allclose(err, np.abs(theta - opt[0]), rtol=1e-5, atol=1e-6)
    assert theta[("pes-init3", 0)] == 3.0 and sorted(runs["outer_step"].unique()) == list(range(0, 301, 50))
    # the compute axis: N K = 4 inner steps per outer iteration, for both methods
    comp = results.source_rows(df, "compute_axis")
    comp = comp[comp.metric == "total_compute"]
    assert set(comp["run_id"]) == {"pes-init3", "es-init3"}
    np.testing.assert_array_equal(comp["value"], 4.0 * comp["outer_step"])
    png = tmp / "quick" / "figures" / "figure9.png"
    assert png.stat().st_size > 10_000
    nb = notebook_runner.execute(str(tmp / "figure9.yaml"), csv)
    assert notebook_runner.has_image(nb)


def test_figure9_claims_are_evaluated(tiny9):
    tmp, _ = tiny9
    out = io.StringIO()
    code = check.run([f"figure={tmp / 'figure9.yaml'}", "profile=quick", f"results_root={tmp}"], out=out)
    rows, _ = check.check_figure(figures.load(str(tmp / "figure9.yaml")), "quick", tmp)
    verdicts = {r.id: r.verdict for r in rows}
    assert set(verdicts) == {"pes-near-optimum", "es-short-horizon-bias", "pes-ends-at-optimum"}
    # 300 iterations cannot move theta from 3 to within 0.194 of 1.33 (Adam steps of 3e-3)
    assert verdicts["pes-near-optimum"] == claims.FAIL and verdicts["pes-ends-at-optimum"] == claims.FAIL
    # truncated ES moves at most 300 x 3e-3 = 0.9 from 3: not yet 5 from the optimum
    assert verdicts["es-short-horizon-bias"] == claims.FAIL
    (strict,) = [r for r in rows if r.id == "pes-ends-at-optimum"]
    assert not strict.counted and strict.role == claims.REPORTED  # a finding, never decides
    assert code == claims.EXIT_FAIL and "FAIL (finding, not counted)" in out.getvalue()


def test_yacht_float32_task_in_the_figure_matches_the_closed_form():
    """The figure computes in float32 (x64=false): the logged converged loss is still the ridge value."""
    fig = figures.load("figure9")
    cfg = config.compose(figures.run_overrides(fig, fig.runs[0], "quick"))
    built = config.build(cfg)
    out = built.task.evaluate(jnp.asarray(built.task.optimum, jnp.float32), None)
    assert float(out["val_loss_converged"]) == pytest.approx(
        built.task.metadata["optimum_val_loss"], rel=1e-5
    )


def test_the_official_codes_trajectories_are_drawn_beside_the_suites(tmp_path, monkeypatch):
    """With results/reference/official/figure9/trajectories.csv present, the plot script adds a
    side-by-side figure (suite | official code); without it, only the figure itself."""
    from tests.plotcheck import plot_module

    mod = plot_module(9)
    steps = [0, 250, 500]
    step = np.array(steps, dtype=float)
    logged = {  # each run logs these metrics at each step
        "outer_step": steps,
        "theta": 5.0 - step / 500,
        "theta_optimum": np.full_like(step, 1.333),
        "loss": np.full_like(step, 14.5),
        "total_compute": 4.0 * step,
    }
    df = results.frame(
        row
        for e in ("pes", "es")
        for row in results.rows(
            dict(run_id=f"{e}-init5", figure="figure9", task="uci_yacht", estimator=e,
                 trunc_len=1, sigma=0.01, num_particles=4, seed=3),
            logged,
            trunc_len=1,
        )
    )
    monkeypatch.setattr(mod, "OFFICIAL", tmp_path / "absent.csv")
    assert set(mod.figures(df)) == {""}
    official = pd.DataFrame(
        [
            dict(
                figure="figure9",
                run=f"{e}-init5",
                estimator=e,
                seed=seed,
                iteration=s,
                metric="theta",
                value=5.0 - s / 400,
            )
            for e in ("pes", "es")
            for seed in (3, 4)
            for s in steps
        ]
    )
    official.to_csv(tmp_path / "trajectories.csv", index=False)
    monkeypatch.setattr(mod, "OFFICIAL", tmp_path / "trajectories.csv")
    figs = mod.figures(df)
    assert set(figs) == {"", "_official"}
    left, right = figs["_official"].axes
    assert len(left.lines) == 2 + 1 and len(right.lines) == 4 + 1  # runs + the optimum line
    assert "paper's own code" in right.get_title()
