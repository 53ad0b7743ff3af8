"""experiments.estimator_measurements: figure 10's sweep, variance rows and interleaved timing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from experiments import estimator_measurements
from pes import results, tasks

SPEC = dict(
    trunc_lens=[1, 4],
    estimators=["pes", "nres", "gpes", "es"],
    gpes_factor=2,
    settings=["lockstep", "step_unlocked", "own_keys"],
    noise_sweep={"trunc_len": 1, "noise_every": [1, 2, 4, 8, 100]},
    chains=6,
    episodes=2,
    ground_truth_particles=200,
    num_particles=4,
    sigma=0.3,
)


def test_sweep_configs_map_the_ends_and_drop_duplicates():
    cfgs = estimator_measurements.variance_configs(SPEC, horizon=8)
    keys = [c[:4] for c in cfgs]
    assert len(keys) == len(set(keys))
    # GPES at W=4 would need noise_every 8 = T: that is NRES, left out of the W sweep
    assert not any(c.estimator == "gpes" and c.trunc_len == 4 for c in cfgs)
    sweep = [c for c in cfgs if c.family == "noise_sweep" and c.setting == "lockstep"]
    assert [(c.label, c.noise_every) for c in sweep] == [("gpes4", 4)]  # the rest are in the W sweep
    w1 = [(c.label, c.noise_every) for c in cfgs if c.trunc_len == 1 and c.setting == "lockstep"]
    assert w1 == [("pes", 1), ("nres", 8), ("gpes2", 2), ("es", 1), ("gpes4", 4)]


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(trunc_lens=[3]), "trunc_lens=\\[3\\] is invalid; allowed: a non-empty list of divisors"),
        (dict(settings=["free"]), "settings=\\['free'\\] is invalid"),
        (
            dict(noise_sweep={"trunc_len": 2, "noise_every": [3]}),
            "noise_sweep.noise_every=\\[3\\] is invalid",
        ),
        (dict(gpes_factor=1), "gpes_factor=1 is invalid"),
        (dict(ground_truth_particles=30), "ground_truth_particles=30 is invalid"),
    ],
)
def test_bad_sweep_settings_fail_in_one_line(change, match):
    with pytest.raises(ValueError, match=f"here: {match}"):
        estimator_measurements.check_variance_spec({**SPEC, **change}, 8, "here")


@pytest.mark.integration
def test_measure_variance_rows_follow_the_schema_and_compare_with_pes():
    lq = tasks.make("linear_quadratic", dim=2, decay=0.5, horizon=8)
    spec = {
        **SPEC,
        "trunc_lens": [1, 4],
        "noise_sweep": None,
        "settings": ["lockstep", "own_keys"],
        "chains": 40,
    }
    logs, summaries = [], []
    rows, detail = estimator_measurements.measure_variance(
        lq, spec, jax.random.key(0), task_label="lq", seed=0, log=logs.append, on_reference=summaries.append
    )
    results.validate(rows.assign(figure="figure10"))
    assert set(rows["run_id"]) >= {"var-lq-pes-lockstep-w1", "var-lq-nres-own_keys-w4", "var-lq-reference"}
    nres = rows[(rows.run_id == "var-lq-nres-lockstep-w1")].set_index("metric")["value"]
    assert nres["num_estimates"] == 40 * 2 * 8
    pes_rows = rows[(rows.run_id == "var-lq-pes-lockstep-w1")].set_index("metric")["value"]
    assert pes_rows["variance_vs_pes"] == pytest.approx(1.0)
    assert nres["variance_vs_pes"] == pytest.approx(nres["variance"] / pes_rows["variance"])
    assert nres["variance_vs_pes_hi"] > nres["variance_vs_pes"]
    assert float(rows[rows.metric == "reference_floor"]["value"].iloc[0]) > 0
    # truncated ES is biased for the whole-episode gradient here, PES is not
    es_bias = rows[(rows.run_id == "var-lq-es-lockstep-w1") & (rows.metric == "bias2")]["value"].iloc[0]
    assert es_bias > 0.05 and es_bias > 10 * abs(pes_rows["bias2"]), (es_bias, pes_rows["bias2"])
    assert {"setting", "noise_every", "family", "variance"} <= set(detail.columns)
    # resumable: finished configurations are not recomputed
    done = {
        tuple(r[k] for k in ("estimator", "setting", "trunc_len", "noise_every")): r
        for r in detail.to_dict("records")
    }
    logs2 = []
    again, _ = estimator_measurements.measure_variance(
        lq, spec, jax.random.key(0), task_label="lq", seed=0, log=logs2.append, done=done
    )
    assert len(logs2) == 1  # the reference only
    pd.testing.assert_frame_equal(again.reset_index(drop=True), rows.reset_index(drop=True))
    # with the reference's summary from the first call, a finished sweep computes nothing at all
    # (the merge after the parts ran as jobs) and gives the same rows, value for value
    ref_rows = rows[rows.run_id == "var-lq-reference"].set_index("metric")["value"]
    assert summaries == [{"norm_sq": ref_rows["reference_norm_sq"], "floor": ref_rows["reference_floor"]}]
    logs3, summaries3 = [], []
    merged, _ = estimator_measurements.measure_variance(
        lq, spec, jax.random.key(0), task_label="lq", seed=0, log=logs3.append, done=done,
        reference_done=summaries[0], on_reference=summaries3.append,
    )
    assert logs3 == [] and summaries3 == []
    pd.testing.assert_frame_equal(merged.reset_index(drop=True), rows.reset_index(drop=True))
    # a configuration still to do needs the reference vector itself: it is computed again
    first = next(iter(done))
    partly, _ = estimator_measurements.measure_variance(
        lq, spec, jax.random.key(0), task_label="lq", seed=0, log=logs3.append,
        done={k: v for k, v in done.items() if k != first}, reference_done=summaries[0],
        on_reference=summaries3.append,
    )
    assert summaries3 == summaries and len(logs3) == 2  # the reference and the one configuration
    pd.testing.assert_frame_equal(partly.reset_index(drop=True), rows.reset_index(drop=True))


def test_interleaved_timing_and_wall_clock_rows():
    def slow(n):
        return jax.jit(lambda s: (s + jnp.sum(jnp.sin(jnp.arange(n) * s)), {}))

    entries = {
        "small": (jax.jit(lambda: jnp.float32(0.0)), slow(1_000)),
        "large": (jax.jit(lambda: jnp.float32(0.0)), slow(2_000_000)),
    }
    timed = estimator_measurements.interleaved_timing(entries, rounds=3, steps_per_call=2, log=lambda m: None)
    assert timed["large"].s_per_step > timed["small"].s_per_step > 0
    run_rows = pd.DataFrame(
        [
            row
            for s in (1, 2)
            for row in results.rows(
                dict(run_id=f"r-{s}", figure="f", task="t", estimator="pes",
                     trunc_len=1, sigma=0.1, num_particles=2, seed=s),
                {"outer_step": [0, 10], "loss": [1.0, 1.0]},
                trunc_len=1,
            )
        ]
    )
    wc = estimator_measurements.wall_clock_rows(run_rows, timed, key_of=lambda rid: "large")
    got = wc[wc.metric == "wall_clock_s"].sort_values(["seed", "outer_step"])["value"].to_numpy()
    t = timed["large"]
    np.testing.assert_allclose(got, [t.init_s, t.init_s + 10 * t.s_per_step] * 2)
    assert set(wc.metric) == {"wall_clock_s", "s_per_step", "s_per_step_spread", "init_s"}
