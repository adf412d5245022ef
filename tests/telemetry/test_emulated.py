"""The emulated sensors behave as the real ones are documented to, and their truth is exact."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from energy_hpc.telemetry.emulated import hardware
from energy_hpc.telemetry.emulated.parts import PARTS, VirtualClock, open_part
from energy_hpc.telemetry.emulated.pynvml_api import FakeGpu
from energy_hpc.telemetry.emulated.signals import ActivitySignal, Drift, GatedRipple, Steps, Sum, Workload


def _numeric(sig, t_end: float, n: int = 400_001) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, t_end, n)
    p = sig.power(t)
    return t, np.concatenate([[0.0], np.cumsum((p[1:] + p[:-1]) / 2 * np.diff(t))])


def test_signal_energy_is_the_integral_of_its_power() -> None:
    rng = np.random.default_rng(2)
    wl = Workload.random(rng, 6, 0.8)
    sig = wl.signal(80.0, 450.0, 60.0, 10.0)
    t, num = _numeric(sig, wl.end + 1.0)
    # the trapezoid misses only at the steps (half a step's width each)
    assert np.max(np.abs(num - sig.energy(t))) < 370 * (t[1] - t[0]) * 2 * len(wl.starts)
    assert sig.energy(wl.end + 1.0) == pytest.approx(num[-1], rel=1e-5)


def test_signal_pieces_have_closed_forms() -> None:
    st = Steps.windows([1.0], [3.0], 10.0, 100.0)
    assert st.energy(4.0) == pytest.approx(10 * 1 + 100 * 2 + 10 * 1)
    r = GatedRipple(np.array([1.0]), np.array([1.5]), 40.0, 4.0, 0.0)  # two full periods
    assert r.energy(2.0) == pytest.approx(0.0, abs=1e-9)
    assert r.energy(1.125) == pytest.approx(40 / (2 * math.pi * 4) * 2, rel=1e-9)  # half a period
    d = Drift(5.0, 100.0)
    assert d.energy(100.0) == pytest.approx(0.0, abs=1e-9)
    assert Sum((st, r)).energy(4.0) == pytest.approx(st.energy(4.0))


def test_nvml_model_holds_the_counter_between_refreshes_and_samples_25_ms_of_each_period() -> None:
    sig = Steps.windows([1.0], [2.0], 80.0, 450.0)
    gpu = FakeGpu(uuid="GPU-x", bus_id="00000000:18:00.0")
    m = hardware.NvmlModel(gpu, sig, counter=hardware.Refresh(0.1, 0.03), power=hardware.Refresh(0.1, 0.07))
    seen = []
    for t in np.arange(0.5, 2.5, 0.005):
        m.sync(t)
        seen.append((t, gpu.energy_mJ, gpu.power_instant_mW, gpu.power_average_mW, gpu.timestamp_us))
    t, e, inst, avg, stamp = (np.array(x) for x in zip(*seen, strict=True))
    changes = t[1:][np.diff(e) != 0]
    # the counter moves only just after a refresh instant 0.03 + k * 0.1
    phase = (changes - 0.03) % 0.1
    assert np.all(np.minimum(phase, 0.1 - phase) < 0.006)
    r = 0.03 + np.floor((t - 0.03) / 0.1) * 0.1
    assert np.all(e == m.energy0_mJ + np.floor(1000 * sig.energy(r)))
    # instant power: the mean of the last 25 ms before the power refresh; average: the last second
    rp = 0.07 + np.floor((t - 0.07) / 0.1) * 0.1
    np.testing.assert_array_equal(inst, (1000 * sig.mean_power(rp - 0.025, rp)).astype(np.int64))
    np.testing.assert_array_equal(avg, (1000 * sig.mean_power(rp - 1.0, rp)).astype(np.int64))
    np.testing.assert_array_equal(stamp, hardware.EPOCH_US + np.round(rp * 1e6).astype(np.int64))
    # just after the step up, the instant reading is still the idle one for up to a period
    assert abs(inst[np.searchsorted(t, 1.0)] - 80_000) <= 1


def test_amd_model_counts_ticks_of_the_reported_resolution() -> None:
    from energy_hpc.telemetry.emulated.amdsmi_api import mi250x_node

    gcd = mi250x_node()[0]
    sig = Steps.windows([1.0], [2.0], 180.0, 500.0)
    m = hardware.AmdModel(gcd, sig, counter=hardware.Refresh(0.001, 0.0004))
    m.sync(1.5)
    r = 0.0004 + math.floor((1.5 - 0.0004) / 0.001) * 0.001
    assert gcd.energy_ticks == m.ticks0 + math.floor(sig.energy(r) * 1e6 / float(gcd.counter_resolution))
    assert gcd.power_W == round(float(sig.mean_power(r - 1.0, r)))  # MI250X: a trailing average, whole watts
    assert 180 < gcd.power_W < 500


def test_pm_counters_model_writes_integer_watts_and_joules_with_the_scan_stamp(tmp_path) -> None:
    sig = Steps.windows([1.0], [2.0], 1000.0, 2500.0)
    m = hardware.PmCountersModel(
        tmp_path,
        {"": sig, "cpu": Steps.windows([1.0], [2.0], 100.0, 200.0)},
        scan=hardware.Refresh(0.1, 0.02),
    )
    m.sync(1.55)
    power, energy = (tmp_path / "power").read_text(), (tmp_path / "energy").read_text()
    p, unit, stamp, us = power.split()
    assert unit == "W" and us == "us" and p.isdigit()
    assert int(stamp) == hardware.EPOCH_US + round(1.52 * 1e6)
    assert int(energy.split()[0]) == m.energy0_J + math.floor(sig.energy(1.52))
    assert (tmp_path / "cpu_energy").exists() and (tmp_path / "raw_scan_hz").read_text().strip() == "10"


def test_rapl_counter_wraps_and_the_backend_unwraps_it_to_the_exact_energy() -> None:
    part = PARTS["rapl"]
    wl = Workload(np.array([1.0]), np.array([30.0]), np.array([20.0]), np.array([0.0]))
    clock = VirtualClock()
    s = open_part("rapl", wl, clock=clock, sleep=clock.sleep, rng=np.random.default_rng(0))
    raw = []
    first = None
    for t in np.arange(0.5, 32.0, 0.05):
        clock.t = t
        r = s.read()
        raw.append(int((s.model.root / "intel-rapl:0" / "energy_uj").read_text()))
        first = r.energy[0] if first is None else first
    assert min(np.diff(raw)) < 0  # the raw counter wrapped during the run
    sig = s.truth["rapl:package-0"]
    k = s.model.counter
    r_last = k.last(clock.t)
    assert r.energy[0] - first == pytest.approx(sig.energy(r_last) - sig.energy(k.last(0.5)), abs=2e-6)
    assert part.backend == "rapl"


@pytest.mark.parametrize("name", list(PARTS))
def test_every_part_opens_through_its_real_backend_and_says_emulated(name: str) -> None:
    wl = Workload(np.array([1.0]), np.array([2.0]), np.array([10.0]), np.array([0.0]))
    clock = VirtualClock()
    s = open_part(name, wl, clock=clock, sleep=clock.sleep, rng=np.random.default_rng(1))
    assert s.inner.backend == PARTS[name].backend
    assert s.truth, "every part has at least one channel with a known truth"
    for c in s.channels():
        assert c.synthetic and c.label.startswith("EMULATED ") and "not a measurement" in c.note
    clock.t = 1.5
    r = s.read()
    assert any(np.isfinite(r.energy)) or any(np.isfinite(r.power))
    s.close()


def test_gh200_without_gpu_scope_is_recorded_as_the_module_with_the_module_truth() -> None:
    wl = Workload(np.array([1.0]), np.array([2.0]), np.array([10.0]), np.array([0.0]))
    clock = VirtualClock()
    s = open_part("gh200", wl, clock=clock, sleep=clock.sleep, rng=np.random.default_rng(1), gpu_scope=False)
    (main,) = [c for c in s.channels() if not c.view_of]
    assert main.scope.value == "module"
    assert s.truth[main.name] is s.model.truth["module"]
    assert s.model.truth["module"].energy(2.0) > s.model.truth["gpu"].energy(2.0)  # Grace CPU + memory too


def test_activity_signal_follows_the_process() -> None:
    import os

    # The truth is the CPU time this thread really got (on a loaded machine a busy loop gets less
    # than a core): the signal's energy over a busy stretch is idle_W x seconds + (busy_W - idle_W) x
    # CPU seconds, within one update's lag.
    sig = ActivitySignal(os.getpid(), 100.0, 400.0, time.monotonic(), time.monotonic)
    sig.update()
    cpu0, t0 = time.thread_time(), sig.times[-1]
    end = time.monotonic() + 0.15
    while time.monotonic() < end:  # busy
        sig.update()
    cpu1, t1 = time.thread_time(), sig.times[-1]
    drawn = float(sig.energy(t1) - sig.energy(t0))
    truth = 100.0 * (t1 - t0) + 300.0 * (cpu1 - cpu0)
    assert cpu1 - cpu0 > 0.01, "the busy loop got no CPU time at all"
    # a level holds the share of the interval before it, so the first and last intervals may be off
    lag = 2 * float(np.diff(np.array(sig.times)).max())
    assert drawn == pytest.approx(truth, abs=300.0 * lag + 0.05 * 300.0 * (t1 - t0))
    time.sleep(0.05)
    sig.update()
    time.sleep(0.05)
    sig.update()
    assert sig.levels[-1] < 200.0  # asleep: near idle whatever the load
    t = np.array(sig.times)
    # its energy is the sum of its held levels: exact for what it recorded
    assert sig.energy(t[-1]) == pytest.approx(sum(np.diff(t) * np.array(sig.levels[:-1])))
