"""Figure 4: config checks, the plot script and notebook on a synthetic table, and (slow:
about 2 minutes of compilation on 2 busy cores) a tiny variance study end to end through
experiments.reproduce, the plot script and the notebook, on a PTB-format text the test
writes itself."""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from experiments import config, figures, reproduce
from experiments.steps import variance
from pes import results
from tests import notebook_runner

ROOT = Path(__file__).resolve().parent.parent
WORDS = " the quick brown fox jumps over the lazy dog \n pack my box with five dozen liquor jugs \n" * 2


def tiny(tmp_path, *more):
    data = tmp_path / "ptb.train.txt"
    data.write_text(WORDS)
    return [
        f"results_root={tmp_path / 'results'}",
        "task.source=word_file",
        f"task.data_path={data}",
        "task.sequence_length=8",
        "variance.trunc_lens=[1,8]",
        "variance.particle_counts=[4,8]",
        "variance.num_particles=8",
        "variance.num_repeats=3",
        "variance.ground_truth_particles=16",
        "variance.ground_truth_chunks=2",
        "variance.batch_pairs=6",
        *more,
    ]


def test_figure4_config_lists_the_scenarios():
    fig = figures.load("figure4")
    assert list(fig.runs) == [] and [p.step for p in fig.post] == ["variance"]
    assert list(fig.post[0].scenarios) == ["real", "random", "repeat"]
    paper = fig.post[0].paper
    assert paper.trunc_lens == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert (paper.num_particles, paper.num_repeats, paper.ground_truth_particles, paper.sigma) == (
        1000,
        50,
        5000,
        1e-3,
    )
    assert list(paper.particle_counts) == [10, 30, 100, 1000]


def test_bad_variance_settings_fail_before_computing(tmp_path):
    with pytest.raises(
        config.ConfigError,
        match="variance.trunc_lens has 3, which does not divide task.sequence_length=8",
    ):
        reproduce.reproduce("figure4", "quick", tiny(tmp_path, "variance.trunc_lens=[1,3]"))
    with pytest.raises(
        config.ConfigError, match="variance.bogus is not a setting; allowed: overrides, scenarios, sigma"
    ):
        reproduce.reproduce("figure4", "quick", tiny(tmp_path, "+variance.bogus=1"))
    with pytest.raises(
        config.ConfigError, match="variance.particle_counts=3 is invalid; allowed: a positive even integer"
    ):
        reproduce.reproduce("figure4", "quick", tiny(tmp_path, "variance.particle_counts=[3]"))
    with pytest.raises(config.ConfigError, match="variance.num_particles=8 is invalid with particle_counts"):
        reproduce.reproduce("figure4", "quick", tiny(tmp_path, "variance.particle_counts=[4,16]"))
    with pytest.raises(config.ConfigError, match="variance.estimator='es' is invalid; allowed: pes, pes_a"):
        reproduce.reproduce("figure4", "quick", tiny(tmp_path, "variance.estimator=es"))
    with pytest.raises(config.ConfigError, match="scenario='shuffled' is invalid"):
        reproduce.reproduce("figure4", "quick", tiny(tmp_path, "task.scenario=shuffled"))
    assert not (tmp_path / "results").exists()


def synthetic_csv(tmp_path) -> Path:
    """A merged figure-4 table in the driver's row format, with closed-form-like values."""
    rows = []
    p, t = 770, 100
    for s, growth in (("real", 0.5), ("random", 1.0), ("repeat", -0.1)):
        info = variance._info(f"{s}-ground-truth", FakeCfg, "es", t, 1e-3, 2000)
        rows += variance._rows(
            info,
            1,
            t,
            {
                f"ground_truth_noise_floor/{s}": 0.77,
                f"ground_truth_noise_floor_analytic/{s}": 0.771,
                f"num_params/{s}": p,
            },
        )
        for n in (10, 100, 1000):
            for k in (1, 10, 100):
                unrolls = t // k
                v = (p + 1) / (n / 2) * unrolls**growth
                info = variance._info(f"{s}-n{n}-k{k}", FakeCfg, "pes", k, 1e-3, n)
                rows += variance._rows(
                    info,
                    unrolls,
                    t,
                    {
                        f"normalized_variance/{s}": (v + 0.771) / 1.771,
                        f"normalized_variance_se/{s}": 0.01 * v,
                        f"normalized_variance_exact/{s}": v,
                        f"normalized_variance_exact_se/{s}": 0.01 * v,
                        f"es_variance_analytic/{s}": (p + 1) / (n / 2),
                        f"es_variance_analytic_vs_ground_truth/{s}": ((p + 1) / (n / 2) + 0.771) / 1.771,
                        f"num_repeats/{s}": 10,
                    },
                )
    path = tmp_path / "metrics.csv"
    results.validate(results.frame(rows)).to_csv(path, index=False)
    return path


class FakeCfg:
    figure_id = "figure4"
    seed = 0

    class task:  # noqa: N801
        name = "ptb_lstm"


def test_plot_script_and_notebook_draw_figure4(tmp_path):
    path = synthetic_csv(tmp_path)
    out = tmp_path / "figures" / "figure4.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plot_figure4.py"), str(path), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("figure4.png", "figure4.pdf", "figure4_per_n.png", "figure4_per_n.pdf"):
        assert (out.parent / name).stat().st_size > 1000
    # The summary recovers the slopes built into the synthetic table.
    sys.path.insert(0, str(ROOT / "scripts"))
    import plot_figure4

    table = plot_figure4.summary(results.validate(pd.read_csv(path)))
    assert table.loc["random", "slope_upper_half_exact"] == pytest.approx(1.0)
    assert table.loc["repeat", "slope_upper_half_exact"] == pytest.approx(-0.1)
    assert table.loc["real", "n_slope_finest"] == pytest.approx(-1.0)
    assert table.loc["real", "one_unroll"] == pytest.approx(table.loc["real", "one_unroll_predicted"])

    # What the main panel shows, read back from its axes: per scenario, at the largest N, the
    # synthetic values (v + 0.771) / 1.771 with v = (P + 1) / (N / 2) * (T / K)^growth.
    fig, ax = plt.subplots()
    plot_figure4.draw_main(ax, results.validate(pd.read_csv(path)))
    drawn = {c.get_label(): c.lines[0].get_data() for c in ax.containers}
    assert set(drawn) == {"Real Seq.", "Random Seq.", "Repeated Seq."}
    for label, growth in (("Real Seq.", 0.5), ("Random Seq.", 1.0), ("Repeated Seq.", -0.1)):
        x, y = (np.asarray(a, float) for a in drawn[label])
        np.testing.assert_array_equal(x, [1, 10, 100])
        v = 771 / 500 * x**growth
        np.testing.assert_allclose(y, (v + 0.771) / 1.771, rtol=1e-12)
    assert ax.get_xscale() == ax.get_yscale() == "log"
    plt.close(fig)

    nb = notebook_runner.execute(4, path)
    outputs = notebook_runner.outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    assert notebook_runner.has_image(nb)
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # both figures drawn
    assert "slope_upper_half" in notebook_runner.text(nb)


@pytest.mark.slow
def test_tiny_figure4_run_plot_and_notebook(tmp_path):
    path = reproduce.reproduce("figure4", "quick", tiny(tmp_path))
    assert path == tmp_path / "results" / "quick" / "figure4" / "metrics.csv"
    df = results.validate(pd.read_csv(path))
    assert set(df["source"]) == {"variance"}
    df = df.drop(columns="source")
    expected = {f"{s}-ground-truth" for s in ("real", "random", "repeat")}
    expected |= {f"{s}-n{n}-k{k}" for s in ("real", "random", "repeat") for n in (4, 8) for k in (1, 8)}
    assert set(df.run_id) == expected
    row = df[(df.run_id == "random-n8-k1") & (df.metric == "normalized_variance/random")].iloc[0]
    assert (row.estimator, row.trunc_len, row.num_particles, row.outer_step, row.inner_steps) == (
        "pes",
        1,
        8,
        8,
        8,
    )
    assert row.value > 0
    gt = df[df.run_id == "real-ground-truth"].set_index("metric")["value"]
    assert gt["num_params/real"] > 0 and gt["sequence_length/real"] == 8
    # 4-particle estimates: twice the 8-particle repeats.
    reps = df[df.metric == "num_repeats/real"].set_index("run_id")["value"]
    assert reps["real-n4-k1"] == 6 and reps["real-n8-k1"] == 3

    # Rerunning resumes: a scenario whose last K is missing recomputes it identically (the
    # step's record says it did not finish, as after an interruption).
    (path.parent / "steps" / "variance.json").unlink()
    run_dir = path.parent / "steps" / "variance" / "repeat"
    meta = json.loads((run_dir / "scenario.json").read_text())
    meta["status"] = "running"
    (run_dir / "scenario.json").write_text(json.dumps(meta))
    part = pd.read_csv(run_dir / "metrics.csv")
    part[~part.run_id.str.endswith("-k1")].to_csv(run_dir / "metrics.csv", index=False)
    again = results.validate(pd.read_csv(reproduce.reproduce("figure4", "quick", tiny(tmp_path))))
    again = again.drop(columns="source")
    key = ["run_id", "metric"]
    pd.testing.assert_frame_equal(
        df.sort_values(key).reset_index(drop=True), again.sort_values(key).reset_index(drop=True)
    )

    out = path.parent.parent / "figures"  # drawn by reproduce
    for name in ("figure4.png", "figure4.pdf", "figure4_per_n.png", "figure4_per_n.pdf"):
        assert (out / name).stat().st_size > 1000
    record = json.loads((path.parent / "figure.json").read_text())
    assert record["runs"] == {} and record["steps"]["variance"]["cached"] is False

    nb = notebook_runner.execute(4, path)
    outputs = notebook_runner.outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    assert notebook_runner.has_image(nb)
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # both figures drawn
