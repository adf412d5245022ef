"""True power signals with an exact energy over any interval.

A :class:`Signal` is the power a device *really* draws, P(t) in W for t in seconds, and its exact
cumulative energy E(t) = integral of P from 0 to t in J. The emulated sensors turn a signal into what a
vendor library would report; the calibration compares the analysis's figures with E(b) - E(a).

The pieces, each with a closed-form integral:

- :class:`Steps`: a level that changes at given instants (idle between cases, busy inside windows:
  device-synchronised inference steps the power at each window's edges);
- :class:`GatedRipple`: a sinusoid at the rate of diffusion steps or decode tokens (5-50 Hz) that
  runs only inside given spans, restarting its phase at each span's start;
- :class:`Drift`: a slow sinusoidal drift (temperature, fan curves) over the whole run;
- :class:`Sum`: the sum of any of them (a node: GPUs + CPU + memory + the rest).

All methods take numpy arrays (or floats) and are vectorised.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

TWO_PI = 2.0 * math.pi


class Signal:
    """P(t) and its exact integral E(t) from t = 0."""

    def power(self, t: np.ndarray | float) -> np.ndarray:
        raise NotImplementedError

    def energy(self, t: np.ndarray | float) -> np.ndarray:
        raise NotImplementedError

    def mean_power(self, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
        """Exact mean power over [a, b] (P(a) where b == a)."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        d = b - a
        with np.errstate(divide="ignore", invalid="ignore"):
            m = (self.energy(b) - self.energy(a)) / d
        return np.where(d > 0, m, self.power(a))

    def __add__(self, other: Signal) -> Sum:
        return Sum((self, other))


@dataclass(frozen=True)
class Steps(Signal):
    """``levels[0]`` before ``edges[0]``, ``levels[i]`` on [edges[i-1], edges[i]), the last level after
    the last edge. ``edges`` must be increasing; ``len(levels) == len(edges) + 1``."""

    edges: np.ndarray
    levels: np.ndarray
    _cum: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        e, lv = np.asarray(self.edges, float), np.asarray(self.levels, float)
        if len(lv) != len(e) + 1:
            raise ValueError("Steps: need one more level than edges")
        if len(e) and (np.any(np.diff(e) < 0) or e[0] < 0):
            raise ValueError("Steps: edges must be non-negative and increasing")
        object.__setattr__(self, "edges", e)
        object.__setattr__(self, "levels", lv)
        # energy at each edge, from t = 0
        seg = np.diff(np.concatenate([[0.0], e])) * lv[:-1]
        object.__setattr__(self, "_cum", np.cumsum(seg))

    @classmethod
    def windows(cls, starts: ArrayLike, ends: ArrayLike, idle_W: float, busy_W: ArrayLike) -> Steps:
        """Idle outside the spans [starts[i], ends[i]), busy (one level, or one per span) inside."""
        s, e = np.asarray(starts, float), np.asarray(ends, float)
        busy = np.broadcast_to(np.asarray(busy_W, float), s.shape)
        edges = np.empty(2 * len(s))
        edges[0::2], edges[1::2] = s, e
        levels = np.full(len(edges) + 1, float(idle_W))
        levels[1::2] = busy
        return cls(edges, levels)

    def power(self, t: np.ndarray | float) -> np.ndarray:
        i = np.searchsorted(self.edges, np.asarray(t, float), side="right")
        return self.levels[i]

    def energy(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, float)
        i = np.searchsorted(self.edges, t, side="right")
        before = np.concatenate([[0.0], self._cum])[i]
        start = np.concatenate([[0.0], self.edges])[i]
        return before + (t - start) * self.levels[i]


@dataclass(frozen=True)
class GatedRipple(Signal):
    """``amp_W * sin(2 pi f (t - s_i) + phase_i)`` for t in [s_i, e_i), 0 outside. ``freq_hz`` and
    ``phase`` are one value or one per span."""

    starts: np.ndarray
    ends: np.ndarray
    amp_W: float
    freq_hz: np.ndarray | float
    phase: np.ndarray | float = 0.0
    _cum: np.ndarray = field(init=False, repr=False, compare=False)
    _freq: np.ndarray = field(init=False, repr=False, compare=False)  # freq_hz, one per span
    _phase: np.ndarray = field(init=False, repr=False, compare=False)  # phase, one per span

    def __post_init__(self) -> None:
        s, e = np.asarray(self.starts, float), np.asarray(self.ends, float)
        object.__setattr__(self, "starts", s)
        object.__setattr__(self, "ends", e)
        object.__setattr__(self, "_freq", np.broadcast_to(np.asarray(self.freq_hz, float), s.shape).copy())
        object.__setattr__(self, "_phase", np.broadcast_to(np.asarray(self.phase, float), s.shape).copy())
        object.__setattr__(self, "freq_hz", self._freq)
        object.__setattr__(self, "phase", self._phase)
        full = self._span_integral(np.arange(len(s)), e)
        object.__setattr__(self, "_cum", np.concatenate([[0.0], np.cumsum(full)]))

    def _span_integral(self, i: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Integral over [s_i, t] of span i's sinusoid (t inside the span)."""
        w = TWO_PI * self._freq[i]
        ph = self._phase[i]
        return self.amp_W / w * (np.cos(ph) - np.cos(w * (t - self.starts[i]) + ph))

    def power(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, float)
        if not len(self.starts):
            return np.zeros_like(t)
        i = np.clip(np.searchsorted(self.starts, t, side="right") - 1, 0, len(self.starts) - 1)
        inside = (t >= self.starts[i]) & (t < self.ends[i])
        v = self.amp_W * np.sin(TWO_PI * self._freq[i] * (t - self.starts[i]) + self._phase[i])
        return np.where(inside, v, 0.0)

    def energy(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, float)
        if not len(self.starts):
            return np.zeros_like(t)
        k = np.searchsorted(self.starts, t, side="right")  # spans started by t
        i = np.clip(k - 1, 0, len(self.starts) - 1)
        done = self._cum[np.maximum(k - 1, 0)]  # spans before span i, all complete
        part = np.where(k > 0, self._span_integral(i, np.minimum(t, self.ends[i])), 0.0)
        return done + part


@dataclass(frozen=True)
class Drift(Signal):
    """``amp_W * sin(2 pi t / period_s + phase)``: slow thermal drift (zero mean over a period)."""

    amp_W: float
    period_s: float
    phase: float = 0.0

    def power(self, t: np.ndarray | float) -> np.ndarray:
        return self.amp_W * np.sin(TWO_PI * np.asarray(t, float) / self.period_s + self.phase)

    def energy(self, t: np.ndarray | float) -> np.ndarray:
        w = TWO_PI / self.period_s
        return self.amp_W / w * (math.cos(self.phase) - np.cos(w * np.asarray(t, float) + self.phase))


@dataclass(frozen=True)
class Constant(Signal):
    level_W: float

    def power(self, t: np.ndarray | float) -> np.ndarray:
        return np.full(np.shape(t), float(self.level_W))

    def energy(self, t: np.ndarray | float) -> np.ndarray:
        return float(self.level_W) * np.asarray(t, float)


@dataclass(frozen=True)
class Sum(Signal):
    parts: tuple[Signal, ...]

    @property
    def live(self) -> bool:
        return any(getattr(p, "live", False) for p in self.parts)

    def leaves(self) -> list[Signal]:
        return [q for p in self.parts for q in (p.leaves() if isinstance(p, Sum) else [p])]

    def power(self, t: np.ndarray | float) -> np.ndarray:
        return sum((p.power(t) for p in self.parts), np.zeros(np.shape(t)))

    def energy(self, t: np.ndarray | float) -> np.ndarray:
        return sum((p.energy(t) for p in self.parts), np.zeros(np.shape(t)))


@dataclass(frozen=True)
class Workload:
    """A run's activity: busy spans (windows) on an idle background, as device-synchronised
    inference draws it: ``idle_W`` outside, ``busy_W`` inside, a ripple inside at ``ripple_hz``,
    and a drift everywhere. :meth:`signal` scales it to a device's power range."""

    starts: np.ndarray
    ends: np.ndarray
    ripple_hz: np.ndarray
    ripple_phase: np.ndarray
    drift_period_s: float = 600.0
    drift_phase: float = 0.0

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        n: int,
        length_s: float,
        *,
        gap_s: tuple[float, float] = (0.3, 1.5),
        ripple_hz: tuple[float, float] = (5.0, 50.0),
        t0: float = 1.0,
    ) -> Workload:
        """``n`` windows of ``length_s`` separated by idle gaps drawn from ``gap_s``; each window's
        ripple rate drawn from ``ripple_hz`` (uniform), its phase uniform."""
        gaps = rng.uniform(*gap_s, size=n)
        starts = t0 + np.cumsum(gaps) + length_s * np.arange(n)
        return cls(
            starts,
            starts + length_s,
            rng.uniform(*ripple_hz, size=n),
            rng.uniform(0, TWO_PI, size=n),
            drift_period_s=float(rng.uniform(300, 900)),
            drift_phase=float(rng.uniform(0, TWO_PI)),
        )

    @property
    def end(self) -> float:
        return float(self.ends[-1]) if len(self.ends) else 0.0

    def signal(self, idle_W: float, busy_W: float, ripple_W: float = 0.0, drift_W: float = 0.0) -> Signal:
        parts: list[Signal] = [Steps.windows(self.starts, self.ends, idle_W, busy_W)]
        if ripple_W:
            parts.append(GatedRipple(self.starts, self.ends, ripple_W, self.ripple_hz, self.ripple_phase))
        if drift_W:
            parts.append(Drift(drift_W, self.drift_period_s, self.drift_phase))
        return Sum(tuple(parts))


class ActivitySignal(Signal):
    """Power that follows a process's activity, for emulated sensors in a real run: ``idle_W`` plus
    ``(busy_W - idle_W)`` times the share of one core the process used since the last update (its
    scheduler run time, /proc/<pid>/schedstat), held between updates. Each :meth:`update` appends to
    the record; :meth:`energy` is exact for the record (a sum of held levels), so the emulated
    hardware integrates exactly what this signal drew. Times are seconds from ``t0``."""

    live = True

    def __init__(self, pid: int, idle_W: float, busy_W: float, t0: float, clock: Callable[[], float]) -> None:
        self.pid, self.idle_W, self.busy_W, self.t0, self.clock = pid, float(idle_W), float(busy_W), t0, clock
        self.times = [0.0]
        self.levels = [float(idle_W)]  # level from times[i] on
        self.cum = [0.0]  # energy at times[i]
        self._last_run = self._run_time()
        self._last_t = 0.0
        self._carry = 0.0  # run time beyond one core in the last interval, drawn in the next
        # what the device makes of the level the work asks for (its power cap and clocks:
        # hardware.settings_response); None: drawn as asked
        self.shape: Callable[[float], float] | None = None

    def _run_time(self) -> float:
        try:
            with open(f"/proc/{self.pid}/schedstat", "rb") as f:
                return int(f.read().split()[0]) * 1e-9
        except (OSError, ValueError, IndexError):
            try:
                with open(f"/proc/{self.pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, ValueError, IndexError):
                return math.nan

    def update(self) -> None:
        t = self.clock() - self.t0
        if t - self._last_t < 0.005:
            return
        run = self._run_time()
        # The kernel updates a running task's run time at its ticks, so one interval may show more than
        # a core and the next less: run time above one core is carried into the next interval, so the
        # signal draws for all the CPU time the process got, not for a clipped part of it.
        used = (run - self._last_run) + self._carry if math.isfinite(run) else 0.0
        share = min(max(used / (t - self._last_t), 0.0), 1.0)
        self._carry = max(used - share * (t - self._last_t), 0.0)
        level = self.idle_W + (self.busy_W - self.idle_W) * share
        if self.shape is not None:
            level = self.shape(level)
        self.cum.append(self.cum[-1] + self.levels[-1] * (t - self.times[-1]))
        self.times.append(t)
        self.levels.append(level)
        self._last_run, self._last_t = run, t

    def power(self, t: np.ndarray | float) -> np.ndarray:
        i = np.searchsorted(np.asarray(self.times), np.asarray(t, float), side="right") - 1
        return np.asarray(self.levels)[np.clip(i, 0, None)]

    def energy(self, t: np.ndarray | float) -> np.ndarray:
        times, cum, levels = np.asarray(self.times), np.asarray(self.cum), np.asarray(self.levels)
        t = np.asarray(t, float)
        i = np.clip(np.searchsorted(times, t, side="right") - 1, 0, None)
        return cum[i] + levels[i] * (t - times[i])
