"""The tasks a job file can name, each mapped to where its workload class lives.

The class is the one source of everything else about a task: ``unit``, ``aux_unit``, ``description``
and ``OPTIONS`` (:class:`~energy_hpc.workloads.base.Workload`). Tasks come from three places:

- the built-in tasks listed in :data:`TASKS`;
- installed packages, through the entry-point group ``energy_hpc.tasks`` (the entry point's name is the
  task name, its value ``package.module:Class``), read once, the first time the tasks are asked for; an
  entry point that cannot be loaded, or whose class is not a complete workload, is skipped with one
  warning line, and one that reuses a built-in task's name is skipped too;
- :func:`register_task`, for tests and for a program that embeds energy-hpc.

Importing this module imports no model library, and neither does reading a built-in task's unit or
options: the workload modules import torch and their model libraries inside ``load()``.
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from energy_hpc.workloads.base import Workload
    from energy_hpc.workloads.options import Option

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "energy_hpc.tasks"


@dataclass(frozen=True)
class Task:
    """A task name and where its workload class lives (``module``, ``cls``: the class's qualified name
    in it). The rest is read from the class, which is imported when first asked for."""

    name: str
    module: str
    cls: str

    def workload(self) -> type[Workload]:
        obj: object = importlib.import_module(self.module)
        for part in self.cls.split("."):
            obj = getattr(obj, part)
        return cast("type[Workload]", obj)

    @property
    def unit(self) -> str:
        """What one unit of work is: image, token, sample, ..."""
        return self.workload().unit

    @property
    def aux_unit(self) -> str:
        """A second count where the task has one (prompt tokens, seconds of audio), else ""."""
        return self.workload().aux_unit

    @property
    def description(self) -> str:
        return self.workload().description

    @property
    def options(self) -> dict[str, Option]:
        return self.workload().OPTIONS


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("text-to-image", "energy_hpc.workloads.text_to_image", "TextToImage"),
        Task("text-generation", "energy_hpc.workloads.text_generation", "TextGeneration"),
        Task("image-classification", "energy_hpc.workloads.image_classification", "ImageClassification"),
        Task("speech-recognition", "energy_hpc.workloads.speech_recognition", "SpeechRecognition"),
        Task("translation", "energy_hpc.workloads.translation", "Translation"),
    )
}
BUILTIN_TASKS = tuple(TASKS)


def workload_problem(cls: object) -> str:
    """Why ``cls`` cannot be a task's workload class, or "" when it can."""
    from energy_hpc.workloads.base import Workload

    if not isinstance(cls, type) or not issubclass(cls, Workload):
        return f"{cls!r} is not a subclass of energy_hpc.workloads.base.Workload"
    name = cls.__qualname__
    unit = getattr(cls, "unit", None)
    if not isinstance(unit, str) or not unit:
        return f'{name} does not declare its unit (unit = "image", "token", ...)'
    for attr in ("aux_unit", "description"):
        if not isinstance(getattr(cls, attr, None), str):
            return f"{name}.{attr} is not a string"
    if not isinstance(getattr(cls, "OPTIONS", None), dict):
        return f"{name} does not declare OPTIONS (a dict of option name -> Option; {{}} for none)"
    if cls.__abstractmethods__:
        return f"{name} does not implement {', '.join(sorted(cls.__abstractmethods__))}"
    return ""


def register_task(name: str, workload: type[Workload]) -> Task:
    """Make ``name`` a task done by ``workload`` (a class defined at the top level of an importable
    module); a task of that name is replaced. Raises ValueError when the class is not a complete
    workload."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a task name must be a non-empty string, got {name!r}")
    problem = workload_problem(workload)
    if problem:
        raise ValueError(f"task {name!r}: {problem}")
    task = Task(name, workload.__module__, workload.__qualname__)
    TASKS[name] = task
    return task


@functools.cache
def installed_tasks() -> dict[str, Task]:
    """The tasks installed packages add through the ``energy_hpc.tasks`` entry points (read once;
    ``installed_tasks.cache_clear()`` reads them again)."""
    found: dict[str, Task] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            if ep.name in BUILTIN_TASKS:
                raise ValueError(f"{ep.name!r} is a built-in task")
            if not ep.attr:
                raise ValueError("the value must name a class: package.module:Class")
            problem = workload_problem(ep.load())
            if problem:
                raise ValueError(problem)
        except Exception as exc:  # whatever a third-party module raises on import, it is skipped
            first_line = (str(exc).strip().splitlines() or [""])[0]
            reason = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
            log.warning("%s entry point %s = %s skipped: %s", ENTRY_POINT_GROUP, ep.name, ep.value, reason)
            continue
        found[ep.name] = Task(ep.name, ep.module, ep.attr)
    return found


def tasks() -> dict[str, Task]:
    """Every task a job file can name: the built-in and registered ones, then the installed ones."""
    installed = {name: t for name, t in installed_tasks().items() if name not in TASKS}
    return {**TASKS, **installed}


def task(name: str) -> Task:
    """The task of that name (KeyError if there is none; the job-file parser names the choices)."""
    return tasks()[name]


def task_options(name: str) -> dict[str, Option]:
    return task(name).options


def workload_class(name: str) -> type[Workload]:
    return task(name).workload()
