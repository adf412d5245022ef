"""The shipped job files: each validates (local model folders stood in by folders holding an empty
config, named as `energy-hpc stage` makes them), random configs fit their tasks, the seed study pairs
an SDXL base with an SDXL refiner, and tiny-all-tasks runs end to end through the CLI."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
from helpers import REPO, run_cli

from energy_hpc.cli import main
from energy_hpc.commands.stage import folder_name
from energy_hpc.spec import load_job
from energy_hpc.workloads.models import check_random_task
from energy_hpc.workloads.registry import TASKS, workload_class
from energy_hpc.workloads.text_to_image import SEED_PROMPT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MINE = sorted(p.name for p in (REPO / "jobs").glob("*.toml") if p.name not in ("demo.toml", "soak.toml"))
PATH_OPTIONS = ("refiner",)


def test_the_promised_jobs_are_shipped() -> None:
    assert {
        "sdxl-refiner-precision.toml",
        "llm-generation.toml",
        "image-classification.toml",
        "speech-recognition.toml",
        "translation.toml",
        "workload-mix.toml",
        "tiny-all-tasks.toml",
        # the studies of issues 13 and 14, each with a twin that runs on a CPU
        "model-structures.toml",
        "tiny-model-structures.toml",
        "size-ladder.toml",
        "tiny-size-ladder.toml",
        "power-caps.toml",
        "emulated-power-caps.toml",
    } <= set(MINE)


def _local_paths(text: str) -> list[str]:
    paths = []
    for case in tomllib.loads(text)["case"]:
        if case.get("source", "local") == "local":
            models = case["model"] if isinstance(case["model"], list) else [case["model"]]
            paths += models + [
                case.get("options", {}).get(k) for k in PATH_OPTIONS if case.get("options", {}).get(k)
            ]
    return paths


def _stand_in(name: str, tmp_path: Path) -> Path:
    """A copy of the job in tmp_path/jobs with a folder wherever it names a local model, holding only an
    empty config.json (validation checks that a model folder holds one)."""
    (tmp_path / "jobs").mkdir(exist_ok=True)
    job = tmp_path / "jobs" / name
    shutil.copy(REPO / "jobs" / name, job)
    for p in _local_paths(job.read_text()):
        (job.parent / p).mkdir(parents=True, exist_ok=True)
        (job.parent / p / "config.json").write_text("{}")
    return job


@pytest.mark.parametrize("name", MINE)
def test_shipped_job_validates(name: str, tmp_path: Path, capsys) -> None:
    assert main(["validate", str(_stand_in(name, tmp_path))]) == 0, capsys.readouterr().err
    assert "case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "jobs").glob("*.toml")))
def test_every_shipped_job_validates_without_its_models(name: str, capsys) -> None:
    """As shipped, with no weights staged: --no-models checks the rest and lists every case."""
    assert main(["validate", "--no-models", str(REPO / "jobs" / name)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    n = len(load_job(REPO / "jobs" / name, check_models=False).cases)
    assert f"{n} case(s)" in out.splitlines()[0]
    assert [line.split()[0] for line in out.splitlines()[1:] if line[2:5].strip().isdigit()] == [
        str(i) for i in range(n)
    ]


@pytest.mark.parametrize("name", MINE)
def test_local_folders_are_where_the_stage_command_in_the_comments_puts_them(name: str) -> None:
    text = (REPO / "jobs" / name).read_text()
    staged = {
        folder_name(m)
        for line in re.findall(r"energy-hpc stage ([^\n]+) --to models", text)
        for m in line.split()
    }
    for p in _local_paths(text):
        assert p.startswith("../models/") and Path(p).name in staged, p


@pytest.mark.parametrize("name", MINE)
def test_random_configs_fit_their_tasks(name: str, tmp_path: Path) -> None:
    for case in load_job(_stand_in(name, tmp_path)).cases:
        assert case.task in TASKS
        check_random_task(case.task, case.source, case.model_path)
        if case.options.get("refiner") and case.options.get("refiner_source") == "random":
            check_random_task(case.task, "random", case.options["refiner"])


def test_seed_study_pairs_sdxl_base_with_refiner_in_both_precisions(
    tiny, tmp_path: Path, monkeypatch
) -> None:
    job = _stand_in("sdxl-refiner-precision.toml", tmp_path)
    models = tmp_path / "models"
    for target, tiny_name in (
        ("stabilityai--stable-diffusion-xl-base-1.0", "tiny-sdxl"),
        ("stabilityai--stable-diffusion-xl-refiner-1.0", "tiny-sdxl-refiner"),
    ):
        shutil.rmtree(models / target)
        (models / target).symlink_to(tiny(tiny_name), target_is_directory=True)
    monkeypatch.chdir(
        job.parent
    )  # option paths resolve against the working directory (see docs/workloads.md)
    cases = load_job(job).cases
    assert sorted((c.label, c.dtype) for c in cases) == [
        ("base", "fp16"),
        ("base", "fp32"),
        ("base+refiner", "fp16"),
        ("base+refiner", "fp32"),
    ]
    for c in cases:
        assert list(c.options["prompts"]) == [SEED_PROMPT]
        workload_class(c.task).prepare(c)  # checks the refiner's base is SDXL and the refiner a refiner


@pytest.fixture(scope="module")
def tiny_all_tasks(tmp_path_factory, model_cache: Path) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("tiny-all-tasks")
    t0 = time.monotonic()
    r = run_cli(
        "run",
        str(REPO / "jobs" / "tiny-all-tasks.toml"),
        "-o",
        str(out),
        "--sensors",
        "synthetic",
        env={"ENERGY_HPC_CACHE": os.environ["ENERGY_HPC_CACHE"]},
    )
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip()), wall


def test_tiny_all_tasks_runs_every_task_with_its_units(tiny_all_tasks) -> None:
    path, wall = tiny_all_tasks
    cases = xr.open_dataset(path, group="cases", engine="h5netcdf")
    w = xr.open_dataset(path, group="windows", engine="h5netcdf").to_dataframe()
    assert set(cases["task"].values) == set(TASKS)
    measured = w[w["phase"] == "measure"]
    assert (measured["status"] == "ok").all() and (measured["units"] > 0).all()
    for i, task in enumerate(cases["task"].values):
        rows = measured[(measured["case"] == i) & (measured["stage"] == "")]
        assert len(rows) == 2 and set(rows["unit"]) == {TASKS[task].unit}
        assert set(rows["aux_unit"]) == {TASKS[task].aux_unit}
    stages = {
        (cases["task"].values[c], s) for c, s in zip(measured["case"], measured["stage"], strict=False) if s
    }
    assert {
        ("text-to-image", "refiner"),
        ("text-generation", "prefill"),
        ("text-generation", "decode"),
        ("image-classification", "forward"),
        ("speech-recognition", "generate"),
        ("translation", "decode"),
    } <= stages
    assert wall < 120, f"tiny-all-tasks took {wall:.0f} s; it is meant to run in under two minutes"
