"""Claims as code: the claim language (validation, every stat and check), the check command's
table and exit codes, on small hand-made tables (no compute)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from experiments import check, claims, config, figures, integrity
from pes import results

FIG = {
    "id": "figuretest",
    "profiles": {"quick": [], "paper": []},
    "runs": [
        {"id": "pes", "label": "PES"},
        {"id": "es", "label": "ES"},
        {"id": "tbptt", "label": "TBPTT"},
    ],
}


def rows(run_id, metric, steps, values, *, seed=0, estimator=None, **cols):
    base = dict(
        run_id=run_id,
        figure="figuretest",
        task="t",
        estimator=estimator or run_id.split("-")[0],
        trunc_len=1,
        sigma=0.1,
        num_particles=10,
        seed=seed,
    )
    base.update(cols)
    return [
        dict(base, outer_step=s, inner_steps=s, metric=metric, value=float(v)) for s, v in zip(steps, values)
    ]


def frame(*parts):
    """A figure's merged table (`results.FIGURE_COLUMNS`); rows without ``source`` are runs'."""
    records = [{"source": results.RUN_SOURCE, **r} for p in parts for r in p]
    return results.pd.DataFrame.from_records(records, columns=list(results.FIGURE_COLUMNS))


SOURCE = "project-derived: a test claim"


def claim(check, **kw):
    return dict({"id": "c", "claim": "a claim", "scale": "any", "source": SOURCE, "check": check}, **kw)


def one(check, df, *, profile="quick", fig=FIG, **kw):
    c = claims.validate([claim(check, **kw)], fig)
    (res,) = claims.evaluate(c, df, profile=profile, fig=fig, **{k: v for k, v in kw.items() if k in ()})
    return res


STEPS = [0, 10, 20, 30]
BASIC = frame(
    rows("pes", "loss", STEPS, [8.0, 1e-3, 1e-8, 1e-12]),
    rows("es", "loss", STEPS, [8.0, 50.0, 150.0, 210.0]),
    rows("tbptt", "loss", STEPS, [8.0, 1e3, 1e8, 3e15]),
)


# ----------------------------------------------------------------------------- checks


def test_range_pass_and_fail_show_the_measured_value():
    res = one({"type": "range", "of": {"run": "pes", "metric": "loss"}, "below": 1e-10}, BASIC)
    assert res.verdict == claims.PASS and "1e-12" in res.measured
    res = one({"type": "range", "of": {"run": "es", "metric": "loss"}, "below": 1e-10}, BASIC)
    assert res.verdict == claims.FAIL and "210" in res.measured and "< 1e-10" in res.measured


def test_range_bounds_are_strict_or_inclusive():
    m = {"run": "es", "metric": "loss"}
    assert one({"type": "range", "of": m, "max": 210}, BASIC).verdict == claims.PASS
    assert one({"type": "range", "of": m, "below": 210}, BASIC).verdict == claims.FAIL
    assert one({"type": "range", "of": m, "min": 210, "max": 300}, BASIC).verdict == claims.PASS
    assert one({"type": "range", "of": m, "above": 210}, BASIC).verdict == claims.FAIL


def test_range_over_a_list_needs_every_measure():
    of = [{"run": "es", "metric": "loss"}, {"run": "tbptt", "metric": "loss"}]
    assert one({"type": "range", "of": of, "above": 100}, BASIC).verdict == claims.PASS
    assert one({"type": "range", "of": of, "above": 100, "below": 1e3}, BASIC).verdict == claims.FAIL


def test_close_to_a_number_and_to_a_measure():
    df = frame(
        rows("pes", "theta", STEPS, [0.5, 0.1, -0.16, -0.1666]),
        rows("es", "theta", STEPS, [0.5, 1, 2, 3.25]),
        rows("tbptt", "theta", STEPS, [0.5, 1, 2, 3.26]),
    )
    assert (
        one(
            {"type": "close", "of": {"run": "pes", "metric": "theta"}, "to": -1 / 6, "atol": 1e-3}, df
        ).verdict
        == claims.PASS
    )
    assert (
        one(
            {"type": "close", "of": {"run": "pes", "metric": "theta"}, "to": -1 / 6, "atol": 1e-5}, df
        ).verdict
        == claims.FAIL
    )
    res = one(
        {
            "type": "close",
            "of": {"run": "es", "metric": "theta"},
            "to": {"run": "tbptt", "metric": "theta"},
            "rtol": 0.05,
        },
        df,
    )
    assert res.verdict == claims.PASS and "3.26" in res.measured


def test_order_ascending_descending_and_margin():
    a = {"run": "pes", "metric": "loss"}
    b = {"run": "es", "metric": "loss"}
    c = {"run": "tbptt", "metric": "loss"}
    assert one({"type": "order", "ascending": [a, b, c]}, BASIC).verdict == claims.PASS
    assert one({"type": "order", "ascending": [b, a]}, BASIC).verdict == claims.FAIL
    assert one({"type": "order", "descending": [c, b, a]}, BASIC).verdict == claims.PASS
    assert one({"type": "order", "ascending": [a, b], "margin": 200}, BASIC).verdict == claims.PASS
    assert one({"type": "order", "ascending": [a, b], "margin": 211}, BASIC).verdict == claims.FAIL


SEEDED = frame(
    rows("pes-s0", "meta_loss", [0, 5, 10], [2.0, 0.9, 0.60], seed=0, estimator="pes"),
    rows("pes-s1", "meta_loss", [0, 5, 10], [2.0, 0.9, 0.78], seed=1, estimator="pes"),
    rows("pes-s2", "meta_loss", [0, 5, 10], [2.0, 0.9, 0.66], seed=2, estimator="pes"),
    rows("tes-s0", "meta_loss", [0, 5, 10], [2.0, 0.9, 0.72], seed=0, estimator="es"),
    rows("tes-s1", "meta_loss", [0, 5, 10], [2.0, 0.9, 0.81], seed=1, estimator="es"),
    rows("tes-s2", "meta_loss", [0, 5, 10], [2.0, 0.9, 0.86], seed=2, estimator="es"),
)
SEEDED_FIG = {
    "id": "figuretest",
    "profiles": {"quick": [], "paper": []},
    "runs": [
        {"id": f"{m}-s{s}", "label": lab} for m, lab in (("pes", "PES"), ("tes", "TES")) for s in range(3)
    ],
}


def test_means_over_seeds_and_per_seed_orderings():
    pes, tes = {"label": "PES", "metric": "meta_loss"}, {"label": "TES", "metric": "meta_loss"}
    res = one({"type": "order", "ascending": [pes, tes]}, SEEDED, fig=SEEDED_FIG)
    assert res.verdict == claims.PASS and "0.68" in res.measured  # PES mean (0.6+0.78+0.66)/3
    # paired: each seed's PES below the same seed's TES
    assert (
        one({"type": "order", "per_seed": "paired", "ascending": [pes, tes]}, SEEDED, fig=SEEDED_FIG).verdict
        == claims.PASS
    )
    # all: the worst PES seed (0.78, seed 1) is above the best TES seed (0.72, seed 0)
    res = one({"type": "order", "per_seed": "all", "ascending": [pes, tes]}, SEEDED, fig=SEEDED_FIG)
    assert res.verdict == claims.FAIL and "0.78 (seed 1)" in res.measured and "0.72 (seed 0)" in res.measured
    # spread over seeds: PES 0.18 vs TES 0.14
    res = one(
        {"type": "order", "ascending": [dict(pes, seeds="spread"), dict(tes, seeds="spread")]},
        SEEDED,
        fig=SEEDED_FIG,
    )
    assert res.verdict == claims.FAIL
    # each seed separately in a range
    res = one({"type": "range", "of": dict(pes, seeds="each"), "below": 0.7}, SEEDED, fig=SEEDED_FIG)
    assert res.verdict == claims.FAIL and "seed 1 0.78" in res.measured


def test_stats_at_change_mean_last_first():
    pes = {"label": "PES", "metric": "meta_loss"}
    r = one(
        {"type": "close", "of": dict(pes, stat="at", x_at=5), "to": 0.9, "atol": 1e-9}, SEEDED, fig=SEEDED_FIG
    )
    assert r.verdict == claims.PASS
    r = one(
        {"type": "close", "of": dict(pes, stat="at", x_at=7), "to": 0.9, "atol": 1e-9}, SEEDED, fig=SEEDED_FIG
    )
    assert r.verdict == claims.PASS  # the last logged x before 7
    r = one(
        {"type": "close", "of": dict(pes, stat="change", x_at=5), "to": 0.68 - 0.9, "atol": 1e-9},
        SEEDED,
        fig=SEEDED_FIG,
    )
    assert r.verdict == claims.PASS
    r = one(
        {"type": "close", "of": dict(pes, stat="mean_last", n=2), "to": (0.9 + 0.68) / 2, "atol": 1e-9},
        SEEDED,
        fig=SEEDED_FIG,
    )
    assert r.verdict == claims.PASS
    r = one(
        {"type": "close", "of": dict(pes, stat="at", x_frac=0.5), "to": 0.9, "atol": 1e-9},
        SEEDED,
        fig=SEEDED_FIG,
    )
    assert r.verdict == claims.PASS  # half of the range 0..10
    r = one({"type": "close", "of": dict(pes, stat="first"), "to": 2.0, "atol": 0}, SEEDED, fig=SEEDED_FIG)
    assert r.verdict == claims.PASS
    r = one(
        {"type": "close", "of": dict(pes, stat="min", seeds="max"), "to": 0.78, "atol": 1e-9},
        SEEDED,
        fig=SEEDED_FIG,
    )
    assert r.verdict == claims.PASS


def test_first_reach_on_another_metric_as_x_and_mean_curve():
    env = [0, 1000, 2000, 3000]
    df = frame(
        rows("pes-seed3", "eval_return", env, [0, 200, 320, 330], seed=3, estimator="pes"),
        rows("pes-seed3", "env_steps", env, [0, 2e4, 4e4, 6e4], seed=3, estimator="pes"),
        rows("pes-seed5", "eval_return", env, [0, 100, 290, 335], seed=5, estimator="pes"),
        rows("pes-seed5", "env_steps", env, [0, 2e4, 4e4, 6e4], seed=5, estimator="pes"),
        rows("es-seed3", "eval_return", env, [0, 300, 305, 310], seed=3, estimator="es"),
        rows("es-seed3", "env_steps", env, [0, 3e4, 6e4, 9e4], seed=3, estimator="es"),
        rows("es-seed5", "eval_return", env, [0, 100, 100, 100], seed=5, estimator="es"),
        rows("es-seed5", "env_steps", env, [0, 3e4, 6e4, 9e4], seed=5, estimator="es"),
    )
    fig = {"id": "f", "runs": [{"id": "pes"}, {"id": "es"}]}
    reach = dict(metric="eval_return", x="env_steps", stat="first_above", threshold=300, seeds="mean_curve")
    # mean curve of PES: 0, 150, 305, 332.5 -> first >= 300 at 4e4; ES mean never reaches 300
    r = one({"type": "range", "of": dict(reach, run="pes"), "max": 4e4}, df, fig=fig)
    assert r.verdict == claims.PASS and "4e+04" in r.measured.replace("40000", "4e+04")
    r = one({"type": "order", "ascending": [dict(reach, run="pes"), dict(reach, run="es")]}, df, fig=fig)
    assert r.verdict == claims.PASS and "never" in r.measured
    r = one({"type": "order", "ascending": [dict(reach, run="es"), dict(reach, run="pes")]}, df, fig=fig)
    assert r.verdict == claims.FAIL
    # per seed (mean of first-reach steps): seed 5 of PES reaches at 6e4
    r = one({"type": "close", "of": dict(reach, run="pes", seeds="max"), "to": 6e4, "atol": 0}, df, fig=fig)
    assert r.verdict == claims.PASS
    # first_below
    r = one(
        {
            "type": "range",
            "of": {
                "run": "pes",
                "metric": "eval_return",
                "stat": "first_below",
                "threshold": 0,
                "seeds": "min",
            },
            "max": 0,
        },
        df,
        fig=fig,
    )
    assert r.verdict == claims.PASS


def test_slope_of_a_pooled_curve_over_runs():
    unrolls = [1, 2, 5, 10, 20, 50, 100]
    parts = []
    for u in unrolls:
        parts.append(rows(f"random-n1000-k{100 // u}", "var/random", [u], [1.3 * u], num_particles=1000))
        parts.append(
            rows(f"repeat-n1000-k{100 // u}", "var/repeat", [u], [1.3 if u < 10 else 0.8], num_particles=1000)
        )
    for n in (10, 30, 100, 1000):
        parts.append(rows(f"random-n{n}-k1", "var_n/random", [100], [5000.0 / n], num_particles=n))
    df = frame(*parts)
    fig = {"id": "f", "runs": [{"id": "random"}, {"id": "repeat"}]}
    m = {
        "run": "random-n1000-*",
        "pool": True,
        "metric": "var/random",
        "stat": "slope",
        "window": "upper_half",
    }
    r = one({"type": "close", "of": m, "to": 1.0, "atol": 1e-9}, df, fig=fig)
    assert r.verdict == claims.PASS
    m = {"run": "repeat-n1000-*", "pool": True, "metric": "var/repeat", "stat": "slope", "x_min": 10}
    assert one({"type": "close", "of": m, "to": 0.0, "atol": 1e-9}, df, fig=fig).verdict == claims.PASS
    m = {"run": "random-n*-k1", "pool": True, "x": "num_particles", "metric": "var_n/random", "stat": "slope"}
    assert one({"type": "close", "of": m, "to": -1.0, "atol": 1e-9}, df, fig=fig).verdict == claims.PASS
    # at x = 1 (one unroll) on the pooled curve
    m = {"run": "random-n1000-*", "pool": True, "metric": "var/random", "stat": "at", "x_at": 1}
    assert one({"type": "close", "of": m, "to": 1.3, "atol": 1e-9}, df, fig=fig).verdict == claims.PASS


def test_transform_reads_a_log_parameter_on_its_scale():
    df = frame(rows("pes", "theta/1", STEPS, [3.4, 2.0, 1.0, math.log(0.25)]))
    r = one(
        {"type": "range", "of": {"run": "pes", "metric": "theta/1", "transform": "exp"}, "below": 0.3}, df
    )
    assert r.verdict == claims.PASS and "0.25" in r.measured


def test_per_profile_values():
    m = {"run": "pes", "metric": "loss", "stat": "mean_last", "n": {"quick": 1, "paper": 2}}
    chk = {"type": "close", "of": m, "to": {"quick": 1e-12, "paper": (1e-8 + 1e-12) / 2}, "rtol": 1e-9}
    assert one(chk, BASIC, profile="quick").verdict == claims.PASS
    assert one(chk, BASIC, profile="paper").verdict == claims.PASS


# ----------------------------------------------------------------------------- absent rows, divergence


def test_not_run_when_not_applicable_or_rows_absent():
    res = one(
        {"type": "range", "of": {"run": "pes", "metric": "loss"}, "below": 1}, BASIC, profiles=["paper"]
    )
    assert res.verdict == claims.NOT_RUN and "not applicable to quick" in res.measured
    res = one({"type": "range", "of": {"run": "pes", "metric": "nope"}, "below": 1}, BASIC)
    assert res.verdict == claims.NOT_RUN and "no rows" in res.measured and "nope" in res.measured
    (res,) = claims.evaluate(
        claims.validate([claim({"type": "range", "of": {"run": "pes", "metric": "loss"}, "below": 1})]),
        None,
        profile="quick",
    )
    assert res.verdict == claims.NOT_RUN and "no results" in res.measured


def test_missing_expected_seed_is_not_run_rather_than_a_mean_over_fewer_seeds():
    df = SEEDED[SEEDED["run_id"] != "pes-s2"]
    c = claims.validate(
        [
            claim(
                {
                    "type": "order",
                    "ascending": [
                        {"label": "PES", "metric": "meta_loss"},
                        {"label": "TES", "metric": "meta_loss"},
                    ],
                }
            )
        ],
        SEEDED_FIG,
    )
    (res,) = claims.evaluate(
        c, df, profile="quick", fig=SEEDED_FIG, expected_runs=[r["id"] for r in SEEDED_FIG["runs"]]
    )
    assert res.verdict == claims.NOT_RUN and "pes-s2" in res.measured


def test_diverged_runs_are_shown_and_do_not_crash():
    df = frame(
        rows("pes", "loss", STEPS, [8.0, 1.0, 0.1, 0.01]),
        rows("tbptt", "loss", STEPS, [8.0, 1e20, math.inf, math.nan]),
        rows("es", "loss", STEPS[:2], [8.0, 50.0]),
    )
    statuses = {"es": {"status": "diverged", "diverged_at_outer_step": 20}}
    diverges = {"type": "range", "of": {"run": "tbptt", "metric": "loss", "diverged": "inf"}, "above": 100}
    (res,) = claims.evaluate(claims.validate([claim(diverges)], FIG), df, profile="quick", fig=FIG)
    assert res.verdict == claims.PASS and "diverged at step 20" in res.measured
    converges = {"type": "range", "of": {"run": "tbptt", "metric": "loss"}, "below": 1}
    (res,) = claims.evaluate(claims.validate([claim(converges)], FIG), df, profile="quick", fig=FIG)
    assert res.verdict == claims.FAIL and "diverged at step 20" in res.measured
    # a run marked diverged by its status (its logged values are finite)
    order = {
        "type": "order",
        "ascending": [{"run": "pes", "metric": "loss"}, {"run": "es", "metric": "loss"}],
    }
    (res,) = claims.evaluate(
        claims.validate([claim(order)], FIG), df, profile="quick", fig=FIG, statuses=statuses
    )
    assert res.verdict == claims.FAIL and "es" in res.measured and "diverged at step 20" in res.measured


def test_diverged_marker_row_of_the_runner_is_read():
    df = frame(
        rows("pes", "loss", STEPS, [8.0, 1.0, 0.1, 0.01]),
        rows("es", "loss", STEPS[:3], [8.0, 50.0, 3e30]),
        rows("es", "diverged", [20], [1.0]),
    )
    order = {
        "type": "order",
        "ascending": [{"run": "pes", "metric": "loss"}, {"run": "es", "metric": "loss"}],
    }
    (res,) = claims.evaluate(claims.validate([claim(order)], FIG), df, profile="quick", fig=FIG)
    assert res.verdict == claims.FAIL and res.measured == "pes 0.01 not < es diverged at step 20"
    above = {"type": "range", "of": {"run": "es", "metric": "loss", "diverged": "inf"}, "above": 100}
    (res,) = claims.evaluate(claims.validate([claim(above)], FIG), df, profile="quick", fig=FIG)
    assert res.verdict == claims.PASS


def test_source_column_filters():
    df = frame(rows("pes", "final/loss", [30], [5.0]), rows("es", "final/loss", [30], [7.0]))
    chk = {
        "type": "order",
        "ascending": [
            {"run": "pes", "metric": "final/loss", "source": "evaluation"},
            {"run": "es", "metric": "final/loss", "source": "evaluation"},
        ],
    }
    assert one(chk, df.assign(source="evaluation")).verdict == claims.PASS
    assert one(chk, df).verdict == claims.NOT_RUN  # negative control: run rows are not the step's


def test_a_table_without_source_is_refused_not_read_as_runs():
    """No table is read as "every row is a run's" any more: a legacy table is an error."""
    df = frame(rows("pes", "final/loss", [30], [5.0]))
    chk = {"type": "range", "of": {"run": "pes", "metric": "final/loss"}, "below": 6}
    assert one(chk, df).verdict == claims.PASS  # the same rows with the column are measured
    with pytest.raises(config.ConfigError) as err:
        one(chk, df.drop(columns="source"))
    msg = str(err.value)
    assert "\n" not in msg and "no 'source' column" in msg
    assert "fix: a figure's merged table has run_id, figure," in msg
    assert "python -m experiments.migrate folder=" in msg


def test_grid_table_minimum():
    grid = results.grid_frame(
        "t",
        "meta_objective",
        np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]),
        np.array([560.0, 552.3, math.nan]),
    )
    c = claims.validate(
        [
            claim(
                {
                    "type": "close",
                    "of": {"table": "grid", "metric": "meta_objective", "stat": "min"},
                    "to": 552,
                    "rtol": 0.01,
                }
            )
        ],
        FIG,
    )
    (res,) = claims.evaluate(c, BASIC, profile="quick", fig=FIG, grid=grid)
    assert res.verdict == claims.PASS and "552.3" in res.measured
    (res,) = claims.evaluate(c, BASIC, profile="quick", fig=FIG, grid=None)
    assert res.verdict == claims.NOT_RUN


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "bad, words",
    [
        (
            {
                "id": "c",
                "claim": "x",
                "scale": "any",
                "source": SOURCE,
                "check": {"type": "range", "of": {"run": "pes", "metric": "loss"}, "below": 1},
                "bogus": 1,
            },
            [
                "'bogus' is unknown",
                "allowed: id, claim, scale, source, profiles, check, note, finding, counted",
            ],
        ),
        (claim({"type": "ranges"}), ["check.type='ranges'", "allowed: range, close, order"]),
        (
            claim({"type": "range", "of": {"run": "pes", "metric": "loss", "stat": "fianl"}, "below": 1}),
            ["stat='fianl'", "allowed: final, first"],
        ),
        (claim({"type": "range", "of": {"run": "pes"}, "below": 1}), ["metric is missing"]),
        (claim({"type": "range", "of": {"run": "pes", "metric": "loss"}}), ["no bound", "above, below"]),
        (
            claim({"type": "range", "of": {"run": "pes", "metric": "loss", "colour": 1}, "below": 1}),
            ["'colour' is unknown", "metric, run, label"],
        ),
        (
            claim({"type": "range", "of": {"run": "pse", "metric": "loss"}, "below": 1}),
            ["run='pse' is not a run of the figure", "es, pes, tbptt"],
        ),
        (
            claim({"type": "range", "of": {"label": "PSE", "metric": "loss"}, "below": 1}),
            ["label='PSE' is unknown", "PES"],
        ),
        (
            claim({"type": "range", "of": {"run": "pes", "metric": "loss"}, "below": "small"}),
            ["below='small'", "a number"],
        ),
        (
            claim({"type": "range", "of": {"run": "pes", "metric": "loss", "stat": "mean_last"}, "below": 1}),
            ["needs n", "an integer >= 1"],
        ),
        (
            claim(
                {
                    "type": "range",
                    "of": {"run": "pes", "metric": "loss", "stat": "mean_last", "n": {"quick": 3}},
                    "below": 1,
                }
            ),
            ["no value for profile paper"],
        ),
        (
            claim({"type": "range", "of": {"run": "pes", "metric": "loss"}, "below": 1}, profiles=["fast"]),
            ["profiles=['fast']", "quick, paper"],
        ),
        (claim({"type": "close", "of": {"run": "pes", "metric": "loss"}, "to": 1}), ["no tolerance", "rtol"]),
        (
            claim({"type": "order", "ascending": [{"run": "pes", "metric": "loss"}]}),
            ["a list of >= 2 measures"],
        ),
        (
            claim(
                {
                    "type": "order",
                    "ascending": [{"run": "pes", "metric": "l"}, {"run": "es", "metric": "l"}],
                    "per_seed": "some",
                }
            ),
            ["per_seed='some'", "no, paired, all"],
        ),
        (
            claim({"type": "range", "of": {"run": "pes", "metric": "loss", "x_at": 3}, "below": 1}),
            ["x_at is only used with stat at or change"],
        ),
        ({"id": "Bad Id", "claim": "x", "check": {}}, ["id='Bad Id'", "lowercase"]),
    ],
)
def test_bad_claims_are_one_line_config_errors(bad, words):
    with pytest.raises(config.ConfigError) as err:
        claims.validate([bad], FIG)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_claims_default_to_the_figures_profiles_and_new_profiles_are_allowed(monkeypatch):
    monkeypatch.setattr(config, "profile_names", lambda: ("quick", "paper", "paper_fashion"))
    fig = dict(FIG, profiles={"quick": [], "paper": [], "paper_fashion": []})
    chk = {
        "type": "range",
        "of": {"run": "pes", "metric": "loss", "stat": "mean_last", "n": {"quick": 1, "paper": 2}},
        "below": 1,
    }
    with pytest.raises(config.ConfigError, match="no value for profile paper_fashion"):
        claims.validate([claim(chk)], fig)
    (c,) = claims.validate([claim(chk, profiles=["quick", "paper"])], fig)
    (res,) = claims.evaluate([c], BASIC, profile="paper_fashion", fig=fig)
    assert res.verdict == claims.NOT_RUN and "not applicable to paper_fashion" in res.measured
    plain = {"type": "range", "of": {"run": "pes", "metric": "loss"}, "below": 1}
    (res,) = claims.evaluate(claims.validate([claim(plain)], fig), BASIC, profile="paper_fashion", fig=fig)
    assert res.verdict == claims.PASS  # no profiles: key: every profile of the figure


def test_duplicate_ids_are_refused():
    c = claim({"type": "range", "of": {"run": "pes", "metric": "loss"}, "below": 1})
    with pytest.raises(config.ConfigError, match="used twice"):
        claims.validate([c, c], FIG)


@pytest.mark.parametrize("name", figures.figure_names())
def test_every_figure_config_has_valid_claims(name):
    fig = figures.load(name)
    validated = claims.validate(fig.get("claims"), fig)
    assert validated, f"{name} has no claims"
    # nothing to evaluate yet: every applicable claim is NOT RUN, none crashes
    for profile in config.profile_names():
        res = claims.evaluate(validated, None, profile=profile, fig=fig)
        assert {r.verdict for r in res} == {claims.NOT_RUN}


# ----------------------------------------------------------------------------- the command


def write_results(root, fig_id="figuretest", profile="quick", df=BASIC):
    d = root / profile / fig_id
    d.mkdir(parents=True)
    df.to_csv(d / "metrics.csv", index=False)
    integrity.record_digests(d)  # what experiments.reproduce records when it writes the table
    return d


def write_figure(tmp_path, figure_claims):
    """A figure config valid under the figure schema (experiments.figures) with FIG's runs."""
    path = tmp_path / "figuretest.yaml"
    runs = [dict(r, overrides=[]) for r in FIG["runs"]]
    required = dict(title="test", task="t", plot="tests/figures/plot_tiny.py", expected="x", base=[])
    path.write_text(yaml.safe_dump(dict(FIG, **required, runs=runs, claims=figure_claims)))
    return path


GOOD = [
    {
        "id": "pes-converges",
        "claim": "PES converges",
        "scale": "any",
        "source": SOURCE,
        "check": {"type": "range", "of": {"run": "pes", "metric": "loss"}, "below": 1e-10},
    },
    {
        "id": "paper-only",
        "claim": "only on paper",
        "scale": "any",
        "source": SOURCE,
        "profiles": ["paper"],
        "check": {"type": "range", "of": {"run": "pes", "metric": "loss"}, "below": 1},
    },
]
WRONG = {
    "id": "es-converges",
    "claim": "deliberately wrong: ES converges",
    "scale": "any",
    "source": SOURCE,
    "check": {"type": "range", "of": {"run": "es", "metric": "loss"}, "below": 1e-10},
}


def test_check_exit_codes_and_table(tmp_path, capsys):
    root = tmp_path / "results"
    write_results(root)
    fig = write_figure(tmp_path, GOOD)
    assert check.run([f"figure={fig}", "profile=quick", f"results_root={root}"]) == claims.EXIT_OK
    out = capsys.readouterr().out
    assert "| claim | measured | verdict |" in out
    assert "`pes-converges`: PES converges | pes 1e-12 (want < 1e-10) | PASS" in out
    assert "not applicable to quick" in out and "1 PASS, 0 FAIL, 1 NOT RUN" in out
    assert out.rstrip().splitlines()[-1] == "check: no applicable claim failed (exit 0)"
    # a deliberately wrong claim: exit 1, the measured value shown
    fig = write_figure(tmp_path, [*GOOD, WRONG])
    assert check.run([f"figure={fig}", "profile=quick", f"results_root={root}"]) == claims.EXIT_FAIL
    out = capsys.readouterr().out
    assert "deliberately wrong" in out and "es 210 (want < 1e-10) | **FAIL**" in out
    assert out.rstrip().splitlines()[-1].startswith("check: at least one claim failed: a finding")
    # report_only: same table, exit 0
    assert check.run([f"figure={fig}", f"results_root={root}", "report_only=true"]) == claims.EXIT_OK
    out = capsys.readouterr().out
    assert "**FAIL**" in out and out.rstrip().endswith("(exit 0 because report_only=true)")
    # no results for this profile: exit 3, every claim NOT RUN
    assert check.run([f"figure={fig}", "profile=paper", f"results_root={root}"]) == claims.EXIT_NO_RESULTS
    out = capsys.readouterr().out
    assert "make reproduce-figure-test PROFILE=paper" in out
    assert out.rstrip().splitlines()[-1] == (
        "check: no results for this figure and profile; nothing could be checked (exit 3)"
    )


def test_check_config_errors_exit_2(tmp_path, capsys, monkeypatch):
    bad = write_figure(
        tmp_path, [{"id": "x", "claim": "x", "check": {"type": "range", "of": {"run": "pes"}}}]
    )
    for argv in (
        [f"figure={bad}"],
        ["figure=figure99"],
        ["figure=figure2", "profile=fast"],
        ["figure=figure2", "colour=red"],
    ):
        monkeypatch.setattr("sys.argv", ["check", *argv])
        with pytest.raises(SystemExit) as exc:
            check.main()
        assert exc.value.code == claims.EXIT_CONFIG
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert err.rstrip().endswith("check: a configuration problem; nothing was checked (exit 2)")


def test_unreadable_table_names_the_file_and_the_fix(tmp_path):
    d = tmp_path / "quick" / "figuretest"
    d.mkdir(parents=True)
    (d / "metrics.csv").write_text("a,b\n1,2\n")
    integrity.record_digests(d)
    with pytest.raises(config.ConfigError, match=r"metrics.csv: columns .* are missing .* fix: rerun"):
        check.load(d)


def test_check_all_covers_figures_with_results(tmp_path, capsys):
    root = tmp_path / "results"
    assert check.run(["figure=all", f"results_root={root}"]) == claims.EXIT_NO_RESULTS
    df = frame(rows("pes-k1", "loss", [0, 1500, 3000], [8.0, 1e-11, 1e-13]))
    write_results(root, "figure2", df=df)
    code = check.run(["figure=all", f"results_root={root}"])
    out = capsys.readouterr().out
    assert "figure2 (quick)" in out and "figure3" not in out
    assert code == claims.EXIT_OK  # the runs it lacks are NOT RUN; pes-converges passes
    assert "`pes-converges`" in out and "PASS" in out


def test_provenance_from_run_json(tmp_path):
    d = write_results(tmp_path)
    for rid, wall in (("pes", 3.0), ("es", 4.5)):
        (d / "runs" / rid).mkdir(parents=True)
        meta = {
            "status": "complete",
            "wall_time_s": wall,
            "git_commit": "abcdef1234",
            "machine": {"cpu_count": 2, "processor": "x86_64", "jax_backend": "cpu"},
        }
        (d / "runs" / rid / "run.json").write_text(json.dumps(meta))
    res = check.load(d)
    assert res.statuses["pes"]["status"] == "complete"
    assert check.describe(res) == "machine 2-core x86_64 CPU; wall time 8 s (sum of runs); commit abcdef1"


def test_a_pooled_curve_ending_non_finite_is_diverged_and_the_callers_table_is_unchanged():
    df = frame(rows("pes-a", "loss", STEPS, [8.0, 1.0, 0.5, float("nan")]), rows("pes-b", "loss", [5], [0.2]))
    before = df.copy()
    fig = {"id": "f", "runs": [{"id": "pes-a"}, {"id": "pes-b"}]}
    pooled = {"run": "pes-*", "pool": True, "metric": "loss"}
    res = one({"type": "range", "of": pooled, "below": 10}, df, fig=fig)
    assert res.verdict == claims.FAIL and "diverged at step 30" in res.measured, res.measured
    res = one({"type": "range", "of": dict(pooled, diverged="inf"), "above": 10}, df, fig=fig)
    assert res.verdict == claims.PASS, res.measured
    res = one({"type": "range", "of": {"run": "pes-b", "metric": "loss"}, "below": 10}, df, fig=fig)
    assert res.verdict == claims.PASS  # the other run alone did not diverge
    assert df.equals(before)  # measured on a normalised copy


def test_the_machine_is_named_by_its_cpu_model_when_the_run_recorded_one():
    base = {"cpu_count": 2, "processor": "x86_64", "jax_backend": "cpu"}
    assert check.machine_text(base) == "2-core x86_64 CPU"
    assert check.machine_text({**base, "cpu_model": "AMD EPYC"}) == "2-core AMD EPYC"
    intel = {**base, "cpu_model": "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz"}
    assert check.machine_text(intel) == "2-core Intel Core i7-8700"
    assert check.machine_text({**base, "cpu_model": "Intel(R) Xeon(R) Processor"}) == "2-core Intel Xeon"
