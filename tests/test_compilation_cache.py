"""The persistent compilation cache of the suite's commands (`experiments.compilation_cache`).

Where it goes is read from the environment once per process, so each case runs in a fresh
interpreter with the test session's own cache variables removed.  The integration test proves
the point of the cache's safety: a run gives the same bytes with no cache, a cold cache, a warm
cache and a cache whose every entry was damaged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import test_faults

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import jax, jax.numpy as jnp
from experiments import compilation_cache, config
config.use_x64(config.compose(["task=linear_quadratic"]))
jax.jit(lambda x: jnp.sin(x) * 2.0)(jnp.arange(3.0)).block_until_ready()
print(compilation_cache.folder())
print(jax.config.jax_persistent_cache_min_compile_time_secs)
"""


def _env(**extra: str) -> dict[str, str]:
    session = ("JAX_COMPILATION_CACHE", "JAX_PERSISTENT")  # the test session's own cache settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(session)}
    env.pop("PES_COMPILATION_CACHE", None)
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _probe(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_named_folder_gets_every_compiled_program(tmp_path):
    out = _probe(_env(PES_COMPILATION_CACHE=str(tmp_path / "cache")))
    assert out.returncode == 0, out.stderr
    folder, min_time = out.stdout.split()
    assert folder == str(tmp_path / "cache")
    assert float(min_time) == 0.0
    assert any((tmp_path / "cache").iterdir()), "the jitted program was not written to the cache"


@pytest.mark.integration
def test_the_default_folder_follows_xdg_cache_home(tmp_path):
    out = _probe(_env(XDG_CACHE_HOME=str(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == str(tmp_path / "pes-repro" / "jax")
    assert any((tmp_path / "pes-repro" / "jax").iterdir())


@pytest.mark.integration
def test_off_writes_nothing(tmp_path):
    out = _probe(_env(PES_COMPILATION_CACHE="off", XDG_CACHE_HOME=str(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "off"
    assert not (tmp_path / "pes-repro").exists()


@pytest.mark.integration
def test_jax_own_setting_wins(tmp_path):
    own = tmp_path / "jax-own"
    out = _probe(_env(JAX_COMPILATION_CACHE_DIR=str(own), PES_COMPILATION_CACHE=str(tmp_path / "ours")))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == str(own)
    assert not (tmp_path / "ours").exists()


@pytest.mark.integration
def test_an_unusable_folder_is_one_warning_and_no_cache(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    out = _probe(_env(PES_COMPILATION_CACHE=str(blocker / "cache")))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "off"
    lines = [line for line in out.stderr.splitlines() if "compilation cache off" in line]
    assert len(lines) == 1 and str(blocker / "cache") in lines[0] and "PES_COMPILATION_CACHE" in lines[0]


def _run_csv(root: Path, env: dict[str, str]) -> tuple[bytes, str]:
    out = subprocess.run(
        [sys.executable, "-m", "experiments.run", *test_faults.CHEAP, f"results_root={root}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return (root / "quick" / "adhoc" / "runs" / "cheap" / "metrics.csv").read_bytes(), out.stderr


@pytest.mark.integration
def test_a_run_is_byte_identical_with_no_cold_warm_or_damaged_cache(tmp_path):
    cache = tmp_path / "cache"
    without, _ = _run_csv(tmp_path / "off", _env(PES_COMPILATION_CACHE="off"))
    cold, _ = _run_csv(tmp_path / "cold", _env(PES_COMPILATION_CACHE=str(cache)))
    entries = [p for p in cache.iterdir() if p.is_file()]
    assert entries, "the run wrote nothing to the cache"
    warm, _ = _run_csv(tmp_path / "warm", _env(PES_COMPILATION_CACHE=str(cache)))
    for entry in entries:  # a process killed while writing: every entry cut short
        entry.write_bytes(entry.read_bytes()[: max(1, entry.stat().st_size // 3)])
    damaged, said = _run_csv(tmp_path / "damaged", _env(PES_COMPILATION_CACHE=str(cache)))
    assert "persistent compilation cache" in said, "the damaged entries were never read"
    assert cold == without
    assert warm == without
    assert damaged == without
