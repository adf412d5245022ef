"""Energy of one channel over a set of windows, by counter and by power integral, with uncertainty.

For a window [a, b] on a channel:

- **counter**: E(b) - E(a), the cumulative counter interpolated linearly at the edges;
- **integral**: the integral of the linearly interpolated power over [a, b] (exact for that model);
- **uncertainty** (one standard deviation, J): each edge is only known to within the longer of the
  sensor's update period and the local sample spacing, so each edge contributes
  ``P(edge) * max(update, spacing) / (2*sqrt(3))`` (a uniform error of that half-width); the counter's
  resolution adds ``r / sqrt(6)`` (two quantised readings); the integral adds, for every sample
  interval inside the window, ``dt * |dP| / (2*sqrt(3))`` (what linear interpolation may miss).
  Terms are independent and add in quadrature.

The figure a table uses is the counter where the channel has a usable one (the hardware integrates
every update, the sampler may miss some), else the integral. Both are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SQRT3 = math.sqrt(3.0)
SHORT_WINDOW_PERIODS = 3.0  # a window shorter than this many update periods is flagged as short


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


def _edge_spacing(t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Spacing of the two samples that bracket each x (inf outside the sampled range)."""
    if len(t) < 2:
        return np.full(len(x), np.inf)
    k = np.clip(np.searchsorted(t, x, side="right") - 1, 0, len(t) - 2)
    gap = t[k + 1] - t[k]
    gap[(x < t[0]) | (x > t[-1])] = np.inf
    return gap


def _cumulative_trapezoid(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    c = np.zeros(len(t))
    if len(t) > 1:
        c[1:] = np.cumsum(np.diff(t) * (p[1:] + p[:-1]) / 2.0)
    return c


def _integral_at(t: np.ndarray, p: np.ndarray, c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Integral of linearly interpolated power from t[0] to each x (NaN outside the samples)."""
    k = np.clip(np.searchsorted(t, x, side="right") - 1, 0, max(len(t) - 1, 0))
    px = np.interp(x, t, p)
    out = c[k] + (x - t[k]) * (p[k] + px) / 2.0
    out[(x < t[0]) | (x > t[-1])] = np.nan
    return out


def channel_window_energy(time: np.ndarray, power: np.ndarray, energy: np.ndarray, starts: np.ndarray,
                          ends: np.ndarray, *, update_period: float = 0.0, resolution: float = 0.0,
                          method_hint: str = "counter", counter_ok: bool = True) -> WindowEnergy:
    """Energy of one channel over windows [starts[i], ends[i]] (same time base as ``time``)."""
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    n = len(starts)
    nan = np.full(n, np.nan)
    counter, integral, unc, peak = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    method = np.full(n, "", dtype=object)

    pv = np.isfinite(time) & np.isfinite(power)
    tp, pp = time[pv], power[pv]
    if len(tp) >= 2:
        c = _cumulative_trapezoid(tp, pp)
        integral = _integral_at(tp, pp, c, ends) - _integral_at(tp, pp, c, starts)
        # what linear interpolation may miss inside the window
        dt, dp = np.diff(tp), np.abs(np.diff(pp))
        per_interval = (dt * dp / (2 * SQRT3)) ** 2
        cum = np.concatenate([[0.0], np.cumsum(per_interval)])
        ka = np.searchsorted(tp, starts, side="left")
        kb = np.searchsorted(tp, ends, side="right") - 1
        inside = np.where(kb > ka, cum[np.clip(kb, 0, len(cum) - 1)] - cum[np.clip(ka, 0, len(cum) - 1)], 0.0)
        edge_p = np.stack([np.interp(starts, tp, pp), np.interp(ends, tp, pp)])
        lo = np.searchsorted(tp, starts, side="left")
        hi = np.searchsorted(tp, ends, side="right")
        for i in range(n):
            inner = pp[lo[i]:hi[i]].max() if hi[i] > lo[i] else -np.inf
            peak[i] = max(inner, edge_p[0, i], edge_p[1, i])
    else:
        inside = np.zeros(n)
        edge_p = np.full((2, n), np.nan)

    ev = np.isfinite(time) & np.isfinite(energy)
    te, ee = time[ev], energy[ev]
    if len(te) >= 2 and counter_ok:
        counter = np.interp(ends, te, ee) - np.interp(starts, te, ee)
        counter[(starts < te[0]) | (ends > te[-1])] = np.nan

    use_counter = np.isfinite(counter)
    energy_J = np.where(use_counter, counter, integral)
    spacing_t = time[np.isfinite(time)]
    tau_a = np.maximum(update_period, _edge_spacing(spacing_t, starts))
    tau_b = np.maximum(update_period, _edge_spacing(spacing_t, ends))
    # edge power: sampled where there is power, else the window's mean power from the counter
    dur = ends - starts
    mean_p = np.where(dur > 0, energy_J / np.where(dur > 0, dur, 1), np.nan)
    pa = np.where(np.isfinite(edge_p[0]), edge_p[0], mean_p)
    pb = np.where(np.isfinite(edge_p[1]), edge_p[1], mean_p)
    edge_var = (np.abs(pa) * tau_a / (2 * SQRT3)) ** 2 + (np.abs(pb) * tau_b / (2 * SQRT3)) ** 2
    unc = np.sqrt(edge_var + np.where(use_counter, resolution ** 2 / 6.0, inside))
    unc[~np.isfinite(energy_J)] = np.nan

    for i in range(n):
        if not np.isfinite(energy_J[i]):
            method[i] = ""
        elif method_hint in ("synthetic", "estimate"):
            method[i] = method_hint
        else:
            method[i] = "counter" if use_counter[i] else "integral"
    short = dur < SHORT_WINDOW_PERIODS * np.maximum(update_period, 1e-12)
    return WindowEnergy(counter, integral, energy_J, unc, method, peak, short)
