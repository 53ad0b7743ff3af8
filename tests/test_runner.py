"""The run driver: tidy CSV, run.json, interruption and resume without losing or duplicating rows."""

import json

import numpy as np
import pandas as pd
import pytest

from experiments import config, io, runner
from pes import results

BASE = [
    "task=linear_quadratic",
    "task.horizon=12",
    "estimator=pes",
    "estimator.trunc_len=4",
    "estimator.num_particles=8",
    "estimator.sigma=0.1",
    "outer_optimizer=adam",
    "train.num_outer_steps=40",
    "train.log_every=5",
    "train.chunk_size=10",
    "progress=false",
    "run_id=lq-pes",
]


def compose(tmp_path, *extra):
    return config.compose([*BASE, f"results_root={tmp_path}", *extra])


def read(out):
    return results.validate(pd.read_csv(out / runner.CSV))


def test_run_writes_schema_rows_and_metadata(tmp_path):
    out = runner.run(compose(tmp_path))
    assert out == tmp_path / "quick" / "adhoc" / "runs" / "lq-pes"
    df = read(out)
    assert sorted(df["outer_step"].unique()) == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    first = set(df[df["outer_step"] == 0]["metric"])
    assert first == {"full_loss", "theta/0", "theta/1", "theta/2", "theta/3"}
    assert (df["inner_steps"] == df["outer_step"] * 4).all()
    assert {"loss", "grad_norm", "full_loss", "theta/0", "theta/3"} <= set(df["metric"])
    meta = json.loads((out / runner.META).read_text())
    assert meta["status"] == "complete" and meta["wall_time_s"] > 0
    assert meta["config"]["estimator"]["trunc_len"] == 4
    assert meta["packages"]["jax"] and meta["profile"] == "quick"
    # The objective decreased: the outer loop optimises.
    full = results.metric_table(df, "full_loss")["lq-pes"]
    assert full.iloc[-1] < full.iloc[0]


def test_interrupted_run_resumes_to_identical_rows(tmp_path, monkeypatch):
    reference = read(runner.run(compose(tmp_path / "a")))

    calls = {"n": 0}
    save = io.save_checkpoint

    def flaky_save(path, state, meta):
        calls["n"] += 1
        if calls["n"] == 3:  # rows of chunk 3 are appended, its checkpoint never lands
            raise KeyboardInterrupt
        save(path, state, meta)

    monkeypatch.setattr(io, "save_checkpoint", flaky_save)
    cfg = compose(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg)
    out = config.run_dir(cfg)
    partial = read(out)  # still a valid table
    assert partial["outer_step"].max() == 30
    assert json.loads((out / runner.META).read_text())["status"] == "interrupted"

    monkeypatch.setattr(io, "save_checkpoint", save)
    resumed = read(runner.run(cfg))
    cols = ["outer_step", "metric"]
    a = reference.sort_values(cols).reset_index(drop=True)
    b = resumed.sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_finished_run_is_skipped_and_a_changed_config_is_refused(tmp_path):
    cfg = compose(tmp_path)
    out = runner.run(cfg)
    stamp = (out / runner.CSV).stat().st_mtime_ns
    runner.run(cfg)
    assert (out / runner.CSV).stat().st_mtime_ns == stamp

    changed = compose(tmp_path, "estimator.sigma=0.2")
    with pytest.raises(runner.ConfigChanged, match=r"estimator.sigma 0.1->0.2.*overwrite=true"):
        runner.run(changed)
    assert (out / runner.CSV).stat().st_mtime_ns == stamp
    runner.run(compose(tmp_path, "estimator.sigma=0.2", "overwrite=true"))
    df = read(out)
    assert (df["sigma"] == 0.2).all()
    assert len(df) == len(df.drop_duplicates(["metric", "outer_step"]))
    (aside,) = out.parent.glob("lq-pes.old-*")
    assert (read(aside)["sigma"] == 0.1).all()


def test_a_run_recorded_with_a_key_since_declared_result_free_keeps_its_identity(tmp_path):
    """A run recorded when a profile's ``scale`` still entered the fingerprint is the same run
    today (its recorded config is fingerprinted under today's rules); a real change is refused."""
    cfg = compose(tmp_path)
    out = runner.run(cfg)
    meta = json.loads((out / runner.META).read_text())
    meta["fingerprint"] = "recorded-under-older-rules"
    meta["config"].setdefault("profile", {})["scale"] = "small"
    (out / runner.META).write_text(json.dumps(meta))
    stamp = (out / runner.CSV).stat().st_mtime_ns
    runner.run(cfg)
    assert (out / runner.CSV).stat().st_mtime_ns == stamp
    with pytest.raises(runner.ConfigChanged, match=r"estimator.sigma 0.1->0.2"):
        runner.run(compose(tmp_path, "estimator.sigma=0.2"))


def test_rows_after_the_checkpoint_and_a_partial_last_line_are_cut_on_resume(tmp_path):
    path = tmp_path / "m.csv"
    info = {c: 0 for c in results.RUN_COLUMNS} | {"run_id": "r", "figure": "f", "task": "t", "estimator": "e"}

    def rows(steps):
        return results.rows(info, {"outer_step": np.array(steps), "loss": np.array(steps) / 3}, trunc_len=1)

    log = io.CsvLog.create(path)
    log.append(rows([1, 2]))
    record = log.record()
    log.append(rows([3]))
    with open(path, "a") as f:
        f.write("r,f,t,e,0,0,0,0,4,4,loss")  # a write cut short
    resumed = io.CsvLog.resume(path, record)
    assert resumed.record() == record
    assert results.validate(pd.read_csv(path))["outer_step"].tolist() == [1, 2]
    resumed.append(rows([3]))
    assert resumed.record() == log.record()  # the same bytes as without the interruption


def test_diverging_run_stops_and_keeps_its_rows(tmp_path):
    cfg = config.compose(
        [
            "task=linear_quadratic",
            "estimator=tbptt",
            "estimator.trunc_len=4",
            "outer_optimizer=sgd",
            "outer_optimizer.learning_rate=1e6",
            "train.num_outer_steps=400",
            "train.log_every=5",
            "train.chunk_size=10",
            "progress=false",
            "run_id=diverge",
            f"results_root={tmp_path}",
        ]
    )
    out = runner.run(cfg)
    meta = json.loads((out / runner.META).read_text())
    assert meta["status"] == "diverged"
    df = pd.read_csv(out / runner.CSV)
    assert meta["diverged_at_outer_step"] <= df["outer_step"].max() < 400
    assert sorted(df["outer_step"].unique())[:2] == [0, 5]  # rows before the divergence are kept
