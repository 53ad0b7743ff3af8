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

import functools
import math
from collections.abc import Sequence

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


@functools.lru_cache(maxsize=4)
def _load(
    dataset: str,
    source: str,
    data_dir: str | None,
    image_size: int,
    greyscale: bool,
    val_fraction: float | None = None,
    channels: int | None = None,
):
    """(name, origin, train x, train y, test x, test y, val x, val y); x float32 (N, features).

    The validation part is the last ``val_fraction`` of the training split (None: the last
    min(10000, N / 5) images, which are then not used at all).  ``channels=3`` repeats a
    greyscale dataset's channel (see `resize_images`).
    """
    names = ("cifar10", "fashion_mnist") if dataset == "cifar10_or_fashion" else (dataset,)
    name, raw = images.load_first(names, source=source, data_dir=data_dir, keys={"source": "data_source"})
    num = len(raw.train_images)
    num_val = min(images.NUM_VAL, num // 5) if val_fraction is None else round(val_fraction * num)
    data = images.split(raw, name, normalize_images=False, num_val=num_val)
    return (
        name,
        data.origin,
        resize_images(data.train_images, image_size, greyscale, channels=channels),
        data.train_labels,
        resize_images(data.test_images, image_size, greyscale, channels=channels),
        data.test_labels,
        (resize_images(data.val_images, image_size, greyscale, channels=channels)
         if val_fraction else None),
        data.val_labels if val_fraction else None,
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
    """Build the task.

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
    _check("dataset", dataset, dataset in DATASETS, ", ".join(DATASETS))
    _check("data_source", data_source, data_source in images.SOURCES, ", ".join(images.SOURCES))
    check_ints(
        "lopt_image_mlp",
        1,
        image_size=image_size,
        batch_size=batch_size,
        horizon=horizon,
        num_eval_runs=num_eval_runs,
    )
    check_ints("lopt_image_mlp", 0, init_seed=init_seed, eval_seed=eval_seed)
    hidden = check_widths("lopt_image_mlp", "hidden", hidden)
    _check("greyscale", greyscale, isinstance(greyscale, bool), "true, false")
    _check("channels", channels, channels is None or (channels == 3 and not greyscale),
           "null, or 3 without greyscale")
    _check("activation", activation, activation in ACTIVATIONS, ", ".join(ACTIVATIONS))
    _check("meta_loss", meta_loss, meta_loss in META_LOSSES, ", ".join(META_LOSSES))
    single = single_sequence_seed is not None
    if single:
        check_ints("lopt_image_mlp", 0, single_sequence_seed=single_sequence_seed)
    try:
        lopt = lopt_lib.mlp_lopt(tuple(lopt_hidden), exp_mult, step_mult)
    except ValueError as err:
        raise ValueError(f"task 'lopt_image_mlp': {err}") from err

    val_fraction = 0.2 if meta_loss == "val_post" else None
    name, origin, train_x, train_y, test_x, test_y, val_x, val_y = _load(
        dataset, data_source, data_dir, image_size, greyscale, val_fraction, channels
    )
    train_x, train_y = jnp.asarray(train_x), jnp.asarray(train_y)
    test_x, test_y = jnp.asarray(test_x), jnp.asarray(test_y)
    if val_x is not None:
        val_x, val_y = jnp.asarray(val_x), jnp.asarray(val_y)
    num_features = int(train_x.shape[1])
    model = ImageMLP(hidden, activation)
    if single:  # one fixed initialisation and batch sequence, whatever the estimator's keys
        seq_init_key, seq_step_key = jax.random.split(jax.random.key(single_sequence_seed))

    def init_params(key):
        return model.init(key, jnp.zeros((1, num_features), jnp.float32))

    def ce(params, x, y):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(model.apply(params, x), y))

    def batch(key, t):
        idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, train_x.shape[0])
        return train_x[idx], train_y[idx]

    # --- the inner system: (params, lopt state); the LOpt state carries the step t

    def init(key):
        params = init_params(seq_init_key if single else key)
        return params, lopt.init(params)

    def raw_step(theta, state, key):
        """One LOpt step; returns (new state, clipped meta-loss, raw training loss)."""
        params, opt_state = state
        if single:
            key = seq_step_key
        x, y = batch(key, opt_state.step)
        raw, grads = jax.value_and_grad(ce)(params, x, y)
        updates, new_opt_state = lopt.update(theta, grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if meta_loss == "train_pre":
            return (new_params, new_opt_state), clip_loss(raw), raw
        vkey = jax.random.fold_in(jax.random.fold_in(key, opt_state.step), 1)
        idx = jax.random.randint(vkey, (batch_size,), 0, val_x.shape[0])
        return (new_params, new_opt_state), clip_loss(ce(new_params, val_x[idx], val_y[idx])), raw

    def step(theta, state, key):
        new_state, loss, _ = raw_step(theta, state, key)
        return new_state, loss / horizon

    system = systems.UnrolledSystem(init=init, step=step, horizon=horizon, unroll_loss="sum")

    def test_metrics(params):
        logits = model.apply(params, test_x)
        raw = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, test_y))
        acc = jnp.mean((jnp.argmax(logits, -1) == test_y).astype(jnp.float32))
        return clip_loss(raw), acc

    def inner_run(theta, key):
        """One fresh training of T steps (key discipline of `systems.full_objective`)."""
        init_key, data_key = jax.random.split(key)

        def body(state, key_pair):
            state, loss, raw = raw_step(theta, state, key_pair[0])
            return state, (loss, ~jnp.isfinite(raw))

        state, (losses, bad) = jax.lax.scan(body, init(init_key), systems.step_keys(data_key, horizon))
        return state[0], losses, bad

    def inner_curve(theta, key):
        return inner_run(theta, key)[1]

    def baseline_curve(optimizer: optax.GradientTransformation, key):
        """Per-step clipped losses of one fresh training with an optax optimizer."""
        init_key, data_key = jax.random.split(key)
        params = init_params(init_key)

        def body(carry, key_pair):
            params, opt_state, t = carry
            x, y = batch(key_pair[0], t)
            raw, grads = jax.value_and_grad(ce)(params, x, y)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, t + 1), clip_loss(raw)

        carry = (params, optimizer.init(params), jnp.zeros((), jnp.int32))
        _, losses = jax.lax.scan(body, carry, systems.step_keys(data_key, horizon))
        return losses

    eval_keys = jax.random.split(jax.random.key(eval_seed), 1 if single else num_eval_runs)
    window = min(FINAL_WINDOW, horizon)

    def evaluate(theta, key):
        del key  # fixed evaluation seeds: the same inner runs for every method and log point
        params, losses, bad = jax.vmap(inner_run, in_axes=(None, 0))(theta, eval_keys)
        test_loss, test_acc = jax.vmap(test_metrics)(params)
        finite = _all_finite(params)
        return {
            "meta_loss_eval": jnp.mean(losses),
            "final_loss_eval": jnp.mean(losses[:, -window:]),
            "test_loss_eval": jnp.mean(test_loss),
            "test_acc_eval": jnp.mean(test_acc),
            "eval_nonfinite_frac": jnp.mean(bad.astype(jnp.float32)),
            "eval_diverged_runs": jnp.sum((~finite).astype(jnp.float32)),
        }

    theta0 = lopt.init_theta(jax.random.key(init_seed))
    metadata = {
        "stand_in": name != "cifar10",
        "num_features": num_features,
        "image_size": image_size,
        "channels": num_features // (image_size * image_size),
        "hidden": list(hidden),
        "horizon": horizon,
        "batch_size": batch_size,
        "loss_ceiling": LOSS_CEILING,
        "num_meta_params": lopt_lib.num_meta_params(theta0),
        "meta_loss": meta_loss,
        "activation": activation,
        "single_sequence": single,
    }
    return Task(
        "lopt_image_mlp",
        system,
        theta0,
        evaluate,
        metadata,
        dataset=DatasetInfo(name, origin, int(train_x.shape[0])),
        eval_keys=eval_keys,
        inner_curve=inner_curve,
        baseline_curve=baseline_curve,
    )


def _all_finite(params_batch) -> jax.Array:
    """Per run (leading axis): whether every parameter is finite."""
    leaves = jax.tree.leaves(params_batch)
    per_leaf = [jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in leaves]
    return jnp.all(jnp.stack(per_leaf), axis=0)


__all__ = ["ImageMLP", "clip_loss", "make", "resize_images"]
