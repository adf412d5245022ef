"""What every workload implements. Workloads know nothing of sensors: they load a model, run one
iteration when asked, say how many units of work it produced, and open stage windows through the
callable they are given when an iteration has parts worth separating (refiner, prefill/decode).

A workload class is the one place a task is described: its unit, aux unit, one-line description and
options are class attributes, which the task registry (:mod:`energy_hpc.workloads.registry`) and the
job-file parser read."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from energy_hpc.jobtypes import Case
from energy_hpc.windows import Window
from energy_hpc.workloads.device import TorchDevice
from energy_hpc.workloads.options import Option

# stage(name, unit) -> context manager yielding the stage's Window (set .units on it)
StageFn = Callable[[str, str], AbstractContextManager[Window]]


def no_stages(name: str, unit: str = "") -> AbstractContextManager[Window]:
    return contextlib.nullcontext(Window(rank=-1, case=-1, phase=None, iteration=-1, start=0.0))  # type: ignore[arg-type]


@dataclass
class Units:
    units: float
    aux_units: float = 0.0


class Workload(ABC):
    unit: ClassVar[str]  # what one unit of work is: image, token, sample, ...
    aux_unit: ClassVar[str] = ""  # a second count where the task has one: prompt tokens, seconds of audio
    description: ClassVar[str] = ""  # one line: the library and the models it runs
    OPTIONS: ClassVar[dict[str, Option]]  # the task's [case.options], checked by the job-file parser

    def __init__(self, case: Case, device: TorchDevice) -> None:
        self.case, self.device = case, device

    @classmethod
    def prepare(cls, case: Case) -> None:
        """Check the case against its model and materialise the model if it needs it (random
        weights). Run once per node, before any rank loads or any sensor opens (a UserError here stops
        the run before any work); must be safe to call again."""
        from energy_hpc.workloads.models import check_random_task, model_folder

        check_random_task(case.task, case.source, case.model_path)
        model_folder(case.source, case.model_path)

    def model_folder(self) -> Path:
        """The local folder the case's model loads from (resolving hub ids offline)."""
        from energy_hpc.workloads.models import model_folder

        return model_folder(self.case.source, self.case.model_path)

    @abstractmethod
    def load(self) -> None:
        """Load the model onto the device (measured as the ``load`` window)."""

    @abstractmethod
    def run(self, iteration: int, stage: StageFn) -> Units:
        """One iteration: a batch of ``case.batch_size`` inputs. Returns the units produced."""

    def component_roots(self) -> list[tuple[str, Any, bool]]:
        """Where :mod:`energy_hpc.workloads.components` looks for the model's components: (name,
        module, split) in call order; a root with ``split`` is searched for embeddings, per-layer
        attention and MLP and heads, one without is a component itself. Default: the ``model``
        attribute, split."""
        return [("", getattr(self, "model", None), True)]

    def component_steps(self) -> list[Any]:
        """The :class:`~energy_hpc.workloads.components.Steps` of this workload's iterations (drivers
        whose calls are the steps, for ``components = "detail"``); default: none."""
        return []

    def unload(self) -> None:  # noqa: B027 (optional: a workload that holds memory overrides it)
        """Free the model and device memory before the next case."""


class StageSequence:
    """Consecutive stage windows inside one call that cannot be split by the caller, such as the
    prefill and decode of one ``generate()``: ``switch(name)`` closes the open stage and opens the
    next, from inside a callback. Used as a context manager, it closes the last stage on exit (and
    marks it failed if the body raised)."""

    def __init__(self, stage: StageFn, first: str, unit: str) -> None:
        self._stage, self._unit = stage, unit
        self._cm: AbstractContextManager[Window] | None = None
        self.window: Window | None = None
        self.windows: dict[str, Window] = {}
        self._first = first

    def switch(self, name: str, unit: str = "") -> Window:
        self._close(None, None, None)
        self._cm = self._stage(name, unit or self._unit)
        self.window = self.windows[name] = self._cm.__enter__()
        return self.window

    def _close(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            cm.__exit__(et, ev, tb)

    def __enter__(self) -> StageSequence:
        self.switch(self._first)
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(et, ev, tb)
