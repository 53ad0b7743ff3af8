"""The figure notebook opens every stored reference result (every format the store writes:
metrics.csv, metrics.csv.gz, full and trimmed grids), shows the figure and the claims table
with the same verdicts `make check-figure-N` gives, and says where results are when a figure
has none.  One kernel runs every case (tests/notebook_runner.execute_cases)."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments import check, claims, config, figures
from tests import notebook_runner

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference"


def stored() -> list[tuple[str, str]]:
    """(profile, figure) of every stored reference result (profile folders only)."""
    return [
        (profile.name, fig_dir.name)
        for profile in sorted(REFERENCE.iterdir())
        if profile.name in config.profile_names()
        for fig_dir in sorted(profile.iterdir())
        if any((fig_dir / n).is_file() for n in check.METRICS_NAMES)
    ]


def test_the_store_holds_every_format_the_notebook_must_read():
    files = {p.name for profile, fig in stored() for p in (REFERENCE / profile / fig).iterdir()}
    assert {"metrics.csv", "metrics.csv.gz", "grid.csv"} <= files
    records = [check.read_json(REFERENCE / p / f / "figure.json") or {} for p, f in stored()]
    trimmed = [r for r in records if "grid_trimmed" in r]
    assert trimmed, "no trimmed grid in the store: the trimmed-grid case is not covered"


def test_notebook_opens_every_stored_result_with_its_claims():
    pytest.importorskip("nbclient")
    cases = stored()
    assert len(cases) >= 10
    params = [dict(FIGURE=fig, PROFILE=profile, RESULTS=str(REFERENCE), CSV="") for profile, fig in cases]
    params.append(dict(FIGURE="figure2", PROFILE="quick", RESULTS=str(ROOT / "no-such-results"), CSV=""))
    ran = notebook_runner.execute_cases(params)
    problems = []
    for (profile, fig), (cells, error) in zip(cases, ran):
        text = "\n".join(
            str(v)
            for out in notebook_runner.cell_outputs(cells)
            for k, v in {**out.get("data", {}), "text": out.get("text", "")}.items()
            if k in ("text/markdown", "text/plain", "text")
        )
        images = sum("image/png" in out.get("data", {}) for out in notebook_runner.cell_outputs(cells))
        verdicts, _ = check.check_figure(figures.load(fig), profile, REFERENCE)
        if error is not None:
            problems.append(f"{profile}/{fig}: {str(error).strip().splitlines()[-1][:300]}")
        elif images < 1 or "| claim | measured | verdict |" not in text:
            problems.append(f"{profile}/{fig}: {images} images, claims table shown: {'| claim |' in text}")
        elif f"**{claims.summary(verdicts)}**" not in text:
            problems.append(f"{profile}/{fig}: verdicts differ from the check's ({claims.summary(verdicts)})")
    assert not problems, "\n".join(problems)
    cells, error = ran[-1]  # no results there: a one-line pointer and the list of what exists
    assert error is not None and "no results for figure2 (quick)" in str(error)
    assert "make reproduce-figure-2 PROFILE=quick" in str(error)
