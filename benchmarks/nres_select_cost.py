"""Where NRES's extra cost per step on Lorenz comes from (figure 10 settings, step-unlocked pairs).

    python benchmarks/nres_select_cost.py [--rounds 7]

NRES starts each episode with a new perturbation, so in a truncation where some pair's episode
ends (every truncation, with step-unlocked pairs) the unroll selects, at every step, between the
old and the new perturbed parameters.  This times PES, NRES and a cost probe -- NRES with that
select removed (``eps_after`` dropped: a biased estimator, timed only) -- side by side in one
process (`experiments.estimator_measurements.interleaved_timing`).  Prints one line per entry.
"""

from __future__ import annotations

import argparse

import jax
import optax

from experiments import estimator_measurements
from pes import estimators, outer, tasks
from pes.estimators import particles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50, help="outer steps per timed call")
    args = parser.parse_args()
    task = tasks.make("lorenz", horizon=2000)
    opt = optax.sgd(2e-4)
    unroll = particles.perturbed_unroll

    def without_select(spec, theta, groups, shared, data_key):  # the probe drops eps_after
        return unroll(spec, theta, groups._replace(eps_after=None), shared, data_key)

    entries = {}
    probes = (("pes", "pes", None), ("nres", "nres", None), ("nres-no-select", "nres", without_select))
    for label, name, patch in probes:
        est = estimators.make(name, task.system, trunc_len=100, sigma=0.04, num_particles=400, stagger=True)
        init = jax.jit(lambda est=est: outer.init_state(jax.random.key(0), task.theta_init, est, opt))
        chunk = outer.make_chunk(est, opt, log_every=args.steps, num_logs=1)
        particles.perturbed_unroll = patch or unroll
        try:  # compile while the probe's unroll is in place; later calls reuse the compiled code
            jax.block_until_ready(chunk(jax.block_until_ready(init())))
        finally:
            particles.perturbed_unroll = unroll
        entries[label] = (init, chunk)
    print(f"load before: {estimator_measurements.load_average()}")
    timed = estimator_measurements.interleaved_timing(
        entries, rounds=args.rounds, steps_per_call=args.steps, log=lambda m: None
    )
    for label, t in timed.items():
        print(f"{label}: {t.s_per_step * 1e3:.3f} ms per outer step (spread {t.spread:.0%})")
    print(f"load after: {estimator_measurements.load_average()}")


if __name__ == "__main__":
    main()
