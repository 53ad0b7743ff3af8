"""Reproduce one paper figure: its runs, its post-steps, one merged table, the plot.

    python -m experiments.reproduce figure=figure2 profile=quick [results_root=...] [plot=false]
                                    [<step>.<setting>=<value> ...] [any Hydra override ...]
                                    [jobs=<k> | hydra/launcher=<name> hydra.launcher.<key>=<value>]
                                    [launch.<key>=<value> ...]

``figure=`` names ``configs/figure/<figure>.yaml`` (``figure2`` or ``2``) or a figure YAML
anywhere (a path).  Every figure goes through the same pipeline (`experiments.pipeline`):
check everything before any compute, the runs, the post-steps, one merged table
``<results_root>/<profile>/<figure id>/metrics.csv``, the plot, and ``figure.json``.
Hydra overrides on the command line apply to every run and post-step (e.g.
``task.data_dir=...``).  With ``jobs=<k>`` (k > 1) or ``hydra/launcher=<name>``, the runs and
post-steps first run as jobs of that Hydra launcher, then the pipeline verifies and merges
them (`experiments.launch`, docs/cluster.md).  One command per figure and results folder at a
time: another waits.
"""

from __future__ import annotations

import sys

try:  # first: cli installs the Ctrl-C handler; an interrupt during its own import ends the same way
    from experiments import cli
except KeyboardInterrupt:
    if __name__ != "__main__":
        raise
    print("interrupted: nothing was lost; rerun the same command", file=sys.stderr)
    raise SystemExit(130) from None

with cli.clean_imports(__name__ == "__main__"):  # Ctrl-C during these imports: one line, exit 130
    import shlex

    from experiments import launch

    # the pipeline's stages, importable from here as well (``reproduce.prepare``, ...)
    from experiments.pipeline import (  # noqa: F401
        RECORD,
        STEPS,
        Plan,
        PlotFailed,
        PreparedStep,
        figure_record,
        parse,
        plot,
        prepare,
        reproduce,
        run_all,
        run_step,
        split_changes,
        step_fingerprint,
    )


def _command() -> None:
    figure, profile, extra, plot_figure = parse(sys.argv[1:])
    jobs, extra = launch.split(extra)  # jobs=, launch.*, hydra/launcher=, hydra.*: the job layer's
    overrides = launch.launcher_overrides(jobs)
    if overrides is None:
        reproduce(figure, profile, extra, plot_figure=plot_figure)
    else:
        command = "python -m experiments.reproduce " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        launch.reproduce(figure, profile, extra, overrides, plot_figure=plot_figure, command=command)


def main() -> None:
    """The command line: one-line errors, Ctrl-C exits 130 in one line (`experiments.cli`)."""
    cli.main(_command)


if __name__ == "__main__":
    main()
