"""Built-in architectures at published sizes: the networks construct on the meta device (no weights)
with the parameter counts of the released models."""

from __future__ import annotations

import pytest
import torch

from energy_hpc.workloads.models import random_configs

# parameters of the released checkpoints (summed over the pipeline's networks for diffusion)
PUBLISHED = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sdxl-base": {
        "unet": 2_567_463_684,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
    },
    "sdxl-refiner": {"unet": 2_259_526_660, "vae": 83_653_863, "text_encoder_2": 694_659_840},
    # PixArt-Sigma XL-2 1024: the transformer is diffusers' default PixArtTransformer2DModel (the
    # published "0.6B"), the encoder T5 v1.1 XXL's (the published "4.7B"), the VAE SDXL's
    "pixart-sigma": {"transformer": 610_856_096, "vae": 83_653_863, "text_encoder": 4_762_310_656},
    "llama-3-8b": {"model": 8_030_261_248},
    "llama-3.2-1b": {"model": 1_235_814_400},
    "llama-3.2-3b": {"model": 3_212_749_824},
    "t5-base": {"model": 222_903_552},
    "opus-mt-en-de": {"model": 74_410_496},
    "vit-base-patch16-224": {"model": 86_567_656},
    "vit-large-patch16-224": {"model": 304_326_632},
    "whisper-small": {"model": 241_734_912},
    "whisper-large-v3": {"model": 1_543_490_560},
}


def test_every_published_size_is_checked() -> None:
    assert set(PUBLISHED) == {n for n in random_configs() if not n.startswith("tiny-")}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_architecture_has_the_released_parameter_count(name: str) -> None:
    cfg = random_configs()[name]
    with torch.device("meta"):
        counts = {part: sum(p.numel() for p in make().parameters()) for part, make in cfg.modules().items()}
    assert counts == PUBLISHED[name]
