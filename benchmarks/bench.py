"""Throughput, memory and gradient agreement: this library's PES / truncated ES next to evosax.

    python benchmarks/bench.py                      # default grid (a few minutes on 2 CPU cores)
    python benchmarks/bench.py --full               # the issue's whole grid (long; memory-capped)
    python benchmarks/bench.py --tiny --out /tmp/b  # seconds; what the test suite runs

Every configuration is measured in this one process, side by side and interleaved
(repeat r of every driver runs before repeat r + 1 of any), with the same inner problem,
N (both signs counted), K, T and sigma, and common random numbers for every driver:

* ``ours``          `pes.make(...)` + `pes.outer.make_step`, outer steps in one compiled loop;
* ``ours-<D>dev``   the same with ``devices=D`` (particles sharded; needs several devices);
* ``evosax-scan``   evosax ``PersistentES`` ask / unroll / tell inside one compiled loop
                    (its best case);
* ``evosax-loop``   the same driven by a Python loop with a host-side reset check per
                    generation, the way its PES notebook drives it.

Truncated ES on the evosax side is emulated with ``PersistentES(T=K)`` (the accumulator
is cleared every truncation) and a shared, unperturbed mean trajectory, as ours does.

Compiled loops take the number of outer steps as a traced argument (``lax.fori_loop``,
a while loop like ``lax.scan``), so one compilation serves every repeat; compile time is
reported separately.  Problems: (a) the linear-quadratic system (`pes.tasks`), overhead
bound; (b) an MNIST-sized MLP (784-100-100-10, SGD with momentum, batch 100, synthetic
data) whose learning-rate schedule (log lr at start and end, interpolated) is theta,
compute bound, reported as a fraction of the large-matmul GFLOP/s measured in this run.

Outputs: ``<out>/bench.csv`` (tidy long format: one row per measured scalar) and a
printed table.  Also checks, on the linear-quadratic problem, that ours and evosax give
the same mean episode gradient as the exact one within Monte-Carlo error.
"""

from __future__ import annotations

import argparse
import os
import sys


def _early_device_flags(argv):
    """--devices D (default 2) needs D host devices; XLA reads the flag at import, so set it first."""
    if not any(a == "--devices" or a.startswith("--devices=") for a in argv):
        argv = [*argv, "--devices", "2"]
    for i, arg in enumerate(argv):
        value = (
            arg.split("=", 1)[1]
            if arg.startswith("--devices=")
            else (argv[i + 1] if arg == "--devices" and i + 1 < len(argv) else None)
        )
        if value is not None and value.isdigit() and int(value) > 1:
            flags = os.environ.get("XLA_FLAGS", "")
            if "xla_force_host_platform_device_count" not in flags:
                os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={value}".strip()


if __name__ == "__main__":
    _early_device_flags(sys.argv[1:])

import csv  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pes  # noqa: E402
from pes import outer, systems, tasks  # noqa: E402
from pes.systems import UnrolledSystem  # noqa: E402

try:
    from evosax.algorithms import PersistentES
except ImportError:  # the optional `bench` extra
    PersistentES = None

COLUMNS = (
    "part",
    "problem",
    "estimator",
    "driver",
    "num_particles",
    "trunc_len",
    "horizon",
    "theta_dim",
    "sigma",
    "devices",
    "metric",
    "value",
)


def csv_row(part, metric, value, **fields) -> dict:
    """One row of bench.csv: `part`, `metric`, `value` and the fields that apply; the other
    columns take their empty values ("" for names, 0 for sizes, NaN for sigma, 1 device)."""
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise ValueError(f"bench.csv has no column(s) {sorted(unknown)}; columns: {COLUMNS}")
    row = dict(
        problem="", estimator="", driver="", num_particles=0, trunc_len=0, horizon=0, theta_dim=0,
        sigma=float("nan"), devices=1,
    )
    row.update(fields, part=part, metric=metric, value=value)
    return {c: row[c] for c in COLUMNS}

MLP_FLOPS_PER_EXAMPLE = 6 * (784 * 100 + 100 * 100 + 100 * 10)  # fwd + bwd matmuls (3x fwd)


# ----------------------------------------------------------------------------- problems


def mlp_lr_schedule(horizon: int, batch: int = 100, num_batches: int = 8, momentum: float = 0.9):
    """MNIST-sized inner problem: SGD+momentum on a 784-100-100-10 MLP, lr schedule = theta.

    theta = (log lr at step 0, log lr at step T); the lr is interpolated log-linearly.
    Data: a fixed synthetic set of ``num_batches`` batches (Gaussian inputs, labels from a
    random linear teacher); step j trains on the batch its key picks (same for every
    particle: common random numbers).
    """
    key = jax.random.key(1234)
    kx, kt = jax.random.split(key)
    xs = jax.random.normal(kx, (num_batches, batch, 784), jnp.float32)
    teacher = jax.random.normal(kt, (784, 10), jnp.float32)
    ys = jnp.argmax(xs @ teacher, axis=-1)
    sizes = [(784, 100), (100, 100), (100, 10)]

    def init(key):
        keys = jax.random.split(key, len(sizes))
        params = [
            (jax.random.normal(k, s, jnp.float32) * jnp.sqrt(2.0 / s[0]), jnp.zeros((s[1],), jnp.float32))
            for k, s in zip(keys, sizes)
        ]
        return {"params": params, "mom": jax.tree.map(jnp.zeros_like, params), "t": jnp.zeros((), jnp.int32)}

    def loss_fn(params, x, y):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def step(theta, state, key):
        idx = jax.random.randint(key, (), 0, num_batches)
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], xs[idx], ys[idx])
        frac = state["t"].astype(jnp.float32) / horizon
        lr = jnp.exp(theta[0] * (1 - frac) + theta[1] * frac)
        mom = jax.tree.map(lambda m, g: momentum * m + g, state["mom"], grads)
        params = jax.tree.map(lambda p, m: p - lr * m, state["params"], mom)
        return {"params": params, "mom": mom, "t": state["t"] + 1}, loss

    system = UnrolledSystem(init, step, horizon, "sum")
    return system, jnp.log(jnp.array([0.01, 0.001], jnp.float32))


def problem(name: str, dim: int, horizon: int):
    if name == "linear_quadratic":
        task = tasks.make("linear_quadratic", dim=dim, horizon=horizon)
        return task.system, task.theta_init.astype(jnp.float32)
    return mlp_lr_schedule(horizon)


# ----------------------------------------------------------------------------- drivers


def _tree_bytes(tree) -> int:
    return int(sum(np.prod(np.shape(x)) * jnp.result_type(x).itemsize for x in jax.tree.leaves(tree)))


def _peak_bytes(compiled) -> float:
    try:
        m = compiled.memory_analysis()
        return float(
            m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
        )
    except Exception:  # noqa: BLE001 (not every backend reports it)
        return float("nan")


def _loop(step_fn):
    """jit(state, n) -> state after n steps (n traced: compile once, run any length)."""

    def run(state, n):
        return jax.lax.fori_loop(0, n, lambda i, s: step_fn(s), state)

    return jax.jit(run, donate_argnums=0)


class Driver:
    """A compiled or Python-driven outer loop: ``advance(n)`` runs n outer steps."""

    name: str
    compile_s: float = float("nan")
    peak_bytes: float = float("nan")
    state_bytes: float = float("nan")

    def advance(self, n: int) -> None:
        raise NotImplementedError


class Compiled(Driver):
    def __init__(self, name, step_fn, state):
        self.name = name
        state = jax.tree.map(lambda x: x.copy(), state)  # own buffers: the loop donates them
        run = _loop(step_fn)
        start = time.perf_counter()
        self.fn = run.lower(state, 1).compile()
        self.compile_s = time.perf_counter() - start
        self.peak_bytes = _peak_bytes(self.fn)
        self.state = state

    def advance(self, n):
        self.state = self.fn(self.state, np.int32(n))
        jax.block_until_ready(self.state)


def ours(system, theta, kind, n, k, sigma, devices=None, lr=1e-6):
    est = pes.make(
        kind, system, trunc_len=k, sigma=sigma, num_particles=n, **({"devices": devices} if devices else {})
    )
    opt = optax.sgd(lr)
    step = outer.make_step(est, opt)
    state = outer.init_state(jax.random.key(0), theta, est, opt)
    name = "ours" if not devices else f"ours-{devices}dev"
    drv = Compiled(name, lambda s: step(s)[0], state)
    drv.state_bytes = _tree_bytes(state.est_state)
    return drv


def _evosax_parts(system, theta, kind, n, k, sigma, horizon, lr=1e-6):
    """evosax PersistentES + the user code around it (unroll, resets), shared by both drivers."""
    es = PersistentES(
        population_size=n,
        solution=theta,
        optimizer=optax.sgd(lr),
        std_schedule=optax.constant_schedule(sigma),
    )
    # Truncated ES: T = K clears the accumulator after every truncation.
    params = es.default_params.replace(T=horizon if kind == "pes" else k, K=k)
    es_state = es.init(jax.random.key(1), theta, params)
    fresh = system.init(jax.random.key(2))
    particles0 = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), fresh)

    def unroll(pop, inner, data_key):
        keys = systems.step_keys(data_key, k)

        def body(inner, kp):
            return jax.vmap(system.step, in_axes=(0, 0, None))(pop, inner, kp[0])

        inner, losses = jax.lax.scan(body, inner, keys)
        return inner, jnp.sum(losses, axis=0)

    def generation(carry, key, host_reset=False):
        """One truncation: ask, unroll K steps, tell; then the user's resets."""
        st, inner, mean_state, t = carry
        k_ask, k_data, k_tell = jax.random.split(key, 3)
        pop, st = es.ask(k_ask, st, params)
        if kind == "es":  # every particle starts from the shared mean state
            inner = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), mean_state)
            mean_state, t, _, _ = systems.unroll(system, es.get_mean(st), mean_state, t, k_data, k)
        inner, fitness = unroll(pop, inner, k_data)
        st, _ = es.tell(k_tell, pop, fitness, st, params)
        if kind == "es":
            inner = None  # nothing per particle survives a truncation
        if kind == "pes" and not host_reset:
            inner = systems.tree_where(st.inner_step_counter == 0, particles0, inner)
        return st, inner, mean_state, t

    carry = (es_state, particles0 if kind == "pes" else None, fresh, jnp.zeros((), jnp.int32))
    return es, params, generation, carry


def evosax_scan(system, theta, kind, n, k, sigma, horizon):
    es, params, generation, carry = _evosax_parts(system, theta, kind, n, k, sigma, horizon)

    def step(c):
        carry, key = c
        key, sub = jax.random.split(key)
        return generation(carry, sub), key

    drv = Compiled("evosax-scan", step, (carry, jax.random.key(3)))
    drv.state_bytes = _tree_bytes((carry[0].pert_accum, carry[1]))
    return drv


class EvosaxLoop(Driver):
    """evosax as its PES notebook drives it: jitted ask / unroll / tell per generation and a
    host-side check of the step counter to reset the particles' inner states."""

    def __init__(self, system, theta, kind, n, k, sigma, horizon):
        self.name = "evosax-loop"
        self.kind = kind
        es, params, generation, carry = _evosax_parts(system, theta, kind, n, k, sigma, horizon)
        self.gen = jax.jit(lambda c, key: generation(c, key, host_reset=True))
        self.carry, self.key = carry, jax.random.key(3)
        self.particles0 = carry[1]
        self.state_bytes = _tree_bytes((carry[0].pert_accum, carry[1]))
        start = time.perf_counter()
        self.advance(1)
        self.compile_s = time.perf_counter() - start  # first generation; minus one step below

    def advance(self, n):
        for _ in range(n):
            self.key, sub = jax.random.split(self.key)
            self.carry = self.gen(self.carry, sub)
            if self.kind == "pes" and int(self.carry[0].inner_step_counter) == 0:
                self.carry = (self.carry[0], self.particles0, *self.carry[2:])
        jax.block_until_ready(self.carry)


class Matmul(Driver):
    """A large f32 matmul, timed interleaved with the drivers (a busy machine hits both)."""

    def __init__(self, size=2048):
        self.name, self.size = "matmul", size
        self.a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
        self.f = jax.jit(lambda x: x @ x)
        start = time.perf_counter()
        self.f(self.a).block_until_ready()
        self.compile_s = time.perf_counter() - start

    def advance(self, n):
        for _ in range(n):
            out = self.f(self.a)
        out.block_until_ready()

    def gflops(self, seconds_per_step):
        return 2 * self.size**3 / seconds_per_step / 1e9


# ----------------------------------------------------------------------------- measuring


def measure(drivers, n_particles, k, target_s, repeats):
    """Median seconds per outer step of each driver, repeats interleaved across drivers."""
    steps = {}
    for d in drivers:  # size the repeats: about target_s each (grow n until it takes >= target/8)
        n, took = 1, 0.0
        while True:
            t0 = time.perf_counter()
            d.advance(n)
            took = time.perf_counter() - t0
            if n == 1 and isinstance(d, EvosaxLoop):
                d.compile_s = max(d.compile_s - took, 0.0)
            if took >= target_s / 8 or n >= 100_000:
                break
            n *= 8
        steps[d.name] = int(min(max(target_s * n / max(took, 1e-9), 1), 1_000_000))
    times = {d.name: [] for d in drivers}
    for _ in range(repeats):
        for d in drivers:
            t0 = time.perf_counter()
            d.advance(steps[d.name])
            times[d.name].append((time.perf_counter() - t0) / steps[d.name])
    return {name: float(np.median(v)) for name, v in times.items()}, steps


def matmul_gflops(size=2048, repeats=10) -> float:
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        ts.append(time.perf_counter() - t0)
    return 2 * size**3 / float(np.median(ts)) / 1e9


def min_bytes_per_particle(system, theta, kind) -> float:
    """Inner state + the particle's share of its pair's accumulator (PES); 0 for truncated ES
    (particles restart from the shared state)."""
    if kind != "pes":
        return 0.0
    return _tree_bytes(system.init(jax.random.key(0))) + _tree_bytes(theta) / 2


def gradient_check(n=64, k=5, horizon=20, dim=4, sigma=0.1, episodes=40):
    """Mean episode gradient of ours and evosax vs the exact one (linear-quadratic)."""
    task = tasks.make("linear_quadratic", dim=dim, horizon=horizon)
    system = task.system
    theta = jnp.full((dim,), 0.5, jnp.float32)
    exact = np.asarray(
        jax.grad(lambda th: systems.full_objective(system, th, jax.random.key(0), jax.random.key(0)))(theta)
    )
    per_episode = horizon // k
    est = pes.make("pes", system, trunc_len=k, sigma=sigma, num_particles=n)

    def ours_run(key):
        def body(state, key):
            g, state, _ = est.estimate(key, theta, state)
            return state, g

        state = est.init(jax.random.key(5), theta)
        _, gs = jax.lax.scan(body, state, jax.random.split(key, episodes * per_episode))
        return gs.reshape(episodes, per_episode, dim).sum(1)

    es = PersistentES(
        population_size=n,
        solution=theta,
        optimizer=optax.sgd(1.0),
        std_schedule=optax.constant_schedule(sigma),
    )
    params = es.default_params.replace(T=horizon, K=k)

    def evosax_run(key):
        fresh = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), system.init(key))

        def body(carry, key):
            st, inner = carry
            k_ask, k_data, k_tell = jax.random.split(key, 3)
            pop, st = es.ask(k_ask, st, params)
            keys = systems.step_keys(k_data, k)
            inner, losses = jax.lax.scan(
                lambda s, kp: jax.vmap(system.step, in_axes=(0, 0, None))(pop, s, kp[0]), inner, keys
            )
            before = st.mean
            st, _ = es.tell(k_tell, pop, jnp.sum(losses, 0), st, params)
            grad = before - st.mean  # sgd(1.0): the raw gradient
            st = st.replace(mean=before)  # theta stays fixed
            inner = systems.tree_where(st.inner_step_counter == 0, fresh, inner)
            return (st, inner), grad

        st = es.init(jax.random.key(6), theta, params)
        _, gs = jax.lax.scan(body, (st, fresh), jax.random.split(key, episodes * per_episode))
        return gs.reshape(episodes, per_episode, dim).sum(1)

    out = {}
    g_ours = np.asarray(jax.jit(ours_run)(jax.random.key(11)), np.float64)
    g_evo = np.asarray(jax.jit(evosax_run)(jax.random.key(12)), np.float64)
    for name, g in (("ours", g_ours), ("evosax", g_evo)):
        mean, se = g.mean(0), g.std(0, ddof=1) / math.sqrt(episodes)
        out[name] = dict(
            max_abs_z_vs_exact=float(np.max(np.abs(mean - exact) / se)),
            rel_error_of_mean=float(np.linalg.norm(mean - exact) / np.linalg.norm(exact)),
            mean_rel_se=float(np.linalg.norm(se) / np.linalg.norm(exact)),
        )
    diff_se = np.sqrt(g_ours.var(0, ddof=1) / episodes + g_evo.var(0, ddof=1) / episodes)
    out["n"], out["episodes"] = n, episodes
    out["ours_minus_evosax_max_abs_z"] = float(np.max(np.abs(g_ours.mean(0) - g_evo.mean(0)) / diff_se))
    return out


# ----------------------------------------------------------------------------- grid


def grids(args):
    """(part, problem, estimator, N, K, D, horizon) tuples to measure."""
    if args.tiny:
        lq = [("pes", 8, 2, 4), ("es", 8, 2, 4)]
        mlp = [("pes", 4, 1)]
        horizon_lq, horizon_mlp = 10, 10
    elif args.full:
        lq = [
            (est, n, k, d)
            for est in ("pes", "es")
            for n in (64, 1024, 8192)
            for k in (1, 10, 100)
            for d in (4, 1000, 100_000)
        ]
        mlp = [(est, n, 1) for est in ("pes", "es") for n in (64, 1024)]
        horizon_lq, horizon_mlp = 1000, 1000
    else:  # representative subset: every N at K = 10, D = 4; K and D varied at N = 1024
        lq = [("pes", n, 10, 4) for n in (64, 1024, 8192)]
        lq += [("pes", 1024, 1, 4), ("pes", 1024, 100, 4), ("pes", 1024, 10, 1000), ("pes", 64, 10, 100_000)]
        lq += [("es", n, 10, 4) for n in (64, 8192)]
        mlp = [("pes", 64, 1), ("pes", 1024, 1)]
        horizon_lq, horizon_mlp = 1000, 1000
    out = [("a", "linear_quadratic", e, n, k, d, horizon_lq) for e, n, k, d in lq]
    out += [("b", "mlp_lr_schedule", e, n, k, 2, horizon_mlp) for e, n, k in mlp]
    return [g for g in out if not args.part or g[0] in args.part]


def estimated_bytes(problem_name, n, dim):
    per_particle = (2 * 89_610 + 1) * 4 if problem_name == "mlp_lr_schedule" else dim * 4
    return n * (per_particle + dim * 4) * 4  # inner states, accumulators, perturbations, copies


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/bench", help="output folder (bench.csv)")
    parser.add_argument("--full", action="store_true", help="the issue's whole grid (long)")
    parser.add_argument("--tiny", action="store_true", help="seconds; for tests")
    parser.add_argument("--part", action="append", choices=["a", "b"], help="only part a or b")
    parser.add_argument(
        "--devices",
        type=int,
        default=2,
        help="also run ours sharded over this many (host) devices at N >= 1024; 1 = off",
    )
    parser.add_argument(
        "--shard-min-n", type=int, default=1024, help="run the sharded driver only from this N on"
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--target-s", type=float, default=0.15, help="seconds per timed repeat")
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--max-gb", type=float, default=4.0, help="skip configs estimated above this")
    parser.add_argument("--no-evosax", action="store_true", help="ours only")
    parser.add_argument("--no-check", action="store_true", help="skip the gradient check")
    args = parser.parse_args(argv)
    if args.tiny:
        args.repeats, args.target_s = min(args.repeats, 2), min(args.target_s, 0.02)
        args.shard_min_n = 0
    use_evosax = PersistentES is not None and not args.no_evosax
    if not use_evosax and not args.no_evosax:
        print("evosax is not installed (pip install evosax==0.3.2): measuring ours only", file=sys.stderr)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ndev = len(jax.devices())
    machine = (
        f"{platform.machine()} {os.cpu_count()} CPUs, jax {jax.__version__} "
        f"{jax.default_backend()}, {ndev} device(s)"
    )
    print(f"# machine: {machine}", flush=True)
    records, table = [], []

    def record(cfg, driver, metric, value):
        part, prob, est, n, k, d, horizon = cfg
        records.append(
            csv_row(
                part, metric, float(value), problem=prob, estimator=est, driver=driver, num_particles=n,
                trunc_len=k, horizon=horizon, theta_dim=d, sigma=args.sigma,
                devices=int(driver.split("-")[1][:-3]) if driver.startswith("ours-") else 1,
            )
        )

    gflops = float("nan")
    cfgs = grids(args)
    if any(c[0] == "b" for c in cfgs):
        gflops = matmul_gflops(512 if args.tiny else 2048)
        records.append(csv_row("b", "gflops", gflops, problem="matmul_2048_f32", driver="xla"))
        print(
            f"# large matmul: {gflops:.1f} GFLOP/s (also re-measured interleaved with each part-b config)",
            flush=True,
        )
    t_start = time.perf_counter()
    for cfg in cfgs:
        part, prob, est, n, k, d, horizon = cfg
        if estimated_bytes(prob, n, d) > args.max_gb * 2**30:
            print(f"skip {cfg}: above --max-gb {args.max_gb}", flush=True)
            continue
        system, theta = problem(prob, d, horizon)
        drivers = [ours(system, theta, est, n, k, args.sigma)]
        if (
            args.devices > 1
            and ndev >= args.devices
            and n >= args.shard_min_n
            and (n // 2) % args.devices == 0
        ):
            drivers.append(ours(system, theta, est, n, k, args.sigma, devices=args.devices))
        if use_evosax:
            drivers.append(evosax_scan(system, theta, est, n, k, args.sigma, horizon))
            drivers.append(EvosaxLoop(system, theta, est, n, k, args.sigma, horizon))
        matmul = Matmul(512 if args.tiny else 2048) if prob == "mlp_lr_schedule" else None
        per_step, steps = measure(drivers + ([matmul] if matmul else []), n, k, args.target_s, args.repeats)
        if matmul:
            gflops_now = matmul.gflops(per_step.pop("matmul"))
            record(cfg, "matmul", "gflops", gflops_now)
        row = dict(part=part, problem=prob, est=est, N=n, K=k, D=d)
        for dr in drivers:
            s = per_step[dr.name]
            psps = n * k / s
            record(cfg, dr.name, "particle_steps_per_s", psps)
            record(cfg, dr.name, "wall_per_outer_step_s", s)
            record(cfg, dr.name, "compile_s", dr.compile_s)
            record(cfg, dr.name, "xla_peak_bytes", dr.peak_bytes)
            record(cfg, dr.name, "state_bytes_per_particle", dr.state_bytes / n)
            record(cfg, dr.name, "outer_steps_per_repeat", steps[dr.name])
            if dr.name.startswith("ours"):
                record(cfg, dr.name, "min_bytes_per_particle", min_bytes_per_particle(system, theta, est))
            if prob == "mlp_lr_schedule":
                achieved = psps * 100 * MLP_FLOPS_PER_EXAMPLE / 1e9
                record(cfg, dr.name, "gflops", achieved)
                record(cfg, dr.name, "fraction_of_matmul", achieved / gflops_now)
            row[dr.name] = psps
            row[f"{dr.name}_ms"] = s * 1e3
        for ref in ("evosax-scan", "evosax-loop"):
            if ref in per_step:
                ratio = per_step[ref] / per_step["ours"]
                record(cfg, "ours", f"ratio_vs_{ref}", ratio)
                row[f"/{ref.split('-')[1]}"] = ratio
        row["compile_s"] = drivers[0].compile_s
        row["B/particle"] = drivers[0].state_bytes / n
        row["min B/p"] = min_bytes_per_particle(system, theta, est)
        if prob == "mlp_lr_schedule":
            row["%matmul"] = 100 * row["ours"] * 100 * MLP_FLOPS_PER_EXAMPLE / 1e9 / gflops_now
            row["matmul GF/s"] = gflops_now
        table.append(row)
        print(_fmt_row(row), flush=True)
        del drivers
    check = None
    if use_evosax and not args.no_check:
        check = gradient_check(n=16, episodes=10) if args.tiny else gradient_check()
        # the gradient check's problem (`gradient_check`): linear-quadratic, K=5, T=20, d=4, sigma=0.1
        check_fields = dict(
            problem="linear_quadratic", estimator="pes", num_particles=check["n"], trunc_len=5, horizon=20,
            theta_dim=4, sigma=0.1,
        )
        for name in ("ours", "evosax"):
            for metric, value in check[name].items():
                records.append(csv_row("check", metric, value, driver=name, **check_fields))
        z = check["ours_minus_evosax_max_abs_z"]
        records.append(csv_row("check", "max_abs_z", z, driver="ours-evosax", **check_fields))
    wall = time.perf_counter() - t_start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    records.append(csv_row("run", "peak_rss_bytes", float(peak_rss), devices=ndev))
    with open(out_dir / "bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(records)
    print()
    print(markdown_table(table, machine, gflops))
    if check is not None:
        print()
        print(
            f"Gradient check (linear-quadratic, D=4, T=20, K=5, sigma=0.1, N={check['n']}, "
            f"{check['episodes']} episodes of T steps each):"
        )
        for name in ("ours", "evosax"):
            c = check[name]
            print(
                f"  {name:7s} max |z| vs exact = {c['max_abs_z_vs_exact']:.2f}, "
                f"relative error of mean = {c['rel_error_of_mean']:.3f} "
                f"(relative s.e. {c['mean_rel_se']:.3f})"
            )
        print(f"  ours - evosax: max |z| = {check['ours_minus_evosax_max_abs_z']:.2f}  (|z| < 4 = agree)")
    print(f"\nwall {wall:.0f} s, peak RSS {peak_rss / 2**30:.2f} GiB; csv: {out_dir / 'bench.csv'}")
    return records


def _fmt_row(row):
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def markdown_table(table, machine, gflops):
    """Particle-steps/s per driver (millions), ratios ours/theirs, compile, memory."""
    head = f"Machine: {machine}."
    if not math.isnan(gflops):
        head += f" Large matmul: {gflops:.0f} GFLOP/s."
    cols = [
        "part", "est", "N", "K", "θ dim", "ours M p-steps/s", "ours ms/step", "ours sharded",
        "evosax-scan", "evosax-loop", "ours/scan", "ours/loop", "compile s", "bytes/particle (min)",
        "% matmul",
    ]  # fmt: skip
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def m(row, key):
        return f"{row[key] / 1e6:.3g}" if key and key in row else "–"

    for r in table:
        sharded = next((k for k in r if k.startswith("ours-") and not k.endswith("_ms")), None)
        cells = [
            r["part"], r["est"], r["N"], r["K"], r["D"], m(r, "ours"), f"{r['ours_ms']:.3g}",
            m(r, sharded), m(r, "evosax-scan"), m(r, "evosax-loop"),
            f"{r['/scan']:.2f}×" if "/scan" in r else "–",
            f"{r['/loop']:.2f}×" if "/loop" in r else "–",
            f"{r['compile_s']:.2f}", f"{r['B/particle']:.4g} ({r['min B/p']:.4g})",
            f"{r['%matmul']:.0f}" if "%matmul" in r else "–",
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
