"""Check a figure's claims against its results: did it reproduce?

    python -m experiments.check figure=figure2 [profile=quick] [results_root=results] [report_only=true]
    python -m experiments.check figure=all profile=paper      # every figure with results
    python -m experiments.check figure=path/to/figure.yaml    # a figure config outside configs/

With the default ``results_root=results``, a figure this machine has not run is checked on the
stored reference results (``results/reference/<profile>/<figure>``) and the table's first line says
so; ``reference=no`` turns that off.

Prints one table (claim | measured | verdict) per figure and exits 0 (no applicable claim
failed), 1 (a claim failed: a finding), 2 (a configuration problem: unknown figure,
malformed claim, unreadable table), 3 (no results for this figure and profile) or 4 (results
present but damaged or not verifiable: a table that differs from the digest recorded when it
was written, an unparsable cell, a cut-short file; nothing is measured, the line names the file
and how to rebuild it; `experiments.integrity`); its last line says which, in words
(`outcome`).  ``report_only=true``
turns a failed claim into exit 0 (``make reproduce-figure-N`` uses it; ``make check-figure-N``
does not).  The claim language is in ``docs/claims.md``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from experiments import claims, cli, config, figures, integrity, migrate
from pes import results

METRICS_NAMES = ("metrics.csv", "metrics.csv.gz")
GRID_NAMES = ("grid.csv", "grid.csv.gz")
FIGURE_JSON = "figure.json"
GRID_NUMBERS = {"value": integrity.NUMBER_OR_EMPTY}
DEFAULT_RESULTS = "results"
STORED_RESULTS = config.ROOT / "results" / "reference"  # committed results (experiments.docs store)


@dataclass
class FigureResults:
    """What a figure directory holds, read once."""

    fig_dir: Path
    metrics: pd.DataFrame | None
    grid: pd.DataFrame | None
    statuses: dict
    provenance: dict
    metrics_path: Path | None


def _first(fig_dir: Path, names) -> Path | None:
    for n in names:
        if (fig_dir / n).exists():
            return fig_dir / n
    return None


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text()) if Path(path).exists() else None
    except (OSError, ValueError) as err:
        raise config.ConfigError(
            f"{path}: not valid JSON ({err}); fix: delete it and rerun the figure"
        ) from err


def _runs_info(fig_dir: Path, figure_json: dict | None) -> dict[str, dict]:
    """run_id -> run info (status, wall_time_s, machine, git_commit, ...) from figure.json or run.json."""
    out: dict[str, dict] = {}
    runs = (figure_json or {}).get("runs")
    if isinstance(runs, dict):
        out = {str(k): dict(v) for k, v in runs.items() if isinstance(v, dict)}
    elif isinstance(runs, list):
        out = {str(r.get("run_id", r.get("id"))): dict(r) for r in runs if isinstance(r, dict)}
    for path in sorted((fig_dir / "runs").glob("*/run.json")):
        meta = read_json(path) or {}
        info = out.setdefault(path.parent.name, {})
        for k in ("status", "wall_time_s", "diverged_at_outer_step", "git_commit", "machine", "packages"):
            if k in meta and k not in info:
                info[k] = meta[k]
    return out


def provenance(fig_dir: Path, figure_json: dict | None, runs: dict[str, dict]) -> dict:
    """profile, machine, wall time, commit, dates: from figure.json, else from the runs' run.json."""
    fj = dict(figure_json or {})
    out = {
        k: fj[k]
        for k in (
            "figure",
            "profile",
            "machine",
            "git_commit",
            "commit",
            "start_time",
            "end_time",
            "wall_time_s",
            "total_wall_time_s",
            "compute_wall_time_s",
            "load",
            "note",
        )
        if k in fj
    }
    if "commit" in out and "git_commit" not in out:
        out["git_commit"] = out.pop("commit")
    if "total_wall_time_s" in out and "wall_time_s" not in out:
        out["wall_time_s"] = out.pop("total_wall_time_s")
    if "wall_time_s" not in out and runs:
        walls = [float(r["wall_time_s"]) for r in runs.values() if r.get("wall_time_s") is not None]
        if walls:
            out["wall_time_s"] = sum(walls)
            out["wall_time_is_sum_of_runs"] = True
    if "machine" not in out:
        machines = [r["machine"] for r in runs.values() if r.get("machine")]
        if machines:
            out["machine"] = machines[0]
    if "git_commit" not in out:
        commits = sorted({str(r["git_commit"]) for r in runs.values() if r.get("git_commit")})
        if commits:
            out["git_commit"] = commits[0] if len(commits) == 1 else commits
    return out


def load(fig_dir: Path) -> FigureResults:
    """A figure folder's tables, verified against the digests in its figure.json and parsed
    strictly before anything is measured (`experiments.integrity`: `integrity.Damaged`)."""
    fig_dir = Path(fig_dir)
    mpath, gpath = _first(fig_dir, METRICS_NAMES), _first(fig_dir, GRID_NAMES)
    fix = integrity.rebuild_hint(fig_dir)
    fj, texts = integrity.verify(fig_dir, [mpath, gpath], (*METRICS_NAMES, *GRID_NAMES), fix)
    numbers = integrity.METRICS_NUMBERS
    metrics = integrity.read_table(mpath, texts[mpath], results.COLUMNS, numbers, fix=fix) if mpath else None
    if metrics is not None and results.SOURCE not in metrics.columns:
        raise config.ConfigError(
            f"{mpath}: no {results.SOURCE!r} column (a table written before a figure's merged table "
            f"named the run or post-step of each row); fix: {migrate.command(fig_dir)}"
        )
    grid = (
        integrity.read_table(
            gpath,
            texts[gpath],
            ("metric", "value"),
            GRID_NUMBERS,
            fix=fix,
            prefixed=("theta/", integrity.NUMBER_OR_EMPTY),
        )
        if gpath
        else None
    )
    runs = _runs_info(fig_dir, fj)
    statuses = {
        k: {"status": v.get("status"), "diverged_at_outer_step": v.get("diverged_at_outer_step")}
        for k, v in runs.items()
    }
    return FigureResults(fig_dir, metrics, grid, statuses, provenance(fig_dir, fj, runs), mpath)


def load_figure(name: str) -> DictConfig:
    """A figure config by name (``figure2``, ``2``) or by path to a YAML file (schema-checked)."""
    return figures.load(name)


def expected_runs(fig: DictConfig, profile: str) -> list[str] | None:
    try:
        return [str(r.id) for r in figures.runs(fig, profile)]
    except (config.ConfigError, AttributeError, KeyError):
        return None


def check_figure(
    fig: DictConfig, profile: str, results_root: str | Path
) -> tuple[list[claims.Result], FigureResults]:
    """Validate the figure's claims and evaluate them on ``results_root/profile/<id>``."""
    validated = claims.validate(fig.get("claims"), fig)
    res = load(Path(results_root) / profile / str(fig.id))
    out = claims.evaluate(
        validated,
        res.metrics,
        profile=profile,
        fig=fig,
        statuses=res.statuses,
        grid=res.grid,
        expected_runs=expected_runs(fig, profile),
    )
    return out, res


def describe(res: FigureResults) -> str:
    p = res.provenance
    bits = []
    if p.get("machine"):
        bits.append(f"machine {machine_text(p['machine'])}")
    if p.get("wall_time_s") is not None:
        bits.append(
            f"wall time {duration(p['wall_time_s'])}"
            + (" (sum of runs)" if p.get("wall_time_is_sum_of_runs") else "")
        )
    if p.get("git_commit"):
        c = p["git_commit"]
        bits.append(f"commit {', '.join(x[:7] for x in c) if isinstance(c, list) else str(c)[:7]}")
    return "; ".join(bits)


def machine_text(m) -> str:
    if isinstance(m, str):
        return m
    if isinstance(m, dict):
        if m.get("description"):
            return str(m["description"])
        backend = m.get("jax_backend", "")
        devs = m.get("devices") or []
        if backend and backend != "cpu" and devs:
            return f"{len(devs)}x {backend.upper()} ({devs[0]})"
        cpus = m.get("cpu_count")
        model = cpu_model_text(m.get("cpu_model") or "")
        if cpus and model:
            return f"{cpus}-core {model}"
        proc = m.get("processor") or ""
        return f"{cpus}-core {proc} CPU".replace("  ", " ").strip() if cpus else str(proc or m)
    return str(m)


def cpu_model_text(model: str) -> str:
    """A CPU's model name without trademarks, clock and the word "Processor" ("Intel Xeon", "AMD EPYC").

    Shown beside a result because float32 training that amplifies rounding can end differently
    on another CPU family (its vector instructions round the same sums in another order).
    """
    text = re.sub(r"\((R|TM|tm)\)|\bCPU\b.*$|\bProcessor\b", " ", model)
    return " ".join(text.split())


def duration(seconds) -> str:
    s = float(seconds)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d} min"


def has_results(fig_dir: Path) -> bool:
    return bool(_first(fig_dir, METRICS_NAMES) or _first(fig_dir, GRID_NAMES))


def results_root_for(fig_id: str, profile: str, root, reference: str) -> tuple[Path, str]:
    """The results root to read ``fig_id`` from, and a note saying which results were read.

    The default root with no local results of the figure falls back to the stored reference
    results when they exist (``reference=auto``); any other root is read as given.
    """
    local = Path(root) / profile / fig_id
    if reference == "auto" and str(root) == DEFAULT_RESULTS and not has_results(local):
        if has_results(STORED_RESULTS / profile / fig_id):
            return STORED_RESULTS, f"stored reference results: this machine has no run under {local}"
    return Path(root), ""


def key_value_arguments(argv: list[str], defaults: dict) -> dict:
    """``key=value`` command-line arguments over ``defaults``; a bare word or an unknown key is a
    one-line `config.ConfigError` naming the keys allowed."""
    args = dict(defaults)
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in args:
            raise config.ConfigError(
                f"argument {a!r} is invalid; allowed: {', '.join(k + '=...' for k in args)}"
            )
        args[key] = value
    return args


def _parse(argv: list[str]) -> dict:
    defaults = {
        "figure": None,
        "profile": "quick",
        "results_root": DEFAULT_RESULTS,
        "report_only": "false",
        "reference": "auto",
    }
    args = key_value_arguments(argv, defaults)
    if not args["figure"]:
        raise config.ConfigError(
            f"figure=<name> is required; allowed: all, {', '.join(figures.figure_names())} or a YAML path"
        )
    config.check_profile_name(args["profile"])
    if args["report_only"] not in ("true", "false"):
        raise config.ConfigError(f"report_only={args['report_only']} is invalid; allowed: true, false")
    if args["reference"] not in ("auto", "no"):
        raise config.ConfigError(
            f"reference={args['reference']} is invalid; allowed: auto (read the stored reference results "
            "when there is no local run), no"
        )
    return args


def run(argv: list[str], out=None) -> int:
    out = out or sys.stdout
    args = _parse(argv)
    profile, root = args["profile"], args["results_root"]
    if args["figure"] == "all":
        names = [
            n
            for n in figures.figure_names()
            if _first(results_root_for(n, profile, root, args["reference"])[0] / profile / n, METRICS_NAMES)
        ]
        if not names:
            print(
                f"no figure has results under {Path(root) / profile}; run make reproduce-figure-N first",
                file=out,
            )
            print(outcome(claims.EXIT_NO_RESULTS), file=out)
            return claims.EXIT_NO_RESULTS
    else:
        names = [args["figure"]]
    code = claims.EXIT_OK
    for name in names:
        fig = load_figure(name)
        fig_root, read_note = results_root_for(str(fig.id), profile, root, args["reference"])
        try:
            rows, res = check_figure(fig, profile, fig_root)
        except integrity.Damaged as err:  # nothing measured: the file, the damage, the fix
            print(f"\n{fig.id} ({profile}): not checked: {err}", file=out)
            code = integrity.EXIT_DAMAGED
            continue
        where = figures.display_path(Path(res.metrics_path or (res.fig_dir / "metrics.csv")))
        if read_note:
            where = f"{where} ({read_note})"
        print(f"\n{fig.id} ({profile}): {where}" + (f" — {describe(res)}" if describe(res) else ""), file=out)
        print(claims.table(rows), file=out)
        print(f"{fig.id} {profile}: {claims.summary(rows)}", file=out)
        if res.metrics is None and res.grid is None:
            print(
                f"no results: run `make reproduce-figure-{str(fig.id).removeprefix('figure')} "
                f"PROFILE={profile}` first",
                file=out,
            )
            code = max(code, claims.EXIT_NO_RESULTS)  # below EXIT_DAMAGED
        elif claims.exit_code(rows) == claims.EXIT_FAIL and code not in (
            claims.EXIT_NO_RESULTS,
            integrity.EXIT_DAMAGED,
        ):
            code = claims.EXIT_FAIL
    report_only = args["report_only"] == "true" and code == claims.EXIT_FAIL
    print(outcome(code, report_only), file=out)
    return claims.EXIT_OK if report_only else code


def outcome(code: int, report_only: bool = False) -> str:
    """The check's last line: what its exit code means, in words."""
    words = {
        claims.EXIT_OK: "no applicable claim failed",
        claims.EXIT_FAIL: "at least one claim failed: a finding about the reproduction, not a broken install",
        claims.EXIT_CONFIG: "a configuration problem; nothing was checked",
        claims.EXIT_NO_RESULTS: "no results for this figure and profile; nothing could be checked",
        integrity.EXIT_DAMAGED: "results present but damaged or not verifiable; nothing was checked",
    }
    if report_only:
        return f"check: {words[claims.EXIT_FAIL]} (exit 0 because report_only=true)"
    return f"check: {words.get(code, 'unknown outcome')} (exit {code})"


def command_main(run_command, outcome_of) -> None:
    """A results command's entry point: ``run_command(argv)``'s exit code, or a configuration
    problem or damaged results as one ``error:`` line ending with ``outcome_of(code)``."""
    cli.printable_output()  # an output encoding without "—" or "θ" (PYTHONIOENCODING=ascii) never crashes
    try:
        sys.exit(run_command(sys.argv[1:]))
    except (config.ConfigError, integrity.Damaged) as err:
        code = getattr(err, "exit_code", claims.EXIT_CONFIG)
        print(f"error: {err} -- {outcome_of(code)}", file=sys.stderr)
        sys.exit(code)


def main() -> None:
    command_main(run, outcome)


if __name__ == "__main__":
    main()
