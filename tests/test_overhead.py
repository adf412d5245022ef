"""What keeps `energy-hpc run`'s own cost low (docs/performance.md, "Fixed overhead of a run"): the
command starts without the heavy libraries, and the process ends without the interpreter's last walk
over every object."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import pytest

from energy_hpc.context import RankContext, SingleComm
from energy_hpc.run import run_job
from energy_hpc.spec import parse_job
from energy_hpc.workloads import registry
from energy_hpc.workloads.base import StageFn, Units, Workload
from energy_hpc.workloads.options import Option

HEAVY = ("h5py", "xarray", "numpy", "torch", "mpi4py", "pandas", "matplotlib", "scipy")


def _python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_the_command_starts_without_heavy_libraries() -> None:
    """Every subcommand is configured at start-up; none may import a heavy library to do so (each
    costs tenths of a second on every command, `energy-hpc run` on every rank included)."""
    out = _python(
        "import sys\n"
        "from energy_hpc.cli import build_parser\n"
        "build_parser()\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert out == ""


@pytest.mark.parametrize("own_command_line", [True, False])
def test_objects_are_frozen_only_when_the_process_ends(own_command_line: bool) -> None:
    """Called as the process's command (no argv: the `energy-hpc` script, `python -m energy_hpc`), main
    freezes the heap before returning, sparing the teardown's collections; called with an argv (tests,
    a program embedding the command), it leaves the collector alone."""
    call = "main()" if own_command_line else "main(['sensors', '--json'])"
    out = _python(
        "import gc, sys\n"
        "sys.argv = ['energy-hpc', 'sensors', '--json']\n"
        "from energy_hpc.cli import main\n"
        f"rc = {call}\n"
        "print('RESULT', rc, gc.get_freeze_count() > 0)\n"
    )
    assert out.splitlines()[-1] == f"RESULT 0 {own_command_line}"


class Unloads(Workload):
    """A test task that notes, at each unload, whether the heap is frozen and how many of the case's
    measured windows exist by then."""

    unit = "tick"
    description = "notes the heap's state at unload (test)"
    OPTIONS: ClassVar[dict[str, Option]] = {}
    seen: ClassVar[list[tuple[int, bool]]] = []

    @classmethod
    def prepare(cls, case) -> None:
        pass

    def load(self) -> None:
        pass

    def run(self, iteration: int, stage: StageFn) -> Units:
        return Units(units=1.0)

    def unload(self) -> None:
        Unloads.seen.append((self.case.batch_size, gc.get_freeze_count() > 0))


@pytest.fixture
def unloads() -> Iterator[None]:
    registry.register_task("unloads", Unloads)
    Unloads.seen.clear()
    try:
        yield
    finally:
        registry.TASKS.pop("unloads", None)


def test_only_the_last_cases_unload_finds_the_heap_frozen_and_the_run_lets_go(
    unloads: None, tmp_path: Path
) -> None:
    """After the last case nothing but the gather follows, so its unload's full collection is spared by
    a frozen heap; earlier cases collect as ever (the next case loads into the memory freed), and the
    run lets go of the heap before returning, with every window measured and written."""
    assert gc.get_freeze_count() == 0
    job = parse_job(
        '[job]\nname = "unloads"\n[measure]\ndevice = "cpu"\nsensors = ["synthetic"]\nidle_seconds = 0\n'
        "interval_ms = 5\niterations = 2\nwarmup = 1\n"
        '[[case]]\ntask = "unloads"\nmodel = "none"\nsource = "hub"\nbatch_size = [1, 2, 4]\n',
        tmp_path / "job.toml",
    )
    ctx = RankContext(
        rank=0,
        size=1,
        local_rank=0,
        local_size=1,
        node_index=0,
        n_nodes=1,
        hostname="h",
        launcher="single",
        visible_env="",
        visible_devices=(),
    )
    result = run_job(job, tmp_path / "out", ctx, SingleComm())
    assert Unloads.seen == [(1, False), (2, False), (4, True)]
    assert gc.get_freeze_count() == 0
    assert result.status == "complete" and result.path is not None
    with h5py.File(result.path) as f:
        phase = np.array([x.decode() for x in f["windows"]["phase"][()]])
        case = f["windows"]["case"][()]
        status = np.array([x.decode() for x in f["windows"]["status"][()]])
    assert sorted(case[phase == "measure"].tolist()) == [0, 0, 1, 1, 2, 2]
    assert set(status) == {"ok"}


def test_stop_samples_until_the_slowest_sensor_has_refreshed_after_the_last_window() -> None:
    """The run stops sampling right after its last window now that no collection follows it: the last
    sample must still show a held counter refreshed after that window's end, or the window would have
    no energy. The synthetic sensor's counter holds for 100 ms (as NVML's): its last reading is the
    exact energy of a time after the window's end."""
    from energy_hpc.telemetry.sampler import MAX_TAIL_S, Sampler
    from energy_hpc.telemetry.synthetic import SyntheticSensor

    sensor = SyntheticSensor(base_W=100.0, amp_W=0.0, update_period_s=0.1)
    sampler = Sampler([sensor], 0.01, read_timeout_s=5.0).start()
    time.sleep(0.05)
    window_end = time.monotonic() - sensor.t_open
    sampler.stop()
    trace = sampler.traces()[0]
    assert trace.time[-1] - sensor.t_open >= window_end + 0.1
    # the held counter's last value: 100 W x the last refresh time, which is after the window's end
    assert trace.energy[-1] / 100.0 > window_end
    slow = Sampler([SyntheticSensor(update_period_s=30.0)], 0.01, read_timeout_s=5.0)
    assert slow.tail_s() == MAX_TAIL_S  # a slow sensor cannot hold the end of a run for long
