"""Speech recognition with a transformers speech-to-text model (Whisper, via
``AutoModelForSpeechSeq2Seq``).

One iteration transcribes ``batch_size`` clips in two stage windows: "features" (the feature
extractor's log-mel spectrogram on the CPU and the copy to the device) and "generate" (encoder and
decoder). Inputs are the .wav files of ``audio_folder`` taken in turn, or, when none is given,
deterministic tones of ``audio_seconds``.

Unit: sample (one clip transcribed); aux unit: audio-second (seconds of audio transcribed). The sample
is the primary unit because Whisper pads every clip to its window (30 s), so the compute per clip
hardly depends on the clip's length; J per audio-second follows from the aux count. A clip longer
than the window is cut to it, and only the seconds inside the window are counted.
"""

from __future__ import annotations

from typing import Any

from energy_hpc.workloads.base import StageFn, Units, Workload
from energy_hpc.workloads.inputs import in_turn, read_wavs, tone
from energy_hpc.workloads.options import Option

OPTIONS: dict[str, Option] = {
    "audio_folder": Option(
        str, "", "a folder of PCM .wav files, used in turn; empty: generated tones", path="folder"
    ),
    "audio_seconds": Option(
        float, 10.0, "length of each generated tone in seconds", lo=0.1, hi=3600, overridden_by="audio_folder"
    ),
    "clips": Option(
        int,
        8,
        "how many distinct tones to generate (used in turn)",
        lo=1,
        hi=100_000,
        overridden_by="audio_folder",
    ),
    "max_new_tokens": Option(int, 96, "most tokens generated per clip", lo=1, hi=100_000),
    "ignore_eos": Option(
        bool,
        False,
        "generate exactly max_new_tokens per clip (end-of-text is ignored), so "
        "the work does not depend on what the model hears",
    ),
    "language": Option(
        str,
        "",
        'language token for multilingual models, e.g. "en" (empty: the model\'s '
        "default; a multilingual Whisper then detects the language, an extra decoder pass)",
        blank="the model's default",
    ),
}


class SpeechRecognition(Workload):
    unit = "sample"
    aux_unit = "audio-second"
    description = "transformers speech-to-text (Whisper)"
    OPTIONS = OPTIONS

    def load(self) -> None:
        from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

        from energy_hpc.workloads.hf import load_model, load_processor

        o = self.case.options
        self.device.check_dtype(self.case.dtype)  # before anything loads
        folder = self.model_folder()
        self.processor = load_processor(AutoProcessor, folder)
        fe = self.processor.feature_extractor
        self.rate = int(fe.sampling_rate)
        self.window_s = float(getattr(fe, "chunk_length", 30))
        self.model = load_model(AutoModelForSpeechSeq2Seq, folder, self.device, self.case.dtype)
        if o["audio_folder"]:
            self.clips = read_wavs(o["audio_folder"], self.rate)
        else:
            self.clips = [tone(float(o["audio_seconds"]), self.rate, i) for i in range(int(o["clips"]))]
        n = int(o["max_new_tokens"])
        self.generate_kwargs: dict[str, Any] = {"max_new_tokens": n}
        if o["ignore_eos"]:
            self.generate_kwargs["min_new_tokens"] = n
        if o["language"]:
            self.generate_kwargs.update(language=o["language"], task="transcribe")
        self.dtype = self.device.dtype(self.case.dtype)

    def run(self, iteration: int, stage: StageFn) -> Units:
        import torch

        clips = in_turn(self.clips, iteration, self.case.batch_size)
        seconds = float(sum(min(len(c) / self.rate, self.window_s) for c in clips))
        with stage("features", self.unit) as w:
            feats = self.processor.feature_extractor(clips, sampling_rate=self.rate, return_tensors="pt")
            features = feats["input_features"].to(self.device.torch, dtype=self.dtype)
            w.units, w.aux_units, w.aux_unit = len(clips), seconds, self.aux_unit
        with stage("generate", self.unit) as w, torch.inference_mode():
            self.last_tokens = self.model.generate(features, **self.generate_kwargs)
            w.units, w.aux_units, w.aux_unit = len(clips), seconds, self.aux_unit
        return Units(len(clips), seconds)

    def component_roots(self) -> list[tuple[str, Any, bool]]:
        """The encoder, the decoder split by layer and part, the head (components.encoder_decoder_roots)."""
        from energy_hpc.workloads.components import encoder_decoder_roots

        return encoder_decoder_roots(self.model, self.case.components == "detail")

    def component_steps(self) -> list[Any]:
        """Prefill and decode steps with ``components = "detail"`` (components.generation_steps). A multilingual Whisper without
        ``language`` first detects the language with one forward of the whole model (encoder included):
        that pass is then the prefill step."""
        from energy_hpc.workloads.components import generation_steps

        return generation_steps(self.model, self.case.components)

    def unload(self) -> None:
        from energy_hpc.workloads.hf import free

        self.model = self.processor = None
        self.clips = []
        free(self.device)
