"""Meta-gradient statistics on the learned-optimizer task (figure 7): why meta-training spikes.

    PYTHONPATH=. python benchmarks/lopt_pes_gradient_stats.py fixed [--steps 1000] [--seed 0]
        [--theta-from RUN_DIR] [--estimator pes] [--out DIR]
    PYTHONPATH=. python benchmarks/lopt_pes_gradient_stats.py train [--run pes-s0] [--steps 1500]
        [--compare FIGURE_CSV] [--out DIR] [override ...]

Two diagnostics, both on figure 7's quick profile (K = 10, sigma 0.01,
8 antithetic pairs, T = 1000, Fashion-MNIST 8x8):

``fixed`` holds theta fixed (the initial learned optimizer of ``--seed``, or the theta of a
run's ``checkpoint.npz`` with ``--theta-from``) and runs ``--steps`` truncations with
lockstep particles (``stagger=false``: every pair at the same step of the same inner
problem) and step-unlocked ones (``stagger=true``: each pair an independent inner problem
at its own random phase).  With theta fixed both are unbiased for the same smoothed
gradient, so the differences are variance.  Reported per setting: mean squared norm of one
estimate, its total variance tr Cov, the squared norm of the mean, how concentrated the
second moment is (share of sum |g|^2 in the top 1% of truncations; max / median), for
lockstep the same by phase of the episode (10 bins of 10 truncations), and the effect of
clipping every element at ``--clip`` (in units of the mean per-step meta-loss of a
truncation, learned_optimization's scale; the estimate's own scale is K/T times that):
fraction of elements clipped, cosine between clipped and raw means, cosine between the two
halves' means (direction agreement) with and without clipping, and Adam update sizes when
Adam (figure 7's betas) is fed the sequence of estimates, with and without clipping.

``train`` replays one run of figure 7 (config composed exactly as ``experiments.reproduce``
does, plus any overrides) with its own compiled loop that records, for every outer
iteration, the estimate's squared norm and largest element, the phase of the first pair,
the fraction of elements above the clip and the norm of the Adam update, and evaluates
every ``train.log_every`` iterations.  ``--compare`` checks the evaluations against a
figure's merged ``metrics.csv`` (same machine: the trajectory is reproduced when they agree).
It prints, per evaluation interval, the largest update relative to the run's median update
next to the change of the evaluation meta-loss, which shows whether spikes follow outlier
estimates.

Writes CSVs (one row per truncation / outer iteration) and a ``summary.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import pes  # noqa: E402
from pes import outer, tasks  # noqa: E402

TRUNC_LEN, SIGMA, PARTICLES = 10, 0.01, 16
ADAM_BETAS = (0.9, 0.999, 1e-8)


# ----------------------------------------------------------------------------- statistics


def cosine(a, b) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def adam_update_norms(grads: np.ndarray, clip: float | None) -> np.ndarray:
    """Norms of the (unit learning rate) Adam updates for a sequence of gradients (steps, P)."""
    b1, b2, eps = ADAM_BETAS
    m = np.zeros(grads.shape[1])
    v = np.zeros(grads.shape[1])
    out = np.empty(len(grads))
    for i, g in enumerate(grads):
        if clip is not None:
            g = np.clip(g, -clip, clip)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = m / (1 - b1 ** (i + 1)), v / (1 - b2 ** (i + 1))
        out[i] = np.linalg.norm(mh / (np.sqrt(vh) + eps))
    return out


def moment_stats(grads: np.ndarray) -> dict:
    sq = (grads**2).sum(axis=1)
    mean = grads.mean(axis=0)
    top = max(1, len(sq) // 100)
    half = len(grads) // 2
    return {
        "mean_sq_norm": float(sq.mean()),
        "total_variance": float(((grads - mean) ** 2).sum(axis=1).mean()),
        "sq_norm_of_mean": float(mean @ mean),
        "top1pct_share_of_sq_norm": float(np.sort(sq)[-top:].sum() / sq.sum()) if sq.sum() > 0 else 0.0,
        "max_over_median_sq_norm": float(sq.max() / np.median(sq)) if np.median(sq) > 0 else float("inf"),
        "cos_halves": cosine(grads[:half].mean(0), grads[half:].mean(0)),
    }


def clip_stats(grads: np.ndarray, clip: float) -> dict:
    clipped = np.clip(grads, -clip, clip)
    half = len(grads) // 2
    raw_u, clip_u = adam_update_norms(grads, None), adam_update_norms(grads, clip)
    skip = min(100, len(grads) // 10)  # Adam's bias correction makes the first steps atypical

    def spread(u):
        u = u[skip:]
        return {"median": float(np.median(u)), "p99": float(np.percentile(u, 99)), "max": float(u.max())}

    return {
        "clip": clip,
        "frac_elements_clipped": float(np.mean(np.abs(grads) > clip)),
        "cos_mean_clipped_vs_raw": cosine(clipped.mean(0), grads.mean(0)),
        "cos_halves_clipped": cosine(clipped[:half].mean(0), clipped[half:].mean(0)),
        "adam_update_norm_raw": spread(raw_u),
        "adam_update_norm_clipped": spread(clip_u),
    }


# ----------------------------------------------------------------------------- fixed theta


def fixed_estimates(task, theta, estimator: str, stagger: bool, steps: int, seed: int):
    """(steps, P) estimates, (steps,) losses and (steps,) phase of pair 0 at a fixed theta."""
    est = pes.make(
        estimator, task.system, trunc_len=TRUNC_LEN, sigma=SIGMA, num_particles=PARTICLES, stagger=stagger
    )

    def body(state, key):
        t = jnp.reshape(state.t, (-1,))[0]
        grad, state, aux = est.estimate(key, theta, state)
        return state, (jax.flatten_util.ravel_pytree(grad)[0], aux["loss"], t)

    @jax.jit
    def run(key):
        init_key, step_key = jax.random.split(key)
        return jax.lax.scan(body, est.init(init_key, theta), jax.random.split(step_key, steps))[1]

    grads, losses, t = run(jax.random.key(100 + seed))
    return np.asarray(grads, np.float64), np.asarray(losses, np.float64), np.asarray(t)


def theta_from_run(run_dir: Path, task):
    """theta of a run directory's ``checkpoint.npz`` (the TrainState's leading leaves)."""
    path = run_dir / "checkpoint.npz"
    if not path.exists():
        raise SystemExit(f"{path} is missing; allowed: a run directory of experiments.run with a checkpoint")
    leaves, treedef = jax.tree.flatten(task.theta_init)
    with np.load(path) as data:
        meta = json.loads(bytes(data["__meta__"]).decode())
        theta = [jnp.asarray(data[f"leaf{i}"], dtype=x.dtype) for i, x in enumerate(leaves)]
    for x, ref in zip(theta, leaves):
        if x.shape != ref.shape:
            raise SystemExit(f"{path} does not hold this task's theta (shape {x.shape} vs {ref.shape})")
    return jax.tree.unflatten(treedef, theta), int(meta["outer_step"])


def fixed(args) -> dict:
    task = tasks.make("lopt_image_mlp", dataset=args.dataset, init_seed=args.seed)
    theta, where = task.theta_init, f"initial LOpt of seed {args.seed}"
    if args.theta_from:
        theta, step = theta_from_run(Path(args.theta_from), task)
        where = f"{args.theta_from} at outer step {step}"
    clip = args.clip * TRUNC_LEN / task.system.horizon
    summary = {"mode": "fixed", "theta": where, "steps": args.steps, "estimator": args.estimator,
               "clip_mean_scale": args.clip, "clip_estimate_scale": clip, "settings": {}}
    rows, means = [], {}
    for stagger in (False, True):
        start = time.perf_counter()
        grads, losses, t = fixed_estimates(task, theta, args.estimator, stagger, args.steps, args.seed)
        wall = time.perf_counter() - start
        sq = (grads**2).sum(axis=1)
        means[stagger] = grads.mean(axis=0)
        stats = dict(moment_stats(grads), wall_s=wall, clipping=clip_stats(grads, clip))
        if not stagger:
            phase = (t // TRUNC_LEN) % (task.system.horizon // TRUNC_LEN)
            later = np.arange(args.steps) >= task.system.horizon // TRUNC_LEN  # skip the first episode
            bins = {}
            for lo in range(0, 100, 10):
                sel = (phase >= lo) & (phase < lo + 10) & later
                g = grads[sel]
                bins[f"{lo}-{lo + 9}"] = {
                    "mean_sq_norm": float(sq[sel].mean()),
                    "total_variance": float(((g - g.mean(0)) ** 2).sum(1).mean()),
                    "max_sq_norm": float(sq[sel].max()),
                    "share_of_sq_norm": float(sq[sel].sum() / sq[later].sum()),
                }
            stats["by_phase"] = bins
        summary["settings"]["stagger" if stagger else "lockstep"] = stats
        rows += [
            dict(stagger=stagger, truncation=i, phase_t=int(tt), grad_sq_norm=s, grad_max_abs=float(a),
                 loss=l)
            for i, (tt, s, a, l) in enumerate(zip(t, sq, np.abs(grads).max(1), losses))
        ]
        _print_setting("stagger" if stagger else "lockstep", stats)
    summary["cos_mean_lockstep_vs_stagger"] = cosine(means[False], means[True])
    print(f"cos(mean lockstep, mean stagger) = {summary['cos_mean_lockstep_vs_stagger']:.3f}")
    return summary, pd.DataFrame(rows)


def _print_setting(name, s):
    c = s["clipping"]
    print(
        f"{name}: {s['wall_s']:.0f} s  E|g|^2 {s['mean_sq_norm']:.3g}  trCov {s['total_variance']:.3g}  "
        f"|E g|^2 {s['sq_norm_of_mean']:.3g}  top-1% share {s['top1pct_share_of_sq_norm']:.2f}  "
        f"max/median {s['max_over_median_sq_norm']:.3g}  cos(halves) {s['cos_halves']:.3f}"
    )
    print(
        f"  clip {c['clip']:.3g}: {100 * c['frac_elements_clipped']:.0f}% of elements clipped, "
        f"cos(clipped mean, raw mean) {c['cos_mean_clipped_vs_raw']:.3f}, cos(halves) clipped "
        f"{c['cos_halves_clipped']:.3f}; Adam |update| median/p99/max raw "
        f"{c['adam_update_norm_raw']['median']:.3g}/{c['adam_update_norm_raw']['p99']:.3g}/"
        f"{c['adam_update_norm_raw']['max']:.3g}, clipped {c['adam_update_norm_clipped']['median']:.3g}/"
        f"{c['adam_update_norm_clipped']['p99']:.3g}/{c['adam_update_norm_clipped']['max']:.3g}"
    )
    if "by_phase" in s:
        print("  by phase (truncations into the episode): " + ", ".join(
            f"{k}: {v['mean_sq_norm']:.3g}" for k, v in s["by_phase"].items()))


# ----------------------------------------------------------------------------- training replay


def train(args) -> dict:
    from experiments import config, figures

    fig = figures.load("figure7")
    runs = {r.id: r for r in figures.runs(fig, args.profile)}
    if args.run not in runs:
        raise SystemExit(f"--run={args.run} is unknown; allowed: {', '.join(runs)}")
    cfg = config.compose(figures.run_overrides(fig, runs[args.run], args.profile, args.overrides))
    built = config.build(cfg)
    steps = args.steps or built.num_steps
    every = built.log_every
    if steps % every:
        raise SystemExit(f"--steps={steps} is invalid; allowed: a multiple of train.log_every={every}")
    est, opt, task = built.estimator, built.optimizer, built.task
    clip = args.clip * est.steps_per_estimate / task.system.horizon

    def step(state):  # outer.make_step plus diagnostics
        key = jax.random.fold_in(state.key, state.step)
        t = jnp.reshape(state.est_state.t, (-1,))[0]
        grad, est_state, aux = est.estimate(key, state.theta, state.est_state)
        updates, opt_state = opt.update(grad, state.opt_state, state.theta)
        theta = optax.apply_updates(state.theta, updates)
        g = jax.flatten_util.ravel_pytree(grad)[0]
        u = jax.flatten_util.ravel_pytree(updates)[0]
        rec = {
            "phase_t": t,
            "grad_sq_norm": g @ g,
            "grad_max_abs": jnp.max(jnp.abs(g)),
            "frac_above_clip": jnp.mean((jnp.abs(g) > clip).astype(jnp.float32)),
            "update_norm": jnp.sqrt(u @ u),
            "loss": aux["loss"],
        }
        return outer.TrainState(theta, opt_state, est_state, state.step + 1, state.key), (rec, g)

    @jax.jit
    def block(state):
        return jax.lax.scan(lambda s, _: step(s), state, None, length=every)

    evaluate = jax.jit(task.evaluate)
    state = outer.init_state(jax.random.key(int(cfg.seed)), task.theta_init, est, opt)
    eval_key = jax.random.fold_in(jax.random.fold_in(state.key, state.step), 1)
    evals = [dict(outer_step=0, **{k: float(v) for k, v in evaluate(state.theta, eval_key).items()})]
    recs, grads = [], []
    start = time.perf_counter()
    while int(state.step) < steps:
        state, (rec, g) = block(state)
        recs.append({k: np.asarray(v) for k, v in rec.items()})
        grads.append(np.asarray(g))
        eval_key = jax.random.fold_in(jax.random.fold_in(state.key, state.step), 1)
        ev = {k: float(v) for k, v in evaluate(state.theta, eval_key).items()}
        evals.append(dict(outer_step=int(state.step), **ev))
        print(f"  {int(state.step)}: meta_loss_eval {ev['meta_loss_eval']:.4f}", flush=True)
    wall = time.perf_counter() - start
    per_step = pd.DataFrame({k: np.concatenate([r[k] for r in recs]) for k in recs[0]})
    per_step.insert(0, "outer_step", np.arange(1, len(per_step) + 1))
    evals = pd.DataFrame(evals)
    grads = np.concatenate(grads).astype(np.float64)

    median_u = float(per_step.update_norm.median())
    median_g = float(per_step.grad_sq_norm.median())
    intervals = []
    for i in range(1, len(evals)):
        lo, hi = evals.outer_step[i - 1], evals.outer_step[i]
        window = per_step[(per_step.outer_step > lo) & (per_step.outer_step <= hi)]
        intervals.append({
            "to_step": int(hi),
            "meta_loss_eval": float(evals.meta_loss_eval[i]),
            "delta_eval": float(evals.meta_loss_eval[i] - evals.meta_loss_eval[i - 1]),
            "max_grad_sq_over_median": float(window.grad_sq_norm.max() / median_g) if median_g > 0 else None,
            "max_update_over_median": float(window.update_norm.max() / median_u),
            "sum_update_norm": float(window.update_norm.sum()),
        })
    summary = {
        "mode": "train", "run": args.run, "profile": args.profile, "overrides": args.overrides,
        "steps": steps, "wall_s": wall, "clip_mean_scale": args.clip, "clip_estimate_scale": clip,
        "moments": moment_stats(grads), "clipping": clip_stats(grads, clip), "intervals": intervals,
        "corr_delta_eval_vs_max_update": float(np.corrcoef(
            [r["delta_eval"] for r in intervals], [r["max_update_over_median"] for r in intervals])[0, 1]),
    }
    if not cfg.estimator.get("stagger", False):
        phase = (per_step.phase_t.to_numpy() // est.steps_per_estimate) % (
            task.system.horizon // est.steps_per_estimate)
        summary["by_phase_quarter"] = {
            f"{lo}-{lo + 24}": {
                "mean_grad_sq_norm": float(per_step.grad_sq_norm[(phase >= lo) & (phase < lo + 25)].mean()),
                "mean_update_norm": float(per_step.update_norm[(phase >= lo) & (phase < lo + 25)].mean()),
            }
            for lo in (0, 25, 50, 75)
        }
    if args.compare:
        ref = pd.read_csv(args.compare)
        ref = ref[(ref.run_id == args.run) & (ref.metric == "meta_loss_eval")].sort_values("outer_step")
        both = evals.merge(ref[["outer_step", "value"]], on="outer_step")
        summary["compare_max_abs_diff"] = float((both.meta_loss_eval - both.value).abs().max())
        summary["compare_points"] = len(both)
        print(f"vs {args.compare}: max |diff| of meta_loss_eval over {len(both)} points "
              f"{summary['compare_max_abs_diff']:.3g}")
    print(f"{args.run} {' '.join(args.overrides)}: {wall:.0f} s; "
          f"corr(delta eval, max update in interval) {summary['corr_delta_eval_vs_max_update']:.2f}")
    for r in intervals:
        print(f"  ..{r['to_step']}: eval {r['meta_loss_eval']:.3f} ({r['delta_eval']:+.3f})  "
              f"max |g|^2/median {r['max_grad_sq_over_median']:.3g}  "
              f"max |u|/median {r['max_update_over_median']:.2f}")
    return summary, per_step, evals, grads


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("fixed", "train", "-h", "--help"):
        argv = ["fixed", *argv]  # no mode given: fixed
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fixed", help="estimates at a fixed theta, lockstep vs step-unlocked")
    f.add_argument("--steps", type=int, default=1000, help="truncations (a multiple of 100, >= 200)")
    f.add_argument("--seed", type=int, default=0, help="learned-optimizer init seed")
    f.add_argument("--theta-from", default=None, help="a run directory whose checkpoint gives theta")
    f.add_argument("--estimator", default="pes", choices=["pes", "es"])
    f.add_argument("--dataset", default="fashion_mnist")
    t = sub.add_parser("train", help="replay one figure-7 run with per-iteration diagnostics")
    t.add_argument("--run", default="pes-s0", help="a run id of configs/figure/figure7.yaml")
    t.add_argument("--profile", default="quick")
    t.add_argument("--steps", type=int, default=None, help="outer iterations (default: the profile's)")
    t.add_argument("--compare", default=None, help="a figure-7 metrics.csv to check the evaluations against")
    t.add_argument(
        "overrides", nargs="*", help="extra config overrides, e.g. estimator.particles=step_unlocked"
    )
    for p in (f, t):
        p.add_argument("--clip", type=float, default=3.0,
                       help="clip value in units of the mean per-step meta-loss "
                       "(learned_optimization's scale)")
        p.add_argument("--out", default="results/bench/lopt_gradient_stats")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.mode == "fixed":
        if args.steps < 200 or args.steps % 100:
            parser.error(f"--steps={args.steps} is invalid; allowed: a multiple of 100, at least 200")
        summary, rows = fixed(args)
        rows.to_csv(out / "gradient_stats.csv", index=False)
    else:
        summary, per_step, evals, grads = train(args)
        per_step.to_csv(out / "train_steps.csv", index=False)
        evals.to_csv(out / "train_evals.csv", index=False)
        np.save(out / "train_grads.npy", grads.astype(np.float32))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
