"""Random-weight image classifiers (ViT), with their image processor saved alongside."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from energy_hpc.workloads.configs.random_model import RandomTransformersModel


def _processor(size: int) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        from energy_hpc.workloads.quiet import quiet_libraries

        quiet_libraries()
        from transformers import ViTImageProcessorPil  # the PIL backend needs no torchvision

        ViTImageProcessorPil(
            size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ).save_pretrained(folder)

    return write


VIT_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "image_size": 224,
    "patch_size": 16,
    "num_labels": 1000,
}
VIT_LARGE = dict(
    VIT_BASE, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
)
TINY_VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "image_size": 32,
    "patch_size": 8,
    "num_labels": 10,
}

for _name, _model, _about in (
    (
        "tiny-vit",
        RandomTransformersModel("ViTForImageClassification", "ViTConfig", TINY_VIT, _processor(32)),
        "ViT at toy size (32x32 input, 10 classes)",
    ),
    (
        "vit-base-patch16-224",
        RandomTransformersModel(
            "ViTForImageClassification", "ViTConfig", VIT_BASE, _processor(224), save_fp16=True
        ),
        "ViT-B/16 (86.6M parameters, 224x224, 1000 classes)",
    ),
    (
        "vit-large-patch16-224",
        RandomTransformersModel(
            "ViTForImageClassification", "ViTConfig", VIT_LARGE, _processor(224), save_fp16=True
        ),
        "ViT-L/16 (304M parameters, 224x224, 1000 classes)",
    ),
):
    _model.register(_name, "image-classification", _about)
