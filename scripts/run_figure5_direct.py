"""Figure-5 runs without Hydra (for machines that only have the `pes` dependencies).

    python scripts/run_figure5_direct.py --runs es-k10 pes-k10 --num-outer-steps 500 --out res.json

Builds the paper-profile task and estimators directly (`pes.tasks.make`,
`pes.estimators.make`, `pes.outer.run`), then evaluates every run's final theta with
``--eval-runs`` fresh full-length trainings (the same common keys for every theta).
Writes one JSON with the trajectories (theta every ``--log-every`` steps), the final
evaluations and wall times.  The configured route is `experiments.reproduce`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from pes import estimators, outer, tasks  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", default=["es-k10", "pes-k10"], help="ids <es|pes>-k<K>")
    p.add_argument("--dataset", default="mnist_or_fashion")
    p.add_argument("--objective", default="train_sum_loss")
    p.add_argument("--horizon", type=int, default=5000)
    p.add_argument("--num-particles", type=int, default=1000)
    p.add_argument("--sigma", type=float, default=0.1)
    p.add_argument("--outer-lr", type=float, default=1e-2)
    p.add_argument("--num-outer-steps", type=int, default=5000)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-runs", type=int, default=10)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    task = tasks.make(
        "mnist_lr_schedule", dataset=args.dataset, objective=args.objective, horizon=args.horizon
    )
    report = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "dataset": task.dataset.name,
        "data_origin": task.dataset.origin,
        "devices": [str(d) for d in jax.devices()],
        "runs": {},
    }
    full_run = jax.jit(jax.vmap(jax.vmap(task.full_run, in_axes=(None, 0)), in_axes=(0, None)))
    eval_keys = jax.random.split(jax.random.key(12345), args.eval_runs)
    finals = {"init": np.asarray(task.theta_init)}
    for rid in args.runs:
        name, k = rid.split("-k")
        est = estimators.make(
            name, task.system, trunc_len=int(k), sigma=args.sigma, num_particles=args.num_particles
        )
        t = time.perf_counter()
        state, metrics = outer.run(
            jax.random.key(args.seed),
            task.theta_init,
            est,
            optax.adam(args.outer_lr),
            num_steps=args.num_outer_steps,
            log_every=args.log_every,
        )
        jax.block_until_ready(state)
        wall = time.perf_counter() - t
        finals[rid] = np.asarray(state.theta)
        report["runs"][rid] = {
            "wall_time_s": wall,
            "theta_path_log10": (
                np.stack([metrics["theta/0"], metrics["theta/1"]], -1) / np.log(10)
            ).tolist(),
            "final_theta_log10": (finals[rid] / np.log(10)).tolist(),
        }
        print(
            rid,
            f"{wall:.1f} s",
            "final log10 (init LR, decay):",
            np.round(finals[rid] / np.log(10), 3),
            flush=True,
        )
        args.out.write_text(json.dumps(report, indent=1))
    names = list(finals)
    t = time.perf_counter()
    out = jax.device_get(full_run(np.stack([finals[n] for n in names]).astype(np.float32), eval_keys))
    report["eval_wall_time_s"] = time.perf_counter() - t
    for i, n in enumerate(names):
        row = {
            m: [float(np.mean(v[i])), float(np.std(v[i]) / np.sqrt(args.eval_runs))] for m, v in out.items()
        }
        report.setdefault("evaluation", {})[n] = row
        print(n, {m: round(v[0], 4) for m, v in row.items()}, flush=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
