"""An estimate of this process's CPU energy: CPU time used x a per-core power figure.

This is a model, not a measurement, and every figure built on it is labelled ``estimate``. It is what
``auto`` falls back to when a node offers nothing measurable (no GPU library, no pm_counters, no
readable RAPL). The per-core figure is the user's to set (``[measure.sensor_options.estimate]
watts_per_core``); the default is a round number for a busy server core, not a property of this CPU.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence

from energy_hpc.telemetry.base import ChannelInfo, Reading, Scope, Sensor, SensorContext

DEFAULT_WATTS_PER_CORE = 10.0
POWER_SPAN_S = 0.1  # power is averaged over at least this much time (CPU time moves in 10 ms ticks)


def process_cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (s)."""
    t = os.times()
    return t.user + t.system


class CpuTimeEstimate(Sensor):
    backend = "estimate"

    def __init__(
        self,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        hostname: str = "localhost",
        cpu_seconds: Callable[[], float] = process_cpu_seconds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not watts_per_core > 0:
            raise ValueError(f"watts_per_core must be positive, got {watts_per_core}")
        self.watts_per_core = float(watts_per_core)
        self.cpu_seconds, self.clock = cpu_seconds, clock
        self.cpu0 = cpu_seconds()
        self.history: deque[tuple[float, float]] = deque([(clock(), self.cpu0)])
        # os.times() advances in clock ticks (usually 10 ms of CPU time)
        tick = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
        self._info = ChannelInfo(
            name=f"estimate:cpu:pid{os.getpid()}",
            scope=Scope.CPU,
            device=f"{hostname}:pid{os.getpid()}",
            backend=self.backend,
            has_power=True,
            has_energy=True,
            update_period_s=tick,
            energy_resolution_J=tick * self.watts_per_core,
            power_kind="average",
            estimate=True,
            label=f"ESTIMATE: process CPU time x {self.watts_per_core:g} W/core",
            note="estimate from process CPU time; not a measurement",
        )

    def channels(self) -> Sequence[ChannelInfo]:
        return [self._info]

    def read(self) -> Reading:
        now, cpu = self.clock(), self.cpu_seconds()
        # CPU time advances in clock ticks (10 ms), so a rate over one 10 ms read is 0 or a spike of
        # several hundred watts. Power is the rate over the last POWER_SPAN_S or more instead.
        history = self.history
        history.append((now, cpu))
        while len(history) > 2 and now - history[1][0] >= POWER_SPAN_S:
            history.popleft()
        t_then, cpu_then = history[0]
        dt = now - t_then
        power = (cpu - cpu_then) / dt * self.watts_per_core if dt > 0 else float("nan")
        return Reading(power=[power], energy=[(cpu - self.cpu0) * self.watts_per_core])


def open_sensor(ctx: SensorContext) -> Sensor:
    opts = ctx.options.get("estimate", {})
    return CpuTimeEstimate(
        watts_per_core=float(opts.get("watts_per_core", DEFAULT_WATTS_PER_CORE)), hostname=ctx.hostname
    )
