"""Throughput of the MNIST LR-schedule inner problem under PES (a benchmark, not a test).

    python benchmarks/mnist_throughput.py --num-particles 100 --trunc-len 10
    python benchmarks/mnist_throughput.py --num-particles 1000 --trunc-len 10   # accelerator

One PES outer step (N particles x K inner steps + the Adam update) is one compiled call
(`pes.outer.make_chunk` with one step).  Reports the time per outer step, particle-steps
per second and the achieved GFLOP/s as a fraction of a large f32 matmul's GFLOP/s on the
same machine.  FLOPs per particle-step are counted analytically: forward + backward of
the training minibatch (3x the forward's 2*B*sum(in*out)) plus the forward of the
objective minibatch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.bench import matmul_gflops  # noqa: E402
from pes import estimators, outer, tasks  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--estimator", default="pes", choices=["pes", "es"])
    p.add_argument("--num-particles", type=int, default=100)
    p.add_argument("--trunc-len", type=int, default=10)
    p.add_argument("--dataset", default="mnist_or_fashion")
    p.add_argument("--hidden", type=int, nargs="+", default=[100, 100])
    p.add_argument("--downsample", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=5, help="timed outer steps (after one warm-up)")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args()

    task = tasks.make(
        "mnist_lr_schedule",
        dataset=args.dataset,
        hidden=args.hidden,
        downsample=args.downsample,
        batch_size=args.batch_size,
        objective_batch_size=args.batch_size,
    )
    est = estimators.make(
        args.estimator,
        task.system,
        trunc_len=args.trunc_len,
        sigma=0.1,
        num_particles=args.num_particles,
    )
    opt = optax.adam(1e-2)
    state = outer.init_state(jax.random.key(0), task.theta_init, est, opt)
    chunk = outer.make_chunk(est, opt, log_every=1, num_logs=1)
    t = time.perf_counter()
    state, _ = chunk(state)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        state, _ = chunk(state)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t)
    step_s = float(np.median(times))
    widths = [task.metadata["num_features"], *args.hidden, 10]
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    flops_per_particle_step = 2 * macs * args.batch_size * (3 + 1)
    particle_steps = est.cost_per_estimate
    rate = particle_steps / step_s
    achieved = rate * flops_per_particle_step / 1e9
    peak = matmul_gflops(args.matmul_n, 10)
    out = {
        "estimator": args.estimator,
        "num_particles": args.num_particles,
        "trunc_len": args.trunc_len,
        "model": "-".join(map(str, widths)),
        "batch_size": args.batch_size,
        "dataset": task.dataset.name,
        "compile_plus_first_step_s": round(compile_s, 2),
        "outer_step_s_median": round(step_s, 4),
        "outer_step_s_all": [round(x, 4) for x in times],
        "particle_steps_per_s": round(rate, 1),
        "mflop_per_particle_step": round(flops_per_particle_step / 1e6, 2),
        "achieved_gflops": round(achieved, 2),
        f"matmul_{args.matmul_n}_gflops": round(peak, 1),
        "fraction_of_matmul": round(achieved / peak, 3),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
