"""The run specification (`experiments.config.RunSpec`): built once from the composed config at
the door, it is all the run path reads.

* Runtime: with every way of reading an OmegaConf config made to fail, a run, a batch of runs
  and a size estimate still go from their specs, and write what the config path writes
  (negative control: the same run from its DictConfig fails under the same guard).
* Syntax: runner, batched and sizes name ``DictConfig`` only in the signatures of their doors
  (the functions users call with a composed config), which turn it into a spec first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from experiments import batched, config, runner, sizes
from tests import test_runner

ROOT = Path(__file__).resolve().parent.parent
RUN_PATH = ("runner", "batched", "sizes")
# the functions that take a composed config and build its spec first (`config.as_spec`)
DOORS = {"runner": {"run", "check"}, "batched": {"run_batch"}, "sizes": set()}


class ConfigRead(AssertionError):
    """A DictConfig was read while the guard was on."""


def _composed(root: Path, *extra: str):
    return test_runner.compose(root, *extra)


@pytest.fixture
def runs(tmp_path):
    """The composed configs of one run and of a two-seed batch, and their specs (built before
    any guard is on)."""
    single = _composed(tmp_path / "single")
    batch = [_composed(tmp_path / "batch", f"seed={s}", f"run_id=lq-pes-{s}") for s in (0, 1)]
    return {
        "configs": [single, *batch],
        "single": config.RunSpec.from_config(single),
        "batch": [config.RunSpec.from_config(cfg) for cfg in batch],
        "reference": _composed(tmp_path / "reference"),
    }


def test_the_run_path_reads_no_config(runs, monkeypatch):
    reference = runner.run(runs["reference"])  # the config path, before the guard
    guard(monkeypatch, [*runs["configs"], runs["reference"]])
    out = runner.run(runs["single"])
    assert (out / runner.CSV).read_bytes() == (reference / runner.CSV).read_bytes()
    assert runner.check(runs["single"]) == out
    assert sizes.run_estimate(runs["single"])["rows"] > 0
    dirs = batched.run_batch(runs["batch"])
    assert all((d / runner.CSV).is_file() for d in dirs)
    with pytest.raises(ConfigRead):  # negative control: the same run from its config reads it
        runner.run(runs["reference"])


def guard(monkeypatch, configs) -> None:
    """Every read of ``configs`` (or of a node in them) raises `ConfigRead`: attributes, items,
    ``get``, iteration, ``OmegaConf.to_container`` and ``select``."""
    watched = {id(cfg) for cfg in configs}

    def is_watched(node) -> bool:
        while node._get_parent() is not None:
            node = node._get_parent()
        return id(node) in watched

    def refusing(original):
        def method(self, *args, **kwargs):
            if isinstance(self, DictConfig) and is_watched(self):
                raise ConfigRead("a composed config was read on the run path")
            return original(self, *args, **kwargs)

        return method

    for name in ("__getattr__", "__getitem__", "get", "__contains__", "__iter__", "items", "keys"):
        monkeypatch.setattr(DictConfig, name, refusing(getattr(DictConfig, name)))
    for name in ("to_container", "select"):
        monkeypatch.setattr(OmegaConf, name, staticmethod(refusing(getattr(OmegaConf, name))))


def dictconfig_uses(source: str, doors: set[str]) -> list[str]:
    """``DictConfig``/``OmegaConf`` names used outside the door functions' signatures, and
    doors that do not turn their argument into a spec first."""
    tree = ast.parse(source)
    allowed: set[int] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in doors:
            for arg in node.args.args + node.args.kwonlyargs:
                if arg.annotation is not None:
                    allowed |= {id(n) for n in ast.walk(arg.annotation)}
            if "as_spec" not in ast.unparse(node.body[1] if ast.get_docstring(node) else node.body[0]):
                found.append(f"{node.name}: does not build the spec first")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            continue
        name = getattr(node, "id", None) if isinstance(node, ast.Name) else getattr(node, "attr", None)
        if name == "DictConfig" and id(node) not in allowed:
            found.append(f"line {node.lineno}: DictConfig")
        if name in ("compose", "build", "run_id", "run_dir", "fingerprint", "run_info", "keep_checkpoints"):
            on_config = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            if on_config and node.value.id == "config":
                found.append(f"line {node.lineno}: config.{name}")
    return found


@pytest.mark.parametrize("module", RUN_PATH)
def test_the_run_path_names_no_config_outside_its_doors(module):
    source = (ROOT / "experiments" / f"{module}.py").read_text()
    uses = dictconfig_uses(source, DOORS[module])
    if module == "batched":  # the figure command composes its runs, then builds their specs
        uses = [u for u in uses if u.split(": ")[1] != "config.compose"]
    assert uses == []


def test_the_syntax_check_finds_a_planted_read():
    planted = (
        "def _train(spec, cfg: DictConfig):\n    return config.run_id(cfg)\n"
        "def run(cfg: DictConfig):\n    return _train(cfg)\n"
    )
    found = dictconfig_uses(planted, {"run"})
    assert "line 1: DictConfig" in found and "line 2: config.run_id" in found
    assert "run: does not build the spec first" in found
