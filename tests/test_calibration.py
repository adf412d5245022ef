"""The calibration, fast: emulated parts through their real backends and the real reduction, each
window compared with the exact energy of the true signal (benchmarks/calibration.py runs every part
and length with thousands of windows; docs/analysis.md has its table).

Tolerances are the issue's targets widened by the binomial noise of a few hundred windows
(1 sigma coverage 0.60-0.80 becomes 0.52-0.88; 2 sigma >= 0.93 becomes >= 0.88), so a regression
of the model (a bias back, an uncertainty that no longer covers) fails while chance does not.
"""

from __future__ import annotations

import numpy as np
import pytest

from energy_hpc.telemetry.emulated.calibrate import summarise, trial

pytestmark = pytest.mark.slow


def _counter(part: str, length: float, n: int, seed: int, **kw) -> dict:
    rows = {w.channel: summarise(w).row() for w in trial(part, length, n, seed, methods=("counter",), **kw)}
    return rows


@pytest.mark.parametrize("part, n", [("h100", 240), ("mi250x", 240), ("rapl", 160)])
def test_counter_windows_of_two_seconds_are_unbiased_and_covered(part: str, n: int) -> None:
    for name, r in _counter(part, 2.0, n, seed=7).items():
        assert r["n"] == n and not r["short"], name
        assert abs(r["bias_pct"]) <= 0.2, (name, r)  # was -2.1 % (H100) with held counter values
        assert 0.52 <= r["cover1"] <= 0.88, (name, r)
        assert r["cover2"] >= 0.88, (name, r)
        # a table row adds windows: edge errors of one sign would add up there
        assert 0.45 <= r["agg10_cover1"] <= 0.92 and r["agg10_cover2"] >= 0.85, (name, r)


def test_a_cray_ex_node_counter_is_unbiased_and_covered() -> None:
    r = _counter("cray-ex", 2.0, 160, seed=3)["pm_counters:node"]
    assert abs(r["bias_pct"]) <= 0.2, r  # was -1.4 %
    assert 0.5 <= r["cover1"] <= 0.9 and r["cover2"] >= 0.86, r


def test_short_windows_are_flagged_and_still_covered() -> None:
    (r,) = _counter("h100", 0.05, 300, seed=5).values()
    assert r["short"]
    assert r["cover2"] >= 0.88, r


def test_back_to_back_windows_share_edges_without_bias() -> None:
    """A case's iterations run back to back: no idle between them, the power does not step at the
    edges they share."""
    (r,) = _counter("h100", 1.0, 200, seed=9, group=5).values()
    assert abs(r["bias_pct"]) <= 0.2, r
    assert r["cover2"] >= 0.75, r  # stated gap: a ripple at the shared edges is under-covered


def test_integral_of_an_instantaneous_power_reading_is_within_one_percent() -> None:
    """MI300X current_socket_power (1 ms) integrated: the integral-only target."""
    ws = list(trial("mi300x", 2.0, 160, 11, methods=("integral",)))
    (w,) = ws
    r = summarise(w).row()
    assert abs(r["bias_pct"]) <= 1.0, r
    assert r["cover2"] >= 0.88, r


def test_every_window_is_checked_against_the_exact_truth() -> None:
    """The truth the calibration uses is the signal's exact integral, not what the code printed."""
    (w,) = trial("h100", 1.0, 20, 1, methods=("counter",))
    assert np.all(w.true_J > 80.0 * 1.0) and np.all(w.true_J < 500.0 * 1.0)
    assert np.all(np.abs(w.err) < 0.01 * w.true_J)
