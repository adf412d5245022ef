"""Energy of one channel over a set of windows, by counter and by power integral, with uncertainty.

The channel's samples are met in chunks (:func:`reduce_channel`), so a channel of any length is reduced
in bounded memory; :func:`channel_window_energy` is the one-chunk convenience over in-memory arrays.
For a window [a, b] on a sensor that refreshes every ``tau`` > 0 (docs/analysis.md derives each rule):

- readings become **refresh points** first (:class:`_Refreshes`): a held value is placed where the
  hardware refreshed it, not where it was read; a power reading at the middle of the span it averages;
- **counter**: what the counter gained from the refresh point before ``a`` to the one after ``b``, less
  the two outside stretches at the levels of the neighbouring refresh intervals (device-synchronised
  work steps the power at the edges; linear interpolation across that step is biased every time);
- **integral**: trapezoids between refresh points inside the window, each edge stretch held at the level
  of the nearest point inside.

Where ``tau`` is 0 (a reading exact at its read: estimate, synthetic) both are interpolated linearly.
Both are kept. The figure a table uses is the counter where the channel has a usable one (the hardware
integrates every update; the sampler may miss some), else the integral.

Uncertainty (one standard deviation, J): a random part, independent between windows (timing of the
refresh points, which cancels between a window's edges when the sensor's clock and the host's are
locked; a 50 ppm clock slide; read jitter; the change of the outside level beside each edge; counter
resolution; the integral's interior and gaps), and a one-sided part (``systematic_J``: the integral of a
short window may miss work the readings never saw) that adds linearly over windows
(:func:`combine_uncertainty`). ``benchmarks/calibration.py`` checks bias and coverage against emulated
sensors with an exact truth.

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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

SQRT3 = math.sqrt(3.0)
SQRT2 = math.sqrt(2.0)
# Two quartz clocks (a sensor's and the host's) differ by up to about 50 parts per million: the
# instants a sensor refreshes at slide past the sampler's ticks by that much of any span.
CLOCK_PPM = 50e-6
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
    # the uncertainty of each method split into a part independent between windows (adds in
    # quadrature over windows) and a one-sided part of the same sign in every window (adds linearly)
    counter_random_J: np.ndarray
    counter_systematic_J: np.ndarray
    integral_random_J: np.ndarray
    integral_systematic_J: np.ndarray
    systematic_J: np.ndarray  # the one-sided part of uncertainty_J (the figure's method)

    def random_J(self) -> np.ndarray:
        """The part of ``uncertainty_J`` that is independent between windows."""
        return np.sqrt(np.maximum(self.uncertainty_J**2 - np.square(self.systematic_J), 0.0))

    def take(self, idx: np.ndarray) -> WindowEnergy:
        return WindowEnergy(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})


def combine_uncertainty(random_J: np.ndarray | float, systematic_J: np.ndarray | float) -> np.ndarray:
    """One standard deviation from an independent part and a one-sided part. Over many windows the
    caller first adds the random parts in quadrature and the systematic parts linearly."""
    return np.hypot(random_J, systematic_J)


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


class _ReadClock:
    """The sampler's own interval and one read's timestamp jitter, from the first ``N`` intervals
    between reads (whatever the chunking)."""

    N = 65536

    def __init__(self) -> None:
        self.last = math.nan
        self.parts: list[np.ndarray] = []
        self.count = 0

    def feed(self, t: np.ndarray) -> None:
        if self.count >= self.N or not len(t):
            return
        t = t[np.isfinite(t)]
        if not len(t):
            return
        d = np.diff(np.concatenate([[self.last], t]) if math.isfinite(self.last) else t)
        d = d[d > 0][: self.N - self.count]
        self.parts.append(d)
        self.count += len(d)
        self.last = float(t[-1])

    def spacing_and_jitter(self) -> tuple[float, float]:
        d = np.concatenate(self.parts) if self.parts else np.zeros(0)
        if not len(d):
            return math.nan, 0.0
        spacing = float(np.median(d))
        # the spread of the intervals, gaps aside; each interval has two reads' jitter
        return spacing, float(np.std(d[d < 1.5 * spacing])) / SQRT2


class _Refreshes:
    """Held readings turned into refresh points, chunk by chunk.

    A sensor that refreshes a value every ``tau`` and is read more often shows each value several
    times; the reading is as old as the refresh, not as the read. A value that differs from the read
    before was refreshed in between: within ``min(spacing, tau)`` before the read that shows it, so it
    is placed at the middle of that span. Repeated readings are dropped, except that a value held for
    ``HELD_PERIODS`` refreshes or more is kept once per ``tau`` (a refresh that changed nothing: no
    power, a coarse counter, a steady whole-watt reading), placed ``tau`` before its read: its refresh
    was no earlier than that, so the point can only be early, never on the wrong side of a step that
    came after it. Where ``tau`` is 0 (a sensor exact at every read) nothing changes.
    """

    HELD_PERIODS = 2.0

    def __init__(self, tau: float) -> None:
        self.tau = max(float(tau), 0.0)
        self.prev: tuple[float, float] | None = None  # last raw sample seen
        self.t_change = math.nan  # read time of the last change
        self.q_prev = 0.0  # whole periods since the last change, at the last sample
        self.last_out: tuple[float, float] | None = None  # the last refresh point given out

    def __call__(self, t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.tau <= 0:
            return t, y
        if not (math.isfinite(float(np.add.reduce(t))) and math.isfinite(float(np.add.reduce(y)))):
            ok = np.isfinite(t) & np.isfinite(y)
            t, y = t[ok], y[ok]
        prev = self.prev
        first = prev is None
        if prev is not None:
            pt, py = prev
            if not (len(t) and t[0] == pt and y[0] == py):  # chunks usually overlap by one sample
                t, y = np.concatenate([[pt], t]), np.concatenate([[py], y])
        if len(t) == 0:
            return t, y
        if len(t) > 1 and not float(np.subtract(t[1:], t[:-1]).min()) > 0:
            keep = np.concatenate([[True], np.diff(t) > 0])  # a repeated stamp is one reading
            t, y = t[keep], y[keep]
        if first:
            self.t_change = float(t[0])
        tau = self.tau
        ci = np.flatnonzero(y[1:] != y[:-1]) + 1  # the reads that show a new value
        held = self._held(t, ci)
        # the output starts with the last point given before (or the first read, placed tau/2 early):
        # the stream that takes it then joins chunks without copying them
        lead = (t[0] - tau * 0.5, y[0]) if first else self.last_out
        k = 1 if lead is not None else 0
        if len(held):
            idx = np.concatenate([ci, held])
            idx = idx[np.argsort(idx, kind="stable")]
            is_change = np.isin(idx, ci, assume_unique=True)
        else:
            idx, is_change = ci, None
        times = np.empty(len(idx) + k)
        vals = np.empty(len(idx) + k)
        tt = times[k:]
        np.take(t, idx, out=tt)
        lag = np.subtract(tt, t[idx - 1])
        np.minimum(lag, tau, out=lag)
        lag *= 0.5
        if is_change is not None:
            lag[~is_change] = tau
        tt -= lag
        np.take(y, idx, out=vals[k:])
        if lead is not None:  # k == 1
            times[0], vals[0] = lead
        self.prev = (float(t[-1]), float(y[-1]))
        if len(times):
            self.last_out = (float(times[-1]), float(vals[-1]))
        if len(ci):
            self.t_change = float(t[ci[-1]])
        self.q_prev = (
            math.floor((float(t[-1]) - self.t_change) / tau) if len(t) > 1 or len(ci) else self.q_prev
        )
        return times, vals

    def _held(self, t: np.ndarray, ci: np.ndarray) -> np.ndarray:
        """Indices of the reads kept for a held value: in each stretch without a change, the first read
        of every whole period from the ``HELD_PERIODS``-th on (counted from the change that began it)."""
        tau, n = self.tau, len(t)
        bounds = np.concatenate([[0], ci, [n]])
        starts_t = np.concatenate([[self.t_change], t[ci]])  # each stretch's last change (read time)
        ends = bounds[1:] - 1  # each stretch's last read
        span = t[np.maximum(ends, 0)] - starts_t
        long = np.flatnonzero(span >= self.HELD_PERIODS * tau)
        if not len(long):
            return np.zeros(0, dtype=np.intp)
        lo, hi, t_lc = bounds[long], ends[long], starts_t[long]
        first = np.full(len(long), self.HELD_PERIODS)
        first[long == 0] = max(self.HELD_PERIODS, self.q_prev + 1)  # periods kept in the chunk before
        last = np.floor((t[hi] - t_lc) / tau)
        count = np.maximum(last - first + 1, 0).astype(np.intp)
        if not count.sum():
            return np.zeros(0, dtype=np.intp)
        which = np.repeat(np.arange(len(long)), count)
        offset = np.arange(len(which)) - np.repeat(np.cumsum(count) - count, count)
        j = np.searchsorted(t, t_lc[which] + tau * (first[which] + offset), side="left")
        ok = (j <= hi[which]) & ((j > lo[which]) | ((long[which] == 0) & (j >= 1)))
        return np.unique(j[ok])


class _Stream:
    """One (time, value) series met chunk by chunk.

    At every edge point it keeps the interpolated value, the bracketing spacing and slope, and (when
    ``integrate``) the cumulative trapezoid integral and the cumulative interior variance. Per window
    it keeps the highest value, the most negative step and the longest interval.
    """

    def __init__(
        self,
        x: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        integrate: bool,
        scratch: Scratch | None = None,
        prefix: str = "",
        nominal_hint: Callable[[], float] | None = None,
    ) -> None:
        n, nw = len(x), len(starts)
        self._nominal_hint = nominal_hint
        self.n_starts = nw  # x is starts then ends
        # per edge: the reading before (t, y) and after it, and the mean rate of the interval before
        # the one holding the edge and of the interval after it (NaN where there is none)
        self.lo_t, self.lo_y = np.full(n, np.nan), np.full(n, np.nan)
        self.hi_t, self.hi_y = np.full(n, np.nan), np.full(n, np.nan)
        self.prev_rate, self.next_rate = np.full(n, np.nan), np.full(n, np.nan)
        self.prev_rate2, self.next_rate2 = np.full(n, np.nan), np.full(n, np.nan)
        self._last_rates = (math.nan, math.nan)  # the last and the one before, of the chunk before
        self._pending = np.zeros(0, dtype=np.intp)  # edges still waiting for the interval after theirs
        self._pending2 = np.zeros(0, dtype=np.intp)  # ... for the second interval after theirs

        self.x, self.starts, self.ends, self.integrate = x, starts, ends, integrate
        self.val = np.full(n, np.nan)
        self.cum = np.full(n, np.nan)
        self.var = np.full(n, np.nan)
        self.spacing = np.full(n, np.inf)
        self.slope_mean = np.full(n, np.nan)  # mean of value over the bracketing interval / nothing
        self.wmax = np.full(nw, -np.inf)
        self.wmin_step = np.full(nw, np.inf)
        self.wgap = np.zeros(nw)
        self.wmin_dt = np.full(nw, np.inf)  # shortest and longest interval inside each window
        self.first_t = math.nan
        self.last_t = math.nan
        self.ymax = -math.inf  # the highest value met
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
        if not (
            (dt is not None or math.isfinite(float(np.add.reduce(t))))
            and math.isfinite(float(np.add.reduce(y)))
        ):
            ok = np.isfinite(t)
            ok &= np.isfinite(y)
            t, y, dt = t[ok], y[ok], None
        if len(t) == 0:
            return
        if dt is None:
            dt = np.diff(t)
            if (
                len(dt) and not dt.min() > 0
            ):  # keep strictly increasing time (a repeated stamp is one reading)
                keep = np.concatenate([[True], dt > 0])
                t, y = t[keep], y[keep]
                dt = np.diff(t)
        if math.isnan(self.first_t):
            self.first_t = float(t[0])
        self.ymax = max(self.ymax, float(np.max(y)))
        self.last_t = float(t[-1])
        if len(t) == 1:
            self._carry = (float(t[0]), float(y[0]), c0, v0)
            return
        dy = np.subtract(y[1:], y[:-1], out=self._buf("dy", len(y) - 1))
        if math.isnan(self.nominal):  # the first 65536 intervals tell the sampling period as well as all
            hint = self._nominal_hint() if self._nominal_hint else math.nan
            self.nominal = hint if math.isfinite(hint) else float(np.median(dt[:65536]))

        def rate(i: np.ndarray | int) -> np.ndarray:  # mean rate of intervals i (only where asked)
            return dy[i] / dt[i]

        if len(self._pending2):
            self.next_rate2[self._pending2] = rate(0)
        self._pending2 = self._pending2[:0]
        if len(self._pending):
            self.next_rate[self._pending] = rate(0)
            if len(dt) > 1:
                self.next_rate2[self._pending] = rate(1)
            else:  # a chunk of one interval: their second interval after is in the next chunk
                self._pending2 = self._pending
        self._pending = self._pending[:0]

        # edge points inside this segment, and the interval each falls in
        m = np.flatnonzero((self.x >= t[0]) & (self.x <= t[-1]) & np.isnan(self.val))
        # a start edge's interval begins at or before it, an end edge's ends at or after it (an edge
        # on a reading takes that reading on the window's side)
        if len(m):
            xm_ = self.x[m]
            k = (
                np.where(
                    m < self.n_starts,
                    np.searchsorted(t, xm_, side="right"),
                    np.searchsorted(t, xm_, side="left"),
                )
                - 1
            )
            k = np.clip(k, 0, len(t) - 2)
        else:
            k = m
        if self.integrate:
            cum_k, var_k, sig2_k, c_end, v_end = self._integrate(t, y, dt, dy, k, c0, v0)
        if len(m):
            xm = self.x[m]
            f = (xm - t[k]) / dt[k]
            val = y[k] + f * dy[k]
            self.val[m] = val
            self.spacing[m] = dt[k]
            self.slope_mean[m] = rate(k)
            self.lo_t[m], self.lo_y[m], self.hi_t[m], self.hi_y[m] = t[k], y[k], t[k + 1], y[k + 1]
            l1, l2 = self._last_rates
            self.prev_rate[m] = np.where(k >= 1, rate(np.maximum(k - 1, 0)), l1)
            self.prev_rate2[m] = np.where(k >= 2, rate(np.maximum(k - 2, 0)), np.where(k == 1, l1, l2))
            nd = len(dt)
            self.next_rate[m] = np.where(k + 1 < nd, rate(np.minimum(k + 1, nd - 1)), np.nan)
            self.next_rate2[m] = np.where(k + 2 < nd, rate(np.minimum(k + 2, nd - 1)), np.nan)
            self._pending = m[k + 1 >= nd]
            self._pending2 = np.concatenate([self._pending2, m[k + 2 == nd]])
            if self.integrate:
                # Each edge holds the reading on its window's side: a window's power steps at its
                # edges (device-synchronised work starts and stops there), so the part of the interval
                # inside a start edge is at the level read after it, inside an end edge at the level
                # read before it (linear interpolation across the step would be biased every time).
                start = m < self.n_starts
                seg_k = dt[k] * (y[k] + y[k + 1]) * 0.5
                self.cum[m] = np.where(
                    start, cum_k + seg_k - (t[k + 1] - xm) * y[k + 1], cum_k + (xm - t[k]) * y[k]
                )
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
                self.wmin_step[w] = np.fmin(
                    self.wmin_step[w], _range_reduce(np.minimum, dy, jlo, jhi, np.inf)
                )
                self.wmin_dt[w] = np.fmin(self.wmin_dt[w], _range_reduce(np.minimum, dt, jlo, jhi, np.inf))
                self.wgap[w] = np.fmax(self.wgap[w], _range_reduce(np.maximum, dt, jlo, jhi, 0.0))
        self._last_rates = (float(rate(-1)), float(rate(-2)) if len(dt) > 1 else self._last_rates[0])
        self._carry = (
            float(t[-1]),
            float(y[-1]),
            c_end if self.integrate else 0.0,
            v_end if self.integrate else 0.0,
        )

    def _integrate(
        self,
        t: np.ndarray,
        y: np.ndarray,
        dt: np.ndarray,
        dy: np.ndarray,
        k: np.ndarray,
        c0: float,
        v0: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
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


def _counter_windows(
    es: _Stream, starts: np.ndarray, ends: np.ndarray, tau: float, raw_spacing: float, raw_jitter: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each window's counter energy and its variance (resolution aside), from the refresh points
    around its edges.

    A window's power steps at its edges, so the energy between the reading before a start edge and
    the edge is taken at the level of the interval before (``prev_rate``), and between an end edge
    and the reading after it at the level of the interval after (``next_rate``): the window keeps
    what the counter gained in between, less those two outside stretches. A step at the edge is then
    exact; what remains is random:

    - the refresh instants are known within ``w`` (the sampling interval, or the update period where
      that is shorter). The sensor's clock and the sampler's drift apart by parts per million, so the
      offset is the same at both edges of a window: it cancels where the outside levels are equal
      and leaves ``|post - pre| * w / sqrt(12)``. Where the refresh instants slid past a sampler tick
      inside the window, or a refresh or a sampler tick came late (the intervals between refreshes
      inside the window then differ by more than ``w/2``), the two offsets are independent and as far
      apart as those intervals differ: ``sqrt(pre**2 + post**2) * max(w, range) / sqrt(12)``;
    - each read's own timestamp jitter (``raw_jitter``, 1 sigma) at each edge;
    - the outside level may differ from the stretch it stands for by as much as the level changes
      from one interval to the next next to the edge.
    """
    n = len(starts)
    lo_t, lo_y, hi_t, hi_y = es.lo_t[:n], es.lo_y[:n], es.hi_t[n:], es.hi_y[n:]
    own_a, own_b = es.slope_mean[:n], es.slope_mean[n:]
    pre = np.maximum(np.where(np.isfinite(es.prev_rate[:n]), es.prev_rate[:n], own_a), 0.0)
    post = np.maximum(np.where(np.isfinite(es.next_rate[n:]), es.next_rate[n:], own_b), 0.0)
    out_a, out_b = starts - lo_t, hi_t - ends  # the outside stretches
    counter = (hi_y - post * out_b) - (lo_y + pre * out_a)
    w = min(raw_spacing, tau) if tau > 0 and math.isfinite(raw_spacing) else (tau if tau > 0 else 0.0)
    # A reading placed within w/2 of an edge may in truth have been refreshed on the window's side
    # of it: the counter then already holds (start) or still lacks (end) some of the window's energy
    # beyond its level outside. Its expected size is removed; its spread is added below.
    dur = np.maximum(ends - starts, 1e-12)
    inside = np.maximum(counter / dur, 0.0)
    if w > 0:
        ha, hb = np.clip(w / 2 - out_a, 0.0, None), np.clip(w / 2 - out_b, 0.0, None)
        step_a, step_b = inside - pre, inside - post
        counter = counter + step_a * ha**2 / (2 * w) + step_b * hb**2 / (2 * w)
        var_cross = step_a**2 * (ha**3 / (3 * w) - ha**4 / (4 * w * w)) + step_b**2 * (
            hb**3 / (3 * w) - hb**4 / (4 * w * w)
        )
    else:
        var_cross = 0.0
    counter = np.clip(counter, 0.0, np.maximum(hi_y - lo_y, 0.0))
    # how much the level changes from one interval to the next, next to each edge
    da = np.abs(es.prev_rate[:n] - es.prev_rate2[:n])
    da = np.where(np.isfinite(da), da, np.abs(pre - own_a))
    db = np.abs(es.next_rate[n:] - es.next_rate2[n:])
    db = np.where(np.isfinite(db), db, np.abs(post - own_b))
    # the refreshes slide against the sampler by up to CLOCK_PPM of the window's length between its
    # edges (below the detection step w this is not seen in the data)
    slide = np.minimum(CLOCK_PPM * (ends - starts), w)
    spread = np.where(np.isfinite(es.wgap - es.wmin_dt), es.wgap - es.wmin_dt, 0.0)
    slid = spread > 0.5 * w
    timing = np.where(slid, (pre**2 + post**2) * np.maximum(w, spread) ** 2, (post - pre) ** 2 * w * w) / 12.0
    var = (
        timing
        + (np.maximum(pre, post) * slide) ** 2 / 3.0
        + ((pre**2 + post**2) * raw_jitter**2)
        + (da * out_a) ** 2
        + (db * out_b) ** 2
        + var_cross
    )
    return counter, var


def _integral_edges(
    ps: _Stream,
    starts: np.ndarray,
    ends: np.ndarray,
    tau: float,
    raw_spacing: float,
    raw_jitter: float,
    pa: np.ndarray,
    pb: np.ndarray,
) -> np.ndarray:
    """The variance of the integral's two edge stretches (from a start edge to the first point inside,
    from the last point inside to an end edge, each held at that point's level): the level may change
    over the stretch as much as it changes from that point to the next one inward, and the points are
    placed within ``w`` (same treatment of the placement as for the counter)."""
    n = len(starts)
    w = min(raw_spacing, tau) if math.isfinite(raw_spacing) else tau
    step = max(tau, raw_spacing) if math.isfinite(raw_spacing) else tau  # between two points
    in_a = np.where(np.isfinite(ps.hi_t[:n]), ps.hi_t[:n] - starts, 0.0)
    in_b = np.where(np.isfinite(ps.lo_t[n:]), ends - ps.lo_t[n:], 0.0)
    da = np.abs(np.where(np.isfinite(ps.next_rate[:n]), ps.next_rate[:n], 0.0)) * step
    db = np.abs(np.where(np.isfinite(ps.prev_rate[n:]), ps.prev_rate[n:], 0.0)) * step
    return ((da * in_a) ** 2 + (db * in_b) ** 2) / 3.0 + (pa**2 + pb**2) * (w * w / 12.0 + raw_jitter**2)


def reduce_channel(
    chunks: Iterable[tuple[np.ndarray, ...]],
    starts: np.ndarray,
    ends: np.ndarray,
    *,
    update_period: float = 0.0,
    resolution: float = 0.0,
    method_hint: str = "counter",
    counter_ok: bool = True,
    check_counter: bool = True,
    scratch: Scratch | None = None,
    power_window: float = 0.0,
) -> WindowEnergy:
    """Energy of one channel over windows ``[starts[i], ends[i]]``.

    ``chunks`` yields consecutive ``(time s, power W, energy J)`` blocks of the channel in time order
    (NaN where a value is missing). ``counter_ok=False`` ignores the counter (a channel the telemetry
    side flagged); ``check_counter`` applies the per-window hygiene rules of the module docstring.
    ``scratch`` (a :class:`Scratch`) lends work arrays; pass the same one for every channel of a run.
    ``update_period`` (s) is how often the sensor refreshes its values: above 0, held readings become
    refresh points; ``power_window`` (s) is the span a power reading averages, ending at its refresh.
    """
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    scratch = scratch or Scratch()
    n = len(starts)
    x = np.concatenate([starts, ends])
    tau = max(float(update_period), 0.0)
    raw = _ReadClock()
    # held readings come as refresh points: their spacing is the update period or the sampler's,
    # whichever is longer (a gap is several of those)
    hint = (lambda: max(tau, raw.spacing_and_jitter()[0])) if tau > 0 else None
    ps = _Stream(x, starts, ends, integrate=True, scratch=scratch, prefix="power.", nominal_hint=hint)
    es = _Stream(x, starts, ends, integrate=False, scratch=scratch, prefix="counter.", nominal_hint=hint)
    # The counter stream runs in a second thread beside the power stream: they share nothing, and
    # numpy releases the GIL inside its array loops, so on two or more cores the two overlap.
    pool = ThreadPoolExecutor(1) if counter_ok else None
    held_e, held_p = _Refreshes(tau), _Refreshes(tau)

    def feed_counter(t: np.ndarray, e: np.ndarray, dt: np.ndarray | None) -> None:
        if tau > 0:
            es.feed(*held_e(t, e))
        else:
            es.feed(t, e, dt)

    try:
        for t, p, e in chunks:
            t = scratch.float64("time", t)
            if tau > 0:
                raw.feed(t)
            # the time axis's passes are shared when it is clean (finite, increasing): the usual case
            dt = None
            if len(t) > 1 and math.isfinite(float(np.add.reduce(t))):
                # a work array: both streams are done with it before the next chunk
                dt = np.subtract(t[1:], t[:-1], out=scratch.get("dt", len(t) - 1))
                if not dt.min() > 0:
                    dt = None
            pending = pool.submit(feed_counter, t, scratch.float64("energy", e), dt) if pool else None
            if tau > 0:
                tp, pp = held_p(t, scratch.float64("power", p))
                if power_window > 0:  # a reading stands for the middle of the span it averages
                    tp = tp - 0.5 * power_window
                ps.feed(tp, pp)
            else:
                ps.feed(t, scratch.float64("power", p), dt)
            if pending is not None:
                pending.result()
    finally:
        if pool:
            pool.shutdown()

    raw_spacing, raw_jitter = raw.spacing_and_jitter()
    pa, pb = ps.val[:n], ps.val[n:]
    integral = ps.cum[n:] - ps.cum[:n]
    var_int = np.maximum(ps.var[n:] - ps.var[:n], 0.0)
    dur = ends - starts
    if tau > 0:
        counter, var_counter_edges = _counter_windows(es, starts, ends, tau, raw_spacing, raw_jitter)
    else:  # a counter exact at every read: linear interpolation between reads
        counter = es.val[n:] - es.val[:n]
        var_counter_edges = None

    # edge power: sampled where there is power, else the counter's mean power across the bracket
    pa = np.where(np.isfinite(pa), pa, es.slope_mean[:n])
    pb = np.where(np.isfinite(pb), pb, es.slope_mean[n:])
    mean_p = np.where(
        dur > 0, np.where(np.isfinite(counter), counter, integral) / np.where(dur > 0, dur, 1), np.nan
    )
    pa = np.abs(np.where(np.isfinite(pa), pa, mean_p))
    pb = np.abs(np.where(np.isfinite(pb), pb, mean_p))
    common = (np.abs(pb - pa) * tau / (2 * SQRT3)) ** 2
    wa_c = np.maximum(tau, np.where(np.isfinite(es.spacing[:n]), es.spacing[:n], 0.0))
    wb_c = np.maximum(tau, np.where(np.isfinite(es.spacing[n:]), es.spacing[n:], 0.0))
    if var_counter_edges is None:
        wa_c = np.where(np.isfinite(es.spacing[:n]), es.spacing[:n], 0.0)
        wb_c = np.where(np.isfinite(es.spacing[n:]), es.spacing[n:], 0.0)
        var_counter_edges = ((pa * wa_c) ** 2 + (pb * wb_c) ** 2) / 12.0 + common
    var_counter = var_counter_edges + resolution**2 / 6.0
    if tau > 0:
        var_integral = _integral_edges(ps, starts, ends, tau, raw_spacing, raw_jitter, pa, pb) + var_int
    else:  # readings exact at each read: the edges are known to the sample spacing (term of var_int)
        var_integral = common + var_int

    peak = np.fmax(ps.wmax, np.fmax(ps.val[:n], ps.val[n:]))
    peak[~np.isfinite(peak)] = np.nan
    # the reads' own spacing (first 65536 intervals whatever the chunking) where refreshes are placed
    spacing = raw_spacing if tau > 0 and math.isfinite(raw_spacing) else ps.nominal
    scale = max(tau, spacing if math.isfinite(spacing) else 0.0, 1e-12)
    short = dur < SHORT_WINDOW_PERIODS * scale
    sys_integral = np.zeros(n)
    if tau > 0 and short.any() and math.isfinite(ps.ymax):
        # A window a few refreshes long may hold work the power readings never saw (NVML reads 25 ms
        # of every 100): its power is known only to lie between nothing and the most the channel drew.
        # What is missed is missed in every such window alike: a one-sided (systematic) part.
        sys_integral = np.where(short, max(ps.ymax, 0.0) * dur / SQRT3, 0.0)
    sys_counter = np.zeros(n)
    if tau > 0 and short.any():
        # Inside a refresh interval or two, only the step-at-the-edges rule places the work in the
        # window; where the device's activity does not start and stop at the edges (work just before
        # or after them, inside the same interval), the figure lies between that rule's and linear
        # interpolation's: that span is a one-sided uncertainty of such windows.
        linear = es.val[n:] - es.val[:n]
        gap = np.abs(counter - linear)
        sys_counter = np.where(short & np.isfinite(gap), gap, 0.0) / SQRT3

    fault = np.full(n, "", dtype=object)
    if not counter_ok:
        fault[:] = CounterFault.CHANNEL
    elif check_counter:
        both = np.isfinite(counter) & np.isfinite(integral)
        res = max(float(resolution), 0.0)
        backwards = np.isfinite(counter) & (es.wmin_step < -max(res, 1e-12))
        stuck = (
            both
            & (counter <= res)
            & (dur >= STUCK_MIN_PERIODS * max(tau, es.nominal if math.isfinite(es.nominal) else 0.0))
            & (integral > STUCK_MIN_POWER_W * dur)
        )
        sig = np.sqrt(var_counter + sys_counter**2 + var_integral + sys_integral**2)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = counter / integral
        disagree = (
            both
            & (np.maximum(counter, integral) >= DISAGREE_MIN_J)
            & ((ratio > DISAGREE_RATIO) | (ratio < 1.0 / DISAGREE_RATIO) | ~np.isfinite(ratio))
            & (np.abs(counter - integral) > DISAGREE_SIGMA * sig)
        )
        fault[disagree] = CounterFault.DISAGREES
        fault[stuck] = CounterFault.STUCK
        fault[backwards] = CounterFault.BACKWARDS

    use_counter = np.isfinite(counter) & (fault == "")
    energy_J = np.where(use_counter, counter, integral)
    unc = np.sqrt(np.where(use_counter, var_counter + sys_counter**2, var_integral + sys_integral**2))
    unc[~np.isfinite(energy_J)] = np.nan

    method = np.full(n, "", dtype=object)
    has = np.isfinite(energy_J)
    if method_hint in ("synthetic", "estimate"):
        method[has] = method_hint
    else:
        method[has & use_counter] = "counter"
        method[has & ~use_counter] = "integral"

    return WindowEnergy(
        counter,
        integral,
        energy_J,
        unc,
        method,
        peak,
        short,
        fault,
        ps.wgap,
        np.sqrt(var_counter),
        sys_counter,
        np.sqrt(var_integral),
        sys_integral,
        np.where(use_counter, sys_counter, sys_integral),
    )


def channel_window_energy(
    time: np.ndarray,
    power: np.ndarray,
    energy: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    *,
    update_period: float = 0.0,
    resolution: float = 0.0,
    method_hint: str = "counter",
    counter_ok: bool = True,
    check_counter: bool = True,
) -> WindowEnergy:
    """:func:`reduce_channel` over one channel held in memory (s, W, J)."""
    return reduce_channel(
        [(np.asarray(time, float), np.asarray(power, float), np.asarray(energy, float))],
        starts,
        ends,
        update_period=update_period,
        resolution=resolution,
        method_hint=method_hint,
        counter_ok=counter_ok,
        check_counter=check_counter,
    )
