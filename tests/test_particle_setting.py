"""`estimator.particles`: lockstep | step_unlocked, the one config name of the library's `stagger` flag;
`stagger` is read only in recorded configs (runs made before `particles` existed)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from experiments import config

BASE = ["task=linear_quadratic", "estimator.num_particles=8", "estimator.trunc_len=2"]


@pytest.mark.parametrize("name", ["pes", "es", "nres", "gpes"])
@pytest.mark.parametrize(
    "overrides, stagger",
    [
        ([], False),
        (["estimator.particles=lockstep"], False),
        (["estimator.particles=step_unlocked"], True),
    ],
)
def test_particles_map_to_the_library_flag(name, overrides, stagger):
    cfg = config.compose([f"estimator={name}", *BASE, *overrides])
    built = config.build(cfg)
    assert built.estimator.hparams.get("stagger", False) is stagger  # (es records it only when on)
    assert config.particle_setting(OmegaConf.to_container(cfg.estimator)) == (
        "step_unlocked" if stagger else "lockstep"
    )


def test_recorded_configs_with_the_old_spelling_keep_their_fingerprint():
    new = config.compose(["estimator=pes", *BASE, "estimator.particles=step_unlocked"])
    lock = config.compose(["estimator=pes", *BASE])
    assert config.fingerprint(lock) != config.fingerprint(new)
    for cfg, stagger in ((new, True), (lock, False)):
        # a config recorded before `particles` existed: stagger, no particles key
        legacy = OmegaConf.to_container(cfg)
        del legacy["estimator"]["particles"]
        legacy["estimator"]["stagger"] = stagger
        assert config.fingerprint(legacy) == config.fingerprint(cfg)
        # one recorded with both keys (stagger: null beside particles)
        both = OmegaConf.to_container(cfg)
        both["estimator"]["stagger"] = None
        assert config.recorded_fingerprint({"config": both}) == config.fingerprint(cfg)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            ["estimator.particles=free"],
            "estimator.particles='free' is invalid; allowed: lockstep, step_unlocked",
        ),
        (
            ["estimator.stagger=true"],
            "estimator.stagger is not a config key; allowed under 'estimator': .*particles",
        ),
        (
            ["+estimator.stagger=true"],
            "estimator.stagger=True is not a config key; "
            "allowed: estimator.particles=lockstep or step_unlocked",
        ),
    ],
)
def test_bad_particle_settings_fail_in_one_line(overrides, match):
    with pytest.raises(config.ConfigError, match=match):
        config.build(config.compose(["estimator=pes", *BASE, *overrides]))
