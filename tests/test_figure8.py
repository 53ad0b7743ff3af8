"""Figure 8 end to end (tiny), env-step accounting, and failure reporting of the runner."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from experiments import config, figures, reproduce, runner
from pes import results, tasks
from pes.tasks import linear_control
from tests import notebook_runner

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "task.horizon=20",
    "task.eval_episodes=2",
    "train.num_outer_steps=2",
    "train.log_every=1",
    "train.chunk_size=2",
    "estimator.trunc_len=10",
    "progress=false",
]


def test_figure8_config_matches_the_paper_settings():
    fig = figures.load("figure8")
    paper = {r.id: r for r in figures.runs(fig, "paper")}
    assert len(paper) == 5 * 6 and "pes-k100-seed23" in paper
    expected = {  # the paper's settings: (K, sigma, lr) and 10 antithetic pairs
        "es-k1000": (1000, 0.3, 0.3),
        "es-k100": (100, 0.1, 0.1),
        "pes-k100": (100, 0.3, 0.1),
    }
    for rid, (k, sigma, lr) in expected.items():
        cfg = config.compose(figures.run_overrides(fig, paper[f"{rid}-seed3"], "paper"))
        built = config.build(cfg)
        assert (cfg.estimator.trunc_len, cfg.estimator.sigma, cfg.outer_optimizer.learning_rate) == (
            k,
            sigma,
            lr,
        )
        assert cfg.estimator.num_particles == 20 and cfg.estimator.divide_by_variance
        assert cfg.outer_optimizer.name == "sgd" and cfg.task.horizon == 1000
        env_steps = built.num_steps * built.estimator.cost_per_estimate
        assert 4.9e5 <= env_steps <= 5.0e5, (rid, env_steps)
    assert figures.runs(fig, "quick")[0].id == "es-k1000-seed3"


def test_env_steps_count_every_training_step():
    task = tasks.make("linear_control", horizon=20)
    import pes

    est = pes.estimators.make
    assert est("pes", task.system, trunc_len=5, sigma=0.1, num_particles=20).cost_per_estimate == 100
    # Truncated ES: 20 perturbed truncations plus the mean-policy truncation.
    assert est("es", task.system, trunc_len=5, sigma=0.1, num_particles=20).cost_per_estimate == 105
    # Full-episode ES restarts from a reset: no mean trajectory to advance.
    assert est("es", task.system, trunc_len=20, sigma=0.1, num_particles=20).cost_per_estimate == 400
    assert est("ars", task.system, trunc_len=20, sigma=0.1, num_particles=2).cost_per_estimate == 40


def _faulty_make(fail_at_call):
    """linear_control whose simulator returns NaN from its ``fail_at_call``-th host call on."""
    calls = {"n": 0}

    def make(name, **params):
        assert name == "linear_control"
        env = linear_control.make_env(**{k: params[k] for k in ("dim", "decay", "target", "horizon")})
        inner = env.host_step

        def host_step(states, actions):
            calls["n"] += 1
            new = inner(states, actions)
            if calls["n"] >= fail_at_call:
                new[-1, 1] = np.nan
            return new

        env = env._replace(host_step=host_step)
        system = linear_control.policy_system(env)
        theta0 = jnp.zeros((env.action_dim, env.obs_dim))
        return tasks.Task(
            "linear_control",
            system,
            theta0,
            linear_control.make_evaluate(system, 1),
            cost_metric="env_steps",
        )

    return make


def test_simulator_error_is_reported_with_seed_and_step_and_rows_kept(tmp_path, monkeypatch):
    # 20 host calls for the initial evaluation (outer step 0), then per outer step 5 (K=5) + 20 for the
    # evaluation episode: chunks of 2 steps = 50 calls, so call 148 is in outer step 6 (PES, 4 copies).
    monkeypatch.setattr(config.tasks, "make", _faulty_make(fail_at_call=148))
    cfg = config.compose(
        [
            "task=linear_control",
            "estimator=pes",
            "estimator.trunc_len=5",
            "estimator.num_particles=4",
            "estimator.sigma=0.1",
            "train.num_outer_steps=10",
            "train.log_every=1",
            "train.chunk_size=2",
            "seed=7",
            "progress=false",
            "x64=true",
            f"results_root={tmp_path}",
        ]
    )
    with pytest.raises(runner.RunFailed) as info:
        runner.run(cfg)
    msg = str(info.value)
    assert "(seed 7)" in msg and "failed during outer steps 5..6" in msg, msg
    assert "non-finite next state in environment copy 3 of 4 at episode step" in msg, msg
    assert "rows up to outer step 4 are kept" in msg
    out = config.run_dir(cfg)
    df = results.validate(pd.read_csv(out / runner.CSV))
    assert sorted(df["outer_step"].unique()) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(
        df[df.metric == "env_steps"].sort_values("outer_step")["value"], [0.0, 20.0, 40.0, 60.0, 80.0]
    )
    meta = json.loads((out / runner.META).read_text())
    assert meta["status"] == "failed" and meta["failed_after_outer_step"] == 4


@pytest.mark.slow
def test_figure8_tiny_end_to_end_with_plot_and_notebook(tmp_path):
    """All five methods through reproduce (tiny sizes), the plot script and the notebook."""
    fig = OmegaConf.load(figures.figure_path("figure8"))
    fig.seeds = {"quick": [3], "paper": [3]}
    OmegaConf.save(fig, tmp_path / "figure8.yaml")
    csv = reproduce.reproduce(str(tmp_path / "figure8.yaml"), "quick", [*TINY, f"results_root={tmp_path}"])
    df = results.run_rows(results.validate(pd.read_csv(csv)))
    assert sorted(df["run_id"].unique()) == sorted(
        f"{r}-seed3" for r in ("es-k1000", "es-k100", "pes-k100", "ars", "openai-es")
    )
    # TINY sets K=10 < T=20 for every run, so each ES-type run also advances its mean trajectory.
    for rid, cost in {
        "pes-k100-seed3": 200,
        "es-k100-seed3": 210,
        "ars-seed3": 30,
        "openai-es-seed3": 210,
    }.items():
        steps = df[(df.run_id == rid) & (df.metric == "env_steps")].sort_values("outer_step")["value"]
        np.testing.assert_array_equal(steps, [0, cost, 2 * cost])
    assert np.isfinite(df[df.metric == "eval_return"]["value"]).all()

    png = tmp_path / "quick" / "figures" / "figure8.png"  # drawn by reproduce
    assert png.stat().st_size > 10_000 and png.with_suffix(".pdf").exists()

    nb = notebook_runner.execute(str(tmp_path / "figure8.yaml"), csv)
    assert notebook_runner.has_image(nb)
