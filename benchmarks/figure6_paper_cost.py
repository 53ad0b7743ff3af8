"""Cost of figure 6's paper profile, measured on this machine and extrapolated.

    PYTHONPATH=. python benchmarks/figure6_paper_cost.py [--iters 20] [--out cost.json]

Builds the `mlp_hparams` task at the paper's sizes (Fashion-MNIST 784 inputs, MLP 5 x 100,
batch 100, T = 1000, 29 hyperparameters) and times, after one compile call each:

* one outer iteration of PES and of truncated ES (K = 10, N = 10, sigma 0.3, Adam 1e-2),
  averaged over a compiled block of ``--iters`` iterations (evaluation excluded);
* one evaluation of a configuration: ``--runs`` fresh full T-step trainings, vmapped over a
  chunk of ``--chunk`` configurations (what random search and the ES/PES evaluation do;
  the paper uses 10 runs per evaluation).

It prints a JSON record (machine, load, wall times) with the paper profile extrapolated
from these unit costs: per seed 50,000 outer iterations with an evaluation every 100, and
random search over 3,000 configurations (the plotted range, 3e6 inner steps at the paper's
convention) or 10,000 (the official count).  Extrapolations are labelled as such; pure
`pes` (no Hydra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import pes
from pes import outer, search, tasks

PAPER = dict(iters=50_000, eval_every=100, eval_runs=10, seeds=4, configs=(3_000, 10_000))


def timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile + warm-up
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20, help="outer iterations per timed block")
    parser.add_argument("--runs", type=int, default=2, help="training runs per timed configuration")
    parser.add_argument("--chunk", type=int, default=2, help="configurations per compiled call")
    parser.add_argument("--horizon", type=int, default=1000)
    parser.add_argument("--hidden", default="100,100,100,100,100", help="hidden widths (paper 5 x 100)")
    parser.add_argument("--downsample", type=int, default=1, help="image pooling factor (paper 1)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    wall = time.perf_counter()
    load_before = os.getloadavg()
    hidden = [int(h) for h in args.hidden.split(",")]
    task = tasks.make(
        "mlp_hparams",
        horizon=args.horizon,
        hidden=hidden,
        downsample=args.downsample,
        num_eval_runs=args.runs,
        init_seed=3,
    )
    record = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "load_before": load_before,
        "horizon": args.horizon,
        "hidden": hidden,
        "downsample": args.downsample,
    }
    opt = optax.adam(1e-2)
    for name in ("pes", "es"):
        est = pes.estimators.make(name, task.system, trunc_len=10, sigma=0.3, num_particles=10)
        state = outer.init_state(jax.random.key(3), task.theta_init, est, opt)
        chunk = outer.make_chunk(est, opt, log_every=args.iters, num_logs=1)
        record[f"{name}_s_per_outer_iteration"] = timed(lambda s, c=chunk: c(s)[0].theta, state) / args.iters

    low, high = task.search_space
    configs = search.uniform_configs(jax.random.key(0), low, high, args.chunk)
    score = search.mean_objective(task.system, search.run_keys(jax.random.key(1), args.runs))
    run = jax.jit(search.score_configs, static_argnums=(0, 2))
    per_config = timed(run, score, configs, args.chunk) / args.chunk
    # one configuration = runs x T inner steps: per inner step, then at the paper's 10 runs
    per_step = per_config / (args.runs * args.horizon)
    record["s_per_config_step"] = per_step
    record["s_per_config_paper"] = per_step * PAPER["eval_runs"] * 1000  # 10 runs x T = 1000

    evals = PAPER["iters"] // PAPER["eval_every"]
    ext = {}
    for name in ("pes", "es"):
        train = record[f"{name}_s_per_outer_iteration"] * PAPER["iters"]
        ev = evals * record["s_per_config_paper"]
        ext[f"{name}_per_seed_s"] = train + ev
    for n in PAPER["configs"]:
        ext[f"random_search_{n}_configs_per_seed_s"] = n * record["s_per_config_paper"]
    ext["all_seeds_3000_configs_s"] = PAPER["seeds"] * (
        ext["pes_per_seed_s"] + ext["es_per_seed_s"] + ext["random_search_3000_configs_per_seed_s"]
    )
    record["extrapolated_paper_profile"] = ext
    record["note"] = (
        "extrapolated from unit costs measured here (not a run of the paper profile): 4 seeds x "
        "(PES + ES: 50,000 outer iterations + 500 evaluations of 10 x 1000 steps) + random search"
    )
    record["load_after"] = os.getloadavg()
    record["wall_time_s"] = time.perf_counter() - wall
    text = json.dumps(record, indent=2, default=float)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    main()
