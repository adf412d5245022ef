"""Shared bits for the telemetry tests: the stand-ins live in tests/fakes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `pytest` run from anywhere: make `tests.fakes` importable
    sys.path.insert(0, _ROOT)


from energy_hpc.telemetry.emulated.parts import VirtualClock  # noqa: E402


class FakeClock(VirtualClock):
    """A monotonic clock the test moves by hand (s): the emulated sensors' virtual clock."""

    def __init__(self, t: float = 1000.0) -> None:
        super().__init__(t)

    def advance(self, dt: float) -> None:
        self.sleep(dt)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
