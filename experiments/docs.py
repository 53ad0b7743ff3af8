"""Docs generated from results: the claims tables of docs/figures/figureN.md, the README status
table, the FIGURES.md index and the stored wall times of docs/wall-times.md; and the committed
reference-results store they are read from.

    python -m experiments.docs                                   # make docs: regenerate every block
    python -m experiments.docs check=true                        # exit 1 if a generated block is stale
    python -m experiments.docs store figure=figure2 profile=paper [results_root=results]
        [wall_time_s=44] [load="10.5 12.6"] [note="..."]        # make store-figure-N: copy a run in

The store, ``results/reference/<profile>/<figure>/``, has the layout of a results root
(``metrics.csv`` or ``metrics.csv.gz``, ``grid.csv.gz``, ``figure.json``), so `experiments.check`
reads it with ``results_root=results/reference``.  Large tables are gzipped; a grid is trimmed
to its lowest points (enough for the minimum claims; figure.json says what was trimmed).
Generated blocks sit between ``<!-- name:begin -->`` and ``<!-- name:end -->`` markers; the
text around them is written by hand and never touched.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io as _io
import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from experiments import check as CH
from experiments import claims as CL
from experiments import config as C
from experiments import figures

ROOT = C.ROOT
STORE = ROOT / "results" / "reference"
FIG_DOCS = ROOT / "docs" / "figures"
README = ROOT / "README.md"
INDEX = ROOT / "FIGURES.md"
WALL_TIMES = ROOT / "docs" / "wall-times.md"
GZIP_ABOVE_BYTES = 1_000_000
GRID_KEEP_LOWEST = 2000
PAPER_FIGURES = {  # the paper's experiments, implemented or not: number -> title
    2: "Influence balancing",
    3: "Toy 2D regression (meta-learning a linear LR schedule)",
    4: "Variance of PES vs the number of unrolls (char-level PTB LSTM)",
    5: "MNIST MLP, meta-learning an inverse-time-decay LR schedule",
    6: "Fashion-MNIST MLP, 29 hyperparameters (PES vs truncated ES vs random search)",
    7: "Learned optimizer meta-training (PES vs truncated ES)",
    8: "MuJoCo Swimmer, linear policy",
    9: "UCI yacht, tuning an L2 coefficient (appendix)",
}


# ----------------------------------------------------------------------------- the store


def _gzip_bytes(text: str) -> bytes:
    buf = _io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:  # mtime 0: same bytes for the same table
        f.write(text.encode())
    return buf.getvalue()


def _write_table(df: pd.DataFrame, out_dir: Path, stem: str) -> Path:
    text = df.to_csv(index=False)
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        (out_dir / name).unlink(missing_ok=True)
    if len(text.encode()) > GZIP_ABOVE_BYTES:
        path = out_dir / f"{stem}.csv.gz"
        path.write_bytes(_gzip_bytes(text))
    else:
        path = out_dir / f"{stem}.csv"
        path.write_text(text)
    return path


def store(
    figure: str,
    profile: str,
    results_root: str | Path = "results",
    *,
    wall_time_s: float | None = None,
    load: str | None = None,
    note: str | None = None,
    machine: str | None = None,
    git_commit: str | None = None,
    end_time: str | None = None,
    dest: Path = STORE,
    images: Path | None = FIG_DOCS,
) -> Path:
    """Copy a figure's results (merged CSV, trimmed grid, run info) into the reference store."""
    fig = CH.load_figure(figure)
    src = Path(results_root) / profile / str(fig.id)
    res = CH.load(src)
    if res.metrics is None:
        raise C.ConfigError(f"{src}: no metrics.csv; run make reproduce-figure-N PROFILE={profile} first")
    out = Path(dest) / profile / str(fig.id)
    out.mkdir(parents=True, exist_ok=True)
    info: dict = dict(CH.read_json(src / CH.FIGURE_JSON) or {})
    runs = CH._runs_info(src, info or None)
    prov = res.provenance
    info.setdefault("figure", str(fig.id))
    info.setdefault("profile", profile)
    for key in ("machine", "git_commit", "wall_time_s", "wall_time_is_sum_of_runs"):
        if key in prov and key not in info:
            info[key] = prov[key]
    info["runs"] = {
        k: {f: v[f] for f in ("status", "wall_time_s", "diverged_at_outer_step") if v.get(f) is not None}
        for k, v in sorted(runs.items())
    }
    if wall_time_s is not None:
        info["wall_time_s"] = float(wall_time_s)
        info.pop("wall_time_is_sum_of_runs", None)
    if machine:
        info["machine"] = {
            "description": machine,
            **(info["machine"] if isinstance(info.get("machine"), dict) else {}),
        }
    if git_commit:
        info["git_commit"] = git_commit
    if end_time:
        info["end_time"] = end_time
    if load:
        info["load"] = load
    if note:
        info["note"] = note
    if "end_time" not in info and res.metrics_path is not None:  # the last file the figure wrote
        last = max(p.stat().st_mtime for p in src.iterdir() if p.is_file())
        stamp = dt.datetime.fromtimestamp(last, dt.timezone.utc)
        info["end_time"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    info["stored_from"] = str(src)
    _write_table(res.metrics, out, "metrics")
    if res.grid is not None:
        grid = res.grid
        if len(grid) > GRID_KEEP_LOWEST:
            grid = grid.nsmallest(GRID_KEEP_LOWEST, "value").sort_index()
            info["grid_trimmed"] = f"the {GRID_KEEP_LOWEST} lowest of {len(res.grid)} grid points"
        _write_table(grid, out, "grid")
    (out / CH.FIGURE_JSON).write_text(
        json.dumps(info, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n"
    )
    if images is not None:  # the rendered figures the docs show: figureN.png, figureN_per_n.png, ...
        for png in sorted((Path(results_root) / profile / "figures").glob(f"{fig.id}*.png")):
            suffix = png.stem[len(str(fig.id)) :]
            if suffix == "" or suffix.startswith("_"):
                shutil.copyfile(png, Path(images) / f"{fig.id}_{profile}{suffix}.png")
    return out


# ----------------------------------------------------------------------------- generated text


def _replace_block(text: str, name: str, body: str, path: Path) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise C.ConfigError(f"{path}: no {begin} ... {end} markers; fix: add them where the block goes")
    return pattern.sub(lambda _: f"{begin}\n{body.rstrip()}\n{end}", text)


def _headline(doc: Path) -> str:
    """The '> **Claim.** ...' line of a figure doc (hand-written)."""
    if doc.exists():
        for line in doc.read_text().splitlines():
            m = re.match(r">\s*\*\*Claim[^*]*\*\*\s*(.+)", line)
            if m:
                return m.group(1).strip()
    return ""


def _when(p: dict) -> str:
    for key in ("end_time", "start_time"):
        if p.get(key):
            return str(p[key])[:10]
    return ""


def load_text(p: dict) -> str:
    """A stored run's load in a few words: ``idle`` (the 1-min load average never above the
    machine's core count), ``at load 8–10.5`` (the range recorded), or ``(load not recorded)``
    (on a CPU; nothing is said for an accelerator run without a record)."""
    machine = p.get("machine")
    cores = machine.get("cpu_count") if isinstance(machine, dict) else None
    load = str(p.get("load") or "")
    values = [float(v) for v in re.findall(r"\d+(?:\.\d+)?", load.split("(")[0])]
    if not values:
        on_cpu = isinstance(machine, dict) and machine.get("jax_backend") == "cpu"
        return "(load not recorded)" if load or on_cpu else ""
    low, high = min(values), max(values)
    if cores and high <= cores:
        return f"idle (load ≤ {high:g})"
    return f"at load {low:g}–{high:g}" if low != high else f"at load {low:g}"


def provenance_line(p: dict, where: str) -> str:
    bits = [f"results `{where}`"]
    if p.get("machine"):
        bits.append(f"machine: {CH.machine_text(p['machine'])}")
    if p.get("load"):
        bits.append(f"load average: {p['load']}")
    if p.get("wall_time_s") is not None:
        w = CH.duration(p["wall_time_s"])
        bits.append(f"wall time: {w}" + (" (sum of the runs)" if p.get("wall_time_is_sum_of_runs") else ""))
        compute = p.get("compute_wall_time_s")
        if compute is not None and float(compute) > 1.2 * float(p["wall_time_s"]):  # runs/steps were reused
            bits.append(f"compute when first made: {CH.duration(compute)}")
    if p.get("git_commit"):
        c = p["git_commit"]
        bits.append("commit: " + (", ".join(x[:7] for x in c) if isinstance(c, list) else str(c)[:7]))
    if _when(p):
        bits.append(f"date: {_when(p)}")
    return " · ".join(bits)


def evaluate_store(root: Path = STORE) -> dict[tuple[str, str], tuple[list[CL.Result], CH.FigureResults]]:
    out = {}
    for name in figures.figure_names():
        fig = figures.load(name)
        for profile in CL.PROFILES:
            fig_dir = Path(root) / profile / name
            if CH._first(fig_dir, CH.METRICS_NAMES) or CH._first(fig_dir, CH.GRID_NAMES):
                out[(name, profile)] = CH.check_figure(fig, profile, root)
    return out


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def skeleton(fig) -> str:
    """A new figure's page from docs/figures/TEMPLATE.md, filled from its config."""
    number = str(fig.id).removeprefix("figure")
    text = (FIG_DOCS / "TEMPLATE.md").read_text().replace("Figure N", f"Figure {number}")
    text = text.replace("figure-N", f"figure-{number}").replace("<title>", str(fig.get("title", fig.id)))
    expected = " ".join(str(fig.get("expected", "")).split())
    first = expected.split(". ")[0].rstrip(".") + "." if expected else "(to be written)"
    return re.sub(r"<what the paper says[^>]*>", first, text)


def figure_block(name: str, evaluated: dict, root: Path) -> str:
    lines = [
        "_Generated by `make docs` from the reference results (`results/reference/`); "
        "do not edit by hand. Claim language: [docs/claims.md](../claims.md)._",
        "",
    ]
    number = name.removeprefix("figure")
    defined = CH.load_figure(name).get("profiles") or {}
    for profile in CL.PROFILES:
        if profile not in ("quick", "paper") and profile not in defined:
            continue  # a stand-in profile (e.g. paper_fashion) only where the figure defines it
        lines.append(f"#### `{profile}` profile")
        lines.append("")
        if (name, profile) not in evaluated:
            lines.append(
                f"No stored results. Run `make reproduce-figure-{number} PROFILE={profile}`, "
                f"then `make store-figure-{number} PROFILE={profile}` to add them."
            )
            lines.append("")
            continue
        rows, res = evaluated[(name, profile)]
        p = res.provenance
        lines.append(provenance_line(p, _rel(res.fig_dir)) + ".")
        if p.get("note"):
            lines.append("")
            lines.append(f"Note: {p['note']}")
        if p.get("grid_trimmed"):
            lines.append("")
            lines.append(f"Stored grid: {p['grid_trimmed']}.")
        lines += ["", CL.table(rows), "", f"{CL.summary(rows)}.", ""]
        for image in [FIG_DOCS / f"{name}_{profile}.png", *sorted(FIG_DOCS.glob(f"{name}_{profile}_*.png"))]:
            if image.exists():
                lines += [f"![{name}, {profile} profile]({image.name})", ""]
    return "\n".join(lines)


def verdict_word(rows: list[CL.Result]) -> str:
    c = CL.counts(rows)
    applicable = c[CL.PASS] + c[CL.FAIL]
    if applicable == 0:
        return "not run"
    if c[CL.FAIL] == 0:
        word = "**yes**"
    elif c[CL.PASS] == 0:
        word = "**no**"
    else:
        word = "partly"
    text = f"{word} ({c[CL.PASS]}/{applicable} claims"
    failed = [r.id for r in rows if r.verdict == CL.FAIL]
    if failed:
        text += "; fails " + ", ".join(f"`{f}`" for f in failed)
    return text + ")"


def status_table(evaluated: dict, link_prefix: str = "docs/figures/") -> str:
    lines = [
        "| figure | what the paper claims | reproduced? | profile · machine · wall time |",
        "|---|---|---|---|",
    ]
    implemented = set(figures.figure_names())
    for number, title in PAPER_FIGURES.items():
        name = f"figure{number}"
        link = f"[{number} {title.split(' (')[0]}]({link_prefix}{name}.md)"
        if name not in implemented:
            lines.append(f"| {number} {title.split(' (')[0]} | — | not implemented yet | — |")
            continue
        headline = _headline(FIG_DOCS / f"{name}.md")
        shown = False
        for profile in ("paper", "quick"):
            if (name, profile) not in evaluated:
                continue
            rows, res = evaluated[(name, profile)]
            p = res.provenance
            where = " · ".join(
                x
                for x in (
                    profile,
                    CH.machine_text(p["machine"]) if p.get("machine") else "",
                    f"{CH.duration(p['wall_time_s'])} {load_text(p)}".strip()
                    if p.get("wall_time_s") is not None
                    else "",
                )
                if x
            )
            first = not shown
            lines.append(
                f"| {link if first else ''} | {headline if first else ''} | {verdict_word(rows)} | {where} |"
            )
            shown = True
        if not shown:
            lines.append(f"| {link} | {headline} | not run yet | — |")
    return "\n".join(lines)


def wall_time_table(evaluated: dict, root: Path = STORE) -> str:
    """Every stored reference run's wall time, machine and load (docs/wall-times.md)."""
    lines = [
        "| figure | profile | machine | wall time | load | commit | date |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in figures.figure_names():
        for profile in sorted({p for n, p in evaluated if n == name}, key=lambda p: (p != "quick", p)):
            p = evaluated[(name, profile)][1].provenance
            if p.get("wall_time_s") is None:
                continue
            wall = CH.duration(p["wall_time_s"])
            wall += " (sum of the runs)" if p.get("wall_time_is_sum_of_runs") else ""
            commit = p.get("git_commit") or ""
            commit = ", ".join(c[:7] for c in commit) if isinstance(commit, list) else str(commit)[:7]
            lines.append(
                f"| [{name.removeprefix('figure')}](figures/{name}.md) | {profile} | "
                f"{CH.machine_text(p['machine']) if p.get('machine') else ''} | {wall} | "
                f"{load_text(p) or '—'} | {commit} | {_when(p)} |"
            )
    return "\n".join(lines)


def generate(root: Path = STORE, *, write: bool = True) -> list[Path]:
    """Regenerate every block; returns the files whose content changed (written if ``write``)."""
    evaluated = evaluate_store(root)
    changed = []
    targets: list[tuple[Path, str, str]] = []
    new_docs: dict[Path, str] = {}
    for name in figures.figure_names():
        doc = FIG_DOCS / f"{name}.md"
        if not doc.exists():  # a new figure: its page starts from the template
            new_docs[doc] = skeleton(figures.load(name))
        targets.append((doc, "results", figure_block(name, evaluated, root)))
    targets.append((README, "status", status_table(evaluated)))
    targets.append((INDEX, "status", status_table(evaluated)))
    targets.append((WALL_TIMES, "walltimes", wall_time_table(evaluated, root)))
    texts: dict[Path, str] = {}
    for path, block, body in targets:
        text = texts.get(path, new_docs.get(path) or path.read_text())
        texts[path] = _replace_block(text, block, body, path)
    for path, text in texts.items():
        if path in new_docs or text != path.read_text():
            changed.append(path)
            if write:
                path.write_text(text)
    return changed


def _parse(argv: list[str], allowed: dict) -> dict:
    args = dict(allowed)
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in args:
            raise C.ConfigError(f"argument {a!r} is invalid; allowed: {', '.join(k + '=...' for k in args)}")
        args[key] = value
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "store":
            a = _parse(
                argv[1:],
                {
                    "figure": None,
                    "profile": "quick",
                    "results_root": "results",
                    "wall_time_s": None,
                    "load": None,
                    "note": None,
                    "machine": None,
                    "git_commit": None,
                    "end_time": None,
                },
            )
            if not a["figure"]:
                names = ", ".join(figures.figure_names())
                raise C.ConfigError(f"figure=<name> is required; allowed: {names}")
            out = store(
                a["figure"],
                a["profile"],
                a["results_root"],
                wall_time_s=float(a["wall_time_s"]) if a["wall_time_s"] else None,
                load=a["load"],
                note=a["note"],
                machine=a["machine"],
                git_commit=a["git_commit"],
                end_time=a["end_time"],
            )
            print(f"stored {out}; now run make docs")
            return 0
        a = _parse(argv, {"check": "false", "results_root": str(STORE)})
        if a["check"] == "true":
            stale = generate(Path(a["results_root"]), write=False)
            for p in stale:
                print(f"stale: {_rel(p)} (run make docs)")
            return 1 if stale else 0
        for p in generate(Path(a["results_root"])):
            print(f"wrote {_rel(p)}")
        return 0
    except C.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return CL.EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
