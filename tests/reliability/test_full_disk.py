"""A disk that fills while measuring, for real: the output folder is a small tmpfs mounted by the test
(skipped with the reason where mounting is not allowed), filled with a filler file while two ranks
under mpiexec spill every second.

- the disk fills, then space returns: one warning line per rank, no h5py traceback, the spills catch
  up and the run file is whole;
- the disk stays full to the end: the run says in one line that the run file could not be written and
  gives the `energy-hpc merge` command; each rank's whole spill is in the fallback folder
  (ENERGY_HPC_FALLBACK_DIR), and that command rebuilds the run with nothing lost.
"""

from __future__ import annotations

import errno
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import run_cli

from energy_hpc.spill import RankSpill
from reliability.faults import finish, start, wait_for
from reliability.testkit import sleep_job

pytestmark = [pytest.mark.mpi, pytest.mark.slow]

ITERATIONS, SECONDS = 40, 0.1


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """An 80 MiB tmpfs (the start-up check wants 64 MiB free) mounted for this test."""
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(d)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip() or r.returncode}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the disk is full."""
    filler = disk / "filler"
    block = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _start(tmp_path: Path, out: Path, env: dict[str, str]):
    job = tmp_path / "job.toml"
    job.write_text(sleep_job(iterations=ITERATIONS, seconds=SECONDS, interval_ms=20))
    env = {"ENERGY_HPC_TEST_PIDDIR": str(tmp_path), **env}
    p = start("run", str(job), "-o", str(out), mpi=2, env=env)
    wait_for(lambda: (tmp_path / "rank-1.pid").exists(), 120, "rank 1 to start its case")
    return p


def _no_spam(err: str) -> None:
    assert "Traceback" not in err and "__dealloc__" not in err and "Exception ignored" not in err, err[-3000:]
    assert "HDF5-DIAG" not in err and "Driver write request failed" not in err, err[-3000:]


def test_a_disk_that_fills_and_frees_again_loses_nothing(tmp_path: Path, disk: Path) -> None:
    out = disk / "out"
    p = _start(tmp_path, out, {"ENERGY_HPC_KEEP_SPILLS": "1"})
    try:
        time.sleep(1.2)
        filler = fill(disk)
        time.sleep(2.5)  # two spills or more fail on each rank
        filler.unlink()
        rc, _, err = finish(p, 60)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 0, err[-3000:]
    _no_spam(err)
    failed = [line for line in err.splitlines() if "spill to" in line and "failed" in line]
    assert len(failed) == 2, err[-3000:]  # one line per rank, not one per attempt
    assert "No space left on device" in failed[0] and "\n" not in failed[0]
    assert err.count("works again") == 2, err[-3000:]
    [path] = sorted(out.glob("*.h5"))
    tree = xr.open_datatree(path, engine="h5netcdf")
    assert tree.attrs["run_status"] == "complete"
    traces = xr.open_dataset(path, group="traces", engine="h5netcdf")
    # the spills caught up: each is finished and holds every sample the run file holds
    [spills] = out.glob(".*.spill")
    for rank in (0, 1):
        s = RankSpill.open(spills / f"rank-{rank:05d}.h5")
        try:
            assert s.finished
            rows = np.flatnonzero(traces["rank"].values == rank)
            assert [c["n_samples"] for c in s.channels] == traces["n_samples"].values[rows].tolist()
            assert (s.windows["status"] != b"").all() and not (s.windows["status"] == b"open").any()
        finally:
            s.close()


def test_a_disk_full_at_the_end_keeps_everything_for_merge(tmp_path: Path, disk: Path) -> None:
    out, fallback = disk / "out", tmp_path / "fallback"
    p = _start(tmp_path, out, {"ENERGY_HPC_FALLBACK_DIR": str(fallback)})
    filler = None
    try:
        time.sleep(1.2)
        filler = fill(disk)
        t_full = time.monotonic()
        rc, _, err = finish(p, 60)
        waited = time.monotonic() - t_full
    finally:
        if p.poll() is None:
            p.kill()
    assert rc != 0 and waited < 30, err[-3000:]  # no rank waits out a timeout
    _no_spam(err)
    assert not list(out.glob("*.h5"))
    [line] = [x for x in err.splitlines() if "cannot write the run file" in x]
    assert "No space left on device" in line and "energy-hpc merge" in line
    merge = shlex.split(line.split("rebuild the run with: ", 1)[1])
    assert merge[:2] == ["energy-hpc", "merge"]
    assert any(a.startswith(str(fallback)) for a in merge)
    assert filler is not None
    filler.unlink()  # space is back: the printed command rebuilds the run
    r = run_cli(*merge[1:])
    assert r.returncode == 0, r.stderr
    [path] = sorted(out.glob("*.h5"))
    ranks = xr.open_dataset(path, group="ranks", engine="h5netcdf")
    assert ranks["status"].values.tolist() == ["ok", "ok"]  # both ranks' whole spill: nothing lost
    w = xr.open_dataset(path, group="windows", engine="h5netcdf")
    for rank in (0, 1):
        measured = (w["rank"] == rank) & (w["phase"] == "measure")
        assert int(measured.sum()) == ITERATIONS
    assert "" not in w["status"].values.tolist()
