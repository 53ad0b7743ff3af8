"""Cost per outer iteration of figure 10's estimators at the NRES paper's settings (CPU).

    python benchmarks/estimator_comparison_cost.py [--tasks lorenz,lopt,swimmer] [--rounds 3]

For each task, PES, NRES, GPES-K and truncated ES (step-unlocked pairs, the paper's N, sigma, W)
are compiled and timed side by side in one process (`experiments.estimator_measurements.
interleaved_timing`), and the seconds per outer iteration are extrapolated to the paper's
iteration counts.  Prints one line per estimator and a table; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
import optax

from experiments import estimator_measurements
from pes import estimators, outer, tasks

# (task params, W, N particles (ours), sigma, optimizer, paper iterations per estimator).  The
# NRES scripts' SGD rates are for a gradient averaged over the W steps of a truncation; ours sums
# the per-step losses (Lorenz, lopt: each l_t / T; Swimmer: -reward), so alpha * T / W (Lorenz)
# and alpha / W (Swimmer) here.  Adam (lopt) does not see the scale.
PAPER = {
    "lorenz": (
        dict(horizon=2000),
        100,
        400,
        0.04,
        optax.sgd(2e-4),
        {"pes": 10_000, "nres": 5_000, "gpes": 5_000, "es": 5_000},
    ),
    "lopt": (
        dict(
            hidden=[32, 32, 32],
            activation="gelu",
            meta_loss="val_post",
            single_sequence_seed=88,
            horizon=1000,
        ),
        1,
        200,
        0.01,
        optax.adam(3e-4),
        {"pes": 240_000, "nres": 240_000, "gpes": 240_000, "es": 180_000},
    ),
    "swimmer": (dict(), 100, 60, 0.3, optax.sgd(0.01), {"pes": 200, "nres": 200, "gpes": 200, "es": 200}),
}
TASK_NAMES = {"lorenz": "lorenz", "lopt": "lopt_image_mlp", "swimmer": "swimmer"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="lorenz,lopt,swimmer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="outer steps per timed call (0: per task)")
    parser.add_argument(
        "--lockstep",
        action="store_true",
        help="lockstep pairs (no burn-in at init: the same cost per iteration, a much cheaper start)",
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}, load {estimator_measurements.load_average()}"
    )
    lines = []
    for label in args.tasks.split(","):
        params, w, n, sigma, opt, iters = PAPER[label]
        task = tasks.make(TASK_NAMES[label], **params)
        horizon = task.system.horizon
        steps = args.steps or max(1, min(50, 20_000 // (n * w)))
        entries = {}
        for name in ("pes", "nres", "gpes", "es"):
            hp = dict(trunc_len=w, sigma=sigma, num_particles=n, stagger=not args.lockstep)
            if name == "gpes":
                hp["noise_every"] = 4 * w if 4 * w < horizon else w
            est = estimators.make(name, task.system, **hp)
            init = jax.jit(
                lambda est=est, th=task.theta_init, opt=opt: outer.init_state(jax.random.key(0), th, est, opt)
            )
            chunk = outer.make_chunk(est, opt, log_every=steps, num_logs=1)
            entries[name] = (init, chunk)
        timed = estimator_measurements.interleaved_timing(
            entries,
            rounds=args.rounds,
            steps_per_call=steps,
            log=lambda m, label=label: print(f"{label} {m}"),
        )
        for name, t in timed.items():
            hours = (t.init_s + iters[name] * t.s_per_step) / 3600
            lines.append(
                f"| {label} | {name} | {t.s_per_step * 1e3:.2f} | {t.spread:.0%} | {t.init_s:.1f} | "
                f"{iters[name]} | {hours:.2f} |"
            )
    print(f"load after: {estimator_measurements.load_average()}")
    print("| task | estimator | ms / iteration | spread | init s | paper iterations | hours per run |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
