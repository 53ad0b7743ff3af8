"""Grid search of a task's logged metric over theta, with a progress bar, to a CSV.

    python -m experiments.grid figure=figure3 profile=quick [results_root=...] [grid.num=...]

The task comes from the figure's ``base`` and profile overrides (the same task the
figure's runs use); the grid from the figure's ``grid`` section (``metric``, ``low``,
``high``, ``num`` per dimension, ``chunk_size``, per-profile overrides under ``quick:`` /
``paper:``).  Output: ``<results_root>/<profile>/<figure>/grid.csv`` (schema:
`pes.results.grid_columns`) and ``grid.json`` (settings, minimum, wall time, machine).
A finished grid with the same settings is not recomputed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from experiments import config as C
from experiments import io
from pes import grid as G
from pes import results, tasks

CSV, META = "grid.csv", "grid.json"
GRID_KEYS = ("metric", "low", "high", "num", "chunk_size")
BLOCK_CHUNKS = 16  # chunks per compiled call: the progress-bar granularity


def grid_settings(fig: DictConfig, profile: str, extra: list[str] = ()) -> dict:
    """The figure's grid settings under ``profile`` with ``grid.<key>=value`` overrides."""
    node = fig.get("grid")
    if node is None:
        raise C.ConfigError(f"figure {fig.id} has no grid section")
    settings = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k in GRID_KEYS}
    settings.update(OmegaConf.to_container(node.get(profile) or OmegaConf.create({}), resolve=True))
    for arg in extra:
        key, _, value = arg.partition("=")
        if key.startswith("grid."):
            name = key[len("grid.") :]
            if name not in GRID_KEYS:
                raise C.ConfigError(
                    f"{key} is not a grid key; allowed: {', '.join('grid.' + k for k in GRID_KEYS)}"
                )
            settings[name] = _parse(value)
    missing = [k for k in ("metric", "low", "high", "num") if k not in settings]
    if missing:
        raise C.ConfigError(f"figure {fig.id}: grid lacks {', '.join(missing)}")
    settings.setdefault("chunk_size", 4096)
    try:
        G.grid_axes(settings["low"], settings["high"], settings["num"])
    except ValueError as err:
        raise C.ConfigError(f"figure {fig.id}: {err}") from err
    chunk = settings["chunk_size"]
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise C.ConfigError(f"grid.chunk_size={chunk!r} is invalid; allowed: an integer >= 1")
    return settings


def _parse(text: str):
    """A command-line value as YAML (numbers, lists such as [-5,-5])."""
    return yaml.safe_load(text)


def task_config(fig: DictConfig, profile: str, extra: list[str] = ()) -> DictConfig:
    """The composed config of the figure's task (base + profile overrides, no run)."""
    profiles = fig.get("profiles", {}) or {}
    rest = [a for a in extra if not a.startswith("grid.")]
    return C.compose(
        [
            *fig.get("base", []),
            *profiles.get(profile, []),
            f"profile={profile}",
            f"figure_id={fig.id}",
            *rest,
        ]
    )


def run_grid(
    task: tasks.Task,
    settings: dict,
    out_dir: Path,
    *,
    progress: bool = True,
    resume: bool = True,
    key: jax.Array | None = None,
    task_config: dict | None = None,
) -> Path:
    """Evaluate ``task.evaluate(theta, key)[metric]`` on the grid; write grid.csv/json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dict(settings, task=task.name, x64=bool(jax.config.jax_enable_x64), task_config=task_config)
    meta = io.read_json(out_dir / META)
    if (
        resume
        and meta
        and meta.get("settings") == stamp
        and meta.get("status") == "complete"
        and (out_dir / CSV).exists()
    ):
        return out_dir / CSV
    metric = settings["metric"]
    key = jax.random.key(0) if key is None else key
    probe = jax.eval_shape(task.evaluate, task.theta_init, key)
    if metric not in probe:
        raise C.ConfigError(
            f"grid.metric={metric!r} is not logged by task {task.name}; allowed: {', '.join(sorted(probe))}"
        )
    axes = G.grid_axes(settings["low"], settings["high"], settings["num"])
    dim = int(np.size(task.theta_init))
    if len(axes) != dim:
        raise C.ConfigError(f"the grid has {len(axes)} dimensions but task {task.name}'s theta has {dim}")
    points = G.grid_points(axes)
    shape = np.shape(task.theta_init)

    def fn(theta_flat):
        return task.evaluate(theta_flat.reshape(shape), key)[metric]

    chunk = min(int(settings["chunk_size"]), len(points))
    block = chunk * BLOCK_CHUNKS
    evaluate = jax.jit(lambda p: G.evaluate_points(fn, p, chunk))
    values = np.empty(len(points))
    start = time.perf_counter()
    with tqdm(
        total=len(points),
        desc=f"grid {task.name}",
        unit="pt",
        disable=not progress,
        file=sys.stderr,
        leave=False,
    ) as bar:
        for lo in range(0, len(points), block):
            part = points[lo : lo + block]
            if len(part) < block and len(points) > block:  # same shape, one compilation
                part = np.concatenate([part, np.broadcast_to(part[:1], (block - len(part), dim))])
            out = np.asarray(evaluate(part))
            n = min(block, len(points) - lo)
            values[lo : lo + n] = out[:n]
            bar.update(n)
    wall = time.perf_counter() - start
    summary = G.summarize(axes, values)
    io.atomic_write_text(
        out_dir / CSV, results.grid_frame(task.name, metric, points, values).to_csv(index=False)
    )
    io.write_json(
        out_dir / META,
        {
            "settings": stamp,
            "status": "complete",
            "num_points": len(points),
            "min": summary.min,
            "argmin": summary.argmin.tolist(),
            "wall_time_s": wall,
            "git_commit": io.git_commit(C.ROOT),
            "machine": io.machine(),
        },
    )
    return out_dir / CSV


def figure_grid(
    fig: DictConfig, profile: str, extra: list[str] = (), *, results_root: str | None = None
) -> Path:
    """Compute (or reuse) a figure's grid; returns the grid CSV path."""
    settings = grid_settings(fig, profile, list(extra))
    cfg = task_config(fig, profile, list(extra))
    built = C.build(cfg)  # validates the task config and sets x64
    root = results_root if results_root is not None else str(cfg.results_root)
    out_dir = Path(root) / profile / str(fig.id)
    t0 = time.perf_counter()
    path = run_grid(
        built.task,
        settings,
        out_dir,
        progress=bool(cfg.progress),
        resume=bool(cfg.resume),
        task_config=OmegaConf.to_container(cfg.task, resolve=True),
    )
    meta = io.read_json(out_dir / META) or {}
    print(
        f"{fig.id} grid: {meta.get('num_points')} points, min {meta.get('min'):.6g} at "
        f"{meta.get('argmin')} ({time.perf_counter() - t0:.1f} s now, "
        f"{meta.get('wall_time_s', 0):.1f} s "
        f"computing) -> {path}",
        file=sys.stderr,
    )
    return path


def main() -> None:
    from experiments.reproduce import parse

    try:
        figure, profile, extra = parse(sys.argv[1:])
        fig = C.load_figure(figure)
        print(figure_grid(fig, profile, extra))
    except C.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
