"""Workload tests: tiny random-weight models built once per session into the session's model cache,
loaded through from_pretrained from their folders, run on the CPU with a real WindowLog."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from energy_hpc.jobtypes import Job
from energy_hpc.spec import parse_job
from energy_hpc.windows import Phase, Window, WindowLog
from energy_hpc.workloads.device import TorchDevice
from energy_hpc.workloads.registry import workload_class

CPU = TorchDevice("cpu", None)


@pytest.fixture(scope="session")
def tiny(model_cache: Path) -> Callable[[str], Path]:
    """tiny("tiny-llama") -> the folder of that built-in model (built on first use)."""
    from energy_hpc.workloads.models import materialise_random

    return materialise_random


def job(body: str, folder: Path | None = None) -> Job:
    """A job from the text of its [[case]] tables (a [job] header is added)."""
    text = '[job]\nname = "t"\n' + body
    return parse_job(text, (folder / "job.toml") if folder else "<job>")


@dataclass
class Ran:
    windows: list[Window]
    workload: object

    def stages(self, iteration: int = 0) -> dict[str, Window]:
        return {w.stage: w for w in self.windows if w.iteration == iteration and w.stage}

    def whole(self, iteration: int = 0) -> Window:
        return next(w for w in self.windows if w.iteration == iteration and not w.stage)


def run_case(j: Job, index: int = 0, iterations: int = 1) -> Ran:
    """What the runner does with one case, without sensors: prepare, load, iterations in windows."""
    case = j.cases[index]
    cls = workload_class(case.task)
    cls.prepare(case)
    wl = cls(case, CPU)
    log = WindowLog(0)
    wl.load()
    try:
        for i in range(iterations):
            with log.window(case.index, Phase.MEASURE, i, unit=wl.unit) as w:

                def stage(name: str, unit: str = "", _i: int = i):
                    return log.window(case.index, Phase.MEASURE, _i, stage=name, unit=unit or wl.unit)

                u = wl.run(i, stage)
                w.units, w.aux_units, w.aux_unit = u.units, u.aux_units, wl.aux_unit
    finally:
        wl.unload()
    return Ran(log.windows, wl)
