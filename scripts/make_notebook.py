"""Write a figure notebook (a few cells that read the merged CSV and draw the figure).

python scripts/make_notebook.py 2 "Influence balancing" loss
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def build(number: int, title: str, metric: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            f"# Figure {number}: {title}\n\n"
            f"Reads the merged CSV written by `make reproduce-figure-{number}` (set `PES_FIGURE_CSV` "
            "to point elsewhere) and draws the same figure as "
            f"`scripts/plot_figure{number}.py`. Nothing here computes results."
        ),
        nbformat.v4.new_code_cell(
            "%matplotlib inline\nimport os, sys\n"
            "from pathlib import Path\n"
            "HERE = Path.cwd().resolve()\n"
            "ROOT = HERE.parent if HERE.name == 'notebooks' else HERE\n"
            "sys.path[:0] = [str(ROOT), str(ROOT / 'scripts')]\n"
            "import matplotlib.pyplot as plt\n"
            "import _style\n"
            f"import plot_figure{number} as fig{number}\n"
            "from pes import results\n"
            f"DEFAULT = ROOT / 'results/quick/figure{number}/metrics.csv'\n"
            "CSV = os.environ.get('PES_FIGURE_CSV', str(DEFAULT))\n"
            "df = _style.read(CSV)\n"
            "df.head()"
        ),
        nbformat.v4.new_code_cell(
            f"# Last logged value of '{metric}' per run\nresults.final_values(df, {metric!r}).sort_values()"
        ),
        nbformat.v4.new_code_cell(
            f"fig, ax = plt.subplots(figsize=(5.5, 4))\nfig{number}.plot(df, ax)\nplt.close(fig)\nfig"
        ),
    ]
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("number", type=int)
    parser.add_argument("title")
    parser.add_argument("metric")
    args = parser.parse_args()
    path = ROOT / "notebooks" / f"figure{args.number}.ipynb"
    nbformat.write(build(args.number, args.title, args.metric), path)
    print(path)


if __name__ == "__main__":
    main()
