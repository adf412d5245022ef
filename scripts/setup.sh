#!/usr/bin/env bash
# Set up energy-hpc in a virtual environment (.venv beside this folder) on a fresh machine.
#
# torch is installed first and pinned, because a loose requirement with no torch installed pulls the
# newest CUDA build (gigabytes). On a cluster, set TORCH_SPEC to the build for your system, e.g.
#   TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/rocm6.2" bash scripts/setup.sh
# EXTRAS picks the optional parts (default: all; a login node needs only "analysis").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-all}

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >&2
if [ "$EXTRAS" != "analysis" ] && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "setup: installing $TORCH_SPEC" >&2
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -q $TORCH_SPEC >&2
fi
echo "setup: installing energy-hpc[$EXTRAS]" >&2
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]" >&2
echo "setup: done; commands are in $VENV/bin (energy-hpc, mpiexec)" >&2
