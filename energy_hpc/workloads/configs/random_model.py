"""One transformers model with random weights: its config, how its tokenizer or processor is made,
and the dtype it is saved in. The config families (language, vision, speech) describe their models
with it and register them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energy_hpc.workloads.random_registry import register_random

SEED = 0


@dataclass(frozen=True)
class RandomTransformersModel:
    model_class: str  # a transformers class name, e.g. LlamaForCausalLM
    config_class: str  # e.g. LlamaConfig
    config: dict[str, Any]
    write_extras: Callable[[Path], None]  # saves the tokenizer/processor into the folder
    generation: dict[str, Any] = field(default_factory=dict)  # generation_config.json fields, if any
    save_fp16: bool = False  # published sizes are saved in fp16, as their checkpoints are distributed

    def _make(self) -> Any:
        import transformers

        conf = getattr(transformers, self.config_class)(**self.config)
        return getattr(transformers, self.model_class)(conf)

    def modules(self) -> dict[str, Callable[[], Any]]:
        return {"model": self._make}

    def build(self, folder: Path) -> None:
        import torch

        self.write_extras(folder)
        torch.manual_seed(SEED)
        model = self._make()
        if self.generation:
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig(**self.generation)
        if self.save_fp16:
            model = model.half()
        model.save_pretrained(folder)

    def register(self, name: str, task: str, about: str) -> None:
        register_random(name, task, self.build, self.modules, architecture=self.model_class, about=about)
