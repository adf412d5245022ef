"""Calibration: the analysis's per-window energy and uncertainty against the exact truth.

One trial (:func:`trial`) runs an emulated part through its real backend on a virtual clock: a
sampler reads it every ``interval_s`` (with the jitter a real sampler has), the windows of a random
workload are reduced by the same :func:`~energy_hpc.analysis.energy.reduce_channel` the tables use,
and each window's figure is compared with E(b) - E(a) of the true signal. :func:`summarise` turns the
errors into bias, spread and coverage, for single windows and for aggregates of windows (a table row
adds many windows; edge errors of one sign add up there instead of averaging out).

Used by ``benchmarks/calibration.py`` (every part and length, thousands of windows) and by
``tests/test_calibration.py`` (a few parts and lengths, fast).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from energy_hpc.analysis.energy import combine_uncertainty, reduce_channel
from energy_hpc.telemetry.emulated.parts import PARTS, EmulatedSensor, VirtualClock, open_part, true_energy
from energy_hpc.telemetry.emulated.signals import Workload

LENGTHS_S = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 60.0)


@dataclass
class Windows:
    """Per-window results of one channel in one trial (arrays aligned)."""

    part: str
    channel: str
    length_s: float
    true_J: np.ndarray
    method: str  # "counter" or "integral"
    energy_J: np.ndarray
    random_J: np.ndarray  # 1 sigma, independent between windows
    systematic_J: np.ndarray  # 1 sigma, same sign in every window (adds linearly)
    short: np.ndarray

    @property
    def err(self) -> np.ndarray:
        return self.energy_J - self.true_J

    @property
    def sigma(self) -> np.ndarray:
        return combine_uncertainty(self.random_J, self.systematic_J)


def workload_for(rng: np.random.Generator, n: int, length_s: float, group: int = 1) -> Workload:
    """``n`` windows of ``length_s``; ``group`` > 1 puts that many back to back (a case's iterations)
    between idle gaps."""
    gaps = rng.uniform(0.3, 1.0, size=n)
    if group > 1:
        gaps[np.arange(n) % group != 0] = 0.0
    starts, ends = np.empty(n), np.empty(n)
    t = 1.0
    for i in range(n):  # one after the other, so that back-to-back windows share their edge exactly
        starts[i] = t = t + gaps[i]
        ends[i] = t = t + length_s
    return Workload(
        starts,
        ends,
        rng.uniform(5.0, 50.0, size=n),
        rng.uniform(0, 2 * np.pi, size=n),
        drift_period_s=float(rng.uniform(300, 900)),
        drift_phase=float(rng.uniform(0, 2 * np.pi)),
    )


def sample(
    sensor: EmulatedSensor,
    clock: VirtualClock,
    t_end: float,
    interval_s: float,
    rng: np.random.Generator,
    jitter_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``sensor`` on an absolute schedule until ``t_end`` (virtual seconds); return time and
    (sample, channel) power and energy, as the sampler stores them."""
    t_start = clock.t + interval_s  # after the start-up probe's reads
    n = int((t_end - t_start) / interval_s) + 1
    nch = len(sensor.channels())
    t = np.empty(n)
    p = np.full((n, nch), np.nan)
    e = np.full((n, nch), np.nan)
    lag = rng.uniform(0.0, jitter_s, size=n) if jitter_s > 0 else np.zeros(n)
    for i in range(n):
        clock.t = t_start + i * interval_s + lag[i]
        r = sensor.read()
        t[i] = clock.t
        p[i] = r.power
        e[i] = r.energy
    return t, p, e


def trial(
    part: str,
    length_s: float,
    n: int,
    seed: int,
    *,
    interval_s: float = 0.01,
    jitter_s: float = 0.0005,
    group: int = 1,
    per_phase: int = 20,
    methods: Iterable[str] = ("counter", "integral"),
) -> list[Windows]:
    """``n`` windows of ``length_s`` on ``part``, in batches of ``per_phase`` windows: each batch opens
    the part anew, so its sensors refresh at a new random phase against the sampler. One
    :class:`Windows` per channel and method, all batches together."""
    rng = np.random.default_rng(seed)
    acc: dict[tuple[str, str], list[Windows]] = {}
    done = 0
    while done < n:
        k = min(per_phase, n - done)
        for w in _batch(part, length_s, k, rng, interval_s, jitter_s, group, tuple(methods)):
            acc.setdefault((w.channel, w.method), []).append(w)
        done += k
    out = []
    for ws in acc.values():
        w0 = ws[0]
        out.append(
            Windows(
                w0.part,
                w0.channel,
                length_s,
                np.concatenate([w.true_J for w in ws]),
                w0.method,
                np.concatenate([w.energy_J for w in ws]),
                np.concatenate([w.random_J for w in ws]),
                np.concatenate([w.systematic_J for w in ws]),
                np.concatenate([w.short for w in ws]),
            )
        )
    return out


def _batch(
    part: str,
    length_s: float,
    n: int,
    rng: np.random.Generator,
    interval_s: float,
    jitter_s: float,
    group: int,
    methods: tuple[str, ...],
) -> list[Windows]:
    wl = workload_for(rng, n, length_s, group)
    clock = VirtualClock()
    sensor = open_part(part, wl, clock=clock, sleep=clock.sleep, rng=rng)
    t, p, e = sample(sensor, clock, wl.end + 1.0, interval_s, rng, jitter_s)
    out = []
    for j, info in enumerate(sensor.channels()):
        sig = sensor.truth.get(info.name)
        if sig is None:
            continue
        truth = true_energy(sig, wl.starts, wl.ends)
        for method in methods:
            if method == "counter" and not info.has_energy:
                continue
            if method == "integral" and not info.has_power:
                continue
            w = reduce_channel(
                [(t, p[:, j], e[:, j])],
                wl.starts,
                wl.ends,
                update_period=info.update_period_s,
                resolution=info.energy_resolution_J,
                counter_ok=(method == "counter"),
                power_window=info.power_window_s,
            )
            est = w.counter_J if method == "counter" else w.integral_J
            rnd = w.counter_random_J if method == "counter" else w.integral_random_J
            sysj = w.counter_systematic_J if method == "counter" else w.integral_systematic_J
            out.append(Windows(part, info.name, length_s, truth, method, est, rnd, sysj, w.short))
    sensor.close()
    return out


@dataclass
class Summary:
    part: str
    channel: str
    method: str
    length_s: float
    n: int
    short: bool  # every window flagged short
    bias_pct: float
    spread_pct: float
    cover1: float
    cover2: float
    agg: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # k -> (bias %, cover1, cover2)

    def row(self) -> dict[str, Any]:
        d = {
            k: getattr(self, k)
            for k in (
                "part",
                "channel",
                "method",
                "length_s",
                "n",
                "short",
                "bias_pct",
                "spread_pct",
                "cover1",
                "cover2",
            )
        }
        for k, (b, c1, c2) in self.agg.items():
            d[f"agg{k}_bias_pct"], d[f"agg{k}_cover1"], d[f"agg{k}_cover2"] = b, c1, c2
        return d


def summarise(w: Windows, aggregates: Iterable[int] = (10, 100), draws: int = 2000, seed: int = 0) -> Summary:
    """Bias (mean error as % of mean true energy), spread (SD of the error as % of true), and the
    fraction of windows whose true error lies within 1 and 2 reported sigma; the same for sums of
    ``k`` windows drawn at random (random parts in quadrature, systematic parts linearly, as tables
    add them)."""
    ok = np.isfinite(w.energy_J) & np.isfinite(w.sigma)
    err, true, sig = w.err[ok], w.true_J[ok], w.sigma[ok]
    rel = err / true
    s = Summary(
        w.part,
        w.channel,
        w.method,
        w.length_s,
        int(ok.sum()),
        bool(np.all(w.short[ok])) if ok.any() else False,
        float(100 * np.mean(err) / np.mean(true)),
        float(100 * np.std(rel)),
        float(np.mean(np.abs(err) <= sig)),
        float(np.mean(np.abs(err) <= 2 * sig)),
    )
    rng = np.random.default_rng(seed)
    rnd, sysj = w.random_J[ok], w.systematic_J[ok]
    for k in aggregates:
        if ok.sum() < 2 * k:
            continue
        idx = np.array([rng.choice(len(err), size=k, replace=False) for _ in range(draws)])
        e_sum, t_sum = err[idx].sum(axis=1), true[idx].sum(axis=1)
        sig_sum = combine_uncertainty(np.sqrt((rnd[idx] ** 2).sum(axis=1)), sysj[idx].sum(axis=1))
        s.agg[k] = (
            float(100 * np.mean(e_sum) / np.mean(t_sum)),
            float(np.mean(np.abs(e_sum) <= sig_sum)),
            float(np.mean(np.abs(e_sum) <= 2 * sig_sum)),
        )
    return s


__all__ = ["LENGTHS_S", "PARTS", "Summary", "Windows", "sample", "summarise", "trial", "workload_for"]
