# Environment for energy-hpc jobs on a generic Slurm cluster; sourced by templates/generic.sbatch.
#
# Load your site's modules here (or in a copy named by your own system profile). Variables the
# script provides: ENERGY_HPC_VENV, ENERGY_HPC_ACCOUNT.

if command -v module >/dev/null 2>&1 && [[ -n "${ENERGY_HPC_MODULES_TO_LOAD:-}" ]]; then
    # e.g. ENERGY_HPC_MODULES_TO_LOAD="gcc openmpi cuda"
    # shellcheck disable=SC2086
    module load $ENERGY_HPC_MODULES_TO_LOAD
fi

# --- virtual environment ----------------------------------------------------------------------
# The venv's bin/ comes first on PATH, so `mpiexec` is the one of its `mpich` wheel, if any.
if [[ -n "${ENERGY_HPC_VENV:-}" ]]; then
    if [[ ! -f "$ENERGY_HPC_VENV/bin/activate" ]]; then
        echo "energy-hpc: error: ENERGY_HPC_VENV=$ENERGY_HPC_VENV is not a virtual environment" >&2
        exit 2
    fi
    # shellcheck source=/dev/null
    source "$ENERGY_HPC_VENV/bin/activate"
fi
export ENERGY_HPC_PYTHON="${ENERGY_HPC_PYTHON:-python3}"

# --- models: offline ------------------------------------------------------------------------------
export HF_HOME="${HF_HOME:-$HOME/.cache/huggingface}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
