"""Shared fixtures: a per-session model cache with the tiny pipeline built once. Helper functions
are in helpers.py; pytest puts the repository and tests/ on sys.path (``pythonpath`` in
pyproject.toml)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from energy_hpc import settings


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's model cache, never the user's: the ``cache`` setting in this process and
    ENERGY_HPC_CACHE for the subprocesses it starts, both restored when the session ends. Tiny models
    are built there on first use."""
    cache = tmp_path_factory.mktemp("energy-hpc-cache")
    env = pytest.MonkeyPatch()
    env.setenv("ENERGY_HPC_CACHE", str(cache))
    try:
        with settings.override(cache=cache):
            yield cache
    finally:
        env.undo()


@pytest.fixture(scope="session")
def tiny_sd(model_cache: Path) -> Path:
    """A tiny Stable Diffusion pipeline saved with save_pretrained (random weights)."""
    from energy_hpc.workloads.models import materialise_random

    return materialise_random("tiny-sd")
