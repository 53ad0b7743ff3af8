"""experiments.batched: a figure's seeds in shared compiled calls give the same run directories
(CSV rows, status, fingerprints) as separate runs, and experiments.reproduce then skips them.
Also the paper_fashion profile's channel repetition and the outer clip_value."""

import json

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from experiments import batched, config, figures, io, runner
from pes import tasks
from tests.helpers import write_fashion_idx

TINY = [
    "progress=false",
    "task.data_source=idx",
    "task.horizon=12",
    "task.batch_size=16",
    "task.num_eval_runs=2",
    "task.hidden=[8]",
    "estimator.trunc_len=4",
    "estimator.num_particles=4",
    "train.num_outer_steps=8",
    "train.log_every=4",
    "train.chunk_size=4",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_idx(tmp_path_factory.mktemp("data"), 300, 60)


def _cfgs(root, data_dir, run_ids, profile="quick"):
    fig = figures.load("figure7")
    runs = {r.id: r for r in figures.runs(fig, profile)}
    extra = [*TINY, f"task.data_dir={data_dir}", f"results_root={root}"]
    return [config.compose(figures.run_overrides(fig, runs[r], profile, extra)) for r in run_ids]


@pytest.fixture(scope="module")
def batched_root(tmp_path_factory, data_dir):
    """Two PES seeds of figure 7 (tiny sizes, step-unlocked pairs, clipped) run batched."""
    root = tmp_path_factory.mktemp("batched")
    specs = [config.RunSpec.from_config(c) for c in _cfgs(root, data_dir, ["pes-s0", "pes-s1"])]
    groups = batched.group_runs(specs, max_batch=16)
    assert [[s.run_id for s in g] for g in groups] == [["pes-s0", "pes-s1"]]
    batched.run_batch(groups[0])
    return root


@pytest.mark.integration
def test_batched_seeds_match_separate_runs(batched_root, tmp_path, data_dir):
    ids = ["pes-s0", "pes-s1"]
    for cfg in _cfgs(tmp_path, data_dir, ids):
        runner.run(cfg)
    for rid in ids:
        b_dir = batched_root / "quick" / "figure7" / "runs" / rid
        s_dir = tmp_path / "quick" / "figure7" / "runs" / rid
        b_meta = json.loads((b_dir / runner.META).read_text())
        s_meta = json.loads((s_dir / runner.META).read_text())
        assert b_meta["status"] == s_meta["status"] == "complete"
        assert b_meta["fingerprint"] == s_meta["fingerprint"]
        assert sorted(runner.kept_checkpoints(b_dir)) == sorted(runner.kept_checkpoints(s_dir))
        b, s = pd.read_csv(b_dir / runner.CSV), pd.read_csv(s_dir / runner.CSV)
        keys = ["metric", "outer_step"]
        b, s = b.sort_values(keys).reset_index(drop=True), s.sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(b.drop(columns="value"), s.drop(columns="value"))
        # the same numbers up to the rounding of batched kernels (float32)
        np.testing.assert_allclose(b["value"], s["value"], rtol=2e-4, atol=1e-6)
    # the two seeds really are different runs (negative control for a broadcast bug)
    p0, p1 = (pd.read_csv(batched_root / "quick" / "figure7" / "runs" / r / runner.CSV) for r in ids)
    assert not np.allclose(p0[p0.metric == "meta_loss_eval"].value, p1[p1.metric == "meta_loss_eval"].value)


@pytest.mark.integration
def test_runner_skips_runs_finished_by_the_batched_runner(batched_root, data_dir):
    for cfg in _cfgs(batched_root, data_dir, ["pes-s0", "pes-s1"]):
        csv = config.run_dir(cfg) / runner.CSV
        before = csv.read_bytes()
        out = runner.run(cfg)  # what experiments.reproduce calls: finished, so it returns at once
        assert csv.read_bytes() == before
        assert json.loads((out / runner.META).read_text())["batched_with"] == ["pes-s0", "pes-s1"]


@pytest.mark.integration
def test_a_batch_stopped_midway_is_finished_by_runs_alone(batched_root, tmp_path, data_dir, monkeypatch):
    """One run lifecycle: a batch interrupted after its first chunk leaves each member's folder
    as a run alone would (status interrupted at its last checkpoint, its rows up to there), and
    `runner.run` finishes each member from there."""
    ids = ["pes-s0", "pes-s1"]
    cfgs = _cfgs(tmp_path, data_dir, ids)
    calls = []
    log_chunk = runner.RunLog.log_chunk

    def stop_in_second_chunk(self, metrics, state):
        calls.append(self.spec.run_id)
        if len(calls) == 3:  # the second chunk, before its first member is logged
            raise KeyboardInterrupt
        return log_chunk(self, metrics, state)

    monkeypatch.setattr(runner.RunLog, "log_chunk", stop_in_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        batched.run_batch(cfgs)
    monkeypatch.setattr(runner.RunLog, "log_chunk", log_chunk)
    for cfg, rid in zip(cfgs, ids):
        out = config.run_dir(cfg)
        meta = json.loads((out / runner.META).read_text())
        assert (meta["status"], meta["interrupted_at_outer_step"]) == ("interrupted", 4)
        assert pd.read_csv(out / runner.CSV)["outer_step"].max() == 4
        runner.run(cfg)
        meta = json.loads((out / runner.META).read_text())
        assert meta["status"] == "complete"
        assert [a.get("batched_with") for a in meta["attempts"]] == [ids, None]
        assert [a["from_outer_step"] for a in meta["attempts"]] == [0, 4]
        # the rows: those of the batch up to step 4 exactly, then a run alone's (within rounding)
        done = pd.read_csv(out / runner.CSV)
        ref = pd.read_csv(batched_root / "quick" / "figure7" / "runs" / rid / runner.CSV)
        pd.testing.assert_frame_equal(done[done.outer_step <= 4], ref[ref.outer_step <= 4])
        assert len(done) == len(ref)
        np.testing.assert_allclose(done["value"], ref["value"], rtol=2e-4, atol=1e-6)


def test_batched_runner_respects_a_held_run_lock(tmp_path, data_dir):
    """A member folder locked by another process (here: another open lock) stops the batch
    before any compute, naming the folder; nothing is written to the other member."""
    cfgs = _cfgs(tmp_path, data_dir, ["pes-s0", "pes-s1"])
    held = config.run_dir(cfgs[1])
    runner.make_folder(held)
    lock = io.FolderLock(held).acquire()
    try:
        with pytest.raises(io.Busy, match=str(held)):
            batched.run_batch(cfgs)
    finally:
        lock.release()
    assert not (config.run_dir(cfgs[0]) / runner.CSV).exists()
    assert io.lock_holder(config.run_dir(cfgs[0])) is None  # the first member's lock was released


def test_batch_signature_separates_methods_and_settings(tmp_path, data_dir):
    a, b, c = map(config.RunSpec.from_config, _cfgs(tmp_path, data_dir, ["pes-s0", "pes-s3", "tes-s3"]))
    assert batched.batch_signature(a) == batched.batch_signature(b)
    assert batched.batch_signature(a) != batched.batch_signature(c)
    assert len(batched.group_runs([a, b, c], max_batch=1)) == 3


def test_channels_repeat_a_greyscale_dataset(data_dir):
    kw = dict(dataset="fashion_mnist", data_source="idx", data_dir=str(data_dir), horizon=4, hidden=[8])
    grey = tasks.make("lopt_image_mlp", **kw)
    rgb = tasks.make("lopt_image_mlp", channels=3, **kw)
    assert grey.metadata["num_features"] == 64 and rgb.metadata["num_features"] == 192
    assert rgb.metadata["channels"] == 3
    with pytest.raises(ValueError, match="channels=2 is invalid"):
        tasks.make("lopt_image_mlp", channels=2, **kw)


def test_clip_value_clips_every_element_before_the_optimizer():
    def build(*overrides):
        return config.build_optimizer(config.compose(list(overrides)).outer_optimizer)

    opt = build("outer_optimizer=sgd", "outer_optimizer.learning_rate=1.0", "outer_optimizer.clip_value=0.5")
    grad = {"w": jnp.array([-3.0, 0.2, 0.7])}
    updates, _ = opt.update(grad, opt.init(grad))
    np.testing.assert_allclose(np.asarray(updates["w"]), [0.5, -0.2, -0.5])
    plain = build("outer_optimizer=sgd", "outer_optimizer.learning_rate=1.0")
    np.testing.assert_allclose(np.asarray(plain.update(grad, plain.init(grad))[0]["w"]), [3.0, -0.2, -0.7])
    for bad in ("0", "-1", "true"):
        with pytest.raises(config.ConfigError, match="clip_value"):
            build("outer_optimizer=adam", f"outer_optimizer.clip_value={bad}")


def test_late_null_keys_keep_old_fingerprints():
    """clip_value / channels at their null default leave a run's fingerprint as it was before
    the keys existed; set, they change it."""
    from omegaconf import OmegaConf

    cfg = config.compose(["task=lopt_image_mlp", "estimator=pes", "outer_optimizer=adam"])
    old = OmegaConf.to_container(cfg)
    del old["outer_optimizer"]["clip_value"], old["task"]["channels"]
    old = OmegaConf.create(old)
    assert config.fingerprint(cfg) == config.fingerprint(old)
    clipped = config.compose(["task=lopt_image_mlp", "estimator=pes", "outer_optimizer=adam",
                         "outer_optimizer.clip_value=0.03"])
    assert config.fingerprint(clipped) != config.fingerprint(old)


@pytest.mark.parametrize("figure", ["figure5", "figure7"])
def test_paper_fashion_profile_composes_with_the_paper_sizes(figure, data_dir):
    """paper_fashion = the paper profile's sizes with Fashion-MNIST (figure 7: 3 channels)."""
    fig = figures.load(figure)
    fashion = figures.runs(fig, "paper_fashion")
    assert [r.id for r in fashion] == [r.id for r in figures.runs(fig, "paper")]
    extra = ["task.data_source=idx", f"task.data_dir={data_dir}"]
    cfg = config.compose(figures.run_overrides(fig, fashion[0], "paper_fashion", extra))
    paper = config.compose(figures.run_overrides(fig, figures.runs(fig, "paper")[0], "paper"))
    assert cfg.task.dataset == "fashion_mnist" and cfg.profile.name == "paper_fashion"
    assert cfg.estimator.num_particles == paper.estimator.num_particles
    assert cfg.train.num_outer_steps == paper.train.num_outer_steps
    if figure == "figure7":
        assert config.build(cfg).task.metadata["num_features"] == 192  # CIFAR-10 8x8 colour's shape
