"""Text-to-image with diffusers: Stable Diffusion 1.x/2.x and SDXL, with an optional refiner stage.

One iteration generates ``batch_size`` images. With a refiner, the base pipeline stops at
``denoising_end`` and hands latents to the refiner, which finishes them; the two run in their own
stage windows so their time and energy separate ("base" versus "refined" in the seed study).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from energy_hpc.workloads.base import StageFn, Units, Workload
from energy_hpc.workloads.options import Option

log = logging.getLogger(__name__)

SEED_PROMPT = ("A hyper realistic photograph of a dew-covered spider web sparkling in the morning sun. Each "
               "strand is individually discernible, with water droplets reflecting the vibrant colors of a "
               "nearby flower.")

OPTIONS: dict[str, Option] = {
    "steps": Option(int, 30, "denoising steps", lo=1, hi=1000),
    "guidance": Option(float, 7.5, "classifier-free guidance scale", lo=0, hi=100),
    "height": Option(int, 0, "image height in pixels (0: the model's default)", lo=0, hi=8192),
    "width": Option(int, 0, "image width in pixels (0: the model's default)", lo=0, hi=8192),
    "prompts": Option(list, [SEED_PROMPT], "prompts, used in turn to fill each batch"),
    "prompt_file": Option(str, "", "a text file with one prompt per line (overrides prompts)"),
    "seed": Option(int, 0, "random seed of the first iteration (iteration i uses seed + i)", lo=0, hi=2**63 - 1),
    "refiner": Option(str, "", "refiner model folder (source local) or hub id (source hub); empty: none"),
    "refiner_source": Option(str, "", "source of the refiner (default: the case's source)",
                             choices=("", "local", "hub", "random")),
    "denoising_end": Option(float, 0.8, "fraction of steps the base runs before the refiner takes over",
                            lo=0.0, hi=1.0),
}


def _quiet_libraries() -> None:
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class TextToImage(Workload):
    task = "text-to-image"
    unit = "image"

    @classmethod
    def prepare(cls, case) -> None:
        from energy_hpc.workloads.models import model_folder

        model_folder(case.source, case.model_path)
        if case.options.get("refiner"):
            model_folder(case.options.get("refiner_source") or case.source, case.options["refiner"])

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

        _quiet_libraries()
        self.device.check_dtype(self.case.dtype)
        dtype = self.device.dtype(self.case.dtype)
        folder = model_folder(self.case.source, self.case.model_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.pipe = DiffusionPipeline.from_pretrained(folder, torch_dtype=dtype).to(self.device.torch)
            self.pipe.set_progress_bar_config(disable=True)
            self.refiner = None
            if self.case.options.get("refiner"):
                rsrc = self.case.options.get("refiner_source") or self.case.source
                rfolder = model_folder(rsrc, self.case.options["refiner"])
                self.refiner = DiffusionPipeline.from_pretrained(rfolder, torch_dtype=dtype).to(self.device.torch)
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
        import torch

        o = self.case.options
        prompts = self._batch_prompts(iteration)
        gen = torch.Generator(device="cpu").manual_seed(int(o["seed"]) + max(iteration, 0))
        common = dict(prompt=prompts, num_inference_steps=int(o["steps"]), guidance_scale=float(o["guidance"]),
                      generator=gen)
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

    def unload(self) -> None:
        import gc

        self.pipe = self.refiner = None
        gc.collect()
        if self.device.kind == "cuda":
            import torch

            torch.cuda.empty_cache()
