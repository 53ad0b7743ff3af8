"""The figure schema: every figure YAML is checked before any compute, one line per problem."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments import config, figure_schema, figures, reproduce

ROOT = Path(__file__).resolve().parent.parent
TINY = yaml.safe_load((ROOT / "tests/figures/tiny.yaml").read_text())
PROFILES = "quick, paper, paper_fashion, paper_regime, quick_holdout"  # every message lists the registry's


def load_changed(tmp_path, change) -> None:
    data = copy.deepcopy(TINY)
    change(data)
    path = tmp_path / "figure.yaml"
    path.write_text(yaml.safe_dump(data))
    figures.load(str(path))


def set_key(key, value):
    return lambda d: d.__setitem__(key, value)


def in_run(i, key, value):
    return lambda d: d["runs"][i].__setitem__(key, value)


def in_step(key, value):
    return lambda d: d["post"][0].__setitem__(key, value)


CASES = [
    (set_key("titel", "x"), "'titel' is not a key (did you mean 'title'?); allowed: id, title, task, plot"),
    (lambda d: d.pop("expected"), "'expected' is missing; required: id, title, task, plot, expected"),
    (set_key("plot", "scripts/plot_nothing.py"), "plot=scripts/plot_nothing.py does not exist"),
    (set_key("id", "a b"), "id='a b' is invalid; allowed: letters, digits"),
    (set_key("title", ""), "title='' is invalid; allowed: a non-empty string"),
    (set_key("base", "task=x"), "base='task=x' is invalid; allowed: a list of Hydra overrides"),
    (set_key("runs", {"id": "x"}), "runs={'id': 'x'} is invalid; allowed: a list of runs"),
    (in_run(1, "id", "pes"), "run id 'pes' is used twice under profile=quick"),
    (in_run(0, "overides", []), "runs[0]: 'overides' is not a key (did you mean 'overrides'?)"),
    (in_run(0, "id", "pes/1"), "runs[0].id='pes/1' is invalid"),
    (
        in_run(0, "only", ["fast"]),
        "runs[0].only=['fast'] is invalid; allowed: a non-empty list of "
        f"{PROFILES}",
    ),
    (in_run(0, "quick", "x=1"), "runs[0].quick='x=1' is invalid; allowed: a list of Hydra overrides"),
    (
        set_key("profiles", {"fast": []}),
        f"profiles: profile 'fast' is unknown; allowed: {PROFILES}",
    ),
    (set_key("profiles", {"quick": {"a": 1}}), "profiles.quick={'a': 1} is invalid"),
    (set_key("seeds", [-1]), "seeds=[-1] is invalid; allowed: a non-empty list of integers >= 0"),
    (set_key("seeds", {"fast": [1]}), "seeds: profile 'fast' is unknown"),
    (set_key("post", [{"step": "gird"}]), "post[0]: step='gird' is unknown (did you mean 'grid'?); allowed:"),
    (set_key("post", ["grid"]), "post[0]='grid' is invalid; allowed: a mapping {step: <name>, <settings>}"),
    (in_step("nmu", 3), "grid.nmu is not a setting (did you mean 'num'?); allowed: overrides, metrics"),
    (in_step("num", 0), "num[0]=0 gives a grid with zero points"),
    (in_step("of", "train"), "grid.of='train' is invalid; allowed: evaluate, full_run"),
    (in_step("quick", {"num": -1}), "num[0]=-1 gives a grid with zero points"),
    (in_step("quick", [1]), "post[0].quick=[1] is invalid; allowed: a mapping of settings"),
    (in_step("fast", {"num": 2}), "grid.fast is not a setting"),
    (lambda d: d["post"].append(dict(d["post"][0])), "post[1]: step 'grid' is listed twice"),
    (set_key("allow_nonfinite", "loss"), "allow_nonfinite='loss' is invalid"),
]


@pytest.mark.parametrize("change, message", CASES)
def test_a_bad_figure_fails_in_one_line(tmp_path, change, message):
    with pytest.raises(config.ConfigError) as info:
        load_changed(tmp_path, change)
    text = str(info.value)
    assert message in text and "\n" not in text, text
    assert text.startswith(str(tmp_path / "figure.yaml")), text  # names the file


def test_duplicate_run_ids_after_seed_expansion_are_refused(tmp_path):
    def change(d):
        d["seeds"] = {"quick": [3], "paper": [3]}
        d["runs"][1]["id"] = "pes-seed3"
        d["runs"][1]["only"] = ["quick"]
        d["runs"].append({"id": "pes", "overrides": [], "only": ["quick"]})

    with pytest.raises(config.ConfigError, match="run id 'pes-seed3' is used twice under profile=quick"):
        load_changed(tmp_path, change)


def test_every_figure_of_the_suite_passes_and_names_must_match(tmp_path):
    for name in figures.figure_names():
        assert figures.load(name).id == name
    assert figures.load("2").id == "figure2" and figures.load("tests/figures/tiny.yaml").id == "tiny"
    with pytest.raises(config.ConfigError, match=r"figure=figure99 is unknown; allowed: figure2"):
        figures.load("99")
    with pytest.raises(config.ConfigError, match=r"figure=nothing.yaml: no such file"):
        figures.load("nothing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: [unclosed\n")
    with pytest.raises(config.ConfigError, match=r"bad.yaml: not valid YAML at line 2"):
        figures.load(str(bad))


def test_claims_are_passed_through(tmp_path):
    data = copy.deepcopy(TINY)
    data["claims"] = [{"id": "c1"}]
    path = tmp_path / "figure.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        fig = figures.load(str(path))
    except config.ConfigError as err:  # experiments.claims exists and checks the entries itself
        assert "claims" in str(err) or "c1" in str(err), err
    else:
        assert fig.claims[0].id == "c1"
    with pytest.raises(config.ConfigError, match="claims='x' is invalid; allowed: a list of claims"):
        load_changed(tmp_path, set_key("claims", "x"))


def test_reproduce_refuses_bad_arguments_before_computing(tmp_path):
    tiny = "tests/figures/tiny.yaml"
    root = f"results_root={tmp_path}"
    cases = [
        (
            ["variance.sigma=1"],
            "variance.sigma is invalid: figure tiny has no post-step 'variance'; its steps: grid",
        ),
        (["grid.nmu=3"], "grid.nmu is not a setting (did you mean 'num'?)"),
        (["grid.num=0"], "num[0]=0 gives a grid with zero points"),
        (
            ["grid.metrics=[loss]"],
            "grid.metrics has 'loss', which task linear_quadratic's evaluate does not return",
        ),
        (
            ["grid.low=[-1,-1,-1]", "grid.high=[1,1,1]"],
            "grid has 3 dimensions but task linear_quadratic's theta has 2",
        ),
        (["estimator.num_particles=3"], "num_particles=3"),
        (["task.bogus=1"], "task.bogus is not a config key"),
        (["figure_id=other"], "figure_id= is set by the figure config"),
    ]
    for args, message in cases:
        with pytest.raises(config.ConfigError) as info:
            reproduce.reproduce(tiny, "quick", [root, *args])
        assert message in str(info.value) and "\n" not in str(info.value), (args, str(info.value))
    with pytest.raises(config.ConfigError, match=f"profile=fast is unknown; allowed: {PROFILES}"):
        reproduce.reproduce(tiny, "fast", [root])
    with pytest.raises(config.ConfigError, match="plot=maybe is invalid; allowed: true, false"):
        reproduce.parse(["figure=2", "plot=maybe"])
    assert not list(tmp_path.iterdir())  # nothing was computed or written


def test_a_setting_missing_under_one_profile_fails_only_when_reproduced_there(tmp_path):
    data = copy.deepcopy(TINY)
    metrics = data["post"][0].pop("metrics")
    data["post"][0]["quick"] = {"metrics": metrics}  # paper leaves it unset
    path = tmp_path / "figure.yaml"
    path.write_text(yaml.safe_dump(data))
    figures.load(str(path))
    with pytest.raises(config.ConfigError, match=r"post\[0\]: grid.metrics is missing \(profile=paper\)"):
        reproduce.reproduce(str(path), "paper", [f"results_root={tmp_path / 'r'}"])
    assert not (tmp_path / "r").exists()


def test_the_schema_and_the_post_steps_do_not_import_the_figure_loader():
    """No import circle: experiments.figures imports the schema and the steps, never the reverse."""
    code = (
        "import sys; from experiments import figure_schema, steps; steps.names(); "
        "print(sorted(m for m in sys.modules if m == 'experiments.figures'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert figures.check_id is figure_schema.check_id  # the loader uses the schema's checks
