"""Run one composed config: compiled chunks of outer steps, rows appended as they come.

Layout of a run directory::

    metrics.csv      tidy long-format rows (pes.results.COLUMNS), appended per chunk
    checkpoint.npz   the TrainState after the last logged chunk (atomic), with the row
                     count, size and SHA-256 of metrics.csv at that point
    checkpoints/     earlier checkpoints, step-<outer step>.npz: at most train.keep_checkpoints,
                     one per 1/(keep + 1) of the run (hard links to what was the last one)
    run.json         resolved config, fingerprint, git commit, versions, machine, status,
                     wall time, and one entry per start (``attempts``)
    .lock            an OS lock (flock) held while a process works on the folder

What happens on (re)start, in this order:

* The folder is locked; a second process on the same run exits at once naming the holder
  (`experiments.io.Busy`).  The kernel releases the lock of a killed process, so a run
  left ``running`` by a dead process is recognised as such and resumed.
* A folder holding another config's results (other fingerprint) is refused, naming the
  differing keys, unless ``overwrite=true``: then it is moved to ``<run_id>.old-<time>``.
  An unreadable run.json is refused likewise unless ``resume=false``, which moves it aside.
* ``resume=false`` starts the same config over.  Otherwise the CSV is verified against
  the checkpoint: rows logged after it are cut, and a CSV that lacks or changed rows the
  checkpoint recorded is kept as ``metrics.csv.unverified-<time>`` while the run is
  recomputed from the latest earlier checkpoint whose rows the CSV still holds, or from
  scratch (runs are deterministic, so the result is the same).  A finished run (complete
  or diverged) whose CSV verifies is skipped.

A run **diverges** when a logged value (theta, the loss, any metric) is NaN, infinite or
larger in magnitude than the square root of its dtype's largest value (1.8e19 in
float32, 1.3e154 in float64): beyond that its square, which every loss and gradient norm
involves, overflows, so later values are meaningless.  The run then stops with status
``diverged``; its rows end at the first such log point (whatever the chunk size), followed
by a marker row: metric ``diverged``, value 1, at that outer step.

Rows are written log point by log point (metrics by name within one), so a run's CSV has
the same bytes whatever ``train.chunk_size`` it ran (or resumed) with.

A task whose ``cost_metric`` field names a metric (``env_steps`` for control tasks)
also gets that metric logged: outer steps times the estimator's ``cost_per_estimate``,
i.e. every inner step the estimator took (all particles, truncated ES's mean trajectory
included; evaluation excluded).  A chunk that fails with an error (a simulator error,
say) marks the run ``failed`` in run.json, keeps every row logged before it, and raises
`RunFailed` with a one-line message naming the run, seed and outer steps.  Ctrl-C marks
it ``interrupted`` and raises `experiments.cli.Interrupted` saying what was kept.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from omegaconf import DictConfig
from tqdm.auto import tqdm

from experiments import artefacts, cli, config, io, sizes
from experiments.cli import EXIT_CONFIG, INTERRUPT_HINT, Interrupted, Problem
from pes import outer, results

CSV, CKPT, META = "metrics.csv", "checkpoint.npz", "run.json"
KEPT = "checkpoints"  # earlier checkpoints: checkpoints/step-<outer step>.npz
FINISHED = ("complete", "diverged")
DIVERGED = "diverged"  # the metric of the marker row a diverged run ends with


class RunFailed(Problem):
    """A run stopped on an error; its rows up to the last finished chunk are kept."""


class ConfigChanged(Problem):
    """The run folder holds results of another config (and ``overwrite`` is false)."""

    exit_code = EXIT_CONFIG


def _last_line(err: BaseException) -> str:
    """The innermost message of an error (a host-callback error arrives wrapped by XLA)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error:" in line or "Error " in line:
            return line
    return lines[-1] if lines else type(err).__name__


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


# ----------------------------------------------------------------------------- divergence


def divergence(metrics: dict) -> tuple[int, str, float] | None:
    """(outer step, metric, value) of the first logged value that shows divergence, if any.

    Divergence: NaN, infinite, or ``|value| > sqrt(largest finite value of its dtype)``.
    With ``train.nonfinite`` set, a log interval whose estimates were all skipped logs NaN
    for the estimate's ``loss`` and ``grad_norm``: that is not a divergence (theta did not move).
    """
    steps = np.asarray(metrics["outer_step"])
    skipped = np.asarray(metrics.get(outer.NONFINITE_METRIC, np.zeros(steps.shape))) > 0
    first = None
    for name in sorted(metrics):
        values = np.asarray(metrics[name])
        if name == "outer_step" or not np.issubdtype(values.dtype, np.floating):
            continue
        bad = ~(np.abs(values) <= np.sqrt(np.finfo(values.dtype).max))  # NaN compares False
        if name in ("loss", "grad_norm"):
            bad &= ~(skipped & np.isnan(values))
        if bad.any():
            i = int(np.argmax(bad))
            if first is None or steps[i] < first[0]:
                first = (int(steps[i]), name, float(values[i]))
    return first


def _until(metrics: dict, step: int) -> dict:
    """The log points of ``metrics`` up to outer step ``step``."""
    keep = np.asarray(metrics["outer_step"]) <= step
    return {k: np.asarray(v)[keep] for k, v in metrics.items()}


def with_cost(metrics: dict, estimator, cost_metric: str | None) -> dict:
    """``metrics`` with the task's cost metric added: the inner steps taken so far (e.g.
    training environment steps, evaluation excluded)."""
    if not cost_metric:
        return metrics
    steps = np.asarray(metrics["outer_step"], np.float64)
    return {**metrics, cost_metric: steps * float(estimator.cost_per_estimate)}


def chunk_rows(info: dict, metrics: dict, estimator, cost_metric: str | None):
    """One run's rows of a chunk's log points, as every runner writes them, and the first
    divergence (outer step, metric, value) or None.

    The rows stop at the divergence and end with the marker row that plots and merges read
    (metric ``diverged`` = 1); they are sorted step by step, so the CSV has the same bytes for
    any chunk size and for a run trained alone or in a batch (`experiments.batched`)."""
    bad = divergence(metrics)
    k = estimator.steps_per_estimate
    points = metrics if bad is None else _until(metrics, bad[0])
    rows = results.rows(info, with_cost(points, estimator, cost_metric), k)
    rows.sort(key=lambda row: row["outer_step"])
    if bad is not None:
        rows += results.rows(info, {"outer_step": np.array([bad[0]]), DIVERGED: np.array([1.0])}, k)
    return rows, bad


# ----------------------------------------------------------------------------- the run folder


def make_folder(out_dir: Path) -> None:
    """Create the run folder; `io.FileProblem` naming the path if the results root is unusable."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        where = err.filename or out_dir
        raise io.FileProblem(
            f"cannot create the run folder {out_dir}: {where}: {err.strerror or err}; "
            "fix: make it writable or pass results_root=<a writable folder>"
        ) from err
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise io.FileProblem(
            f"the run folder {out_dir} is not writable; fix: make it writable or pass "
            "results_root=<a writable folder>"
        )


def _resume_false_fix(out_dir: Path) -> str:
    return f"rerun with resume=false to start over (the folder is first moved to {out_dir.name}.old-<time>)"


class Recorded(NamedTuple):
    """What a run folder holds, judged from run.json before any compute."""

    action: str  # "fresh" (nothing there), "same" (this config's files), "aside" (to move away)
    meta: dict | None
    why: str = ""


def inspect_folder(spec: config.RunSpec, out_dir: Path) -> Recorded:
    """Classify ``out_dir`` for the run ``spec``; raises `ConfigChanged` / `io.FileProblem` when refused."""
    fp = spec.fingerprint
    io.expect_files(out_dir, (CSV, CKPT, META))
    has_results = (out_dir / CSV).exists() or (out_dir / CKPT).exists()
    try:
        meta = io.read_json(out_dir / META, fix=_resume_false_fix(out_dir))
    except io.FileProblem:
        if spec.resume:
            raise
        return Recorded("aside", None, "its run.json is unreadable")
    if meta is None:
        if not has_results:
            return Recorded("fresh", None)
        if spec.resume:
            raise io.FileProblem(
                f"{out_dir} holds results but no {META}, so their config is unknown; "
                f"fix: {_resume_false_fix(out_dir)}"
            )
        return Recorded("aside", None, f"it holds results without {META}")
    if config.recorded_fingerprint(meta) != fp:
        diff = config.config_diff(meta.get("config") or {}, spec.config)
        if not spec.overwrite:
            raise ConfigChanged(
                f"{out_dir} holds results of another config (fingerprint {meta.get('fingerprint')} "
                f"-> {fp}: {diff}); fix: add overwrite=true to move them to "
                f"{out_dir.name}.old-<time> and start over, or use another results_root"
            )
        return Recorded("aside", meta, f"it held another config ({diff})")
    return Recorded("same", meta)


def check(run: DictConfig | config.RunSpec) -> Path:
    """Checks that need no compute (folder creatable, run.json readable, same config or
    ``overwrite``) of a run's spec (or of a composed config, built first); the figure pipeline
    calls it for every run before computing any."""
    spec = config.as_spec(run)
    make_folder(spec.run_dir)
    inspect_folder(spec, spec.run_dir)
    return spec.run_dir


def status(out_dir: Path) -> str | None:
    """The run's status as recorded, except that ``running`` without a live lock holder is
    ``killed`` (the process died without saying so: SIGKILL, power loss, ...)."""
    meta = io.read_json(Path(out_dir) / META)
    if meta is None:
        return None
    recorded = meta.get("status")
    if recorded == "running" and io.lock_holder(out_dir) is None:
        return "killed"
    return recorded


class Start(NamedTuple):
    state: outer.TrainState
    log: io.CsvLog
    meta: dict | None  # the previous run.json when resuming
    finished: str | None  # "complete"/"diverged": nothing to do


def from_scratch(out_dir: Path, fresh_state) -> Start:
    (out_dir / CKPT).unlink(missing_ok=True)
    shutil.rmtree(out_dir / KEPT, ignore_errors=True)
    return Start(fresh_state, io.CsvLog.create(out_dir / CSV), None, None)


def kept_checkpoints(out_dir: Path) -> dict[int, Path]:
    """The earlier checkpoints a run folder keeps, by outer step."""
    found = {}
    for path in Path(out_dir, KEPT).glob("step-*.npz"):
        step = path.stem.removeprefix("step-")
        if step.isdigit():
            found[int(step)] = path
    return found


def save_checkpoint(out_dir: Path, state, record: dict, num_steps: int, keep: int) -> None:
    """Write the run's checkpoint (``record``: outer step, status, the CSV's record) and keep
    it as an earlier checkpoint when it is the first one in a new 1/(keep + 1) of the run,
    so that at most ``keep`` are kept, spread over the run.  Kept checkpoints are hard links:
    one costs disk only once a later checkpoint replaces the last."""
    io.save_checkpoint(out_dir / CKPT, state, record)
    step = int(record["outer_step"])
    part = step * (keep + 1) // num_steps
    if record["status"] != "running" or not 1 <= part <= keep:
        return
    if any(s * (keep + 1) // num_steps == part for s in kept_checkpoints(out_dir)):
        return
    io.link_or_copy(out_dir / CKPT, out_dir / KEPT / f"step-{step}.npz")


def _resume_earlier(
    out_dir: Path, rid: str, meta: dict, fresh_state, last: int, problem: str
) -> Start | None:
    """After the CSV failed verification against the last checkpoint: continue from the
    latest earlier checkpoint whose rows the CSV still holds (the damaged CSV kept aside,
    later kept checkpoints dropped), or None."""
    for step, path in sorted(kept_checkpoints(out_dir).items(), reverse=True):
        if step >= last:
            continue
        try:
            state, ck = io.load_checkpoint(path, fresh_state)
        except io.FileProblem:
            continue
        if "csv_sha256" not in ck or not io.CsvLog.matches(out_dir / CSV, ck):
            continue
        kept = out_dir / f"{CSV}.unverified-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.copyfile(out_dir / CSV, kept)
        log = io.CsvLog.resume(out_dir / CSV, ck)
        io.link_or_copy(path, out_dir / CKPT)
        for later, other in kept_checkpoints(out_dir).items():
            if later > step:
                other.unlink()
        _note(
            f"{rid}: {problem} (that CSV is kept as {kept.name}); resuming from the earlier "
            f"checkpoint at outer step {step}"
        )
        return Start(state, log, meta, None)
    return None


def _resume(out_dir: Path, rid: str, meta: dict, fresh_state) -> Start:
    """Continue from the checkpoint after verifying the CSV against it."""
    if not (out_dir / CKPT).exists():  # killed before the first checkpoint: nothing to keep
        return from_scratch(out_dir, fresh_state)
    fix = f"rerun with resume=false to recompute {rid} from scratch"
    kept = kept_checkpoints(out_dir)
    if kept:
        step = max(kept)
        fix += f", or copy {kept[step]} over it to resume from outer step {step}"
    state, ck = io.load_checkpoint(out_dir / CKPT, fresh_state, fix=fix)
    if "csv_sha256" not in ck:
        problem = "its checkpoint predates verified results"
    else:
        try:
            log = io.CsvLog.resume(out_dir / CSV, ck)
        except ValueError as err:
            problem = str(err)
            earlier = _resume_earlier(out_dir, rid, meta, fresh_state, int(ck["outer_step"]), problem)
            if earlier is not None:
                return earlier
        else:
            if meta.get("status") == "running":
                _note(
                    f"{rid} was left 'running' by PID {meta.get('pid', '?')} on {meta.get('host', '?')}, "
                    f"which no longer holds its lock (killed?); resuming from outer step {ck['outer_step']}"
                )
            finished = ck.get("status") if ck.get("status") in FINISHED else None
            return Start(state, log, meta, finished)
    kept = out_dir / f"{CSV}.unverified-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out_dir / CSV).exists():
        os.replace(out_dir / CSV, kept)
        problem += f" (that CSV is kept as {kept.name})"
    _note(f"{rid}: {problem}; recomputing it from scratch")
    return from_scratch(out_dir, fresh_state)


def begin(spec: config.RunSpec, out_dir: Path, recorded: Recorded, fresh_state) -> Start:
    """Where a locked run folder starts: its verified checkpoint when it holds this config
    and ``resume`` is on, else from scratch.  A finished run's run.json is brought in line
    with its checkpoint (a process killed between the two writes)."""
    if recorded.action == "same" and spec.resume:
        start = _resume(out_dir, spec.run_id, recorded.meta, fresh_state)
    else:
        start = from_scratch(out_dir, fresh_state)
    if start.finished and start.meta.get("status") != start.finished:
        io.write_json(out_dir / META, dict(start.meta, status=start.finished))
    return start


def own_folder(spec: config.RunSpec, out_dir: Path) -> None:
    """Refuse to move anything but the run's own folder aside: ``out_dir`` must be
    ``<results_root>/<profile>/<figure>/runs/<run id>`` itself, a real folder (not a link)."""
    out_dir = Path(out_dir)
    if (
        out_dir.is_symlink()
        or not out_dir.is_dir()
        or os.path.abspath(out_dir) != os.path.abspath(spec.run_dir)
        or out_dir.name != spec.run_id
    ):
        raise io.FileProblem(
            f"{out_dir} is not the run folder of {spec.run_id} ({spec.run_dir}); "
            "overwrite=true only moves a run's own folder aside; fix: move it by hand"
        )


def lock_folder(spec: config.RunSpec, out_dir: Path) -> tuple[io.FolderLock, Recorded]:
    """Lock ``out_dir`` and judge what it holds; a folder of another config is moved aside
    (when allowed) and the fresh folder locked instead."""
    make_folder(out_dir)
    lock = io.FolderLock(out_dir).acquire()
    try:
        io.remove_stale_temporaries(out_dir)
        io.remove_stale_temporaries(out_dir / KEPT)
        recorded = inspect_folder(spec, out_dir)
        if recorded.action == "aside":
            own_folder(spec, out_dir)
            aside = io.move_aside(out_dir)  # our lock file moves along, still held
            make_folder(out_dir)
            new_lock = io.FolderLock(out_dir).acquire()
            lock.release()
            lock = new_lock
            _note(f"{out_dir} was moved to {aside.name}: {recorded.why}")
    except BaseException:
        lock.release()
        raise
    return lock, recorded


# ----------------------------------------------------------------------------- running


def run(cfg: DictConfig | config.RunSpec, *, out_dir: Path | None = None) -> Path:
    """Run ``cfg``: a composed config (validated and built first, `config.RunSpec.from_config`)
    or a run's spec; returns the run directory."""
    spec = config.as_spec(cfg)
    built = spec.built
    out_dir = Path(out_dir) if out_dir is not None else spec.run_dir
    sizes.check_run(spec, out_dir)  # before any compute: refused above max_result_mb
    lock, recorded = lock_folder(spec, out_dir)
    try:
        config.set_x64(spec.x64)  # the spec may have been built before another config's
        key = jax.random.key(spec.seed)
        fresh = outer.init_state(key, built.task.theta_init, built.estimator, built.optimizer)
        start = begin(spec, out_dir, recorded, fresh)
        if start.finished:
            return out_dir
        _train(spec, out_dir, start)
    finally:
        lock.release()
    return out_dir


def run_meta(spec: config.RunSpec, previous: dict | None, step: int, **extra) -> dict:
    """run.json of a run starting (or resuming) at outer step ``step``: provenance, config,
    the attempts so far plus this one, status ``running``; ``extra`` (e.g. ``batched_with``)
    goes into this attempt's record and the top level.  ``previous`` is the run.json of the
    earlier attempts, if any."""
    previous = previous or {}
    attempts = list(previous.get("attempts", []))
    attempts.append(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "from_outer_step": int(step),
            **extra,
        }
    )
    return {
        **artefacts.provenance(),  # git commit, packages, machine: the suite's one run-info head
        "run_id": spec.run_id,
        "fingerprint": spec.fingerprint,
        "config": spec.config,
        "profile": spec.profile,
        "estimator_cost_per_outer_step": spec.built.estimator.cost_per_estimate,
        "size_estimate": sizes.run_estimate(spec),  # rows and bytes, estimated before compute
        # the task's static facts (e.g. which dataset was loaded and from where)
        "task_info": spec.built.task.info(),
        "status": "running",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "attempts": attempts,
        "wall_time_s": float(previous.get("wall_time_s", 0.0)),
        **extra,
    }


class RunLog:
    """One run's bookkeeping while it trains: its rows, checkpoints and run.json.

    The one run lifecycle: a run trained alone (`_train_alone`) and each member of a batch of
    seeds (`experiments.batched`) go through the same steps -- ``log_start`` (the starting
    point), ``log_chunk`` after every compiled chunk (rows cut at a divergence, checkpoint,
    status ``running``/``complete``/``diverged``), ``finish`` (``interrupted``, ``failed``) --
    so a folder any of them leaves is resumed by either."""

    def __init__(self, spec: config.RunSpec, out_dir: Path, start: Start, **meta_extra):
        self.spec, self.out_dir = spec, out_dir
        self.state, self.log = start.state, start.log
        self.meta = run_meta(spec, start.meta, int(self.state.step), **meta_extra)
        self.wall_before = self.meta["wall_time_s"]
        self.batched = "batched_with" in meta_extra
        io.write_json(out_dir / META, self.meta)
        self.done = int(self.state.step)
        self.kept = self.done  # the outer step of the last checkpoint: what a rerun resumes from
        self.live = True  # False once finished (complete, diverged, interrupted or failed)
        self.t0 = time.perf_counter()

    def _write(self, *, after_error: bool = False, **update) -> None:
        meta = self.meta
        meta.update(wall_time_s=self.wall_before + time.perf_counter() - self.t0, **update)
        if self.batched:
            meta["batch_wall_time_s"] = time.perf_counter() - self.t0
        if after_error:  # also on a full disk: the status must not stay "running"
            io.write_json_anyhow(self.out_dir / META, meta)
        else:
            io.write_json(self.out_dir / META, meta)

    def finish(self, status: str, *, after_error: bool = False, **extra) -> None:
        self.live = False
        self.meta["attempts"][-1].update(ended=time.strftime("%Y-%m-%d %H:%M:%S"), status=status)
        self._write(after_error=after_error, status=status, **extra)

    def failed(self, err: BaseException, steps: str) -> RunFailed:
        msg = (
            f"{self.spec.run_id} (seed {self.spec.seed}): failed during {steps}: {_last_line(err)}; "
            f"rows up to outer step {self.kept} are kept in {self.out_dir / CSV}"
        )
        self.finish("failed", after_error=True, error=msg, failed_after_outer_step=self.kept)
        return RunFailed(msg)

    def interrupted(self) -> None:
        if self.live:
            self.finish("interrupted", after_error=True, interrupted_at_outer_step=self.kept)

    def log_chunk(self, metrics: dict, state) -> bool:
        """The rows of a chunk ending at ``state`` (cut at a divergence), its checkpoint and
        run.json; True when the run is finished."""
        spec, built, total = self.spec, self.spec.built, self.spec.train.num_outer_steps
        rows, bad = chunk_rows(spec.run_info, metrics, built.estimator, built.task.cost_metric)
        self.log.append(rows)
        self.state = state
        self.done = int(state.step)
        status = "diverged" if bad else "complete" if self.done >= total else "running"
        record = {"outer_step": self.done, "status": status, **self.log.record()}
        save_checkpoint(self.out_dir, state, record, total, spec.train.keep_checkpoints)
        self.kept = self.done
        if bad is not None:
            step, name, value = bad
            self.finish("diverged", diverged_at_outer_step=step, diverged_metric=name)
            _note(
                f"{spec.run_id}: diverged at outer step {step} ({name} = {value:.3g}); run stopped, rows kept"
            )
        elif status == "complete":
            self.finish("complete")
        else:
            self._write()
        return status != "running"

    def log_start(self, first: dict) -> bool:
        """The starting point (theta and the task's evaluation before any update); True when
        it already diverged (the run is finished)."""
        built = self.spec.built
        if divergence(first) is not None:
            return self.log_chunk(first, self.state)
        points = with_cost(first, built.estimator, built.task.cost_metric)
        self.log.append(results.rows(self.spec.run_info, points, built.estimator.steps_per_estimate))
        return False


def make_chunks(spec: config.RunSpec, make=outer.make_chunk) -> Callable[[int], Callable]:
    """``n -> compiled chunk of n outer steps`` for the run's estimator, optimizer, log and
    evaluation settings (``make``: `pes.outer.make_chunk`, or `make_batched_chunk`), each
    length made once."""
    built, train = spec.built, spec.train
    chunks: dict[int, Callable] = {}

    def chunk(n: int) -> Callable:
        if n not in chunks:
            chunks[n] = make(
                built.estimator,
                built.optimizer,
                log_every=train.log_every,
                num_logs=n // train.log_every,
                evaluate=built.task.evaluate,
                nonfinite=train.nonfinite,
            )
        return chunks[n]

    return chunk


def _train_alone(run: RunLog, bar) -> None:
    """Compiled chunks of outer steps until the run is finished."""
    spec, total = run.spec, run.spec.train.num_outer_steps
    if run.done == 0:
        try:
            first = jax.device_get(outer.make_initial_metrics(spec.built.task.evaluate)(run.state))
        except Exception as err:  # noqa: BLE001 - reported with the run's identity, then re-raised
            raise run.failed(err, "the initial evaluation") from err
        if run.log_start(first):
            return
    chunk = make_chunks(spec)
    while run.done < total:
        n = min(spec.train.chunk_size, total - run.done)
        try:
            state, metrics = chunk(n)(run.state)
            metrics = jax.device_get(metrics)
        except Exception as err:  # noqa: BLE001 - reported with the run's identity, then re-raised
            raise run.failed(err, f"outer steps {run.done + 1}..{run.done + n}") from err
        if run.log_chunk(metrics, state):
            return
        bar.update(n)


def _train(spec: config.RunSpec, out_dir: Path, start: Start) -> None:
    run = RunLog(spec, out_dir, start)
    total = spec.train.num_outer_steps
    bar = tqdm(
        total=total,
        initial=run.done,
        desc=spec.run_id,
        unit="step",
        disable=None if spec.progress else True,  # None: only on a terminal
        file=sys.stderr,
        leave=False,
    )
    try:
        _train_alone(run, bar)
    except KeyboardInterrupt:
        run.interrupted()
        raise Interrupted(
            f"{spec.run_id} stopped at outer step {run.kept} of {total}; its rows up to there are kept "
            f"in {out_dir / CSV}; {INTERRUPT_HINT}"
        ) from None
    except OSError as err:  # a full disk, a folder where a file belongs, ...: one line, status failed
        kept_text = f"rows up to outer step {run.kept} are kept and a rerun resumes there"
        problem = cli.file_problem(err, need=_still_needed(out_dir, run.meta, err), what=kept_text)
        run.finish("failed", after_error=True, error=str(problem), failed_after_outer_step=run.kept)
        raise io.FileProblem(str(problem)) from err
    finally:
        bar.close()


def _still_needed(out_dir: Path, meta: dict, err: OSError) -> int | None:
    """Bytes the run still has to write, from its size estimate and what its folder holds."""
    total = (meta.get("size_estimate") or {}).get("total_bytes")
    used = sum(p.stat().st_size for p in (out_dir / CSV, out_dir / CKPT) if p.is_file())
    used += sum(p.stat().st_size for p in kept_checkpoints(out_dir).values())
    need = max(int(total) - used, 0) if total else 0
    return max(need, int(getattr(err, "needed_bytes", None) or 0)) or None


def remove(out_dir: Path) -> None:
    """Delete a run directory (used to start a figure clean)."""
    shutil.rmtree(out_dir, ignore_errors=True)
