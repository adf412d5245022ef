#!/usr/bin/env bash
# Set up energy-hpc in a virtual environment (.venv beside this folder) on a fresh machine.
# Needs Python >= 3.11 with its venv module (Debian/Ubuntu: apt install python3-venv).
#
# torch is installed first and pinned, because a loose requirement with no torch installed pulls the
# newest CUDA build (gigabytes). Which build:
#   - TORCH_SPEC set: exactly that, e.g. on a cluster
#       TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/rocm6.2" bash scripts/setup.sh
#   - no GPU on this machine (no nvidia-smi, /dev/nvidia*, /dev/kfd or rocminfo): the CPU-only build from
#     the PyTorch project's index (TORCH_CPU_INDEX), about 0.2 GB; when that index cannot be reached,
#     pip's configured index (on PyPI: the CUDA build, about 3.5 GB)
#   - a GPU: pip's configured index (on PyPI: the CUDA build)
# Each choice and its reason is said on stderr.
# EXTRAS picks the optional parts (default: all; a login node needs only "analysis", which skips torch).
# --dry-run (or SETUP_DRY_RUN=1) prints the commands it would run on stdout and runs none of them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=2.13.0
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
EXTRAS=${EXTRAS:-all}
DRY=${SETUP_DRY_RUN:-0}
DEV=${SETUP_DEV_DIR:-/dev}  # where device files are looked for (tests point it elsewhere)
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
            exit 0
            ;;
        *)
            echo "setup: unknown argument '$arg' (known: --dry-run, --help)" >&2
            exit 2
            ;;
    esac
done

# each argument a line on stderr: the first says what, the others (indented) why
say() {
    echo "setup: $1" >&2
    shift
    local line
    for line in "$@"; do
        echo "       $line" >&2
    done
}

# run a command, or print it (shell-quoted) on stdout (fd 3, whatever the command's redirection) in a
# dry run
exec 3>&1
run() {
    if [ "$DRY" = 1 ]; then
        printf '%q ' "$@" | sed 's/ $//' >&3
        echo >&3
    else
        "$@"
    fi
}

# "nvidia (why)", "amd (why)" or "none"
gpu_kind() {
    local f
    if command -v nvidia-smi >/dev/null 2>&1; then
        echo "nvidia (nvidia-smi is on PATH)"
        return
    fi
    for f in "$DEV"/nvidia*; do
        if [ -e "$f" ]; then
            echo "nvidia ($f exists)"
            return
        fi
    done
    if [ -e "$DEV/kfd" ]; then
        echo "amd ($DEV/kfd exists)"
    elif command -v rocminfo >/dev/null 2>&1; then
        echo "amd (rocminfo is on PATH)"
    else
        echo "none"
    fi
}

# empty when the index answers, else why not
unreachable() {
    "$PY" - "$1" "${SETUP_PROBE_TIMEOUT:-15}" <<'EOF'
import sys
import urllib.request

url, timeout = sys.argv[1].rstrip("/") + "/torch/", float(sys.argv[2])
try:
    urllib.request.urlopen(url, timeout=timeout).close()
except Exception as exc:  # DNS, refused, timeout, TLS, HTTP error: all mean "cannot be reached"
    print(getattr(exc, "reason", None) or exc)
EOF
}

if ! command -v "$PY" >/dev/null 2>&1; then
    say "no '$PY' found; install Python >= 3.11 with venv, or set PYTHON to one"
    exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "energy-hpc needs Python >= 3.11; $PY is $("$PY" -c 'import platform; print(platform.python_version())'); set PYTHON to a newer one (e.g. PYTHON=python3.11)"
    exit 1
fi
if [ ! -x "$VENV/bin/python" ] && ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
    say "$PY has no working venv module; install it (Debian/Ubuntu: apt install python3-venv) or set PYTHON"
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    run "$PY" -m venv "$VENV"
fi
run "$VENV/bin/python" -m pip install -q --upgrade pip >&2

if [ "$EXTRAS" = "analysis" ]; then
    say "EXTRAS=analysis: no torch (reading results needs none)"
elif [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    say "torch is installed already: $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
elif [ -n "${TORCH_SPEC:-}" ]; then
    say "torch: as TORCH_SPEC says: $TORCH_SPEC"
    # shellcheck disable=SC2086
    run "$VENV/bin/python" -m pip install -q $TORCH_SPEC >&2
else
    gpu=$(gpu_kind)
    case $gpu in
        none)
            why=$(unreachable "$TORCH_CPU_INDEX")
            if [ -z "$why" ]; then
                say "torch: the CPU-only build of torch==$TORCH_VERSION from $TORCH_CPU_INDEX (about 0.2 GB)" \
                    "no GPU here: no nvidia-smi, $DEV/nvidia*, $DEV/kfd or rocminfo"
                run "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX" >&2
            else
                say "torch: torch==$TORCH_VERSION from pip's configured index" \
                    "no GPU here, but the CPU-only index $TORCH_CPU_INDEX cannot be reached: $why" \
                    "(on PyPI the configured index gives the CUDA build, about 3.5 GB; set TORCH_SPEC to choose)"
                run "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" >&2
            fi
            ;;
        nvidia*)
            say "torch: torch==$TORCH_VERSION from pip's configured index" \
                "an NVIDIA GPU is here ${gpu#nvidia }; on PyPI that is the CUDA build, about 3.5 GB" \
                "(set TORCH_SPEC for another build)"
            run "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" >&2
            ;;
        amd*)
            say "torch: torch==$TORCH_VERSION from pip's configured index" \
                "an AMD GPU is here ${gpu#amd }, but on PyPI that is a CUDA build, which cannot use it;" \
                "for ROCm set TORCH_SPEC=\"torch==$TORCH_VERSION --index-url https://download.pytorch.org/whl/rocmX.Y\""
            run "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" >&2
            ;;
    esac
fi

say "installing energy-hpc[$EXTRAS]"
# setuptools warns on every editable install that folders named like the package may shadow it; that
# is how this checkout is meant to work, so that one warning is silenced (errors still print)
run env PYTHONWARNINGS="ignore:Editable installation:UserWarning" \
    "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]" >&2
if [ "$DRY" = 1 ]; then
    say "dry run: nothing was installed"
else
    case ",$EXTRAS," in
        *,all,* | *,mpich,*) say "done; commands are in $VENV/bin (energy-hpc, mpiexec)" ;;
        *) say "done; the command is $VENV/bin/energy-hpc" ;;
    esac
fi
