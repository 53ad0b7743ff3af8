"""Compare a figure's results with its stored reference, value by value.

    python -m experiments.compare figure=7 [profile=quick] [results_root=results] [against=<folder>]

`make check-figure-N` asks whether the paper's claims hold.  This asks another question: does a
run give the same numbers as the results committed under ``results/reference/<profile>/<figure>``
(or any other figure folder, ``against=``)?  Use it after changing code that should not change
results, after a figure ran as jobs on a cluster, or on a new machine.  Both folders are verified
and parsed as the check reads them (`experiments.check.load`).

Every row of the stored tables (``metrics.csv``, and ``grid.csv`` when one was stored; a stored
grid may be a thinned copy) is looked up in the new table by every column but ``value``.  Two
values are equal when they are the same number (NaN equals NaN).  Rows of the ``timing``
post-step are wall-clock measurements of the machine, so they are looked up but not compared.
Rows the new table has beyond the stored ones (for example, a post-step that gained summary
rows) are counted but not judged.

Exit codes (the check's): 0 every stored value found and equal; 1 a value differs or a stored
row is missing (a finding, not a broken install: float32 training can end differently on
another CPU family, and the first line names both machines); 2 a configuration problem; 3 no
results on one side; 4 results damaged or not verifiable.  The last line says which, in words.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import check, claims, config, figures, integrity

VALUE = "value"
MEASURED_SOURCES = ("timing",)
"""Post-steps whose rows measure the machine (wall-clock seconds): looked up, never compared."""
SHOWN = 8
"""How many metrics the report lists when values differ."""


@dataclass(frozen=True)
class TableComparison:
    """One table's comparison: stored keys not found, differing values, and the counts."""

    name: str
    stored_rows: int
    missing: pd.DataFrame  # the key columns of stored rows the new table lacks
    differ: pd.DataFrame  # keys, stored value, new value (``value_new``), ``abs_diff``
    measured: int  # stored rows of a measuring post-step, found and not compared
    extra: int  # rows of the new table whose key the stored table lacks

    @property
    def identical(self) -> bool:
        """Whether every stored row was found with an equal value."""
        return self.missing.empty and self.differ.empty


def _key_columns(name: str, stored: pd.DataFrame, new: pd.DataFrame) -> list[str]:
    keys = [c for c in stored.columns if c != VALUE]
    lacking = [c for c in keys if c not in new.columns]
    if lacking:
        raise config.ConfigError(
            f"{name}: the new table lacks the stored table's column(s) {', '.join(lacking)}; "
            "fix: compare results written by the same version of the suite"
        )
    for label, df in (("stored", stored), ("new", new)):
        repeated = int(df.duplicated(keys).sum())
        if repeated:
            raise config.ConfigError(
                f"{name}: {repeated} row(s) of the {label} table repeat another row's key "
                f"({', '.join(keys)}); nothing to compare them by"
            )
    return keys


def compare_tables(name: str, stored: pd.DataFrame, new: pd.DataFrame) -> TableComparison:
    """Look up every stored row in ``new`` by every column but ``value`` and compare the values."""
    keys = _key_columns(name, stored, new)
    both = stored.merge(new[[*keys, VALUE]], on=keys, how="left", suffixes=("", "_new"), indicator=True)
    found = (both["_merge"] == "both").to_numpy()
    measured = np.zeros(len(both), bool)
    if "source" in both:
        measured = both["source"].isin(MEASURED_SOURCES).to_numpy()
    compared = both[found & ~measured]
    a = compared[VALUE].to_numpy(np.float64)
    b = compared[VALUE + "_new"].to_numpy(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):  # inf - inf: equal values, not shown
        # a number against NaN is infinitely far, so it is listed first
        gap = np.where(np.isnan(a) ^ np.isnan(b), np.inf, np.abs(a - b))
    differ = compared.loc[~same, [*keys, VALUE, VALUE + "_new"]].assign(abs_diff=gap[~same])
    in_stored = new[keys].merge(stored[keys], on=keys, how="left", indicator=True)["_merge"] == "both"
    return TableComparison(
        name,
        len(stored),
        both.loc[~found, keys],
        differ,
        int((found & measured).sum()),
        int((~in_stored).sum()),
    )


def _row_text(row: pd.Series) -> str:
    parts = [f"{c} {row[c]}" for c in ("source", "run_id", "metric", "outer_step") if c in row.index]
    return ", ".join(parts) or ", ".join(f"{c} {row[c]}" for c in row.index[:4])


def _differ_lines(diff: pd.DataFrame) -> list[str]:
    """The metrics whose values differ: rows, runs and the largest difference of each."""
    group = [c for c in ("source", "metric") if c in diff.columns]
    lines = []
    worst = diff.sort_values("abs_diff", ascending=False, kind="stable")
    for label, part in list(worst.groupby(group, sort=False))[:SHOWN]:
        top = part.iloc[0]
        runs = part["run_id"].nunique() if "run_id" in part else 0
        lines.append(
            f"  {'/'.join(map(str, label if isinstance(label, tuple) else (label,)))}: {len(part)} row(s)"
            + (f" of {runs} run(s)" if runs else "")
            + f"; largest |difference| {top['abs_diff']:.3g} at {_row_text(top)} "
            f"(stored {top[VALUE]:.9g}, new {top[VALUE + '_new']:.9g})"
        )
    groups = worst.groupby(group).ngroups if group else 1
    if groups > SHOWN:
        lines.append(f"  ... and {groups - SHOWN} more metric(s)")
    return lines


def table_lines(c: TableComparison) -> list[str]:
    """What one table's comparison found, in words."""
    compared = c.stored_rows - len(c.missing) - c.measured
    found = "every one found" if c.missing.empty else f"{len(c.missing)} not found"
    text = f"{c.name}: {c.stored_rows} stored rows, {found}; {compared - len(c.differ)} values equal"
    text += f", {len(c.differ)} differ" if len(c.differ) else ""
    if c.measured:
        text += f"; {c.measured} rows of {'/'.join(MEASURED_SOURCES)} (wall-clock measurements) not compared"
    if c.extra:
        text += f"; {c.extra} rows only in the new table"
    lines = [text]
    if not c.missing.empty:
        lines.append(f"  first missing: {_row_text(c.missing.iloc[0])}")
    if not c.differ.empty:
        lines += _differ_lines(c.differ)
    return lines


def _tables(res: check.FigureResults) -> dict[str, pd.DataFrame]:
    return {name: df for name, df in (("metrics", res.metrics), ("grid", res.grid)) if df is not None}


def compare_results(new: check.FigureResults, stored: check.FigureResults) -> list[TableComparison]:
    """Compare every table of the ``stored`` results with the same table of the ``new`` ones."""
    new_tables = _tables(new)
    out = []
    for name, table in _tables(stored).items():
        if name not in new_tables:
            raise config.ConfigError(
                f"{new.fig_dir} has no {name} table, which {stored.fig_dir} has; fix: rerun the figure"
            )
        out.append(compare_tables(name, table, new_tables[name]))
    return out


def machines_line(new: check.FigureResults, stored: check.FigureResults) -> str:
    """Both results' machines, and a reminder when they differ."""
    texts = [
        check.machine_text(r.provenance["machine"]) if r.provenance.get("machine") else "machine not recorded"
        for r in (new, stored)
    ]
    line = f"new results on {texts[0]}; stored results on {texts[1]}"
    if texts[0] != texts[1]:
        line += " (float32 results that amplify rounding can differ between CPU families)"
    return line


def outcome(code: int) -> str:
    """The comparison's last line: what its exit code means, in words."""
    words = {
        claims.EXIT_OK: "every stored value reproduced",
        claims.EXIT_FAIL: "some stored values were not reproduced (a finding, not a broken install)",
        claims.EXIT_CONFIG: "a configuration problem; nothing was compared",
        claims.EXIT_NO_RESULTS: "no results on one side; nothing was compared",
        integrity.EXIT_DAMAGED: "results present but damaged or not verifiable; nothing was compared",
    }
    return f"compare: {words.get(code, 'unknown outcome')} (exit {code})"


def _parse(argv: list[str]) -> dict:
    defaults = {"figure": None, "profile": "quick", "results_root": check.DEFAULT_RESULTS, "against": None}
    args = check.key_value_arguments(argv, defaults)
    if not args["figure"]:
        raise config.ConfigError(
            f"figure=<name> is required; allowed: {', '.join(figures.figure_names())} or a YAML path"
        )
    config.check_profile_name(args["profile"])
    return args


def run(argv: list[str], out=None) -> int:
    """Compare one figure's results with its stored reference (or ``against=``); the exit code."""
    out = out or sys.stdout
    args = _parse(argv)
    fig_id = str(check.load_figure(args["figure"]).id)
    profile = args["profile"]
    new_dir = Path(args["results_root"]) / profile / fig_id
    stored_dir = Path(args["against"]) if args["against"] else check.STORED_RESULTS / profile / fig_id
    hints = {
        new_dir: f"run `make reproduce-figure-{fig_id.removeprefix('figure')} PROFILE={profile}` first",
        stored_dir: "name a stored figure folder with against=<folder>",
    }
    for folder, hint in hints.items():
        if not check.has_results(folder):
            print(f"{fig_id} ({profile}): no results under {figures.display_path(folder)}; {hint}", file=out)
            print(outcome(claims.EXIT_NO_RESULTS), file=out)
            return claims.EXIT_NO_RESULTS
    new, stored = check.load(new_dir), check.load(stored_dir)
    comparisons = compare_results(new, stored)
    where = f"{figures.display_path(new_dir)} against {figures.display_path(stored_dir)}"
    print(f"{fig_id} ({profile}): {where}; {machines_line(new, stored)}", file=out)
    for c in comparisons:
        print("\n".join(table_lines(c)), file=out)
    code = claims.EXIT_OK if all(c.identical for c in comparisons) else claims.EXIT_FAIL
    print(outcome(code), file=out)
    return code


def main() -> None:
    check.command_main(run, outcome)


if __name__ == "__main__":
    main()
