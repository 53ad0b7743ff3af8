#!/usr/bin/env bash
# Run on a machine that has the data and the .venv, in the repository root, before a GPU job:
# fills the git-ignored folder .device/ with what a bare accelerator image (jax with CUDA)
# lacks; copy it to the GPU machine with the repository.  About 37 MB:
#   .device/data/fashion_mnist/*.gz   Fashion-MNIST IDX files (Debian dataset-fashion-mnist or
#                                     $PES_DATA_DIR/fashion_mnist)
#   .device/site/                     pure-Python packages missing there: hydra-core, omegaconf,
#                                     antlr4-python3-runtime, evosax, dotmap (copied from .venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
src=""
for d in "${PES_DATA_DIR:-}/fashion_mnist" /usr/share/datasets/fashion-mnist; do
  if [ -f "$d/train-images-idx3-ubyte.gz" ]; then src=$d; break; fi
done
if [ -z "$src" ]; then
  echo "error: no Fashion-MNIST IDX files found; install dataset-fashion-mnist (apt) or put them in \$PES_DATA_DIR/fashion_mnist" >&2
  exit 2
fi
mkdir -p .device/data/fashion_mnist .device/site
cp "$src"/*-ubyte.gz .device/data/fashion_mnist/
site=$("$PY" -c "import omegaconf, os; print(os.path.dirname(os.path.dirname(omegaconf.__file__)))")
for pkg in hydra omegaconf antlr4 evosax dotmap; do
  if [ -d "$site/$pkg" ]; then rm -rf ".device/site/$pkg"; cp -r "$site/$pkg" .device/site/; else
    echo "warning: $pkg not in $site (bench needs evosax)" >&2; fi
done
find .device/site -name __pycache__ -prune -exec rm -rf {} +
du -sh .device
echo "carry: [\".device\"]"
