# Sourced by every GPU job: paths, the packages and data copied in .device/, a device check.
# On the device: python3 is the image's (jax with CUDA); here (tests): PYTHON=.venv/bin/python.
export PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD:$PWD/.device/site${PYTHONPATH:+:$PYTHONPATH}"
export PES_DATA_DIR=${PES_DATA_DIR:-$PWD/.device/data}
export OUT=${OUT:?set OUT to the folder for the outputs}
mkdir -p "$OUT"
"$PYTHON" - <<'PY' 2>&1 | tee "$OUT/device.txt"
import platform, jax
print("jax", jax.__version__, "devices", jax.devices(), "python", platform.python_version())
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/device.txt" || true
