"""Meta-training a learned optimizer on an image-MLP task (the paper's figure 7).

Inner problem: a ReLU MLP (flattened images resized to ``image_size`` x ``image_size``,
pixels / 255; default 64 -> 32 -> 10) trained on minibatches of ``batch_size`` drawn
i.i.d. from the training split by the per-parameter MLP learned optimizer of `pes.lopt`,
whose meta-parameters are theta.  One inner step: sample a batch, compute the softmax
cross-entropy and its gradient at the current parameters, apply the LOpt update.

Per-step meta-loss (learned_optimization semantics): the clipped pre-update training
loss of that batch, l_t = clip(CE, 0, 1.5 ln 10), NaN/Inf mapped to the ceiling
1.5 ln 10, so a diverging inner run gives finite (maximal) losses instead of NaNs.  The
system's step returns l_t / T: the core's "sum" unroll loss of a whole episode is then
exactly the meta-objective L(theta) = (1/T) sum_t l_t, and each truncation's loss is its
share of it (ES/PES estimates are of grad L itself).

Minibatch keys: the batch of inner step t is drawn with fold_in(step key, t), so
staggered particles (which share the estimator's step keys) still see different batches,
while the two members of an antithetic pair (same t) share theirs.

``evaluate(theta, key)`` (logged at every log point) trains ``num_eval_runs`` fresh
models for T steps with the unperturbed theta from fixed seeds (``eval_seed``; the same for
every method and log point; ``key`` is ignored) and returns

* ``meta_loss_eval``: mean over runs and steps of l_t (the plotted meta-loss);
* ``final_loss_eval``: mean of l_t over the last 50 steps;
* ``test_acc_eval`` / ``test_loss_eval``: test-set accuracy / clipped CE at t = T;
* ``eval_nonfinite_frac``: fraction of the evaluation steps whose raw training loss was
  NaN/Inf, and ``eval_diverged_runs``: runs whose final parameters are not finite
  (a diverging learned optimizer is logged, never a crash).

Options for the NRES paper's setting (defaults keep figure 7's task unchanged):
``activation="gelu"``, ``meta_loss="val_post"`` (clipped validation-batch cross-entropy after
each update, batches from the last 20 % of the training split) and ``single_sequence_seed``
(one fixed initialisation and batch sequence, so the meta-loss is a deterministic function
of theta and the evaluation is that one run).

The task's ``inner_curve(theta, key)`` and ``baseline_curve(optimizer, key)`` return the
per-step l_t of one fresh inner run (LOpt with theta, or an optax optimizer), for the
comparison with tuned Adam (``baseline_curve`` reports the training-batch loss whatever
``meta_loss`` is); ``eval_keys`` are the fixed seeds of the evaluation runs and
``dataset`` names the images actually loaded.
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

from pes import lopt as lopt_lib
from pes import systems
from pes._extras import require
from pes.data import images
from pes.tasks import DatasetInfo, Task, check_ints, check_param, check_widths

nn = require("flax.linen", extra="suite", by="task 'lopt_image_mlp'")

DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar10_or_fashion")
NUM_CLASSES = 10
LOSS_CEILING = 1.5 * math.log(NUM_CLASSES)
FINAL_WINDOW = 50


ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu}
META_LOSSES = ("train_pre", "val_post")


class ImageMLP(nn.Module):
    """The inner model: an MLP with ``hidden`` widths and ``activation``, on flattened images."""

    hidden: Sequence[int]
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        for width in self.hidden:
            x = act(nn.Dense(width)(x))
        return nn.Dense(NUM_CLASSES)(x)


def clip_loss(loss: jax.Array, ceiling: float = LOSS_CEILING) -> jax.Array:
    """clip(loss, 0, ceiling) with NaN/Inf mapped to the ceiling."""
    return jnp.where(jnp.isfinite(loss), jnp.clip(loss, 0.0, ceiling), ceiling)


def _check(name, value, ok, allowed):
    check_param("lopt_image_mlp", name, value, ok, allowed)


def resize_images(
    x: np.ndarray, size: int, greyscale: bool, chunk: int = 5000, channels: int | None = None
) -> np.ndarray:
    """uint8 NHWC -> float32 (N, size*size*C') in [0, 1] (bilinear, antialiased).

    ``channels=3`` repeats a one-channel image (after resizing) into three identical
    channels, so a greyscale dataset feeds a colour pipeline's input shapes.
    """
    n, h, w, c = x.shape
    out_c = 1 if greyscale else c

    @jax.jit
    def prep(batch):
        batch = batch.astype(jnp.float32) / 255.0
        if greyscale and c > 1:
            batch = jnp.mean(batch, axis=-1, keepdims=True)
        if (h, w) != (size, size):
            batch = jax.image.resize(batch, (batch.shape[0], size, size, out_c), method="linear")
        if channels is not None and channels != batch.shape[-1]:
            batch = jnp.repeat(batch, channels, axis=-1)
        return batch.reshape(batch.shape[0], -1)

    parts = [np.asarray(prep(x[lo : lo + chunk])) for lo in range(0, n, chunk)]
    return np.concatenate(parts).astype(np.float32)


class Splits(NamedTuple):
    """A dataset's images as float32 (N, features) in [0, 1], with labels; val_* None unless split."""

    name: str
    origin: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    val_x: np.ndarray | None
    val_y: np.ndarray | None

    def on_device(self) -> Splits:
        """These splits as JAX arrays."""
        arrays = {k: getattr(self, k) for k in self._fields[2:]}
        return self._replace(**{k: None if v is None else jnp.asarray(v) for k, v in arrays.items()})


@functools.lru_cache(maxsize=4)
def _load(
    dataset: str,
    source: str,
    data_dir: str | None,
    image_size: int,
    greyscale: bool,
    val_fraction: float | None = None,
    channels: int | None = None,
) -> Splits:
    """The dataset's `Splits`, resized (see `resize_images`).

    The validation part is the last ``val_fraction`` of the training split (None: the last
    min(10000, N / 5) images, which are then not used at all).  ``channels=3`` repeats a
    greyscale dataset's channel (see `resize_images`).
    """
    names = ("cifar10", "fashion_mnist") if dataset == "cifar10_or_fashion" else (dataset,)
    name, raw = images.load_first(names, source=source, data_dir=data_dir, keys={"source": "data_source"})
    num = len(raw.train_images)
    num_val = min(images.NUM_VAL, num // 5) if val_fraction is None else round(val_fraction * num)
    data = images.split(raw, name, normalize_images=False, num_val=num_val)
    resize = functools.partial(resize_images, size=image_size, greyscale=greyscale, channels=channels)
    return Splits(
        name,
        data.origin,
        resize(data.train_images),
        data.train_labels,
        resize(data.test_images),
        data.test_labels,
        resize(data.val_images) if val_fraction else None,
        data.val_labels if val_fraction else None,
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """The arguments of `make` (documented there), validated when built; ``hidden`` is a tuple."""

    dataset: str
    data_source: str
    data_dir: str | None
    image_size: int
    greyscale: bool
    channels: int | None
    hidden: tuple[int, ...]
    batch_size: int
    horizon: int
    lopt_hidden: Sequence[int]
    exp_mult: float
    step_mult: float
    init_seed: int
    num_eval_runs: int
    eval_seed: int
    activation: str
    meta_loss: str
    single_sequence_seed: int | None

    def __post_init__(self):
        _check("dataset", self.dataset, self.dataset in DATASETS, ", ".join(DATASETS))
        _check("data_source", self.data_source, self.data_source in images.SOURCES, ", ".join(images.SOURCES))
        positive = ("image_size", "batch_size", "horizon", "num_eval_runs")
        check_ints("lopt_image_mlp", 1, **{k: getattr(self, k) for k in positive})
        check_ints("lopt_image_mlp", 0, init_seed=self.init_seed, eval_seed=self.eval_seed)
        object.__setattr__(self, "hidden", check_widths("lopt_image_mlp", "hidden", self.hidden))
        _check("greyscale", self.greyscale, isinstance(self.greyscale, bool), "true, false")
        ok = self.channels is None or (self.channels == 3 and not self.greyscale)
        _check("channels", self.channels, ok, "null, or 3 without greyscale")
        _check("activation", self.activation, self.activation in ACTIVATIONS, ", ".join(ACTIVATIONS))
        _check("meta_loss", self.meta_loss, self.meta_loss in META_LOSSES, ", ".join(META_LOSSES))
        if self.single:
            check_ints("lopt_image_mlp", 0, single_sequence_seed=self.single_sequence_seed)
        self.learned_optimizer()  # its own checks, as this task's one-line errors

    @property
    def single(self) -> bool:
        """Whether one fixed initialisation and batch sequence is used (the NRES "single sequence")."""
        return self.single_sequence_seed is not None

    def learned_optimizer(self) -> lopt_lib.LearnedOptimizer:
        """The learned optimizer whose meta-parameters theta are."""
        try:
            return lopt_lib.mlp_lopt(tuple(self.lopt_hidden), self.exp_mult, self.step_mult)
        except ValueError as err:
            raise ValueError(f"task 'lopt_image_mlp': {err}") from err

    def load(self) -> Splits:
        """The task's images (cached), as JAX arrays."""
        val_fraction = 0.2 if self.meta_loss == "val_post" else None
        data = _load(
            self.dataset, self.data_source, self.data_dir, self.image_size, self.greyscale, val_fraction,
            self.channels,
        )
        return data.on_device()


class Inner(NamedTuple):
    """The inner problem: the MLP trained by the learned optimizer (pure, jit-compatible parts)."""

    s: Settings
    model: ImageMLP
    lopt: lopt_lib.LearnedOptimizer
    data: Splits
    sequence_keys: tuple | None  # (init key, step key) of the single sequence, else None

    @classmethod
    def of(cls, s: Settings) -> Inner:
        """The inner problem of ``s`` (loads its images)."""
        keys = tuple(jax.random.split(jax.random.key(s.single_sequence_seed))) if s.single else None
        return cls(s, ImageMLP(s.hidden, s.activation), s.learned_optimizer(), s.load(), keys)

    @property
    def num_features(self) -> int:
        """Input features of one image."""
        return int(self.data.train_x.shape[1])

    def init_params(self, key):
        """Fresh MLP parameters."""
        return self.model.init(key, jnp.zeros((1, self.num_features), jnp.float32))

    def ce(self, params, x, y):
        """Mean softmax cross-entropy of a batch."""
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(self.model.apply(params, x), y))

    def batch(self, key, t):
        """The training minibatch of inner step ``t``."""
        d = self.data
        idx = jax.random.randint(jax.random.fold_in(key, t), (self.s.batch_size,), 0, d.train_x.shape[0])
        return d.train_x[idx], d.train_y[idx]

    def init(self, key):
        """The inner state (params, LOpt state); the LOpt state carries the step t."""
        params = self.init_params(self.sequence_keys[0] if self.s.single else key)
        return params, self.lopt.init(params)

    def val_loss(self, params, key, t):
        """The clipped cross-entropy of step ``t``'s validation batch at ``params``."""
        vkey = jax.random.fold_in(jax.random.fold_in(key, t), 1)
        idx = jax.random.randint(vkey, (self.s.batch_size,), 0, self.data.val_x.shape[0])
        return clip_loss(self.ce(params, self.data.val_x[idx], self.data.val_y[idx]))

    def raw_step(self, theta, state, key):
        """One LOpt step; returns (new state, clipped meta-loss, raw training loss)."""
        params, opt_state = state
        if self.s.single:
            key = self.sequence_keys[1]
        x, y = self.batch(key, opt_state.step)
        raw, grads = jax.value_and_grad(self.ce)(params, x, y)
        updates, new_opt_state = self.lopt.update(theta, grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if self.s.meta_loss == "train_pre":
            return (new_params, new_opt_state), clip_loss(raw), raw
        return (new_params, new_opt_state), self.val_loss(new_params, key, opt_state.step), raw

    def step(self, theta, state, key):
        """The system's step: the meta-loss divided by T (a whole episode's sum is L(theta))."""
        new_state, loss, _ = self.raw_step(theta, state, key)
        return new_state, loss / self.s.horizon

    def test_metrics(self, params):
        """Clipped test-set loss and accuracy."""
        logits = self.model.apply(params, self.data.test_x)
        raw = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, self.data.test_y))
        acc = jnp.mean((jnp.argmax(logits, -1) == self.data.test_y).astype(jnp.float32))
        return clip_loss(raw), acc

    def run(self, theta, key):
        """One fresh training of T steps (key discipline of `systems.full_objective`).

        Returns (final params, per-step clipped meta-losses, per-step non-finite flags).
        """
        init_key, data_key = jax.random.split(key)

        def body(state, key_pair):
            state, loss, raw = self.raw_step(theta, state, key_pair[0])
            return state, (loss, ~jnp.isfinite(raw))

        start = self.init(init_key)
        state, (losses, bad) = jax.lax.scan(body, start, systems.step_keys(data_key, self.s.horizon))
        return state[0], losses, bad

    def curve(self, theta, key):
        """The per-step clipped meta-losses of one fresh run."""
        return self.run(theta, key)[1]

    def baseline_curve(self, optimizer: optax.GradientTransformation, key):
        """Per-step clipped losses of one fresh training with an optax optimizer."""
        init_key, data_key = jax.random.split(key)
        params = self.init_params(init_key)

        def body(carry, key_pair):
            params, opt_state, t = carry
            x, y = self.batch(key_pair[0], t)
            raw, grads = jax.value_and_grad(self.ce)(params, x, y)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, t + 1), clip_loss(raw)

        carry = (params, optimizer.init(params), jnp.zeros((), jnp.int32))
        _, losses = jax.lax.scan(body, carry, systems.step_keys(data_key, self.s.horizon))
        return losses


def evaluation(inner: Inner, eval_keys: jax.Array) -> Callable:
    """``evaluate(theta, key)``: the metrics of fresh runs from the fixed ``eval_keys``."""
    window = min(FINAL_WINDOW, inner.s.horizon)

    def evaluate(theta, key):
        del key  # fixed evaluation seeds: the same inner runs for every method and log point
        params, losses, bad = jax.vmap(inner.run, in_axes=(None, 0))(theta, eval_keys)
        test_loss, test_acc = jax.vmap(inner.test_metrics)(params)
        finite = _all_finite(params)
        return {
            "meta_loss_eval": jnp.mean(losses),
            "final_loss_eval": jnp.mean(losses[:, -window:]),
            "test_loss_eval": jnp.mean(test_loss),
            "test_acc_eval": jnp.mean(test_acc),
            "eval_nonfinite_frac": jnp.mean(bad.astype(jnp.float32)),
            "eval_diverged_runs": jnp.sum((~finite).astype(jnp.float32)),
        }

    return evaluate


def metadata(inner: Inner, theta0) -> dict:
    """The task's labels and sizes."""
    s = inner.s
    return {
        "stand_in": inner.data.name != "cifar10",
        "num_features": inner.num_features,
        "image_size": s.image_size,
        "channels": inner.num_features // (s.image_size * s.image_size),
        "hidden": list(s.hidden),
        "horizon": s.horizon,
        "batch_size": s.batch_size,
        "loss_ceiling": LOSS_CEILING,
        "num_meta_params": lopt_lib.num_meta_params(theta0),
        "meta_loss": s.meta_loss,
        "activation": s.activation,
        "single_sequence": s.single,
    }


def build(s: Settings) -> Task:
    """The task of validated settings ``s``."""
    inner = Inner.of(s)
    system = systems.UnrolledSystem(init=inner.init, step=inner.step, horizon=s.horizon, unroll_loss="sum")
    eval_keys = jax.random.split(jax.random.key(s.eval_seed), 1 if s.single else s.num_eval_runs)
    theta0 = inner.lopt.init_theta(jax.random.key(s.init_seed))
    return Task(
        "lopt_image_mlp",
        system,
        theta0,
        evaluation(inner, eval_keys),
        metadata(inner, theta0),
        dataset=DatasetInfo(inner.data.name, inner.data.origin, int(inner.data.train_x.shape[0])),
        eval_keys=eval_keys,
        inner_curve=inner.curve,
        baseline_curve=inner.baseline_curve,
    )


def make(
    dataset: str = "fashion_mnist",
    data_source: str = "auto",
    data_dir: str | None = None,
    image_size: int = 8,
    greyscale: bool = False,
    channels: int | None = None,
    hidden: Sequence[int] = (32,),
    batch_size: int = 128,
    horizon: int = 1000,
    lopt_hidden: Sequence[int] = (32, 32),
    exp_mult: float = 1e-3,
    step_mult: float = 1e-3,
    init_seed: int = 0,
    num_eval_runs: int = 4,
    eval_seed: int = 1234,
    activation: str = "relu",
    meta_loss: str = "train_pre",
    single_sequence_seed: int | None = None,
) -> Task:
    """Build the task (the keyword arguments are the task's config keys; they only fill `Settings`).

    Args:
      dataset: fashion_mnist | mnist | cifar10 | cifar10_or_fashion (CIFAR-10 if any
        source has it, else the Fashion-MNIST stand-in).
      data_source: pes.data source: auto | tfds | idx | npz.
      data_dir: directory of local IDX/npz files (null: the default data folder).
      image_size: images are resized to image_size x image_size (8 in the spec).
      greyscale: average the colour channels (CIFAR-10 "BW" variants).
      channels: null (the dataset's own) or 3: a one-channel dataset's images are repeated
        into three identical channels (Fashion-MNIST fed through CIFAR-10 8x8 colour's
        input shapes, 192 features: the paper_fashion stand-in profile).
      hidden: hidden widths of the inner MLP ([32]).
      batch_size: inner minibatch size (128).
      horizon: T, inner steps of one training run.
      lopt_hidden, exp_mult, step_mult: the learned optimizer (`pes.lopt.mlp_lopt`).
      init_seed: seed of the learned optimizer's initial meta-parameters theta_0 (the
        figure varies it with the run seed: ``${seed}``).
      num_eval_runs: fresh inner trainings per evaluation.
      eval_seed: seed of the evaluation trainings (fixed across methods).
      activation: relu | gelu, the inner MLP's hidden activation.
      meta_loss: train_pre (the clipped training-batch loss before each update, as
        learned_optimization) | val_post (the clipped cross-entropy of a validation batch
        after each update, as the NRES paper; the validation batches come from the last
        20 % of the training split, which inner training then does not use).
      single_sequence_seed: null, or a seed that fixes the inner initialisation and every
        step's batches (the NRES paper's "single sequence"): the step then ignores the
        estimator's keys and the meta-loss is a deterministic function of theta.
    """
    return build(Settings(**locals()))


def _all_finite(params_batch) -> jax.Array:
    """Per run (leading axis): whether every parameter is finite."""
    leaves = jax.tree.leaves(params_batch)
    per_leaf = [jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in leaves]
    return jnp.all(jnp.stack(per_leaf), axis=0)


__all__ = ["ImageMLP", "Settings", "build", "clip_loss", "make", "resize_images"]
