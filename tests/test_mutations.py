"""The suite's mutation check (tests/mutations.py, `make mutate`)."""

from __future__ import annotations

import ast
import builtins
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import mutations

ROOT = Path(__file__).resolve().parent.parent


def test_catalogue_applies_to_the_library():
    """Every mutation's target function is in the library, applies exactly once (an `Edit`'s
    expression occurs once in its function), changes the module, still compiles, and names
    tests that exist (the catalogue follows the code)."""
    names = set()
    for m in mutations.CATALOGUE:
        assert m.name not in names, m.name
        names.add(m.name)
        text = (ROOT / m.path).read_text()
        mutated = mutations.mutate_text(text, m)
        assert mutated != text, m.name
        compile(mutated, m.path, "exec")
        if isinstance(m.change, mutations.Edit):
            assert ast.dump(ast.parse(mutated)) != ast.dump(ast.parse(text)), m.name
        for test in m.tests:
            assert (ROOT / test.split("::")[0]).is_file(), (m.name, test)
    assert len(mutations.CATALOGUE) >= 11  # the 7 audited bugs and at least 4 more


def _module_names(tree: ast.Module) -> set[str]:
    """Names bound at a module's top level (imports, definitions, assignments)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _free_names(source: str) -> set[str]:
    """Names a wrapper reads that it does not bind itself (parameters, locals, its own defs)."""
    tree = ast.parse(textwrap.dedent(source))
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    bound |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in
              [*n.posonlyargs, *n.args, *n.kwonlyargs, *filter(None, [n.vararg, n.kwarg])]}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return read - bound


def test_every_wrapper_reads_only_names_of_its_module():
    """A `Wrap`'s source runs in the target module's namespace: every name it reads (``jnp``,
    a module such as ``_common``) must be bound there, or the mutation would fail with a
    NameError instead of exercising the bug (a renamed import would go unnoticed)."""
    for m in mutations.CATALOGUE:
        if not isinstance(m.change, mutations.Wrap):
            continue
        known = _module_names(ast.parse((ROOT / m.path).read_text())) | set(dir(builtins)) | {"functools"}
        assert _free_names(m.change.source) <= known, (m.name, _free_names(m.change.source) - known)


def test_a_wrapper_reading_an_unknown_name_is_found():
    """Negative control: a wrapper that reads a module alias the target module lacks."""
    source = "def wrapper(original):\n    def f(x):\n        return C.group_where(x)\n\n    return f\n"
    assert _free_names(source) == {"C"}
    assert "C" not in _module_names(ast.parse((ROOT / mutations.PERSISTENT).read_text()))


def test_a_stale_mutation_stops_the_check():
    """A target that is gone, or an expression that is not there once, is an error naming the
    mutation (the check never runs a mutation that does not apply)."""
    m = mutations.CATALOGUE[0]
    gone = mutations.Mutation(m.name, m.description, m.path, "no_such_function", m.change, m.tests)
    with pytest.raises(SystemExit, match="no_such_function"):
        mutations.mutate_text((ROOT / m.path).read_text(), gone)
    edit = mutations.Mutation(m.name, m.description, m.path, m.target, mutations.Edit("1 + 2", "3"), m.tests)
    with pytest.raises(SystemExit, match="occurs 0 times"):
        mutations.mutate_text((ROOT / m.path).read_text(), edit)


def test_an_edit_ignores_formatting():
    """An `Edit` compares syntax trees: spacing, line breaks and comments do not matter."""
    text = "def f(x):\n    return (x  >=\n  1)  # a comment\n"
    m = mutations.Mutation("m", "d", "f.py", "f", mutations.Edit("x >= 1", "x > 1"), ())
    namespace = {}
    exec(mutations.mutate_text(text, m), namespace)
    assert namespace["f"](1) is False


@pytest.mark.slow
def test_every_catalogued_mutation_is_caught(tmp_path):
    """`make mutate`: each known bug, applied to a copy, fails at least one fast test."""
    out = tmp_path / "mutations.md"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.mutations", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3 * 3600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "**NO**" not in out.read_text()
