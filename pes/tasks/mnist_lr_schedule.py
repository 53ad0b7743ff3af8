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

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

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


class Images(NamedTuple):
    """A dataset's splits with flat features (uint8 at downsample 1, else float32 pixel means)."""

    name: str
    origin: str
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    def on_device(self, fields: Sequence[str]) -> Images:
        """These images with the arrays ``fields`` as JAX arrays."""
        return self._replace(**{k: jnp.asarray(getattr(self, k)) for k in fields})


def _pool(x: np.ndarray, downsample: int) -> np.ndarray:
    """NHWC images -> (N, features): flattened, average-pooled by ``downsample`` first if > 1."""
    n, h, w, c = x.shape
    if downsample == 1:
        return x.reshape(n, h * w * c)
    f = downsample
    pooled = x.reshape(n, h // f, f, w // f, f, c).astype(np.float32).mean(axis=(2, 4))
    return pooled.reshape(n, -1)


@functools.lru_cache(maxsize=4)
def _load(dataset: str, source: str, data_dir: str | None, num_val: int, downsample: int) -> Images:
    """The dataset's `Images`, features flat.

    Images stay uint8 (downsample 1) or become float32 pixel means (downsample > 1);
    `Net.features` normalises them inside the compiled step.
    """
    names = ("mnist", "fashion_mnist") if dataset == "mnist_or_fashion" else (dataset,)
    name, raw = images.load_first(names, source=source, data_dir=data_dir, keys={"source": "data_source"})
    data = images.split(raw, name, normalize_images=False, num_val=num_val)
    return Images(
        name,
        data.origin,
        _pool(data.train_images, downsample),
        data.train_labels,
        _pool(data.val_images, downsample),
        data.val_labels,
        _pool(data.test_images, downsample),
        data.test_labels,
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """The arguments of `make` (documented there), validated when built; ``hidden`` is a tuple."""

    dataset: str
    data_source: str
    data_dir: str | None
    num_val: int
    objective: str
    horizon: int
    batch_size: int
    objective_batch_size: int
    hidden: tuple[int, ...]
    downsample: int
    momentum: float
    weight_decay: float
    init_lr: float
    init_decay: float

    def __post_init__(self):
        _check("dataset", self.dataset, self.dataset in DATASETS, ", ".join(DATASETS))
        _check("data_source", self.data_source, self.data_source in images.SOURCES, ", ".join(images.SOURCES))
        _check("objective", self.objective, self.objective in OBJECTIVES, ", ".join(OBJECTIVES))
        sizes = ("horizon", "batch_size", "objective_batch_size", "num_val")
        check_ints("mnist_lr_schedule", 1, **{k: getattr(self, k) for k in sizes})
        object.__setattr__(self, "hidden", check_widths("mnist_lr_schedule", "hidden", self.hidden))
        ok = self.downsample in (1, 2, 4, 7)
        _check("downsample", self.downsample, ok, "1, 2, 4 or 7 (divisors of 28)")
        _check("momentum", self.momentum, 0.0 <= self.momentum < 1.0, "a number in [0, 1)")
        _check("weight_decay", self.weight_decay, self.weight_decay >= 0.0, "a number >= 0")
        for key in ("init_lr", "init_decay"):
            value = getattr(self, key)
            _check(key, value, value > 0 and math.isfinite(value), "a finite number > 0")

    def load(self) -> Images:
        """The task's images (cached), as device arrays."""
        data = _load(self.dataset, self.data_source, self.data_dir, self.num_val, self.downsample)
        return data.on_device(Images._fields[2:])


class Net(NamedTuple):
    """The inner MLP on the task's images: features, minibatches, losses (pure, jit-compatible)."""

    model: nn.Module
    data: Images
    mean: float
    std: float

    @classmethod
    def of(cls, model: nn.Module, data: Images) -> Net:
        """``model`` on ``data``, normalised with the dataset's pixel statistics."""
        spec = images.SPECS[data.name]
        return cls(model, data, float(spec.mean[0]), float(spec.std[0]))

    @property
    def num_features(self) -> int:
        """Input features of one image."""
        return int(self.data.train_x.shape[1])

    def features(self, x):
        """Raw pixels -> normalised float32 features."""
        return (x.astype(jnp.float32) / 255.0 - self.mean) / self.std

    def sample(self, key, xs, ys, size):
        """A minibatch of ``size`` examples drawn i.i.d. from (xs, ys)."""
        idx = jax.random.randint(key, (size,), 0, xs.shape[0])
        return self.features(xs[idx]), ys[idx]

    def logits(self, params, x):
        """The model's logits."""
        return self.model.apply(params, x)

    def loss(self, params, batch):
        """Mean softmax cross-entropy of a (features, labels) batch."""
        x, y = batch
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(self.logits(params, x), y))

    def accuracy(self, params, x, y):
        """Mean accuracy of a batch."""
        return jnp.mean((jnp.argmax(self.logits(params, x), axis=-1) == y).astype(jnp.float32))

    def init_params(self, key):
        """Fresh model parameters."""
        return self.model.init(key, jnp.zeros((1, self.num_features), jnp.float32))

    def full_set(self, params, xs, ys, chunk=2000):
        """Mean loss and accuracy over a whole split, in chunks (bounded memory under vmap)."""
        n = xs.shape[0] - xs.shape[0] % chunk if xs.shape[0] >= chunk else xs.shape[0]
        size = min(chunk, n)
        xs_c = xs[:n].reshape(n // size, size, -1)
        ys_c = ys[:n].reshape(n // size, size)

        def one(batch):
            x, y = self.features(batch[0]), batch[1]
            out = self.logits(params, x)
            return (
                jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y)),
                jnp.mean((jnp.argmax(out, -1) == y).astype(jnp.float32)),
            )

        losses, accs = jax.lax.map(one, (xs_c, ys_c))
        return jnp.mean(losses), jnp.mean(accs)


def meta_objectives(s: Settings, net: Net) -> dict:
    """objective name -> (params after a step, key) -> that step's meta-loss."""
    d = net.data

    def train_objective(params, key):
        return net.loss(params, net.sample(key, d.train_x, d.train_y, s.objective_batch_size))

    def val_objective(params, key):
        x, y = net.sample(key, d.val_x, d.val_y, s.objective_batch_size)
        # the guard sits on the logits: the accuracy's own tangent is a symbolic zero,
        # which JAX would never pass to a custom rule
        out = _non_differentiable(net.logits(params, x))
        return -jnp.mean((jnp.argmax(out, axis=-1) == y).astype(jnp.float32))

    return {"train_sum_loss": train_objective, "val_sum_acc": val_objective}


def schedule_system(s: Settings, net: Net, meta_objective: Callable) -> systems.UnrolledSystem:
    """One training run with the inverse-time-decay schedule theta, reporting ``meta_objective``."""
    return hyperopt.training_system(
        init_params=net.init_params,
        train_loss=net.loss,
        sample_batch=lambda key: net.sample(key, net.data.train_x, net.data.train_y, s.batch_size),
        optimizer=hyperopt.inner_optimizer("sgdm", momentum=s.momentum, weight_decay=s.weight_decay),
        learning_rate=lambda theta, t: hyperopt.schedule_value("inverse-time-decay", theta, t, s.horizon),
        meta_objective=meta_objective,
        horizon=s.horizon,
    )


def full_run_fn(s: Settings, net: Net, train_system: systems.UnrolledSystem) -> Callable:
    """``full_run(theta, key)``: one fresh training of ``horizon`` steps and its evaluation metrics.

    Same key discipline as `pes.systems.full_objective` with (init_key, data_key) =
    split(key), so ``train_sum_loss`` equals the train-loss system's full objective.
    """
    d = net.data

    def body(theta, state, step_key):
        state, train_loss = train_system.step(theta, state, step_key)
        x, y = net.sample(jax.random.fold_in(step_key, 1), d.val_x, d.val_y, s.objective_batch_size)
        return state, (train_loss, net.accuracy(state.params, x, y))

    def full_run(theta, key):
        init_key, data_key = jax.random.split(key)
        state = train_system.init(init_key)
        keys = systems.step_keys(data_key, s.horizon)[:, 0]
        state, (train_losses, val_accs) = jax.lax.scan(functools.partial(body, theta), state, keys)
        val_loss, val_acc = net.full_set(state.params, d.val_x, d.val_y)
        _, test_acc = net.full_set(state.params, d.test_x, d.test_y)
        return {
            "train_sum_loss": jnp.sum(train_losses),
            "val_mean_acc": jnp.mean(val_accs),
            "final_val_acc": val_acc,
            "final_val_loss": val_loss,
            "final_test_acc": test_acc,
        }

    return full_run


def markers(dataset: str, objective: str) -> Callable:
    """``evaluate(theta, key)``: constant markers of which dataset and objective made the rows."""

    def evaluate(theta, key):
        del theta, key
        return {
            f"dataset/{dataset}": jnp.ones((), jnp.float32),
            f"objective/{objective}": jnp.ones((), jnp.float32),
        }

    return evaluate


def build(s: Settings) -> Task:
    """The task of validated settings ``s``."""
    net = Net.of(MLP(s.hidden), s.load())
    objectives = meta_objectives(s, net)
    train_system = schedule_system(s, net, objectives["train_sum_loss"])
    if s.objective == "train_sum_loss":
        system = train_system
    else:
        system = schedule_system(s, net, objectives[s.objective])
    theta0 = jnp.asarray([math.log(s.init_lr), math.log(s.init_decay)], jnp.result_type(float))
    metadata = {
        "num_features": net.num_features,
        "hidden": list(s.hidden),
        "horizon": s.horizon,
        "theta_names": ["ln initial LR", "ln decay exponent"],
    }
    return Task(
        "mnist_lr_schedule",
        system,
        theta0,
        markers(net.data.name, s.objective),
        metadata,
        differentiable=s.objective != "val_sum_acc",
        objective=s.objective,
        dataset=DatasetInfo(net.data.name, net.data.origin, int(net.data.train_x.shape[0])),
        full_run=full_run_fn(s, net, train_system),
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
    """Build the task (the keyword arguments are the task's config keys; they only fill `Settings`).

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
    return build(Settings(**locals()))


__all__ = ["MLP", "Settings", "build", "make"]
