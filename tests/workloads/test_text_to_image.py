"""text-to-image: SDXL base hands latents to the refiner in its own stage window; a refiner needs an
SDXL base."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from energy_hpc.errors import ModelSourceError, SpecError

from .conftest import job, run_case

SDXL = """
[[case]]
task = "text-to-image"
model = "{model}"
source = "{source}"
batch_size = 2
[case.options]
steps = 4
prompts = ["a", "b"]
refiner = "{refiner}"
refiner_source = "{rsource}"
"""


def test_sdxl_base_and_refiner_each_have_a_stage_window_with_images(tiny) -> None:
    ran = run_case(
        job(SDXL.format(model="tiny-sdxl", source="random", refiner="tiny-sdxl-refiner", rsource="random"))
    )
    st = ran.stages()
    assert list(st) == ["base", "refiner"]
    assert all((w.units, w.unit) == (2, "image") for w in st.values())
    assert st["base"].end <= st["refiner"].start
    assert (ran.whole().units, ran.whole().unit) == (2, "image")


def test_sdxl_without_refiner_runs_base_only(tiny) -> None:
    ran = run_case(
        job(
            SDXL.format(model="tiny-sdxl", source="random", refiner="", rsource="").replace(
                "steps = 4", "steps = 2"
            )
        )
    )
    assert list(ran.stages()) == ["base"]


def test_refiner_with_a_stable_diffusion_1_base_is_refused_before_loading(tiny, tmp_path: Path) -> None:
    shutil.copytree(tiny("tiny-sd"), tmp_path / "sd")
    body = SDXL.format(model="sd", source="local", refiner="tiny-sdxl-refiner", rsource="random")
    with pytest.raises(
        ModelSourceError,
        match="is a StableDiffusionPipeline, not a StableDiffusionXLPipeline: only SDXL bases",
    ):
        run_case(job(body, tmp_path))


def test_refiner_that_is_not_an_sdxl_refiner_is_refused(tiny) -> None:
    body = SDXL.format(model="tiny-sdxl", source="random", refiner="tiny-sd", rsource="random")
    with pytest.raises(ModelSourceError, match="not an SDXL refiner"):
        run_case(job(body))


def test_random_config_of_another_task_is_refused_at_validation() -> None:
    body = SDXL.format(model="tiny-llama", source="random", refiner="", rsource="")
    with pytest.raises(SpecError, match=r"'tiny-llama' is a text-generation model.*tiny-sdxl"):
        job(body)
