"""Counter hygiene: deciding when a hardware energy counter can be trusted.

Energy counters are the strongest figure we have, but real ones misbehave: an MI250X secondary GCD
reads 0 for ever, amdsmi has reported counters that disagree with the power sensor by orders of
magnitude (ROCm/amdsmi#38), a Cray blade controller restart resets pm_counters, and RAPL counters
wrap at ``max_energy_range_uj``. The rules here are applied live by the backends (a short probe at
open, then every read) and offline by the analysis on a recorded trace (:func:`check_trace`):

* **backwards** -- the counter decreased by more than its resolution (a reset, a glitch).
* **stuck** -- the counter did not move for ``stuck_after_s`` while power stayed above
  ``min_power_W`` (energy must grow when power is drawn).
* **disagrees** -- over at least ``window_s`` the counter's increase and the power integral differ
  by more than a factor ``ratio_limit`` (with a floor of ``min_energy_J`` so idle noise is ignored).

A faulted channel keeps its power, reports NaN energy from the fault on, carries the fault in
``ChannelInfo.counter_fault`` and a sentence in ``note``, and its windows are integrated from power
(the method becomes ``integral``). A warning says so once. A RAPL wrap is arithmetic, not a fault:
:class:`Unwrapper` adds the range back and nothing is flagged.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from energy_hpc.telemetry.base import ChannelInfo

log = logging.getLogger(__name__)

NAN = math.nan


class CounterFault(str, Enum):
    NONE = ""
    BACKWARDS = "backwards"
    STUCK = "stuck"
    DISAGREES = "disagrees"


@dataclass(frozen=True)
class HygieneConfig:
    """Thresholds. Defaults are loose on purpose: they catch broken counters, not noisy ones."""

    stuck_after_s: float = 2.0  # s without a counter step while power > min_power_W
    min_power_W: float = 5.0  # below this a still counter is plausible (idle, coarse resolution)
    window_s: float = 5.0  # s of history before counter and power integral are compared
    ratio_limit: float = 3.0  # counter/integral outside [1/limit, limit] is a fault
    min_energy_J: float = 50.0  # do not judge ratios on less energy than this (idle, startup)

    @classmethod
    def from_options(cls, opts: Mapping[str, Any] | None) -> HygieneConfig:
        """Build from ``[measure.sensor_options.<backend>.hygiene]``; unknown keys are an error."""
        opts = dict(opts or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(opts) - names
        if unknown:
            raise ValueError(f"unknown hygiene option(s) {sorted(unknown)}; known: {sorted(names)}")
        return cls(**{k: float(v) for k, v in opts.items()})


class Unwrapper:
    """Turns a counter that wraps at ``range_`` into a monotonic one (same units)."""

    def __init__(self, range_: float) -> None:
        self.range = float(range_)
        self.offset = 0.0
        self.last: float | None = None
        self.wraps = 0

    def __call__(self, raw: float) -> float:
        if self.last is not None and raw < self.last and self.range > 0:
            # One wrap per read interval at most: a package at 500 W needs ~9 min to wrap a 2^38 uJ range.
            self.offset += self.range
            self.wraps += 1
        self.last = raw
        return raw + self.offset


class CounterWatch:
    """Watches one channel's counter against its power; :meth:`update` returns the energy to keep."""

    def __init__(
        self,
        name: str,
        resolution_J: float = 0.0,
        config: HygieneConfig | None = None,
        power_is_independent: bool = True,
    ) -> None:
        self.name = name
        self.config = config or HygieneConfig()
        self.resolution = max(float(resolution_J), 1e-9)
        # RAPL-style channels derive power from the counter itself: nothing to compare against.
        self.power_is_independent = power_is_independent
        self.fault = CounterFault.NONE
        self.note = ""
        self._last_t = NAN
        self._last_e = NAN
        self._last_p = NAN
        self._moved_t = NAN  # last time the counter changed
        self._still_powered_s = 0.0  # time the counter has stood still while power was high
        self._win_t0 = NAN
        self._win_e0 = NAN
        self._win_int = 0.0

    def _set_fault(self, fault: CounterFault, t: float, why: str) -> None:
        self.fault = fault
        # the analysis recognises a flagged channel by this prefix (and by ChannelInfo.counter_fault)
        self.note = (
            f"counter-fault: {fault.value}: energy counter distrusted ({why}) at t={t:.3f} s; "
            "windows use the power integral"
        )
        log.warning("%s: %s", self.name, self.note)

    def update(self, t: float, power_W: float, energy_J: float) -> float:
        """Feed one sample (s, W, J cumulative); returns ``energy_J`` or NaN once faulted."""
        if self.fault is not CounterFault.NONE:
            return NAN
        if math.isnan(energy_J):
            return energy_J
        cfg = self.config
        if math.isnan(self._last_e):
            self._last_t, self._last_e, self._last_p = t, energy_J, power_W
            self._moved_t = t
            self._win_t0, self._win_e0, self._win_int = t, energy_J, 0.0
            return energy_J
        dt = t - self._last_t
        de = energy_J - self._last_e
        if de < -self.resolution:
            self._set_fault(CounterFault.BACKWARDS, t, f"fell by {-de:.6g} J")
            return NAN
        powered = self.power_is_independent and not math.isnan(power_W) and power_W > cfg.min_power_W
        if de > 0:
            self._moved_t = t
            self._still_powered_s = 0.0
        elif powered and dt > 0:
            self._still_powered_s += dt
            if self._still_powered_s >= cfg.stuck_after_s:
                self._set_fault(
                    CounterFault.STUCK,
                    t,
                    f"no change for {self._still_powered_s:.2f} s while power was {power_W:.1f} W",
                )
                return NAN
        if self.power_is_independent and dt > 0:
            p0 = self._last_p if not math.isnan(self._last_p) else power_W
            if not (math.isnan(p0) or math.isnan(power_W)):
                self._win_int += 0.5 * (p0 + power_W) * dt
            span = t - self._win_t0
            if span >= cfg.window_s:
                counted = energy_J - self._win_e0
                integral = self._win_int
                if max(counted, integral) >= cfg.min_energy_J:
                    ratio = (counted / integral) if integral > 0 else math.inf
                    if not (1.0 / cfg.ratio_limit <= ratio <= cfg.ratio_limit):
                        self._set_fault(
                            CounterFault.DISAGREES,
                            t,
                            f"counter {counted:.1f} J vs power integral {integral:.1f} J over {span:.1f} s",
                        )
                        return NAN
                self._win_t0, self._win_e0, self._win_int = t, energy_J, 0.0
        self._last_t, self._last_e, self._last_p = t, energy_J, power_W
        return energy_J


class CounterGuard:
    """The watches of one sensor's channels, indexed like its channels.

    Backends build one from their :class:`ChannelInfo` list, pass every read through :meth:`apply`
    and report :meth:`infos` from ``channels()`` so that a fault reaches the file's metadata.
    """

    def __init__(
        self,
        infos: Sequence[ChannelInfo],
        config: HygieneConfig | None = None,
        power_is_independent: bool = True,
    ) -> None:
        self.watches: list[CounterWatch | None] = [
            CounterWatch(i.name, i.energy_resolution_J, config, power_is_independent)
            if i.has_energy
            else None
            for i in infos
        ]

    def apply(self, t: float, power: Sequence[float], energy: Sequence[float]) -> list[float]:
        return [
            e if w is None else w.update(t, p, e) for w, p, e in zip(self.watches, power, energy, strict=True)
        ]

    def infos(self, infos: Sequence[ChannelInfo]) -> list[ChannelInfo]:
        out = []
        for info, w in zip(infos, self.watches, strict=True):
            if w is not None and w.fault is not CounterFault.NONE and not info.counter_fault:
                note = f"{info.note}; {w.note}" if info.note else w.note
                info = dataclasses.replace(info, counter_fault=w.fault.value, note=note)
            out.append(info)
        return out

    @property
    def faults(self) -> dict[str, CounterFault]:
        return {w.name: w.fault for w in self.watches if w is not None and w.fault is not CounterFault.NONE}


@dataclass(frozen=True)
class TraceVerdict:
    """What :func:`check_trace` found: the fault (or none), the first sample it applies to, why."""

    fault: CounterFault
    first_bad: int  # index of the first distrusted sample; len(time) when none
    note: str

    @property
    def ok(self) -> bool:
        return self.fault is CounterFault.NONE


def check_trace(
    time: np.ndarray,
    power: np.ndarray,
    energy: np.ndarray,
    resolution_J: float = 0.0,
    config: HygieneConfig | None = None,
    name: str = "trace",
) -> TraceVerdict:
    """Apply the live rules to a recorded channel (s, W, J); for the analysis of old files.

    Power is taken as independent of the counter; pass NaN power for RAPL-like channels.
    """
    watch = CounterWatch(name, resolution_J, config)
    for i, (t, p, e) in enumerate(
        zip(np.asarray(time, float), np.asarray(power, float), np.asarray(energy, float), strict=True)
    ):
        watch.update(float(t), float(p), float(e))
        if watch.fault is not CounterFault.NONE:
            return TraceVerdict(watch.fault, i, watch.note)
    return TraceVerdict(CounterFault.NONE, len(time), "")


def startup_probe(
    read: Callable[[], object],
    reads: int = 3,
    spacing_s: float = 0.1,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Read a freshly opened sensor a few times so that a counter already broken at start-up (one
    that runs backwards, or reads 0 while power is drawn) is flagged before the first window.

    ``read`` is the sensor's own ``read`` (which feeds its :class:`CounterGuard`); what it returns
    is thrown away. ``reads=0`` skips the probe (tests, and users who open many sensors at once).
    """
    import time as _time

    sleep = sleep or _time.sleep
    for k in range(max(int(reads), 0)):
        if k:
            sleep(spacing_s)
        read()
