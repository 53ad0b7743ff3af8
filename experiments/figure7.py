"""Figure 7 (learned optimizer) steps that follow the runs: tuned Adam and inner curves.

Called by ``experiments.reproduce`` through the figure config's ``post:`` entry.  Uses the
figure's ``adam`` section (per-profile overrides under ``quick:``/``paper:``) and the
task's fixed evaluation runs (``task.eval_keys``: the same inner seeds the
runs' ``meta_loss_eval`` uses), and appends rows in the results schema to ``metrics.csv``:

* ``adam-lr<lr>`` (estimator ``adam``): ``meta_loss_eval`` / ``final_loss_eval`` of Adam
  with that learning rate (mean over the evaluation runs), logged at outer step 0;
* ``adam-tuned``: the same for the best learning rate (lowest ``meta_loss_eval``), plus
  ``learning_rate``;
* inner training curves, one row per window of ``curve_every`` inner steps (``outer_step``
  and ``inner_steps`` hold the inner step t at the window's end; metric ``inner_loss``,
  the window's mean clipped training loss over the evaluation runs): ``curve-<run id>``
  for every run's final meta-trained LOpt (read from its checkpoint),
  ``curve-init-s<seed>`` for the initial LOpt of every seed, and ``curve-adam-tuned``.

Results are cached in ``figure7_post.json`` / ``figure7_post.csv`` beside ``metrics.csv``
and reused while the settings and the runs' checkpoints are unchanged.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from omegaconf import DictConfig

from experiments import config as C
from experiments import io, runner
from pes import outer, results

POST_CSV, POST_META = "figure7_post.csv", "figure7_post.json"


def _info(fig_id: str, run_id: str, estimator: str, seed: int, like: pd.Series | None = None) -> dict:
    if like is not None:
        info = {c: like[c] for c in results.RUN_COLUMNS}
        info["run_id"] = run_id
        return info
    return dict(
        run_id=run_id,
        figure=fig_id,
        task="lopt_image_mlp",
        estimator=estimator,
        trunc_len=0,
        sigma=float("nan"),
        num_particles=-1,
        seed=seed,
    )


def _curve_rows(info: dict, losses: np.ndarray, every: int) -> list[dict]:
    """Window means of the (runs, T) per-step losses, one row per window."""
    mean = np.mean(np.asarray(losses, np.float64), axis=0)
    num = len(mean) // every
    windows = mean[: num * every].reshape(num, every).mean(axis=1)
    return [
        dict(
            info, outer_step=(i + 1) * every, inner_steps=(i + 1) * every, metric="inner_loss", value=float(v)
        )
        for i, v in enumerate(windows)
    ]


def final_theta(cfg: DictConfig, built) -> object | None:
    """The meta-parameters in a finished run's checkpoint (None if there is none)."""
    path = C.run_dir(cfg) / runner.CKPT
    if not path.exists():
        return None
    template = jax.eval_shape(
        lambda: outer.init_state(jax.random.key(0), built.task.theta_init, built.estimator, built.optimizer)
    )
    state, _ = io.load_checkpoint(path, template)
    return state.theta


def adam_grid(task, learning_rates: list[float]) -> np.ndarray:
    """(num_lrs, runs, T) per-step clipped losses of Adam at every learning rate."""
    keys = task.eval_keys
    curve = task.baseline_curve

    @jax.jit
    def at(lr):
        return jax.vmap(lambda k: curve(optax.adam(lr), k))(keys)

    return np.stack([np.asarray(at(jnp.float32(lr))) for lr in learning_rates])


def run(fig: DictConfig, profile: str, extra: list[str], metrics_path: Path) -> None:
    """Tuned Adam and inner curves for figure 7; rewrites ``metrics_path`` with their rows."""
    metrics_path = Path(metrics_path)
    out_dir = metrics_path.parent
    settings = C.figure_section(fig, "adam", profile)
    lrs = [float(x) for x in settings["learning_rates"]]
    every = int(settings.get("curve_every", 10))
    runs = [r for r in fig.runs if not r.get("only") or profile in r.only]
    cfgs = {r.id: C.compose(C.figure_run_overrides(fig, r, profile, extra)) for r in runs}
    builts = {rid: C.build(cfg) for rid, cfg in cfgs.items()}
    task = next(iter(builts.values())).task
    try:
        task.require(
            "eval_keys", "baseline_curve", "inner_curve", "dataset", by=f"{fig.id}'s tuned Adam and curves"
        )
    except ValueError as err:
        raise C.ConfigError(str(err)) from err
    fingerprints = {}
    for rid, cfg in cfgs.items():
        ck = C.run_dir(cfg) / runner.CKPT
        fingerprints[rid] = hashlib.sha256(ck.read_bytes()).hexdigest()[:12] if ck.exists() else None
    stamp = dict(
        settings,
        runs=fingerprints,
        dataset=task.dataset.name,
        horizon=task.metadata["horizon"],
        num_features=task.metadata["num_features"],
        num_eval_runs=int(len(task.eval_keys)),
    )
    df = pd.read_csv(metrics_path)
    df = df[~df["run_id"].str.startswith(("adam-", "curve-"))]
    meta = io.read_json(out_dir / POST_META)
    if meta and meta.get("settings") == stamp and (out_dir / POST_CSV).exists():
        post = pd.read_csv(out_dir / POST_CSV)
    else:
        start = time.perf_counter()
        post = results.frame(_compute(fig, task, cfgs, builts, df, lrs, every))
        wall = time.perf_counter() - start
        io.atomic_write_text(out_dir / POST_CSV, post.to_csv(index=False))
        io.write_json(
            out_dir / POST_META,
            {
                "settings": stamp,
                "wall_time_s": wall,
                "data_origin": task.dataset.origin,
                "machine": io.machine(),
            },
        )
        print(f"{fig.id}: tuned Adam and inner curves done ({wall:.1f} s)", file=sys.stderr)
    merged = results.validate(
        pd.concat([df, post], ignore_index=True), allow_nonfinite=list(fig.get("allow_nonfinite", []) or [])
    )
    io.atomic_write_text(metrics_path, merged.to_csv(index=False))


def _compute(fig, task, cfgs, builts, df, lrs, every) -> list[dict]:
    fig_id = str(fig.id)
    records: list[dict] = []
    grid = adam_grid(task, lrs)  # (L, runs, T)
    meta_losses = grid.mean(axis=(1, 2))
    window = min(50, grid.shape[2])
    for lr, losses, value in zip(lrs, grid, meta_losses):
        info = _info(fig_id, f"adam-lr{lr:g}", "adam", 0)
        records.append(dict(info, outer_step=0, inner_steps=0, metric="meta_loss_eval", value=float(value)))
        records.append(
            dict(
                info,
                outer_step=0,
                inner_steps=0,
                metric="final_loss_eval",
                value=float(losses[:, -window:].mean()),
            )
        )
    best = int(np.nanargmin(meta_losses))
    info = _info(fig_id, "adam-tuned", "adam", 0)
    records += [
        dict(info, outer_step=0, inner_steps=0, metric="meta_loss_eval", value=float(meta_losses[best])),
        dict(
            info,
            outer_step=0,
            inner_steps=0,
            metric="final_loss_eval",
            value=float(grid[best][:, -window:].mean()),
        ),
        dict(info, outer_step=0, inner_steps=0, metric="learning_rate", value=lrs[best]),
        # constant marker: which dataset produced every row (the plot names the stand-in)
        dict(info, outer_step=0, inner_steps=0, metric=f"dataset/{task.dataset.name}", value=1.0),
    ]
    records += _curve_rows(_info(fig_id, "curve-adam-tuned", "adam", 0), grid[best], every)

    keys = task.eval_keys
    curve = jax.jit(jax.vmap(task.inner_curve, in_axes=(None, 0)))
    seen_seeds = set()
    for rid, cfg in cfgs.items():
        built = builts[rid]
        seed = int(cfg.seed)
        if seed not in seen_seeds:  # the initial LOpt of this seed
            seen_seeds.add(seed)
            records += _curve_rows(
                _info(fig_id, f"curve-init-s{seed}", "init", seed),
                np.asarray(curve(built.task.theta_init, keys)),
                every,
            )
        theta = final_theta(cfg, built)
        if theta is None:
            continue
        sub = df[df["run_id"] == rid]
        like = sub.iloc[0] if len(sub) else None
        info = _info(fig_id, f"curve-{rid}", str(cfg.estimator.name), seed, like)
        records += _curve_rows(info, np.asarray(curve(theta, keys)), every)
    return records
