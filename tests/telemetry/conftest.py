"""Shared bits for the telemetry tests: the stand-ins live in tests/fakes (importable as ``tests.fakes``:
the repository is on ``pythonpath`` in pyproject.toml)."""

from __future__ import annotations

import pytest

from energy_hpc.telemetry.emulated.parts import VirtualClock


class FakeClock(VirtualClock):
    """A monotonic clock the test moves by hand (s): the emulated sensors' virtual clock."""

    def __init__(self, t: float = 1000.0) -> None:
        super().__init__(t)

    def advance(self, dt: float) -> None:
        self.sleep(dt)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
