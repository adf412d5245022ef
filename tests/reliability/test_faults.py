"""Faults tried for real: real mpiexec ranks, real signals, real kill -9; what was lost is counted.

Every run here uses the test kit's ``sleep`` task (no CPU burnt) and the synthetic sensor sampled
every 5 ms, with spills every second.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import run_cli

from reliability.faults import finish, start, wait_for
from reliability.testkit import sleep_job

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


def _run_files(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("*.h5"))


def _open(path: Path, group: str) -> xr.Dataset:
    return xr.open_dataset(path, group=group, engine="h5netcdf")


def _last_sample_time(path: Path, rank: int) -> float:
    tr = _open(path, "traces")
    rows = np.flatnonzero(tr["rank"].values == rank)
    assert len(rows), f"no channel of rank {rank}"
    n = int(tr["n_samples"].values[rows[0]])
    return float(tr["time"].values[rows[0], n - 1])


def _spill_dirs(out: Path) -> list[Path]:
    return sorted(out.glob(".*.spill"))


def test_exception_outside_the_cases_still_joins_the_gather(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(sleep_job(iterations=3, seconds=0.1))
    p = start("run", str(job), "-o", str(tmp_path / "out"), mpi=2, env={"ENERGY_HPC_TEST_FAULT": "outside:1"})
    rc, out, _ = finish(p)
    assert rc != 0
    [path] = _run_files(tmp_path / "out")
    assert out.strip() == str(path)
    assert _open(path, "traces")["rank"].values.tolist() == [0, 1]  # both ranks' data are there
    ranks = _open(path, "ranks")
    assert ranks["status"].values.tolist() == ["ok", "failed"]
    assert "outside the cases: RuntimeError: injected fault" in ranks["error"].values[1]
    tree = xr.open_datatree(path, engine="h5netcdf")
    assert tree.attrs["run_status"] == "partial" and "rank 1: failed" in tree.attrs["run_status_reason"]
    assert not _spill_dirs(tmp_path / "out")  # removed once the run file is in place


def test_kill_9_of_one_rank_loses_at_most_one_spill_interval(tmp_path: Path) -> None:
    """hydra's mpiexec kills every rank when one dies: the data come back through the spills."""
    job = tmp_path / "job.toml"
    job.write_text(sleep_job(iterations=200, seconds=0.1))
    out = tmp_path / "out"
    p = start("run", str(job), "-o", str(out), mpi=2, env={"ENERGY_HPC_TEST_PIDDIR": str(tmp_path)})
    try:
        wait_for(lambda: (tmp_path / "rank-1.pid").exists(), 120, "rank 1 to start its case")
        time.sleep(3.5)
        victim = int((tmp_path / "rank-1.pid").read_text())
        os.kill(victim, signal.SIGKILL)
        killed_at = time.time()
        rc, _, _ = finish(p, 60)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc != 0
    assert not _run_files(out)  # rank 0 was killed by mpiexec before it could write
    [spills] = _spill_dirs(out)
    r = run_cli("merge", str(spills), "-o", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr
    [path] = _run_files(tmp_path / "merged")
    tree = xr.open_datatree(path, engine="h5netcdf")
    assert tree.attrs["run_status"] == "partial"
    assert tree.attrs["run_status_reason"].startswith("rebuilt from spills")
    ranks = _open(path, "ranks")
    assert ranks["status"].values.tolist() == ["missing", "missing"]
    assert "recovered from its spill file" in ranks["error"].values[1]
    epoch = float(tree.attrs["epoch_unix"])
    lost = (killed_at - epoch) - _last_sample_time(path, 1)
    assert lost < 1.0 + 1.0, f"rank 1 lost {lost:.2f} s of samples (spill interval 1 s)"
    w = _open(path, "windows")
    assert (
        "interrupted" in w["status"].values
    )  # the window open at the kill is kept, closed at the last spill
    assert ((w["rank"] == 1) & (w["phase"] == "measure")).sum() >= 20


def test_a_rank_that_hangs_is_given_up_and_its_spills_are_used(tmp_path: Path) -> None:
    """SIGSTOP freezes rank 1 (as a hung node would): rank 0 waits while rank 1's spill file is silent
    for the grace time (10 s at spill_seconds = 1), then writes the run with rank 1's spilled data."""
    job = tmp_path / "job.toml"
    job.write_text(sleep_job(iterations=25, seconds=0.1))
    out = tmp_path / "out"
    p = start("run", str(job), "-o", str(out), mpi=2, env={"ENERGY_HPC_TEST_PIDDIR": str(tmp_path)})
    victim = 0
    try:
        wait_for(lambda: (tmp_path / "rank-1.pid").exists(), 120, "rank 1 to start its case")
        time.sleep(1.5)
        victim = int((tmp_path / "rank-1.pid").read_text())
        os.kill(victim, signal.SIGSTOP)
        stopped_at = time.time()
        rc, stdout, err = finish(p, 90)
    finally:
        if victim:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if p.poll() is None:
            p.kill()
    assert rc != 0  # rank 0 ends the job with MPI_Abort: MPI_Finalize would wait for rank 1 forever
    [path] = _run_files(out)
    assert stdout.strip() == str(path)
    tree = xr.open_datatree(path, engine="h5netcdf")
    assert tree.attrs["run_status"] == "partial"
    ranks = _open(path, "ranks")
    assert ranks["status"].values.tolist() == ["ok", "missing"]
    assert "spill file unchanged" in ranks["error"].values[1]
    lost = (stopped_at - float(tree.attrs["epoch_unix"])) - _last_sample_time(path, 1)
    assert lost < 2.0, f"rank 1 lost {lost:.2f} s"
    assert "rank 1 is missing" in err


@pytest.mark.parametrize("signame, mpi", [("SIGTERM", 2), ("SIGUSR1", 2), ("SIGUSR1", 0), ("SIGTERM", 0)])
def test_signal_writes_a_partial_run_quickly(tmp_path: Path, signame: str, mpi: int) -> None:
    """The signal goes to mpiexec (which forwards it to every rank) or to the single process."""
    job = tmp_path / "job.toml"
    job.write_text(sleep_job(iterations=200, seconds=0.1))
    out = tmp_path / "out"
    p = start("run", str(job), "-o", str(out), mpi=mpi, env={"ENERGY_HPC_TEST_PIDDIR": str(tmp_path)})
    try:
        # every rank has loaded its case (a rank still loading has no window to interrupt yet)
        wait_for(
            lambda: all((tmp_path / f"rank-{r}.pid").exists() for r in range(max(mpi, 1))),
            120,
            "the case to start on every rank",
        )
        time.sleep(1.0)
        p.send_signal(getattr(signal, signame))
        sent = time.monotonic()
        wait_for(lambda: bool(_run_files(out)), 30, "the run file")
        to_disk = time.monotonic() - sent
        rc, _, err = finish(p, 30)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 1, err
    [path] = _run_files(out)
    tree = xr.open_datatree(path, engine="h5netcdf")
    assert tree.attrs["run_status"] == "partial"
    assert f"interrupted by {signame}" in tree.attrs["run_status_reason"]
    ranks = _open(path, "ranks")
    assert set(ranks["status"].values) == {"interrupted"} and ranks.sizes["rank"] == max(mpi, 1)
    w = _open(path, "windows")
    assert (w["status"] == "interrupted").sum() >= max(mpi, 1)
    assert to_disk < 10.0, f"{to_disk:.1f} s from {signame} to the run file"
    assert "run file written" in err
    print(f"{signame} mpi={mpi}: run file on disk {to_disk:.2f} s after the signal")


def test_two_runs_into_one_folder_never_clobber(tmp_path: Path) -> None:
    """Same job, same Slurm job id (the same file name), started together into the same folder."""
    job = tmp_path / "job.toml"
    job.write_text(sleep_job(iterations=5, seconds=0.1))
    out = tmp_path / "out"
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0"}
    ps = [start("run", str(job), "-o", str(out), env=env) for _ in range(2)]
    results = [finish(p) for p in ps]
    assert [rc for rc, _, _ in results] == [0, 0], [e[-2000:] for _, _, e in results]
    files = _run_files(out)
    assert [f.name for f in files] == ["fault-4242.0-2.h5", "fault-4242.0.h5"]
    assert {o.strip() for _, o, _ in results} == {str(f) for f in files}
    epochs = {xr.open_datatree(f, engine="h5netcdf").attrs["epoch_unix"] for f in files}
    assert len(epochs) == 2  # two distinct runs, neither overwritten
    assert not _spill_dirs(out) and not list(out.glob(".*partial"))
