"""Image classification with a transformers model (ViT, ConvNeXt, ResNet, ... via
``AutoModelForImageClassification``).

One iteration classifies ``batch_size`` images in two stage windows: "preprocess" (the image
processor's resize and normalisation on the CPU, and the copy to the device) and "forward" (the model).
Inputs are the images of ``image_folder`` taken in turn, or, when none is given, noise images from a
fixed seed (the cost of a forward pass does not depend on what the pixels show). Unit: image.
"""

from __future__ import annotations

from energy_hpc.workloads.base import StageFn, Units, Workload
from energy_hpc.workloads.inputs import in_turn, read_images, synthetic_images
from energy_hpc.workloads.options import Option

OPTIONS: dict[str, Option] = {
    "image_folder": Option(
        str, "", "a folder of images (png, jpg, ...), used in turn; empty: noise images", path="folder"
    ),
    "image_size": Option(
        int,
        0,
        "side in pixels of the generated noise images, before preprocessing (0: the model's input size)",
        lo=0,
        hi=16384,
        blank="the model's input size",
        overridden_by="image_folder",
    ),
    "images": Option(
        int,
        16,
        "how many distinct noise images to generate (used in turn)",
        lo=1,
        hi=100_000,
        overridden_by="image_folder",
    ),
    "seed": Option(int, 0, "seed of the noise images", lo=0, hi=2**32 - 1, overridden_by="image_folder"),
}


class ImageClassification(Workload):
    unit = "image"
    description = "transformers image classifier (ViT, ConvNeXt, ResNet)"
    OPTIONS = OPTIONS

    def load(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        from energy_hpc.workloads.hf import load_model, load_processor

        o = self.case.options
        self.device.check_dtype(self.case.dtype)  # before anything loads
        folder = self.model_folder()
        self.processor = load_processor(AutoImageProcessor, folder)
        self.model = load_model(AutoModelForImageClassification, folder, self.device, self.case.dtype)
        if o["image_folder"]:
            self.images = read_images(o["image_folder"])
        else:
            size = int(o["image_size"]) or int(getattr(self.model.config, "image_size", 224))
            self.images = synthetic_images(int(o["images"]), size, int(o["seed"]))
        self.dtype = self.device.dtype(self.case.dtype)

    def run(self, iteration: int, stage: StageFn) -> Units:
        import torch

        images = in_turn(self.images, iteration, self.case.batch_size)
        with stage("preprocess", self.unit) as w:
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device.torch, dtype=self.dtype)
            w.units = len(images)
        with stage("forward", self.unit) as w, torch.inference_mode():
            logits = self.model(pixel_values=pixels).logits
            self.last_top1 = logits.argmax(-1)
            w.units = len(images)
        return Units(len(images))

    def unload(self) -> None:
        from energy_hpc.workloads.hf import free

        self.model = self.processor = None
        self.images = []
        free(self.device)
