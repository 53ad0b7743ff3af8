"""Figure 6 (Fashion-MNIST, 29 hyperparameters): the config follows the paper's settings; end to
end at test size (PES, truncated ES and random search on test-written data) with the compute
axis, random search re-scored, the claims table, the plot and the notebook; bad input fails
before any compute."""

import io
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree
from omegaconf import OmegaConf

from experiments import check, claims, config, figures, reproduce
from pes import results, search
from tests import notebook_runner
from tests.test_mnist_lr_schedule import write_npz


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_figure6_runs_have_the_papers_settings(profile):
    fig = figures.load("figure6")
    runs = figures.runs(fig, profile)
    assert sorted(r.id for r in runs) == sorted(f"{m}-seed{s}" for m in ("pes", "es") for s in (3, 5, 7, 11))
    for run in runs:
        cfg = config.compose(figures.run_overrides(fig, run, profile))  # composing loads no data
        est, task = cfg.estimator, cfg.task
        assert est.name in ("pes", "es") and (est.trunc_len, est.num_particles, est.sigma) == (10, 10, 0.3)
        assert cfg.outer_optimizer.name == "adam" and cfg.outer_optimizer.learning_rate == 1e-2
        assert (
            task.init == "random"
            and task.init_seed == cfg.seed
            and list(task.tune) == ["lr", "momentum", "width"]
        )
        assert cfg.train.log_every == 100 and task.batch_size == 100 and task.objective_batch_size == 100
        if profile == "paper":
            assert (task.horizon, task.downsample, list(task.hidden)) == (1000, 1, [100] * 5)
            assert cfg.train.num_outer_steps == 50_000 and task.num_eval_runs == 10
        else:
            assert (task.horizon, task.downsample, list(task.hidden)) == (200, 2, [32] * 5)
            assert cfg.train.num_outer_steps == 2000 and task.num_eval_runs == 4
    post = {p.step: p for p in fig.post}
    assert post["random_search"].num_configs == 10_000 and post["compute_axis"].best_of == "meta_objective"


TINY = [
    "task.data_source=npz",
    "task.num_val=40",
    "task.horizon=8",
    "task.batch_size=8",
    "task.objective_batch_size=8",
    "task.hidden=[6,5]",
    "task.downsample=4",
    "task.num_eval_runs=2",
    "estimator.trunc_len=4",
    "estimator.num_particles=4",
    "train.num_outer_steps=4",
    "train.log_every=2",
    "train.chunk_size=4",
    "random_search.num_configs=5",
    "random_search.chunk_size=2",
    "progress=false",
]


@pytest.fixture(scope="module")
def tiny6(tmp_path_factory):
    """Figure 6 on test-written Fashion-MNIST-shaped data, one seed, 4 outer iterations."""
    tmp = tmp_path_factory.mktemp("fig6")
    data = write_npz(tmp / "data", name="fashion_mnist")
    fig = OmegaConf.load(figures.figure_path("figure6"))
    fig.seeds = [3]
    OmegaConf.save(fig, tmp / "figure6.yaml")
    extra = [*TINY, f"task.data_dir={data}", f"results_root={tmp}"]
    csv = reproduce.reproduce(str(tmp / "figure6.yaml"), "quick", extra)
    return tmp, csv, extra


@pytest.mark.integration
def test_figure6_end_to_end(tiny6):
    tmp, csv, _ = tiny6
    df = results.validate(pd.read_csv(csv), expected_runs=["pes-seed3", "es-seed3"])
    assert set(df["estimator"]) == {"pes", "es", "random_search"}
    assert set(df["source"]) == {"run", "compute_axis", "random_search"}
    for est in ("pes", "es", "random_search"):
        sub = df[df.estimator == est]
        assert {"best_meta_objective", "total_compute", "meta_objective"} <= set(sub["metric"]), est
        assert set(sub["seed"]) == {3}
    # ES/PES: compute = N K = 16 per outer iteration; best = running minimum of meta_objective
    comp = df[(df.source == "compute_axis") & (df.metric == "total_compute")]
    np.testing.assert_array_equal(comp["value"], 16.0 * comp["outer_step"])
    for (rid, _seed), g in results.run_rows(df).groupby(["run_id", "seed"]):
        meta = g[g.metric == "meta_objective"].sort_values("outer_step")["value"].to_numpy()
        best = df[(df.run_id == rid) & (df.metric == "best_meta_objective")].sort_values("outer_step")
        np.testing.assert_allclose(best["value"], np.minimum.accumulate(meta))
        assert list(best["outer_step"]) == [0, 2, 4]
    # random search: 5 configurations per seed, compute = configurations x runs (2) x T (8)
    rs = df[df.estimator == "random_search"]
    for seed in (3,):
        sub = rs[rs.seed == seed]
        comp = sub[sub.metric == "total_compute"].sort_values("outer_step")
        np.testing.assert_array_equal(comp["value"], 16.0 * np.arange(1, 6))
        scores = sub[sub.metric == "meta_objective"].sort_values("outer_step")["value"].to_numpy()
        best = sub[sub.metric == "best_meta_objective"].sort_values("outer_step")["value"].to_numpy()
        np.testing.assert_array_equal(best, np.minimum.accumulate(scores))
    png = tmp / "quick" / "figures" / "figure6.png"
    assert png.stat().st_size > 10_000
    nb = notebook_runner.execute(str(tmp / "figure6.yaml"), csv)
    assert notebook_runner.has_image(nb)


@pytest.mark.integration
def test_random_search_configurations_rescore_to_their_logged_scores(tiny6):
    """The kept configurations, re-scored one by one with the task's evaluation, give the rows."""
    tmp, csv, extra = tiny6
    configs = pd.read_csv(csv.with_name("random_search_configs.csv"))
    assert len(configs) == 5 and set(configs["seed"]) == {3}
    fig = figures.load(str(tmp / "figure6.yaml"))
    cfg = config.compose(
        figures.figure_overrides(fig, "quick", [e for e in extra if not e.startswith("random_search.")])
    )
    task = config.build(cfg).task
    low, high = task.search_space
    _, unravel = ravel_pytree(task.theta_init)
    evaluate = jax.jit(task.evaluate)
    for _, row in configs.iloc[[0, 3, 4]].iterrows():
        flat = row[[c for c in configs.columns if c.startswith("theta/")]].to_numpy(np.float64)
        theta = unravel(jnp.asarray(flat, jnp.float32))
        for leaf, lo, hi in zip(jax.tree.leaves(theta), jax.tree.leaves(low), jax.tree.leaves(high)):
            assert np.all(
                (np.asarray(leaf) >= np.asarray(lo) - 1e-6) & (np.asarray(leaf) <= np.asarray(hi) + 1e-6)
            )
        score = float(evaluate(theta, jax.random.key(0))["meta_objective"])
        assert score == pytest.approx(row["score"], rel=1e-4) or (
            math.isinf(score) and math.isinf(row["score"])
        )
    # the same configurations as sampling the search space with the seed's key
    again = search.uniform_configs(jax.random.key(3), low, high, 5, like=task.theta_init)
    np.testing.assert_allclose(
        np.asarray(again["lr"])[0],
        configs[configs.seed == 3].iloc[0][[f"theta/{i}" for i in range(6)]].to_numpy(np.float64),
        rtol=1e-6,
    )


@pytest.mark.integration
def test_figure6_claims_are_evaluated(tiny6):
    tmp, _, _ = tiny6
    out = io.StringIO()
    code = check.run([f"figure={tmp / 'figure6.yaml'}", "profile=quick", f"results_root={tmp}"], out=out)
    rows, _ = check.check_figure(figures.load(str(tmp / "figure6.yaml")), "quick", tmp)
    verdicts = {r.id: r for r in rows}
    assert set(verdicts) == {"pes-below-es", "pes-below-random-search", "pes-below-random-search-paper-axis"}
    for r in rows:  # evaluated on the tiny results (whatever they show), with the methods' values
        assert r.verdict in (claims.PASS, claims.FAIL), (r.id, r.measured)
        assert "PES" in r.measured
    # the random-search comparisons are paper-scale: on quick they are indicative and never decide
    assert [r.id for r in rows if not r.counted] == [
        "pes-below-random-search",
        "pes-below-random-search-paper-axis",
    ]
    failed = verdicts["pes-below-es"].verdict == claims.FAIL
    assert code == (claims.EXIT_FAIL if failed else claims.EXIT_OK) and "`pes-below-es`" in out.getvalue()


def test_empty_random_search_budget_fails_before_any_compute(tmp_path):
    with pytest.raises(
        config.ConfigError, match=r"random_search.num_configs=0 is invalid \(an empty random-search budget\)"
    ):
        reproduce.reproduce("figure6", "quick", [f"results_root={tmp_path}", "random_search.num_configs=0"])
    assert not (tmp_path / "quick" / "figure6" / "runs").exists()
