"""benchmarks/cost_model.py: it builds a figure's ES/PES runs as the runner does and predicts their cost."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from benchmarks import cost_model
from experiments import config


@pytest.mark.parametrize("estimator", ["es", "pes"])
def test_run_cost_builds_the_estimator_as_the_runner_does(estimator):
    """The estimator config's keys (``particles`` among them) reach the factory as config.build
    passes them."""
    cfg = config.compose(
        ["task=influence_balancing", f"estimator={estimator}", "estimator.trunc_len=5"]
        + ["estimator.num_particles=8", "estimator.sigma=0.01", "train.num_outer_steps=6"]
    )
    args = argparse.Namespace(particles_cap=4, iters=2, repeats=1)
    row = cost_model.run_cost(cfg, args)
    assert row["estimator"] == estimator and row["num_outer_steps"] == 6 and row["s_per_outer_iter"] > 0
    assert (row["num_particles"], row["particles_timed"]) == (8, 4)


@pytest.mark.slow
def test_cost_model_predicts_es_and_pes_runs_and_the_post_steps(tmp_path):
    out = tmp_path / "cost.csv"
    args = ["--figure", "figure5", "--profile", "quick", "--runs", "es-k10,pes-k10", "--post"]
    args += ["--iters", "1", "--repeats", "1", "--out", str(out)]
    small = ["task.horizon=20", "task.num_val=100", "train.num_outer_steps=4", "train.log_every=2"]
    assert cost_model.main([*args, *small]) == 0
    df = pd.read_csv(out).set_index("run_id")
    assert list(df.index) == ["es-k10", "pes-k10", "post:figure5"]
    runs = df.loc[["es-k10", "pes-k10"]]
    assert (runs["num_particles"] == 32).all() and (runs["num_outer_steps"] == 4).all()
    assert (runs["s_per_outer_iter"] > 0).all()
    assert (runs["predicted_run_s"] >= 4 * runs["s_per_outer_iter"]).all()
    post = df.loc["post:figure5"]
    assert post["trainings"] == 13 * 13 * 2 + (6 + 1) * 4  # quick grid + evaluation of 6 runs and init
    assert post["predicted_run_s"] == post["trainings"] * post["s_per_training"]
