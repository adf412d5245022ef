"""Fault-injection helpers: start energy-hpc (with the test kit) as real processes, under real mpiexec."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import mpiexec

HERE = Path(__file__).resolve().parent
ENTRY = HERE / "fault_entry.py"


def start(*args: str, mpi: int = 0, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start ``energy-hpc ARGS`` with the test kit, under ``mpiexec -n MPI`` when asked."""
    cmd = [sys.executable, str(ENTRY), *args]
    if mpi:
        exe = mpiexec()
        if exe is None:
            pytest.fail("mpiexec not found: install the mpich wheel")
        cmd = [exe, "-n", str(mpi), *cmd]
    full = dict(os.environ, **(env or {}))
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parents[1]), full.get("PYTHONPATH", "")]))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full, **kw)


def wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def finish(p: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"process did not end within {timeout} s; stderr:\n{err[-3000:]}") from None
    return p.returncode, out, err
