"""`estimator.particles`: lockstep | step_unlocked, with `estimator.stagger` as its older spelling."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from experiments import config as C

BASE = ["task=linear_quadratic", "estimator.num_particles=8", "estimator.trunc_len=2"]


@pytest.mark.parametrize("name", ["pes", "es", "nres", "gpes"])
@pytest.mark.parametrize(
    "overrides, stagger",
    [
        ([], False),
        (["estimator.particles=lockstep"], False),
        (["estimator.particles=step_unlocked"], True),
        (["estimator.stagger=true"], True),  # the older spelling keeps working
        (["estimator.stagger=false"], False),
        (["estimator.particles=step_unlocked", "estimator.stagger=true"], True),
    ],
)
def test_particles_map_to_the_library_flag(name, overrides, stagger):
    cfg = C.compose([f"estimator={name}", *BASE, *overrides])
    built = C.build(cfg)
    assert built.estimator.hparams.get("stagger", False) is stagger  # (es records it only when on)
    assert C.particle_setting(OmegaConf.to_container(cfg.estimator)) == (
        "step_unlocked" if stagger else "lockstep"
    )


def test_both_spellings_give_one_fingerprint_and_old_runs_keep_theirs():
    new = C.compose(["estimator=pes", *BASE, "estimator.particles=step_unlocked"])
    old = C.compose(["estimator=pes", *BASE, "estimator.stagger=true"])
    assert C.fingerprint(new) == C.fingerprint(old)
    lock = C.compose(["estimator=pes", *BASE])
    assert C.fingerprint(lock) != C.fingerprint(new)
    # a config written before `particles` existed (stagger: false, no particles key)
    legacy = OmegaConf.create(OmegaConf.to_container(lock))
    del legacy.estimator["particles"]
    legacy.estimator.stagger = False
    assert C.fingerprint(legacy) == C.fingerprint(lock)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            ["estimator.particles=free"],
            "estimator.particles='free' is invalid; allowed: lockstep, step_unlocked",
        ),
        (
            ["estimator.particles=step_unlocked", "estimator.stagger=false"],
            "estimator.particles=step_unlocked contradicts estimator.stagger=false",
        ),
    ],
)
def test_bad_particle_settings_fail_in_one_line(overrides, match):
    with pytest.raises(C.ConfigError, match=match):
        C.build(C.compose(["estimator=pes", *BASE, *overrides]))
