"""Shared bits for the telemetry tests: the stand-ins live in tests/fakes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `pytest` run from anywhere: make `tests.fakes` importable
    sys.path.insert(0, _ROOT)


class FakeClock:
    """A monotonic clock the test moves by hand (s)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
