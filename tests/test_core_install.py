"""`import pes` needs only the core install (JAX, optax, NumPy); the rest says which extra to install.

Fresh interpreters, so that nothing imported by other tests counts.  The suite's packages are
blocked (``sys.modules[name] = None`` makes importing them fail as if they were not installed);
`make wheel-smoke` checks the same with the real wheel in a clean environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE_PACKAGES = (
    "pandas",
    "flax",
    "hydra",
    "omegaconf",
    "matplotlib",
    "tqdm",
    "tensorflow",
    "tensorflow_datasets",
    "gymnasium",
    "mujoco",
)


def _python(code: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_pes_loads_no_suite_package():
    out = _python(
        "import json, sys; import pes; "
        f"print(json.dumps(sorted(m for m in {SUITE_PACKAGES!r} if m in sys.modules)))"
    )
    assert out == []


def test_without_the_suite_packages_the_library_works_and_names_the_extra():
    code = f"""
import json, sys
for name in {SUITE_PACKAGES!r}:
    sys.modules[name] = None  # as if not installed
import jax, jax.numpy as jnp, optax
import pes

system = pes.UnrolledSystem(lambda k: jnp.zeros(2), lambda th, s, k: (0.9 * s + th, jnp.sum(s**2)), horizon=8)
est = pes.make("pes", system, trunc_len=4, sigma=0.1, num_particles=4)
state, metrics = pes.outer.run(jax.random.key(0), jnp.ones(2), est, optax.sgd(0.01), num_steps=4)
task = pes.tasks.make("influence_balancing")
errors = {{}}
for what, call in (
    ("results", lambda: __import__("pes.results")),
    ("lopt", lambda: __import__("pes.lopt")),
    ("mnist_lr_schedule", lambda: pes.tasks.make("mnist_lr_schedule")),
    ("swimmer", lambda: pes.tasks.make("swimmer")),
):
    try:
        call()
        errors[what] = None
    except ModuleNotFoundError as err:
        errors[what] = str(err)
print(json.dumps(dict(errors=errors, steps=int(metrics["loss"].shape[0]), task=task.name)))
"""
    out = _python(code)
    assert out["steps"] == 4 and out["task"] == "influence_balancing"
    assert out["errors"] == {
        "results": "pes.results needs pandas, which is not installed: pip install 'pes-repro[suite]'",
        "lopt": "pes.lopt needs flax, which is not installed: pip install 'pes-repro[suite]'",
        "mnist_lr_schedule": (
            "task 'mnist_lr_schedule' needs flax, which is not installed: pip install 'pes-repro[suite]'"
        ),
        "swimmer": "task 'swimmer' needs mujoco, which is not installed: pip install 'pes-repro[control]'",
    }
