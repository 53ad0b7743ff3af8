"""Run one experiment from the Hydra configs.

    python -m experiments.run task=influence_balancing estimator=pes estimator.trunc_len=10 seed=5
    python -m experiments.run -m estimator=pes,es seed=1,2      # Hydra multirun sweep

Bad values fail before any compute with a one-line error naming the value and what is
allowed; so do unusable run folders (see `experiments.runner`).  Ctrl-C exits 130 with one
line saying what was kept; rerunning the same command resumes.  Results go to
<results_root>/<profile>/<figure_id>/runs/<run_id>/.
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
    import hydra
    from omegaconf import DictConfig

    from experiments import config, runner

_PASSTHROUGH_FLAGS = (
    "-m",
    "--multirun",
    "-h",
    "--help",
    "--hydra-help",
    "-c",
    "--cfg",
    "-i",
    "--info",
    "--shell-completion",
)


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def _main(cfg: DictConfig) -> None:
    try:
        print(runner.run(cfg))
    except cli.Problem as err:  # Hydra would print a traceback for it
        cli.fail(err)


def precheck(argv: list[str]) -> None:
    """Compose and validate the overrides (a `config.ConfigError` on a bad config)."""
    if any(a in _PASSTHROUGH_FLAGS or a.startswith("--") for a in argv):
        return
    config.build(config.compose([a for a in argv if not a.startswith("hydra.")]))


def _command() -> None:
    precheck(sys.argv[1:])
    _main()


def main() -> None:
    cli.main(_command)


if __name__ == "__main__":
    main()
