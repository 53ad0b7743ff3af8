"""List the figures this suite reproduces: `make list-figures`."""

from __future__ import annotations

import textwrap

from experiments import config as C


def main() -> None:
    for name in C.figure_names():
        fig = C.load_figure(name)
        number = name.removeprefix("figure")
        print(
            f"Figure {number}: {fig.title}  (make reproduce-figure-{number}; "
            f"task: {fig.task}; {len(fig.runs)} runs)"
        )
        print(textwrap.indent(textwrap.fill(f"expected: {fig.expected}", 96), "    "))


if __name__ == "__main__":
    main()
