"""Fixtures for the Slurm tests: a real one-node Slurm (session-scoped) and helpers.

Without Slurm (binaries absent, not root, daemons fail), tests that need it are SKIPPED with the
reason; with ENERGY_HPC_REQUIRE_SLURM=1 (CI) they FAIL with it instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .cluster import ClusterUnavailable, SlurmCluster, why_unavailable

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def _unavailable(reason: str) -> None:
    if os.environ.get("ENERGY_HPC_REQUIRE_SLURM") == "1":
        pytest.fail(f"ENERGY_HPC_REQUIRE_SLURM=1 but Slurm cannot be started: {reason}", pytrace=False)
    pytest.skip(f"no Slurm: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> SlurmCluster:
    reason = why_unavailable()
    if reason:
        _unavailable(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm-cluster"))
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        _unavailable(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The cluster, with SLURM_CONF set for this process and its children."""
    for k, v in slurm_cluster.env.items():
        monkeypatch.setenv(k, v)
    return slurm_cluster


def cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``energy-hpc ARGS`` as a user runs it (a subprocess of this venv's Python)."""
    return subprocess.run(
        [PYTHON, "-m", "energy_hpc", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def wait_for_job(job_id: str, timeout: float = 300) -> str:
    """Poll until the job has left the queue; return its final Slurm state word."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        r = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True
        )
        state = r.stdout.strip()
        # SIGNALING (a --signal being delivered) and the others are passing states, not an end
        if state and state not in (
            "PENDING",
            "CONFIGURING",
            "RUNNING",
            "COMPLETING",
            "SIGNALING",
            "STAGE_OUT",
            "SUSPENDED",
            "RESIZING",
        ):
            return state
        time.sleep(1)
    subprocess.run(["scancel", job_id])
    raise AssertionError(f"job {job_id} still {state or 'unknown'} after {timeout:.0f} s")


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    """A valid job file (the smallest text-to-image case)."""
    p = tmp_path / "jobs" / "job.toml"
    p.parent.mkdir()
    p.write_text(TINY_JOB)
    return p


TINY_JOB = """\
[job]
name = "slurmtest"

[measure]
interval_ms = 50
idle_seconds = 0.2
warmup = 0
iterations = 1
sensors = ["auto"]

[[case]]
task = "text-to-image"
model = "tiny-sd"
source = "random"
dtype = "fp32"
batch_size = 1

[case.options]
steps = 1
prompts = ["a lighthouse"]
"""
