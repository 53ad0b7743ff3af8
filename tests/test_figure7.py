"""Figure 7 (learned optimizer): the inner task's clipping and NaN handling, a diverging
learned optimizer, and the quick figure end to end on test-sized data (plot + notebook)."""

import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import config, reproduce, runner
from pes import results, systems, tasks
from pes.tasks import lopt_image_mlp
from scripts import _style
from tests import notebook_runner
from tests.helpers import write_fashion_idx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import plot_figure7  # noqa: E402

CEIL = 1.5 * math.log(10)
TINY = dict(horizon=12, batch_size=16, num_eval_runs=2, hidden=[8])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Fashion-MNIST-format IDX files whose labels depend on the image (so it is learnable)."""
    return write_fashion_idx(tmp_path_factory.mktemp("data"), 500, 100)


def make_task(data_dir, **kw):
    params = dict(TINY, dataset="fashion_mnist", data_source="idx", data_dir=str(data_dir))
    params.update(kw)
    return tasks.make("lopt_image_mlp", **params)


def test_clip_loss_maps_nan_and_inf_to_the_ceiling():
    raw = jnp.array([-1.0, 0.5, 2.0, 10.0, jnp.nan, jnp.inf, -jnp.inf])
    want = np.array([0.0, 0.5, 2.0, CEIL, CEIL, CEIL, CEIL])
    np.testing.assert_allclose(np.asarray(lopt_image_mlp.clip_loss(raw)), want, rtol=1e-6)


def test_step_loss_is_the_clipped_ce_over_t_and_nan_params_give_the_ceiling(data_dir):
    task = make_task(data_dir)
    system, theta = task.system, task.theta_init
    state = system.init(jax.random.key(0))
    step = jax.jit(system.step)  # one compilation for the three calls (eager: op by op)
    _, loss = step(theta, state, jax.random.key(1))
    assert 0.0 < float(loss) * TINY["horizon"] < CEIL  # a real CE of a fresh model, scaled by 1/T
    bad = (jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), state[0]), state[1])
    new_state, loss = step(theta, bad, jax.random.key(1))
    np.testing.assert_allclose(float(loss), CEIL / TINY["horizon"], rtol=1e-6)
    huge = (jax.tree.map(lambda p: p * 1e6, state[0]), state[1])
    _, loss = step(theta, huge, jax.random.key(1))
    np.testing.assert_allclose(float(loss), CEIL / TINY["horizon"], rtol=1e-6)  # CE > ceiling: clipped


@pytest.mark.numerics
def test_evaluate_is_the_full_objective_on_the_fixed_seeds(data_dir):
    """meta_loss_eval = mean over eval runs of the system's full objective (sum of l_t / T)."""
    task = make_task(data_dir)
    out = jax.jit(task.evaluate)(task.theta_init, jax.random.key(99))
    want = []
    for key in task.eval_keys:
        init_key, data_key = jax.random.split(key)
        want.append(float(systems.full_objective(task.system, task.theta_init, init_key, data_key)))
    np.testing.assert_allclose(float(out["meta_loss_eval"]), np.mean(want), rtol=1e-5)
    assert float(out["eval_nonfinite_frac"]) == 0.0 and float(out["eval_diverged_runs"]) == 0.0
    # independent of the key: the same fixed runs at every log point, for every method
    again = jax.jit(task.evaluate)(task.theta_init, jax.random.key(3))
    assert float(again["meta_loss_eval"]) == float(out["meta_loss_eval"])


def test_diverging_lopt_is_logged_and_does_not_crash_the_run(data_dir, tmp_path):
    """A learned optimizer with a huge step (step_mult 1e30) blows the inner model up; the
    meta-loss sits at the ceiling, NaN/Inf steps are counted, the outer run completes."""
    task = make_task(data_dir, step_mult=1e30)
    out = jax.jit(task.evaluate)(task.theta_init, jax.random.key(0))
    assert float(out["eval_nonfinite_frac"]) > 0.0
    assert float(out["eval_diverged_runs"]) == TINY["num_eval_runs"]
    # every step after the first (whose pre-update loss is a fresh model's) is at the ceiling
    h = TINY["horizon"]
    assert CEIL * (h - 1) / h - 1e-5 <= float(out["final_loss_eval"]) <= CEIL + 1e-5
    assert np.isfinite(float(out["meta_loss_eval"]))
    cfg = config.compose(
        [
            "task=lopt_image_mlp",
            "task.dataset=fashion_mnist",
            "task.data_source=idx",
            f"task.data_dir={data_dir}",
            "task.horizon=12",
            "task.batch_size=16",
            "task.num_eval_runs=2",
            "task.hidden=[8]",
            "task.step_mult=1e30",
            "estimator=pes",
            "estimator.trunc_len=4",
            "estimator.sigma=0.01",
            "estimator.num_particles=4",
            "estimator.particles=step_unlocked",
            "outer_optimizer=adam",
            "outer_optimizer.learning_rate=1e-3",
            "train.num_outer_steps=6",
            "train.log_every=3",
            f"results_root={tmp_path}",
            "progress=false",
        ]
    )
    out_dir = runner.run(cfg)
    meta = json.loads((out_dir / runner.META).read_text())
    assert meta["status"] == "complete"
    df = _style.read(out_dir / runner.CSV)
    frac = df[df["metric"] == "eval_nonfinite_frac"]
    assert {3, 6} <= set(frac["outer_step"]) and (frac["value"] > 0).all()
    assert np.isfinite(df[df["metric"] == "meta_loss_eval"]["value"]).all()


def test_bad_values_fail_with_one_line(data_dir):
    with pytest.raises(ValueError, match="image_size=0 is invalid"):
        make_task(data_dir, image_size=0)
    with pytest.raises(ValueError, match="dataset='svhn' is invalid"):
        make_task(data_dir, dataset="svhn")


# ----------------------------------------------------------------------------- end to end
# Twelve tiny runs (one compile each) + tuned Adam + plot + notebook: minutes on a shared
# 2-core machine, so marked slow (run with `pytest -m slow tests/test_figure7.py`).


@pytest.fixture(scope="module")
def figure7_csv(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    extra = [
        f"results_root={root}",
        "progress=false",
        "task.data_source=idx",
        f"task.data_dir={data_dir}",
        "task.horizon=20",
        "task.batch_size=16",
        "task.num_eval_runs=2",
        "task.hidden=[8]",
        "estimator.trunc_len=5",
        "estimator.num_particles=4",
        "train.num_outer_steps=8",
        "train.log_every=4",
        "train.chunk_size=8",
    ]
    return reproduce.reproduce("figure7", "quick", extra)


@pytest.mark.slow
def test_figure7_end_to_end_rows(figure7_csv):
    runs = [f"{m}-s{s}" for m in ("pes", "tes") for s in range(6)]
    df = _style.read(figure7_csv, expected_runs=runs)
    train = plot_figure7.training_runs(df)
    assert set(train["run_id"]) == set(runs)
    assert train["outer_step"].max() == 8
    assert set(train[train["run_id"].str.startswith("tes")]["estimator"]) == {"es"}
    ml = train[train["metric"] == "meta_loss_eval"]["value"]
    assert ((ml > 0) & (ml <= CEIL + 1e-6)).all()
    # the LOpt initialisation follows the seed: different seeds start from different meta-losses
    first = train[(train["metric"] == "meta_loss_eval") & (train["outer_step"] == 4)]
    assert first.groupby("seed")["value"].mean().nunique() == 6
    # tuned Adam: the best of the grid, and inner curves for every run, init LOpt and Adam
    adam = results.source_rows(df, "adam_baseline")
    assert set(adam["estimator"]) == {"adam"}
    at0 = adam[(adam["outer_step"] == 0) & (adam["metric"] == "meta_loss_eval")].set_index("run_id")["value"]
    assert len(at0) == 7 and at0["adam-tuned"] == at0.drop("adam-tuned").min()  # 6 learning rates + tuned
    assert plot_figure7.tuned_adam(df)["meta_loss_eval"] == at0["adam-tuned"]
    curves = results.source_rows(df, "inner_curves")
    assert set(curves["metric"]) == {"inner_loss"}
    assert set(curves["run_id"]) == set(runs) | {f"init-s{s}" for s in range(6)}  # one initial LOpt per seed
    assert set(curves["estimator"]) == {"pes", "es", "init"}
    assert set(adam[adam["metric"] == "inner_loss"]["run_id"]) == {"adam-tuned"}
    assert (df[df["metric"] == "inner_loss"].groupby(["source", "run_id"])["inner_steps"].max() == 20).all()
    assert "dataset/fashion_mnist" in set(adam["metric"])
    summary = plot_figure7.final_summary(df)
    assert list(summary["estimator"]) == ["pes", "es"] and (summary["seeds"] == 6).all()


@pytest.mark.slow
def test_figure7_plot_and_notebook(figure7_csv):
    notebook_runner.assert_figure_and_notebook(7, figure7_csv, "Meta-loss at the last evaluation")


EPS32 = float(np.finfo(np.float32).eps)


@pytest.mark.numerics
def test_lopt_seeds_batched_in_one_compiled_call_match_separate_runs(data_dir):
    """Scale: several learned-optimizer initialisations meta-trained by one
    vmapped compiled chunk give what each run gives alone (evaluation included).

    The runs are float32, and a batched kernel may round differently from a single-run one
    (more so on another CPU: another vector width, another summation order).  The tolerances
    follow from float32 precision and the computation, not from what one CPU gave:
    * theta, per leaf: one rounding of theta per outer step (S eps32 max|theta|), plus a
      relative eps32 * H / sigma of how far theta moved: a particle's loss is a sum over the
      H inner steps, rounded to eps32 relative, and the pair's loss difference that drives
      the estimate is ~sigma times smaller than the loss, so its relative rounding is 1/sigma
      larger (1.4e-4 here; seen: 3e-6 on AVX-512 and AVX2, 1e-5 on an AVX2 EPYC);
    * the evaluation (a mean over H steps of cross-entropies over the test images):
      relative H * log2(test set) * eps32.
    A broadcast bug between runs moves theta by ~its whole movement and fails both."""
    import optax

    from pes import estimators, outer

    task = make_task(data_dir)
    sigma, horizon, steps = 0.01, TINY["horizon"], 6
    est = estimators.make("pes", task.system, trunc_len=4, sigma=sigma, num_particles=4)
    opt = optax.adam(2e-3)
    seeds = [0, 1, 2]
    thetas = [make_task(data_dir, init_seed=s).theta_init for s in seeds]  # same system, other theta_0
    keys = jnp.stack([jax.random.key(10 + s) for s in seeds])
    batched = outer.make_batched_chunk(est, opt, log_every=3, num_logs=2, evaluate=task.evaluate)
    states = outer.init_states(keys, jax.tree.map(lambda *x: jnp.stack(x), *thetas), est, opt)
    states, metrics = batched(states)
    single = outer.make_chunk(est, opt, log_every=3, num_logs=2, evaluate=task.evaluate)
    rel_move = EPS32 * horizon / sigma
    rel_eval = EPS32 * horizon * math.log2(100)  # 100 test images in the fixture
    for r, theta in enumerate(thetas):
        alone, alone_metrics = single(outer.init_state(keys[r], theta, est, opt))
        assert int(alone.step) == steps
        for a, b, t0 in zip(
            jax.tree.leaves(alone.theta), jax.tree.leaves(states.theta), jax.tree.leaves(theta)
        ):
            a, b, t0 = np.asarray(a), np.asarray(b[r]), np.asarray(t0)
            assert a.dtype == np.float32
            moved = float(np.max(np.abs(a - t0)))
            assert moved > 0
            atol = steps * EPS32 * float(np.max(np.abs(a))) + rel_move * moved
            np.testing.assert_allclose(b, a, rtol=0, atol=atol)
        meta, meta_alone = (
            np.asarray(metrics["meta_loss_eval"][r]),
            np.asarray(alone_metrics["meta_loss_eval"]),
        )
        np.testing.assert_allclose(meta, meta_alone, rtol=rel_eval)
    # The initialisations really differ (negative control for a broadcast bug), by far more
    # than the tolerances above.
    a, b = np.asarray(metrics["meta_loss_eval"][0]), np.asarray(metrics["meta_loss_eval"][1])
    assert np.all(np.abs(a - b) > 10 * rel_eval * np.abs(a))


def test_the_holdout_uses_learned_optimizer_seeds_no_other_run_used():
    """quick_holdout: the quick profile's settings on seeds 1000-1005, disjoint from every seed of the
    stored results (other than the holdout's own) and of every figure's configs."""
    import pandas as pd

    from experiments import figures

    root = Path(__file__).resolve().parent.parent
    fig = figures.load("figure7")
    hold = [figures.runs(fig, "quick_holdout"), figures.runs(fig, "quick")]
    seeds = [
        {int(config.compose(figures.run_overrides(fig, r, p)).seed) for r in runs}
        for runs, p in zip(hold, ("quick_holdout", "quick"))
    ]
    assert seeds[0] == set(range(1000, 1006)) and seeds[1] == set(range(6))
    used = set()
    for path in (root / "results" / "reference").glob("*/*/metrics.csv*"):
        if path.parent.parent.name != "quick_holdout":
            used |= set(pd.read_csv(path, usecols=["seed"])["seed"].dropna().astype(int))
    for name in figures.figure_names():
        other = figures.load(name)
        for profile in config.profile_names():
            if name == "figure7" and profile == "quick_holdout":
                continue
            for run in figures.runs(other, profile):
                for o in run.overrides:
                    key, _, value = o.partition("=")
                    if key in ("seed", "task.init_seed") and value.isdigit():
                        used.add(int(value))
            s = other.get("seeds")
            if s is not None:
                used |= set(s[profile] if profile in s else []) if hasattr(s, "keys") else set(s)
    assert used and not (seeds[0] & used), sorted(seeds[0] & used)
    # the same settings as quick apart from the seed (and the profile's name)
    a = config.result_config(config.compose(figures.run_overrides(fig, hold[1][0], "quick")))
    b = config.result_config(config.compose(figures.run_overrides(fig, hold[0][0], "quick_holdout")))
    flat_a, flat_b = config._flat(a), config._flat(b)
    diff = {k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k) != flat_b.get(k)}
    assert diff == {"profile.name", "seed", "task.init_seed"}, diff
