"""PES, ES and NRES against the independent NumPy reference (tests/reference.py), exactly.

Float64 throughout.  For every case the library's jitted ``estimate`` and the reference loop
are driven by the same keys, truncation after truncation, and must agree on the gradient,
the logged loss, every particle's inner state, the step counters and the accumulator (PES)
or the episode's perturbation (NRES), to float64 rounding.  The cases cover T a multiple of
K, T not a multiple (episode ends inside truncations), K > T (several ends in one
truncation), staggered particles, ``antithetic=False``, ``unroll_loss="last"`` with K > 1,
no horizon, chunked particles, and a pytree theta and state on a system whose data and
initial states come from the keys.  The reference draws the noise itself from the documented
key discipline, so a change of the noise (its scale, its keys, its sharing between
particles) is a difference too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pes import estimators
from tests import reference
from tests.helpers import dict_theta, keyed_system

pytestmark = pytest.mark.numerics

SIGMA = 0.1

# name: (horizon, trunc_len, extra hyperparameters, unroll_loss, truncations)
CASES = {
    "T6-K3": (6, 3, {}, "sum", 5),  # T a multiple of K: ends on truncations' last steps
    "T5-K3": (5, 3, {}, "sum", 6),  # ends inside truncations, at every position over lcm 15
    "T3-K7": (3, 7, {}, "sum", 3),  # K > T: two or three episode ends per truncation
    "T7-K3-stagger": (7, 3, {"stagger": True}, "sum", 6),  # pairs at random phases
    "T5-K2-single": (5, 2, {"antithetic": False}, "sum", 6),  # no antithetic pairs
    "T6-K3-last": (6, 3, {}, "last", 5),  # the objective is the last step's loss, K > 1
    "T5-K3-stagger-chunked": (5, 3, {"stagger": True, "particle_chunk_size": 2}, "sum", 5),
    "no-horizon-K2": (None, 2, {}, "sum", 3),  # never resets
}
NAMES = {
    "pes": list(CASES),
    "es": [c for c in CASES if c != "T5-K3-stagger-chunked"],
    "nres": list(CASES),
}
# GPES-K (noise_every = blocks * K, or None: one block per episode) on the cases with an episode.
GPES = [
    ("T6-K3", 2),  # noise_every 6 = T: one block per episode (NRES)
    ("T5-K3", 2),  # blocks cut by resets inside truncations
    ("T7-K3-stagger", 2),  # burn-in blocks of age ceil(offset / K)
    ("T5-K2-single", 3),
    ("T3-K7", 1),  # several ends per truncation (noise_every 7 >= T: one block per episode)
    ("T5-K3-stagger-chunked", 1),  # noise_every = K: PES's blocks
    ("T5-K3", None),  # NRES's blocks
]


def _library_state(name, state):
    """The comparable parts of an estimator state: inner, counters and accum / eps."""
    out = {"inner": state.inner, "t": state.t}
    if name in ("pes", "gpes"):
        out["xi"] = state.accum
    if name in ("nres", "gpes"):
        out["eps"] = state.eps
    if name == "gpes":
        out["age"] = state.age
    return out


def _reference_state(name, ref):
    shared = name == "es" and not ref.stagger  # truncated ES: one shared state and counter
    out = {"inner": ref.inner(), "t": np.asarray(ref.t[0] if shared else ref.t)}
    if name in ("pes", "gpes"):
        out["xi"] = _unravel_groups(ref.flat, ref.xi)
    if name == "nres":
        out["eps"] = _unravel_groups(ref.flat, ref.eps)
    if name == "gpes":
        out["eps"] = _unravel_groups(ref.flat, ref.e)
        out["age"] = np.asarray(ref.age)
    return out


def _comparable(name, ref, state):
    """GPES: a block due for replacement (age >= m) is never used again: its stored
    perturbation is left out of the comparison (the library keeps the last draw there)."""
    if name != "gpes" or ref.m is None:
        return state
    idle = np.asarray(ref.age) >= ref.m
    eps = jax.tree.map(
        lambda x: np.where(idle.reshape((-1,) + (1,) * (np.ndim(x) - 1)), 0.0, x), state["eps"]
    )
    return {**state, "eps": eps}


def _unravel_groups(flat, rows):
    trees = [flat.unravel(r) for r in rows]
    return jax.tree.map(lambda *x: np.stack(x).astype(np.float64), *trees)


def _close(got, want, what, rtol=1e-9):
    got_l, got_t = jax.tree.flatten(got)
    want_l, want_t = jax.tree.flatten(want)
    assert got_t == want_t, (what, got_t, want_t)
    for g, w in zip(got_l, want_l):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert g.shape == w.shape, (what, g.shape, w.shape)
        scale = max(float(np.max(np.abs(w), initial=0.0)), 1e-300)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale, err_msg=what)


def run_case(name, case, seed=0, **more):
    horizon, trunc_len, extra, unroll_loss, num_truncations = CASES[case]
    extra = {**extra, **more}
    system = keyed_system(horizon=horizon, unroll_loss=unroll_loss)
    theta = dict_theta(jnp.float64)
    n = 6 if extra.get("antithetic", True) else 3
    hp = dict(trunc_len=trunc_len, sigma=SIGMA, num_particles=n, **extra)
    est = estimators.make(name, system, **hp)
    ref_hp = {k: v for k, v in hp.items() if k != "particle_chunk_size"}
    ref = reference.REFERENCES[name](system, theta, **ref_hp)
    key = jax.random.key(seed)
    init_key = jax.random.fold_in(key, 1000)
    state = jax.jit(est.init)(init_key, theta)
    ref.init(init_key, theta)
    flat = ref.flat
    _close(
        _comparable(name, ref, _library_state(name, state)),
        _comparable(name, ref, _reference_state(name, ref)),
        f"{name} {case} init",
    )
    estimate = jax.jit(est.estimate)
    grads = []
    for i in range(num_truncations):
        k = jax.random.fold_in(key, i)
        grad, state, aux = estimate(k, theta, state)
        want = ref.estimate(k, theta)
        where = f"{name} {case} truncation {i}"
        _close(flat.ravel(grad), want, where + ": gradient")
        _close(
            _comparable(name, ref, _library_state(name, state)),
            _comparable(name, ref, _reference_state(name, ref)),
            where + ": state",
        )
        np.testing.assert_allclose(float(aux["loss"]), ref.losses.mean(), rtol=1e-12, err_msg=where)
        grads.append(want)
    return np.array(grads), ref


@pytest.mark.parametrize("case", NAMES["pes"])
def test_pes_matches_the_reference(case):
    grads, ref = run_case("pes", case)
    assert np.all(np.abs(grads).sum(axis=1) > 0)  # negative control: nothing vacuous


@pytest.mark.parametrize("case", NAMES["es"])
def test_es_matches_the_reference(case):
    run_case("es", case)


@pytest.mark.parametrize("case", NAMES["nres"])
def test_nres_matches_the_reference(case):
    run_case("nres", case)


@pytest.mark.parametrize("case, blocks", GPES)
def test_gpes_matches_the_reference(case, blocks):
    if "gpes" not in estimators.REGISTRY:
        pytest.skip("no gpes estimator in this version of the library")
    trunc_len = CASES[case][1]
    run_case("gpes", case, noise_every=None if blocks is None else blocks * trunc_len)
