"""A figure as jobs of Hydra's launchers (experiments/launch.py): the same merged table as the
serial pipeline through joblib and submitit_local, only unfinished jobs submitted again, jobs
pinned to device slots, failed and killed jobs named with how to resume, one command per
figure at a time, random-search parts scored exactly as in one process, and the cluster
recipe of docs/cluster.md run on submitit_local."""

import json
import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from experiments import config, launch, pipeline, reproduce
from experiments.config import ROOT

TINY = str(ROOT / "tests" / "figures" / "tiny.yaml")


def serial(root: Path, *extra: str) -> Path:
    return reproduce.reproduce(
        TINY, "quick", [f"results_root={root}", "progress=false", *extra], plot_figure=False
    )


def launched(root: Path, overrides: list[str], *extra: str) -> Path:
    over = launch.launcher_overrides(overrides)
    assert over is not None
    return launch.reproduce(
        TINY, "quick", [f"results_root={root}", "progress=false", *extra], over, plot_figure=False
    )


def records(csv: Path) -> dict:
    folder = csv.parent / launch.JOBS_DIR
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json") if p.name != launch.TABLE}


def same_values(a: Path, b: Path) -> None:
    """Two merged tables hold the same rows and values (and, here, the same bytes)."""
    x, y = pd.read_csv(a), pd.read_csv(b)
    pd.testing.assert_frame_equal(x, y, check_exact=True)
    assert a.read_bytes() == b.read_bytes()


@pytest.fixture(scope="module")
def serial_csv(tmp_path_factory):
    return serial(tmp_path_factory.mktemp("serial"))


# ----------------------------------------------------------------------------- arguments


def test_job_arguments_are_split_from_the_runs_overrides():
    mine, rest = launch.split(
        [
            "jobs=2",
            "launch.device_ids=[0,1]",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=3",
            "seed=4",
            "grid.num=3",
        ]
    )
    assert mine == ["jobs=2", "launch.device_ids=[0,1]", "hydra/launcher=joblib", "hydra.launcher.n_jobs=3"]
    assert rest == ["seed=4", "grid.num=3"]
    assert launch.launcher_overrides([]) is None and launch.launcher_overrides(["jobs=1"]) is None
    assert launch.launcher_overrides(["jobs=3"]) == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"]
    assert launch.launcher_overrides(["hydra/launcher=submitit_local"]) == ["hydra/launcher=submitit_local"]
    # jobs=<k> beside a named launcher: k workers of it
    assert launch.launcher_overrides(["jobs=2", "hydra/launcher=submitit_local"]) == [
        "hydra/launcher=submitit_local",
        "launch.workers=2",
    ]


@pytest.mark.parametrize(
    "args, words",
    [
        (["jobs=0"], "jobs=0 is invalid; allowed: an integer >= 1"),
        (["jobs=two"], "jobs=two is invalid"),
        (["jobs=2", "hydra/launcher=joblib"], "jobs=2 and hydra/launcher=joblib both given"),
        (["launch.device_ids=[0,1]"], "launch.device_ids=[0,1] needs a launcher; allowed: add jobs=<k>"),
    ],
)
def test_bad_job_arguments_fail_in_one_line(args, words):
    with pytest.raises(config.ConfigError, match=re.escape(words)) as err:
        launch.launcher_overrides(args)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "args, words",
    [
        (
            ["hydra/launcher=slurmm"],
            "hydra/launcher=slurmm is unknown; allowed: basic, joblib, submitit_local",
        ),
        (["hydra/launcher=joblib", "launch.device_ids=[0,0]"], "launch.device_ids=[0, 0] is invalid"),
        (["hydra/launcher=joblib", "launch.device_ids=[0,1]", "launch.devices_per_job=3"], "at most 2"),
        (["hydra/launcher=basic", "launch.device_ids=[0]"], "needs one process per job"),
        (["hydra/launcher=joblib", "launch.batch_seeds=0"], "launch.batch_seeds=0 is invalid"),
        (["hydra/launcher=joblib", "launch.search_shard=-5"], "launch.search_shard=-5 is invalid"),
        (["hydra/launcher=joblib", "launch.grid_tile=0"], "launch.grid_tile=0 is invalid"),
        (["hydra/launcher=submitit_local", "launch.workers=0"], "launch.workers=0 is invalid"),
        (["hydra/launcher=joblib", "launch.bogus=1"], "launch.bogus is not a config key"),
    ],
)
def test_bad_launch_settings_fail_in_one_line(tmp_path, args, words):
    with pytest.raises(config.ConfigError, match=re.escape(words)) as err:
        launch.launch_config(args, tmp_path)
    assert "\n" not in str(err.value)


def test_early_steps_read_neither_the_runs_rows_nor_their_folders():
    """What runs beside the runs must not depend on them: the `inputs` (what the step's
    result is fingerprinted by) and `compute` of every EARLY step never touch ctx.rows or
    ctx.runs."""
    import inspect

    from experiments import steps

    registry = steps._load()
    for name in launch.EARLY:
        step = registry[name]
        for fn in (step.inputs, step.compute, step.prepare):
            source = inspect.getsource(fn)
            assert "ctx.run" not in source and "ctx.rows" not in source, (name, fn.__name__)


# ----------------------------------------------------------------------------- the same table


@pytest.mark.integration
def test_joblib_jobs_pinned_to_device_slots_give_the_serial_table(tmp_path, serial_csv):
    """jobs=2 through joblib, jobs pinned to slots of two of four device ids: every job saw
    one slot only, jobs running at the same time saw different slots, and the merged table is
    the serial one; the same command again submits nothing."""
    args = ["jobs=2", "launch.device_ids=[0,1,2,3]", "launch.devices_per_job=2"]
    csv = launched(tmp_path, args)
    same_values(csv, serial_csv)
    recs = records(csv)
    assert set(recs) == {"step-grid", "run-pes", "run-es"}
    assert all(r["status"] == "done" for r in recs.values())
    assert {r["CUDA_VISIBLE_DEVICES"] for r in recs.values()} <= {"0,1", "2,3"}
    spans = [(r["pid"], r["CUDA_VISIBLE_DEVICES"]) for r in recs.values()]
    by_pid = {}
    for pid, dev in spans:  # one process keeps its slot for every job it runs
        assert by_pid.setdefault(pid, dev) == dev
    assert len(set(by_pid.values())) == len(by_pid)  # two processes never share a slot
    table = json.loads((csv.parent / launch.JOBS_DIR / launch.TABLE).read_text())
    assert [j["name"] for j in table["jobs"]] == ["step-grid", "run-pes", "run-es"]
    # processor time: each job's own, and the figure's = the command's process + its jobs' processes
    assert all(r["cpu_time_s"] > 0 for r in recs.values())
    fig = json.loads((csv.parent / "figure.json").read_text())
    assert fig["jobs"]["cpu_time_s"] == pytest.approx(sum(r["cpu_time_s"] for r in recs.values()))
    assert fig["cpu_time_s"] > fig["jobs"]["cpu_time_s"]
    before = {p: p.stat().st_mtime_ns for p in (csv.parent / launch.JOBS_DIR).glob("run-*.json")}
    launched(tmp_path, args)  # everything finished: no job, the same merge
    assert {p: p.stat().st_mtime_ns for p in before} == before
    same_values(csv, serial_csv)


# ----------------------------------------------------------------------------- failures


def _hold(folder: Path, seconds: float) -> subprocess.Popen:
    """Another process holding ``folder``'s lock for ``seconds``."""
    code = (
        "import sys, time; from pathlib import Path; from experiments import io; "
        f"lock = io.FolderLock(Path({str(folder)!r})).acquire(); "
        f"print('held', flush=True); time.sleep({seconds})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.integration
def test_a_failed_job_is_named_with_how_to_resume_and_nothing_is_merged(tmp_path, capsys, serial_csv):
    """A job that fails (its run folder held by another process) is named in one line with the
    command that resumes; the others finish; nothing is merged; the same command afterwards
    computes only the failed job and merges the serial table."""
    run_dir = tmp_path / "quick" / "tiny" / "runs" / "pes"
    run_dir.mkdir(parents=True)
    holder = _hold(run_dir, 600)
    try:
        with pytest.raises(launch.JobsFailed, match=r"1 of 3 job\(s\) did not finish.*nothing merged"):
            launched(tmp_path, ["hydra/launcher=basic"])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("job ")]
    assert len(lines) == 1 and lines[0].startswith("job run-pes failed: ") and "in use by" in lines[0]
    assert "resume: python -m experiments.reproduce" in lines[0]
    assert not (tmp_path / "quick" / "tiny" / "metrics.csv").exists()
    recs = records(tmp_path / "quick" / "tiny" / "metrics.csv")
    assert recs["run-es"]["status"] == "done" and recs["run-pes"]["status"] == "failed"
    csv = launched(tmp_path, ["hydra/launcher=basic"])
    assert "tiny (quick): 1 job(s) through basic: run-pes" in capsys.readouterr().err
    same_values(csv, serial_csv)


def test_a_second_command_on_the_same_figure_waits_in_one_line(tmp_path, capsys):
    fig_dir = tmp_path / "fig"
    fig_dir.mkdir()
    holder = _hold(fig_dir, 2)
    seen = []
    t0 = time.perf_counter()
    with pipeline.figure_lock(fig_dir, seen.append, "figure tiny (quick)"):
        waited = time.perf_counter() - t0
        with pipeline.figure_lock(fig_dir, seen.append, "figure tiny (quick)"):  # re-entrant in one process
            pass
    holder.wait()
    assert waited > 0.5
    assert len(seen) == 1 and re.fullmatch(
        r"figure tiny \(quick\) is being reproduced by PID \d+ on \S+ \(since .*\); "
        r"waiting for it to finish.*",
        seen[0],
    ), seen


# ----------------------------------------------------------------------------- random search


@pytest.mark.integration
def test_random_search_parts_score_what_one_process_scores(tmp_path):
    """Configurations scored in range parts (joined afterwards) are the configurations and
    scores of one process, bit for bit."""
    from experiments.steps import random_search
    from tests.test_figure6 import TINY as TINY6
    from tests.test_mnist_lr_schedule import write_npz

    data = write_npz(tmp_path / "data", name="fashion_mnist")
    fig = OmegaConf.load(ROOT / "configs" / "figure" / "figure6.yaml")
    fig.seeds = [3]
    OmegaConf.save(fig, tmp_path / "figure6.yaml")
    extra = [*TINY6, "random_search.num_configs=7", f"task.data_dir={data}"]
    plans = {}
    for name in ("one", "parts"):
        plan = reproduce.prepare(
            str(tmp_path / "figure6.yaml"), "quick", [*extra, f"results_root={tmp_path / name}"]
        )
        plans[name] = (plan.ctx, next(s.plan for s in plan.steps if s.step.name == "random_search"))
    ctx, plan = plans["one"]
    _, want = random_search.search_seed(ctx, plan, 3, random_search.scorer(plan.built.task))
    ctx, plan = plans["parts"]
    spec = OmegaConf.create({"batch_seeds": 1, "search_shard": 3})
    parts = launch._search_parts(ctx, plan, spec.search_shard)
    assert parts == [
        {"seed": 3, "lo": 0, "hi": 4},
        {"seed": 3, "lo": 4, "hi": 7},
    ]  # rounded up to chunks of 2
    for part in reversed(parts):
        launch._score_search_part(ctx, plan, part["seed"], part["lo"], part["hi"])
    launch.join_search_parts(ctx, plan, spec.search_shard)
    assert launch._search_done(ctx, plan, 3) == 7 and launch._search_parts(ctx, plan, 3) == []
    with np.load(launch._search_file(ctx, 3)) as saved:
        np.testing.assert_array_equal(saved["scores"], want)
    _, got = random_search.search_seed(ctx, plan, 3, lambda part: pytest.fail("scored again"))
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- whole commands


def _command(root: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "experiments.reproduce",
        f"figure={TINY}",
        f"results_root={root}",
        "progress=false",
        "plot=false",
        *args,
    ]


def _env() -> dict:
    # The subprocesses compile with this process's XLA flags: the serial table they are compared
    # with, byte for byte, was computed here.
    return dict(os.environ)


def recipe_commands() -> list[list[str]]:
    """The commands of the cluster recipe in docs/cluster.md (lines in its ``recipe`` block)."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    block = re.search(r"```bash\n# recipe\n(.*?)```", text, re.S).group(1)
    joined = block.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.integration
def test_the_cluster_recipe_runs_on_submitit_local(tmp_path, serial_csv):
    """Every line of docs/cluster.md's recipe, with submitit_slurm replaced by submitit_local,
    the figure by the tiny one and the SLURM-only settings (partition, account, GPUs) left
    out: the merged table is the serial one, and the check reads it."""
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

    slurm_only = set(OmegaConf.structured(SlurmQueueConf)) - set(OmegaConf.structured(LocalQueueConf))
    assert {"partition", "array_parallelism", "max_num_timeout"} <= slurm_only
    commands = recipe_commands()
    assert any("hydra/launcher=submitit_slurm" in c for c in commands)
    for cmd in commands:
        assert cmd[:3] == ["python", "-m", "experiments.reproduce"] or cmd[:3] == [
            "python",
            "-m",
            "experiments.check",
        ]
        args = []
        for arg in cmd[3:]:
            key = arg.partition("=")[0]
            if key.startswith("hydra.launcher.") and key.rpartition(".")[2] in slurm_only:
                continue
            arg = arg.replace("submitit_slurm", "submitit_local")
            if key == "figure":
                arg = f"figure={TINY}"
            if key == "results_root":
                arg = f"results_root={tmp_path}"
            if key == "profile":
                arg = "profile=quick"
            args.append(arg)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                cmd[2],
                *args,
                *(["progress=false"] if cmd[2].endswith("reproduce") else []),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=600,
        )
        assert proc.returncode in (0, 1) if cmd[2].endswith("check") else proc.returncode == 0, proc.stderr[
            -3000:
        ]
    same_values(tmp_path / "quick" / "tiny" / "metrics.csv", serial_csv)
    assert list((tmp_path / "quick" / "tiny" / launch.JOBS_DIR / ".submitit").glob("*/*_log.err"))


@pytest.mark.integration
def test_jobs_2_on_submitit_local_is_two_workers_sharing_the_jobs(tmp_path, serial_csv):
    """``jobs=2 hydra/launcher=submitit_local``: two worker processes take the figure's jobs
    one at a time (each job run once, by one of them); the merged table is the serial one."""
    got = launched(tmp_path, ["jobs=2", "hydra/launcher=submitit_local"])
    same_values(got, serial_csv)
    recs = records(got)
    names = [j["name"] for j in json.loads((got.parent / launch.JOBS_DIR / launch.TABLE).read_text())["jobs"]]
    assert len(names) > 2 and sorted(recs) == sorted(names)
    assert {r["status"] for r in recs.values()} == {"done"}
    assert len({r["pid"] for r in recs.values()}) <= 2  # two processes, however many jobs
    assert sorted(p.stem for p in (got.parent / launch.JOBS_DIR).glob(f"*{launch.CLAIM}")) == sorted(names)
    assert len(list((got.parent / launch.JOBS_DIR / ".submitit").glob("*/*_log.err"))) == 2


@pytest.mark.slow
def test_a_killed_job_resumes_to_the_same_table(tmp_path):
    """SIGKILL a job's process mid-run: the command names the job (one line) and exits 1; the
    same command again resumes it; the merged table is the serial one."""
    longer = ["train.num_outer_steps=3000", "train.chunk_size=20", "train.log_every=20"]
    want = serial(tmp_path / "serial", *longer)
    root = tmp_path / "jobs"
    proc = subprocess.Popen(
        _command(root, "jobs=2", *longer), cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True
    )
    record = root / "quick" / "tiny" / launch.JOBS_DIR / "run-pes.json"
    ckpt = root / "quick" / "tiny" / "runs" / "pes" / "checkpoint.npz"
    deadline = time.time() + 300
    while not (record.is_file() and ckpt.is_file()) and time.time() < deadline:
        time.sleep(0.05)
    rec = json.loads(record.read_text())
    assert rec["status"] == "running"
    os.kill(rec["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    named = [line for line in err.splitlines() if line.startswith("job run-pes ")]
    assert (
        len(named) == 1 and "killed" in named[0] and "resume: python -m experiments.reproduce" in named[0]
    ), err
    meta = json.loads((ckpt.parent / "run.json").read_text())
    assert meta["status"] == "running"  # left by the killed process; the next start resumes it
    again = subprocess.run(
        _command(root, "jobs=2", *longer), cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from outer step" in again.stderr
    same_values(root / "quick" / "tiny" / "metrics.csv", want)


@pytest.mark.slow
def test_two_commands_at_once_neither_duplicate_nor_lose_rows(tmp_path, serial_csv):
    root = tmp_path / "both"
    procs = [
        subprocess.Popen(_command(root, "jobs=2"), cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    waited = [line for e in errs for line in e.splitlines() if "waiting for it to finish" in line]
    assert len(waited) == 1, errs
    same_values(root / "quick" / "tiny" / "metrics.csv", serial_csv)


@pytest.mark.integration
def test_grid_tiles_and_late_steps_as_jobs_give_the_serial_table(tmp_path):
    """Figure 5 at test size: its grid of fresh full trainings in tiles (9 points: 4 + 4 + 1,
    the last shorter than a chunk) beside the run, then the evaluation (which reads the run) as
    a job of its own (launch.late_jobs=true): the merged table and grid.csv are the serial
    ones, byte for byte, and the merge reused what the jobs stored."""
    import yaml

    from tests.test_mnist_lr_schedule import write_npz

    data = write_npz(tmp_path / "data")
    spec = yaml.safe_load((ROOT / "configs/figure/figure5.yaml").read_text())
    spec["runs"] = spec["runs"][:1]
    spec.pop("claims")
    spec["post"][0]["quick"] = {"num": 3, "num_runs": 2, "chunk_size": 4}
    spec["post"][1]["quick"] = {"num_runs": 2}
    figure = str(tmp_path / "figure5.yaml")
    (tmp_path / "figure5.yaml").write_text(yaml.safe_dump(spec))
    extra = [
        "progress=false",
        f"task.data_dir={data}",
        "task.data_source=npz",
        "task.dataset=mnist",
        "task.num_val=40",
        "task.horizon=6",
        "task.hidden=[4]",
        "task.downsample=4",
        "task.batch_size=8",
        "task.objective_batch_size=8",
        "estimator.num_particles=4",
        "train.num_outer_steps=6",
        "train.chunk_size=6",
    ]
    want = reproduce.reproduce(
        figure, "quick", [*extra, f"results_root={tmp_path / 'one'}"], plot_figure=False
    )
    plan = reproduce.prepare(figure, "quick", [*extra, f"results_root={tmp_path / 'jobs'}"])
    assert launch.grid_tiles(plan.steps[0].plan, 3) == [(0, 4), (4, 8), (8, 9)]  # rounded up to chunks of 4
    assert (
        launch.grid_tiles(plan.steps[0].plan, None) is None
        and launch.grid_tiles(plan.steps[0].plan, 9) is None
    )
    over = launch.launcher_overrides(["hydra/launcher=basic", "launch.grid_tile=3", "launch.late_jobs=true"])
    got = launch.reproduce(
        figure, "quick", [*extra, f"results_root={tmp_path / 'jobs'}"], over, plot_figure=False
    )
    same_values(got, want)
    assert (got.parent / "grid.csv").read_bytes() == (want.parent / "grid.csv").read_bytes()
    record = json.loads((got.parent / "figure.json").read_text())
    assert record["jobs"]["submitted"] == [
        "step-grid-0-4",
        "step-grid-4-8",
        "step-grid-8-9",
        "run-es-k10",
        "step-evaluation",
    ]
    assert record["steps"]["grid"]["cached"] and record["steps"]["evaluation"]["cached"]
    # the basic launcher ran the jobs in this process: their time is in its own, counted once
    assert record["jobs"]["cpu_time_s"] == 0.0 and record["cpu_time_s"] > 0
    assert (
        record["steps"]["grid"]["fingerprint"]
        == json.loads((want.parent / "figure.json").read_text())["steps"]["grid"]["fingerprint"]
    )
    # a late job is what a job process receives (pickled): without its step's stored result, the
    # job rebuilt from its pickle computes the same bytes
    evaluation = got.parent / pipeline.STEPS / "evaluation.csv"
    before = evaluation.read_bytes()
    (got.parent / pipeline.STEPS / "evaluation.json").unlink()
    evaluation.unlink()
    plan = reproduce.prepare(figure, "quick", [*extra, f"results_root={tmp_path / 'jobs'}"])
    spec = launch.launch_config(over, tmp_path / "sweep").launch
    late = launch.late_jobs(plan, spec, "basic")
    assert [j["name"] for j in late] == ["step-evaluation"]
    launch._execute(pickle.loads(pickle.dumps(late[0])))
    assert evaluation.read_bytes() == before


@pytest.mark.integration
def test_seed_groups_run_as_batched_jobs(tmp_path):
    """launch.batch_seeds=2: runs that differ only in their seed become one batched job per
    group (experiments.batched); the merged table matches the serial one up to the rounding of
    batched kernels."""
    fig = OmegaConf.load(TINY)
    fig.seeds = [0, 1]
    path = tmp_path / "tiny_seeds.yaml"
    OmegaConf.save(fig, path)
    extra = ["progress=false"]
    want = reproduce.reproduce(
        str(path), "quick", [*extra, f"results_root={tmp_path / 'one'}"], plot_figure=False
    )
    over = launch.launcher_overrides(["hydra/launcher=basic", "launch.batch_seeds=2"])
    plan = reproduce.prepare(str(path), "quick", [*extra, f"results_root={tmp_path / 'b'}"])
    spec = launch.launch_config(over, tmp_path).launch
    assert [j["name"] for j in launch.plan_jobs(plan, spec)] == [
        "step-grid",
        "batch-pes-seed0+pes-seed1",
        "batch-es-seed0+es-seed1",
    ]
    got = launch.reproduce(
        str(path), "quick", [*extra, f"results_root={tmp_path / 'b'}"], over, plot_figure=False
    )
    a, b = pd.read_csv(want), pd.read_csv(got)
    pd.testing.assert_frame_equal(a.drop(columns="value"), b.drop(columns="value"))
    np.testing.assert_allclose(b["value"], a["value"], rtol=1e-6, atol=1e-12)
    meta = json.loads((got.parent / "runs" / "pes-seed1" / "run.json").read_text())
    assert meta["batched_with"] == ["pes-seed0", "pes-seed1"]
