"""Bring a stored figure folder's merged table to the current schema (`pes.results.FIGURE_COLUMNS`).

    python -m experiments.migrate folder=results/reference/paper/figure2
    python -m experiments.migrate folder=... source=run reason="<why every row is a run's>"

A figure's merged table gained its ``source`` column (which run or post-step wrote each row)
after some reference results were stored; `experiments.claims` refuses a table without it.
This tool adds the column, only where the figure config proves which source every row has:

* the figure has no post-steps: every row was logged by a run, so each row's run id must be a
  run of the figure under that profile, and ``source`` is ``run``;
* the figure has no runs under that profile and exactly one post-step: every row is that step's.

Any other figure (runs *and* post-steps, whose rows may share run ids) is refused unless
``source=<name> reason=<evidence>`` says which source every row has and why; a stated ``run``
is still checked against the figure's run ids.  The rows are rewritten as text: every cell of
the old table stays byte for byte (columns put in the current order, the ``source`` cell
appended), with the same compression (gzip, mtime 0, as `experiments.docs` stores tables).
``figure.json`` gets the table's new digest and a ``migrated`` record: the table, the old
schema, the new one, the tool, the rule or stated evidence and the old digest.  A table already
in the current schema is left alone.
"""

from __future__ import annotations

import csv
import io as _io
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from experiments import cli, config, figures, integrity
from pes import results

TOOL = "python -m experiments.migrate"
METRICS_NAMES = ("metrics.csv", "metrics.csv.gz")
MIGRATED = "migrated"


def command(fig_dir: Path) -> str:
    """The command that migrates ``fig_dir`` (the ``fix:`` of a table without ``source``)."""
    return f"{TOOL} folder={_shown(fig_dir)}"


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(config.ROOT.resolve()))
    except ValueError:
        return str(path)


def _table(fig_dir: Path) -> Path:
    found = [fig_dir / n for n in METRICS_NAMES if (fig_dir / n).exists()]
    if len(found) != 1:
        have = "none" if not found else "both"
        raise config.ConfigError(
            f"{fig_dir}: {have} of {', '.join(METRICS_NAMES)}; "
            "allowed: a stored figure folder with one merged table"
        )
    return found[0]


def _parse(path: Path, data: bytes) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV text, every cell kept as written (a malformed line is `Damaged`)."""
    reader = csv.reader(_io.StringIO(data.decode("utf-8"), newline=""))
    header = next(reader, None) or []
    rows = list(reader)
    bad = [i for i, row in enumerate(rows) if len(row) != len(header)]
    if bad:
        at, fields = bad[0] + 2, len(rows[bad[0]])
        raise integrity.Damaged(f"{path}, line {at}: {fields} fields; the header has {len(header)}")
    return header, rows


def _render(header: list[str], rows: list[list[str]]) -> bytes:
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")  # as pandas' to_csv writes (QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _rule(fig, profile: str, run_ids: set[str], source: str | None, reason: str | None) -> tuple[str, str]:
    """(source, evidence) for every row of the table, or a one-line `ConfigError`."""
    ids = {str(r.id) for r in figures.runs(fig, profile)}
    post = [str(p["step"]) for p in (fig.get("post") or [])]
    if source is not None:
        if not reason or not reason.strip():
            raise config.ConfigError("source= needs reason=<why every row of the table has that source>")
        stated = f"stated: {reason.strip()}"
        if source != results.RUN_SOURCE:
            if source not in post:
                allowed = ", ".join(["run", *post])
                raise config.ConfigError(
                    f"source={source!r} is not a post-step of {fig.id}; allowed: {allowed}"
                )
            return source, stated
    elif not post:
        stated = f"{fig.id} has no post-steps: every row of its merged table was logged by a run"
    elif not ids and len(post) == 1:
        return post[0], f"{fig.id} has no runs under profile {profile} and one post-step, {post[0]}"
    else:
        raise config.ConfigError(
            f"{fig.id} has runs and post-steps ({', '.join(post)}), so the rows' source is not provable from "
            "the config; allowed: source=<run or a step> reason=<the evidence that every row has it>"
        )
    strangers = sorted(run_ids - ids)
    if strangers:
        raise config.ConfigError(
            f"run ids {', '.join(strangers[:5])} are not runs of {fig.id} under profile {profile}, so not "
            "every row is a run's; fix: rerun and store the figure (or state source= and reason=)"
        )
    return results.RUN_SOURCE, stated


def _write_json(path: Path, record: Mapping) -> None:
    text = json.dumps(record, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")


def migrate(fig_dir: Path, source: str | None = None, reason: str | None = None) -> dict | None:
    """Migrate ``fig_dir``'s merged table to `results.FIGURE_COLUMNS`; returns the ``migrated``
    entry written to its figure.json, or None when the table already has the current schema."""
    fig_dir = Path(fig_dir)
    path = _table(fig_dir)
    fix = integrity.rebuild_hint(fig_dir)
    names = (*METRICS_NAMES, "grid.csv", "grid.csv.gz")
    record, texts = integrity.verify(fig_dir, [path], names, fix)  # never migrate a damaged table
    header, rows = _parse(path, texts[path])
    if tuple(header) == results.FIGURE_COLUMNS:
        return None
    if set(header) != set(results.COLUMNS):
        raise config.ConfigError(
            f"{path}: columns {header}; allowed: {list(results.COLUMNS)} in any order "
            "(the tables this tool migrates)"
        )
    fig = figures.load(str(record.get("figure") or fig_dir.name))
    profile = str(record.get("profile") or fig_dir.parent.name)
    run_ids = {row[header.index("run_id")] for row in rows}
    value, evidence = _rule(fig, profile, run_ids, source, reason)
    order = [header.index(c) for c in results.COLUMNS]
    new_rows = [[row[i] for i in order] + [value] for row in rows]
    text = _render(list(results.FIGURE_COLUMNS), new_rows)
    if _parse(path, text)[1] != new_rows:
        raise AssertionError(f"{path}: the rewritten text does not read back as the same cells")
    try:  # unique (source, run, seed, metric, step), numbers where numbers belong
        results.validate(_frame(text), allow_nonfinite=_metrics(rows, header))
    except results.SchemaError as err:
        raise config.ConfigError(
            f"{path} cannot be migrated: {err}; fix: rerun and store the figure"
        ) from err
    if path.name.endswith(".gz"):
        from experiments.docs import gzip_bytes  # (docs imports check, which names this tool)

        path.write_bytes(gzip_bytes(text.decode("utf-8")))
    else:
        path.write_bytes(text)
    entry = {
        "table": path.name,
        "tool": TOOL,
        "from_columns": header,
        "to_columns": list(results.FIGURE_COLUMNS),
        "source": value,
        "evidence": evidence,
        "before": integrity.digest(texts[path]),
    }
    record.setdefault(MIGRATED, []).append(entry)
    record.setdefault(integrity.DIGESTS, {})[path.name] = integrity.file_digest(path)
    _write_json(fig_dir / integrity.RECORD, record)
    integrity.verify(fig_dir, [path], names, fix)
    return entry


def _frame(text: bytes):
    return results.pd.read_csv(_io.BytesIO(text), dtype={"run_id": str, "metric": str, "source": str})


def _metrics(rows, header) -> set[str]:
    """Every metric: the stored values are kept as they are, NaN included (nothing is judged here)."""
    return {row[header.index("metric")] for row in rows}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cli.printable_output()
    allowed = {"folder": None, "source": None, "reason": None}
    try:
        args = dict(allowed)
        for a in argv:
            key, sep, value = a.partition("=")
            if not sep or key not in args:
                keys = ", ".join(k + "=..." for k in args)
                raise config.ConfigError(f"argument {a!r} is invalid; allowed: {keys}")
            args[key] = value
        if not args["folder"]:
            raise config.ConfigError(
                "folder= is missing; allowed: a figure folder, e.g. results/reference/quick/figure2"
            )
        entry = migrate(Path(args["folder"]), args["source"], args["reason"])
        if entry is None:
            print(f"{args['folder']}: already in the current schema; nothing to do")
        else:
            table = Path(args["folder"]) / entry["table"]
            print(f"migrated {table}: source={entry['source']} ({entry['evidence']})")
        return 0
    except (config.ConfigError, integrity.Damaged) as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
