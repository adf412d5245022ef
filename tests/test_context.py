"""Rank context: launcher detection, visible-device layering, no MPI for a single process."""

from __future__ import annotations

import datetime
import subprocess
import sys

import pytest
from helpers import mpiexec

from energy_hpc.context import (
    CAUSE_RANK_FAILED,
    CAUSE_REQUEST,
    CAUSE_TIME_LIMIT,
    SignalFacts,
    detect,
    launched_by_mpi,
    launcher_name,
    signal_cause,
    signal_facts,
    visible_devices,
    want_mpi,
)
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


# --- what a signal was taken for (issue 17): decided from start-up facts and the signal's time --------

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "signame, facts, cause, words",
    [
        # Slurm's --signal=USR1@120 (it may come up to a minute early), srun or mpiexec alike
        ("SIGUSR1", SignalFacts(job_end_unix=NOW + 118, slurm=True), CAUSE_TIME_LIMIT, "ends in 118 s"),
        ("SIGUSR1", SignalFacts(NOW + 170, True, True, True), CAUSE_TIME_LIMIT, "warning before the time"),
        # long before the end under hydra with -disable-auto-cleanup: a rank failed
        ("SIGUSR1", SignalFacts(NOW + 3600, True, True, True), CAUSE_RANK_FAILED, "hydra's notice"),
        # outside Slurm under hydra; its command line not visible (a remote node): the notice too
        ("SIGUSR1", SignalFacts(hydra=True), CAUSE_RANK_FAILED, "a rank failed"),
        # hydra run without the flag never sends notices: someone sent it
        ("SIGUSR1", SignalFacts(hydra=True, hydra_notices=False), CAUSE_REQUEST, "a request to stop"),
        ("SIGUSR1", SignalFacts(NOW + 3600, True, True, False), CAUSE_REQUEST, "3600 s before the time"),
        # srun, no end time known: what --signal is for
        ("SIGUSR1", SignalFacts(slurm=True), CAUSE_TIME_LIMIT, "end time is not known"),
        ("SIGUSR1", SignalFacts(), CAUSE_REQUEST, "a request to stop"),
        ("SIGTERM", SignalFacts(job_end_unix=NOW + 1, slurm=True), CAUSE_TIME_LIMIT, "at its time limit"),
        ("SIGTERM", SignalFacts(job_end_unix=NOW + 3600, slurm=True), CAUSE_REQUEST, ""),
        ("SIGINT", SignalFacts(job_end_unix=NOW + 1, slurm=True), CAUSE_REQUEST, ""),
    ],
)
def test_signal_cause(signame: str, facts: SignalFacts, cause: str, words: str) -> None:
    got, text = signal_cause(signame, facts, NOW)
    assert got == cause
    assert words in text and ("\n" not in text)


def test_signal_facts_from_slurm_and_hydra() -> None:
    asked: list[str] = []

    def squeue(job_id: str) -> str:
        asked.append(job_id)
        return "2026-12-01T15:30:00\n"

    cmd = ["mpiexec", "-disable-auto-cleanup", "-n", "2", "python"]
    # SLURM_JOB_END_TIME (newer Slurm) is used as it is: squeue is not asked
    f = signal_facts({"SLURM_JOB_ID": "5", "SLURM_JOB_END_TIME": "1800000100"}, squeue=squeue)
    assert f == SignalFacts(job_end_unix=1800000100.0, slurm=True) and not asked
    f = signal_facts(HYDRA_IN_SLURM, squeue=squeue, hydra_cmdline=lambda: cmd)
    assert asked == ["5"] and f.hydra and f.hydra_notices and f.slurm
    assert f.job_end_unix == datetime.datetime(2026, 12, 1, 15, 30).timestamp()  # squeue's local time
    for answer in ("N/A", "Unknown", "NONE", ""):  # no time limit, or squeue failed
        assert signal_facts({"SLURM_JOB_ID": "5"}, squeue=lambda _, a=answer: a).job_end_unix is None
    assert signal_facts({"MPI_LOCALRANKID": "0"}, hydra_cmdline=lambda: None).hydra_notices is None
    assert signal_facts({"MPI_LOCALRANKID": "0"}, hydra_cmdline=lambda: cmd[:1]).hydra_notices is False
    assert signal_facts({}) == SignalFacts()


@pytest.mark.mpi
@pytest.mark.parametrize("flag", [["-disable-auto-cleanup"], []])
def test_a_rank_sees_the_mpiexec_command_line(flag: list[str]) -> None:
    exe = mpiexec()
    if exe is None:
        pytest.fail("mpiexec not found: install the mpich wheel")
    code = "from energy_hpc.context import signal_facts; f = signal_facts(); print(f.hydra, f.hydra_notices)"
    r = subprocess.run(
        [exe, *flag, "-n", "1", sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", str(bool(flag))]
