"""On a real NVIDIA GPU: how NVML's energy counter and power fields behave, and whether the emulated
H100 (energy_hpc.telemetry.emulated) behaves the same way.

Run by hand on a node with an NVIDIA GPU (H100/H200), torch with CUDA and nvidia-ml-py::

    python benchmarks/gpu_check.py --out gpu_check.json            # about 2 minutes
    python benchmarks/gpu_check.py --out gpu_check.json --quick    # a shorter smoke run (~40 s)

It prints a Markdown summary on stdout, progress on stderr, writes every figure to ``--out`` (JSON)
and the raw series beside it (``.npz``). Steps:

1. **Counter refresh period**: ``nvmlDeviceGetTotalEnergyConsumption`` read every ~1 ms for a few
   seconds under a steady matmul load; the instants at which the value changes give the refresh
   period (median, spread, and a fit of the change instants to a regular grid).
2. **Instant power field refresh**: ``NVML_FI_DEV_POWER_INSTANT`` (186), read in the same loop, by
   its values and by its own timestamps (us).
3. **Counter vs integral** on a 10 s matrix-multiply loop, sampled by the project's own path
   (``nvml.open_sensor`` + ``Sampler`` at 10 ms) and reduced by ``analysis.energy.reduce_channel``.
4. The same on a **diffusion loop** (a Stable Diffusion 1.5-size UNet with random weights and a DDIM
   scheduler), skipped with a reason when diffusers is missing.
5. **Emulated vs real**: a square-wave load (busy/idle ~1.5 s at random phases) shows how much of each
   refresh period the instant field covers (its effective window) and the average field's window;
   with steps 1-2 they are compared with the emulated H100 model's parameters.

Without an NVIDIA GPU (no pynvml, NVML fails to start, no CUDA in torch) it exits with status 2 and
one line on stderr.

The analysis is in small pure functions (``refresh_period``, ``step_fractions``, ``fit_ramp``, ...)
tested against the emulated H100 in ``tests/test_gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIELD_POWER_AVERAGE = 185  # NVML_FI_DEV_POWER_AVERAGE
FIELD_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT
NO_GPU_EXIT = 2

# reduce_channel settings for NVML (what nvml.py declares for its channel)
UPDATE_PERIOD_S = 0.1
RESOLUTION_J = 1e-3
POWER_WINDOW_S = 0.025


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# pure analysis
# ---------------------------------------------------------------------------------------------


def summarize(x: Sequence[float] | np.ndarray) -> dict[str, float]:
    """n, median, mean, std, MAD, p05, p95, min, max of the finite values (NaN when none)."""
    a = np.asarray(x, float)
    a = a[np.isfinite(a)]
    if not len(a):
        return dict.fromkeys(("median", "mean", "std", "mad", "p05", "p95", "min", "max"), math.nan) | {
            "n": 0
        }
    med = float(np.median(a))
    return {
        "n": len(a),
        "median": med,
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "mad": float(np.median(np.abs(a - med))),
        "p05": float(np.percentile(a, 5)),
        "p95": float(np.percentile(a, 95)),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def change_instants(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a held value changes in a dense (time, value) series: the midpoint between the last read
    that showed the old value and the first that showed the new one, and half that bracket (the
    uncertainty of the instant). Reads with a non-finite value are ignored."""
    t, v = np.asarray(t, float), np.asarray(v, float)
    ok = np.isfinite(t) & np.isfinite(v)
    t, v = t[ok], v[ok]
    if len(t) < 2:
        return np.empty(0), np.empty(0)
    i = np.flatnonzero(v[1:] != v[:-1]) + 1
    return (t[i - 1] + t[i]) / 2, (t[i] - t[i - 1]) / 2


def grid_fit(instants: np.ndarray, period_guess: float) -> dict[str, float]:
    """Fit ``instants`` to a regular grid ``phase + n * period``. Each gap is given ``round(gap /
    period)`` grid steps (0: a second change within one refresh, dropped; 2+: refreshes that showed no
    change), then a least-squares line through (n, instant); twice, the second time with the fitted
    period. Returns period, phase (the first instant's place on the grid), residual jitter (std),
    missed refreshes and extra changes."""
    x = np.sort(np.asarray(instants, float))
    out = {
        "period_s": math.nan,
        "phase_s": math.nan,
        "jitter_s": math.nan,
        "missed": 0,
        "extra": 0,
        "n_fit": 0,
    }
    if len(x) < 3 or not period_guess > 0:
        return out
    p = float(period_guess)
    for _ in range(2):
        k = np.rint(np.diff(x) / p).astype(np.int64)
        keep = np.concatenate([[True], k > 0])
        xs = x[keep]
        n = np.concatenate([[0], np.cumsum(k[k > 0])])
        if len(xs) < 3 or n[-1] == 0:
            return out
        slope, icpt = np.polyfit(n, xs, 1)
        p = float(slope)
    resid = xs - (icpt + slope * n)
    out.update(
        period_s=float(slope),
        phase_s=float(icpt),
        jitter_s=float(resid.std(ddof=2)) if len(xs) > 2 else 0.0,
        missed=int(np.sum(np.maximum(np.diff(n) - 1, 0))),
        extra=int(np.sum(k == 0)),
        n_fit=len(xs),
    )
    return out


def period_from_instants(instants: np.ndarray) -> dict[str, Any]:
    """Refresh period from the instants a value was refreshed at (change instants, or a sensor's own
    timestamps): the intervals' summary and the grid fit (:func:`grid_fit`). The fit starts from the
    candidate period (the median of the intervals below 1.5 x their lower quartile, or their 10th to
    90th percentiles) that explains the instants best: least jitter per period plus missed and extra
    changes per change (robust to refreshes that repeat a value and to values that change twice)."""
    x = np.asarray(instants, float)
    x = np.unique(x[np.isfinite(x)])
    d = np.diff(x)
    res: dict[str, Any] = {"n_refreshes": len(x), "intervals": summarize(d)}
    if len(d) < 2:
        res.update(period_guess_s=math.nan, fit=grid_fit(x, math.nan))
        return res
    q = float(np.percentile(d, 25))
    cands = [float(np.median(d[d < 1.5 * q]))] if q > 0 and np.any(d < 1.5 * q) else []
    cands += [float(c) for c in np.percentile(d, [50, 10, 25, 75, 90])]
    best = None
    for c in cands:
        if not c > 0:
            continue
        f = grid_fit(x, c)
        if not math.isfinite(f["period_s"]) or not f["period_s"] > 0:
            continue
        score = f["jitter_s"] / f["period_s"] + (f["missed"] + f["extra"]) / len(x)
        if best is None or score < best[0] - 1e-9:
            best = (score, c, f)
    if best is None:
        res.update(period_guess_s=math.nan, fit=grid_fit(x, math.nan))
    else:
        res.update(period_guess_s=best[1], fit=best[2])
    return res


def refresh_period(t: np.ndarray, v: np.ndarray) -> dict[str, Any]:
    """Refresh period of a held value read densely: :func:`period_from_instants` of the instants its
    value changed at, with how precisely each is known (half the read spacing around it)."""
    inst, half = change_instants(t, v)
    res = period_from_instants(inst)
    res["instant_halfwidth_s"] = float(np.median(half)) if len(half) else math.nan
    return res


def stamp_behaviour(t: np.ndarray, v: np.ndarray, stamp_s: np.ndarray) -> dict[str, Any]:
    """How a field's value relates to its own timestamp (both read at host times ``t``, the stamp
    already on the host clock): the fraction of value changes that come with a new timestamp (1: the
    value is refreshed exactly when the stamp is), the fraction of new timestamps that come with a new
    value, and how late the host first sees each new stamp (the time of the first read that shows it
    minus the stamp: between 0 and one read spacing when the stamp is the instant of the refresh)."""
    t, v, s = (np.asarray(a, float) for a in (t, v, stamp_s))
    ok = np.isfinite(t) & np.isfinite(v) & np.isfinite(s)
    t, v, s = t[ok], v[ok], s[ok]
    if len(t) < 2:
        return {
            "value_changes_with_stamp": math.nan,
            "stamps_with_value_change": math.nan,
            "seen_lag": summarize([]),
        }
    dv, ds = v[1:] != v[:-1], s[1:] != s[:-1]
    i = np.flatnonzero(ds) + 1
    lag = t[i] - s[i]
    return {
        "value_changes_with_stamp": float(np.mean(ds[dv])) if dv.any() else math.nan,
        "stamps_with_value_change": float(np.mean(dv[ds])) if ds.any() else math.nan,
        "seen_lag": summarize(lag),
    }


def phase_offset(a: dict[str, float], b: dict[str, float]) -> float:
    """Where grid ``b`` refreshes relative to grid ``a`` (``grid_fit`` results on one clock), in
    [0, a's period); NaN when the periods differ by more than 2 % (no fixed relation)."""
    pa, pb = a.get("period_s", math.nan), b.get("period_s", math.nan)
    if not (pa > 0 and pb > 0) or abs(pa - pb) > 0.02 * pa:
        return math.nan
    return float((b["phase_s"] - a["phase_s"]) % pa)


def step_fractions(
    t: np.ndarray, v: np.ndarray, ups: Sequence[float], downs: Sequence[float], settle_s: float
) -> dict[str, np.ndarray]:
    """Readings around the edges of a square-wave load, as fractions of each step.

    ``t``: when each reading was refreshed (host time), ``v`` its value; ``ups[i]`` < ``downs[i]`` <
    ``ups[i+1]`` the edges. For each edge the levels before and after are the medians of the readings
    more than ``settle_s`` after the previous edge (and before this one), and more than ``settle_s``
    after this edge (and before the next); each reading in [edge, edge + settle_s) gets ``d`` (its
    delay after the edge) and ``f`` (how much of the step it shows, 0 to 1). Returns arrays d, f and
    ``up`` (bool: a rising edge)."""
    t, v = np.asarray(t, float), np.asarray(v, float)
    ok = np.isfinite(t) & np.isfinite(v)
    t, v = t[ok], v[ok]
    edges = sorted([(float(x), True) for x in ups] + [(float(x), False) for x in downs])
    ds, fs, us = [], [], []
    for j, (e, up) in enumerate(edges):
        prev = edges[j - 1][0] if j else -math.inf
        nxt = edges[j + 1][0] if j + 1 < len(edges) else math.inf
        before = v[(t >= prev + settle_s) & (t < e)]
        after = v[(t >= e + settle_s) & (t < nxt)]
        if not len(before) or not len(after):
            continue
        lo, hi = float(np.median(before)), float(np.median(after))
        if abs(hi - lo) <= 0:
            continue
        sel = (t >= e) & (t < min(e + settle_s, nxt))
        ds.append(t[sel] - e)
        fs.append((v[sel] - lo) / (hi - lo))
        us.append(np.full(int(sel.sum()), up))

    def cat(xs: list[np.ndarray], dt: type) -> np.ndarray:
        return np.concatenate(xs) if xs else np.empty(0, dt)

    return {"d": cat(ds, float), "f": cat(fs, float), "up": cat(us, bool)}


def fit_ramp(d: np.ndarray, f: np.ndarray, lo: float = 0.1, hi: float = 0.9) -> dict[str, float]:
    """Fit ``f = clip((d - lag) / window, 0, 1)`` (a reading that averages the last ``window`` seconds
    before its refresh instant, seen ``lag`` after it) to step fractions: a Theil-Sen line
    ``d = lag + window * f`` through the partial readings (``lo`` < f < ``hi``). NaN with fewer than 3
    partial readings (the window is then shorter than the data resolve, or no edge fell inside one)."""
    d, f = np.asarray(d, float), np.asarray(f, float)
    m = np.isfinite(d) & np.isfinite(f) & (f > lo) & (f < hi)
    x, y = f[m], d[m]
    out = {"window_s": math.nan, "lag_s": math.nan, "n_partial": int(m.sum()), "residual_s": math.nan}
    if len(x) < 3:
        return out
    i, j = np.triu_indices(len(x), 1)
    dx = x[j] - x[i]
    good = np.abs(dx) > 1e-6
    if not good.any():
        return out
    w = float(np.median((y[j] - y[i])[good] / dx[good]))
    lag = float(np.median(y - w * x))
    out.update(window_s=w, lag_s=lag, residual_s=float(np.median(np.abs(y - lag - w * x))))
    return out


def first_seen(
    t: np.ndarray, v: np.ndarray, stamp_s: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The refreshes of a held value as the host saw them: each new reading (a new value, or a new
    timestamp where ``stamp_s`` is given: a refresh that repeats the value) at the midpoint between the
    read before it and the first read that showed it."""
    t, v = np.asarray(t, float), np.asarray(v, float)
    s = np.asarray(stamp_s, float) if stamp_s is not None else np.zeros_like(v)
    ok = np.isfinite(t) & np.isfinite(v)
    t, v, s = t[ok], v[ok], s[ok]
    new = (v[1:] != v[:-1]) | ((s[1:] != s[:-1]) & np.isfinite(s[1:]) & np.isfinite(s[:-1]))
    i = np.flatnonzero(new) + 1
    return (t[i - 1] + t[i]) / 2, v[i]


def distinct_by_stamp(v: np.ndarray, stamp_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The readings of a field at its own distinct timestamps (the first read of each stamp)."""
    v, s = np.asarray(v, float), np.asarray(stamp_s, float)
    ok = np.isfinite(v) & np.isfinite(s)
    v, s = v[ok], s[ok]
    if not len(s):
        return np.empty(0), np.empty(0)
    i = np.concatenate([[0], np.flatnonzero(s[1:] != s[:-1]) + 1])
    return s[i], v[i]


def window_fits(
    t: np.ndarray,
    v: np.ndarray,
    stamp_s: np.ndarray | None,
    ups: Sequence[float],
    downs: Sequence[float],
    settle_s: float,
) -> dict[str, Any]:
    """:func:`fit_ramp` of a power field over square-wave edges, placing each refresh at the host time
    it was first seen and (when given) at the field's own timestamp; rising, falling and both."""
    out: dict[str, Any] = {}
    series = {"seen": first_seen(t, v, stamp_s)}
    if stamp_s is not None and np.isfinite(np.asarray(stamp_s, float)).any():
        series["stamp"] = distinct_by_stamp(v, stamp_s)
    for how, (tr, vr) in series.items():
        sf = step_fractions(tr, vr, ups, downs, settle_s)
        out[how] = {
            "both": fit_ramp(sf["d"], sf["f"]),
            "up": fit_ramp(sf["d"][sf["up"]], sf["f"][sf["up"]]),
            "down": fit_ramp(sf["d"][~sf["up"]], sf["f"][~sf["up"]]),
        }
    return out


def counter_vs_integral(
    t: np.ndarray, p: np.ndarray, e: np.ndarray, starts: Sequence[float], ends: Sequence[float]
) -> list[dict[str, Any]]:
    """Window energy by counter and by power integral through the project's reduction
    (``reduce_channel`` with NVML's update period 0.1 s, 1 mJ resolution, 25 ms power window): both
    figures, their ratio, each one's uncertainty (1 sigma) and the difference in combined sigmas."""
    from energy_hpc.analysis.energy import reduce_channel

    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    we = reduce_channel(
        [(np.asarray(t, float), np.asarray(p, float), np.asarray(e, float))],
        starts,
        ends,
        update_period=UPDATE_PERIOD_S,
        resolution=RESOLUTION_J,
        power_window=POWER_WINDOW_S,
    )

    def unc(kind: str, i: int) -> float:
        r = getattr(we, f"{kind}_random_J", None)
        s = getattr(we, f"{kind}_systematic_J", None)
        r = float(r[i]) if r is not None else math.nan
        s = float(s[i]) if s is not None else 0.0
        return math.hypot(r, s)

    rows = []
    for i in range(len(starts)):
        c, g = float(we.counter_J[i]), float(we.integral_J[i])
        uc, ug = unc("counter", i), unc("integral", i)
        sig = math.hypot(uc, ug)
        rows.append(
            {
                "start": float(starts[i]),
                "end": float(ends[i]),
                "duration_s": float(ends[i] - starts[i]),
                "counter_J": c,
                "integral_J": g,
                "ratio_counter_over_integral": c / g if g else math.nan,
                "counter_unc_J": uc,
                "integral_unc_J": ug,
                "difference_J": c - g,
                "difference_sigma": (c - g) / sig if sig > 0 else math.nan,
                "energy_J": float(we.energy_J[i]),
                "uncertainty_J": float(we.uncertainty_J[i]),
                "method": str(we.method[i]),
                "mean_power_W": c / float(ends[i] - starts[i]) if ends[i] > starts[i] else math.nan,
                "short": bool(we.short[i]),
                "counter_fault": str(we.counter_fault[i]),
            }
        )
    return rows


@dataclass(frozen=True)
class Tolerance:
    rel: float
    abs: float

    def agrees(self, emulated: float, measured: float) -> bool | None:
        if not (math.isfinite(emulated) and math.isfinite(measured)):
            return None
        return abs(measured - emulated) <= max(self.rel * abs(emulated), self.abs)


# (key, label, tolerance): what the emulated H100 model assumes and how close a measurement must be
COMPARED = (
    ("counter_period_s", "energy counter refresh period (s)", Tolerance(0.10, 0.003)),
    ("power_period_s", "instant power field refresh period (s)", Tolerance(0.10, 0.003)),
    ("power_window_s", "instant power field window: part of each period measured (s)", Tolerance(0.4, 0.005)),
    ("average_window_s", "average power field window (s)", Tolerance(0.2, 0.05)),
    ("stamp_lag_s", "instant field timestamp lag (host first sees - stamp) (s)", Tolerance(0.0, 0.005)),
    (
        "value_changes_with_stamp",
        "instant value changes only with a new timestamp (fraction)",
        Tolerance(0.0, 0.05),
    ),
)


def emulated_h100_parameters(seed: int = 0) -> dict[str, float]:
    """The emulated H100's sensor parameters, read off the model that ``open_part('h100', ...)`` builds
    (the refresh periods carry the model's few-ppm clock drift, rounded off here)."""
    from energy_hpc.telemetry.emulated.parts import VirtualClock, duty_cycle, open_part

    s = open_part(
        "h100",
        duty_cycle(hours=0.01),
        clock=VirtualClock(),
        rng=np.random.default_rng(seed),
        options={"probe_reads": 0},
    )
    m = s.model
    try:
        return {
            "counter_period_s": round(float(m.counter.period_s), 4),
            "power_period_s": round(float(m.power.period_s), 4),
            "power_window_s": float(m.power_window_s),
            "average_window_s": float(m.average_window_s),
            "stamp_lag_s": 0.0,
            "value_changes_with_stamp": 1.0,
        }
    finally:
        s.close()


def compare(emulated: dict[str, float], measured: dict[str, float]) -> list[dict[str, Any]]:
    """One row per compared parameter: emulated value, measured value, whether they agree (None: not
    measured)."""
    rows = []
    for key, label, tol in COMPARED:
        e, m = float(emulated.get(key, math.nan)), float(measured.get(key, math.nan))
        rows.append(
            {
                "key": key,
                "parameter": label,
                "emulated": e,
                "measured": m,
                "agrees": tol.agrees(e, m),
                "tolerance": f"±max({tol.rel:.0%}, {tol.abs:g})",
            }
        )
    return rows


def measured_parameters(poll_res: dict[str, Any], square: dict[str, Any] | None) -> dict[str, float]:
    """The figures :func:`compare` needs, from the analysis of steps 1, 2 and 5."""

    def fit_period(r: dict[str, Any] | None) -> float:
        if not r:
            return math.nan
        p = r.get("fit", {}).get("period_s", math.nan)
        return p if math.isfinite(p) else r.get("intervals", {}).get("median", math.nan)

    out = {
        "counter_period_s": fit_period(poll_res.get("counter")),
        # by value changes (under load every refresh brings a new value), else by the field's stamps
        "power_period_s": fit_period(poll_res.get("instant_values"))
        if poll_res.get("instant_values", {}).get("n_refreshes", 0) > 10
        else fit_period(poll_res.get("instant_stamps")),
        "stamp_lag_s": poll_res.get("instant_stamp_behaviour", {})
        .get("seen_lag", {})
        .get("median", math.nan),
        "value_changes_with_stamp": poll_res.get("instant_stamp_behaviour", {}).get(
            "value_changes_with_stamp", math.nan
        ),
    }
    if square:
        out["power_window_s"] = (
            square.get("instant", {}).get("seen", {}).get("up", {}).get("window_s", math.nan)
        )
        out["average_window_s"] = (
            square.get("average", {}).get("seen", {}).get("up", {}).get("window_s", math.nan)
        )
    return out


def analyse_poll(series: dict[str, np.ndarray]) -> dict[str, Any]:
    """Steps 1-2 from a dense poll: ``t`` (host s), ``energy_mJ``, ``inst_mW``, ``inst_stamp_s`` (host
    clock), ``avg_mW``, ``avg_stamp_s``."""
    t = series["t"]
    res: dict[str, Any] = {
        "reads": len(t),
        "read_spacing": summarize(np.diff(t)),
        "counter": refresh_period(t, series["energy_mJ"]),
        "instant_values": refresh_period(t, series["inst_mW"]),
        "instant_stamps": period_from_instants(series["inst_stamp_s"]),
        # refreshes as the host sees them: a new value or a new stamp
        "instant_seen": period_from_instants(first_seen(t, series["inst_mW"], series["inst_stamp_s"])[0]),
        "instant_stamp_behaviour": stamp_behaviour(t, series["inst_mW"], series["inst_stamp_s"]),
        "average_values": refresh_period(t, series["avg_mW"]),
        "average_stamps": period_from_instants(series["avg_stamp_s"]),
    }
    res["counter_to_instant_phase_s"] = phase_offset(res["counter"]["fit"], res["instant_values"]["fit"])
    e = np.asarray(series["energy_mJ"], float)
    if len(t) > 1 and np.isfinite(e).sum() > 1:
        f = np.isfinite(e)
        res["mean_power_by_counter_W"] = float((e[f][-1] - e[f][0]) / 1000.0 / (t[f][-1] - t[f][0]))
    res["mean_instant_power_W"] = float(np.nanmean(series["inst_mW"]) / 1000.0) if len(t) else math.nan
    return res


# ---------------------------------------------------------------------------------------------
# reading NVML
# ---------------------------------------------------------------------------------------------


def _field_value(fv: Any) -> float:
    member = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")[int(fv.valueType)]
    return float(getattr(fv.value, member))


def make_reader(nvml: Any, handle: Any) -> Callable[[], tuple[float, float, float, float, float]]:
    """One dense read: (energy mJ, instant mW, instant stamp us, average mW, average stamp us); NaN
    for what does not answer."""
    ok = getattr(nvml, "NVML_SUCCESS", 0)
    fields = [FIELD_POWER_INSTANT, FIELD_POWER_AVERAGE]

    def read() -> tuple[float, float, float, float, float]:
        try:
            e = float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except nvml.NVMLError:
            e = math.nan
        out = [math.nan] * 4
        try:
            vals = nvml.nvmlDeviceGetFieldValues(handle, fields)
            for j, fv in enumerate(vals):
                if int(fv.nvmlReturn) == ok:
                    out[2 * j], out[2 * j + 1] = _field_value(fv), float(fv.timestamp)
        except nvml.NVMLError:
            pass
        return e, out[0], out[1], out[2], out[3]

    return read


def poll(
    read: Callable[[], Sequence[float]],
    duration_s: float,
    spacing_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    until: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Call ``read`` every ``spacing_s`` (absolute schedule; a late read does not cause a burst) for
    ``duration_s`` or until ``until()`` is true. Returns host times (middle of each read) and the rows."""
    ts: list[float] = []
    rows: list[Sequence[float]] = []
    t0 = clock()
    nxt = t0
    while True:
        now = clock()
        if now - t0 >= duration_s or (until is not None and until()):
            break
        if spacing_s > 0 and now < nxt:
            sleep(nxt - now)
            continue
        a = clock()
        r = read()
        b = clock()
        ts.append((a + b) / 2)
        rows.append(r)
        nxt = max(nxt + spacing_s, b) if spacing_s > 0 else b
    return np.asarray(ts, float), np.asarray(rows, float).reshape(len(rows), -1)


def series_from_rows(t: np.ndarray, rows: np.ndarray, epoch_offset_s: float) -> dict[str, np.ndarray]:
    """Columns of :func:`make_reader` rows, field stamps moved onto the host clock (``epoch_offset_s`` =
    wall clock minus host clock)."""
    return {
        "t": t,
        "energy_mJ": rows[:, 0],
        "inst_mW": rows[:, 1],
        "inst_stamp_s": rows[:, 2] * 1e-6 - epoch_offset_s,
        "avg_mW": rows[:, 3],
        "avg_stamp_s": rows[:, 4] * 1e-6 - epoch_offset_s,
    }


def clock_offset() -> float:
    """Wall clock minus monotonic clock, the smallest of a few tries (NVML stamps are wall-clock us)."""
    best = None
    for _ in range(20):
        a = time.monotonic()
        w = time.time()
        b = time.monotonic()
        if best is None or b - a < best[0]:
            best = (b - a, w - (a + b) / 2)
    return best[1]


# ---------------------------------------------------------------------------------------------
# finding the GPU
# ---------------------------------------------------------------------------------------------


class NoGpu(Exception):
    pass


@dataclass
class Gpu:
    nvml: Any
    handle: Any
    torch: Any
    device: Any
    index: int
    name: str
    bus_id: str  # 0000:18:00.0
    uuid: str


def find_gpu(index: int) -> Gpu:
    """NVML first (cheap, and what the whole check is about), then torch with CUDA; NoGpu says why not."""
    try:
        import pynvml as nvml
    except ImportError as exc:
        raise NoGpu(f"the Python package nvidia-ml-py (pynvml) is not installed ({exc})") from None
    try:
        nvml.nvmlInit()
    except Exception as exc:
        raise NoGpu(f"NVML did not start ({type(exc).__name__}: {exc})") from None
    try:
        n = int(nvml.nvmlDeviceGetCount())
    except Exception as exc:
        raise NoGpu(f"NVML cannot count GPUs ({type(exc).__name__}: {exc})") from None
    if n == 0:
        raise NoGpu("NVML works but reports no GPU")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torch

            ok = torch.cuda.is_available() and torch.cuda.device_count() > index
    except ImportError as exc:
        raise NoGpu(f"torch is not installed ({exc})") from None
    except Exception as exc:
        raise NoGpu(f"torch cannot use CUDA ({type(exc).__name__}: {exc})") from None
    if not ok:
        raise NoGpu(
            f"torch sees no CUDA device {index} (torch {torch.__version__}, CUDA "
            f"{torch.version.cuda or 'none'}), although NVML counts {n} GPU(s)"
        )
    props = torch.cuda.get_device_properties(index)
    try:
        bus = f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    except AttributeError:
        bus = ""
    uuid = str(getattr(props, "uuid", "") or "")
    handle = None
    if bus:
        nvml_bus = f"0000{bus}".upper()  # NVML's 8-digit domain form
        for fn in ("nvmlDeviceGetHandleByPciBusId_v2", "nvmlDeviceGetHandleByPciBusId"):
            if handle is None and hasattr(nvml, fn):
                try:
                    handle = getattr(nvml, fn)(nvml_bus)
                except Exception:
                    handle = None
    if handle is None and uuid:
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except Exception:
            handle = None
    if handle is None:
        if n != 1 and index != 0:
            raise NoGpu(f"cannot match CUDA device {index} to an NVML device")
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        bus = bus or str(nvml.nvmlDeviceGetPciInfo(handle).busId)[4:].lower()
    name = nvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else str(name)
    return Gpu(nvml, handle, torch, torch.device("cuda", index), index, name, bus, uuid)


# ---------------------------------------------------------------------------------------------
# loads
# ---------------------------------------------------------------------------------------------


class MatmulLoad:
    """Square matmuls queued in batches, two batches in flight (the GPU never waits on Python), each
    waited for with ``event.query`` + short sleeps so that other threads keep the GIL."""

    def __init__(self, torch: Any, device: Any, n: int = 8192, dtype: str = "bf16", batch: int = 16) -> None:
        self.torch, self.device, self.batch = torch, device, batch
        dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        g = torch.Generator(device=device).manual_seed(0)
        self.a = torch.randn(n, n, device=device, dtype=dt, generator=g)
        self.b = torch.randn(n, n, device=device, dtype=dt, generator=g)
        self.c = torch.empty_like(self.a)
        self.flops_per_batch = 2.0 * n**3 * batch

    def _launch(self) -> Any:
        for _ in range(self.batch):
            self.torch.matmul(self.a, self.b, out=self.c)
        ev = self.torch.cuda.Event()
        ev.record()
        return ev

    @staticmethod
    def _wait(ev: Any) -> None:
        while not ev.query():
            time.sleep(0.0002)

    def run(self, seconds: float, stop: threading.Event | None = None) -> tuple[float, float, int]:
        """Busy for ``seconds`` (or until ``stop``); synchronised at both ends. Returns the host times
        of the start (just before the first launch) and of the end (the last batch done), and batches."""
        torch = self.torch
        torch.cuda.synchronize(self.device)
        t0 = time.monotonic()
        pending = [self._launch()]
        n = 1
        while time.monotonic() - t0 < seconds and not (stop is not None and stop.is_set()):
            pending.append(self._launch())
            n += 1
            self._wait(pending.pop(0))
        for ev in pending:
            self._wait(ev)
        t1 = time.monotonic()
        torch.cuda.synchronize(self.device)
        return t0, t1, n


def background(fn: Callable[[], Any]) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, box


def plan_edges(
    t0: float,
    cycles: int,
    busy_s: float,
    idle_s: float,
    rng: np.random.Generator,
    grid: tuple[float, float] | None = None,
    lead_s: float = 0.05,
) -> list[tuple[float, float]]:
    """When a square-wave load should switch on and off: ``cycles`` of idle then busy after ``t0``.
    Without ``grid`` each span is lengthened by a random 0-100 ms (edges at random phases of the
    refreshes). With ``grid`` = (period, phase) of the power field's refreshes (host clock), each
    rising edge is put a random 0-``lead_s`` before a refresh, so that most first readings after it
    catch the step part-way (a window of 25 ms in 100 ms is otherwise caught by one edge in four)."""
    out, t = [], t0
    for _ in range(cycles):
        up = t + idle_s + float(rng.uniform(0, 0.1))
        if grid is not None and grid[0] > 0:
            period, phase = grid
            nxt = phase + math.ceil((up - phase) / period) * period
            up = nxt - float(rng.uniform(0, lead_s))
            if up < t + 0.5 * idle_s:
                up += period
        down = up + busy_s + float(rng.uniform(0, 0.1))
        out.append((up, down))
        t = down
    return out


def sleep_until(t: float, clock: Callable[[], float] = time.monotonic) -> None:
    while True:
        d = t - clock()
        if d <= 0:
            return
        time.sleep(d - 0.001 if d > 0.002 else 0.0001)


def square_wave(load: MatmulLoad, plan: list[tuple[float, float]], tail_s: float, edges: dict) -> None:
    """Follow ``plan`` (from :func:`plan_edges`); the edges as they happened go into ``edges``."""
    ups, downs = edges.setdefault("ups", []), edges.setdefault("downs", [])
    for up, down in plan:
        sleep_until(up)
        t0, t1, _ = load.run(down - time.monotonic())
        ups.append(t0)
        downs.append(t1)
    time.sleep(tail_s)


class DiffusionLoop:
    """A denoising loop as a text-to-image pipeline runs it: a UNet (Stable Diffusion 1.5 size by
    default, random weights, built from the project's config) under classifier-free guidance, stepped
    by a DDIM scheduler; the text encoder and VAE are left out (random conditioning)."""

    def __init__(
        self,
        torch: Any,
        device: Any,
        size: str = "sd15",
        batch: int = 4,
        steps: int = 20,
        dtype: str = "fp16",
    ) -> None:
        from diffusers import DDIMScheduler, UNet2DConditionModel

        from energy_hpc.workloads.configs import diffusion as cfgs

        cfg = {"sd15": cfgs.UNET_SD15, "tiny": cfgs.UNET_TINY}[size]
        dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        torch.manual_seed(0)
        try:
            with torch.device(device):
                unet = UNet2DConditionModel(**cfg)
        except Exception:
            unet = UNet2DConditionModel(**cfg)
        self.unet = unet.to(device=device, dtype=dt).eval()
        self.sched = DDIMScheduler(**cfgs.SCHEDULER, clip_sample=False, set_alpha_to_one=False)
        self.torch, self.device, self.dtype, self.steps, self.batch = torch, device, dt, steps, batch
        s = int(cfg["sample_size"])
        self.latent_shape = (batch, int(cfg["in_channels"]), s, s)
        self.cond = torch.randn(2 * batch, 77, int(cfg["cross_attention_dim"]), device=device, dtype=dt)
        self.params = sum(p.numel() for p in self.unet.parameters())

    def image(self) -> None:
        torch = self.torch
        self.sched.set_timesteps(self.steps)
        lat = torch.randn(self.latent_shape, device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            for t in self.sched.timesteps:
                x = torch.cat([lat, lat])
                noise = self.unet(x, t, encoder_hidden_states=self.cond).sample
                u, c = noise.chunk(2)
                lat = self.sched.step(u + 7.5 * (c - u), t, lat).prev_sample

    def run(self, seconds: float) -> tuple[float, float, int]:
        torch = self.torch
        torch.cuda.synchronize(self.device)
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < seconds:
            self.image()
            n += 1
        torch.cuda.synchronize(self.device)
        return t0, time.monotonic(), n


# ---------------------------------------------------------------------------------------------
# the steps
# ---------------------------------------------------------------------------------------------


def step_poll(gpu: Gpu, load: MatmulLoad, seconds: float, spacing_s: float, raw: dict) -> dict[str, Any]:
    """Steps 1-2: dense reads of the counter and both power fields under a steady matmul load."""
    stop = threading.Event()
    th, box = background(lambda: load.run(1e9, stop))
    time.sleep(1.0)  # let power and clocks settle
    off = clock_offset()
    t, rows = poll(make_reader(gpu.nvml, gpu.handle), seconds, spacing_s)
    stop.set()
    th.join()
    if "error" in box:
        raise box["error"]
    s = series_from_rows(t, rows, off)
    raw.update({f"poll_{k}": v for k, v in s.items()})
    res = analyse_poll(s)
    res["load_tflops"] = (
        load.flops_per_batch * box["result"][2] / (box["result"][1] - box["result"][0]) / 1e12
    )
    return res


def _square(
    gpu: Gpu,
    load: MatmulLoad,
    plan: list[tuple[float, float]],
    tail_s: float,
    spacing_s: float,
    raw: dict,
    key: str,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    edges: dict = {}
    off = clock_offset()
    th, box = background(lambda: square_wave(load, plan, tail_s, edges))
    t, rows = poll(make_reader(gpu.nvml, gpu.handle), 1e9, spacing_s, until=lambda: not th.is_alive())
    th.join()
    if "error" in box:
        raise box["error"]
    s = series_from_rows(t, rows, off)
    ups, downs = np.asarray(edges["ups"]), np.asarray(edges["downs"])
    raw.update({f"{key}_{k}": v for k, v in s.items()})
    raw.update({f"{key}_ups": ups, f"{key}_downs": downs})
    return t, s, ups, downs


def step_square(
    gpu: Gpu, load: MatmulLoad, args: argparse.Namespace, grid: tuple[float, float] | None, raw: dict
) -> dict[str, Any]:
    """Step 5's measurement, two square waves: short cycles (0.5 s busy / 0.5 s idle, rising edges
    placed just before the instant field's refreshes when steps 1-2 found their grid) for the instant
    field's window, long ones (``--busy-s``/``--idle-s``) for the 1 s average field's."""
    spacing = args.poll_ms / 1e3
    rng = np.random.default_rng(1)
    res: dict[str, Any] = {"grid": list(grid) if grid else None}
    plan = plan_edges(time.monotonic() + 0.2, args.fast_cycles, 0.5, 0.5, rng, grid)
    t, s, ups, downs = _square(gpu, load, plan, 0.6, spacing, raw, "square_fast")
    res["fast"] = {
        "cycles": args.fast_cycles,
        "busy_s": 0.5,
        "idle_s": 0.5,
        "edges": int(len(ups) + len(downs)),
    }
    res["instant"] = window_fits(t, s["inst_mW"], s["inst_stamp_s"], ups, downs, settle_s=0.25)
    res["counter_period_during"] = refresh_period(t, s["energy_mJ"])["fit"]
    plan = plan_edges(time.monotonic() + 0.2, args.cycles, args.busy_s, args.idle_s, rng)
    t, s, ups, downs = _square(gpu, load, plan, args.idle_s + 0.1, spacing, raw, "square_slow")
    res["slow"] = {
        "cycles": args.cycles,
        "busy_s": args.busy_s,
        "idle_s": args.idle_s,
        "edges": int(len(ups) + len(downs)),
    }
    settle = min(1.2, args.idle_s - 0.05, args.busy_s - 0.05)
    res["average"] = window_fits(t, s["avg_mW"], s["avg_stamp_s"], ups, downs, settle_s=settle)
    res["instant_slow"] = window_fits(t, s["inst_mW"], s["inst_stamp_s"], ups, downs, settle_s=0.3)
    return res


def sampled_windows(
    gpu: Gpu, work: Callable[[], list[tuple[float, float]]], raw: dict, key: str, idle_s: float = 1.0
) -> dict[str, Any]:
    """Run ``work`` (it returns its windows) while the project's NVML sensor is sampled every 10 ms by
    the project's Sampler; reduce the windows by counter and by integral."""
    from energy_hpc.telemetry import nvml as nvml_backend
    from energy_hpc.telemetry.base import SensorContext
    from energy_hpc.telemetry.sampler import Sampler

    ctx = SensorContext(device_bus_id=gpu.bus_id, device_uuid=gpu.uuid, options={"nvml": {"probe_reads": 3}})
    sensor = nvml_backend.open_sensor(ctx, library=gpu.nvml)
    sampler = Sampler([sensor], 0.01)
    sampler.start()
    try:
        time.sleep(idle_s)
        windows = work()
        time.sleep(idle_s)
    finally:
        sampler.stop()
    traces = sampler.traces()
    sampler.close_sensors()
    main = next(tr for tr in traces if not tr.info.view_of)
    raw.update(
        {
            f"{key}_t": main.time,
            f"{key}_power_W": main.power,
            f"{key}_energy_J": main.energy,
            f"{key}_windows": np.asarray(windows, float),
        }
    )
    dt = np.diff(main.time)
    rows = counter_vs_integral(
        main.time, main.power, main.energy, [w[0] for w in windows], [w[1] for w in windows]
    )
    return {
        "channel": main.info.name,
        "samples": len(main.time),
        "sample_spacing": summarize(dt),
        "read_errors": int(main.errors),
        "windows": rows,
    }


def step_matmul_windows(gpu: Gpu, load: MatmulLoad, seconds: float, n: int, raw: dict) -> dict[str, Any]:
    def work() -> list[tuple[float, float]]:
        out = []
        for k in range(n):
            if k:
                time.sleep(2.0)
            t0, t1, _ = load.run(seconds)
            out.append((t0, t1))
        return out

    return sampled_windows(gpu, work, raw, "matmul")


def step_diffusion(gpu: Gpu, args: argparse.Namespace, raw: dict) -> dict[str, Any]:
    try:
        import diffusers  # noqa: F401
    except Exception as exc:
        return {"skipped": f"diffusers is not importable ({type(exc).__name__}: {exc})"}
    log(f"diffusion: building a random-weight {args.diffusion_size} UNet")
    loop = DiffusionLoop(
        gpu.torch,
        gpu.device,
        size=args.diffusion_size,
        batch=args.diffusion_batch,
        steps=args.diffusion_steps,
        dtype=args.diffusion_dtype,
    )
    t0 = time.monotonic()
    loop.image()  # warm-up (kernel selection)
    gpu.torch.cuda.synchronize(gpu.device)
    warm = time.monotonic() - t0
    info: dict[str, Any] = {}

    def work() -> list[tuple[float, float]]:
        a, b, n = loop.run(args.window_s)
        info.update(images=n, steps_per_s=n * loop.steps / (b - a))
        return [(a, b)]

    res = sampled_windows(gpu, work, raw, "diffusion")
    res.update(
        model=f"UNet2DConditionModel {args.diffusion_size} ({loop.params / 1e6:.0f} M parameters, random)",
        batch=loop.batch,
        steps_per_image=loop.steps,
        warmup_image_s=warm,
        **info,
    )
    return res


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def _f(x: Any, fmt: str = ".4f") -> str:
    if x is None:
        return "n/a"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "n/a" if not math.isfinite(x) else format(x, fmt)


def _period_row(name: str, r: dict[str, Any]) -> str:
    iv, fit = r.get("intervals", {}), r.get("fit", {})
    return (
        f"| {name} | {r.get('n_refreshes', 0)} | {_f(iv.get('median'))} | {_f(iv.get('p05'))} – "
        f"{_f(iv.get('p95'))} | {_f(iv.get('std'), '.5f')} | {_f(fit.get('period_s'), '.5f')} | "
        f"{_f(fit.get('jitter_s'), '.5f')} | {fit.get('missed', 0)} / {fit.get('extra', 0)} |"
    )


def _windows_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| window | s | counter J | integral J | counter/integral | ± counter J | ± integral J | "
        "diff (σ) | mean W |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, w in enumerate(rows):
        out.append(
            f"| {i + 1} | {_f(w['duration_s'], '.2f')} | {_f(w['counter_J'], '.1f')} | "
            f"{_f(w['integral_J'], '.1f')} | {_f(w['ratio_counter_over_integral'], '.4f')} | "
            f"{_f(w['counter_unc_J'], '.2f')} | {_f(w['integral_unc_J'], '.2f')} | "
            f"{_f(w['difference_sigma'], '.2f')} | {_f(w['mean_power_W'], '.1f')} |"
        )
    return out


def report(res: dict[str, Any]) -> str:
    g = res["gpu"]
    L = [
        f"# gpu_check: {g['name']} ({g['bus_id']})",
        "",
        f"driver {g.get('driver', '?')}, NVML {g.get('nvml_version', '?')}, torch {g.get('torch', '?')} "
        f"(CUDA {g.get('cuda', '?')}), {res['started']}",
        "",
    ]
    p = res.get("poll")
    if p:
        L += [
            "## 1-2. Refresh periods (dense reads under a steady matmul load)",
            "",
            f"{p['reads']} reads, spacing median {_f(p['read_spacing']['median'] * 1e3, '.3f')} ms, p95 "
            f"{_f(p['read_spacing']['p95'] * 1e3, '.3f')} ms; load {_f(p.get('load_tflops'), '.0f')} TFLOP/s, "
            f"mean power {_f(p.get('mean_power_by_counter_W'), '.1f')} W (counter), "
            f"{_f(p.get('mean_instant_power_W'), '.1f')} W (instant field)",
            "",
            "| series | refreshes | median interval s | p05 – p95 s | std s | grid fit period s | fit jitter s | "
            "missed / extra |",
            "|---|---|---|---|---|---|---|---|",
            _period_row("energy counter (value changes)", p["counter"]),
            _period_row("instant power field 186 (value changes)", p["instant_values"]),
            _period_row("instant power field 186 (own timestamps)", p["instant_stamps"]),
            _period_row("instant power field 186 (new value or stamp, host time)", p["instant_seen"]),
            _period_row("average power field 185 (value changes)", p["average_values"]),
            _period_row("average power field 185 (own timestamps)", p["average_stamps"]),
            "",
        ]
        sb = p["instant_stamp_behaviour"]
        L += [
            f"Instant field: {_f(sb['value_changes_with_stamp'], '.3f')} of value changes come with a new "
            f"timestamp, {_f(sb['stamps_with_value_change'], '.3f')} of new timestamps with a new value; a new "
            f"stamp is first seen {_f(sb['seen_lag']['median'] * 1e3, '.2f')} ms after it (median; p05–p95 "
            f"{_f(sb['seen_lag']['p05'] * 1e3, '.2f')}–{_f(sb['seen_lag']['p95'] * 1e3, '.2f')} ms). Counter → "
            f"instant refresh phase: {_f(p['counter_to_instant_phase_s'] * 1e3, '.1f')} ms.",
            "",
        ]
    for key, title in (
        ("matmul", "3. Counter vs integral: matmul loop"),
        ("diffusion", "4. Counter vs integral: diffusion loop"),
    ):
        r = res.get(key)
        if r is None:
            continue
        L += [f"## {title}", ""]
        if "skipped" in r:
            L += [f"Skipped: {r['skipped']}", ""]
            continue
        if "error" in r:
            L += [f"Failed: {r['error']}", ""]
            continue
        extra = (
            (
                f"; {r['model']}, batch {r['batch']}, {r['steps_per_image']} steps/image, "
                f"{_f(r.get('steps_per_s'), '.1f')} steps/s"
            )
            if key == "diffusion"
            else ""
        )
        L += [
            f"Channel {r['channel']}, {r['samples']} samples every {_f(r['sample_spacing']['median'] * 1e3, '.2f')} "
            f"ms (p95 {_f(r['sample_spacing']['p95'] * 1e3, '.2f')} ms), {r['read_errors']} read errors{extra}.",
            "",
            *_windows_table(r["windows"]),
            "",
        ]
    sq = res.get("square")
    if sq and "instant" in sq:
        L += [
            "## 5a. Power field windows (square-wave load, step response)",
            "",
            f"Instant field: {sq['fast']['cycles']} cycles of 0.5 s busy / 0.5 s idle"
            + (
                " (rising edges placed 0-50 ms before the instant field's refreshes)"
                if sq.get("grid")
                else ""
            )
            + f"; average field: {sq['slow']['cycles']} cycles of {sq['slow']['busy_s']} s / {sq['slow']['idle_s']} s. "
            "Fit of d = lag + window·f over the readings that show part of a step (d: refresh time after the edge, "
            "the refresh placed where the host first saw it, or at the field's own timestamp):",
            "",
            "| field | refresh placed by | edge | window s | lag s | partial readings |",
            "|---|---|---|---|---|---|",
        ]
        for fld in ("instant", "instant_slow", "average"):
            for how, fits in sq.get(fld, {}).items():
                for edge in ("up", "down"):
                    ft = fits[edge]
                    L.append(
                        f"| {fld} | {how} | {edge} | {_f(ft['window_s'])} | {_f(ft['lag_s'])} | "
                        f"{ft['n_partial']} |"
                    )
        L.append("")
    elif sq:
        L += [
            "## 5a. Power field windows",
            "",
            f"Failed or skipped: {sq.get('error') or sq.get('skipped')}",
            "",
        ]
    cmp_rows = res.get("comparison")
    if cmp_rows:
        L += [
            "## 5. Emulated H100 vs this GPU",
            "",
            "| parameter | emulated | measured | agrees |",
            "|---|---|---|---|",
        ]
        for r in cmp_rows:
            a = {True: "yes", False: "**no**", None: "not measured"}[r["agrees"]]
            L.append(
                f"| {r['parameter']} | {_f(r['emulated'])} | {_f(r['measured'])} | {a} ({r['tolerance']}) |"
            )
        L.append("")
    if res.get("errors"):
        L += ["## Errors", ""] + [f"- {k}: {v}" for k, v in res["errors"].items()] + [""]
    return "\n".join(L)


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    return x


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--out", default="gpu_check.json", help="JSON results (raw series beside it as .npz)")
    ap.add_argument("--device", type=int, default=0, help="CUDA device index")
    ap.add_argument("--quick", action="store_true", help="short durations (smoke run, ~40 s)")
    ap.add_argument("--poll-s", type=float, default=5.0, help="steps 1-2: seconds of dense reads")
    ap.add_argument("--poll-ms", type=float, default=1.0, help="dense read spacing (ms; 0 = back to back)")
    ap.add_argument("--window-s", type=float, default=10.0, help="steps 3-4: window length")
    ap.add_argument("--matmul-windows", type=int, default=2, help="step 3: how many windows")
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    ap.add_argument("--fast-cycles", type=int, default=20, help="step 5: 0.5 s/0.5 s cycles (instant window)")
    ap.add_argument("--cycles", type=int, default=6, help="step 5: long cycles (average window)")
    ap.add_argument("--busy-s", type=float, default=1.5)
    ap.add_argument("--idle-s", type=float, default=1.5)
    ap.add_argument("--diffusion-size", choices=("sd15", "tiny"), default="sd15")
    ap.add_argument("--diffusion-batch", type=int, default=4)
    ap.add_argument("--diffusion-steps", type=int, default=20)
    ap.add_argument("--diffusion-dtype", choices=("fp16", "bf16", "fp32"), default="fp16")
    ap.add_argument("--skip", default="", help="comma-separated steps to skip: poll,matmul,diffusion,square")
    a = ap.parse_args(argv)
    if a.quick:
        a.poll_s, a.window_s, a.matmul_windows = min(a.poll_s, 2.0), min(a.window_s, 3.0), 1
        a.cycles, a.fast_cycles = min(a.cycles, 3), min(a.fast_cycles, 8)
    return a


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        gpu = find_gpu(args.device)
    except NoGpu as exc:
        print(f"gpu_check: no NVIDIA GPU usable here: {exc}", file=sys.stderr)
        return NO_GPU_EXIT
    except Exception as exc:
        print(f"gpu_check: no NVIDIA GPU usable here: {type(exc).__name__}: {exc}", file=sys.stderr)
        return NO_GPU_EXIT
    torch, nv = gpu.torch, gpu.nvml
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    def txt(fn: Callable[[], Any]) -> str:
        try:
            v = fn()
            return v.decode() if isinstance(v, bytes) else str(v)
        except Exception:
            return "?"

    res: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "args": vars(args),
        "gpu": {
            "name": gpu.name,
            "bus_id": gpu.bus_id,
            "uuid": gpu.uuid,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "driver": txt(lambda: nv.nvmlSystemGetDriverVersion()),
            "nvml_version": txt(lambda: nv.nvmlSystemGetNVMLVersion()),
        },
        "errors": {},
    }
    raw: dict[str, np.ndarray] = {}
    out = Path(args.out)
    log(f"{gpu.name} at {gpu.bus_id}; writing {out}")
    torch.cuda.set_device(gpu.device)
    load = MatmulLoad(torch, gpu.device, n=args.matmul_n, dtype=args.dtype)
    load.run(0.5)  # warm-up

    def step(key: str, title: str, fn: Callable[[], Any]) -> None:
        if key in skip:
            res[key] = {"skipped": "--skip"}
            return
        log(title)
        t0 = time.monotonic()
        try:
            res[key] = fn()
        except Exception as exc:
            import traceback

            traceback.print_exc(file=sys.stderr)
            res[key] = {"error": f"{type(exc).__name__}: {exc}"}
            res["errors"][key] = res[key]["error"]
        log(f"{title}: done in {time.monotonic() - t0:.1f} s")

    step(
        "poll",
        f"steps 1-2: dense reads every {args.poll_ms} ms for {args.poll_s} s under load",
        lambda: step_poll(gpu, load, args.poll_s, args.poll_ms / 1e3, raw),
    )
    step(
        "matmul",
        f"step 3: {args.matmul_windows} x {args.window_s} s matmul windows, 10 ms sampler",
        lambda: step_matmul_windows(gpu, load, args.window_s, args.matmul_windows, raw),
    )
    step(
        "diffusion",
        f"step 4: {args.window_s} s diffusion loop, 10 ms sampler",
        lambda: step_diffusion(gpu, args, raw),
    )

    def square() -> dict[str, Any]:
        fit = (res.get("poll") or {}).get("instant_seen", {}).get("fit", {})
        grid = (
            (fit["period_s"], fit["phase_s"])
            if math.isfinite(fit.get("period_s", math.nan)) and fit.get("jitter_s", 1.0) < 0.005
            else None
        )
        return step_square(gpu, load, args, grid, raw)

    step(
        "square",
        f"step 5: square waves, {args.fast_cycles} x 0.5/0.5 s and {args.cycles} x "
        f"{args.busy_s}/{args.idle_s} s busy/idle",
        square,
    )
    try:
        emu = emulated_h100_parameters()
        meas = measured_parameters(
            res.get("poll") or {}, res.get("square") if "instant" in (res.get("square") or {}) else None
        )
        res["emulated"], res["measured"], res["comparison"] = emu, meas, compare(emu, meas)
    except Exception as exc:
        res["errors"]["comparison"] = f"{type(exc).__name__}: {exc}"
    if not res["errors"]:
        del res["errors"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_clean(res), indent=1) + "\n")
    np.savez_compressed(out.with_suffix(".npz"), **raw)
    print(report(res))
    log(f"wrote {out} and {out.with_suffix('.npz')}")
    try:
        nv.nvmlShutdown()
    except Exception:
        pass
    return 1 if res.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
