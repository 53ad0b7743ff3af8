"""Claim scales and sources: which claims decide a profile's verdict, statistical checks with
standard errors, and how the counts, findings and stored results reach the check command and the
generated docs (no compute)."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from experiments import check, claims, config, figures, integrity
from experiments import docs as DOCS
from tests.test_claims import BASIC, FIG, claim, frame, rows

ROOT = Path(__file__).resolve().parent.parent
RANGE = {"type": "range", "of": {"run": "es", "metric": "loss"}, "below": 1.0}  # es ends at 210: FAIL


# ----------------------------------------------------------------------------- profile scales


def test_every_profile_declares_its_scale():
    scales = {p: claims.profile_scale(p) for p in config.profile_names()}
    assert set(scales.values()) <= set(claims.PROFILE_SCALES)
    assert scales["quick"] == "small" and scales["paper"] == "paper"
    assert scales["paper_fashion"] == "paper" and scales["quick_holdout"] == "small"


def test_a_new_profile_joins_by_declaring_its_scale(tmp_path, monkeypatch):
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "paper_big.yaml").write_text("name: paper_big\nscale: paper\n")
    (tmp_path / "profile" / "tiny.yaml").write_text("name: tiny\n")
    (tmp_path / "profile" / "odd.yaml").write_text("name: odd\nscale: medium\n")
    monkeypatch.setattr(claims, "CONFIG_DIR", tmp_path)
    claims.profile_scale.cache_clear()
    try:
        assert claims.profile_scale("paper_big") == "paper"
        for name, shown in (("tiny", "scale=None"), ("odd", "scale='medium'"), ("gone", "cannot be read")):
            with pytest.raises(config.ConfigError) as err:
                claims.profile_scale(name)
            msg = str(err.value)
            assert "\n" not in msg and f"{name}.yaml" in msg and shown in msg, msg
            if name != "gone":
                assert "allowed: small, paper" in msg
    finally:
        claims.profile_scale.cache_clear()


def test_the_scale_key_is_not_a_run_setting():
    fig = figures.load("figure2")
    run = figures.runs(fig, "quick")[0]
    cfg = config.compose(figures.run_overrides(fig, run, "quick"))
    assert cfg.profile.scale == "small"
    other = config.compose([*figures.run_overrides(fig, run, "quick"), "profile.scale=paper"])
    assert config.fingerprint(other) == config.fingerprint(cfg)
    changed = config.compose([*figures.run_overrides(fig, run, "quick"), "seed=4"])
    assert config.fingerprint(changed) != config.fingerprint(
        cfg
    )  # negative control: a run setting does count


# ----------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    "drop, extra, words",
    [
        ("scale", {}, ["scale is missing", "allowed: any, paper"]),
        ("source", {}, ["source is missing", "project-derived: <reason>"]),
        (None, {"scale": "huge"}, ["scale='huge'", "allowed: any, paper"]),
        (None, {"source": "project-derived"}, ["gives no reason", "project-derived: <why"]),
        (None, {"source": "project-derived:  "}, ["gives no reason"]),
        (None, {"counted": False}, ["counted: false needs finding:"]),
        (None, {"counted": "no"}, ["counted='no'", "true, false"]),
        (None, {"finding": ""}, ["finding=''", "one-line reason"]),
    ],
)
def test_a_claim_needs_its_scale_and_source(drop, extra, words):
    c = claim(RANGE, **extra)
    if drop:
        c.pop(drop)
    with pytest.raises(config.ConfigError) as err:
        claims.validate([c], FIG)
    msg = str(err.value)
    assert "\n" not in msg and "claim 'c'" in msg
    for w in words:
        assert w in msg, (w, msg)


def test_the_figure_schema_refuses_a_claim_without_scale(tmp_path):
    text = (ROOT / "configs" / "figure" / "figure9.yaml").read_text().replace("    scale: any\n", "", 1)
    path = tmp_path / "figure9.yaml"
    path.write_text(text)
    with pytest.raises(
        config.ConfigError, match=r"figure9.yaml: .*claim 'pes-near-optimum': scale is missing"
    ):
        figures.load(str(path))


# ----------------------------------------------------------------------------- verdicts by scale


def evaluate(c, profile, df=BASIC):
    (res,) = claims.evaluate(claims.validate([c], FIG), df, profile=profile, fig=FIG)
    return res


def test_a_paper_scale_claim_is_indicative_on_a_small_profile_and_decides_on_paper():
    c = claim(RANGE, scale="paper")
    quick = evaluate(c, "quick")
    assert quick.verdict == claims.FAIL and not quick.counted and quick.role == claims.INDICATIVE
    assert "210" in quick.measured  # the measured value is shown
    assert claims.exit_code([quick]) == claims.EXIT_OK
    assert "FAIL (paper-scale, indicative)" in claims.table([quick]) and "**FAIL**" not in claims.table(
        [quick]
    )
    assert claims.counts([quick]) == {
        claims.PASS: 0,
        claims.FAIL: 0,
        claims.NOT_RUN: 0,
        claims.INDICATIVE: 1,
        claims.REPORTED: 0,
    }
    assert "1 paper-scale claim shown as indicative (c FAIL)" in claims.summary([quick])
    paper = evaluate(c, "paper")
    assert paper.verdict == claims.FAIL and paper.counted and not paper.role
    assert claims.exit_code([paper]) == claims.EXIT_FAIL
    any_scale = evaluate(claim(RANGE), "quick")  # negative control: scale any decides on quick
    assert any_scale.counted and claims.exit_code([any_scale]) == claims.EXIT_FAIL


def test_a_finding_kept_with_counted_false_never_decides():
    c = claim(RANGE, counted=False, finding="stricter than the paper's own code")
    for profile in ("quick", "paper"):
        res = evaluate(c, profile)
        assert (
            res.verdict == claims.FAIL
            and res.role == claims.REPORTED
            and claims.exit_code([res]) == claims.EXIT_OK
        )
        assert res.finding == "stricter than the paper's own code"
        assert "FAIL (finding, not counted)" in claims.table([res])


def test_check_command_exit_code_follows_the_counted_claims(tmp_path, capsys):
    from tests.test_claims import write_figure, write_results

    root = tmp_path / "results"
    write_results(root)
    fig = write_figure(tmp_path, [dict(claim(RANGE, scale="paper"), id="es-small")])
    assert check.run([f"figure={fig}", "profile=quick", f"results_root={root}"]) == claims.EXIT_OK
    assert "FAIL (paper-scale, indicative)" in capsys.readouterr().out
    write_results(root, profile="paper")
    assert check.run([f"figure={fig}", "profile=paper", f"results_root={root}"]) == claims.EXIT_FAIL


# ----------------------------------------------------------------------------- standard errors


def bias_table(pes_b, pes_v, es_b, es_v, floor):
    parts = []
    for run, est, b, v in (("var-pes", "pes", pes_b, pes_v), ("var-es", "es", es_b, es_v)):
        parts.append(rows(run, "bias2", [100], [b], estimator=est, source="truncation_variance"))
        parts.append(rows(run, "bias2_se", [100], [v], estimator=est, source="truncation_variance"))
    parts.append(
        rows("var-ref", "reference_floor", [100], [floor], estimator="es", source="truncation_variance")
    )
    return frame(*parts)


BIAS_FIG = {"id": "figuretest", "profiles": {"quick": [], "paper": []}, "runs": [{"id": "x"}]}


def bias_claim(z=3.0):
    def m(run):
        return {
            "run": run,
            "source": "truncation_variance",
            "metric": "bias2",
            "se": "bias2_se",
            "se_model": "squared_norm",
            "se_floor": {"run": "var-ref", "source": "truncation_variance", "metric": "reference_floor"},
        }

    return claim({"type": "order", "z": z, "ascending": [m("var-pes"), m("var-es")]})


def test_squared_norm_standard_errors_decide_a_biased_estimator():
    # se = sqrt(4 b v + 2 v^2) with v = bias2_se + reference floor
    df = bias_table(0.014, 9e-4, 0.096, 4e-5, 4e-4)
    (res,) = claims.evaluate(claims.validate([bias_claim()], BIAS_FIG), df, profile="quick", fig=BIAS_FIG)
    se_pes = math.sqrt(4 * 0.014 * 1.3e-3 + 2 * 1.3e-3**2)
    se_es = math.sqrt(4 * 0.096 * 4.4e-4 + 2 * 4.4e-4**2)
    need = 3 * math.hypot(se_pes, se_es)
    assert res.verdict == claims.PASS and f"want > {claims.fmt(need)}" in res.measured, res.measured
    assert f"± {claims.fmt(se_es)} (se)" in res.measured
    # the same gap with noisier estimates is not significant: FAIL (a bare threshold would pass it)
    noisy = bias_table(0.014, 2e-2, 0.096, 2e-2, 4e-4)
    (res,) = claims.evaluate(claims.validate([bias_claim()], BIAS_FIG), noisy, profile="quick", fig=BIAS_FIG)
    assert res.verdict == claims.FAIL and "not <" in res.measured
    # ... and with z small enough it passes again: z, not the threshold, decides
    (res,) = claims.evaluate(
        claims.validate([bias_claim(z=0.1)], BIAS_FIG), noisy, profile="quick", fig=BIAS_FIG
    )
    assert res.verdict == claims.PASS


def test_range_with_z_needs_the_bound_to_hold_with_z_errors_to_spare():
    df = frame(
        rows("pes", "ratio", [1], [0.9]),
        rows("pes", "ratio_se", [1], [0.04]),
    )
    base = {"type": "range", "of": {"run": "pes", "metric": "ratio", "se": "ratio_se"}, "below": 1.0}
    assert evaluate(claim(dict(base, z=2)), "quick", df).verdict == claims.PASS  # 0.9 + 0.08 < 1
    assert evaluate(claim(dict(base, z=3)), "quick", df).verdict == claims.FAIL  # 0.9 + 0.12 >= 1


@pytest.mark.parametrize(
    "check, words",
    [
        (
            {
                "type": "order",
                "z": 3,
                "ascending": [{"run": "pes", "metric": "a"}, {"run": "es", "metric": "a"}],
            },
            ["z needs se: on every measure"],
        ),
        (
            {
                "type": "order",
                "ascending": [{"run": "pes", "metric": "a", "se": "b"}, {"run": "es", "metric": "a"}],
            },
            ["has se: but the check has no z"],
        ),
        (
            {"type": "range", "z": 0, "of": {"run": "pes", "metric": "a", "se": "b"}, "below": 1},
            ["z=0", "a number > 0"],
        ),
        (
            {
                "type": "range",
                "z": 1,
                "of": {"run": "pes", "metric": "a", "se": "b", "se_model": "cubic"},
                "below": 1,
            },
            ["se_model='cubic'", "plain, squared_norm"],
        ),
        (
            {
                "type": "range",
                "z": 1,
                "of": {"run": "pes", "metric": "a", "se": "b", "se_floor": {"run": "es", "metric": "f"}},
                "below": 1,
            },
            ["se_floor is only used with se_model: squared_norm"],
        ),
        (
            {"type": "range", "of": {"run": "pes", "metric": "a", "se_model": "plain"}, "below": 1},
            ["se_model and se_floor need se:"],
        ),
    ],
)
def test_standard_error_keys_are_checked(check, words):
    with pytest.raises(config.ConfigError) as err:
        claims.validate([claim(check)], FIG)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_one_member_of_seeds_each_shows_its_value():
    res = evaluate(
        claim({"type": "range", "of": {"run": "es", "metric": "loss", "seeds": "each"}, "below": 1}), "quick"
    )
    assert res.verdict == claims.FAIL and "es 210" in res.measured


# ----------------------------------------------------------------------------- what the docs show


def result(cid, verdict, *, counted=True, role="", finding=""):
    return claims.Result(cid, "x", ["quick"], verdict, "m", counted=counted, role=role, finding=finding)


def test_status_row_counts_pass_fail_not_run_separately_and_names_findings():
    rows_ = [
        result("a", claims.PASS),
        result("b", claims.FAIL, finding="too few estimates at W = 1000"),
        result("c", claims.NOT_RUN),
        result("d", claims.FAIL, counted=False, role=claims.INDICATIVE),
        result("e", claims.PASS, counted=False, role=claims.INDICATIVE),
    ]
    text = DOCS.verdict_word(rows_)
    assert text.startswith("partly: 1 PASS · 1 FAIL · 1 NOT RUN")
    assert "2 paper-scale, indicative: `d` FAIL, `e` PASS" in text
    assert "finding `b`: too few estimates at W = 1000" in text
    compact = DOCS.verdict_word(rows_, compact=True)  # the README: counts and the failed ids
    assert "paper-scale, indicative: 1 PASS, 1 FAIL" in compact
    assert compact.endswith("failed (findings on the figure page): `b`") and "too few" not in compact
    # 1 PASS of 1 counted, 3 NOT RUN: the NOT RUNs are counted, not hidden (the old "yes (1/1)")
    assert DOCS.verdict_word([result("a", claims.PASS)] + [result(x, claims.NOT_RUN) for x in "bcd"]) == (
        "**yes**: 1 PASS · 0 FAIL · 3 NOT RUN"
    )
    assert DOCS.verdict_word([result("a", claims.NOT_RUN)]).startswith("not run: 0 PASS")


def test_profiles_with_identical_stored_results_share_one_row(tmp_path):
    store = tmp_path / "store"
    for profile in ("quick", "paper"):
        shutil.copytree(ROOT / "results" / "reference" / "paper" / "figure9", store / profile / "figure9")
    evaluated = {k: v for k, v in DOCS.evaluate_store(store).items() if k[0] == "figure9"}
    assert DOCS.twins("figure9", evaluated) == {"quick": "paper"}
    table = DOCS.status_table(evaluated)
    (row,) = [line for line in table.splitlines() if "figure9.md" in line or "paper = quick" in line]
    assert "paper = quick (identical stored results)" in row
    # negative control: a different table for quick gives two rows
    path = store / "quick" / "figure9" / "metrics.csv.gz"
    df = pd.read_csv(path)
    df.loc[df.index[-1], "value"] += 1.0
    path.unlink()
    df.to_csv(store / "quick" / "figure9" / "metrics.csv", index=False)
    integrity.record_digests(store / "quick" / "figure9")  # a genuinely different, verified table
    evaluated = {k: v for k, v in DOCS.evaluate_store(store).items() if k[0] == "figure9"}
    assert DOCS.twins("figure9", evaluated) == {}
    assert "paper = quick" not in DOCS.status_table(evaluated)


def test_every_fail_on_the_stored_results_has_a_finding():
    """Each counted FAIL of `make check-all` on the stored results is named in the README and
    reaches FIGURES.md with its reason."""
    readme = (ROOT / "README.md").read_text()
    index = (ROOT / "FIGURES.md").read_text()
    for (name, profile), (rows_, _) in DOCS.evaluate_store().items():
        for r in rows_:
            if r.verdict == claims.FAIL and r.counted:
                assert r.finding, f"{name} {profile} {r.id} fails and has no finding: text in its config"
                assert f"`{r.id}`" in readme, (name, r.id)
                assert f"finding `{r.id}`: {r.finding}" in index, (name, r.id)


# ----------------------------------------------------------------------------- which results are read


def test_check_reads_the_stored_results_when_there_is_no_local_run(tmp_path, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(ROOT / "results" / "reference" / "quick" / "figure2", store / "quick" / "figure2")
    monkeypatch.setattr(check, "STORED_RESULTS", store)
    monkeypatch.chdir(tmp_path)  # no ./results here
    out = io.StringIO()
    code = check.run(["figure=figure2"], out=out)
    text = out.getvalue()
    assert (
        code == claims.EXIT_OK
        and "stored reference results: this machine has no run under results/quick/figure2" in text
    )
    assert f"{store}/quick/figure2/metrics.csv" in text or "quick/figure2/metrics.csv" in text
    out = io.StringIO()
    assert check.run(["figure=all"], out=out) == claims.EXIT_OK and "figure2 (quick)" in out.getvalue()
    # reference=no: the local folder only -> no results, exit 3
    assert check.run(["figure=figure2", "reference=no"], out=io.StringIO()) == claims.EXIT_NO_RESULTS
    # a local run wins over the store, and is named
    local = tmp_path / "results" / "quick" / "figure2"
    shutil.copytree(store / "quick" / "figure2", local)
    out = io.StringIO()
    assert check.run(["figure=figure2"], out=out) == claims.EXIT_OK
    assert (
        "stored reference results" not in out.getvalue()
        and "results/quick/figure2/metrics.csv" in out.getvalue()
    )
    with pytest.raises(config.ConfigError, match="reference=maybe is invalid"):
        check.run(["figure=figure2", "reference=maybe"])


def test_a_profile_page_shows_its_own_images_only():
    """figure7_quick_holdout.png belongs to quick_holdout, not to quick (figure7_quick*.png)."""
    fig = figures.load("figure7")
    store = ROOT / "results" / "reference"
    evaluated = {("figure7", p): check.check_figure(fig, p, store) for p in ("quick", "quick_holdout")}
    block = DOCS.figure_block("figure7", evaluated, store)
    assert block.count("(figure7_quick_holdout.png)") == 1 and block.count("(figure7_quick.png)") == 1
    quick_part = block.split("#### `quick_holdout` profile")[0]
    assert "figure7_quick_holdout.png" not in quick_part
