"""What a release holds: ``python tests/release_check.py dist`` (run by ``make release-check``).

Checks the wheel and the sdist that ``python -m build`` wrote into the folder:

* one version everywhere: the file names, the wheel's METADATA, ``pes/_version.py`` and the first
  release heading of CHANGELOG.md;
* the wheel holds the library (every module of ``pes/`` in the checkout and the packaged UCI yacht
  data) and nothing else: no tests, results, experiments, configs, scripts, notebooks or docs;
* its core requirements are exactly jax, optax and numpy; the extras are declared;
* the sdist builds the wheel (pyproject.toml, README.md, CHANGELOG.md, the same data files) and
  carries no results or virtual environments.

Prints the wheel's file list.  Exit status 1 with one line per problem.  Standard library only.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = {"jax", "optax", "numpy"}
EXTRAS = {"suite", "data", "control", "bench", "sweep", "notebook", "dev"}
DATA_FILES = ("pes/data/uci/yacht_hydrodynamics.data", "pes/data/uci/README.md")
NOT_IN_WHEEL = (
    "tests/", "results/", "experiments/", "configs/", "scripts/", "notebooks/", "docs/", "benchmarks/"
)
NOT_IN_SDIST = ("results/", ".venv/", "dist/", "build/", "tests/", "experiments/", "configs/")


def version() -> str:
    text = (ROOT / "pes" / "_version.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, flags=re.M).group(1)


def changelog_version() -> str | None:
    match = re.search(r"^## \[?v?([0-9][^\]\s]*)\]?", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    return match.group(1) if match else None


def main(dist: Path) -> int:
    problems: list[str] = []
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"release-check: expected one wheel and one sdist in {dist}; found {wheels + sdists}")
        return 1
    wheel, sdist = wheels[0], sdists[0]
    v = version()
    if wheel.name != f"pes_repro-{v}-py3-none-any.whl":
        problems.append(f"wheel {wheel.name} does not carry version {v} (pes/_version.py)")
    if sdist.name != f"pes_repro-{v}.tar.gz":
        problems.append(f"sdist {sdist.name} does not carry version {v} (pes/_version.py)")
    if changelog_version() != v:
        problems.append(
            f"CHANGELOG.md's first release heading is {changelog_version()!r}, not {v!r}: add '## {v}'"
        )

    with zipfile.ZipFile(wheel) as zf:
        names = sorted(zf.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
    print(f"{wheel.name}: {len(names)} files")
    for name in names:
        print(f"  {name}")
    for name in names:
        top = name.split("/")[0]
        if top != "pes" and not top.endswith(".dist-info"):
            problems.append(f"wheel holds {name}, outside the pes package")
        if name.startswith(NOT_IN_WHEEL):
            problems.append(f"wheel holds {name}")
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "pes").rglob("*.py"))
    for need in (*modules, *DATA_FILES):
        if need not in names:
            problems.append(f"wheel lacks {need}")
    if meta["Version"] != v:
        problems.append(f"wheel METADATA version {meta['Version']} is not {v}")
    core = set()
    for req in meta.get_all("Requires-Dist") or []:
        if "extra ==" not in req:
            core.add(re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower())
    if core != CORE:
        problems.append(f"core requirements are {sorted(core)}; allowed: {sorted(CORE)}")
    extras = set(meta.get_all("Provides-Extra") or [])
    if extras != EXTRAS:
        problems.append(f"extras are {sorted(extras)}; expected {sorted(EXTRAS)}")

    with tarfile.open(sdist) as tf:
        members = [m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name]
    for need in ("pyproject.toml", "README.md", "CHANGELOG.md", *DATA_FILES):
        if need not in members:
            problems.append(f"sdist lacks {need}")
    for name in members:
        if name.startswith(NOT_IN_SDIST):
            problems.append(f"sdist holds {name}")
    print(f"{sdist.name}: {len(members)} entries")

    for problem in problems:
        print(f"release-check: {problem}")
    if not problems:
        print(f"release-check: version {v}; wheel and sdist hold what they should")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/release_check.py DIST_FOLDER")
    sys.exit(main(Path(sys.argv[1])))
