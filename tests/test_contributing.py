"""CONTRIBUTING.md's recipes, followed: a toy estimator, task, post-step and figure added to a
copy of the repository, each touching only the files its section names, and each working.

The copy holds `pes/`, `experiments/`, `configs/` and `scripts/`.  The sections' file lists are
read from CONTRIBUTING.md ("## Add an estimator: 3 files", then its numbered **`path`** items),
so a recipe that needs one more file than it says fails here.  Then one process in the copy
builds the toy estimator through the registry (its gradient is the exact full-episode gradient,
in float64), the toy task through its registry, reproduces the toy figure (runs with the toy
estimator and PES on the toy task, the toy post-step, the merged table, the plot) and checks
its claims (exit 0, every claim PASS).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import steps

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "CONTRIBUTING.md").read_text()
COPIED = ("pes", "experiments", "configs", "scripts")

TOY_ESTIMATOR = '''
"""A toy estimator: the exact gradient of whole episodes, averaged over ``num_episodes``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pes import systems
from pes.estimators._common import GradientEstimator


def toy_exact(system, *, num_episodes: int = 1) -> GradientEstimator:
    if system.horizon is None:
        raise ValueError("estimator 'toy_exact': a finite horizon is required")
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
        raise ValueError(f"estimator 'toy_exact': num_episodes={num_episodes!r} is invalid")

    def init(key, theta):
        return jnp.zeros((), jnp.int32)

    def episode(theta, key):
        init_key, data_key = jax.random.split(key)
        return systems.full_objective(system, theta, init_key, data_key)

    def estimate(key, theta, state):
        keys = jax.random.split(key, num_episodes)
        losses, grads = jax.vmap(jax.value_and_grad(episode), in_axes=(None, 0))(theta, keys)
        grad = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
        return grad, state + 1, {"loss": jnp.mean(losses)}

    return GradientEstimator(
        init, estimate, "toy_exact", {"num_episodes": num_episodes},
        steps_per_estimate=system.horizon, cost_per_estimate=system.horizon * num_episodes,
    )
'''

TOY_TASK = '''
"""A toy task: s <- 0.5 s + theta, step loss 0.5 ||s - 1||^2."""

from __future__ import annotations

import jax.numpy as jnp

from pes.systems import UnrolledSystem, full_objective
from pes.tasks import Task, check_param


def make(dim: int = 2, horizon: int = 6) -> Task:
    check_param("toy_drift", "dim", dim, isinstance(dim, int) and dim >= 1, "an integer >= 1")

    def init(key):
        return jnp.zeros((dim,), jnp.result_type(float))

    def step(theta, state, key):
        new = 0.5 * state + theta
        return new, 0.5 * jnp.sum((new - 1.0) ** 2)

    system = UnrolledSystem(init=init, step=step, horizon=horizon, unroll_loss="sum")

    def evaluate(theta, key):
        return {"full_loss": full_objective(system, theta, key, key)}

    return Task("toy_drift", system, jnp.zeros((dim,), jnp.result_type(float)), evaluate, {})
'''

TOY_STEP = '''
"""Post-step ``toy_final``: every run's final full-horizon loss, one row per run."""

from __future__ import annotations

from typing import NamedTuple

from experiments import steps
from pes import results


class Plan(NamedTuple):
    metric: str


def check(s, where):
    return s


def prepare(ctx, s):
    return Plan(s["metric"])


def inputs(ctx, plan):
    rows = ctx.run_rows()
    return {"values": rows[rows["metric"] == plan.metric]["value"].tolist()}


def compute(ctx, plan):
    rows = ctx.run_rows()
    rows = rows[rows["metric"] == plan.metric].sort_values("outer_step")
    out = [dict(g.iloc[-1], metric="final_" + plan.metric) for _, g in rows.groupby(["run_id", "seed"])]
    return steps.StepOutput(results.frame([{c: r[c] for c in results.COLUMNS} for r in out]))


STEP = steps.register(
    steps.PostStep(
        name="toy_final", summary="every run's final value of a metric", defaults={"metric": "full_loss"},
        check=check, prepare=prepare, inputs=inputs, compute=compute,
    )
)
'''

TOY_FIGURE = """
id: figuretoy
title: Toy figure
task: toy_drift
plot: scripts/plot_figuretoy.py
expected: The toy exact estimator and PES both lower the toy task's full-horizon loss.
base: [task=toy_drift, outer_optimizer=sgd, outer_optimizer.learning_rate=0.01, x64=true,
       train.num_outer_steps=6, train.log_every=3, train.chunk_size=3, progress=false]
runs:
  - {id: exact, label: Toy exact, overrides: [estimator=toy_exact, estimator.num_episodes=2]}
  - {id: pes, label: PES, overrides: [estimator=pes, estimator.trunc_len=3, estimator.sigma=0.1,
                                      estimator.num_particles=4]}
post:
  - step: toy_final
claims:
  - id: exact-lowers-loss
    claim: the toy exact estimator lowers the full-horizon loss
    scale: any
    source: "project-derived: the contributing test's toy figure"
    check:
      type: order
      descending:
        - {run: exact, metric: full_loss, stat: first, name: start}
        - {run: exact, metric: full_loss, stat: final, name: end}
  - id: post-step-reads-the-runs
    claim: the toy post-step's value is the run's final full-horizon loss
    scale: any
    source: "project-derived: the contributing test's toy figure"
    check:
      type: close
      of: {run: exact, metric: final_full_loss, source: toy_final}
      to: {run: exact, metric: full_loss, stat: final, source: run}
      atol: 1.0e-12
"""

TOY_PLOT = '''
"""Toy figure: every run's full-horizon loss."""

import matplotlib.pyplot as plt

import _style
from pes import results


def figures(df, fig_dir):
    fig, ax = plt.subplots()
    loss = results.metric_table(results.run_rows(df), "full_loss")
    for run in loss.columns:
        ax.plot(loss.index, loss[run], label=run)
    ax.legend()
    return {"": fig}


def main():
    _style.cli(figures)


if __name__ == "__main__":
    main()
'''

DRIVER = '''
import io, json, sys
import jax, jax.numpy as jnp
import pes
from pes import systems
from experiments import check, reproduce, steps

jax.config.update("jax_enable_x64", True)
out = {"pes_file": pes.__file__}
task = pes.tasks.make("toy_drift", dim=3, horizon=5)
pes.tasks.check_contract(task)
est = pes.make("toy_exact", task.system, num_episodes=2)
theta = jnp.array([0.3, -0.2, 0.1])
key = jax.random.key(7)
grad, state, aux = est.estimate(key, theta, est.init(key, theta))
refs = []
for k in jax.random.split(key, 2):  # the exact gradient, episode by episode
    init_key, data_key = jax.random.split(k)
    refs.append(jax.grad(systems.full_objective, argnums=1)(task.system, theta, init_key, data_key))
out["grad"], out["reference"] = grad.tolist(), (sum(refs) / 2).tolist()
try:
    pes.make("toy_exact", task.system, sigma=0.1)
except ValueError as err:
    out["bad_hparam"] = str(err)
out["estimators"], out["tasks"], out["steps"] = sorted(pes.REGISTRY), pes.tasks.names(), steps.names()
csv = reproduce.reproduce("figuretoy", "quick", [f"results_root={sys.argv[1]}"])
buf = io.StringIO()
out["check_exit"] = check.run(["figure=figuretoy", "profile=quick", f"results_root={sys.argv[1]}"], out=buf)
out["check"] = buf.getvalue()
out["csv"] = str(csv)
print(json.dumps(out))
'''


def recipe(title: str) -> tuple[int, list[str]]:
    """The file count and file patterns of CONTRIBUTING's section ``## Add <title>: N files``."""
    m = re.search(rf"^## Add {title}: (\d+) files.*?\n(.*?)(?=^## )", GUIDE, re.S | re.M)
    assert m, f"CONTRIBUTING.md has no section '## Add {title}: N files'"
    return int(m.group(1)), re.findall(r"^\d+\. \*\*`([^`]+)`\.?\*\*", m.group(2), re.M)


def matches(pattern: str, path: str) -> bool:
    """``pes/estimators/<module>.py`` and ``configs/figure/figureN.yaml`` as path patterns."""
    parts = re.split(r"<\w+>|(?<=figure)N\b", pattern)
    return re.fullmatch(r"\w+".join(map(re.escape, parts)), path) is not None


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


ADDITIONS = {
    "an estimator": lambda repo: (
        (repo / "pes/estimators/toy_exact.py").write_text(TOY_ESTIMATOR),
        _append(
            repo / "pes/estimators/__init__.py",
            "\nfrom pes.estimators.toy_exact import toy_exact  # noqa: E402\n"
            "REGISTRY['toy_exact'] = toy_exact\n",
        ),
        (repo / "configs/estimator/toy_exact.yaml").write_text("name: toy_exact\nnum_episodes: 1\n"),
    ),
    "a task": lambda repo: (
        (repo / "pes/tasks/toy_drift.py").write_text(TOY_TASK),
        _append(repo / "pes/tasks/__init__.py", "\nTASK_MODULES['toy_drift'] = 'pes.tasks.toy_drift'\n"),
        (repo / "configs/task/toy_drift.yaml").write_text("name: toy_drift\ndim: 2\nhorizon: 6\n"),
    ),
    "a post-step": lambda repo: (
        (repo / "experiments/steps/toy_final.py").write_text(TOY_STEP),
        _append(repo / "experiments/steps/__init__.py", "\nMODULES = (*MODULES, 'toy_final')\n"),
    ),
    "a figure": lambda repo: (
        (repo / "configs/figure/figuretoy.yaml").write_text(TOY_FIGURE),
        (repo / "scripts/plot_figuretoy.py").write_text(TOY_PLOT),
    ),
}


@pytest.fixture(scope="module")
def toy_repo(tmp_path_factory):
    """The copy with the four additions, the files each touched, and the driver's report."""
    repo = tmp_path_factory.mktemp("contributing") / "repo"
    for room in COPIED:
        shutil.copytree(ROOT / room, repo / room, ignore=shutil.ignore_patterns("__pycache__"))
    touched = {}
    for title, add in ADDITIONS.items():
        before = _snapshot(repo)
        add(repo)
        after = _snapshot(repo)
        touched[title] = sorted(p for p in after if before.get(p) != after[p])
    driver = repo.parent / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=str(repo), JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(driver), str(repo.parent / "results")],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(report["pes_file"]).is_relative_to(repo), report["pes_file"]  # the copy's code ran
    return repo, touched, report


@pytest.mark.parametrize("title", list(ADDITIONS))
def test_each_recipe_touches_exactly_the_files_contributing_names(toy_repo, title):
    _, touched, _ = toy_repo
    count, patterns = recipe(title)
    assert len(patterns) == count, (title, patterns)
    assert len(touched[title]) == count, (title, touched[title])
    for path in touched[title]:
        assert [p for p in patterns if matches(p, path)], f"'## Add {title}' does not name {path}: {patterns}"
    for pattern in patterns:
        assert [p for p in touched[title] if matches(pattern, p)], f"the recipe's {pattern} was not needed"


def test_the_toy_estimator_runs_through_the_registry_and_is_exact(toy_repo):
    _, _, report = toy_repo
    assert "toy_exact" in report["estimators"]
    assert report["grad"] == pytest.approx(report["reference"], rel=1e-12, abs=0)
    assert report["bad_hparam"] == "estimator 'toy_exact' has no hyperparameter sigma; allowed: num_episodes"


def test_the_toy_task_and_post_step_are_registered(toy_repo):
    _, _, report = toy_repo
    assert "toy_drift" in report["tasks"]
    assert report["steps"] == sorted([*steps.names(), "toy_final"])


def test_the_toy_figure_reproduces_and_its_claims_pass(toy_repo):
    import pandas as pd

    repo, _, report = toy_repo
    merged = pd.read_csv(report["csv"])
    assert set(merged["source"]) == {"run", "toy_final"}
    assert set(merged.loc[merged["source"] == "run", "estimator"]) == {"toy_exact", "pes"}
    assert (Path(report["csv"]).parent.parent / "figures" / "figuretoy.png").is_file()
    assert report["check_exit"] == 0, report["check"]
    table = report["check"]
    for claim in ("exact-lowers-loss", "post-step-reads-the-runs"):
        assert re.search(rf"{claim}.*PASS", table), table


def test_the_recipe_reader_sees_a_missing_file():
    """Negative control: a path outside a section's patterns does not match them."""
    _, patterns = recipe("an estimator")
    assert matches("pes/estimators/<module>.py", "pes/estimators/toy.py")
    assert not any(matches(p, "experiments/config.py") for p in patterns)

