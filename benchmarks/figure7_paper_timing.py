"""Time per outer iteration of Figure 7's paper profile (CIFAR-10 8x8 colour sizes).

python benchmarks/figure7_paper_timing.py [--data-dir DIR] [--synthetic] [--iters 200] [--seeds 5]
                                      [--out result.json]

Builds the `lopt_image_mlp` task with the paper profile's sizes (8x8 colour = 192 inputs,
MLP [32], batch 128, T = 1000), PES and truncated ES with K = 10, 256 particles, sigma 0.01,
Adam, and times compiled blocks of outer iterations (estimate + Adam update, no evaluation)
and one evaluation (8 fresh 1000-step inner runs).  ``--synthetic`` writes a random-pixel
``cifar10.npz`` of CIFAR-10's shapes first (timing does not depend on pixel values; for
machines without CIFAR-10).  ``--seeds R`` (R > 1) also times R learned-optimizer
initialisations meta-trained by PES in one compiled call (`pes.outer.make_batched_chunk`)
against one run.  Pure `pes` (no Hydra), so it runs wherever jax/flax/optax do.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import optax

ROOT = Path(__file__).resolve().parent.parent
import sys  # noqa: E402

sys.path.insert(0, str(ROOT))
from pes import estimators, outer, tasks  # noqa: E402


def synthetic_cifar(directory: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        directory / "cifar10.npz",
        x_train=rng.integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, 50000).astype(np.uint8),
        x_test=rng.integers(0, 256, (10000, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, 10000).astype(np.uint8),
    )


def batched_seeds(task, args) -> dict:
    """ms per outer iteration of R PES runs (different LOpt inits) in one vmapped call vs one."""
    from pes import lopt

    est = estimators.make("pes", task.system, trunc_len=10, sigma=0.01, num_particles=args.particles)
    opt = optax.adam(2e-3)
    init = lopt.mlp_lopt().init_theta
    inits = [init(jax.random.key(s)) for s in range(args.seeds)]
    thetas = jax.tree.map(lambda *x: jax.numpy.stack(x), *inits)
    keys = jax.random.split(jax.random.key(0), args.seeds)
    out = {"seeds": args.seeds}
    for label, states, chunk in (
        ("one_run", outer.init_state(keys[0], task.theta_init, est, opt), outer.make_chunk),
        ("batched", outer.init_states(keys, thetas, est, opt), outer.make_batched_chunk),
    ):
        run = chunk(est, opt, log_every=args.iters, num_logs=1)
        jax.block_until_ready(run(states))  # compile + warm up
        t0 = time.perf_counter()
        jax.block_until_ready(run(states))
        out[f"{label}_ms_per_outer_iteration"] = 1e3 * (time.perf_counter() - t0) / args.iters
    out["batched_ms_per_seed_iteration"] = out["batched_ms_per_outer_iteration"] / args.seeds
    one = out["one_run_ms_per_outer_iteration"]
    out["speedup_vs_sequential"] = one / out["batched_ms_per_seed_iteration"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--particles", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=1, help="also time this many LOpt inits batched")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    data_dir = args.data_dir
    if args.synthetic:
        data_dir = tempfile.mkdtemp()
        synthetic_cifar(Path(data_dir))
    t0 = time.perf_counter()
    task = tasks.make(
        "lopt_image_mlp",
        dataset="cifar10",
        data_source="npz" if args.synthetic else "auto",
        data_dir=data_dir,
        num_eval_runs=8,
    )
    report = {
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "platform": platform.platform(),
        "synthetic_data": bool(args.synthetic),
        "num_features": task.metadata["num_features"],
        "particles": args.particles,
        "trunc_len": 10,
        "horizon": 1000,
        "task_build_s": time.perf_counter() - t0,
    }
    for name, lr in (("pes", 2e-3), ("es", 3e-3)):
        est = estimators.make(name, task.system, trunc_len=10, sigma=0.01, num_particles=args.particles)
        opt = optax.adam(lr)
        state = outer.init_state(jax.random.key(0), task.theta_init, est, opt)
        chunk = outer.make_chunk(est, opt, log_every=args.iters, num_logs=1)
        t0 = time.perf_counter()
        state, m = chunk(state)
        jax.block_until_ready(m)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        state, m = chunk(state)
        jax.block_until_ready(m)
        steady = time.perf_counter() - t0
        report[name] = {
            "first_block_s_incl_compile": first,
            "ms_per_outer_iteration": 1e3 * steady / args.iters,
            "loss": float(m["loss"][0]),
            "inner_steps_per_iteration": est.cost_per_estimate,
        }
        print(name, report[name], flush=True)
    if args.seeds > 1:
        report["batched_seeds"] = batched_seeds(task, args)
        print("batched", report["batched_seeds"], flush=True)
    ev = jax.jit(task.evaluate)
    jax.block_until_ready(ev(task.theta_init, jax.random.key(0)))
    t0 = time.perf_counter()
    out = jax.block_until_ready(ev(task.theta_init, jax.random.key(0)))
    report["evaluate_s"] = time.perf_counter() - t0
    report["meta_loss_eval_init"] = float(out["meta_loss_eval"])
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
