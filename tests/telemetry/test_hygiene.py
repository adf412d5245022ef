"""Counter hygiene rules, live (CounterWatch) and on recorded traces (check_trace)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from energy_hpc.telemetry.base import ChannelInfo, Method, Scope
from energy_hpc.telemetry.hygiene import (
    CounterFault,
    CounterGuard,
    CounterWatch,
    HygieneConfig,
    Unwrapper,
    check_trace,
)


def feed(watch, power_W, energy, dt=0.1, t0=0.0):
    out = []
    for k, (p, e) in enumerate(zip(power_W, energy, strict=True)):
        out.append(watch.update(t0 + k * dt, p, e))
    return out


def test_a_healthy_counter_passes_through_unchanged():
    t = np.arange(0, 20, 0.1)
    e = 300.0 * t
    out = feed(CounterWatch("gpu"), [300.0] * len(t), e)
    assert out == pytest.approx(list(e))


def test_backwards_counter_is_faulted_and_energy_becomes_nan_from_there():
    w = CounterWatch("gpu", resolution_J=0.001)
    out = feed(w, [300.0] * 4, [100.0, 130.0, 120.0, 160.0])
    assert out[:2] == [100.0, 130.0] and all(math.isnan(x) for x in out[2:])
    assert w.fault is CounterFault.BACKWARDS and "fell by 10" in w.note


def test_a_drop_within_the_resolution_is_not_backwards():
    w = CounterWatch("gpu", resolution_J=1.0)
    feed(w, [300.0] * 3, [100.0, 99.5, 130.0])
    assert w.fault is CounterFault.NONE


def test_counter_stuck_while_power_is_drawn_is_faulted():
    w = CounterWatch("gpu", config=HygieneConfig(stuck_after_s=1.0))
    feed(w, [250.0] * 20, [500.0] * 20)
    assert w.fault is CounterFault.STUCK


def test_a_still_counter_at_idle_power_is_not_stuck():
    w = CounterWatch("gpu", config=HygieneConfig(stuck_after_s=1.0))
    feed(w, [0.0] * 50, [500.0] * 50)
    assert w.fault is CounterFault.NONE


def test_counter_disagreeing_wildly_with_power_times_time_is_faulted():
    t = np.arange(0, 10, 0.1)
    w = CounterWatch("gpu")
    feed(w, [300.0] * len(t), 30.0 * t)  # counts 10x less than 300 W x t
    assert w.fault is CounterFault.DISAGREES and "power integral" in w.note


def test_a_counter_that_lags_an_averaged_power_reading_is_not_flagged():
    # 1 s boxcar power vs a true step from 100 W to 500 W: the ratio stays near 1 over 5 s windows
    t = np.arange(0, 20, 0.1)
    true = np.where(t < 10, 100.0, 500.0)
    e = np.concatenate([[0.0], np.cumsum(true[:-1] * 0.1)])
    avg = np.convolve(true, np.ones(10) / 10, mode="full")[: len(t)]
    w = CounterWatch("gpu")
    feed(w, avg, e)
    assert w.fault is CounterFault.NONE


def test_unwrapper_adds_the_range_back():
    u = Unwrapper(1000.0)
    assert [u(x) for x in (900.0, 990.0, 20.0, 500.0)] == [900.0, 990.0, 1020.0, 1500.0]
    assert u.wraps == 1


def test_guard_marks_the_faulted_channel_so_the_method_becomes_integral():
    info = ChannelInfo("nvml:0", Scope.GPU, "0", "nvml", has_energy=True, energy_resolution_J=0.001)
    guard = CounterGuard([info])
    guard.apply(0.0, [300.0], [10.0])
    guard.apply(0.1, [300.0], [5.0])
    (after,) = guard.infos([info])
    assert after.counter_fault == "backwards" and after.method is Method.INTEGRAL
    assert info.method is Method.COUNTER  # the original record is untouched (frozen)


def test_check_trace_finds_the_first_bad_sample_of_a_recorded_channel():
    t = np.arange(0, 3, 0.1)
    e = 300.0 * t
    e[17:] -= 50.0
    v = check_trace(t, np.full_like(t, 300.0), e)
    assert v.fault is CounterFault.BACKWARDS and v.first_bad == 17 and not v.ok


def test_hygiene_options_reject_unknown_keys():
    assert HygieneConfig.from_options({"ratio_limit": 5}).ratio_limit == 5.0
    with pytest.raises(ValueError, match="unknown hygiene option"):
        HygieneConfig.from_options({"ratio": 5})
