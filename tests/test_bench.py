"""benchmarks/bench.py runs on tiny sizes and writes its table (not a timed test)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import bench
from tests.helpers import run_python

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("evosax")


def _run_bench(tmp_path, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    command = [ROOT / "benchmarks" / "bench.py", "--tiny", "--out", tmp_path, *args]
    stdout = run_python(command, env=env, timeout=600, cwd=tmp_path)
    return stdout, pd.read_csv(tmp_path / "bench.csv")


def _check_throughput_rows(table, part, drivers):
    rows = table[(table.part == part) & (table.metric == "particle_steps_per_s")]
    for (est, n), group in rows.groupby(["estimator", "num_particles"]):
        assert set(group.driver) == drivers, (est, n, set(group.driver))
        assert (group.value > 0).all() and group.value.map(math.isfinite).all()
    return rows


def test_bench_tiny_linear_quadratic_side_by_side(tmp_path):
    stdout, table = _run_bench(tmp_path, "--part", "a", "--devices", "2")
    assert list(table.columns) == list(bench.COLUMNS)  # the one column list, header and rows
    assert bench.COLUMNS[0] == "part" and bench.COLUMNS[-2:] == ("metric", "value")  # tidy long format
    rows = _check_throughput_rows(table, "a", {"ours", "ours-2dev", "evosax-scan", "evosax-loop"})
    assert set(rows.estimator) == {"pes", "es"}
    ours = table[(table.part == "a") & (table.driver == "ours")]
    assert {
        "ratio_vs_evosax-scan",
        "ratio_vs_evosax-loop",
        "compile_s",
        "wall_per_outer_step_s",
        "xla_peak_bytes",
        "state_bytes_per_particle",
        "min_bytes_per_particle",
    } <= set(ours.metric)
    # PES stores the inner state and half an accumulator per particle, plus a counter per pair.
    pes_bytes = ours[(ours.estimator == "pes")].set_index("metric").value
    assert pes_bytes["state_bytes_per_particle"] >= pes_bytes["min_bytes_per_particle"] > 0
    assert pes_bytes["state_bytes_per_particle"] <= pes_bytes["min_bytes_per_particle"] + 2
    # The printed table and the gradient check (statistical, from 10 episodes).
    assert "| part | est | N | K |" in stdout and "Gradient check" in stdout
    check = table[table.part == "check"].set_index(["driver", "metric"]).value
    assert check[("ours", "max_abs_z_vs_exact")] < 6
    assert check[("evosax", "max_abs_z_vs_exact")] < 6
    assert check[("ours-evosax", "max_abs_z")] < 6


@pytest.mark.slow
def test_bench_tiny_mlp_reports_matmul_fraction(tmp_path):
    stdout, table = _run_bench(tmp_path, "--part", "b", "--devices", "1", "--no-check")
    _check_throughput_rows(table, "b", {"ours", "evosax-scan", "evosax-loop"})
    gflops = table[table.metric == "gflops"]
    assert (gflops.value > 0).all()
    frac = table[(table.metric == "fraction_of_matmul") & (table.driver == "ours")].value
    assert len(frac) == 1 and 0 < float(frac.iloc[0]) < 2
    assert "Large matmul" in stdout
