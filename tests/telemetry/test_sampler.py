"""The background sampler: schedule, bracketing samples, gaps. Real threads and a real clock."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from energy_hpc.errors import SensorReadError
from energy_hpc.telemetry.base import ChannelInfo, Reading, Scope, Sensor
from energy_hpc.telemetry.sampler import Sampler


class ScriptedSensor(Sensor):
    """Counts reads; can fail or stall on chosen reads."""

    backend = "scripted"

    def __init__(self, n_channels: int = 1, fail_on=(), slow_on=(), slow_s: float = 0.0, flag_on=()) -> None:
        self.reads = 0
        self.fail_on, self.slow_on, self.slow_s, self.flag_on = (
            set(fail_on),
            set(slow_on),
            slow_s,
            set(flag_on),
        )
        self.lock = threading.Lock()
        self._infos = [
            ChannelInfo(f"scripted:{j}", Scope.GPU, f"dev{j}", self.backend, has_energy=True)
            for j in range(n_channels)
        ]

    def channels(self):
        return self._infos

    def read(self) -> Reading:
        with self.lock:
            k = self.reads
            self.reads += 1
        if k in self.slow_on:
            time.sleep(self.slow_s)
        if k in self.fail_on:
            raise SensorReadError(f"read {k} failed")
        n = len(self._infos)
        errors = [k in self.flag_on and j == 0 for j in range(n)]
        return Reading(power=[100.0 + j for j in range(n)], energy=[float(k)] * n, errors=errors)


def test_interval_must_be_positive():
    with pytest.raises(ValueError):
        Sampler([ScriptedSensor()], 0.0)


def test_first_sample_is_taken_before_start_returns():
    s = ScriptedSensor()
    sampler = Sampler([s], 10.0).start()  # the next tick is 10 s away
    try:
        assert sampler.n_samples() == [1] and s.reads == 1
    finally:
        sampler.stop()


def test_last_sample_is_taken_after_stop():
    s = ScriptedSensor()
    sampler = Sampler([s], 10.0).start()
    before_stop = time.monotonic()
    sampler.stop()
    t = sampler.traces()[0].time
    assert len(t) == 2 and t[-1] >= before_stop and sampler.stopped_at >= t[-1]


def test_samples_follow_an_absolute_schedule_a_slow_read_does_not_shift_later_ticks():
    interval = 0.05
    s = ScriptedSensor(slow_on={3}, slow_s=0.03)  # one read takes 60 % of an interval
    sampler = Sampler([s], interval).start()
    time.sleep(0.75)
    sampler.stop()
    t = sampler.traces()[0].time[1:-1]  # the ticks, not the start/stop samples
    phase = ((t - sampler.started_at) / interval) % 1.0
    after = phase[4:]  # ticks after the slow read
    # a relative schedule (sleep interval after each read) would move these by ~0.6 of an interval
    assert len(after) >= 5 and np.median(np.minimum(after, 1 - after)) < 0.2


def test_failed_reads_become_nan_rows_and_are_counted_per_channel():
    s = ScriptedSensor(n_channels=2, fail_on={1, 2})
    sampler = Sampler([s], 10.0)
    for _ in range(4):
        sampler.sample_once()
    (a, b) = sampler.traces()
    assert len(a.time) == 4 and not np.isnan(a.time).any()  # a gap still has its time
    assert np.isnan(a.power[1:3]).all() and np.isnan(b.energy[1:3]).all()
    assert a.power[0] == 100.0 and b.power[3] == 101.0
    assert (a.errors, b.errors) == (2, 2)


def test_a_channel_flagged_by_the_sensor_counts_an_error_on_that_channel_only():
    s = ScriptedSensor(n_channels=2, flag_on={0})
    sampler = Sampler([s], 10.0)
    sampler.sample_once()
    a, b = sampler.traces()
    assert (a.errors, b.errors) == (1, 0)


def test_traces_can_be_copied_while_sampling_and_grow_past_one_block():
    s = ScriptedSensor()
    sampler = Sampler([s], 0.001).start()
    time.sleep(0.05)
    mid = len(sampler.traces()[0].time)
    for _ in range(5000):  # more than one 4096-row block, without waiting for the clock
        sampler.sample_once()
    sampler.stop()
    tr = sampler.traces()[0]
    assert 1 <= mid < len(tr.time) and len(tr.time) > 5000
    assert np.all(np.diff(tr.energy) >= 0)  # rows stay in read order across blocks


def test_a_read_error_does_not_stop_the_thread():
    s = ScriptedSensor(fail_on=set(range(1, 4)))
    sampler = Sampler([s], 0.01).start()
    time.sleep(0.15)
    sampler.stop()
    tr = sampler.traces()[0]
    assert tr.errors == 3 and np.isfinite(tr.power[4:]).sum() >= 3
    assert math.isfinite(tr.power[0])


# --- a read that never returns --------------------------------------------------------------------


class HangingSensor(ScriptedSensor):
    """Reads normally until read ``hang_on`` (0-based), which blocks until released."""

    backend = "hanging"

    def __init__(self, hang_on: int) -> None:
        super().__init__()
        self.hang_on = hang_on
        self.release = threading.Event()

    def read(self) -> Reading:
        with self.lock:
            k = self.reads
        if k == self.hang_on:
            self.reads += 1
            self.release.wait(60)
            raise SensorReadError("released")
        return super().read()


def _stop_bounded(sampler: Sampler, limit: float = 10.0) -> float:
    t0 = time.monotonic()
    th = threading.Thread(target=sampler.stop, daemon=True)
    th.start()
    th.join(limit)
    assert not th.is_alive(), "stop() did not return"
    return time.monotonic() - t0


def test_a_hung_read_is_given_up_and_the_other_sensors_go_on():
    good, bad = ScriptedSensor(), HangingSensor(hang_on=5)
    sampler = Sampler([good, bad], 0.01, read_timeout_s=0.3).start()
    try:
        time.sleep(1.2)
        _stop_bounded(sampler)
        t_good, t_bad = sampler.traces()[0].time, sampler.traces()[1].time
        assert len(t_bad) == 5  # reads 0-4; the 6th never came back
        assert t_good[-1] > t_bad[-1] + 0.5 and len(t_good) > 30  # sampling went on without it
        assert np.all(np.diff(t_good) > 0)  # the replaced thread added nothing out of order
        (note,) = sampler.hung_notes
        assert "hanging" in note and "did not return within" in note
    finally:
        bad.release.set()
    time.sleep(0.05)  # the stuck read returns now: what it read must be dropped
    assert len(sampler.traces()[1].time) == 5


def test_a_read_that_hangs_at_stop_does_not_hang_stop():
    bad = HangingSensor(hang_on=1)  # read 0 at start, read 1 is the last one, at stop
    sampler = Sampler([bad], 10.0, read_timeout_s=0.3).start()
    try:
        assert _stop_bounded(sampler) < 5
        assert len(sampler.traces()[0].time) == 1 and len(sampler.hung_notes) == 1
    finally:
        bad.release.set()


def test_a_first_read_that_hangs_does_not_hang_start():
    good, bad = ScriptedSensor(), HangingSensor(hang_on=0)
    t0 = time.monotonic()
    sampler = Sampler([good, bad], 0.01, read_timeout_s=0.3).start()
    try:
        assert time.monotonic() - t0 < 5
        time.sleep(0.3)
        _stop_bounded(sampler)
        assert len(sampler.traces()[0].time) > 5 and len(sampler.traces()[1].time) == 0
    finally:
        bad.release.set()
