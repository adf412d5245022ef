"""A deterministic made-up sensor for tests and demos. Every channel it makes is labelled synthetic.

Power on channel j at sensor time t (seconds since the sensor was opened) is
``base_W + j*step_W + amp_W * (1 + sin(2*pi*t/period_s)) / 2`` and the energy counter is its exact
integral, refreshed every ``update_period_s`` (held in between, as real counters are). Tests use the
closed form to check the analysis; nobody should mistake its numbers for a measurement.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from energy_hpc.telemetry.base import ChannelInfo, Reading, Scope, Sensor, SensorContext


def synthetic_power(t: float, base_W: float, amp_W: float, period_s: float) -> float:
    return base_W + amp_W * (1.0 + math.sin(2.0 * math.pi * t / period_s)) / 2.0


def synthetic_energy(t: float, base_W: float, amp_W: float, period_s: float) -> float:
    """Exact integral of :func:`synthetic_power` from 0 to ``t`` (J)."""
    w = 2.0 * math.pi / period_s
    return base_W * t + amp_W / 2.0 * (t + (1.0 - math.cos(w * t)) / w)


class SyntheticSensor(Sensor):
    backend = "synthetic"

    def __init__(
        self,
        n_channels: int = 1,
        base_W: float = 50.0,
        amp_W: float = 100.0,
        period_s: float = 1.0,
        step_W: float = 10.0,
        update_period_s: float = 0.0,
        device_prefix: str = "synthetic-gpu",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.t_open = clock()
        self.base = [base_W + j * step_W for j in range(n_channels)]
        self.amp_W, self.period_s, self.update_period_s = amp_W, period_s, update_period_s
        self._infos = [
            ChannelInfo(
                name=f"synthetic:{device_prefix}{j}",
                scope=Scope.GPU,
                device=f"{device_prefix}{j}",
                backend=self.backend,
                has_power=True,
                has_energy=True,
                update_period_s=update_period_s,
                synthetic=True,
                label="SYNTHETIC sensor (not a measurement)",
                note="deterministic test signal; not a measurement",
            )
            for j in range(n_channels)
        ]

    def channels(self) -> Sequence[ChannelInfo]:
        return self._infos

    def read(self) -> Reading:
        t = self.clock() - self.t_open
        tc = t if self.update_period_s <= 0 else math.floor(t / self.update_period_s) * self.update_period_s
        power = [synthetic_power(t, b, self.amp_W, self.period_s) for b in self.base]
        energy = [synthetic_energy(tc, b, self.amp_W, self.period_s) for b in self.base]
        return Reading(power=power, energy=energy)


def open_sensor(ctx: SensorContext) -> Sensor:
    opts = dict(ctx.options.get("synthetic", {}))
    opts.setdefault("device_prefix", f"synthetic-gpu{ctx.local_rank}.")
    return SyntheticSensor(**opts)
