"""Build the API reference of `pes` with pdoc (``make api-docs``); any pdoc warning is an error.

    python scripts/api_docs.py build/api

One adjustment before rendering: a `typing.NamedTuple`'s generated ``__new__`` belongs to no
module, so pdoc cannot resolve its postponed annotations (``Callable``, ``PyTree``, ...) and
warns; pointing ``__new__.__module__`` at the class's module lets pdoc read them where they were
written.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import warnings
from pathlib import Path


def public_modules(package: str = "pes") -> list:
    """The package and every submodule whose dotted name has no part starting with ``_``."""
    root = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, f"{package}.")]
    return [importlib.import_module(n) for n in names if not any(p.startswith("_") for p in n.split("."))]


def attach_namedtuple_constructors(modules) -> None:
    for module in modules:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            new = cls.__new__
            if issubclass(cls, tuple) and hasattr(cls, "_fields") and inspect.isfunction(new):
                if new.__module__.startswith("namedtuple_"):
                    new.__module__ = cls.__module__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    args = parser.parse_args(argv)
    import pdoc
    import pdoc.extract
    import pdoc.render

    modules = public_modules()
    attach_namedtuple_constructors(modules)
    pdoc.render.configure(docformat="google", search=False, show_source=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # every public module: from "pes" pdoc alone follows only the submodules in `pes.__all__`
        specs, covered = [], set()
        for module in modules:
            if module.__name__ not in covered:
                specs.append(module.__name__)
                covered.update(pdoc.extract.walk_specs([module.__name__]))
        pdoc.pdoc(*specs, output_directory=args.out)
    problems = [w for w in caught if w.filename.startswith(str(Path(pdoc.__file__).parent))]
    for w in problems:
        print(f"pdoc: {w.message}", file=sys.stderr)
    if problems:
        print(f"api-docs: {len(problems)} pdoc warning(s); fix the docstrings or annotations above",
              file=sys.stderr)
        return 1
    print(f"API reference: {args.out / 'pes.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
