"""Fashion-MNIST MLP with 29 continuous and discrete hyperparameters (paper figure 6).

Inner problem: a ReLU MLP (flax; paper 784 -> 5 x 100 -> 10, biases) trained for T steps
(paper 1000) by PyTorch-style SGD with momentum on minibatches of ``batch_size`` (100)
drawn i.i.d. from the first 50,000 training images; the last 10,000 are the validation
split.  The training run is `pes.hyperopt.training_system`; theta holds, in unconstrained
space (a dict of vectors):

* ``lr``: one log learning rate per parameter tensor (6 layers x {kernel, bias} = 12),
  lr = exp(theta) (the ``fixed-pl`` schedule of `pes.hyperopt`);
* ``momentum``: one momentum logit per tensor (12), momentum = sigmoid(theta), passed to
  `pes.hyperopt.tuned_momentum_direction` at every step;
* ``width``: one width logit per hidden layer (5), p = sigmoid(theta): units with index
  >= floor(p * width) of that layer have their pre-activations set to zero, so they
  contribute nothing (`pes.hyperopt.width_masks`).  The mask is a discrete function of
  theta: ES and PES handle it (they never differentiate), and differentiating through it
  raises a `TypeError` (the task's ``differentiable`` field is False).

Groups not in ``tune`` are fixed at ``lr`` / ``momentum`` / ``width_fraction``.
Initial theta: ``init="random"`` draws every tuned entry uniformly in unconstrained space
from `INIT_RANGES` with ``init_seed`` (log LR in [ln 1e-4, ln 1e-2], momentum logit in
[logit 0.01, logit 0.9], width logit in [logit 0.2, logit 0.8]); ``init="fixed"`` starts
from the fixed values.  Random search samples from the wide `SEARCH_RANGES` (LR in
[1e-8, 10], momentum and width fraction in [0.01, 0.999], again uniform in unconstrained
space): ``metadata["search_space"]`` gives the box as (low, high) trees shaped like theta.

Meta-objective: after every inner step, the cross-entropy of the updated (masked) network
on a random validation minibatch of ``objective_batch_size``; a truncation sums its K
values, a whole run its T values.  ``evaluate(theta, key)`` logs ``meta_objective``: the
mean of that full-run sum over ``num_eval_runs`` fresh trainings driven by fixed keys
(``eval_seed``; the same runs at every log point and for every method, and the same runs
random search scores configurations on: the task's ``eval_keys``; ``full_run(theta, key)``
is one such run); a non-finite mean scores +inf.  Inner gradients pass through
``nan_to_num`` before the update (as in the paper's code), so a wild configuration degrades
instead of turning the state into NaN.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pes import hyperopt, search
from pes._extras import require
from pes.data import images
from pes.systems import UnrolledSystem
from pes.tasks import DatasetInfo, Task, check_ints, check_param, check_widths
from pes.tasks.mnist_lr_schedule import Images, Net
from pes.tasks.mnist_lr_schedule import _load as load_flat_images

nn = require("flax.linen", extra="suite", by="task 'mlp_hparams'")

PyTree = Any

GROUPS = ("lr", "momentum", "width")
INITS = ("random", "fixed")
DATASETS = ("fashion_mnist", "mnist")


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


# constrained ranges; sampling is uniform in the unconstrained space (log / logit)
INIT_RANGES = {"lr": (1e-4, 1e-2), "momentum": (0.01, 0.9), "width": (0.2, 0.8)}
SEARCH_RANGES = {"lr": (1e-8, 10.0), "momentum": (0.01, 0.999), "width": (0.01, 0.999)}
TO_UNCONSTRAINED = {"lr": math.log, "momentum": _logit, "width": _logit}


def unconstrained_range(group: str, ranges: dict) -> tuple[float, float]:
    """The (low, high) range of hyperparameter ``group`` mapped to θ's unconstrained space."""
    lo, hi = ranges[group]
    return TO_UNCONSTRAINED[group](lo), TO_UNCONSTRAINED[group](hi)


class MaskedMLP(nn.Module):
    """ReLU MLP whose hidden layers can be narrowed by 0/1 masks on their pre-activations."""

    hidden: Sequence[int]
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, masks=None):
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width)(x)
            if masks is not None:
                x = jnp.where(masks[i][None, :] > 0, x, jnp.zeros_like(x))
            x = nn.relu(x)
        return nn.Dense(self.num_classes)(x)


def _check(name, value, ok, allowed):
    check_param("mlp_hparams", name, value, ok, allowed)


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The arguments of `make` (documented there), validated when built; lists become tuples."""

    dataset: str
    data_source: str
    data_dir: str | None
    num_val: int
    horizon: int
    batch_size: int
    objective_batch_size: int
    hidden: tuple[int, ...]
    downsample: int
    weight_decay: float
    tune: tuple[str, ...]
    lr: float
    momentum: float
    width_fraction: float
    init: str
    init_seed: int
    num_eval_runs: int
    eval_seed: int

    def __post_init__(self):
        _check_sizes(self)
        _check_model(self)
        _check_hparams(self)

    def load(self) -> Images:
        """The task's images (cached); the training and validation splits as JAX arrays."""
        data = load_flat_images(self.dataset, self.data_source, self.data_dir, self.num_val, self.downsample)
        return data.on_device(("train_x", "train_y", "val_x", "val_y"))


def _check_sizes(s: Settings) -> None:
    _check("dataset", s.dataset, s.dataset in DATASETS, ", ".join(DATASETS))
    _check("data_source", s.data_source, s.data_source in images.SOURCES, ", ".join(images.SOURCES))
    positive = ("horizon", "batch_size", "objective_batch_size", "num_val", "num_eval_runs")
    check_ints("mlp_hparams", 1, **{k: getattr(s, k) for k in positive})
    check_ints("mlp_hparams", 0, init_seed=s.init_seed, eval_seed=s.eval_seed)


def _check_model(s: Settings) -> None:
    hidden = check_widths("mlp_hparams", "hidden", s.hidden)
    object.__setattr__(s, "hidden", hidden)
    _check("hidden", list(hidden), len(hidden) >= 1, "a non-empty list of positive integers")
    _check("downsample", s.downsample, s.downsample in (1, 2, 4, 7), "1, 2, 4 or 7 (divisors of 28)")
    _check("weight_decay", s.weight_decay, _is_num(s.weight_decay) and s.weight_decay >= 0, "a number >= 0")


def _check_hparams(s: Settings) -> None:
    tune = tuple(s.tune)
    object.__setattr__(s, "tune", tune)
    _check(
        "tune",
        list(tune),
        len(tune) == len(set(tune)) and all(g in GROUPS for g in tune),
        f"a list of distinct groups from {', '.join(GROUPS)}",
    )
    _check("tune", list(tune), len(tune) > 0, f"at least one of {', '.join(GROUPS)}")
    _check("init", s.init, s.init in INITS, ", ".join(INITS))
    _check("lr", s.lr, _is_num(s.lr) and s.lr > 0, "a finite number > 0")
    _check("momentum", s.momentum, _is_num(s.momentum) and 0 <= s.momentum < 1, "a number in [0, 1)")
    _check(
        "width_fraction",
        s.width_fraction,
        _is_num(s.width_fraction) and 0 < s.width_fraction <= 1,
        "a number in (0, 1] (the fraction of each hidden layer's units that is switched on)",
    )
    if s.init == "fixed":  # the starting point of a tuned group must have a finite logit
        if "momentum" in tune:
            allowed = "a number in (0, 1) when momentum is tuned with init=fixed"
            _check("momentum", s.momentum, s.momentum > 0, allowed)
        if "width" in tune:
            allowed = "a number in (0, 1) when width is tuned with init=fixed (logit of 1 is infinite)"
            _check("width_fraction", s.width_fraction, s.width_fraction < 1, allowed)


def masked_ce(net: Net, params, x, y, masks) -> jax.Array:
    """Mean cross-entropy of the masked network on a batch."""
    logits = net.model.apply(params, x, masks)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


class Hparams(NamedTuple):
    """theta -> the inner run's hyperparameters; untuned groups keep their fixed values."""

    s: Settings
    params_shape: PyTree  # the model's parameter shapes (one entry per tensor)
    fixed_width: jax.Array
    dtype: Any

    @classmethod
    def of(cls, s: Settings, net: Net) -> Hparams:
        """The hyperparameter maps of ``s`` for ``net``'s parameter tensors."""
        model, num_features = net.model, net.num_features
        params_shape = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, num_features))))
        dtype = jnp.result_type(float)
        return cls(s, params_shape, jnp.full((len(s.hidden),), s.width_fraction, dtype), dtype)

    @property
    def sizes(self) -> dict[str, int]:
        """group -> number of entries of theta in it (tuned or not)."""
        num_tensors = len(jax.tree.leaves(self.params_shape))
        return {"lr": num_tensors, "momentum": num_tensors, "width": len(self.s.hidden)}

    def architecture(self, theta):
        """The hidden layers' 0/1 unit masks."""
        fractions = jax.nn.sigmoid(theta["width"]) if "width" in self.s.tune else self.fixed_width
        return hyperopt.width_masks(fractions, self.s.hidden)

    def learning_rate(self, theta, t):
        """One learning rate per parameter tensor (or the fixed one)."""
        if "lr" not in self.s.tune:
            return jnp.asarray(self.s.lr, self.dtype)
        per_tensor = hyperopt.vector_to_tree(theta["lr"], self.params_shape)
        per_tensor = jax.tree.map(lambda v: jnp.reshape(v, (1,)), per_tensor)
        return hyperopt.schedule_value("fixed-pl", per_tensor, t, self.s.horizon)

    def momentum(self, theta, t):
        """One momentum per parameter tensor (or the fixed one)."""
        del t
        if "momentum" not in self.s.tune:
            return jnp.asarray(self.s.momentum, self.dtype)
        return hyperopt.vector_to_tree(jax.nn.sigmoid(theta["momentum"]), self.params_shape)


def hparam_system(s: Settings, net: Net, hp: Hparams) -> UnrolledSystem:
    """One masked training run whose per-step meta-objective is a validation-batch loss."""
    d = net.data
    return hyperopt.training_system(
        init_params=net.init_params,
        train_loss=lambda params, batch, masks: masked_ce(net, params, batch[0], batch[1], masks),
        sample_batch=lambda key: net.sample(key, d.train_x, d.train_y, s.batch_size),
        optimizer=hyperopt.inner_optimizer("sgdm", tuned_momentum=True, weight_decay=s.weight_decay),
        learning_rate=hp.learning_rate,
        meta_objective=lambda params, key, masks: masked_ce(
            net, params, *net.sample(key, d.val_x, d.val_y, s.objective_batch_size), masks
        ),
        horizon=s.horizon,
        momentum=hp.momentum,
        architecture=hp.architecture,
        sanitize_grads=True,
    )


def box(hp: Hparams, ranges: dict) -> tuple[dict, dict]:
    """(low, high) trees shaped like theta: every tuned group's ``ranges`` in unconstrained space."""
    sizes, tune, dtype = hp.sizes, hp.s.tune, hp.dtype
    low = {g: jnp.full((sizes[g],), unconstrained_range(g, ranges)[0], dtype) for g in tune}
    high = {g: jnp.full((sizes[g],), unconstrained_range(g, ranges)[1], dtype) for g in tune}
    return low, high


def initial_theta(hp: Hparams) -> dict:
    """theta_0: uniform in `INIT_RANGES` (``init=random``) or the fixed values (``init=fixed``)."""
    s = hp.s
    if s.init == "random":
        low, high = box(hp, INIT_RANGES)
        return jax.tree.map(lambda x: x[0], search.uniform_configs(jax.random.key(s.init_seed), low, high, 1))
    start = {
        "lr": math.log(s.lr),
        "momentum": _logit(s.momentum) if "momentum" in s.tune else 0.0,
        "width": _logit(s.width_fraction) if "width" in s.tune else 0.0,
    }
    return {g: jnp.full((hp.sizes[g],), start[g], hp.dtype) for g in s.tune}


def evaluation(system: UnrolledSystem, eval_keys: jax.Array) -> tuple[Callable, Callable]:
    """(evaluate, full_run): the mean meta-objective over the fixed runs, and one fresh run."""
    score = search.mean_objective(system, eval_keys)

    def evaluate(theta, key):
        del key  # fixed evaluation runs (common random numbers across log points and methods)
        return {"meta_objective": score(theta)}

    def full_run(theta, key):
        """One fresh training of T steps at fixed theta: its full-horizon meta-objective."""
        return {"meta_objective": search.full_run_objective(system, theta, key)}

    return evaluate, full_run


def metadata(net: Net, hp: Hparams) -> dict:
    """The task's labels: sizes, the number of hyperparameters and one name per entry of theta."""
    s, sizes = hp.s, hp.sizes
    names = hyperopt.tensor_names(hp.params_shape)
    theta_names = [
        f"{g}/{names[i]}" if g != "width" else f"width/layer{i}" for g in s.tune for i in range(sizes[g])
    ]
    return {
        "num_features": net.num_features,
        "hidden": list(s.hidden),
        "horizon": s.horizon,
        "num_hparams": sum(sizes[g] for g in s.tune),
        "theta_names": theta_names,
        "num_eval_runs": s.num_eval_runs,
    }


def build(s: Settings) -> Task:
    """The task of validated settings ``s``."""
    net = Net.of(MaskedMLP(s.hidden), s.load())
    hp = Hparams.of(s, net)
    system = hparam_system(s, net, hp)
    theta0 = initial_theta(hp)
    eval_keys = search.run_keys(jax.random.key(s.eval_seed), s.num_eval_runs)
    evaluate, full_run = evaluation(system, eval_keys)
    return Task(
        "mlp_hparams",
        system,
        theta0,
        evaluate,
        metadata(net, hp),
        differentiable="width" not in s.tune,
        objective="val_sum_loss",
        dataset=DatasetInfo(net.data.name, net.data.origin, int(net.data.train_x.shape[0])),
        full_run=full_run,
        eval_keys=eval_keys,
        search_space=box(hp, SEARCH_RANGES),
    )


def make(
    dataset: str = "fashion_mnist",
    data_source: str = "auto",
    data_dir: str | None = None,
    num_val: int = 10_000,
    horizon: int = 1000,
    batch_size: int = 100,
    objective_batch_size: int = 100,
    hidden: Sequence[int] = (100, 100, 100, 100, 100),
    downsample: int = 1,
    weight_decay: float = 1e-10,
    tune: Sequence[str] = GROUPS,
    lr: float = 0.01,
    momentum: float = 0.9,
    width_fraction: float = 1.0,
    init: str = "random",
    init_seed: int = 0,
    num_eval_runs: int = 10,
    eval_seed: int = 1234,
) -> Task:
    """Build the task (the keyword arguments are the task's config keys; they only fill `Settings`).

    Args:
      dataset: fashion_mnist (paper) | mnist.
      data_source: pes.data source: auto | tfds | idx | npz.
      data_dir: directory of local IDX/npz files (null: the default data folder and the
        Debian ``/usr/share/datasets/fashion-mnist``).
      num_val: validation images taken from the end of the train split (paper 10,000).
      horizon: T, inner steps of one training run (paper 1000).
      batch_size: training minibatch size (paper 100).
      objective_batch_size: validation minibatch of the per-step meta-objective (paper 100).
      hidden: hidden-layer widths (paper five layers of 100).
      downsample: average-pool the 28x28 images by this factor first (paper 1).
      weight_decay: L2 coefficient added to the gradient, PyTorch style (paper 1e-10).
      tune: which groups theta holds: any of lr, momentum, width (paper all three, 29 values).
      lr, momentum, width_fraction: the fixed values of untuned groups (and the start of
        tuned ones with ``init=fixed``); width_fraction in (0, 1], 1 = every unit on.
      init: random (uniform in the init ranges, seeded by init_seed) | fixed.
      init_seed: seed of the random initial theta (figure configs pass the run's seed).
      num_eval_runs: fresh trainings averaged by ``evaluate`` (paper 10).
      eval_seed: seed of the evaluation runs' keys.
    """
    return build(Settings(**locals()))


def init_space(task: Task) -> tuple[dict, dict]:
    """The box the random initial theta is drawn from (same structure as ``task.search_space``)."""
    low, high = task.search_space
    out_low = {g: jnp.full_like(low[g], unconstrained_range(g, INIT_RANGES)[0]) for g in low}
    out_high = {g: jnp.full_like(high[g], unconstrained_range(g, INIT_RANGES)[1]) for g in high}
    return out_low, out_high


def constrained(theta: dict) -> dict[str, np.ndarray]:
    """theta in its natural units: learning rates, momenta, width fractions."""
    out = {}
    for g, v in theta.items():
        v = np.asarray(v, np.float64)
        out[g] = np.exp(v) if g == "lr" else 1.0 / (1.0 + np.exp(-v))
    return out


__all__ = ["MaskedMLP", "Settings", "build", "constrained", "init_space", "make", "unconstrained_range"]
