"""MNIST: meta-learning an inverse-time-decay learning-rate schedule (the paper's figure 5).

Inner problem: an MLP (flax; paper 784-100-100-10, ReLU, biases) trained with SGD and
PyTorch-style momentum 0.9 on minibatches of 100 drawn i.i.d. from the first 50,000
training images, for T = 5000 steps, with lr_t = exp(theta0) / (1 + t/T)^exp(theta1)
(theta = (ln initial LR, ln decay exponent), theta_init = (ln 0.003, ln 30)).

Meta-objectives (one value per inner step, summed over a truncation):

* ``train_sum_loss``: the cross-entropy on a fresh random training minibatch after the step;
* ``val_sum_acc``: minus the accuracy on a fresh random validation minibatch after the
  step.  Accuracy is piecewise constant in everything, so this objective is not
  differentiable: the task's ``differentiable`` field is False (the experiment layer refuses
  gradient-based estimators) and differentiating the step raises a `TypeError` that says
  so (TBPTT / RTRL / UORO built directly on the system fail on first use).

The task's ``full_run(theta, key)`` trains one fresh model for the whole horizon and
returns the sum of the per-step training-minibatch losses (the train-loss heatmap's
value), the mean per-step validation-minibatch accuracy, and the final full-set
validation / test accuracy and validation loss; grids and final evaluations vmap it.

Data: ``dataset`` mnist | fashion_mnist, or ``mnist_or_fashion``
(MNIST if any source has it, else Fashion-MNIST: the offline stand-in, same format).
Which one was used is in the task's ``dataset`` field (name, origin) and is
logged as the constant metrics ``dataset/<name>`` = 1 and ``objective/<objective>`` = 1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pes import hyperopt, systems
from pes._extras import require
from pes.data import images
from pes.tasks import DatasetInfo, Task, check_ints, check_param, check_widths

nn = require("flax.linen", extra="suite", by="task 'mnist_lr_schedule'")

OBJECTIVES = ("train_sum_loss", "val_sum_acc")
DATASETS = ("mnist", "fashion_mnist", "mnist_or_fashion")


class MLP(nn.Module):
    """The inner model: a ReLU MLP with ``hidden`` widths and a ``num_classes`` output."""

    hidden: Sequence[int]
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)


@jax.custom_jvp
def _non_differentiable(x):
    return x


@_non_differentiable.defjvp
def _refuse_jvp(primals, tangents):
    from pes import estimators  # (pes.estimators imports pes.tasks)

    raise TypeError(
        "task 'mnist_lr_schedule': objective 'val_sum_acc' (validation accuracy) is not "
        f"differentiable; allowed estimators: {', '.join(estimators.derivative_free())}"
    )


def _check(name, value, ok, allowed):
    check_param("mnist_lr_schedule", name, value, ok, allowed)


@functools.lru_cache(maxsize=4)
def _load(dataset: str, source: str, data_dir: str | None, num_val: int, downsample: int):
    """(dataset name, origin, train x, train y, val x, val y, test x, test y), features flat.

    Images stay uint8 (downsample 1) or become float32 pixel means (downsample > 1);
    `_features` normalises them inside the compiled step.
    """
    names = ("mnist", "fashion_mnist") if dataset == "mnist_or_fashion" else (dataset,)
    name, raw = images.load_first(names, source=source, data_dir=data_dir, keys={"source": "data_source"})
    data = images.split(raw, name, normalize_images=False, num_val=num_val)

    def prep(x):
        n, h, w, c = x.shape
        if downsample == 1:
            return x.reshape(n, h * w * c)
        f = downsample
        pooled = x.reshape(n, h // f, f, w // f, f, c).astype(np.float32).mean(axis=(2, 4))
        return pooled.reshape(n, -1)

    return (
        name,
        data.origin,
        prep(data.train_images),
        data.train_labels,
        prep(data.val_images),
        data.val_labels,
        prep(data.test_images),
        data.test_labels,
    )


def make(
    dataset: str = "mnist",
    data_source: str = "auto",
    data_dir: str | None = None,
    num_val: int = 10_000,
    objective: str = "train_sum_loss",
    horizon: int = 5000,
    batch_size: int = 100,
    objective_batch_size: int = 100,
    hidden: Sequence[int] = (100, 100),
    downsample: int = 1,
    momentum: float = 0.9,
    weight_decay: float = 1e-10,
    init_lr: float = 0.003,
    init_decay: float = 30.0,
) -> Task:
    """Build the task.

    Args:
      dataset: mnist | fashion_mnist | mnist_or_fashion (MNIST if available, else
        Fashion-MNIST).
      data_source: pes.data source: auto | tfds | idx | npz.
      data_dir: directory of local IDX/npz files (null: the default data folder).
      num_val: validation images taken from the end of the train split (paper 10,000).
      objective: train_sum_loss | val_sum_acc.
      horizon: T, inner steps of one training run (paper 5000).
      batch_size: training minibatch size (paper 100).
      objective_batch_size: minibatch size of the per-step meta-objective (paper 100).
      hidden: hidden-layer widths of the MLP (paper [100, 100]).
      downsample: average-pool the images by this factor before the MLP (paper 1; the
        quick profile uses 2, i.e. 14x14 inputs).
      momentum: PyTorch-style momentum coefficient (paper 0.9).
      weight_decay: L2 coefficient added to the gradient (paper 1e-10).
      init_lr, init_decay: the initial schedule, theta_init = (ln init_lr, ln init_decay).
    """
    _check("dataset", dataset, dataset in DATASETS, ", ".join(DATASETS))
    _check("data_source", data_source, data_source in images.SOURCES, ", ".join(images.SOURCES))
    _check("objective", objective, objective in OBJECTIVES, ", ".join(OBJECTIVES))
    check_ints(
        "mnist_lr_schedule",
        1,
        horizon=horizon,
        batch_size=batch_size,
        objective_batch_size=objective_batch_size,
        num_val=num_val,
    )
    hidden = check_widths("mnist_lr_schedule", "hidden", hidden)
    _check("downsample", downsample, downsample in (1, 2, 4, 7), "1, 2, 4 or 7 (divisors of 28)")
    _check("momentum", momentum, 0.0 <= momentum < 1.0, "a number in [0, 1)")
    _check("weight_decay", weight_decay, weight_decay >= 0.0, "a number >= 0")
    _check("init_lr", init_lr, init_lr > 0 and math.isfinite(init_lr), "a finite number > 0")
    _check(
        "init_decay",
        init_decay,
        init_decay > 0 and math.isfinite(init_decay),
        "a finite number > 0",
    )

    name, origin, train_x, train_y, val_x, val_y, test_x, test_y = _load(
        dataset, data_source, data_dir, num_val, downsample
    )
    spec = images.SPECS[name]
    mean, std = float(spec.mean[0]), float(spec.std[0])
    train_x, train_y = jnp.asarray(train_x), jnp.asarray(train_y)
    val_x, val_y = jnp.asarray(val_x), jnp.asarray(val_y)
    test_x, test_y = jnp.asarray(test_x), jnp.asarray(test_y)
    num_features = int(train_x.shape[1])

    model = MLP(hidden)

    def features(x):
        return (x.astype(jnp.float32) / 255.0 - mean) / std

    def sample(key, xs, ys, size):
        idx = jax.random.randint(key, (size,), 0, xs.shape[0])
        return features(xs[idx]), ys[idx]

    def logits(params, x):
        return model.apply(params, x)

    def loss_fn(params, batch):
        x, y = batch
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y))

    def accuracy(params, x, y):
        return jnp.mean((jnp.argmax(logits(params, x), axis=-1) == y).astype(jnp.float32))

    def init_params(key):
        return model.init(key, jnp.zeros((1, num_features), jnp.float32))

    def train_objective(params, key):
        return loss_fn(params, sample(key, train_x, train_y, objective_batch_size))

    def val_objective(params, key):
        x, y = sample(key, val_x, val_y, objective_batch_size)
        # the guard sits on the logits: the accuracy's own tangent is a symbolic zero,
        # which JAX would never pass to a custom rule
        out = _non_differentiable(logits(params, x))
        return -jnp.mean((jnp.argmax(out, axis=-1) == y).astype(jnp.float32))

    optimizer = hyperopt.inner_optimizer("sgdm", momentum=momentum, weight_decay=weight_decay)

    def build(meta_objective):
        return hyperopt.training_system(
            init_params=init_params,
            train_loss=loss_fn,
            sample_batch=lambda key: sample(key, train_x, train_y, batch_size),
            optimizer=optimizer,
            learning_rate=lambda theta, t: hyperopt.schedule_value("inverse-time-decay", theta, t, horizon),
            meta_objective=meta_objective,
            horizon=horizon,
        )

    train_system = build(train_objective)
    system = train_system if objective == "train_sum_loss" else build(val_objective)

    def full_set(params, xs, ys, chunk=2000):
        """Mean loss and accuracy over a whole split, in chunks (bounded memory under vmap)."""
        n = xs.shape[0] - xs.shape[0] % chunk if xs.shape[0] >= chunk else xs.shape[0]
        size = min(chunk, n)
        xs_c = xs[:n].reshape(n // size, size, -1)
        ys_c = ys[:n].reshape(n // size, size)

        def one(batch):
            x, y = features(batch[0]), batch[1]
            out = logits(params, x)
            return (
                jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y)),
                jnp.mean((jnp.argmax(out, -1) == y).astype(jnp.float32)),
            )

        losses, accs = jax.lax.map(one, (xs_c, ys_c))
        return jnp.mean(losses), jnp.mean(accs)

    def full_run(theta, key):
        """One fresh training of ``horizon`` steps at fixed theta: the evaluation metrics.

        Same key discipline as `pes.systems.full_objective` with (init_key, data_key) =
        split(key), so ``train_sum_loss`` equals the train-loss system's full objective.
        """
        init_key, data_key = jax.random.split(key)
        state = train_system.init(init_key)

        def body(state, step_key):
            state, train_loss = train_system.step(theta, state, step_key)
            x, y = sample(jax.random.fold_in(step_key, 1), val_x, val_y, objective_batch_size)
            return state, (train_loss, accuracy(state.params, x, y))

        keys = systems.step_keys(data_key, horizon)[:, 0]
        state, (train_losses, val_accs) = jax.lax.scan(body, state, keys)
        val_loss, val_acc = full_set(state.params, val_x, val_y)
        _, test_acc = full_set(state.params, test_x, test_y)
        return {
            "train_sum_loss": jnp.sum(train_losses),
            "val_mean_acc": jnp.mean(val_accs),
            "final_val_acc": val_acc,
            "final_val_loss": val_loss,
            "final_test_acc": test_acc,
        }

    def evaluate(theta, key):
        del theta, key
        # constant markers: which dataset and objective produced these rows
        return {
            f"dataset/{name}": jnp.ones((), jnp.float32),
            f"objective/{objective}": jnp.ones((), jnp.float32),
        }

    theta0 = jnp.asarray([math.log(init_lr), math.log(init_decay)], jnp.result_type(float))
    metadata = {
        "num_features": num_features,
        "hidden": list(hidden),
        "horizon": horizon,
        "theta_names": ["ln initial LR", "ln decay exponent"],
    }
    return Task(
        "mnist_lr_schedule",
        system,
        theta0,
        evaluate,
        metadata,
        differentiable=objective != "val_sum_acc",
        objective=objective,
        dataset=DatasetInfo(name, origin, int(train_x.shape[0])),
        full_run=full_run,
    )


__all__ = ["MLP", "make"]
