"""Every registered estimator with the core install only (run by `wheel_smoke.py` in a clean venv).

For each name in ``pes.REGISTRY``: build it on a small pytree system, jit ``init`` and
``estimate``, take three estimates across an episode end, and check that the gradient has θ's
structure, shapes and dtypes and is finite.  Then one `pes.check_unbiased` call, one
`pes.outer.run`, and the one-line errors of the modules that need an extra.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import pes

HPARAMS = {
    "pes": dict(trunc_len=4, sigma=0.1, num_particles=8),
    "es": dict(trunc_len=4, sigma=0.1, num_particles=8),
    "nres": dict(trunc_len=4, sigma=0.1, num_particles=8),
    "gpes": dict(trunc_len=2, sigma=0.1, num_particles=8, noise_every=4),
    "pes_a": dict(trunc_len=3, sigma=0.1, num_particles=8),
    "tbptt": dict(trunc_len=4),
    "rtrl": dict(trunc_len=4),
    "uoro": dict(trunc_len=4),
    "ars": dict(trunc_len=4, sigma=0.1, num_particles=8, top_directions=2),
    "openai_es": dict(trunc_len=4, sigma=0.1, num_particles=8),
}


def init(key):
    return {"h": jax.random.normal(key, (3,)), "c": jnp.zeros(())}


def step(theta, state, key):
    h = jnp.tanh(theta["w"] @ state["h"] + theta["b"]) + 0.01 * jax.random.normal(key, (3,))
    return {"h": h, "c": state["c"] + 1.0}, jnp.sum((h - 0.5) ** 2)


def main() -> None:
    system = pes.UnrolledSystem(init, step, horizon=6)
    theta = {"w": 0.3 * jnp.eye(3), "b": jnp.zeros(3)}
    missing = set(pes.REGISTRY) - set(HPARAMS)
    assert not missing, f"estimator_smoke.py has no settings for {sorted(missing)}"
    for name in sorted(pes.REGISTRY):
        est = pes.make(name, system, **HPARAMS[name])
        init_fn, estimate = jax.jit(est.init), jax.jit(est.estimate)
        key = jax.random.key(0)
        state = init_fn(key, theta)
        for i in range(3):  # crosses the horizon (6) inside a truncation for K = 4
            grad, state, aux = estimate(jax.random.fold_in(key, i), theta, state)
        assert jax.tree.structure(grad) == jax.tree.structure(theta), name
        for g, t in zip(jax.tree.leaves(grad), jax.tree.leaves(theta)):
            assert g.shape == t.shape and g.dtype == t.dtype, name
            assert np.all(np.isfinite(np.asarray(g))), name
        assert np.isfinite(float(aux["loss"])), name
        print(f"estimator {name}: ok (K = {est.steps_per_estimate}, cost {est.cost_per_estimate} steps)")
    check = pes.check_unbiased(system, "pes", theta, jax.random.key(1), num_samples=32, **HPARAMS["pes"])
    print(str(check).splitlines()[0])
    state, metrics = pes.outer.run(
        jax.random.key(2), theta, pes.make("pes", system, **HPARAMS["pes"]), optax.sgd(1e-2), num_steps=20
    )
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))
    print(f"outer.run: ok ({metrics['loss'].shape[0]} steps)")
    for what, call in (
        ("pes.results", lambda: __import__("pes.results")),
        ("pes.lopt", lambda: __import__("pes.lopt")),
        ("task mnist_lr_schedule", lambda: pes.tasks.make("mnist_lr_schedule")),
    ):
        try:
            call()
        except ModuleNotFoundError as err:
            message = str(err)
            assert "\n" not in message and "pip install 'pes-repro[suite]'" in message, message
            print(f"{what} without its extra: {message}")
        else:
            raise AssertionError(f"{what} imported without its extra")


if __name__ == "__main__":
    main()
