"""Run one experiment from the Hydra configs.

    python -m experiments.run task=influence_balancing estimator=pes estimator.trunc_len=10 seed=5
    python -m experiments.run -m estimator=pes,es seed=1,2      # Hydra multirun sweep

Bad values fail before any compute with a one-line error naming the value and what is
allowed.  Results go to <results_root>/<profile>/<figure_id>/runs/<run_id>/.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from experiments import config as C
from experiments import runner

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
        out = runner.run(cfg)
    except C.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except runner.RunFailed as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(out)


def precheck(argv: list[str]) -> None:
    """Compose and validate the overrides; exit 2 with one line on a bad config."""
    if any(a in _PASSTHROUGH_FLAGS or a.startswith("--") for a in argv):
        return
    try:
        C.build(C.compose([a for a in argv if not a.startswith("hydra.")]))
    except C.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    precheck(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
