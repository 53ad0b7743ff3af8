"""Small systems and assertions shared by the tests."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes.data import images
from pes.systems import UnrolledSystem

ROOT = Path(__file__).resolve().parent.parent


def dict_system(horizon: int | None = 6, dtype=jnp.float32, noise: float = 0.0) -> UnrolledSystem:
    """A nonlinear system whose theta is a dict of arrays of different shapes.

    s' = tanh(W s) * 0.9 + a + key noise * noise; loss = 0.5 ||s' - 1||^2 + 0.1 ||W||^2.
    theta = {"a": (3,), "W": (3, 3)}.
    """

    def init(key):
        del key
        return jnp.full((3,), 0.5, dtype)

    def step(theta, s, key):
        s_new = 0.9 * jnp.tanh(theta["W"] @ s) + theta["a"]
        loss = 0.5 * jnp.sum((s_new - 1.0) ** 2) + 0.1 * jnp.sum(theta["W"] ** 2)
        if noise:
            loss = loss + noise * jax.random.normal(key, (), loss.dtype)
        return s_new.astype(dtype), loss

    return UnrolledSystem(init=init, step=step, horizon=horizon, unroll_loss="sum")


def dict_theta(dtype=jnp.float32):
    return {
        "a": jnp.array([0.1, -0.2, 0.3], dtype),
        "W": jnp.array([[0.5, 0.1, 0.0], [0.0, 0.4, -0.2], [0.3, 0.0, 0.2]], dtype),
    }


def random_init_linear(dim: int = 3, horizon: int = 10) -> UnrolledSystem:
    """Linear-quadratic system with a random initial state from the key (tests reset keys)."""

    def init(key):
        return jax.random.normal(key, (dim,), jnp.float64)

    def step(theta, s, key):
        s_new = 0.8 * s + theta + 0.1 * jax.random.normal(key, (dim,), s.dtype)
        return s_new, 0.5 * jnp.sum((s_new - 1.0) ** 2)

    return UnrolledSystem(init=init, step=step, horizon=horizon, unroll_loss="sum")


def assert_trees_close(a, b, rtol=1e-10, atol=1e-12):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb, (ta, tb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def tree_vector(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


@functools.cache
def keyed_system(
    horizon: int | None = 6, unroll_loss: str = "sum", data_noise: float = 0.3, init_noise: float = 0.5
) -> UnrolledSystem:
    """A nonlinear key-dependent system with pytree theta and pytree state (float64).

    init(key): s ~ 0.5 + init_noise * N(0, I_3) from the reset key, h = 0.
    step: x ~ N(0, I_3) from the step key; s' = 0.9 tanh(W s) + a + data_noise * x;
    h' = 0.5 h + loss; loss = 0.5 ||s' - 1||^2 + 0.1 ||W||^2 + 0.2 h.
    theta = {"a": (3,), "W": (3, 3)} (`dict_theta`).  Every particle that sees other keys
    (no common random numbers), or a reset with another key, follows another trajectory.
    """

    def init(key):
        return {
            "s": 0.5 + init_noise * jax.random.normal(key, (3,), jnp.float64),
            "h": jnp.zeros((), jnp.float64),
        }

    def step(theta, state, key):
        x = jax.random.normal(key, (3,), jnp.float64)
        s = 0.9 * jnp.tanh(theta["W"] @ state["s"]) + theta["a"] + data_noise * x
        loss = 0.5 * jnp.sum((s - 1.0) ** 2) + 0.1 * jnp.sum(theta["W"] ** 2) + 0.2 * state["h"]
        return {"s": s, "h": 0.5 * state["h"] + loss}, loss

    return UnrolledSystem(init=init, step=step, horizon=horizon, unroll_loss=unroll_loss)


def jitted(est):
    """The estimator with jitted ``init`` and ``estimate``: one compilation each instead of
    op-by-op dispatch (tests call them a few times with the same shapes)."""
    return est._replace(init=jax.jit(est.init), estimate=jax.jit(est.estimate))


def run_python(args, *, env, timeout: float, cwd) -> str:
    """`python *args` in a subprocess; asserts that it exits 0 (the tail of its stderr in the
    message) and returns its stdout."""
    proc = subprocess.run(
        [sys.executable, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def two_device_result(tmp_path, script: str, *args, timeout: float):
    """Runs `script` (Python source) on two forced CPU host devices, with this repository
    importable, and returns the JSON object of the last line it prints as ``RESULT<json>``."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    path = tmp_path / "two_devices.py"
    path.write_text(script)
    stdout = run_python([path, *args], env=env, timeout=timeout, cwd=tmp_path)
    line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def write_fashion_idx(root, n_train: int, n_test: int, seed: int = 0):
    """Fashion-MNIST-format IDX files in ``root/fashion_mnist`` whose labels depend on the image
    (class c brightens a horizontal band, so it is learnable); returns `root`."""
    d = root / "fashion_mnist"
    d.mkdir()
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.int32)
        for c in range(10):  # class c brightens a horizontal band
            x[labels == c, 2 * c + 4 : 2 * c + 8, :] += 150
        return np.clip(x, 0, 255).astype(np.uint8), labels

    tx, ty = make(n_train)
    vx, vy = make(n_test)
    images.write_idx(d / "train-images-idx3-ubyte.gz", tx)
    images.write_idx(d / "train-labels-idx1-ubyte.gz", ty)
    images.write_idx(d / "t10k-images-idx3-ubyte.gz", vx)
    images.write_idx(d / "t10k-labels-idx1-ubyte.gz", vy)
    return root


def make_quick(target: str, results, timeout: float) -> subprocess.CompletedProcess:
    """``make -s <target> RESULTS=<results> PROFILE=quick`` in the repository, as a user types it
    (stdout and stderr captured); skips the test where this interpreter is not the .venv the
    Makefile drives."""
    venv = ROOT / ".venv" / "bin" / "python"
    if Path(sys.executable).resolve() != venv.resolve():
        pytest.skip("the Makefile drives .venv; this interpreter is not it")
    return subprocess.run(
        ["make", "-s", target, f"RESULTS={results}", "PROFILE=quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
