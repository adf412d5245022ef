"""The built-in architectures for random weights, by name. The modules of
:mod:`energy_hpc.workloads.configs` add theirs with :func:`register_random` when imported;
:mod:`energy_hpc.workloads.models` imports them when first asked and builds from what they registered.
This module imports nothing of energy_hpc, so the config modules need not import the model loader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RandomConfig:
    """A built-in architecture for random weights.

    ``build(folder)`` makes the model (tokenizer or processor included) and saves it with
    ``save_pretrained``; ``modules()`` gives the constructors of its networks without building them, so
    an architecture can be checked on the meta device (parameter counts) without making any weights.
    """

    name: str
    task: str
    build: Callable[[Path], None]
    modules: Callable[[], dict[str, Callable[[], Any]]]
    architecture: str  # the pipeline or model class it becomes, e.g. StableDiffusionXLPipeline
    about: str


RANDOM_CONFIGS: dict[str, RandomConfig] = {}


def register_random(
    name: str,
    task: str,
    build: Callable[[Path], None],
    modules: Callable[[], dict[str, Callable[[], Any]]],
    *,
    architecture: str,
    about: str,
) -> None:
    RANDOM_CONFIGS[name] = RandomConfig(name, task, build, modules, architecture, about)
