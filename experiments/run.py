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

from experiments import cli

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


def precheck(argv: list[str]) -> None:
    """Compose and validate the overrides (a `config.ConfigError` on a bad config)."""
    from experiments import config as C

    if any(a in _PASSTHROUGH_FLAGS or a.startswith("--") for a in argv):
        return
    C.build(C.compose([a for a in argv if not a.startswith("hydra.")]))


def _body() -> None:
    import hydra  # heavy imports inside cli.main: Ctrl-C during them is clean too
    from omegaconf import DictConfig

    from experiments import runner

    @hydra.main(version_base="1.3", config_path="../configs", config_name="config")
    def _main(cfg: DictConfig) -> None:
        try:
            print(runner.run(cfg))
        except cli.Problem as err:
            cli.fail(err)

    precheck(sys.argv[1:])
    _main()


def main() -> None:
    cli.main(_body, preload=("hydra", "experiments.runner"))


if __name__ == "__main__":
    main()
