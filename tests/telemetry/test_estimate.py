"""The CPU-time estimate: energy follows CPU time, power has no tick-sized spikes."""

from __future__ import annotations

import pytest

from energy_hpc.telemetry.estimate import CpuTimeEstimate


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_energy_is_cpu_time_times_watts_per_core() -> None:
    clock, cpu = _Clock(), [5.0]
    s = CpuTimeEstimate(watts_per_core=8.0, cpu_seconds=lambda: cpu[0], clock=clock)
    clock.t, cpu[0] = 2.0, 6.5
    r = s.read()
    assert r.energy[0] == pytest.approx(1.5 * 8.0)
    assert s.channels()[0].method.value == "estimate"


def test_power_from_10ms_ticks_is_smoothed_not_spiky() -> None:
    """Half a core busy, CPU time advancing one 10 ms tick every 20 ms, read every 10 ms."""
    clock, cpu = _Clock(), [0.0]
    s = CpuTimeEstimate(watts_per_core=10.0, cpu_seconds=lambda: cpu[0], clock=clock)
    powers = []
    for k in range(1, 101):
        clock.t = k * 0.01
        if k % 2 == 0:
            cpu[0] += 0.01
        powers.append(s.read().power[0])
    steady = powers[20:]
    assert max(steady) <= 6.5 and min(steady) >= 3.5  # around 5 W, never the 10 W / 0 W of one tick
