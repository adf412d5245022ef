"""Energy of one channel over a set of windows, by counter and by power integral, with uncertainty.

The channel's samples are met in chunks (:func:`reduce_channel`), so a channel of any length is reduced
in bounded memory; :func:`channel_window_energy` is the one-chunk convenience over in-memory arrays.
For a window [a, b]:

- **counter**: ``E(b) - E(a)``, the cumulative counter interpolated linearly at the edges;
- **integral**: the integral of the linearly interpolated power over [a, b] (trapezoid, exact for that
  model).

Both are kept. The figure a table uses is the counter where the channel has a usable one (the hardware
integrates every update; the sampler may miss some), else the integral.

Uncertainty (one standard deviation, J; independent terms add in quadrature -- docs/analysis.md derives
each):

- *edge timing*: a reading is only known to belong to an instant within the sensor's update period
  ``tau`` (a held counter or power value is stale by up to ``tau``); for the counter, also within the
  bracketing sample spacing ``s`` (where the samples are sparser than the updates, how the energy
  between two readings splits around the edge is unknown). Each edge contributes
  ``P(edge) * w / (2*sqrt(3))`` with ``w = max(tau, s)`` for the counter and ``w = tau`` for the
  integral (a uniform error of width ``w``). The staleness is partly common to both edges; its
  common part adds ``|P(b) - P(a)| * tau / (2*sqrt(3))``.
- *counter resolution*: two quantised readings, ``r / sqrt(6)``.
- *integral interior*: every sample interval inside the window adds ``dt * |dP| / (2*sqrt(3))`` (what
  linear interpolation may miss); a *gap* (an interval longer than ``GAP_FACTOR`` times the nominal
  spacing: failed reads, a stalled sampler) adds ``dt * max(|dP|, mean P) / (2*sqrt(3))``: over a gap
  the power is not known, its mean is taken as uncertain by its own size.

Counter hygiene per window (the counter is then dropped for that window, the integral used, and the
window's ``counter_fault`` says why): ``backwards`` (a step below ``-resolution`` inside the window),
``stuck`` (no step over a window of at least ``STUCK_MIN_PERIODS`` update periods while the integral
says more than ``STUCK_MIN_POWER_W`` was drawn), ``disagrees`` (counter and integral differ by more
than a factor ``DISAGREE_RATIO`` and by more than ``DISAGREE_SIGMA`` combined standard deviations).

A window is *short* when it lasts less than ``SHORT_WINDOW_PERIODS`` times the longer of the update
period and the nominal sample spacing: its figure is dominated by edge effects.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

import numpy as np

SQRT3 = math.sqrt(3.0)
SHORT_WINDOW_PERIODS = 3.0
GAP_FACTOR = 3.0
STUCK_MIN_PERIODS = 3.0
STUCK_MIN_POWER_W = 5.0
DISAGREE_RATIO = 3.0
DISAGREE_SIGMA = 5.0
DISAGREE_MIN_J = 1.0


class CounterFault:
    """Why a window's counter was dropped ('' = not dropped)."""

    CHANNEL = "channel"  # the telemetry side flagged the channel (note starts with 'counter-fault')
    BACKWARDS = "backwards"
    STUCK = "stuck"
    DISAGREES = "disagrees"


@dataclass
class WindowEnergy:
    """Per-window results for one channel (arrays aligned with the windows given)."""

    counter_J: np.ndarray
    integral_J: np.ndarray
    energy_J: np.ndarray  # the preferred figure
    uncertainty_J: np.ndarray
    method: np.ndarray  # per window: "counter", "integral", "estimate", "synthetic" or "" (no data)
    peak_W: np.ndarray
    short: np.ndarray  # bool
    counter_fault: np.ndarray  # object: '' or a CounterFault value
    max_gap_s: np.ndarray  # longest interval between valid power samples touching the window

    def take(self, idx: np.ndarray) -> "WindowEnergy":
        return WindowEnergy(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})


class Scratch:
    """Named float64 work arrays kept from chunk to chunk and from channel to channel of one
    reduction: a fresh 8 MB temporary per chunk costs its page faults every time (before, a third
    of a large reduction's CPU time went to the kernel). Give one to :func:`reduce_channel` for all
    the channels of a run; not to be shared between threads that reduce at the same time."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, n: int) -> np.ndarray:
        b = self._arrays.get(name)
        if b is None or len(b) < n:
            b = self._arrays[name] = np.empty(n)
        return b[:n]

    def float64(self, name: str, a: np.ndarray) -> np.ndarray:
        """``a`` as float64: itself if it is, else converted into the named work array."""
        a = np.asarray(a)
        if a.dtype == np.float64:
            return a
        out = self.get(name, len(a))
        np.copyto(out, a, casting="unsafe")
        return out


class _Stream:
    """One (time, value) series met chunk by chunk.

    At every edge point it keeps the interpolated value, the bracketing spacing and slope, and (when
    ``integrate``) the cumulative trapezoid integral and the cumulative interior variance. Per window
    it keeps the highest value, the most negative step and the longest interval.
    """

    def __init__(self, x: np.ndarray, starts: np.ndarray, ends: np.ndarray, integrate: bool,
                 scratch: Scratch | None = None, prefix: str = "") -> None:
        n, nw = len(x), len(starts)
        self.x, self.starts, self.ends, self.integrate = x, starts, ends, integrate
        self.val = np.full(n, np.nan)
        self.cum = np.full(n, np.nan)
        self.var = np.full(n, np.nan)
        self.spacing = np.full(n, np.inf)
        self.slope_mean = np.full(n, np.nan)  # mean of value over the bracketing interval / nothing
        self.wmax = np.full(nw, -np.inf)
        self.wmin_step = np.full(nw, np.inf)
        self.wgap = np.zeros(nw)
        self.first_t = math.nan
        self.last_t = math.nan
        self.nominal = math.nan  # median sample spacing, from the first chunk
        self._carry: tuple[float, float, float, float] | None = None  # t, y, cum, var at the last sample
        self._scratch = scratch or Scratch()
        self._prefix = prefix

    def _buf(self, name: str, n: int) -> np.ndarray:
        return self._scratch.get(self._prefix + name, n)

    def feed(self, t: np.ndarray, y: np.ndarray, dt: np.ndarray | None = None) -> None:
        """The next samples, in time order. A chunk may start with the last valid sample of the one
        before (readers overlap chunks by one sample so that nothing is copied to join them).
        ``dt``, when given, is ``diff(t)`` for a ``t`` already known finite and increasing (the
        power and the counter stream share it)."""
        if self._carry is not None:
            ct, cy, c0, v0 = self._carry
            if not (len(t) and t[0] == ct and y[0] == cy):
                t, y, dt = np.concatenate([[ct], t]), np.concatenate([[cy], y]), None
        else:
            c0 = v0 = 0.0
        # read-only sums tell whether every value is finite (the common case); only if not is the
        # mask built
        if not ((dt is not None or math.isfinite(float(np.add.reduce(t))))
                and math.isfinite(float(np.add.reduce(y)))):
            ok = np.isfinite(t)
            ok &= np.isfinite(y)
            t, y, dt = t[ok], y[ok], None
        if len(t) == 0:
            return
        if dt is None:
            dt = np.diff(t)
            if len(dt) and not dt.min() > 0:  # keep strictly increasing time (a repeated stamp is one reading)
                keep = np.concatenate([[True], dt > 0])
                t, y = t[keep], y[keep]
                dt = np.diff(t)
        if math.isnan(self.first_t):
            self.first_t = float(t[0])
        self.last_t = float(t[-1])
        if len(t) == 1:
            self._carry = (float(t[0]), float(y[0]), c0, v0)
            return
        dy = np.subtract(y[1:], y[:-1], out=self._buf("dy", len(y) - 1))
        if math.isnan(self.nominal):  # the first 65536 intervals tell the sampling period as well as all
            self.nominal = float(np.median(dt[:65536]))
        # edge points inside this segment, and the interval each falls in
        m = np.flatnonzero((self.x >= t[0]) & (self.x <= t[-1]) & np.isnan(self.val))
        k = np.clip(np.searchsorted(t, self.x[m], side="right") - 1, 0, len(t) - 2) if len(m) else m
        if self.integrate:
            cum_k, var_k, sig2_k, c_end, v_end = self._integrate(t, y, dt, dy, k, c0, v0)
        if len(m):
            xm = self.x[m]
            f = (xm - t[k]) / dt[k]
            val = y[k] + f * dy[k]
            self.val[m] = val
            self.spacing[m] = dt[k]
            self.slope_mean[m] = dy[k] / dt[k]
            if self.integrate:
                self.cum[m] = cum_k + (xm - t[k]) * (y[k] + val) / 2.0
                self.var[m] = var_k + f * sig2_k
        # windows touching this segment: power keeps peak and longest gap, the counter its lowest step
        w = np.flatnonzero((self.starts <= t[-1]) & (self.ends >= t[0]))
        if len(w):
            a, b = self.starts[w], self.ends[w]
            jlo = np.maximum(np.searchsorted(t, a, side="right") - 1, 0)
            jhi = np.minimum(np.searchsorted(t, b, side="left"), len(dt))
            if self.integrate:
                lo, hi = np.searchsorted(t, a, side="left"), np.searchsorted(t, b, side="right")
                self.wmax[w] = np.fmax(self.wmax[w], _range_reduce(np.maximum, y, lo, hi, -np.inf))
                self.wgap[w] = np.fmax(self.wgap[w], _range_reduce(np.maximum, dt, jlo, jhi, 0.0))
            else:
                self.wmin_step[w] = np.fmin(self.wmin_step[w], _range_reduce(np.minimum, dy, jlo, jhi, np.inf))
        self._carry = (float(t[-1]), float(y[-1]), c_end if self.integrate else 0.0,
                       v_end if self.integrate else 0.0)

    def _integrate(self, t: np.ndarray, y: np.ndarray, dt: np.ndarray, dy: np.ndarray, k: np.ndarray,
                   c0: float, v0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
        """The trapezoid integral and the interior variance, cumulative from the run's first sample,
        at the start of each interval ``k`` and at the last sample; and each interval ``k``'s own
        variance. Interval ``i`` adds ``dt * (y[i] + y[i+1]) / 2`` and ``(dt * spread)**2 / 12``,
        where spread is ``|dy|``, or over a gap the larger of ``|dy|`` and the mean power.

        Only the sums over the stretches between consecutive edges are needed: one ``reduceat`` per
        quantity, never a cumulative array of the whole chunk."""
        w = np.multiply(dt, dy, out=self._buf("w", len(dt)))  # dt * spread, sign aside (it is squared)
        if dt.max() > GAP_FACTOR * self.nominal:
            gap = np.flatnonzero(dt > GAP_FACTOR * self.nominal)
            mean = (y[gap] + y[gap + 1]) * 0.5
            w[gap] = dt[gap] * np.maximum(np.abs(dy[gap]), np.abs(mean))
        w *= w
        w *= 1.0 / 12.0  # each interval's variance
        seg = np.add(y[1:], y[:-1], out=self._buf("seg", len(dt)))
        seg *= 0.5
        seg *= dt  # each interval's energy
        idx = np.unique(np.append(k, 0))  # sorted stretch starts, all < len(dt)
        part_c, part_v = np.add.reduceat(seg, idx), np.add.reduceat(w, idx)
        cum = np.concatenate([[0.0], np.cumsum(part_c)]) + c0  # at each stretch start, then the end
        var = np.concatenate([[0.0], np.cumsum(part_v)]) + v0
        pos = np.searchsorted(idx, k)
        return cum[pos], var[pos], w[k], float(cum[-1]), float(var[-1])


def _range_reduce(op: np.ufunc, arr: np.ndarray, lo: np.ndarray, hi: np.ndarray, empty: float) -> np.ndarray:
    """``op.reduce(arr[lo[i]:hi[i]])`` for every i (``empty`` where the range is empty), in one
    ``reduceat`` call: the ranges may overlap and come in any order."""
    out = np.full(len(lo), empty)
    ok = hi > lo
    if not ok.any():
        return out
    lo, hi, n = lo[ok], hi[ok], len(arr)
    idx = np.empty(2 * len(lo), dtype=np.intp)
    idx[0::2] = lo
    idx[1::2] = np.minimum(hi, n - 1)  # reduceat's indices must be < n; the last element is added below
    r = op.reduceat(arr, idx)[0::2]
    tail = hi == n
    if tail.any():
        r[tail] = op(r[tail], arr[n - 1])
    out[ok] = r
    return out


def reduce_channel(chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], starts: np.ndarray,
                   ends: np.ndarray, *, update_period: float = 0.0, resolution: float = 0.0,
                   method_hint: str = "counter", counter_ok: bool = True,
                   check_counter: bool = True, scratch: Scratch | None = None) -> WindowEnergy:
    """Energy of one channel over windows ``[starts[i], ends[i]]``.

    ``chunks`` yields consecutive ``(time s, power W, energy J)`` blocks of the channel in time order
    (NaN where a value is missing). ``counter_ok=False`` ignores the counter (a channel the telemetry
    side flagged); ``check_counter`` applies the per-window hygiene rules of the module docstring.
    ``scratch`` (a :class:`Scratch`) lends work arrays; pass the same one for every channel of a run.
    """
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    scratch = scratch or Scratch()
    n = len(starts)
    x = np.concatenate([starts, ends])
    ps = _Stream(x, starts, ends, integrate=True, scratch=scratch, prefix="power.")
    es = _Stream(x, starts, ends, integrate=False, scratch=scratch, prefix="counter.")
    # The counter stream runs in a second thread beside the power stream: they share nothing, and
    # numpy releases the GIL inside its array loops, so on two or more cores the two overlap.
    pool = ThreadPoolExecutor(1) if counter_ok else None
    try:
        for t, p, e in chunks:
            t = scratch.float64("time", t)
            # the time axis's passes are shared when it is clean (finite, increasing): the usual case
            dt = None
            if len(t) > 1 and math.isfinite(float(np.add.reduce(t))):
                # a work array: both streams are done with it before the next chunk
                dt = np.subtract(t[1:], t[:-1], out=scratch.get("dt", len(t) - 1))
                if not dt.min() > 0:
                    dt = None
            pending = pool.submit(es.feed, t, scratch.float64("energy", e), dt) if pool else None
            ps.feed(t, scratch.float64("power", p), dt)
            if pending is not None:
                pending.result()
    finally:
        if pool:
            pool.shutdown()

    tau = max(float(update_period), 0.0)
    pa, pb = ps.val[:n], ps.val[n:]
    integral = ps.cum[n:] - ps.cum[:n]
    var_int = np.maximum(ps.var[n:] - ps.var[:n], 0.0)
    counter = es.val[n:] - es.val[:n]  # NaN outside the counter's range
    dur = ends - starts

    # edge power: sampled where there is power, else the counter's mean power across the bracket
    pa = np.where(np.isfinite(pa), pa, es.slope_mean[:n])
    pb = np.where(np.isfinite(pb), pb, es.slope_mean[n:])
    mean_p = np.where(dur > 0, np.where(np.isfinite(counter), counter, integral) / np.where(dur > 0, dur, 1),
                      np.nan)
    pa = np.abs(np.where(np.isfinite(pa), pa, mean_p))
    pb = np.abs(np.where(np.isfinite(pb), pb, mean_p))
    common = (np.abs(pb - pa) * tau / (2 * SQRT3)) ** 2
    wa_c = np.maximum(tau, np.where(np.isfinite(es.spacing[:n]), es.spacing[:n], 0.0))
    wb_c = np.maximum(tau, np.where(np.isfinite(es.spacing[n:]), es.spacing[n:], 0.0))
    var_counter = ((pa * wa_c) ** 2 + (pb * wb_c) ** 2) / 12.0 + common + resolution ** 2 / 6.0
    var_integral = ((pa * tau) ** 2 + (pb * tau) ** 2) / 12.0 + common + var_int

    fault = np.full(n, "", dtype=object)
    if not counter_ok:
        fault[:] = CounterFault.CHANNEL
    elif check_counter:
        both = np.isfinite(counter) & np.isfinite(integral)
        res = max(float(resolution), 0.0)
        backwards = np.isfinite(counter) & (es.wmin_step < -max(res, 1e-12))
        stuck = both & (counter <= res) & (dur >= STUCK_MIN_PERIODS * max(tau, es.nominal if
                                                                            math.isfinite(es.nominal) else 0.0)) \
            & (integral > STUCK_MIN_POWER_W * dur)
        sig = np.sqrt(var_counter + var_integral)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = counter / integral
        disagree = both & (np.maximum(counter, integral) >= DISAGREE_MIN_J) \
            & ((ratio > DISAGREE_RATIO) | (ratio < 1.0 / DISAGREE_RATIO) | ~np.isfinite(ratio)) \
            & (np.abs(counter - integral) > DISAGREE_SIGMA * sig)
        fault[disagree] = CounterFault.DISAGREES
        fault[stuck] = CounterFault.STUCK
        fault[backwards] = CounterFault.BACKWARDS

    use_counter = np.isfinite(counter) & (fault == "")
    energy_J = np.where(use_counter, counter, integral)
    unc = np.sqrt(np.where(use_counter, var_counter, var_integral))
    unc[~np.isfinite(energy_J)] = np.nan

    method = np.full(n, "", dtype=object)
    has = np.isfinite(energy_J)
    if method_hint in ("synthetic", "estimate"):
        method[has] = method_hint
    else:
        method[has & use_counter] = "counter"
        method[has & ~use_counter] = "integral"

    peak = np.fmax(ps.wmax, np.fmax(ps.val[:n], ps.val[n:]))
    peak[~np.isfinite(peak)] = np.nan
    scale = max(tau, ps.nominal if math.isfinite(ps.nominal) else 0.0, 1e-12)
    short = dur < SHORT_WINDOW_PERIODS * scale
    return WindowEnergy(counter, integral, energy_J, unc, method, peak, short, fault, ps.wgap)


def channel_window_energy(time: np.ndarray, power: np.ndarray, energy: np.ndarray, starts: np.ndarray,
                          ends: np.ndarray, *, update_period: float = 0.0, resolution: float = 0.0,
                          method_hint: str = "counter", counter_ok: bool = True,
                          check_counter: bool = True) -> WindowEnergy:
    """:func:`reduce_channel` over one channel held in memory (s, W, J)."""
    return reduce_channel([(np.asarray(time, float), np.asarray(power, float), np.asarray(energy, float))],
                          starts, ends, update_period=update_period, resolution=resolution,
                          method_hint=method_hint, counter_ok=counter_ok, check_counter=check_counter)
