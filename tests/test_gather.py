"""The gather: every rank's samples reach the run file exactly, and the write-behind thread
neither loses a write, reorders them, hides an error, nor holds more buffers than its limit."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import REPO, mpiexec

from energy_hpc.gather import _WriteBehind


@pytest.mark.mpi
def test_every_rank_s_samples_arrive_exactly_in_small_pieces(tmp_path: Path) -> None:
    import gather_entry

    launcher = mpiexec()
    assert launcher, "mpiexec not found"
    r = subprocess.run(
        [launcher, "-n", "3", sys.executable, str(REPO / "tests" / "gather_entry.py"), str(tmp_path), "256"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    path, status = r.stdout.split()
    assert status == "complete"
    tr = xr.open_dataset(path, group="traces", engine="h5netcdf")
    w = xr.open_dataset(path, group="windows", engine="h5netcdf")
    seen = set()
    for ch in range(tr.sizes["channel"]):
        rank, j = int(tr["rank"].values[ch]), int(tr["name"].values[ch].split("c")[-1])
        seen.add((rank, j))
        e = gather_entry.expected(rank, j)
        n = int(tr["n_samples"].values[ch])
        assert n == len(e["time"])
        for var in ("time", "power", "energy", "sensor_time"):
            got = tr[var].values[ch]
            np.testing.assert_allclose(
                got[:n],
                e[var],
                rtol=0,
                atol=1e-9 if var != "power" else 0,
                err_msg=f"rank {rank} channel {j} {var}",
            )
            assert np.isnan(got[n:]).all()  # the rest of the row stays fill
    assert seen == {(r, j) for r in range(3) for j in range(2)}
    assert sorted(w["rank"].values.tolist()) == [0, 1, 1, 2, 2, 2]


def test_writes_run_in_order_on_another_thread() -> None:
    done: list[tuple[int, str]] = []
    wb = _WriteBehind(depth=2)
    for i in range(20):
        wb.put(lambda i=i: done.append((i, threading.current_thread().name)))
    wb.close()
    assert [i for i, _ in done] == list(range(20))
    assert {name for _, name in done} == {"energy-hpc-gather-writer"}


def test_a_write_error_reaches_the_receiving_thread_and_later_writes_are_skipped() -> None:
    done: list[int] = []
    wb = _WriteBehind(depth=1)

    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    wb.put(done.append, 1)
    wb.put(disk_full)
    with pytest.raises(OSError, match="No space left"):
        for i in range(2, 100):  # the error surfaces at a later put (or at close)
            wb.put(done.append, i)
            time.sleep(0.001)
        wb.close()
    assert done[0] == 1 and len(done) < 98


def test_buffers_are_reused_and_bounded() -> None:
    wb = _WriteBehind(depth=2)
    handed: list[np.ndarray] = []  # kept alive, so a new buffer can never reuse an old one's id
    for _ in range(50):
        buf = wb.buffer(1 << 16)
        assert len(buf) >= 1 << 16
        handed.append(buf)
        wb.put(lambda: time.sleep(0.0005), buf=buf)
    wb.close()
    assert len({id(b) for b in handed}) <= 4  # depth + 2
