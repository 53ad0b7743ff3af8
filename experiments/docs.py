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
import hashlib
import io as _io
import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from experiments import check, claims, cli, config, figures, integrity

ROOT = config.ROOT
STORE = ROOT / "results" / "reference"
FIG_DOCS = ROOT / "docs" / "figures"
README = ROOT / "README.md"
CLAIMS_DOC = ROOT / "docs" / "claims.md"
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


def gzip_bytes(text: str) -> bytes:
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
        path.write_bytes(gzip_bytes(text))
    else:
        path = out_dir / f"{stem}.csv"
        path.write_text(text)
    return path


def _record_packages(info: dict, runs: dict[str, dict]) -> None:
    """The package versions the runs recorded: once if every run agrees, else per run.

    Results computed with another jax/jaxlib/numpy can differ in their last digits (or, through chaotic
    meta-optimisation, by more); a stored result names the versions that made it.
    """
    recorded = {k: v["packages"] for k, v in runs.items() if isinstance(v.get("packages"), dict)}
    if not recorded:
        return
    distinct = {json.dumps(p, sort_keys=True) for p in recorded.values()}
    if len(distinct) == 1:
        info["packages"] = next(iter(recorded.values()))
        return
    info.pop("packages", None)
    for k, packages in recorded.items():
        info["runs"].setdefault(k, {})["packages"] = packages


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
    fig = check.load_figure(figure)
    config.check_profile_name(profile)
    src = Path(results_root) / profile / str(fig.id)
    res = check.load(src)  # verified against its digests, or refused (integrity.Damaged)
    if res.metrics is None:
        raise config.ConfigError(
            f"{src}: no metrics.csv; run make reproduce-figure-N PROFILE={profile} first"
        )
    out = Path(dest) / profile / str(fig.id)
    out.mkdir(parents=True, exist_ok=True)
    info = _stored_info(str(fig.id), profile, src, res)
    given = dict(wall_time_s=wall_time_s, load=load, note=note, machine=machine, git_commit=git_commit)
    _apply_given(info, end_time=end_time, **given)
    if "end_time" not in info and res.metrics_path is not None:  # the last file the figure wrote
        last = max(p.stat().st_mtime for p in src.iterdir() if p.is_file())
        stamp = dt.datetime.fromtimestamp(last, dt.timezone.utc)
        info["end_time"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    info["stored_from"] = str(src)
    written = _write_tables(res, out, info)
    info[integrity.DIGESTS] = {path.name: integrity.file_digest(path) for path in written}
    (out / check.FIGURE_JSON).write_text(
        json.dumps(info, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n"
    )
    if images is not None:  # the rendered figures the docs show: figureN.png, figureN_per_n.png, ...
        for png in sorted((Path(results_root) / profile / "figures").glob(f"{fig.id}*.png")):
            suffix = png.stem[len(str(fig.id)) :]
            if suffix == "" or suffix.startswith("_"):
                shutil.copyfile(png, Path(images) / f"{fig.id}_{profile}{suffix}.png")
    return out


def _stored_info(fig_id: str, profile: str, src: Path, res: check.FigureResults) -> dict:
    """The stored figure.json: the figure's own record, completed from its runs' records."""
    info: dict = dict(check.read_json(src / check.FIGURE_JSON) or {})
    runs = check._runs_info(src, info or None)
    prov = res.provenance
    info.setdefault("figure", fig_id)
    info.setdefault("profile", profile)
    for key in ("machine", "git_commit", "wall_time_s", "wall_time_is_sum_of_runs"):
        if key in prov and key not in info:
            info[key] = prov[key]
    info["runs"] = {
        k: {f: v[f] for f in ("status", "wall_time_s", "diverged_at_outer_step") if v.get(f) is not None}
        for k, v in sorted(runs.items())
    }
    _record_packages(info, runs)
    for step in (info.get("steps") or {}).values():  # digests of files the store does not hold
        if isinstance(step, dict):
            step.pop(integrity.DIGESTS, None)
    return info


def _apply_given(info: dict, *, wall_time_s, load, note, machine, git_commit, end_time) -> None:
    """What the person storing the results states (wall time, load, machine, ...) over the record."""
    if wall_time_s is not None:
        info["wall_time_s"] = float(wall_time_s)
        info.pop("wall_time_is_sum_of_runs", None)
    if machine:
        info["machine"] = {
            "description": machine,
            **(info["machine"] if isinstance(info.get("machine"), dict) else {}),
        }
    for key, value in (("git_commit", git_commit), ("end_time", end_time), ("load", load), ("note", note)):
        if value:
            info[key] = value


def _write_tables(res: check.FigureResults, out: Path, info: dict) -> list[Path]:
    """Write the merged table and the grid (its lowest points) into ``out``; the files written."""
    written = [_write_table(res.metrics, out, "metrics")]
    if res.grid is not None:
        grid = res.grid
        if len(grid) > GRID_KEEP_LOWEST:
            grid = grid.nsmallest(GRID_KEEP_LOWEST, "value").sort_index()
            info["grid_trimmed"] = f"the {GRID_KEEP_LOWEST} lowest of {len(res.grid)} grid points"
        written.append(_write_table(grid, out, "grid"))
    else:
        for name in check.GRID_NAMES:  # a grid from an earlier store would not match these results
            (out / name).unlink(missing_ok=True)
    return written


# ----------------------------------------------------------------------------- generated text


def _replace_block(text: str, name: str, body: str, path: Path) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise config.ConfigError(f"{path}: no {begin} ... {end} markers; fix: add them where the block goes")
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
        bits.append(f"machine: {check.machine_text(p['machine'])}")
    if p.get("load"):
        bits.append(f"load average: {p['load']}")
    if p.get("wall_time_s") is not None:
        w = check.duration(p["wall_time_s"])
        bits.append(f"wall time: {w}" + (" (sum of the runs)" if p.get("wall_time_is_sum_of_runs") else ""))
        compute = p.get("compute_wall_time_s")
        if compute is not None and float(compute) > 1.2 * float(p["wall_time_s"]):  # runs/steps were reused
            bits.append(f"compute when first made: {check.duration(compute)}")
    if p.get("git_commit"):
        c = p["git_commit"]
        bits.append("commit: " + (", ".join(x[:7] for x in c) if isinstance(c, list) else str(c)[:7]))
    if _when(p):
        bits.append(f"date: {_when(p)}")
    return " · ".join(bits)


def evaluate_store(
    root: Path = STORE,
) -> dict[tuple[str, str], tuple[list[claims.Result], check.FigureResults]]:
    out = {}
    for name in figures.figure_names():
        fig = figures.load(name)
        for profile in config.profile_names():
            fig_dir = Path(root) / profile / name
            if check._first(fig_dir, check.METRICS_NAMES) or check._first(fig_dir, check.GRID_NAMES):
                out[(name, profile)] = check.check_figure(fig, profile, root)
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


def _digest(res: check.FigureResults) -> str | None:
    """A digest of a stored figure's tables (metrics and grid), to find profiles with identical results."""
    parts = []
    for path in (res.metrics_path, check._first(res.fig_dir, check.GRID_NAMES)):
        if path is not None:
            parts.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
    return ":".join(parts) or None


def _same_verdicts(a: list[claims.Result], b: list[claims.Result]) -> bool:
    def key(rows):
        return [(r.id, r.verdict, r.measured, r.counted) for r in rows]

    return key(a) == key(b)


def ordered_profiles(name: str, evaluated: dict) -> list[str]:
    """The profiles with stored results of ``name``: paper-scale ones first, then the smaller ones."""
    profiles = config.profile_names()
    have = [p for p in profiles if (name, p) in evaluated]
    return sorted(have, key=lambda p: (claims.profile_scale(p) != "paper", profiles.index(p)))


def twins(name: str, evaluated: dict) -> dict[str, str]:
    """profile -> an earlier profile (`ordered_profiles`) with identical stored results and verdicts."""
    out: dict[str, str] = {}
    seen: list[tuple[str, str | None]] = []
    for p in ordered_profiles(name, evaluated):
        rows, res = evaluated[(name, p)]
        digest = _digest(res)
        for q, dq in seen:
            if digest is not None and digest == dq and _same_verdicts(rows, evaluated[(name, q)][0]):
                out[p] = q
                break
        else:
            seen.append((p, digest))
    return out


def findings(rows: list[claims.Result]) -> list[str]:
    """One line per claim that failed (counted or not), with its finding text where the config gives one."""
    out = []
    for r in rows:
        if r.verdict != claims.FAIL:
            continue
        label = "FAIL" if r.counted else f"FAIL, {r.role}"
        why = r.finding or "no finding text yet (add finding: to the claim in the figure config)"
        out.append(f"`{r.id}` ({label}): {why}")
    return out


def figure_block(name: str, evaluated: dict, root: Path) -> str:
    lines = [
        "_Generated by `make docs` from the reference results (`results/reference/`); "
        "do not edit by hand. Claim language, sources and scales: [docs/claims.md](../claims.md)._",
        "",
    ]
    number = name.removeprefix("figure")
    defined = check.load_figure(name).get("profiles") or {}
    same = twins(name, evaluated)
    for profile in config.profile_names():
        if profile not in config.MAIN_PROFILES and profile not in defined:
            continue  # a stand-in profile (e.g. paper_fashion) only where the figure defines it
        scale = claims.profile_scale(profile)
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
        if profile in same:
            lines += [
                "",
                f"The stored tables are byte for byte those of the `{same[profile]}` profile (the same "
                f"settings), and every claim has the same verdict: the table is under the `{same[profile]}` "
                f"profile. {claims.summary(rows)}.",
                "",
            ]
        else:
            lines += _claims_lines(rows, scale)
        lines += _image_lines(name, profile)
    return "\n".join(lines)


def _claims_lines(rows: list[claims.Result], scale: str) -> list[str]:
    """A profile's scale, claims table, summary and findings, as markdown lines."""
    judged = (
        "paper-scale: every claim decides"
        if scale == "paper"
        else ("smaller than the paper: claims of scale `paper` are indicative and do not decide")
    )
    lines = ["", f"Profile scale `{scale}` ({judged}).", "", claims.table(rows), ""]
    lines += [f"{claims.summary(rows)}.", ""]
    found = findings(rows)
    if found:
        lines += ["Findings (written after the results were known):", ""]
        lines += [f"- {f}" for f in found]
        lines.append("")
    return lines


def _image_lines(name: str, profile: str) -> list[str]:
    """Markdown for the profile's stored images (``<figure>_<profile>.png``, ``..._<profile>_*.png``)."""
    lines = []
    # profiles that extend this one's name (quick_holdout)
    longer = [q for q in config.profile_names() if q != profile and q.startswith(f"{profile}_")]
    for image in [FIG_DOCS / f"{name}_{profile}.png", *sorted(FIG_DOCS.glob(f"{name}_{profile}_*.png"))]:
        if any(image.stem == f"{name}_{q}" or image.stem.startswith(f"{name}_{q}_") for q in longer):
            continue  # another profile's image (figure7_quick_holdout.png is not quick's)
        if image.exists():
            lines += [f"![{name}, {profile} profile]({image.name})", ""]
    return lines


def verdict_word(rows: list[claims.Result], compact: bool = False) -> str:
    """yes / partly / no / not run, then PASS · FAIL · NOT RUN of the counted claims, then the rest."""
    c = claims.counts(rows)
    applicable = c[claims.PASS] + c[claims.FAIL]
    if applicable == 0:
        word = "not run"
    elif c[claims.FAIL] == 0:
        word = "**yes**"
    elif c[claims.PASS] == 0:
        word = "**no**"
    else:
        word = "partly"
    text = f"{word}: {c[claims.PASS]} PASS · {c[claims.FAIL]} FAIL · {c[claims.NOT_RUN]} NOT RUN"
    for role, what in (
        (claims.INDICATIVE, "paper-scale, indicative"),
        (claims.REPORTED, "finding, not counted"),
    ):
        shown = [r for r in rows if r.role == role]
        if shown and compact:  # counts only (the README); the ids are in FIGURES.md and the figure page
            tally = ", ".join(
                f"{n} {v}"
                for v in (claims.PASS, claims.FAIL, claims.NOT_RUN)
                if (n := sum(r.verdict == v for r in shown))
            )
            text += f"; {what}: {tally}"
        elif shown:
            each = ", ".join(f"`{r.id}` {r.verdict}" for r in shown)
            text += f"; {len(shown)} {what}: {each}"
    failed = [r for r in rows if r.verdict == claims.FAIL and r.counted]
    if compact and failed:  # the README names them; their findings are on the figure page and in FIGURES.md
        return text + "<br>failed (findings on the figure page): " + ", ".join(f"`{r.id}`" for r in failed)
    for r in failed:
        text += f"<br>finding `{r.id}`: {r.finding or 'no finding text yet'}"
    return text


def _figure_titles() -> dict[int, tuple[str, bool]]:
    """number -> (title, is one of the paper's experiments): the paper's, then the suite's others."""
    out = {n: (t, True) for n, t in PAPER_FIGURES.items()}
    for name in figures.figure_names():
        number = name.removeprefix("figure")
        if number.isdigit() and int(number) not in out:
            out[int(number)] = (f"{figures.load(name).title} (beyond the paper)", False)
    return out


def status_table(evaluated: dict, link_prefix: str = "docs/figures/", compact: bool = False) -> str:
    """One row per figure and profile (profiles with identical stored results share one).

    ``compact`` (the README): no headline column, and indicative or uncounted claims as counts
    (FIGURES.md and the figure pages name them).
    """
    head = "| figure | what the paper claims | reproduced? | profile · machine · wall time |"
    lines = [head.replace(" what the paper claims |", "") if compact else head]
    lines.append("|---|---|---|" if compact else "|---|---|---|---|")
    implemented = set(figures.figure_names())
    for number, (title, in_paper) in _figure_titles().items():
        name = f"figure{number}"
        short = title.split(" (")[0] + ("" if in_paper else " (beyond the paper)")
        link = f"[{number} {short}]({link_prefix}{name}.md)"

        def row(first_cells: tuple[str, str], verdict: str, where: str) -> str:
            cells = [first_cells[0]] + ([] if compact else [first_cells[1]]) + [verdict, where]
            return "| " + " | ".join(cells) + " |"

        if name not in implemented:
            lines.append(row((f"{number} {short}", "—"), "not implemented yet", "—"))
            continue
        headline = _headline(FIG_DOCS / f"{name}.md")
        same = twins(name, evaluated)
        shown = False
        for profile in ordered_profiles(name, evaluated):
            if profile in same:
                continue
            rows, res = evaluated[(name, profile)]
            p = res.provenance
            also = [q for q, of in same.items() if of == profile]
            label = profile + "".join(f" = {q}" for q in also)
            if also:
                label += " (identical stored results)"
            where = " · ".join(
                x
                for x in (
                    label,
                    check.machine_text(p["machine"]) if p.get("machine") else "",
                    f"{check.duration(p['wall_time_s'])} {load_text(p)}".strip()
                    if p.get("wall_time_s") is not None
                    else "",
                )
                if x
            )
            lines.append(row((link, headline) if not shown else ("", ""), verdict_word(rows, compact), where))
            shown = True
        if not shown:
            lines.append(row((link, headline), "not run yet", "—"))
    return "\n".join(lines)


def _origin_of(source: str) -> str:
    """The kind of origin a (lower-cased) source text names for its number."""
    if "own code run here" in source and "project-derived" not in source.split("own code run here")[0]:
        return "the paper's own code, run here"
    if "project-derived" in source:
        return "project-derived (reason in the source)"
    if "figure" in source:
        return "a reading of the paper's figure (official plot script)"
    return "the paper"


def threshold_origin(claim: dict, siblings: dict | None = None) -> str:
    """Where a claim's threshold comes from, read from its check and its ``source`` text.

    A source that starts "as <claim id>" inherits that sibling claim's source (``siblings``: id -> claim).
    """
    check, source = claim["check"], " ".join(str(claim.get("source", "")).split()).lower()
    m = re.match(r"as ([a-z0-9][a-z0-9.-]*)", source)
    if m and siblings and m.group(1) in siblings and siblings[m.group(1)] is not claim:
        source = " ".join(str(siblings[m.group(1)].get("source", "")).split()).lower() + " " + source
    if check.get("z") is not None:
        return f"a statistical test ({check['z']} standard errors)"
    if "95 %" in source and "interval" in source:
        return "a statistical test (95 % interval)"
    if check["type"] == "order":
        seq = check.get("ascending", check.get("descending")) or []
        if check.get("margin"):
            return f"a margin: {_origin_of(source)}"
        if any(isinstance(m, dict) and "threshold" in m for m in seq):
            return f"an ordering at a level: {_origin_of(source)}"
        return "none (an ordering)"
    return _origin_of(source)


def claims_table() -> str:
    """Every claim of every figure: figure, id, scale, where its threshold comes from, source."""
    lines = [
        "| figure | claim | scale | threshold from | source |",
        "|---|---|---|---|---|",
    ]
    for name in figures.figure_names():
        fig = figures.load(name)
        validated = claims.validate(fig.get("claims"), fig)
        by_id = {c["id"]: c for c in validated}
        for c in validated:
            counted = "" if c.get("counted", True) else " (a finding, not counted)"
            profiles = f" Profiles: {', '.join(c['profiles'])}." if c.get("profiles") else ""
            lines.append(
                f"| {name.removeprefix('figure')} | `{c['id']}`: {claims._cell(' '.join(c['claim'].split()))}"
                f"{counted}{profiles} | {c['scale']} | {threshold_origin(c, by_id)} "
                f"| {claims._cell(' '.join(str(c['source']).split()))} |"
            )
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
            wall = check.duration(p["wall_time_s"])
            wall += " (sum of the runs)" if p.get("wall_time_is_sum_of_runs") else ""
            commit = p.get("git_commit") or ""
            commit = ", ".join(c[:7] for c in commit) if isinstance(commit, list) else str(commit)[:7]
            lines.append(
                f"| [{name.removeprefix('figure')}](figures/{name}.md) | {profile} | "
                f"{check.machine_text(p['machine']) if p.get('machine') else ''} | {wall} | "
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
    targets.append((README, "status", status_table(evaluated, compact=True)))
    targets.append((INDEX, "status", status_table(evaluated)))
    targets.append((CLAIMS_DOC, "claims", claims_table()))
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
            raise config.ConfigError(
                f"argument {a!r} is invalid; allowed: {', '.join(k + '=...' for k in args)}"
            )
        args[key] = value
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cli.printable_output()
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
                raise config.ConfigError(f"figure=<name> is required; allowed: {names}")
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
    except (config.ConfigError, integrity.Damaged) as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
