"""Rank context: launcher detection, visible-device layering, no MPI for a single process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from energy_hpc.context import detect, launched_by_mpi, launcher_name, visible_devices, want_mpi
from energy_hpc.errors import LaunchError


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, False),
        ({"PMI_RANK": "0", "PMI_SIZE": "2"}, True),
        ({"OMPI_COMM_WORLD_RANK": "1"}, True),
        ({"PMIX_RANK": "0"}, True),
        ({"PALS_RANKID": "3"}, True),
        ({"SLURM_JOB_ID": "5", "SLURM_NTASKS": "4"}, False),  # the batch script itself is not a rank
        ({"SLURM_JOB_ID": "5", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4"}, True),
        ({"SLURM_JOB_ID": "5", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1"}, False),
    ],
)
def test_launcher_detection(env: dict, expected: bool) -> None:
    assert launched_by_mpi(env) is expected


SRUN_PMI2 = {  # what srun --mpi=pmi2 puts in task 1 of a 2-task step (slurm src/plugins/mpi/pmi2)
    "SLURM_JOB_ID": "5",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "1",
    "SLURM_STEP_NUM_TASKS": "2",
    "PMI_FD": "7",
    "PMI_JOBID": "5.0",
    "PMI_RANK": "1",
    "PMI_SIZE": "2",
}
# hydra's mpiexec inside an allocation: its proxies run as an srun step (one per node), so the ranks
# see SLURM_STEP_ID and the proxy's SLURM_PROCID, besides hydra's own variables
HYDRA_IN_SLURM = {
    "SLURM_JOB_ID": "5",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "0",
    "PMI_FD": "9",
    "PMI_RANK": "1",
    "PMI_SIZE": "2",
    "HYDI_CONTROL_FD": "7",
    "MPI_LOCALRANKID": "1",
}


@pytest.mark.parametrize(
    "env, expected",
    [
        (SRUN_PMI2, "srun"),
        ({"SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "PMIX_RANK": "1"}, "srun"),  # srun --mpi=pmix
        ({"SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2"}, "srun"),  # Cray PMI
        (HYDRA_IN_SLURM, "mpi"),
        ({k: v for k, v in HYDRA_IN_SLURM.items() if k not in ("HYDI_CONTROL_FD", "MPI_LOCALRANKID")}, "mpi"),
        ({"PMI_RANK": "0", "PMI_SIZE": "2", "HYDI_CONTROL_FD": "7"}, "mpi"),
    ],
)
def test_the_launcher_recorded(env: dict, expected: str) -> None:
    assert launcher_name(env) == expected


def test_env_switch_overrides_detection() -> None:
    assert want_mpi({"PMI_RANK": "0", "ENERGY_HPC_MPI": "0"}) is False
    assert want_mpi({"ENERGY_HPC_MPI": "1"}) is True
    assert want_mpi({"PMI_RANK": "0"}, force=False) is False


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, ("", ())),
        ({"CUDA_VISIBLE_DEVICES": "2,3"}, ("CUDA_VISIBLE_DEVICES", ("2", "3"))),
        ({"CUDA_VISIBLE_DEVICES": "GPU-aaaa,GPU-bbbb"}, ("CUDA_VISIBLE_DEVICES", ("GPU-aaaa", "GPU-bbbb"))),
        ({"ROCR_VISIBLE_DEVICES": "4"}, ("ROCR_VISIBLE_DEVICES", ("4",))),
        # HIP indexes into what ROCR leaves visible
        ({"ROCR_VISIBLE_DEVICES": "4,5,6", "HIP_VISIBLE_DEVICES": "2"}, ("HIP_VISIBLE_DEVICES", ("6",))),
        ({"ROCR_VISIBLE_DEVICES": "6,7", "HIP_VISIBLE_DEVICES": "1,0"}, ("HIP_VISIBLE_DEVICES", ("7", "6"))),
    ],
)
def test_visible_devices_resolve_through_layers(env: dict, expected: tuple) -> None:
    assert visible_devices(env) == expected


def test_visible_devices_out_of_range_is_a_launch_error() -> None:
    with pytest.raises(LaunchError, match="beyond"):
        visible_devices({"ROCR_VISIBLE_DEVICES": "0", "HIP_VISIBLE_DEVICES": "1"})


def test_single_process_needs_no_mpi() -> None:
    code = (
        "import sys; from energy_hpc.context import detect; ctx, comm = detect(env={}); "
        "assert ctx.rank == 0 and ctx.size == 1 and ctx.launcher == 'single'; "
        "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_bound_ordinal_uses_local_rank_modulo_devices() -> None:
    ctx, _ = detect(env={"SLURM_JOB_ID": "9", "SLURM_JOB_NAME": "x"})
    assert ctx.bound_ordinal(0) is None and ctx.bound_ordinal(8) == 0
    assert ctx.slurm == {"job_id": "9", "job_name": "x"}
