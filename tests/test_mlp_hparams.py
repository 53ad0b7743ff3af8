"""Figure 6's inner problem: per-tensor LR and momentum, width masks (pes.hyperopt) and the
29-hyperparameter Fashion-MNIST task on small test-written data."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import config
from pes import estimators, hyperopt, search, systems, tasks
from pes.tasks import mlp_hparams
from tests.test_mnist_lr_schedule import SMALL as LR_SCHEDULE_SMALL
from tests.test_mnist_lr_schedule import write_npz

# the LR-schedule task's small sizes, with a shorter horizon, two hidden layers and 2 evaluation runs
SMALL = dict(LR_SCHEDULE_SMALL, horizon=8, hidden=[6, 5], num_eval_runs=2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_npz(tmp_path_factory.mktemp("fashion_data"), name="fashion_mnist")


def make(data_dir, **kw):
    return tasks.make("mlp_hparams", data_dir=str(data_dir), **{**SMALL, **kw})


# ----------------------------------------------------------------------------- pes.hyperopt


@pytest.mark.parametrize(
    "fraction, width, active",
    [(0.5, 10, 5), (0.55, 10, 5), (0.59, 10, 5), (0.6, 10, 6), (1.0, 10, 10), (0.09, 10, 0), (0.3, 100, 30)],
)
def test_width_mask_switches_off_units_from_floor_p_width(fraction, width, active):
    mask = np.asarray(hyperopt.width_mask(jnp.asarray(fraction), width))
    np.testing.assert_array_equal(mask, (np.arange(width) < active).astype(float))


def test_masked_units_contribute_nothing():
    model = mlp_hparams.MaskedMLP((6, 5))
    x = jax.random.normal(jax.random.key(0), (7, 4))
    params = model.init(jax.random.key(1), x)
    masks = hyperopt.width_masks(jnp.array([0.5, 0.4]), (6, 5))  # 3 of 6 and 2 of 5 units on
    out = model.apply(params, x, masks)
    # scramble every weight that touches a switched-off unit: nothing changes
    p = jax.tree.map(np.array, params)["params"]
    rng = np.random.default_rng(0)
    p["Dense_0"]["kernel"][:, 3:] = rng.normal(size=(4, 3)) * 100
    p["Dense_0"]["bias"][3:] = 100.0
    p["Dense_1"]["kernel"][3:, :] = rng.normal(size=(3, 5)) * 100  # from off units of layer 0
    p["Dense_1"]["kernel"][:, 2:] = rng.normal(size=(6, 3)) * 100  # into off units of layer 1
    p["Dense_1"]["bias"][2:] = -50.0
    p["Dense_2"]["kernel"][2:, :] = rng.normal(size=(3, 10)) * 100
    np.testing.assert_allclose(model.apply({"params": p}, x, masks), out, rtol=1e-12)
    # the same scrambling does change the unmasked network (the check could fail)
    assert not np.allclose(model.apply({"params": p}, x), model.apply(params, x))
    # and the switched-off units' weights get zero training gradient
    grads = jax.grad(lambda q: jnp.sum(model.apply(q, x, masks) ** 2))(params)["params"]
    assert not np.any(np.asarray(grads["Dense_0"]["kernel"])[:, 3:])
    assert not np.any(np.asarray(grads["Dense_1"]["kernel"])[3:, :])
    assert not np.any(np.asarray(grads["Dense_2"]["kernel"])[2:, :])
    assert np.any(np.asarray(grads["Dense_0"]["kernel"])[:, :3])


def test_width_masks_refuse_differentiation():
    f = lambda th: jnp.sum(hyperopt.width_masks(jax.nn.sigmoid(th), (4, 4))[0])
    th = jnp.array([0.3, -0.2])
    assert float(f(th)) == 2.0  # floor(sigmoid(0.3) * 4) = 2
    with pytest.raises(TypeError, match="discrete hyperparameters.*es or pes"):
        jax.grad(f)(th)
    with pytest.raises(TypeError, match="discrete hyperparameters"):
        jax.jvp(f, (th,), (jnp.ones(2),))


def test_per_tensor_lr_and_momentum_against_a_hand_computed_step():
    """Two SGD-momentum steps on a quadratic with a different lr and momentum per tensor."""
    target = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}
    wd = 0.01
    system = hyperopt.training_system(
        init_params=lambda key: {"a": jnp.array([0.5, 0.5]), "b": jnp.array(-1.0)},
        train_loss=lambda p, batch: 0.5 * batch * sum(jnp.sum((p[k] - target[k]) ** 2) for k in p),
        sample_batch=lambda key: 2.0,
        optimizer=hyperopt.inner_optimizer("sgdm", tuned_momentum=True, weight_decay=wd),
        learning_rate=lambda th, t: {"a": jnp.exp(th["lr"][0]), "b": jnp.exp(th["lr"][1])},
        meta_objective=lambda p, key: jnp.sum(p["a"]) + p["b"],
        horizon=5,
        momentum=lambda th, t: {"a": jax.nn.sigmoid(th["mom"][0]), "b": jax.nn.sigmoid(th["mom"][1])},
    )
    lr, mom = np.array([0.1, 0.02]), np.array([0.9, 0.5])
    theta = {"lr": jnp.log(jnp.asarray(lr)), "mom": jnp.asarray([math.log(m / (1 - m)) for m in mom])}
    state = system.init(jax.random.key(0))
    state, l1 = system.step(theta, state, jax.random.key(1))
    state, l2 = system.step(theta, state, jax.random.key(2))
    # by hand, PyTorch style: g = 2 (p - target) + wd p; buf = m buf + g; p -= lr buf
    p = {"a": np.array([0.5, 0.5]), "b": np.array(-1.0)}
    buf = {"a": np.zeros(2), "b": np.array(0.0)}
    hand = []
    for _ in range(2):
        for i, k in enumerate(("a", "b")):
            g = 2.0 * (p[k] - np.asarray(target[k])) + wd * p[k]
            buf[k] = mom[i] * buf[k] + g
            p[k] = p[k] - lr[i] * buf[k]
        hand.append(p["a"].sum() + p["b"])
    np.testing.assert_allclose(np.asarray(state.params["a"]), p["a"], rtol=1e-12)
    np.testing.assert_allclose(float(state.params["b"]), p["b"], rtol=1e-12)
    np.testing.assert_allclose([float(l1), float(l2)], hand, rtol=1e-12)
    assert int(state.t) == 2


def test_tuned_momentum_scalar_and_errors():
    opt = hyperopt.tuned_momentum_direction()
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    d, state = opt.update({"w": jnp.ones(3)}, state, params, momentum=0.5)
    d, state = opt.update({"w": jnp.ones(3)}, state, params, momentum=0.5)
    np.testing.assert_allclose(np.asarray(d["w"]), 1.5)
    with pytest.raises(ValueError, match="momentum must be a scalar or a tree"):
        opt.update({"w": jnp.ones(3)}, state, params, momentum=jnp.ones(2))
    with pytest.raises(ValueError, match="tuned_momentum needs inner_optimizer='sgdm'"):
        hyperopt.inner_optimizer("adam", tuned_momentum=True)


def test_vector_to_tree_follows_leaf_order():
    params = {"params": {"Dense_0": {"bias": 0, "kernel": 0}, "Dense_1": {"bias": 0, "kernel": 0}}}
    tree = hyperopt.vector_to_tree(jnp.arange(4.0), params)
    assert (
        float(tree["params"]["Dense_0"]["kernel"]) == 1.0 and float(tree["params"]["Dense_1"]["bias"]) == 2.0
    )
    assert hyperopt.tensor_names(params) == [
        "Dense_0/bias",
        "Dense_0/kernel",
        "Dense_1/bias",
        "Dense_1/kernel",
    ]
    with pytest.raises(ValueError, match="the model has 4 parameter tensors"):
        hyperopt.vector_to_tree(jnp.arange(3.0), params)


# ----------------------------------------------------------------------------- the task


def test_task_theta_is_29_hyperparameters_at_paper_shape(data_dir):
    task = make(data_dir, hidden=[7, 7, 7, 7, 7], init_seed=3)
    shapes = jax.tree.map(jnp.shape, task.theta_init)
    assert shapes == {"lr": (12,), "momentum": (12,), "width": (5,)}
    md = task.metadata
    assert md["num_hparams"] == 29 and not task.differentiable and task.dataset.name == "fashion_mnist"
    assert task.objective == "val_sum_loss" and task.eval_keys.shape == (2,)
    assert md["theta_names"][0] == "lr/Dense_0/bias" and md["theta_names"][-1] == "width/layer4"
    # random init: uniform in the init ranges (LR 1e-4..1e-2, momentum .01..0.9, width 0.2..0.8)
    nat = mlp_hparams.constrained(task.theta_init)
    assert np.all((nat["lr"] >= 1e-4) & (nat["lr"] <= 1e-2))
    assert np.all((nat["momentum"] >= 0.01) & (nat["momentum"] <= 0.9))
    assert np.all((nat["width"] >= 0.2) & (nat["width"] <= 0.8))
    other = make(data_dir, hidden=[7, 7, 7, 7, 7], init_seed=5)
    assert not np.allclose(other.theta_init["lr"], task.theta_init["lr"])
    low, high = task.search_space
    np.testing.assert_allclose(np.asarray(low["lr"]), math.log(1e-8), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(high["width"]), math.log(0.999 / 0.001), rtol=1e-12)


@pytest.mark.integration
def test_task_step_uses_each_tensors_lr_momentum_and_layer_mask(data_dir):
    """One inner step of the task against an independent computation of the same step."""
    task = make(data_dir, weight_decay=0.0, init="fixed", lr=0.05, momentum=0.5, width_fraction=0.5)
    theta = dict(task.theta_init, lr=jnp.log(jnp.linspace(0.01, 0.06, 6)))  # 3 layers x {bias, kernel}
    state = task.system.init(jax.random.key(0))
    # give the momentum buffer a known non-zero value to see the per-tensor momentum act
    buf = jax.tree.map(lambda x: jnp.full_like(x, 0.1), state.params)
    state = state._replace(opt_state=hyperopt.MomentumState(buf))  # weight_decay 0: no chain
    new, _ = task.system.step(theta, state, jax.random.key(7))
    # independent: same batch, same masks, flax apply, per-tensor formulas
    batch_key, _ = jax.random.split(jax.random.key(7))
    fx = lambda x: (x.astype(jnp.float32) / 255.0 - 0.2860) / 0.3530
    data = mlp_hparams.load_flat_images("fashion_mnist", "npz", str(data_dir), 40, 4)
    xs, ys = jnp.asarray(data[2]), jnp.asarray(data[3])
    idx = jax.random.randint(batch_key, (8,), 0, xs.shape[0])
    masks = hyperopt.width_masks(jnp.array([0.5, 0.5]), (6, 5))
    model = mlp_hparams.MaskedMLP((6, 5))
    loss = lambda p: jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(model.apply(p, fx(xs[idx]), masks), ys[idx])
    )
    grads = jax.grad(loss)(state.params)
    lrs = np.linspace(0.01, 0.06, 6)
    for i, (p0, g, p1) in enumerate(
        zip(jax.tree.leaves(state.params), jax.tree.leaves(grads), jax.tree.leaves(new.params))
    ):
        expected = np.asarray(p0) - lrs[i] * (0.5 * 0.1 + np.asarray(g))
        np.testing.assert_allclose(np.asarray(p1), expected, rtol=1e-5, atol=1e-7)
    # width 0.5 of 6 and 5 units: 3 and 2 on; the off units' incoming weights only move by momentum
    k0 = np.asarray(new.params["params"]["Dense_0"]["kernel"])
    np.testing.assert_allclose(
        k0[:, 3:], np.asarray(state.params["params"]["Dense_0"]["kernel"])[:, 3:] - lrs[1] * 0.05, rtol=1e-6
    )


@pytest.mark.integration
def test_es_tunes_the_discrete_widths_gradient_free(data_dir):
    task = make(data_dir)
    est = estimators.make("es", task.system, trunc_len=4, sigma=0.3, num_particles=4)
    state = est.init(jax.random.key(0), task.theta_init)
    grad, _, aux = jax.jit(est.estimate)(jax.random.key(1), task.theta_init, state)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grad))
    assert np.isfinite(float(aux["loss"]))
    # width changes the objective (so ES sees it), while autodiff through it is refused
    obj = lambda th: systems.full_objective(task.system, th, jax.random.key(2), jax.random.key(3))
    narrow = dict(task.theta_init, width=jnp.full((2,), -3.0))
    assert float(jax.jit(obj)(narrow)) != float(jax.jit(obj)(task.theta_init))
    with pytest.raises(TypeError, match="discrete hyperparameters"):
        jax.grad(obj)(task.theta_init)
    # the experiment layer refuses gradient-based estimators before any compute
    cfg = config.compose(
        [
            "task=mlp_hparams",
            f"task.data_dir={data_dir}",
            "task.data_source=npz",
            "task.num_val=40",
            "task.downsample=4",
            "task.hidden=[6,5]",
            "task.horizon=8",
            "estimator=tbptt",
        ]
    )
    with pytest.raises(config.ConfigError, match="estimator=tbptt is invalid for task mlp_hparams"):
        config.build(cfg)


@pytest.mark.integration
def test_evaluate_is_the_mean_full_objective_over_the_fixed_runs(data_dir):
    task = make(data_dir)
    keys = task.eval_keys
    full = jax.jit(lambda k: systems.full_objective(task.system, task.theta_init, *jax.random.split(k)))
    direct = np.mean([float(full(k)) for k in keys])
    evaluate = jax.jit(task.evaluate)
    out = evaluate(task.theta_init, jax.random.key(99))
    assert float(out["meta_objective"]) == pytest.approx(direct, rel=1e-6)
    # a diverging configuration (LR e^5 on every tensor) scores very badly, never NaN
    # (inner gradients pass through nan_to_num; a non-finite mean would score +inf)
    wild = dict(task.theta_init, lr=jnp.full((6,), 5.0), momentum=jnp.full((6,), 5.0))
    bad = float(evaluate(wild, jax.random.key(0))["meta_objective"])
    assert not math.isnan(bad) and bad > 100 * direct


@pytest.mark.integration
def test_untuned_groups_use_fixed_values(data_dir):
    task = make(data_dir, tune=["lr"], momentum=0.0, width_fraction=1.0, horizon=3)
    assert set(task.theta_init) == {"lr"} and task.metadata["num_hparams"] == 6
    assert task.differentiable  # no width mask: gradients are fine
    g = jax.grad(lambda th: systems.full_objective(task.system, th, jax.random.key(0), jax.random.key(1)))(
        task.theta_init
    )
    assert np.all(np.isfinite(np.asarray(g["lr"])))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(width_fraction=0.0), r"width_fraction=0.0 is invalid; allowed: a number in \(0, 1\]"),
        (dict(width_fraction=1.5), r"width_fraction=1.5 is invalid; allowed: a number in \(0, 1\]"),
        (
            dict(width_fraction=1.0, init="fixed"),
            r"width_fraction=1.0 is invalid; allowed: a number in \(0, 1\) when width is tuned",
        ),
        (dict(tune=["lr", "depth"]), r"tune=\['lr', 'depth'\] is invalid"),
        (dict(tune=[]), r"tune=\[\] is invalid"),
        (dict(momentum=1.0), r"momentum=1.0 is invalid"),
        (dict(init="grid"), r"init='grid' is invalid; allowed: random, fixed"),
        (dict(hidden=[]), r"hidden=\[\] is invalid"),
    ],
)
def test_bad_inputs_fail_before_loading_data(kw, match, tmp_path):
    # tmp_path has no data: a check that ran after loading would raise DataUnavailableError
    with pytest.raises(ValueError, match=match) as err:
        tasks.make("mlp_hparams", data_dir=str(tmp_path), data_source="npz", **kw)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- random search


def test_random_search_batches_configurations_like_single_evaluations(data_dir):
    task = make(data_dir)
    low, high = task.search_space
    configs = search.uniform_configs(jax.random.key(0), low, high, 5)
    batched = np.asarray(
        search.score_configs(search.mean_objective(task.system, task.eval_keys), configs, chunk_size=2)
    )
    evaluate = jax.jit(task.evaluate)
    single = [
        float(evaluate(jax.tree.map(lambda x, i=i: x[i], configs), jax.random.key(0))["meta_objective"])
        for i in range(5)
    ]
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    for leaf, lo, hi in zip(jax.tree.leaves(configs), jax.tree.leaves(low), jax.tree.leaves(high)):
        assert np.all((np.asarray(leaf) >= np.asarray(lo)[None]) & (np.asarray(leaf) <= np.asarray(hi)[None]))


def test_mlp_module_is_flax():
    assert issubclass(mlp_hparams.MaskedMLP, nn.Module)


def test_search_space_is_checked_by_the_task_contract(data_dir):
    from pes.tasks import Task, TaskContractError

    task = make(data_dir)
    low, high = task.search_space
    with pytest.raises(TaskContractError, match="search_space=.* is invalid"):
        Task("t", task.system, task.theta_init, task.evaluate, search_space=({"lr": low["lr"]}, high))
    with pytest.raises(TaskContractError, match="shaped like theta_init"):
        Task("t", task.system, {"lr": task.theta_init["lr"]}, task.evaluate, search_space=(low, high))
