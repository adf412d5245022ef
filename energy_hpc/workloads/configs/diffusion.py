"""Random-weight diffusion pipelines: toy sizes for tests and the demo, published sizes for jobs.

The published architectures (Stable Diffusion 1.5, SDXL base 1.0, SDXL refiner 1.0) are written out
from their released ``config.json`` files; ``tests/workloads/test_configs.py`` checks their parameter
counts against the published ones on the meta device (no weights are made). PixArt-Sigma (a transformer
denoiser, DiT-style, with a T5 text encoder) is diffusers' own default ``PixArtTransformer2DModel``
(the XL-2 1024 model), the T5 v1.1 XXL encoder and the SDXL VAE.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from energy_hpc.workloads.configs.tokenizers import write_clip_tokenizer
from energy_hpc.workloads.random_registry import register_random

SEED = 0
CLIP_VOCAB = 49408  # the published CLIP vocabulary; stand-in tokenizer ids are all below it
STANDIN_VOCAB = 2 * 256 + 2  # write_clip_tokenizer: bytes, bytes at word end, start and end of text

# CLIP text encoders: ViT-L/14 (SD 1.x, SDXL's first) and OpenCLIP ViT-bigG/14 (SDXL's second)
CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "vocab_size": CLIP_VOCAB,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
CLIP_G = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "max_position_embeddings": 77,
    "vocab_size": CLIP_VOCAB,
    "projection_dim": 1280,
    "hidden_act": "gelu",
}

VAE_FULL = {
    "block_out_channels": (128, 256, 512, 512),
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
}

UNET_SD15 = {
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

UNET_SDXL_BASE = {
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "use_linear_projection": True,
    "cross_attention_dim": 2048,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}  # 2816 = 6 time ids x 256 + 1280 pooled

UNET_SDXL_REFINER = {
    "block_out_channels": (384, 768, 1536, 1536),
    "layers_per_block": 2,
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (6, 12, 24, 24),
    "transformer_layers_per_block": 4,
    "use_linear_projection": True,
    "cross_attention_dim": 1280,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2560,
    "norm_num_groups": 32,
}  # 2560 = 5 time ids x 256 + 1280 pooled

# toy sizes: 16x16 latents, 32x32 images
CLIP_TINY = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 16,
    "vocab_size": 1000,
    "projection_dim": 32,
    "hidden_act": "gelu",
}
VAE_TINY = {
    "block_out_channels": (32, 64),
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
}
UNET_TINY = {
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "norm_num_groups": 32,
    "attention_head_dim": 8,
}
UNET_TINY_XL = dict(
    UNET_TINY,
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    cross_attention_dim=64,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 32,
)
UNET_TINY_XL_REFINER = dict(
    UNET_TINY_XL, cross_attention_dim=32, projection_class_embeddings_input_dim=5 * 8 + 32
)

SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
}


# PixArt-Sigma XL-2 1024: a transformer denoiser on 128x128 latents, conditioned on T5 v1.1 XXL
PIXART_SIGMA = {"sample_size": 128, "caption_channels": 4096, "use_additional_conditions": False}
T5_XXL_ENCODER = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "feed_forward_proj": "gated-gelu",
}
PIXART_SCHEDULER = {
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "num_train_timesteps": 1000,
}
# toy sizes: sample_size 32 is the smallest the pipeline's resolution bins know (256x256 images); the
# VAE scales by 8 as the real one does, so the latents are 32x32 and the transformer sees 256 patches
PIXART_TINY = {
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_layers": 2,
    "cross_attention_dim": 32,
    "sample_size": 32,
    "caption_channels": 32,
    "use_additional_conditions": False,
}
T5_TINY_ENCODER = {"vocab_size": 300, "d_model": 32, "d_ff": 37, "d_kv": 8, "num_heads": 4, "num_layers": 2}
VAE_TINY_8 = dict(
    VAE_TINY,
    block_out_channels=(32, 32, 32, 32),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1,
)
T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # pad 0, end of sequence 1, unknown 2, as T5's


def _t5_encoder(cfg: dict[str, Any]) -> Callable[[], Any]:
    def make() -> Any:
        from transformers import T5Config, T5EncoderModel

        return T5EncoderModel(T5Config(**cfg, pad_token_id=0, eos_token_id=1, is_encoder_decoder=False))

    return make


def _pixart(cfg: dict[str, Any]) -> Callable[[], Any]:
    def make() -> Any:
        from diffusers import PixArtTransformer2DModel

        return PixArtTransformer2DModel(**cfg)

    return make


class _PixArt:
    """A PixArt-Sigma pipeline: T5 encoder, transformer denoiser, VAE, DPM-Solver."""

    def __init__(
        self,
        transformer: dict[str, Any],
        t5: dict[str, Any],
        vae: tuple[dict[str, Any], int, float],
        save_fp16: bool,
    ) -> None:
        self.transformer, self.t5, self.vae, self.save_fp16 = transformer, t5, vae, save_fp16
        self.kind = "pixart"

    def modules(self) -> dict[str, Callable[[], Any]]:
        return {
            "transformer": _pixart(self.transformer),
            "vae": _vae(*self.vae),
            "text_encoder": _t5_encoder(self.t5),
        }

    def build(self, folder: Path) -> None:
        import torch
        from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline

        from energy_hpc.workloads.configs.tokenizers import byte_level_tokenizer

        tokenizer = byte_level_tokenizer(
            T5_SPECIALS,
            max_length=300,
            append_eos="</s>",
            pad_token="<pad>",
            eos_token="</s>",
            unk_token="<unk>",
        )
        torch.manual_seed(SEED)
        parts = {name: make() for name, make in self.modules().items()}
        pipe: Any = PixArtSigmaPipeline(  # diffusers' stubs do not show the DiffusionPipeline methods
            **parts, tokenizer=tokenizer, scheduler=DPMSolverMultistepScheduler(**PIXART_SCHEDULER)
        )
        if self.save_fp16:
            pipe.to(torch.float16)
        pipe.save_pretrained(folder)


def _clip(cfg: dict[str, Any], projection: bool) -> Callable[[], Any]:
    def make() -> Any:
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        # the stand-in tokenizer's last two ids are start and end of text (the pooled output is read at
        # the end-of-text token)
        conf = CLIPTextConfig(
            **cfg,
            bos_token_id=STANDIN_VOCAB - 2,
            eos_token_id=STANDIN_VOCAB - 1,
            pad_token_id=STANDIN_VOCAB - 1,
        )
        return (CLIPTextModelWithProjection if projection else CLIPTextModel)(conf)

    return make


def _unet(cfg: dict[str, Any]) -> Callable[[], Any]:
    def make() -> Any:
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel(**cfg)

    return make


def _vae(cfg: dict[str, Any], sample_size: int, scaling_factor: float) -> Callable[[], Any]:
    def make() -> Any:
        from diffusers import AutoencoderKL

        return AutoencoderKL(**cfg, sample_size=sample_size, scaling_factor=scaling_factor)

    return make


class _Pipeline:
    """One diffusers pipeline: its networks (constructors) and how the parts are put together."""

    def __init__(
        self,
        kind: str,
        unet: dict[str, Any],
        vae: tuple[dict[str, Any], int, float],
        text: tuple[dict[str, Any], ...],
        max_length: int,
        save_fp16: bool,
    ) -> None:
        self.kind, self.unet_cfg, self.vae_cfg, self.text = kind, unet, vae, text
        self.max_length, self.save_fp16 = max_length, save_fp16

    def modules(self) -> dict[str, Callable[[], Any]]:
        mods: dict[str, Callable[[], Any]] = {"unet": _unet(self.unet_cfg), "vae": _vae(*self.vae_cfg)}
        if self.kind == "sd":
            mods["text_encoder"] = _clip(self.text[0], False)
        elif self.kind == "sdxl":
            mods["text_encoder"] = _clip(self.text[0], False)
            mods["text_encoder_2"] = _clip(self.text[1], True)
        else:  # the refiner has only the second (bigG) text encoder
            mods["text_encoder_2"] = _clip(self.text[0], True)
        return mods

    def build(self, folder: Path) -> None:
        import torch
        from diffusers import (
            DDIMScheduler,
            EulerDiscreteScheduler,
            StableDiffusionPipeline,
            StableDiffusionXLImg2ImgPipeline,
            StableDiffusionXLPipeline,
        )
        from transformers import CLIPTokenizer

        tok_dir = folder / "_tokenizer"
        if write_clip_tokenizer(tok_dir, max_length=self.max_length) != STANDIN_VOCAB:
            raise AssertionError("the stand-in CLIP tokenizer changed size; update STANDIN_VOCAB")
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
        torch.manual_seed(SEED)
        parts = {name: make() for name, make in self.modules().items()}
        pipe: Any  # one of three pipeline classes
        if self.kind == "sd":
            pipe = StableDiffusionPipeline(
                **parts,
                tokenizer=tokenizer,
                scheduler=DDIMScheduler(**SCHEDULER, clip_sample=False, set_alpha_to_one=False),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        elif self.kind == "sdxl":
            pipe = StableDiffusionXLPipeline(
                **parts,
                tokenizer=tokenizer,
                tokenizer_2=tokenizer,
                scheduler=EulerDiscreteScheduler(**SCHEDULER),
            )
        else:
            pipe = StableDiffusionXLImg2ImgPipeline(
                **parts,
                text_encoder=None,
                tokenizer=None,
                tokenizer_2=tokenizer,
                scheduler=EulerDiscreteScheduler(**SCHEDULER),
                requires_aesthetics_score=True,
                force_zeros_for_empty_prompt=False,
            )
        if self.save_fp16:  # as the published checkpoints are distributed; halves the disk and the load
            pipe.to(torch.float16)
        pipe.save_pretrained(folder)
        shutil.rmtree(tok_dir)


_PIPELINE_CLASS = {
    "sd": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "refiner": "StableDiffusionXLImg2ImgPipeline",
    "pixart": "PixArtSigmaPipeline",
}

_PIPELINES: tuple[tuple[str, _Pipeline | _PixArt, str], ...] = (
    (
        "tiny-sd",
        _Pipeline("sd", UNET_TINY, (VAE_TINY, 32, 0.18215), (CLIP_TINY,), 16, False),
        "Stable Diffusion 1.x at toy size (32x32 images)",
    ),
    (
        "tiny-sdxl",
        _Pipeline("sdxl", UNET_TINY_XL, (VAE_TINY, 32, 0.13025), (CLIP_TINY, CLIP_TINY), 16, False),
        "SDXL base at toy size (32x32 images, two text encoders)",
    ),
    (
        "tiny-sdxl-refiner",
        _Pipeline("refiner", UNET_TINY_XL_REFINER, (VAE_TINY, 32, 0.13025), (CLIP_TINY,), 16, False),
        "SDXL refiner at toy size, pairs with tiny-sdxl",
    ),
    (
        "sd15",
        _Pipeline("sd", UNET_SD15, (VAE_FULL, 512, 0.18215), (CLIP_L,), 77, True),
        "Stable Diffusion 1.5 (UNet 860M, 512x512)",
    ),
    (
        "sdxl-base",
        _Pipeline("sdxl", UNET_SDXL_BASE, (VAE_FULL, 1024, 0.13025), (CLIP_L, CLIP_G), 77, True),
        "SDXL base 1.0 (UNet 2.6B, 1024x1024)",
    ),
    (
        "sdxl-refiner",
        _Pipeline("refiner", UNET_SDXL_REFINER, (VAE_FULL, 1024, 0.13025), (CLIP_G,), 77, True),
        "SDXL refiner 1.0 (UNet 2.3B), pairs with sdxl-base",
    ),
    (
        "tiny-pixart",
        _PixArt(PIXART_TINY, T5_TINY_ENCODER, (VAE_TINY_8, 256, 0.13025), False),
        "PixArt-Sigma at toy size: a transformer denoiser (256x256 images, 256 patches)",
    ),
    (
        "pixart-sigma",
        _PixArt(PIXART_SIGMA, T5_XXL_ENCODER, (VAE_FULL, 1024, 0.13025), True),
        "PixArt-Sigma XL-2 1024 (transformer denoiser 0.6B, T5 v1.1 XXL encoder 4.8B, 1024x1024)",
    ),
)
for _name, _pipe, _about in _PIPELINES:
    register_random(
        _name,
        "text-to-image",
        _pipe.build,
        _pipe.modules,
        architecture=_PIPELINE_CLASS[_pipe.kind],
        about=_about,
    )
