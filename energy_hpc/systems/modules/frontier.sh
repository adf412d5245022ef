# Environment for energy-hpc jobs on OLCF Frontier; sourced by templates/frontier.sbatch (bash).
#
# Override anything by exporting it before `sbatch`, or edit a copy and point a custom system
# profile's `modules` at it. Variables the script provides: ENERGY_HPC_VENV, ENERGY_HPC_ACCOUNT.

# --- modules ----------------------------------------------------------------------------------
# PrgEnv-gnu + craype-accel-amd-gfx90a + rocm: the toolchain mpi4py is built with
# (MPICC="cc -shared" pip install --no-binary=mpi4py mpi4py) and the ROCm that torch's wheel
# expects. Pin ENERGY_HPC_ROCM_MODULE (e.g. rocm/6.2.4) to the version your torch was built for.
if command -v module >/dev/null 2>&1; then
    module load PrgEnv-gnu
    module load craype-accel-amd-gfx90a
    module load "${ENERGY_HPC_ROCM_MODULE:-rocm}"
    module load cray-python   # the interpreter the virtual environment was made from
else
    echo "energy-hpc: warning: no 'module' command; using the environment as it is" >&2
fi

# --- MPI --------------------------------------------------------------------------------------
# energy-hpc moves only host (numpy) buffers through MPI. GPU-aware Cray MPICH would need mpi4py
# linked against the GTL library, and with MPICH_GPU_SUPPORT_ENABLED=1 but no GTL, MPI_Init
# aborts; so it is off unless you ask for it.
export MPICH_GPU_SUPPORT_ENABLED="${ENERGY_HPC_MPICH_GPU_SUPPORT:-0}"

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

# --- models: offline, from a cache on Lustre ----------------------------------------------------
# Compute nodes have no internet, and the OLCF asks jobs to run from Orion (Lustre), not the NFS
# home areas: the Hugging Face cache lives in the project's member work area unless HF_HOME is set.
project="$(printf '%s' "${ENERGY_HPC_ACCOUNT:-}" | tr '[:upper:]' '[:lower:]')"
if [[ -z "${HF_HOME:-}" && -n "${MEMBERWORK:-}" && -n "$project" ]]; then
    export HF_HOME="$MEMBERWORK/$project/huggingface"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

# --- MIOpen: node-local caches --------------------------------------------------------------------
# MIOpen's default user DB and kernel cache live under $HOME (NFS, not meant for job I/O) and,
# moved to Lustre, every rank locks the same SQLite files. One folder per job on node-local /tmp.
export MIOPEN_USER_DB_PATH="/tmp/${USER:-energy-hpc}-miopen-${SLURM_JOB_ID:-$$}"
export MIOPEN_CUSTOM_CACHE_DIR="$MIOPEN_USER_DB_PATH"

# --- CPU threads --------------------------------------------------------------------------------
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-7}}"
