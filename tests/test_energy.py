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
    truth = np.array([_truth(a, b) for a, b in zip(starts, ends)])
    np.testing.assert_allclose(we.counter_J, truth, rtol=1e-9)
    np.testing.assert_allclose(we.integral_J, truth, rtol=2e-3)
    assert list(we.method) == ["counter"] * 3
    np.testing.assert_array_equal(we.energy_J, we.counter_J)


def test_error_stays_within_a_few_sigma_for_a_slow_counter() -> None:
    t, p, e = _trace(update=0.1)
    starts = np.linspace(0.3, 3.0, 20)
    ends = starts + 1.37
    we = channel_window_energy(t, p, e, starts, ends, update_period=0.1)
    truth = np.array([_truth(a, b) for a, b in zip(starts, ends)])
    z = np.abs(we.energy_J - truth) / we.uncertainty_J
    assert np.all(z < 4), z
    assert np.all(we.uncertainty_J > 0)


def test_uncertainty_grows_with_the_update_period() -> None:
    t, p, e = _trace()
    fast = channel_window_energy(t, p, e, [1.0], [2.0], update_period=0.01).uncertainty_J[0]
    slow = channel_window_energy(t, p, e, [1.0], [2.0], update_period=1.0).uncertainty_J[0]
    assert slow > 10 * fast


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
