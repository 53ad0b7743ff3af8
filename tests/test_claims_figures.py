"""Claims end to end: figures run at test sizes, then `experiments.check` evaluates their
claims, prints the table, and exits 1 exactly when an applicable claim failed."""

from __future__ import annotations

import io

import pytest
from omegaconf import OmegaConf

from experiments import check, claims, figures, reproduce
from tests.test_figure8 import TINY as FIGURE8_TINY


def _table_and_code(figure: str, root, profile: str = "quick"):
    out = io.StringIO()
    code = check.run([f"figure={figure}", f"profile={profile}", f"results_root={root}"], out=out)
    rows, _ = check.check_figure(figures.load(figure), profile, root)
    text = out.getvalue()
    assert "| claim | measured | verdict |" in text
    for r in rows:  # every claim is in the printed table with its verdict
        assert f"`{r.id}`" in text and r.verdict in (claims.PASS, claims.FAIL, claims.NOT_RUN)
    failed = any(r.verdict == claims.FAIL and r.counted for r in rows)  # indicative claims never decide
    assert code == (claims.EXIT_FAIL if failed else claims.EXIT_OK), text
    return {r.id: r for r in rows}, text


def test_figure3_at_test_size_claims_evaluated(tmp_path):
    extra = [
        f"results_root={tmp_path}",
        "progress=false",
        "grid.num=41",
        "train.num_outer_steps=100",
        "train.chunk_size=100",
    ]
    reproduce.reproduce("figure3", "quick", extra)
    rows, text = _table_and_code("figure3", tmp_path)
    assert rows["start"].verdict == claims.PASS  # L(-4, -4) = 2488 holds at any length
    # 100 iterations are too few to reach the valley: a finding at this size, shown with its value
    assert rows["pes-valley"].verdict == claims.FAIL and "want <= 600" in rows["pes-valley"].measured
    assert (
        rows["grid-minimum"].verdict in (claims.PASS, claims.FAIL)
        and "grid min" in rows["grid-minimum"].measured
    )


@pytest.fixture
def two_run_figure8(tmp_path):
    """Figure 8 with its PES and truncated-ES runs only, one seed (the claim that applies to quick)."""
    fig = OmegaConf.load(figures.figure_path("figure8"))
    fig.seeds = {"quick": [3], "paper": [3]}
    fig.runs = [r for r in fig.runs if r.id in ("pes-k100", "es-k100")]
    fig.claims = [c for c in fig.claims if c.id in ("pes-above-tes", "pes-300", "tes-below-300")]
    OmegaConf.save(fig, tmp_path / "figure8.yaml")
    return tmp_path / "figure8.yaml", tmp_path / "results"


def test_figure8_at_test_size_claims_evaluated(two_run_figure8):
    figure, root = two_run_figure8
    reproduce.reproduce(str(figure), "quick", [*FIGURE8_TINY, f"results_root={root}"], plot_figure=False)
    rows, text = _table_and_code(str(figure), root)
    assert rows["pes-above-tes"].verdict in (claims.PASS, claims.FAIL)  # evaluated on the two runs
    assert "pes-k100" in rows["pes-above-tes"].measured and "es-k100" in rows["pes-above-tes"].measured
    for cid in ("pes-300", "tes-below-300"):  # paper-scale claims: measured on quick, shown as indicative
        assert not rows[cid].counted and rows[cid].role == claims.INDICATIVE, rows[cid]
        assert f"{rows[cid].verdict} (paper-scale, indicative)" in text
