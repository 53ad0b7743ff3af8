"""The import rules of docs/architecture.md hold for every file, and the page states the rules this
test enforces (its table's "may import" column is read here, so that page and test cannot drift).

Imports are read from the syntax tree (top-level and inside functions), notebooks from their code
cells.  Each rule has a negative control: a planted violation is found.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "architecture.md"

# room -> the rooms of this project it may import (itself included where it has modules)
ALLOWED = {
    "pes": {"pes"},
    "experiments": {"pes", "experiments"},
    "scripts": {"pes", "scripts"},
    "benchmarks": {"pes", "experiments", "benchmarks"},
    "notebooks": {"pes", "experiments", "scripts"},
}
ROOMS = ("pes", "experiments", "scripts", "benchmarks", "tests", "notebooks")
# packages the library never uses (Hydra and OmegaConf live in experiments/, plotting in scripts/)
PES_FORBIDDEN = {"hydra", "omegaconf", "matplotlib"}
# files that read results only: no JAX, so no computation
READ_ONLY = ("scripts", "notebooks/figure.ipynb")
COMPUTE = {"jax", "jaxlib", "optax", "flax"}
# reading a file: builtin open, Path.open/read_text/read_bytes, np/json/pickle.load, pandas readers
READERS = {"read_text", "read_bytes", "read_csv", "read_json", "loadtxt", "genfromtxt", "fromfile", "urlopen"}


def room_of(module: str) -> str | None:
    """The room a module name belongs to (plot scripts import `_style` with scripts/ on the path)."""
    top = module.split(".")[0]
    if top in ROOMS:
        return top
    if top == "_style" or top.startswith("plot_figure"):
        return "scripts"
    return None


def _trees(root: Path, room: str):
    folder = root / room
    for path in sorted(folder.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))
    for path in sorted(folder.rglob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join(
            "".join(c["source"]) for c in cells if c["cell_type"] == "code"
        )
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
        yield path, ast.parse(code, str(path))


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for room, allowed in ALLOWED.items():
        for path, tree in _trees(root, room):
            where = path.relative_to(root)
            for line, module in _imports(tree):
                target = room_of(module)
                if target is not None and target not in allowed:
                    found.append(f"{where}:{line}: {room}/ imports {module} ({target}/ is not allowed)")
                if room == "pes" and module.split(".")[0] in PES_FORBIDDEN:
                    found.append(f"{where}:{line}: pes/ imports {module}")
                if where.as_posix().startswith(READ_ONLY) and module.split(".")[0] in COMPUTE:
                    found.append(f"{where}:{line}: {where} reads results only but imports {module}")
            if room != "pes":
                continue
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                fn = node.func
                if isinstance(fn, ast.Name) and fn.id == "print":
                    found.append(f"{where}:{node.lineno}: pes/ prints")
                reads = (isinstance(fn, ast.Name) and fn.id == "open") or (
                    isinstance(fn, ast.Attribute)
                    and (
                        fn.attr in READERS
                        or fn.attr == "open"
                        or (fn.attr == "load" and isinstance(fn.value, ast.Name)
                            and fn.value.id in {"np", "numpy", "json", "pickle"})
                    )
                )
                if reads and where.parts[:2] != ("pes", "data"):
                    found.append(f"{where}:{node.lineno}: pes/ reads a file outside pes.data")
    return found


def test_every_room_imports_only_what_the_architecture_page_allows():
    assert violations() == []


def test_the_page_states_the_rules_this_test_enforces():
    """The table of docs/architecture.md: each room's "may import" cell names exactly ALLOWED."""
    stated = {}
    for line in PAGE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`(\w+)/`", cells[0]) if len(cells) == 3 else None
        if m and m.group(1) in ALLOWED:
            stated[m.group(1)] = set(re.findall(r"`(\w+)`", cells[2]))
    assert stated == ALLOWED
    assert "tests/test_architecture.py" in PAGE.read_text()


@pytest.mark.parametrize(
    ("path", "code", "expected"),
    [
        ("pes/bad.py", "def f():\n    from experiments import io\n", "imports experiments (experiments/"),
        ("pes/bad.py", "import omegaconf\n", "pes/ imports omegaconf"),
        ("pes/bad.py", "def f():\n    print(1)\n", "pes/ prints"),
        ("pes/bad.py", "import numpy as np\nx = np.load('a.npy')\n", "reads a file outside pes.data"),
        ("pes/bad.py", "from pathlib import Path\nx = Path('a').read_text()\n", "reads a file outside"),
        ("experiments/bad.py", "import plot_figure2\n", "experiments/ imports plot_figure2"),
        ("scripts/bad.py", "from experiments import figures\n", "scripts/ imports experiments"),
        ("benchmarks/bad.py", "from tests import helpers\n", "benchmarks/ imports tests"),
        ("scripts/plot_x.py", "import jax.numpy as jnp\n", "reads results only but imports jax.numpy"),
        ("benchmarks/ok.py", "import jax\nfrom experiments import io\n", None),
    ],
)
def test_a_planted_violation_is_found(tmp_path, path, code, expected):
    for room in ALLOWED:
        (tmp_path / room).mkdir()
    (tmp_path / "pes" / "data").mkdir()
    (tmp_path / "pes" / "data" / "ok.py").write_text("x = open('f').read()\n")  # pes.data may read
    (tmp_path / path).write_text(code)
    found = violations(tmp_path)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found


def test_a_planted_notebook_import_is_found(tmp_path):
    for room in ALLOWED:
        (tmp_path / room).mkdir()
    cell = {"cell_type": "code", "source": ["%matplotlib inline\n", "from tests import helpers\n"]}
    (tmp_path / "notebooks" / "x.ipynb").write_text(json.dumps({"cells": [cell]}))
    assert [v.split(": ", 1)[1] for v in violations(tmp_path)] == [
        "notebooks/ imports tests (tests/ is not allowed)"
    ]


# ----------------------------------------------------------------------------- one name per module

SHORT_ALIAS = re.compile(r"[A-Z][A-Z0-9]?")
NAMED_ROOMS = ("pes", "experiments", "scripts", "benchmarks", "tests", "notebooks")


def short_aliases(root: Path = ROOT) -> list[str]:
    """Imports renamed to one or two capitals (``from experiments import config as C``): a module
    is called by its own name everywhere, so one alias cannot mean two modules in two rooms."""
    found = []
    for room in NAMED_ROOMS:
        if not (root / room).is_dir():
            continue
        for path, tree in _trees(root, room):
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for alias in node.names:
                        if alias.asname and SHORT_ALIAS.fullmatch(alias.asname):
                            found.append(
                                f"{path.relative_to(root)}:{node.lineno}: {alias.name} imported as "
                                f"{alias.asname}; use its own name"
                            )
    return found


def test_modules_are_imported_by_their_own_names():
    assert short_aliases() == []


@pytest.mark.parametrize(
    "code",
    [
        "from experiments import config as C\n",
        "def f():\n    from pes.estimators import particles as P\n",
        "import pes.variance as V\n",
        "from experiments import claims as CL, check\n",
    ],
)
def test_a_planted_short_alias_is_found(tmp_path, code):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "bad.py").write_text(code)
    (tmp_path / "experiments" / "ok.py").write_text("import numpy as np\nfrom pes import grid\n")
    found = short_aliases(tmp_path)
    assert len(found) == 1 and found[0].startswith("experiments/bad.py:") and "use its own name" in found[0]
