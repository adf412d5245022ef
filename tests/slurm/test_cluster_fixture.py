"""The Slurm fixture skips with a reason where Slurm cannot run, and fails instead under CI."""

from __future__ import annotations

import pytest

from . import conftest
from .cluster import why_unavailable


def test_without_slurm_tests_are_skipped_with_the_reason(monkeypatch) -> None:
    monkeypatch.delenv("ENERGY_HPC_REQUIRE_SLURM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Slurm: slurmd missing"):
        conftest._unavailable("slurmd missing")


def test_with_energy_hpc_require_slurm_they_fail_instead(monkeypatch) -> None:
    monkeypatch.setenv("ENERGY_HPC_REQUIRE_SLURM", "1")
    with pytest.raises(pytest.fail.Exception, match=r"ENERGY_HPC_REQUIRE_SLURM=1 .*slurmd missing"):
        conftest._unavailable("slurmd missing")


def test_missing_binaries_are_named() -> None:
    reason = why_unavailable(which=lambda name: None if name == "slurmd" else "/bin/" + name)
    assert reason is not None
    assert "slurmd" in reason and "install-slurm.sh" in reason
