"""The task registry: a task's unit, aux unit, description and options come from its workload class;
a task is added with register_task or, by an installed package, through the ``energy_hpc.tasks`` entry
points (a real dist-info folder on sys.path); validating a job file imports no model library."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import REPO, run_cli, write_job

from energy_hpc.errors import SpecError
from energy_hpc.spec import parse_job
from energy_hpc.workloads import registry
from energy_hpc.workloads.base import StageFn, Units, Workload
from energy_hpc.workloads.options import Option

from .conftest import job, run_case


class Count(Workload):
    """A test task: each iteration counts ``per_item`` units per batch item; nothing to load."""

    unit = "count"
    aux_unit = "item"
    description = "counts (test)"
    OPTIONS: ClassVar[dict[str, Option]] = {"per_item": Option(int, 2, "units per batch item", lo=1, hi=100)}

    @classmethod
    def prepare(cls, case) -> None:  # no model to materialise
        pass

    def load(self) -> None:
        pass

    def run(self, iteration: int, stage: StageFn) -> Units:
        n = self.case.batch_size
        return Units(units=n * int(self.case.options["per_item"]), aux_units=n)


class NoUnit(Workload):
    OPTIONS: ClassVar[dict[str, Option]] = {}

    def load(self) -> None:
        pass

    def run(self, iteration: int, stage: StageFn) -> Units:
        return Units(0)


COUNT_CASE = '[[case]]\ntask = "{task}"\nmodel = "none"\nsource = "hub"\nbatch_size = 3\n'


def test_builtin_units_come_from_the_workload_classes() -> None:
    for name, task in registry.TASKS.items():
        cls = registry.workload_class(name)
        assert (task.unit, task.aux_unit, task.description) == (cls.unit, cls.aux_unit, cls.description)
        assert registry.task_options(name) is cls.OPTIONS
        assert task.unit and task.description, name
        assert registry.workload_problem(cls) == ""


@pytest.fixture
def count_task() -> Iterator[registry.Task]:
    task = registry.register_task("count", Count)
    try:
        yield task
    finally:
        registry.TASKS.pop("count", None)


def test_a_registered_task_validates_and_runs(count_task: registry.Task) -> None:
    assert count_task == registry.Task("count", Count.__module__, "Count")
    assert registry.tasks()["count"].unit == "count"
    j = job(COUNT_CASE.format(task="count") + "[case.options]\nper_item = [1, 4]\n")
    assert [c.options["per_item"] for c in j.cases] == [1, 4]
    with pytest.raises(SpecError, match="out of range"):
        job(COUNT_CASE.format(task="count") + "[case.options]\nper_item = 0\n")
    ran = run_case(j, index=1)
    whole = ran.whole()
    assert (whole.units, whole.unit, whole.aux_units, whole.aux_unit) == (12, "count", 3, "item")


def test_register_task_refuses_an_incomplete_workload() -> None:
    with pytest.raises(ValueError, match="does not declare its unit"):
        registry.register_task("no-unit", NoUnit)
    with pytest.raises(ValueError, match="not a subclass"):
        registry.register_task("not-a-class", object)  # type: ignore[arg-type]
    assert "no-unit" not in registry.TASKS and "not-a-class" not in registry.TASKS


def test_an_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(SpecError, match="did you mean 'translation'"):
        parse_job('[job]\nname = "t"\n' + COUNT_CASE.format(task="translaton"))


SITE_MODULE = """
from energy_hpc.workloads.base import Units, Workload
from energy_hpc.workloads.options import Option


class Echo(Workload):
    unit = "echo"
    description = "repeats its input (a site's test task)"
    OPTIONS = {"times": Option(int, 1, "echoes per item", lo=1, hi=10)}

    @classmethod
    def prepare(cls, case):
        pass

    def load(self):
        pass

    def run(self, iteration, stage):
        return Units(units=self.case.batch_size * self.case.options["times"])


class NotAWorkload:
    unit = "thing"
"""

BROKEN = {
    "missing-module": "{module}_gone:Echo",
    "not-a-workload": "{module}:NotAWorkload",
    "text-to-image": "{module}:Echo",  # a built-in task's name is not taken over
}


def make_site(folder: Path, module: str) -> Path:
    """A folder holding what pip installs for a package that adds the task ``echo``, and three broken
    entry points: a real dist-info folder with entry_points.txt, found by importlib.metadata."""
    folder.mkdir()
    (folder / f"{module}.py").write_text(SITE_MODULE)
    info = folder / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    lines = [f"echo = {module}:Echo"] + [f"{k} = {v.format(module=module)}" for k, v in BROKEN.items()]
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n" + "\n".join(lines) + "\n")
    return folder


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = make_site(tmp_path / "site", "energy_hpc_test_site_tasks")
    monkeypatch.syspath_prepend(str(folder))
    registry.installed_tasks.cache_clear()
    yield folder
    registry.installed_tasks.cache_clear()  # read again without the site once sys.path is restored
    sys.modules.pop("energy_hpc_test_site_tasks", None)


class Warnings(logging.Handler):
    """The warning lines a logger writes (on the logger itself: whether the energy_hpc logger
    propagates depends on what ran before in this process)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_an_installed_entry_point_adds_a_task_and_broken_ones_are_skipped(site: Path) -> None:
    logger, seen = logging.getLogger(registry.__name__), Warnings()
    logger.addHandler(seen)
    try:
        found = registry.tasks()
        registry.tasks()  # entry points are read once
    finally:
        logger.removeHandler(seen)
    assert found["echo"] == registry.Task("echo", "energy_hpc_test_site_tasks", "Echo")
    assert found["text-to-image"].module == "energy_hpc.workloads.text_to_image"
    assert "missing-module" not in found and "not-a-workload" not in found
    warnings = seen.lines
    assert len(warnings) == len(BROKEN), warnings
    for name, message in zip(sorted(BROKEN), sorted(warnings), strict=True):
        assert message.startswith(f"energy_hpc.tasks entry point {name} = ") and "\n" not in message
    assert "ModuleNotFoundError" in " ".join(warnings) and "built-in task" in " ".join(warnings)

    j = job(COUNT_CASE.format(task="echo") + "[case.options]\ntimes = 2\n")
    ran = run_case(j)
    assert (ran.whole().units, ran.whole().unit) == (6, "echo")


def test_the_cli_sees_an_installed_task(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", "energy_hpc_test_site_cli")
    path = write_job(tmp_path, '[job]\nname = "t"\n' + COUNT_CASE.format(task="echo"))
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    r = run_cli("validate", str(path), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert [c["task"] for c in json.loads(r.stdout)["cases"]] == ["echo"]
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == len(BROKEN) and all("energy_hpc.tasks entry point" in x for x in lines), lines


def test_validating_every_task_imports_no_model_library() -> None:
    code = textwrap.dedent(
        """
        import sys
        from energy_hpc.spec import load_job
        from energy_hpc.workloads.registry import tasks

        cases = load_job(sys.argv[1]).cases
        print(sorted({c.task for c in cases}) == sorted(tasks()), [tasks()[c.task].unit for c in cases])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "diffusers", "transformers"))
        print(heavy)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "jobs" / "tiny-all-tasks.toml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    every_task, heavy = r.stdout.splitlines()
    assert every_task.startswith("True") and heavy == "[]"
