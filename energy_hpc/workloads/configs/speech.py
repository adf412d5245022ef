"""Random-weight speech recognisers (Whisper), with a feature extractor and a stand-in tokenizer.

The stand-in tokenizer is Whisper's byte-level BPE without merges, plus the special tokens Whisper's
``generate`` needs (start of transcript, transcribe, no timestamps, one language). A toy Whisper takes a
1 s window (100 mel frames) instead of 30 s, so its encoder runs in milliseconds on a CPU.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from energy_hpc.workloads.configs.random_model import RandomTransformersModel
from energy_hpc.workloads.configs.tokenizers import bytes_to_unicode

SPECIALS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
)
IDS = {s: 256 + i for i, s in enumerate(SPECIALS)}  # after the 256 byte tokens


def _processor(mel_bins: int, chunk_seconds: int) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        from energy_hpc.workloads.quiet import quiet_libraries

        quiet_libraries()
        from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

        folder.mkdir(parents=True, exist_ok=True)
        vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
        vocab.update(IDS)
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("#version: 0.2\n")
        tok = WhisperTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
        tok.add_special_tokens({"additional_special_tokens": list(SPECIALS[1:])})
        fe = WhisperFeatureExtractor(feature_size=mel_bins, chunk_length=chunk_seconds)
        WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)

    return write


_TOKEN_IDS = {
    "pad_token_id": IDS["<|endoftext|>"],
    "bos_token_id": IDS["<|endoftext|>"],
    "eos_token_id": IDS["<|endoftext|>"],
    "decoder_start_token_id": IDS["<|startoftranscript|>"],
}
# an English-only generation config: no language detection, no timestamps, nothing suppressed
GENERATION: dict[str, Any] = dict(
    _TOKEN_IDS,
    no_timestamps_token_id=IDS["<|notimestamps|>"],
    is_multilingual=False,
    forced_decoder_ids=None,
    begin_suppress_tokens=None,
    suppress_tokens=None,
    return_timestamps=False,
)

WHISPER_LARGE_V3 = dict(
    vocab_size=51866,
    num_mel_bins=128,
    d_model=1280,
    encoder_layers=32,
    decoder_layers=32,
    encoder_attention_heads=20,
    decoder_attention_heads=20,
    encoder_ffn_dim=5120,
    decoder_ffn_dim=5120,
    max_source_positions=1500,
    max_target_positions=448,
    begin_suppress_tokens=None,
    suppress_tokens=None,
    **_TOKEN_IDS,
)
WHISPER_SMALL = dict(
    WHISPER_LARGE_V3,
    vocab_size=51865,
    num_mel_bins=80,
    d_model=768,
    encoder_layers=12,
    decoder_layers=12,
    encoder_attention_heads=12,
    decoder_attention_heads=12,
    encoder_ffn_dim=3072,
    decoder_ffn_dim=3072,
)
# 1 s window: 100 mel frames, 50 encoder positions after the stride-2 convolution
TINY_WHISPER = dict(
    WHISPER_LARGE_V3,
    vocab_size=320,
    num_mel_bins=80,
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    max_source_positions=50,
    max_target_positions=128,
)

for _name, _model, _about in (
    (
        "tiny-whisper",
        RandomTransformersModel(
            "WhisperForConditionalGeneration", "WhisperConfig", TINY_WHISPER, _processor(80, 1), GENERATION
        ),
        "Whisper at toy size (1 s window)",
    ),
    (
        "whisper-small",
        RandomTransformersModel(
            "WhisperForConditionalGeneration",
            "WhisperConfig",
            WHISPER_SMALL,
            _processor(80, 30),
            GENERATION,
            save_fp16=True,
        ),
        "Whisper small (242M parameters, 30 s window)",
    ),
    (
        "whisper-large-v3",
        RandomTransformersModel(
            "WhisperForConditionalGeneration",
            "WhisperConfig",
            WHISPER_LARGE_V3,
            _processor(128, 30),
            GENERATION,
            save_fp16=True,
        ),
        "Whisper large-v3 (1.55B parameters, 128 mel bins, 30 s window)",
    ),
):
    _model.register(_name, "speech-recognition", _about)
