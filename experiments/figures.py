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
        print(f"    particles: {particles_summary(C.figure_particles(fig))}")


def particles_summary(settings: dict[str, str]) -> str:
    """'lockstep' when every ES-family run is lockstep, else the runs of each setting."""
    kinds = sorted({s for s in settings.values() if s != "none"})
    if len(kinds) <= 1:
        return (kinds[0] if kinds else "none") + " (every ES-family run)" * bool(kinds)
    return "; ".join(f"{k}: {', '.join(r for r, s in settings.items() if s == k)}" for k in kinds)


if __name__ == "__main__":
    main()
