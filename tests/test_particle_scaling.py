"""Particles at scale: chunked unrolls, sharding over devices, memory per particle.

* ``particle_chunk_size`` (pes, es) gives bit-identical estimates and states;
* ``devices=2`` on two host CPU devices (a subprocess with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=2``) gives the one-device states
  bit for bit and the gradient up to the summation order of the cross-device sum, and
  the compiled estimate's only collective is one all-reduce of gradient-sized terms;
* the PES state holds exactly the inner states, one accumulator per antithetic pair
  and a counter per pair, whatever K is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pes
from pes import sharding, tasks
from pes.systems import UnrolledSystem
from tests.helpers import two_device_result

ROOT = Path(__file__).resolve().parent.parent


def _mlp_system(horizon=5, width=3, dim_in=4):
    """A tiny 'learning-rate schedule' inner problem with matmuls (SGD on an MLP)."""

    def init(key):
        k1, k2 = jax.random.split(key)
        return {
            "w1": jax.random.normal(k1, (dim_in, width)) * 0.5,
            "w2": jax.random.normal(k2, (width, 1)) * 0.5,
        }

    def loss_fn(params, x, y):
        h = jnp.tanh(x @ params["w1"])
        return jnp.mean((h @ params["w2"] - y) ** 2)

    def step(theta, state, key):
        x = jax.random.normal(key, (6, dim_in))
        y = jnp.sum(x, axis=1, keepdims=True)
        loss, grads = jax.value_and_grad(loss_fn)(state, x, y)
        lr = jnp.exp(theta[0])
        new = jax.tree.map(lambda p, g: p - lr * g, state, grads)
        return new, loss

    return UnrolledSystem(init, step, horizon, "sum")


def _trajectory(est, theta, num_estimates=4, learning_rate=0.01):
    state = est.init(jax.random.key(0), theta)
    estimate = jax.jit(est.estimate)
    grads = []
    for i in range(num_estimates):
        grad, state, aux = estimate(jax.random.key(10 + i), theta, state)
        grads.append(grad)
        theta = jax.tree.map(lambda th, g: th - learning_rate * g, theta, grad)
    return grads, state


def _assert_tree_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _assert_tree_close(a, b, rtol=1e-12):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", ["pes", "es"])
@pytest.mark.parametrize("chunk", [2, 4])
def test_chunked_estimate_is_identical_linear_quadratic(name, chunk):
    # horizon 7, K = 3: resets happen inside truncations; stagger spreads them over pairs.
    task = tasks.make("linear_quadratic", dim=3, horizon=7)
    extra = {"stagger": True} if name == "pes" else {}
    kw = dict(trunc_len=3, sigma=0.1, num_particles=8, **extra)
    base = _trajectory(pes.make(name, task.system, **kw), task.theta_init)
    chunked = _trajectory(pes.make(name, task.system, particle_chunk_size=chunk, **kw), task.theta_init)
    _assert_tree_equal(base, chunked)


@pytest.mark.integration
def test_chunked_estimate_matches_mlp_to_rounding():
    """With matmuls XLA may pick another kernel for another batch size: equal to ~1 ulp."""
    system = _mlp_system()
    theta = jnp.array([-2.0])
    kw = dict(trunc_len=2, sigma=0.1, num_particles=12, stagger=True)
    base = _trajectory(pes.make("pes", system, **kw), theta)
    chunked = _trajectory(pes.make("pes", system, particle_chunk_size=4, **kw), theta)
    _assert_tree_close(base, chunked, rtol=1e-12)
    # Negative control at the same tolerance: the next estimate (another key) differs.
    with pytest.raises(AssertionError):
        _assert_tree_close(base[0][0], base[0][1], rtol=1e-12)


def test_chunking_changes_nothing_but_the_negative_control_does():
    """Guard against a vacuous equality: another key does change the estimate."""
    task = tasks.make("linear_quadratic", dim=3, horizon=7)
    est = pes.make("pes", task.system, trunc_len=3, sigma=0.1, num_particles=8, particle_chunk_size=2)
    state = est.init(jax.random.key(0), task.theta_init)
    g1, _, _ = est.estimate(jax.random.key(1), task.theta_init, state)
    g2, _, _ = est.estimate(jax.random.key(2), task.theta_init, state)
    assert not np.array_equal(np.asarray(g1), np.asarray(g2))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(particle_chunk_size=3), "particle_chunk_size=3"),  # not a multiple of the pair size
        (dict(particle_chunk_size=6), "particle_chunk_size=6"),  # does not divide 8
        (dict(particle_chunk_size=0), "particle_chunk_size=0"),
        (dict(particle_chunk_size=2.0), "particle_chunk_size=2.0"),
        (dict(devices=0), "devices=0"),
        (dict(devices=999), "devices=999"),
        (dict(devices="all"), "devices='all'"),
    ],
)
@pytest.mark.parametrize("name", ["pes", "es"])
def test_bad_particle_options_raise_one_line_errors(name, kw, match):
    task = tasks.make("linear_quadratic", dim=2, horizon=4)
    with pytest.raises(ValueError, match=match) as err:
        pes.make(name, task.system, trunc_len=2, sigma=0.1, num_particles=8, **kw)
    assert "\n" not in str(err.value) and "allowed" in str(err.value)


def test_devices_one_and_auto_place_the_state_and_agree():
    """devices=None or 1: one device; "auto": every device (one here, two in the two-device
    test below).  All three give the same estimate."""
    task = tasks.make("linear_quadratic", dim=2, horizon=4)
    grads = []
    for devices in (None, 1, "auto"):
        est = pes.make("pes", task.system, trunc_len=2, sigma=0.1, num_particles=4, devices=devices)
        state = est.init(jax.random.key(0), task.theta_init)
        expected = len(jax.devices()) if devices == "auto" else 1
        assert len(state.accum.sharding.device_set) == expected, (devices, state.accum.sharding)
        grad, state, _ = est.estimate(jax.random.key(1), task.theta_init, state)
        assert len(state.accum.sharding.device_set) == expected, devices
        grads.append(np.asarray(grad))
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_allclose(grads[0], grads[2], rtol=1e-12)
    assert np.any(grads[0] != 0)


@pytest.mark.parametrize("trunc_len", [1, 10, 100])
def test_pes_state_is_the_minimum_whatever_k(trunc_len):
    """Inner state per particle + one accumulator and one counter per pair; no trajectories."""
    dim, n = 5, 16
    task = tasks.make("linear_quadratic", dim=dim, horizon=200)
    est = pes.make("pes", task.system, trunc_len=trunc_len, sigma=0.1, num_particles=n)
    state = est.init(jax.random.key(0), task.theta_init)
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
    itemsize = jnp.zeros((), jnp.result_type(float)).dtype.itemsize
    inner = n * dim * itemsize
    accum = (n // 2) * dim * itemsize
    counters = (n // 2) * 4
    assert nbytes == inner + accum + counters


def test_hlo_collective_parser():
    text = textwrap.dedent(
        """
        %all-reduce.3 = (f64[3]{0}, f64[3]{0}, f64[]) all-reduce(%a, %b, %c), channel_id=2
        ROOT %ag = f32[8,2]{1,0} all-gather-start(%x), dimensions={0}
        %add.1 = f32[] add(%p, %q)
        """
    )
    found = sharding.collectives(text)
    assert [op for op, _ in found] == ["all-reduce", "all-gather"]
    assert [sharding.shape_size(s) for _, s in found] == [7, 16]


# ----------------------------------------------------------------------------- 2 devices

_TWO_DEVICE_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import pes
from pes import sharding, tasks
sys.path.insert(0, sys.argv[1])
from test_particle_scaling import _mlp_system, _trajectory

assert len(jax.devices()) == 2, jax.devices()
out = {}
cases = {
    "pes_lq": ("pes", tasks.make("linear_quadratic", dim=3, horizon=7).system, jnp.zeros(3),
               dict(trunc_len=3, sigma=0.1, num_particles=8, stagger=True)),
    "pes_chunked_lq": ("pes", tasks.make("linear_quadratic", dim=3, horizon=7).system, jnp.zeros(3),
                       dict(trunc_len=3, sigma=0.1, num_particles=8, particle_chunk_size=4)),
    "es_lq": ("es", tasks.make("linear_quadratic", dim=3, horizon=7).system, jnp.zeros(3),
              dict(trunc_len=3, sigma=0.1, num_particles=8)),
    "pes_mlp": ("pes", _mlp_system(), jnp.array([-2.0]),
                dict(trunc_len=2, sigma=0.1, num_particles=8, stagger=True)),
    "pes_a_lq": ("pes_a", tasks.make("linear_quadratic", dim=3, horizon=6).system, jnp.zeros(3),
                 dict(trunc_len=3, sigma=0.1, num_particles=8)),
    "nres_drawn_lq": ("nres", tasks.make("linear_quadratic", dim=3, horizon=None).system, jnp.zeros(3),
                      dict(trunc_len=3, sigma=0.1, num_particles=8, stagger=True,
                           horizon_schedule=pes.horizons.LogUniform(2, 9))),
}
for case, (name, system, theta, kw) in cases.items():
    # theta stays fixed: the states then depend on the keys only, not on rounding of grads.
    one_grads, one_state = _trajectory(pes.make(name, system, **kw), theta, 3, 0.0)
    est = pes.make(name, system, devices=2, **kw)
    two_grads, two_state = _trajectory(est, theta, 3, 0.0)
    state_equal = all(np.array_equal(np.asarray(a), np.asarray(b))
                      for a, b in zip(jax.tree.leaves(one_state), jax.tree.leaves(two_state)))
    state_rel = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-300))
                    for a, b in zip(jax.tree.leaves(one_state), jax.tree.leaves(two_state))
                    if jnp.issubdtype(a.dtype, jnp.inexact))
    grad_rel = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-300))
                   for a, b in zip(one_grads, two_grads))
    other_key = float(jnp.max(jnp.abs(one_grads[0] - one_grads[1])))
    per_group = [x for x in jax.tree.leaves(two_state) if jnp.ndim(x) >= 1 and x.shape[0] == 4]
    sharded = all(len(x.sharding.device_set) == 2 and x.sharding.spec[0] == "particles" for x in per_group)
    text = jax.jit(est.estimate).lower(jax.random.key(0), theta, two_state).compile().as_text()
    coll = sharding.collectives(text)
    out[case] = dict(state_equal=state_equal, state_rel=state_rel, grad_rel=grad_rel, other_key=other_key,
                     sharded=sharded and bool(per_group),
                     collectives=[[op, sharding.shape_size(s)] for op, s in coll],
                     theta_size=int(theta.size))

# The experiments-level switch.
from experiments import config as cfgmod
cfg = cfgmod.compose(["task=linear_quadratic", "estimator=pes", "estimator.num_particles=8", "devices=auto"])
built = cfgmod.build(cfg)
jax.config.update("jax_enable_x64", True)
out["config_devices"] = built.estimator.hparams["devices"]
print("RESULT" + json.dumps(out))
"""


@pytest.mark.integration
def test_two_devices_match_one_device_and_only_reduce_the_gradient(tmp_path):
    out = two_device_result(tmp_path, _TWO_DEVICE_SCRIPT, Path(__file__).parent, timeout=600)
    assert out.pop("config_devices") == "auto"
    for case, r in out.items():
        if case.endswith("_lq"):
            assert r["state_equal"], case  # inner states, counters, accumulators: bit for bit
        else:  # matmuls of another batch size may round differently (~1 ulp)
            assert r["state_rel"] < 1e-13, (case, r["state_rel"])
        if not case.startswith("es"):  # (truncated ES keeps one shared, replicated state)
            assert r["sharded"], case  # per-group state lives split over both devices
        # The gradient differs only by the order of the cross-device sum (float64).
        assert r["grad_rel"] < 1e-13, (case, r["grad_rel"])
        assert r["other_key"] > 1e-6, case  # negative control: estimates do vary with the key
        # One all-reduce per truncation: the gradient terms (eps and accumulator parts)
        # and the scalar logged loss; nothing is gathered, permuted or scattered.
        ops = [op for op, _ in r["collectives"]]
        assert ops == ["all-reduce"], (case, r["collectives"])
        assert sum(size for _, size in r["collectives"]) <= 2 * r["theta_size"] + 2, (case, r)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["estimator=tbptt", "devices=2"], "devices=2 is invalid with estimator=tbptt"),
        (["estimator=pes", "devices=many"], "devices='many' is invalid"),
        (["estimator=pes", f"devices={len(jax.devices()) + 1}"], "devices="),
    ],
)
def test_devices_config_switch_rejects_bad_values(overrides, match):
    from experiments import config as cfgmod

    cfg = cfgmod.compose(["task=linear_quadratic", *overrides])
    with pytest.raises(cfgmod.ConfigError, match=match) as err:
        cfgmod.build(cfg)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- 2 processes

_TWO_PROCESS_SCRIPT = r"""
import json, sys
import jax
pid, nproc, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if nproc > 1:  # the multi-host recipe, with two processes on this host (CPU collectives: gloo)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=nproc, process_id=pid)
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np, optax
import pes
from pes import outer, tasks

pytestmark = pytest.mark.numerics  # exact equivalences: rerun by `make test-portable`
task = tasks.make("linear_quadratic", dim=3, horizon=7)
est = pes.make("pes", task.system, trunc_len=3, sigma=0.1, num_particles=8, stagger=True,
               devices="auto" if nproc > 1 else None)
opt = optax.sgd(0.01)
theta0 = np.asarray(task.theta_init)
# Build the state inside jit so it is born sharded over every process's devices.
state = jax.jit(lambda: outer.init_state(jax.random.key(0), jnp.asarray(theta0), est, opt))()
state, metrics = outer.make_chunk(est, opt, log_every=1, num_logs=4)(state)
out = {"theta": np.asarray(state.theta).tolist(), "devices": len(jax.devices()),
       "local": len(jax.local_devices()), "sharded": len(state.est_state.accum.sharding.device_set)}
print("RESULT" + json.dumps(out), flush=True)
"""


@pytest.mark.slow
def test_two_processes_with_jax_distributed_match_one_process(tmp_path):
    """The multi-host recipe (jax.distributed.initialize + devices='auto'), on one host."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    script = tmp_path / "two_processes.py"
    script.write_text(_TWO_PROCESS_SCRIPT)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)

    def start(pid, nproc):
        return subprocess.Popen(
            [sys.executable, str(script), str(pid), str(nproc), port],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )

    procs = [start(0, 2), start(1, 2)]
    single = start(0, 1)
    results = []
    for p in [*procs, single]:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT")][-1][6:]))
    two_a, two_b, one = results
    assert two_a["devices"] == 2 and two_a["local"] == 1 and two_a["sharded"] == 2
    assert two_a["theta"] == two_b["theta"]  # every process holds the same replicated theta
    np.testing.assert_allclose(two_a["theta"], one["theta"], rtol=1e-12)
    assert one["theta"] != [0.0, 0.0, 0.0]


def _reference_unroll(system, thetas, inner, t, key, k):
    """Every particle through `systems.unroll` (the definition), then the `Unrolled` summary."""
    from pes import systems

    def one(th, s, tt):
        return systems.unroll(system, th, s, tt, key, k)

    per_member = jax.vmap(one, in_axes=(0, 0, None))
    state, new_t, losses, ends = jax.vmap(per_member)(thetas, inner, t)  # (G, M, ...)
    weights = systems.step_weights(system, k, losses.dtype)
    restarted = (jnp.cumsum(ends, axis=-1) - ends) > 0
    before = jnp.where(restarted, 0.0, losses) @ weights
    return state, new_t[:, 0], losses @ weights, before, ends[:, 0].any(-1), ends[:, 0, -1]


@pytest.mark.parametrize(
    "dim,horizon,t0,k",
    [
        (4, 8, [0, 0, 0, 0], 4),  # lockstep, K divides T: bare steps, resets on the last step
        (4, 5, [0, 1, 3, 4], 4),  # staggered: resets inside the truncation (selecting scan)
        (4, 3, [0, 1, 2, 2], 7),  # K > T: several resets per truncation
        (4, None, [0, 5, 9, 1], 3),  # no horizon: nothing ends
        (2**15, 5, [0, 1, 3, 4], 4),  # 2 MiB of state: selection only at steps where an episode ends
        (2**15, 8, [4, 4, 4, 4], 4),  # large state, episode ends on the last step only
    ],
)
@pytest.mark.parametrize("skip_idle_resets", [True, False])
def test_unroll_particles_matches_systems_unroll(dim, horizon, t0, k, skip_idle_resets):
    """The batched unroll (every path: bare steps, selecting scan, large-state branches) gives,
    per particle, exactly what `systems.unroll` gives: states, counters, unroll objectives, the
    part before the first reset and the episode-end flags."""
    from pes.estimators import _common, particles

    system = tasks.make("linear_quadratic", dim=dim, horizon=horizon).system
    lay = _common.layout(8, True)
    eps = _common.sample_noise(jax.random.key(0), jnp.zeros(dim), lay.num_groups, 0.1)
    thetas = _common.perturb(jnp.zeros(dim), eps, lay)
    inner = jax.random.normal(jax.random.key(1), (lay.num_groups, 2, dim))
    t = jnp.array(t0, jnp.int32)
    spec = particles.Truncation(
        system, lay, k, particles.FixedClock(horizon), skip_idle_resets=skip_idle_resets
    )
    fn = jax.jit(lambda th, s, tt: particles.unroll(spec, th, s, tt, jax.random.key(2)))
    out = fn(thetas, inner, t)
    ref = jax.jit(lambda th, s, tt: _reference_unroll(system, th, s, tt, jax.random.key(2), k))(
        thetas, inner, t
    )
    for got, want in zip((out.inner, out.t, out.total, out.before, out.any_end, out.last_end), ref):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=0)
    if horizon is not None and min(t0) != max(t0):  # negative control: these cases reset mid-way
        assert not np.array_equal(np.asarray(out.before), np.asarray(out.total))
    if dim == 2**15:
        text = fn.lower(thetas, inner, t).as_text()
        assert "stablehlo.case" in text  # the large-state branch is really used (also with skip off)


def test_batched_runs_match_single_runs_and_keep_their_branches():
    """`pes.outer.make_batched_chunk` (R runs vmapped in one compiled call) gives each run's
    own numbers, and the estimators' work-skipping conditions stay branches (or-reduced over
    the runs) instead of becoming both-branch selects under vmap."""
    import optax

    from pes import outer

    system = tasks.make("linear_quadratic", dim=3, horizon=8).system
    opt = optax.sgd(1e-3)
    thetas = jnp.array([[0.1, 0.2, 0.3], [-0.5, 0.0, 0.5]])
    keys = jnp.stack([jax.random.key(1), jax.random.key(2)])
    for stagger in (False, True):  # lockstep: bare steps; staggered: resets inside truncations
        est = pes.make("pes", system, trunc_len=3, sigma=0.1, num_particles=4, stagger=stagger)
        batched = outer.make_batched_chunk(est, opt, log_every=4, num_logs=2)
        states, metrics = batched(outer.init_states(keys, thetas, est, opt))
        single = outer.make_chunk(est, opt, log_every=4, num_logs=2)
        for r in range(2):
            alone, alone_metrics = single(outer.init_state(keys[r], thetas[r], est, opt))
            np.testing.assert_allclose(np.asarray(states.theta[r]), np.asarray(alone.theta), rtol=1e-12)
            np.testing.assert_allclose(
                np.asarray(metrics["loss"][r]), np.asarray(alone_metrics["loss"]), rtol=1e-12
            )
        assert not np.allclose(np.asarray(states.theta[0]), np.asarray(states.theta[1]))
        text = batched.lower(outer.init_states(keys, thetas, est, opt)).as_text()
        assert "stablehlo.case" in text  # still a branch under vmap, not a both-branch select
