# Environment for energy-hpc jobs on NERSC Perlmutter GPU nodes; sourced by templates/perlmutter.sbatch.
#
# Override anything by exporting it before `sbatch`, or edit a copy and point a custom system
# profile's `modules` at it. Variables the script provides: ENERGY_HPC_VENV, ENERGY_HPC_ACCOUNT.

# --- modules ----------------------------------------------------------------------------------
# PrgEnv-gnu + cudatoolkit + craype-accel-nvidia80: the toolchain mpi4py is built with
# (MPICC="cc -shared" pip install --no-binary=mpi4py mpi4py); `python` is NERSC's Python module
# the virtual environment was made from.
if command -v module >/dev/null 2>&1; then
    module load PrgEnv-gnu
    module load cudatoolkit
    module load craype-accel-nvidia80
    module load "${ENERGY_HPC_PYTHON_MODULE:-python}"
else
    echo "energy-hpc: warning: no 'module' command; using the environment as it is" >&2
fi

# --- MPI --------------------------------------------------------------------------------------
# Only host (numpy) buffers go through MPI; GPU-aware MPICH needs the GTL library linked in.
export MPICH_GPU_SUPPORT_ENABLED="${ENERGY_HPC_MPICH_GPU_SUPPORT:-0}"
# NERSC's recommendation for GPU nodes: bind each rank to its cores.
export SLURM_CPU_BIND="${SLURM_CPU_BIND:-cores}"

# --- virtual environment ----------------------------------------------------------------------
if [[ -n "${ENERGY_HPC_VENV:-}" ]]; then
    if [[ ! -f "$ENERGY_HPC_VENV/bin/activate" ]]; then
        echo "energy-hpc: error: ENERGY_HPC_VENV=$ENERGY_HPC_VENV is not a virtual environment" >&2
        exit 2
    fi
    # shellcheck source=/dev/null
    source "$ENERGY_HPC_VENV/bin/activate"
fi
export ENERGY_HPC_PYTHON="${ENERGY_HPC_PYTHON:-python3}"

# --- models: offline, from a cache on $SCRATCH ------------------------------------------------------
if [[ -z "${HF_HOME:-}" && -n "${SCRATCH:-}" ]]; then
    export HF_HOME="$SCRATCH/huggingface"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

# --- CPU threads --------------------------------------------------------------------------------
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"
