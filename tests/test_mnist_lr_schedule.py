"""The MNIST LR-schedule task on small test-written data."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import config
from pes import estimators, outer, systems, tasks
from pes.data import images

SMALL = dict(
    data_source="npz",
    num_val=40,
    horizon=12,
    batch_size=8,
    objective_batch_size=8,
    hidden=[6],
    downsample=4,
)


def write_npz(directory, name="mnist", n_train=120, n_test=40, seed=0):
    """Learnable toy data: the label is the brightest of ten image bands."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)

    def make(n):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(y):
            x[i, :, 2 + 2 * label : 4 + 2 * label] = 250
        return x, y.astype(np.uint8)

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    images.save_npz(
        directory / f"{name}.npz", images.RawData(xtr[..., None], ytr, xte[..., None], yte, "test")
    )
    return directory


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_npz(tmp_path_factory.mktemp("mnist_data"))


def make(data_dir, **kw):
    return tasks.make("mnist_lr_schedule", data_dir=str(data_dir), **{**SMALL, **kw})


def test_task_facts(data_dir):
    task = make(data_dir)
    np.testing.assert_allclose(np.asarray(task.theta_init), [math.log(0.003), math.log(30.0)], rtol=1e-6)
    assert task.dataset.name == "mnist" and task.dataset.origin.startswith("npz:")
    assert task.dataset.num_train == 80 and task.metadata["num_features"] == 49 and task.differentiable
    out = task.evaluate(task.theta_init, jax.random.key(0))
    assert set(out) == {"dataset/mnist", "objective/train_sum_loss"}


@pytest.mark.numerics
def test_full_run_sum_equals_the_systems_full_objective(data_dir):
    """full_run's train_sum_loss follows the estimators' key discipline exactly."""
    task = make(data_dir)
    theta = jnp.log(jnp.asarray([0.1, 0.5]))
    key = jax.random.key(7)
    out = jax.jit(task.full_run)(theta, key)
    init_key, data_key = jax.random.split(key)
    ref = systems.full_objective(task.system, theta, init_key, data_key)
    np.testing.assert_allclose(float(out["train_sum_loss"]), float(ref), rtol=1e-5)
    for name in ("final_val_acc", "final_test_acc", "val_mean_acc"):
        assert 0.0 <= float(out[name]) <= 1.0


def test_learning_happens_and_lr_matters(data_dir):
    """A good constant LR lowers the summed loss far below a tiny LR (negative control)."""
    task = make(data_dir, horizon=60, hidden=[16])
    run = jax.jit(jax.vmap(task.full_run, in_axes=(0, None)))
    thetas = jnp.log(jnp.asarray([[1e-5, 0.01], [0.1, 0.01]]))
    out = run(thetas, jax.random.key(1))
    tiny, good = np.asarray(out["train_sum_loss"])
    assert tiny > 60 * 2.0  # ~ln(10) per step: nothing learned
    assert good < 0.5 * tiny
    assert float(out["final_val_acc"][1]) > 0.5


def test_val_objective_is_minus_minibatch_accuracy(data_dir):
    task = make(data_dir, objective="val_sum_acc")
    assert not task.differentiable
    state = task.system.init(jax.random.key(0))
    _, loss = jax.jit(task.system.step)(task.theta_init, state, jax.random.key(1))
    value = -float(loss) * 8  # objective_batch_size 8: a multiple of 1/8
    assert 0 <= value <= 8 and abs(value - round(value)) < 1e-5


@pytest.mark.parametrize("name", ["tbptt", "rtrl", "uoro", "pes_a"])
def test_gradient_estimators_refuse_the_accuracy_objective(data_dir, name):
    task = make(data_dir, objective="val_sum_acc")
    extra = {"sigma": 0.1, "num_particles": 2} if name == "pes_a" else {}
    est = estimators.make(name, task.system, trunc_len=2, **extra)
    # float32 theta like the float32 model (core UORO cannot mix a float64 theta with a
    # float32 state: a jvp dtype error, unrelated to this task)
    theta = task.theta_init.astype(jnp.float32)
    state = est.init(jax.random.key(0), theta)
    allowed = "allowed estimators: ars, es, gpes, nres, openai_es, pes\n"
    with pytest.raises(TypeError, match=f"'val_sum_acc'.*not differentiable; {allowed}"):
        est.estimate(jax.random.key(1), theta, state)


def test_experiment_layer_refuses_gradient_estimators(data_dir):
    base = [
        "task=mnist_lr_schedule",
        f"task.data_dir={data_dir}",
        "task.data_source=npz",
        "task.num_val=40",
        "task.horizon=12",
        "task.hidden=[6]",
        "task.downsample=4",
        "task.objective=val_sum_acc",
    ]
    with pytest.raises(
        config.ConfigError,
        match="estimator=tbptt is invalid .* not differentiable; "
        "allowed: ars, es, gpes, nres, openai_es, pes$",
    ):
        config.build(config.compose([*base, "estimator=tbptt"]))
    built = config.build(config.compose([*base, "estimator=pes", "estimator.num_particles=4"]))
    assert built.task.objective == "val_sum_acc"


@pytest.mark.parametrize("name", ["es", "pes"])
def test_es_and_pes_run_on_the_accuracy_objective(data_dir, name):
    task = make(data_dir, objective="val_sum_acc")
    # A learning rate at which the model learns within a truncation (0.1; the default 0.003
    # barely moves it), and perturbations large enough to change minibatch accuracies: at
    # sigma=0.1 from theta_init every particle scores the same and every estimate is 0.
    theta0 = jnp.log(jnp.asarray([0.1, 0.5]))
    est = estimators.make(name, task.system, trunc_len=5, sigma=0.5, num_particles=4)
    state, metrics = outer.run(jax.random.key(0), theta0, est, optax.adam(1e-2), num_steps=4)
    assert np.all(np.isfinite(np.asarray(state.theta)))
    # The logged loss is the particles' mean truncation objective: a sum over K = 5 steps of
    # minus a minibatch accuracy (a multiple of 1/8), so a multiple of 1/32 in [-5, 0] ...
    loss = np.asarray(metrics["loss"], np.float64)
    assert np.all((loss >= -5.0) & (loss <= 0.0)), loss
    np.testing.assert_allclose(loss * 32, np.round(loss * 32), atol=1e-4)
    # ... and not identically zero (some accuracy); the estimate moved theta (Adam steps ~1e-2).
    assert np.any(loss < 0), loss
    assert np.any(np.abs(np.asarray(state.theta) - np.asarray(theta0)) > 1e-3)


def test_mnist_or_fashion_falls_back_to_fashion(tmp_path):
    write_npz(tmp_path, name="fashion_mnist")
    task = make(tmp_path, dataset="mnist_or_fashion")
    assert task.dataset.name == "fashion_mnist"
    assert "dataset/fashion_mnist" in task.evaluate(task.theta_init, jax.random.key(0))
    with pytest.raises(images.DataUnavailableError, match="'mnist'"):
        make(tmp_path, dataset="mnist")


@pytest.mark.parametrize(
    "kw, msg",
    [
        (
            dict(objective="val_loss"),
            "objective='val_loss' is invalid; allowed: train_sum_loss, val_sum_acc",
        ),
        (dict(dataset="cifar10"), "dataset='cifar10' is invalid"),
        (dict(downsample=3), "downsample=3 is invalid"),
        (dict(horizon=0), "horizon=0 is invalid"),
    ],
)
def test_bad_values(data_dir, kw, msg):
    with pytest.raises(ValueError, match=msg):
        make(data_dir, **kw)


def test_missing_dataset_is_a_one_line_config_error(tmp_path):
    overrides = ["task=mnist_lr_schedule", f"task.data_dir={tmp_path}", "task.data_source=npz"]
    with pytest.raises(config.ConfigError, match="dataset 'mnist': no mnist.npz") as info:
        config.build(config.compose(overrides))
    assert "\n" not in str(info.value)
