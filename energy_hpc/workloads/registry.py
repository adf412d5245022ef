"""The tasks a job file can name. Importing this module imports no model library."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from energy_hpc.workloads.base import Workload
    from energy_hpc.workloads.options import Option


@dataclass(frozen=True)
class Task:
    name: str
    module: str
    cls: str
    unit: str  # what one unit of work is: image, token, sample, ...
    what: str
    aux_unit: str = ""  # a second count where the task has one: prompt tokens, seconds of audio


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "text-to-image",
            "energy_hpc.workloads.text_to_image",
            "TextToImage",
            "image",
            "diffusers text-to-image pipeline (Stable Diffusion 1.x/2.x, SDXL, optional refiner)",
        ),
        Task(
            "text-generation",
            "energy_hpc.workloads.text_generation",
            "TextGeneration",
            "token",
            "transformers causal LM, fixed number of new tokens, prefill and decode windows",
            "prompt-token",
        ),
        Task(
            "image-classification",
            "energy_hpc.workloads.image_classification",
            "ImageClassification",
            "image",
            "transformers image classifier (ViT, ConvNeXt, ResNet)",
        ),
        Task(
            "speech-recognition",
            "energy_hpc.workloads.speech_recognition",
            "SpeechRecognition",
            "sample",
            "transformers speech-to-text (Whisper)",
            "audio-second",
        ),
        Task(
            "translation",
            "energy_hpc.workloads.translation",
            "Translation",
            "token",
            "transformers encoder-decoder (Marian, T5, NLLB)",
            "source-token",
        ),
    )
}


def _module(task: str):
    return importlib.import_module(TASKS[task].module)


def task_options(task: str) -> dict[str, Option]:
    return _module(task).OPTIONS


def workload_class(task: str) -> type[Workload]:
    return getattr(_module(task), TASKS[task].cls)
