"""Shared fixtures: the venv's commands, a per-session model cache with the tiny pipeline built once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def energy_hpc_cmd() -> list[str]:
    exe = BIN / "energy-hpc"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "energy_hpc"]


def mpiexec() -> str | None:
    exe = BIN / "mpiexec"
    return str(exe) if exe.exists() else shutil.which("mpiexec")


def run_cli(*args: str, mpi: int = 0, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = energy_hpc_cmd() + list(args)
    if mpi:
        launcher = mpiexec()
        if launcher is None:
            pytest.fail("mpiexec not found: install the mpich wheel (pip install energy-hpc[mpich])")
        cmd = [launcher, "-n", str(mpi)] + cmd
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ENERGY_HPC_CACHE for the whole session (subprocesses inherit it); tiny-sd built once."""
    cache = tmp_path_factory.mktemp("energy-hpc-cache")
    os.environ["ENERGY_HPC_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_sd(model_cache: Path) -> Path:
    """A tiny Stable Diffusion pipeline saved with save_pretrained (random weights)."""
    from energy_hpc.workloads.models import materialise_random

    return materialise_random("tiny-sd")


def write_job(folder: Path, body: str, name: str = "job.toml") -> Path:
    p = folder / name
    p.write_text(body)
    return p
