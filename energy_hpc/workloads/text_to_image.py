"""Text-to-image with diffusers: Stable Diffusion 1.x/2.x and SDXL, with an optional refiner stage.

One iteration generates ``batch_size`` images. With a refiner, the base pipeline stops at
``denoising_end`` and hands latents to the refiner, which finishes them; the two run in their own
stage windows so their time and energy separate ("base" versus "refined" in the seed study).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from energy_hpc.errors import ModelSourceError
from energy_hpc.jobtypes import Case
from energy_hpc.workloads.base import StageFn, Units, Workload
from energy_hpc.workloads.options import Option

log = logging.getLogger(__name__)

SEED_PROMPT = (
    "A hyper realistic photograph of a dew-covered spider web sparkling in the morning sun. Each "
    "strand is individually discernible, with water droplets reflecting the vibrant colors of a "
    "nearby flower."
)

OPTIONS: dict[str, Option] = {
    "steps": Option(int, 30, "denoising steps", lo=1, hi=1000),
    "guidance": Option(float, 7.5, "classifier-free guidance scale", lo=0, hi=100),
    "height": Option(
        int, 0, "image height in pixels (0: the model's default)", lo=0, hi=8192, blank="the model's default"
    ),
    "width": Option(
        int, 0, "image width in pixels (0: the model's default)", lo=0, hi=8192, blank="the model's default"
    ),
    "prompts": Option(
        list, [SEED_PROMPT], "prompts, used in turn to fill each batch", overridden_by="prompt_file"
    ),
    "prompt_file": Option(str, "", "a text file with one prompt per line (overrides prompts)", path="file"),
    "seed": Option(
        int, 0, "random seed of the first iteration (iteration i uses seed + i)", lo=0, hi=2**63 - 1
    ),
    "refiner": Option(
        str,
        "",
        "SDXL refiner: a model folder (source local), hub id (source hub) or built-in "
        "config (source random); empty: none. Needs an SDXL base.",
        path=True,
    ),
    "refiner_source": Option(
        str,
        "",
        "source of the refiner (default: the case's source)",
        choices=("", "local", "hub", "random"),
        blank="the case's source",
        applies_if="refiner",
    ),
    "denoising_end": Option(
        float,
        0.8,
        "fraction of steps the base runs before the refiner takes over",
        lo=0.0,
        hi=1.0,
        applies_if="refiner",
    ),
}


SDXL = "StableDiffusionXLPipeline"
REFINER = "StableDiffusionXLImg2ImgPipeline"


# the layers of a UNet block by type: (attribute path inside a block's transformer layers, kind)
_TRANSFORMER_LAYERS = (("attn1", "attn"), ("attn2", "xattn"), ("ff", "ff"))


def layer_types(name: str, block: Any) -> list[tuple[str, Any, bool]]:
    """Component roots of one UNet block (or a whole transformer denoiser) split by layer type:
    ``name.attn``, ``name.xattn``, ``name.ff``, ``name.resnet``, ``name.conv``, each a group of the
    block's modules of that type."""
    groups: dict[str, list[Any]] = {"resnet": list(getattr(block, "resnets", None) or [])}
    for kind in ("attn", "xattn", "ff"):
        groups[kind] = []
    transformers = list(getattr(block, "attentions", None) or [])
    if hasattr(block, "transformer_blocks"):  # a transformer denoiser is its own one transformer
        transformers.append(block)
    for transformer in transformers:
        for layer in getattr(transformer, "transformer_blocks", None) or []:
            for attr, kind in _TRANSFORMER_LAYERS:
                if getattr(layer, attr, None) is not None:
                    groups[kind].append(getattr(layer, attr))
    groups["conv"] = list(getattr(block, "downsamplers", None) or []) + list(
        getattr(block, "upsamplers", None) or []
    )
    return [(f"{name}.{kind}", mods, False) for kind, mods in groups.items() if mods]


class TextToImage(Workload):
    unit = "image"
    description = "diffusers text-to-image pipeline (Stable Diffusion 1.x/2.x, SDXL, optional refiner)"
    OPTIONS = OPTIONS

    @classmethod
    def prepare(cls, case: Case) -> None:
        """Besides the model: a refiner needs an SDXL base (only SDXL stops at ``denoising_end`` and
        hands over latents) and must itself be an SDXL img2img pipeline; both are checked from the
        configs before any weights are built or loaded."""
        from energy_hpc.workloads.models import architecture, check_random_task, model_folder

        check_random_task(case.task, case.source, case.model_path)
        refiner = case.options.get("refiner")
        if refiner:
            rsrc = case.options.get("refiner_source") or case.source
            check_random_task(case.task, rsrc, refiner)
            base = architecture(case.source, case.model_path)
            if base != SDXL:
                raise ModelSourceError(
                    f"options.refiner is set but the base model {case.model!r} is a {base or 'pipeline of unknown class'}"
                    f", not a {SDXL}: only SDXL bases stop at denoising_end and hand latents to a refiner; "
                    f"remove the refiner from this case or use an SDXL base"
                )
            kind = architecture(rsrc, refiner)
            if kind != REFINER:
                raise ModelSourceError(
                    f"options.refiner {refiner!r} is a {kind or 'pipeline of unknown class'}, "
                    f"not an SDXL refiner ({REFINER}); point it at e.g. "
                    "stabilityai/stable-diffusion-xl-refiner-1.0"
                )
            model_folder(rsrc, refiner)
        model_folder(case.source, case.model_path)

    def _prompts(self) -> list[str]:
        o = self.case.options
        if o.get("prompt_file"):
            lines = [x.strip() for x in Path(o["prompt_file"]).read_text().splitlines() if x.strip()]
            if lines:
                return lines
        return list(o.get("prompts") or [SEED_PROMPT])

    def load(self) -> None:
        import warnings

        from diffusers import DiffusionPipeline

        from energy_hpc.workloads.models import model_folder
        from energy_hpc.workloads.quiet import quiet_libraries

        self.device.check_dtype(self.case.dtype)  # before anything loads
        quiet_libraries()
        dtype = self.device.dtype(self.case.dtype)
        folder = self.model_folder()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.pipe = DiffusionPipeline.from_pretrained(folder, dtype=dtype).to(self.device.torch, dtype)
            self.pipe.set_progress_bar_config(disable=True)
            self.refiner = None
            if self.case.options.get("refiner"):
                rsrc = self.case.options.get("refiner_source") or self.case.source
                rfolder = model_folder(rsrc, self.case.options["refiner"])
                self.refiner = DiffusionPipeline.from_pretrained(rfolder, dtype=dtype).to(
                    self.device.torch, dtype
                )
                self.refiner.set_progress_bar_config(disable=True)
        self.prompts = self._prompts()

    def _batch_prompts(self, iteration: int) -> list[str]:
        n, p = self.case.batch_size, self.prompts
        start = iteration * n
        return [p[(start + i) % len(p)] for i in range(n)]

    def _size(self) -> dict[str, Any]:
        o = self.case.options
        return {k: o[k] for k in ("height", "width") if o.get(k)}

    def run(self, iteration: int, stage: StageFn) -> Units:
        import warnings

        import torch

        o = self.case.options
        prompts = self._batch_prompts(iteration)
        gen = torch.Generator(device="cpu").manual_seed(int(o["seed"]) + max(iteration, 0))
        common = {
            "prompt": prompts,
            "num_inference_steps": int(o["steps"]),
            "guidance_scale": float(o["guidance"]),
            "generator": gen,
        }
        with warnings.catch_warnings():  # diffusers' deprecation notices are not for our users
            warnings.simplefilter("ignore", FutureWarning)
            return self._run(prompts, common, stage)

    def _run(self, prompts: list[str], common: dict[str, Any], stage: StageFn) -> Units:
        o = self.case.options
        if self.refiner is None:
            with stage("base", self.unit) as w:
                out = self.pipe(**common, **self._size(), output_type="np")
                w.units = len(out.images)
            return Units(len(out.images))
        end = float(o["denoising_end"])
        with stage("base", self.unit) as w:
            latents = self.pipe(**common, **self._size(), output_type="latent", denoising_end=end).images
            w.units = len(prompts)
        with stage("refiner", self.unit) as w:
            out = self.refiner(**common, image=latents, denoising_start=end, output_type="np")
            w.units = len(out.images)
        return Units(len(out.images))

    def component_roots(self) -> list[tuple[str, Any, bool]]:
        """Text encoder(s), the denoiser's down / mid / up blocks, the VAE decoder; a refiner's the same
        under "refiner.". With ``components = "detail"`` each block is split by layer type instead:
        ``unet.down1.attn`` (self-attention), ``.xattn`` (cross-attention), ``.ff`` (feed-forward),
        ``.resnet``, ``.conv`` (down- and upsamplers), each one group of modules; the rest of a block
        (the norms and projections around its transformer layers) stays in the residual."""
        detail = self.case.components == "detail"
        roots: list[tuple[str, Any, bool]] = []
        for prefix, pipe in (("", self.pipe), ("refiner.", self.refiner)):
            if pipe is None:
                continue
            for enc in ("text_encoder", "text_encoder_2"):
                roots.append((f"{prefix}{enc}", getattr(pipe, enc, None), False))
            unet = getattr(pipe, "unet", None)
            if unet is not None:
                blocks = [(f"{prefix}unet.down{i}", b) for i, b in enumerate(unet.down_blocks)]
                blocks.append((f"{prefix}unet.mid", unet.mid_block))
                blocks += [(f"{prefix}unet.up{i}", b) for i, b in enumerate(unet.up_blocks)]
                for name, block in blocks:
                    roots += layer_types(name, block) if detail else [(name, block, False)]
            dit = getattr(pipe, "transformer", None)
            if dit is not None:  # a transformer denoiser (PixArt): its layers, or its layer types
                roots += (
                    layer_types(f"{prefix}transformer", dit)
                    if detail
                    else [(f"{prefix}transformer", dit, True)]
                )
            vae = getattr(pipe, "vae", None)
            roots.append((f"{prefix}vae.decode", getattr(vae, "decoder", None), False))
        return roots

    def component_steps(self) -> list[Any]:
        """With ``components = "detail"``: each UNet call is one denoising step; the timed calls inside
        it are told by first / middle / last step (timed only: a replay of every step would multiply
        the replay windows by the number of steps for the same computation)."""
        from energy_hpc.workloads.components import Steps, first_middle_last

        if self.case.components != "detail":
            return []
        pipes = [p for p in (self.pipe, self.refiner) if p is not None]
        denoisers = [getattr(p, "unet", None) or getattr(p, "transformer", None) for p in pipes]
        return [Steps(d, first_middle_last, replay=False) for d in denoisers if d is not None]

    def unload(self) -> None:
        import gc

        self.pipe = self.refiner = None
        gc.collect()
        if self.device.kind == "cuda":
            import torch

            torch.cuda.empty_cache()
