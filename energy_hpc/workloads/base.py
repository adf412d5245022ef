"""What every workload implements. Workloads know nothing of sensors: they load a model, run one
iteration when asked, say how many units of work it produced, and open stage windows through the
callable they are given when an iteration has parts worth separating (refiner, prefill/decode)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, ContextManager

from energy_hpc.spec import Case
from energy_hpc.windows import Window
from energy_hpc.workloads.options import Option

# stage(name, unit) -> context manager yielding the stage's Window (set .units on it)
StageFn = Callable[[str, str], ContextManager[Window]]


def no_stages(name: str, unit: str = "") -> ContextManager[Window]:
    return contextlib.nullcontext(Window(rank=-1, case=-1, phase=None, iteration=-1, start=0.0))  # type: ignore[arg-type]


@dataclass
class Units:
    units: float
    aux_units: float = 0.0


class Workload(ABC):
    task: ClassVar[str]
    unit: ClassVar[str]
    aux_unit: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, Option]]

    def __init__(self, case: Case, device: Any) -> None:
        """``device`` is a :class:`energy_hpc.workloads.device.TorchDevice`."""
        self.case, self.device = case, device

    @classmethod
    def prepare(cls, case: Case) -> None:
        """Materialise the model source if it needs it (random weights). Run once per node, before
        any rank loads; must be safe to call again."""

    @abstractmethod
    def load(self) -> None:
        """Load the model onto the device (measured as the ``load`` window)."""

    @abstractmethod
    def run(self, iteration: int, stage: StageFn) -> Units:
        """One iteration: a batch of ``case.batch_size`` inputs. Returns the units produced."""

    def unload(self) -> None:
        """Free the model and device memory before the next case."""
