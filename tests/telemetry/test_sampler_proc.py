"""The sampling child process: same results as the thread, no shared GIL, robust to signals."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from energy_hpc.errors import SensorUnavailable
from energy_hpc.telemetry.base import SensorContext
from energy_hpc.telemetry.sampler_proc import ProcessSampler


def _open(names=("synthetic",), interval=0.005, **options) -> ProcessSampler:
    return ProcessSampler().open(list(names), SensorContext(options=options), interval)


def test_samples_are_taken_in_another_process_on_the_same_clock() -> None:
    s = _open()
    assert s.proc.pid != os.getpid() and s.backends == ["synthetic"]
    t0 = time.monotonic()
    s.start()
    time.sleep(0.3)
    s.stop()
    t1 = time.monotonic()
    (tr,) = s.traces()
    assert tr.info.synthetic and len(tr.time) > 20
    # CLOCK_MONOTONIC is shared by processes: the child's timestamps fall inside the parent's span
    assert t0 <= tr.time[0] and tr.time[-1] <= t1
    assert np.median(np.diff(tr.time)) == pytest.approx(0.005, rel=0.2)
    assert s.proc.returncode == 0


def test_incremental_traces_while_sampling() -> None:
    s = _open().start()
    time.sleep(0.15)
    first = s.traces()[0]
    time.sleep(0.1)
    rest = s.traces(len(first.time))[0]
    s.stop()
    whole = s.traces()[0]
    assert len(rest.time) > 0 and rest.time[0] > first.time[-1]
    np.testing.assert_array_equal(whole.time[: len(first.time)], first.time)


def test_open_failure_raises_the_same_user_error_in_the_parent(tmp_path) -> None:
    with pytest.raises(SensorUnavailable, match="pm_counters"):
        _open(names=("pm_counters",), pm_counters={"root": str(tmp_path / "missing")})


def test_sigterm_to_the_child_does_not_lose_the_samples() -> None:
    """Slurm signals every process of the step; the parent still collects after the signal."""
    s = _open().start()
    time.sleep(0.1)
    os.kill(s.proc.pid, signal.SIGTERM)
    time.sleep(0.1)
    assert s.proc.poll() is None
    s.stop()
    assert len(s.traces()[0].time) > 20


def test_a_killed_child_is_reported_not_hung_on() -> None:
    s = _open().start()
    time.sleep(0.05)
    s.proc.kill()
    s.proc.wait()
    s.stop()  # logs the loss; must not raise or hang
    (tr,) = s.traces()
    assert len(tr.time) == 0 and tr.info.name.startswith("synthetic")


def test_child_exits_when_the_parent_closes_the_pipe() -> None:
    s = _open().start()
    s.proc.stdin.close()
    assert s.proc.wait(timeout=10) == 0


def test_output_printed_in_the_child_does_not_break_the_protocol(tmp_path) -> None:
    """Vendor libraries print to fd 1; in the child that must land on stderr, not in the pipe."""
    import sys

    mod = tmp_path / "noisy_backend.py"
    mod.write_text(
        "import os\n"
        "from energy_hpc.telemetry.synthetic import SyntheticSensor\n"
        "def open_sensor(ctx):\n"
        "    os.write(1, b'C library chatter on fd 1\\n')\n"
        "    print('python chatter on stdout')\n"
        "    return SyntheticSensor()\n"
    )
    from energy_hpc.telemetry import registry

    sys.path.insert(0, str(tmp_path))
    try:
        with registry.registered(registry.Backend("noisy", "noisy_backend", False, "test")):
            s = _open(names=("noisy",)).start()
            time.sleep(0.05)
            s.stop()
            assert len(s.traces()[0].time) > 2
    finally:
        sys.path.remove(str(tmp_path))
