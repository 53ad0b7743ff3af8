"""Every public name of `pes` has a docstring, and every public function and method says its types.

"Public" is what the generated reference (`make api-docs`, pdoc) shows: the names in a module's
``__all__``, or, without one, its names that do not start with ``_``, in every module whose dotted
name has no part starting with ``_``.  A module-level constant is documented by a string literal
right after its assignment (or a ``#:`` comment), as pdoc reads it.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest

pdoc_doc = pytest.importorskip("pdoc.doc")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from api_docs import attach_namedtuple_constructors, public_modules  # noqa: E402

MODULES = public_modules("pes")
attach_namedtuple_constructors(MODULES)


def _members(module):
    doc = pdoc_doc.Module(module)
    explicit = "__all__" in vars(module)
    for name, member in doc.members.items():
        if isinstance(member, pdoc_doc.Module) or (not explicit and name.startswith("_")):
            continue
        if not explicit and member.taken_from[0] != module.__name__:
            continue  # imported from elsewhere; documented where it is defined
        yield member
        if isinstance(member, pdoc_doc.Class):
            for sub in member.own_members:
                if isinstance(sub, pdoc_doc.Function) and not sub.name.startswith("_"):
                    yield sub


def _untyped(fn) -> list[str]:
    sig = inspect.signature(fn.obj)
    params = list(sig.parameters.values())
    if fn.obj is not None and params and params[0].name in ("self", "cls"):
        params = params[1:]
    missing = [p.name for p in params if p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty and not isinstance(fn.obj, property):
        missing.append("return")
    return missing


def test_every_public_module_is_listed():
    names = {m.__name__ for m in MODULES}
    assert {"pes", "pes.diagnostics", "pes.estimators", "pes.outer", "pes.systems", "pes.tasks"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_public_names_have_docstrings_and_types(module):
    assert (module.__doc__ or "").strip(), f"module {module.__name__} has no docstring"
    problems = []
    for member in _members(module):
        doc = member.docstring.strip()
        if isinstance(member, pdoc_doc.Class) and doc.startswith(f"{member.name}("):
            doc = ""  # the docstring namedtuple generates, not a written one
        if not doc:
            problems.append(f"{member.fullname}: no docstring")
        if isinstance(member, pdoc_doc.Function) and not isinstance(member.obj, property):
            missing = _untyped(member)
            if missing:
                problems.append(f"{member.fullname}: no type for {', '.join(missing)}")
    assert not problems, "\n".join(problems)
