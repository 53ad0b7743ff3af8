"""The paper_regime profile of figures 5 and 6: the settings its rule fixes, composed as runs are.

Figure 5: the paper's horizon, truncations, sigma, outer optimizer and outer iterations with the
quick profile's inputs, MLP and particles.  Figure 6: the quick inner problem with the paper's
budget in horizons (3e6 inner steps at T = 1000 -> 6e5 at T = 200), random search reaching the
same compute on both of the claims' axes.  Every claim applies to the profile.
"""

from __future__ import annotations

import pytest

from experiments import claims, config, figures, steps


def _runs(name: str, profile: str) -> dict:
    fig = figures.load(name)
    return {
        str(r.id): config.compose(figures.run_overrides(fig, r, profile)) for r in figures.runs(fig, profile)
    }


def test_paper_regime_is_a_paper_scale_profile():
    cfg = config.compose(["profile=paper_regime"])
    assert cfg.profile.name == "paper_regime" and cfg.profile.scale == "paper"


def test_figure5_paper_regime_settings():
    quick, regime = _runs("figure5", "quick"), _runs("figure5", "paper_regime")
    assert set(regime) == set(quick) | {"val-es-k100", "val-pes-k100"}
    for rid, cfg in regime.items():
        k = int(cfg.estimator.trunc_len)
        assert (cfg.task.horizon, float(cfg.estimator.sigma), k) == (5000, 0.1, 100 if "k100" in rid else 10)
        assert cfg.outer_optimizer.name == "adam" and float(cfg.outer_optimizer.learning_rate) == 1e-2
        assert cfg.train.num_outer_steps == 5000
        assert cfg.estimator.num_particles == (32 if k == 10 else 16)
        assert list(cfg.task.hidden) == [32, 32] and cfg.task.downsample == 2
        assert cfg.task.dataset == "mnist_or_fashion"
        if rid in quick:  # the same inner model and particles as quick
            q = quick[rid]
            assert (q.task.hidden, q.task.downsample, q.estimator.num_particles) == (
                cfg.task.hidden,
                cfg.task.downsample,
                cfg.estimator.num_particles,
            )
    post = {str(e.step): e for e in figures.load("figure5").post}
    for step in ("grid", "evaluation"):
        assert steps.settings(post[step], "paper_regime", "t") == steps.settings(post[step], "quick", "t")


def test_figure6_paper_regime_budget_in_horizons():
    fig = figures.load("figure6")
    regime = _runs("figure6", "paper_regime")
    assert sorted({int(c.seed) for c in regime.values()}) == [3, 5, 7, 11]
    for cfg in regime.values():
        assert (cfg.task.horizon, list(cfg.task.hidden), cfg.task.downsample) == (200, [32] * 5, 2)
        n_k = int(cfg.estimator.num_particles) * int(cfg.estimator.trunc_len)
        budget = int(cfg.train.num_outer_steps) * n_k
        assert n_k == 100 and budget == 600_000
        assert budget // cfg.task.horizon == 3_000_000 // 1000  # 3,000 horizons, as the paper's plot
    rs = steps.settings({str(e.step): e for e in fig.post}["random_search"], "paper_regime", "t")
    cfg = next(iter(regime.values()))
    runs = int(cfg.task.num_eval_runs)
    assert rs["num_configs"] * cfg.task.horizon >= budget  # the official axis: T per configuration
    assert rs["num_configs"] * cfg.task.horizon * runs >= budget  # every step random search spends


@pytest.mark.parametrize("name", ["figure5", "figure6"])
def test_every_claim_applies_to_paper_regime(name):
    fig = figures.load(name)
    for claim in claims.validate(fig.claims, fig):
        assert "paper_regime" in (claim.get("profiles") or claims.figure_profiles(fig)), claim["id"]
