"""Wall time of each figure's reproduce command in a results folder, from its figure.json.

    python scripts/command_times.py RESULTS [PROFILE]

Prints a markdown table: the figure, the command's wall time (start to end of
`experiments.reproduce`, jobs included), the summed compute of its runs and post-steps (what
one process would spend), the processor time of the command and its jobs and the cores it kept
busy on average (processor time / wall time; "—" for a record written before processor time was
recorded), the launcher and number of jobs, and the start and end times; then the totals.
Reads figure.json files only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def rows(root: Path, profile: str) -> list[dict]:
    out = []
    paths = root.joinpath(profile).glob("figure*/figure.json")
    for path in sorted(paths, key=lambda p: int(p.parent.name.removeprefix("figure"))):
        record = json.loads(path.read_text())
        jobs = record.get("jobs") or {}
        out.append(
            {
                "figure": path.parent.name,
                "wall": float(record.get("wall_time_s") or 0.0),
                "compute": float(record.get("compute_wall_time_s") or 0.0),
                "cpu": None if record.get("cpu_time_s") is None else float(record["cpu_time_s"]),
                "jobs": f"{jobs.get('launcher')}, {len(jobs.get('submitted', []))} jobs"
                if jobs
                else "serial",
                "start": record.get("start_time", ""),
                "end": record.get("end_time", ""),
            }
        )
    return out


def _cpu_cells(cpu: float | None, wall: float) -> list[str]:
    if cpu is None:
        return ["—", "—"]
    return [_minutes(cpu), f"{cpu / wall:.2f}" if wall > 0 else "—"]


def table(found: list[dict]) -> str:
    header = ["figure", "command wall time", "runs + post-steps, summed", "processor time", "cores busy"]
    header += ["jobs", "start", "end"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in found:
        cells = [r["figure"], _minutes(r["wall"]), _minutes(r["compute"]), *_cpu_cells(r["cpu"], r["wall"])]
        cells += [r["jobs"], r["start"], r["end"]]
        lines.append("| " + " | ".join(cells) + " |")
    total = sum(r["wall"] for r in found)
    summed = sum(r["compute"] for r in found)
    cpus = [r["cpu"] for r in found]
    cpu_cells = _cpu_cells(None if None in cpus else sum(cpus), total)
    cells = [f"all ({len(found)})", _minutes(total), _minutes(summed), *cpu_cells, "", "", ""]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    root = Path(argv[0])
    profile = argv[1] if len(argv) > 1 else "quick"
    found = rows(root, profile)
    if not found:
        fix = f"fix: reproduce a figure into {root} first"
        print(f"error: no {root}/{profile}/figure*/figure.json; {fix}", file=sys.stderr)
        return 3
    print(table(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
