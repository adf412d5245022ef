"""Helpers shared by the test modules (import them with ``from helpers import ...``).

They live here, not in conftest.py: several folders have a conftest.py, and importing from
"conftest" would pick whichever was loaded first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from energy_hpc.context import RankContext

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def energy_hpc_cmd() -> list[str]:
    exe = BIN / "energy-hpc"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "energy_hpc"]


def mpiexec() -> str | None:
    exe = BIN / "mpiexec"
    return str(exe) if exe.exists() else shutil.which("mpiexec")


def run_cli(
    *args: str, mpi: int = 0, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    cmd = energy_hpc_cmd() + list(args)
    if mpi:
        launcher = mpiexec()
        if launcher is None:
            pytest.fail("mpiexec not found: install the mpich wheel (pip install energy-hpc[mpich])")
        cmd = [launcher, "-n", str(mpi), *cmd]
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout)


def write_job(folder: Path, body: str, name: str = "job.toml") -> Path:
    p = folder / name
    p.write_text(body)
    return p


def single_rank(hostname: str = "h") -> RankContext:
    """The context of a one-rank run outside any launcher, on a host of that name."""
    return RankContext(
        rank=0,
        size=1,
        local_rank=0,
        local_size=1,
        node_index=0,
        n_nodes=1,
        hostname=hostname,
        launcher="single",
        visible_env="",
        visible_devices=(),
    )
