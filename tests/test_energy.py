"""Window energy against closed forms: counter, integral, uncertainty."""

from __future__ import annotations

import numpy as np
import pytest

from energy_hpc.analysis.energy import channel_window_energy
from energy_hpc.telemetry.synthetic import synthetic_energy, synthetic_power

BASE, AMP, PERIOD = 50.0, 100.0, 1.0


def _trace(dt: float = 0.01, t_end: float = 5.0, update: float = 0.0):
    t = np.arange(0.0, t_end, dt)
    p = np.array([synthetic_power(x, BASE, AMP, PERIOD) for x in t])
    tc = t if update <= 0 else np.floor(t / update) * update
    e = np.array([synthetic_energy(x, BASE, AMP, PERIOD) for x in tc])
    return t, p, e


def _truth(a: float, b: float) -> float:
    return synthetic_energy(b, BASE, AMP, PERIOD) - synthetic_energy(a, BASE, AMP, PERIOD)


def test_counter_and_integral_match_the_closed_form() -> None:
    t, p, e = _trace()
    starts, ends = np.array([0.5, 1.25, 3.0]), np.array([1.0, 2.9, 4.5])
    we = channel_window_energy(t, p, e, starts, ends)
    truth = np.array([_truth(a, b) for a, b in zip(starts, ends, strict=True)])
    np.testing.assert_allclose(we.counter_J, truth, rtol=1e-9)
    np.testing.assert_allclose(we.integral_J, truth, rtol=2e-3)
    assert list(we.method) == ["counter"] * 3
    np.testing.assert_array_equal(we.energy_J, we.counter_J)


def test_error_stays_within_a_few_sigma_for_a_slow_counter() -> None:
    t, p, e = _trace(update=0.1)
    starts = np.linspace(0.3, 3.0, 20)
    ends = starts + 1.37
    we = channel_window_energy(t, p, e, starts, ends, update_period=0.1)
    truth = np.array([_truth(a, b) for a, b in zip(starts, ends, strict=True)])
    z = np.abs(we.energy_J - truth) / we.uncertainty_J
    assert np.all(z < 4), z
    assert np.all(we.uncertainty_J > 0)


@pytest.mark.parametrize("phase", [0.0, 0.013, 0.037, 0.051, 0.079, 0.0999])
def test_a_held_counter_on_a_power_step_at_the_edges_has_no_staleness_bias(phase: float) -> None:
    """Device-synchronised work steps the power at a window's edges. A counter held between
    refreshes every 0.1 s is stale by up to 0.1 s at each edge; taken at face value that loses
    dP * tau / 2 per window (18.5 J here, 2 %). Refreshes seen by dense sampling remove it."""
    from energy_hpc.telemetry.emulated.signals import Steps

    sig = Steps.windows([1.0], [3.0], idle_W=80.0, busy_W=450.0)
    t = np.arange(0.0, 4.0, 0.01) + 0.0003
    refresh = phase + np.floor((t - phase) / 0.1) * 0.1
    e = np.floor(sig.energy(np.maximum(refresh, 0.0)) * 1000) / 1000  # mJ counter
    we = channel_window_energy(
        t, np.full_like(t, np.nan), e, [1.0], [3.0], update_period=0.1, resolution=1e-3
    )
    truth = 900.0
    assert we.method[0] == "counter"
    assert abs(we.energy_J[0] - truth) < 0.5  # was about -18.5 J
    assert abs(we.energy_J[0] - truth) < 3 * we.uncertainty_J[0] + 2e-3


def test_channel_without_counter_uses_the_integral() -> None:
    t, p, _ = _trace()
    we = channel_window_energy(t, p, np.full_like(t, np.nan), [1.0], [2.0])
    assert np.isnan(we.counter_J[0]) and we.method[0] == "integral"
    assert we.energy_J[0] == pytest.approx(_truth(1.0, 2.0), rel=2e-3)


def test_flagged_counter_falls_back_to_the_integral() -> None:
    t, p, e = _trace()
    we = channel_window_energy(t, p, e * 0, [1.0], [2.0], counter_ok=False)
    assert we.method[0] == "integral" and we.energy_J[0] == pytest.approx(_truth(1.0, 2.0), rel=2e-3)


def test_window_outside_the_samples_has_no_energy() -> None:
    t, p, e = _trace(t_end=2.0)
    we = channel_window_energy(t, p, e, [1.5, 3.0], [2.5, 4.0])
    assert np.isnan(we.energy_J).all() and list(we.method) == ["", ""]


def test_gaps_in_power_widen_the_integral_uncertainty() -> None:
    t, p, e = _trace()
    gappy = p.copy()
    gappy[(t > 1.2) & (t < 1.8)] = np.nan
    full = channel_window_energy(t, p, e * np.nan, [1.0], [2.0]).uncertainty_J[0]
    holed = channel_window_energy(t, gappy, e * np.nan, [1.0], [2.0]).uncertainty_J[0]
    assert holed > 3 * full


def test_short_windows_are_flagged() -> None:
    t, p, e = _trace()
    we = channel_window_energy(t, p, e, [1.0, 1.0], [1.05, 3.0], update_period=0.1)
    assert list(we.short) == [True, False]


def test_peak_is_the_highest_power_in_the_window() -> None:
    t, p, e = _trace()
    we = channel_window_energy(t, p, e, [0.0], [1.0])
    assert we.peak_W[0] == pytest.approx(BASE + AMP, rel=1e-3)


# --- the chunked reduction against a brute force, on messy traces ----------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from energy_hpc.analysis.energy import reduce_channel  # noqa: E402


def _messy(seed: int, n: int):
    """Jittered sampling with gaps, repeated stamps and missing values; power and a counter.

    The nominal spacing is estimated from the first chunk, so the jitter (0.8-1.2 dt) and the gaps
    (at least 4 dt, never among the first reads, where a tiny first chunk holds a single interval) are
    chosen to be told apart whatever that estimate, and the tests use an update
    period (0.02 s) above any estimate: then chunking cannot change which windows are short or
    which intervals are gaps."""
    rng = np.random.default_rng(seed)
    dt = 0.01
    step = rng.uniform(0.8, 1.2, n) * dt
    step[rng.random(n) < 0.01] *= rng.uniform(5, 40)  # gaps: at least 4 dt
    step[:4] = np.minimum(
        step[:4], 1.2 * dt
    )  # not at the very start: a one-read first chunk tells the spacing
    t = np.cumsum(step)
    rep = np.flatnonzero(rng.random(n - 1) < 0.02)
    t[rep + 1] = t[rep]  # a repeated time stamp
    p = 100 + 50 * np.sin(3 * t) + rng.normal(0, 3, n)
    e = np.cumsum(p) * dt + 1e5
    p[rng.random(n) < 0.03] = np.nan
    e[rng.random(n) < 0.03] = np.nan
    nw = int(rng.integers(1, 30))
    a = rng.uniform(t[0] - 0.2, t[-1], nw)
    b = a + rng.uniform(0, (t[-1] - t[0]) / 2, nw)
    return t, p, e, a, b


def _clean(t: np.ndarray, y: np.ndarray):
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    keep = np.concatenate([[True], np.diff(t) > 0])
    return t[keep], y[keep]


def _brute_points(t: np.ndarray, y: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Held readings to refresh points, one reading at a time (energy._Refreshes, written plainly)."""
    t, y = _clean(t, y)
    pts = [(t[0] - tau / 2, y[0])]
    last_change, periods = t[0], 0.0
    for i in range(1, len(t)):
        if y[i] != y[i - 1]:
            pts.append((t[i] - min(t[i] - t[i - 1], tau) / 2, y[i]))
            last_change, periods = t[i], 0.0
        else:  # held: once per period from the second on, placed a period before the read
            q = np.floor((t[i] - last_change) / tau)
            if q >= 2 and q != periods:
                pts.append((t[i] - tau, y[i]))
            periods = q
    return np.array([x for x, _ in pts]), np.array([v for _, v in pts])


def _brute_integral(t: np.ndarray, y: np.ndarray, a: float, b: float) -> float:
    """Trapezoids between readings inside the window; from a start edge to the first reading
    inside, the level of that reading; from the last reading inside to the end edge, its level."""
    ka = int(np.searchsorted(t, a, side="right")) - 1
    kb = int(np.searchsorted(t, b, side="left")) - 1
    ka, kb = min(max(ka, 0), len(t) - 2), min(max(kb, 0), len(t) - 2)
    total = y[ka + 1] * (t[ka + 1] - a) + y[kb] * (b - t[kb])
    for j in range(ka + 1, kb):
        total += (y[j] + y[j + 1]) / 2 * (t[j + 1] - t[j])
    if kb < ka + 1:  # both edges between the same two readings
        total -= (y[ka] + y[ka + 1]) / 2 * (t[ka + 1] - t[ka])
    return float(total)


def _brute_counter(t: np.ndarray, y: np.ndarray, a: float, b: float, w: float) -> float:
    """The counter's energy over [a, b] from refresh points: what the counter gained from the point
    before a to the point after b, less the stretches outside at the levels of the neighbouring
    intervals, with the expected straddle of a point within w/2 of an edge added back."""
    rate = np.diff(y) / np.diff(t)
    ka = min(max(int(np.searchsorted(t, a, side="right")) - 1, 0), len(t) - 2)
    kb = min(max(int(np.searchsorted(t, b, side="left")) - 1, 0), len(t) - 2)
    pre = max(rate[ka - 1] if ka >= 1 else rate[ka], 0.0)
    post = max(rate[kb + 1] if kb + 1 < len(rate) else rate[kb], 0.0)
    out_a, out_b = a - t[ka], t[kb + 1] - b
    c = (y[kb + 1] - post * out_b) - (y[ka] + pre * out_a)
    inside = max(c / max(b - a, 1e-12), 0.0)
    for out, level in ((out_a, pre), (out_b, post)):
        h = max(w / 2 - out, 0.0)
        c += (inside - level) * h * h / (2 * w)
    return float(min(max(c, 0.0), max(y[kb + 1] - y[ka], 0.0)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(3, 3000),
    chunk=st.integers(1, 3500),
    overlap=st.sampled_from([0, 1]),
)
def test_chunked_reduction_of_messy_traces_matches_one_shot_and_brute_force(seed, n, chunk, overlap) -> None:
    t, p, e, a, b = _messy(seed, n)
    one = reduce_channel([(t, p, e)], a, b, update_period=0.02, resolution=1e-3)
    chunks = [
        (
            t[max(i - overlap, 0) : i + chunk],
            p[max(i - overlap, 0) : i + chunk],
            e[max(i - overlap, 0) : i + chunk],
        )
        for i in range(0, n, chunk)
    ]
    many = reduce_channel(chunks, a, b, update_period=0.02, resolution=1e-3)
    for field in one.__dataclass_fields__:
        x, y = getattr(one, field), getattr(many, field)
        if x.dtype == object:
            assert list(x) == list(y), field
        else:
            np.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=field)
    tau = 0.02
    tp, yp = _brute_points(t, p, tau)
    te, ye = _brute_points(t, e, tau)
    tr, _ = _clean(t, np.zeros_like(t))
    w = min(float(np.median(np.diff(tr)[:65536])), tau)
    for i, (lo, hi) in enumerate(zip(a, b, strict=True)):
        if len(tp) > 1 and tp[0] <= lo and hi <= tp[-1]:
            assert many.integral_J[i] == pytest.approx(_brute_integral(tp, yp, lo, hi), rel=1e-9, abs=1e-9)
            inside = yp[(tp >= lo) & (tp <= hi)]
            edges = np.interp([lo, hi], tp, yp)
            assert many.peak_W[i] == pytest.approx(max(inside.max(initial=-np.inf), *edges))
        else:
            assert np.isnan(many.integral_J[i])
        if len(te) > 1 and te[0] <= lo and hi <= te[-1]:
            assert many.counter_J[i] == pytest.approx(_brute_counter(te, ye, lo, hi, w), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_many_edges_in_one_chunk_give_the_same_sums(seed: int) -> None:
    """Hundreds of windows, so each chunk holds many edges: the stretch sums between them."""
    t, p, e, _, _ = _messy(seed, 2000)
    rng = np.random.default_rng(seed)
    a = np.sort(rng.uniform(t[0], t[-1], 400))
    b = a + rng.uniform(0, 0.5, 400)
    chunks = [(t[i : i + 300], p[i : i + 300], e[i : i + 300]) for i in range(0, 2000, 300)]
    one = reduce_channel([(t, p, e)], a, b, update_period=0.01)
    many = reduce_channel(chunks, a, b, update_period=0.01)
    for field in ("integral_J", "uncertainty_J", "counter_J", "peak_W", "max_gap_s"):
        np.testing.assert_allclose(getattr(many, field), getattr(one, field), rtol=1e-9, equal_nan=True)
