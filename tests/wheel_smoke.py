"""The wheel in a clean environment: ``python tests/wheel_smoke.py dist`` (``make wheel-smoke``, CI).

Creates a fresh virtual environment in a temporary folder, installs the wheel from ``dist`` with
its core dependencies only (jax, optax, numpy and what they need), and, from a folder outside the
checkout (so that nothing of the checkout can be imported):

* checks that ``pes`` comes from the environment and that no suite package was installed (Hydra,
  OmegaConf, pandas, matplotlib, tqdm, flax, TensorFlow, TFDS, gymnasium, MuJoCo);
* runs the README's library snippet (the ``python`` block under "## Using the library");
* runs `estimator_smoke.py` (every registered estimator, `pes.check_unbiased`, and the one-line
  errors that name the extra to install).

Prints ``pip list`` of the environment, the time ``import pes`` takes there, and the wall time of
every step.  Standard library only; needs the package index (or pip's cache) for the core wheels.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = (
    "hydra-core",
    "omegaconf",
    "pandas",
    "matplotlib",
    "tqdm",
    "flax",
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-datasets",
    "gymnasium",
    "mujoco",
    "evosax",
)


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Using the library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def run(cmd: list[str], cwd: Path, what: str) -> str:
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if proc.returncode:
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"wheel-smoke: {what} failed (exit {proc.returncode}) after {took:.1f} s")
    print(f"wheel-smoke: {what}: {took:.1f} s")
    return proc.stdout


def main(dist: Path) -> int:
    wheels = sorted(dist.glob("pes_repro-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"wheel-smoke: expected one pes_repro wheel in {dist}; found {wheels}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pes-wheel-smoke-") as tmp:
        tmp = Path(tmp)
        venv = tmp / "venv"
        py = venv / "bin" / "python"
        base = getattr(sys, "_base_executable", sys.executable)
        run([base, "-m", "venv", str(venv)], tmp, "fresh virtual environment")
        wheel = str(wheels[0].resolve())
        run([str(py), "-m", "pip", "install", "--quiet", wheel], tmp, "pip install <wheel>")
        listing = run([str(py), "-m", "pip", "list", "--format=freeze"], tmp, "pip list")
        print("pip list of the clean environment:")
        print("".join(f"  {line}\n" for line in listing.splitlines()))
        installed = {line.split("==")[0].lower() for line in listing.splitlines()}
        bad = sorted(installed & set(FORBIDDEN))
        if bad:
            raise SystemExit(f"wheel-smoke: the core install brought {', '.join(bad)}")
        where = run([str(py), "-c", "import pes; print(pes.__file__)"], tmp, "import pes").strip()
        if not where.startswith(str(venv)):
            raise SystemExit(f"wheel-smoke: pes was imported from {where}, not from the clean environment")
        times = []
        for _ in range(3):
            out = run([str(py), "-c", "import time; t = time.perf_counter(); import pes; "
                       "print(time.perf_counter() - t)"], tmp, "time of import pes")
            times.append(float(out))
        each = ", ".join(f"{t:.2f}" for t in times)
        print(f"wheel-smoke: import pes takes {min(times):.2f} s (best of 3: {each})")
        (tmp / "readme_snippet.py").write_text(
            readme_snippet() + "\nprint('README snippet: final loss', float(metrics['loss'][-1]))\n"
        )
        print(run([str(py), "readme_snippet.py"], tmp, "README library snippet").strip())
        shutil.copy(ROOT / "tests" / "estimator_smoke.py", tmp / "estimator_smoke.py")
        print(run([str(py), "estimator_smoke.py"], tmp, "every estimator").strip())
    print(f"wheel-smoke: passed in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/wheel_smoke.py DIST_FOLDER")
    sys.exit(main(Path(sys.argv[1])))
