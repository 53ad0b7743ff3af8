"""PES gradient statistics on the learned-optimizer task, lockstep vs staggered particles.

    PYTHONPATH=. python benchmarks/lopt_pes_gradient_stats.py [--steps 1000] [--seed 0] [--out DIR]

A diagnostic for issue 8 (why staggered PES meta-trained the learned optimizer more slowly
than lockstep PES on the quick profile).  θ is held fixed at the initial learned optimizer of
``--seed`` (no outer updates), and PES (K = 10, σ = 0.01, 8 antithetic pairs: the quick
profile's settings) runs ``--steps`` truncations with ``stagger=False`` and ``stagger=True``.
With θ fixed both estimators are unbiased for the same smoothed gradient, so differences are
variance.  Reported per setting: the mean squared norm of one estimate, per block of 100
truncations (one episode of T = 1000 inner steps) and, for lockstep, by phase of the episode;
the norm of the mean estimate; the cosine between the two settings' means and between the
first and second half of each run (a direct check of how well ``--steps`` estimates pin down
the gradient's direction).  Writes ``DIR/gradient_stats.csv`` (one row per truncation).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.flatten_util
import numpy as np
import pandas as pd

import pes
from pes import tasks


def estimates(task, stagger: bool, steps: int, seed: int):
    """(steps, P) gradient estimates and (steps,) mean truncation losses at the fixed theta."""
    theta = task.theta_init
    est = pes.make("pes", task.system, trunc_len=10, sigma=0.01, num_particles=16, stagger=stagger)

    def body(state, key):
        grad, state, aux = est.estimate(key, theta, state)
        return state, (jax.flatten_util.ravel_pytree(grad)[0], aux["loss"])

    @jax.jit
    def run(key):
        init_key, step_key = jax.random.split(key)
        return jax.lax.scan(body, est.init(init_key, theta), jax.random.split(step_key, steps))[1]

    grads, losses = run(jax.random.key(100 + seed))
    return np.asarray(grads, np.float64), np.asarray(losses, np.float64)


def cosine(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="truncations (a multiple of 100)")
    parser.add_argument("--seed", type=int, default=0, help="learned-optimizer init seed")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--out", default="results/bench/lopt_gradient_stats")
    args = parser.parse_args(argv)
    if args.steps < 200 or args.steps % 100:
        parser.error(f"--steps={args.steps} is invalid; allowed: a multiple of 100, at least 200")
    task = tasks.make("lopt_image_mlp", dataset=args.dataset, init_seed=args.seed)
    rows, means = [], {}
    for stagger in (False, True):
        start = time.perf_counter()
        grads, losses = estimates(task, stagger, args.steps, args.seed)
        sq = (grads**2).sum(axis=1)
        means[stagger] = grads.mean(axis=0)
        half = args.steps // 2
        print(
            f"stagger={stagger}: {time.perf_counter() - start:.0f} s, mean |g|^2 {sq.mean():.3g}, "
            f"|mean g| {np.linalg.norm(means[stagger]):.3g}, cos(first half, second half) "
            f"{cosine(grads[:half].mean(0), grads[half:].mean(0)):.3f}"
        )
        print("  mean |g|^2 per 100 truncations:", " ".join(f"{b:.3g}" for b in sq.reshape(-1, 100).mean(1)))
        if not stagger:
            phase = np.arange(args.steps) % 100
            later = np.arange(args.steps) >= 100
            parts = [
                f"{lo}-{lo + 24}: {sq[(phase >= lo) & (phase < lo + 25) & later].mean():.3g}"
                for lo in (0, 25, 50, 75)
            ]
            print("  by phase of the episode (after the first):", ", ".join(parts))
        rows += [
            dict(seed=args.seed, stagger=stagger, truncation=i, grad_sq_norm=s, loss=l)
            for i, (s, l) in enumerate(zip(sq, losses))
        ]
    print(f"cos(mean lockstep, mean staggered) = {cosine(means[False], means[True]):.3f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "gradient_stats.csv", index=False)
    print(f"wrote {out / 'gradient_stats.csv'}")


if __name__ == "__main__":
    main()
