"""Shared fixtures: a per-session model cache with the tiny pipeline built once. Helper functions
are in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
