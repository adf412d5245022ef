"""Test-only additions, installed in-process (monkeypatch) or in a subprocess (fault_entry.py):

- a ``sleep`` task: each iteration sleeps (no CPU burnt on a shared machine), one unit per second;
- a ``faulty`` sensor: a synthetic channel whose reads raise SensorReadError after ``fail_after``
  reads, every read from then on (``vanish = true``) or every ``every``-th read; or that hangs from
  read ``hang_after`` on; or that sends its own process SIGTERM on read ``sigterm_on_read``;
- fault injection from the environment (ENERGY_HPC_TEST_FAULT), e.g. ``outside:1``: rank 1 raises
  outside the case loop (in its cool-down), through the ``sleep`` that :func:`fault_sleep` makes for
  ``run_job`` (fault_entry.py passes it).

Nothing here is imported by the package.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from energy_hpc.errors import SensorReadError
from energy_hpc.telemetry.base import ChannelInfo, Reading, Scope, Sensor, SensorContext
from energy_hpc.workloads.base import Units, Workload
from energy_hpc.workloads.options import Option

OPTIONS = {"seconds": Option(float, 0.1, "seconds per iteration", lo=0.0, hi=3600.0)}


class SleepWorkload(Workload):
    task = "sleep"
    unit = "second"
    OPTIONS = OPTIONS

    @classmethod
    def prepare(cls, case) -> None:  # nothing to materialise
        pass

    def load(self) -> None:
        piddir = os.environ.get("ENERGY_HPC_TEST_PIDDIR")
        if piddir:
            rank = os.environ.get("PMI_RANK", "0")
            Path(piddir, f"rank-{rank}.pid").write_text(str(os.getpid()))

    def run(self, iteration: int, stage) -> Units:
        s = float(self.case.options.get("seconds", 0.1))
        time.sleep(s)
        return Units(units=s)


HANG = threading.Event()


class FaultySensor(Sensor):
    backend = "faulty"

    def __init__(
        self,
        fail_after: int = 10,
        vanish: bool = True,
        every: int = 2,
        hang_after: int = 0,
        sigterm_on_read: int = 0,
    ) -> None:
        self.fail_after, self.vanish, self.every = int(fail_after), bool(vanish), max(int(every), 1)
        self.hang_after = int(hang_after)  # read number from which a read blocks (0: never)
        self.sigterm_on_read = int(sigterm_on_read)  # read number that sends this process SIGTERM
        self.reads = 0
        self.t0 = time.monotonic()
        self._info = ChannelInfo(
            name="faulty:gpu0",
            scope=Scope.GPU,
            device="faulty-gpu0",
            backend="faulty",
            has_power=True,
            has_energy=False,
            synthetic=True,
            label="SYNTHETIC faulty sensor",
            note="test sensor that fails",
        )

    def channels(self) -> Sequence[ChannelInfo]:
        return [self._info]

    def read(self) -> Reading:
        self.reads += 1
        if self.sigterm_on_read and self.reads == self.sigterm_on_read:
            os.kill(os.getpid(), signal.SIGTERM)
        if self.hang_after and self.reads >= self.hang_after:
            HANG.wait(120)  # a driver call that never returns (released after 2 min so no test leaks it)
            raise SensorReadError("hung read released (test)")
        if self.reads > self.fail_after and (self.vanish or self.reads % self.every == 0):
            raise SensorReadError("device fell off the bus (injected)")
        return Reading(power=[100.0], energy=[float("nan")])


def open_sensor(ctx: SensorContext) -> Sensor:
    return FaultySensor(**dict(ctx.options.get("faulty", {})))


def install(patch=None) -> None:
    """Register the sleep task and the faulty sensor; ``patch`` is pytest's monkeypatch (in-process: all
    undone when the test ends) or None (a subprocess: for good)."""
    from energy_hpc.telemetry import registry
    from energy_hpc.workloads import registry as tasks

    setitem = patch.setitem if patch else (lambda d, k, v: d.__setitem__(k, v))
    setitem(tasks.TASKS, "sleep", tasks.Task("sleep", __name__, "SleepWorkload"))
    if patch:  # this test's own table of backends, the process's put back when the test ends
        patch.setattr(registry, "BACKENDS", registry.backends())
    registry.register_backend(registry.Backend("faulty", __name__, False, "faulty test sensor"))


def fault_sleep() -> Callable[[float], None] | None:
    """The ``sleep`` for ``run_job`` that injects the fault ENERGY_HPC_TEST_FAULT names on this rank, or
    None: ``outside:R`` makes rank R raise in its cool-down (the runner's second sleep)."""
    fault = os.environ.get("ENERGY_HPC_TEST_FAULT", "")
    if not (fault.startswith("outside:") and os.environ.get("PMI_RANK", "0") == fault.split(":")[1]):
        return None
    calls = [0]

    def sleep_then_fail(seconds: float) -> None:
        calls[0] += 1
        if calls[0] == 2:  # the first is the idle baseline, the second the cool-down
            raise RuntimeError("injected fault outside the cases")
        time.sleep(seconds)

    return sleep_then_fail


def sleep_job(
    name: str = "fault",
    *,
    iterations: int = 10,
    seconds: float = 0.2,
    spill_seconds: float = 1,
    sensors: str = '["synthetic"]',
    interval_ms: float = 5,
    extra_measure: str = "",
) -> str:
    return f"""
[job]
name = "{name}"
[measure]
interval_ms = {interval_ms}
idle_seconds = 0.2
cooldown_seconds = 0.2
warmup = 0
iterations = {iterations}
spill_seconds = {spill_seconds}
sensors = {sensors}
{extra_measure}
[[case]]
task = "sleep"
model = "none"
source = "hub"
[case.options]
seconds = {seconds}
"""
