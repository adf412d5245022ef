"""What a SIGUSR1 was taken for, tried for real under hydra's mpiexec: the notice hydra sends the
surviving ranks when one fails (``-disable-auto-cleanup``), Slurm's time-limit warning (forwarded to
mpiexec by the batch script), and a SIGUSR1 sent by hand. The run file says which, in the run's
status reason, the rank's error and ``/ranks/interrupt_cause``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
from helpers import mpiexec

from reliability.faults import HERE, finish, wait_for
from reliability.testkit import sleep_job

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def _start(tmp_path: Path, flags: list[str], env: dict[str, str], entry: str = "fault_entry.py"):
    exe = mpiexec()
    if exe is None:
        pytest.fail("mpiexec not found: install the mpich wheel")
    job = tmp_path / "job.toml"
    job.write_text(sleep_job(iterations=300, seconds=0.1))
    full = dict(os.environ, ENERGY_HPC_TEST_PIDDIR=str(tmp_path), ENERGY_HPC_SIGNAL_GRACE_S="4", **env)
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parents[1]), full.get("PYTHONPATH", "")]))
    cmd = [
        exe,
        *flags,
        "-n",
        "2",
        sys.executable,
        str(HERE / entry),
        "run",
        str(job),
        "-o",
        str(tmp_path / "out"),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full)


def _read(out: Path) -> tuple[dict, xr.Dataset]:
    [path] = sorted(out.glob("*.h5"))
    tree = xr.open_datatree(path, engine="h5netcdf")
    return dict(tree.attrs), xr.open_dataset(path, group="ranks", engine="h5netcdf")


def test_hydras_failure_notice_is_not_taken_for_the_time_limit(tmp_path: Path) -> None:
    """Rank 1 dies of an error; hydra (-disable-auto-cleanup) sends rank 0 SIGUSR1; rank 0 writes the
    run with rank 1's spills and says the signal was hydra's notice, not the time limit's warning."""
    p = _start(
        tmp_path,
        ["-disable-auto-cleanup"],
        {"ENERGY_HPC_TEST_EXIT_RANK": "1", "ENERGY_HPC_TEST_EXIT_AFTER": "2"},
        entry="dying_entry.py",
    )
    try:
        rc, _, err = finish(p, 120)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc != 0
    attrs, ranks = _read(tmp_path / "out")
    assert attrs["run_status"] == "partial"
    assert "interrupted by SIGUSR1, taken for hydra's notice that a rank failed" in attrs["run_status_reason"]
    assert ranks["status"].values.tolist() == ["interrupted", "missing"], err[-3000:]
    assert ranks["interrupt_cause"].values.tolist() == ["rank-failed", ""]
    assert "hydra's notice that a rank failed" in err


@pytest.mark.parametrize(
    "flags, env, cause, text",
    [
        # the batch script forwards Slurm's --signal=B:USR1@120 to mpiexec: the job ends in ~100 s
        (
            [],
            {"SLURM_JOB_ID": "4711", "END_IN": "100"},
            "time-limit",
            "Slurm's warning before the time limit",
        ),
        # by hand, outside Slurm, to an mpiexec that never sends failure notices
        ([], {}, "request", "interrupted by SIGUSR1"),
    ],
)
def test_sigusr1_to_mpiexec_is_taken_for_what_it_is(
    tmp_path: Path, flags: list[str], env: dict[str, str], cause: str, text: str
) -> None:
    env = dict(env)
    if "END_IN" in env:
        env["SLURM_JOB_END_TIME"] = str(int(time.time() + float(env.pop("END_IN"))))
    p = _start(tmp_path, flags, env)
    try:
        wait_for(
            lambda: all((tmp_path / f"rank-{r}.pid").exists() for r in range(2)), 120, "both ranks' case"
        )
        time.sleep(1.0)
        p.send_signal(signal.SIGUSR1)
        rc, _, err = finish(p, 60)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 1, err[-3000:]
    attrs, ranks = _read(tmp_path / "out")
    assert text in attrs["run_status_reason"]
    assert ranks["status"].values.tolist() == ["interrupted", "interrupted"]
    assert ranks["interrupt_cause"].values.tolist() == [cause, cause]
    if cause == "request":
        assert "hydra" not in attrs["run_status_reason"]
