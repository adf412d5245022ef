"""Random-weight language models: causal LMs for text generation, encoder-decoders for translation.

Published sizes follow the released ``config.json`` files (Llama 3 8B, T5-base, Marian opus-mt-en-de);
their tokenizers are byte-level stand-ins (configs/tokenizers.py), so special-token ids differ from the
published ones while every shape that costs compute (vocabulary, widths, depths, heads) is the same.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from energy_hpc.workloads.configs.random_model import RandomTransformersModel
from energy_hpc.workloads.configs.tokenizers import byte_level_tokenizer


def _tokenizer(specials: tuple[str, ...], max_length: int, **kw: str) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        byte_level_tokenizer(specials, max_length=max_length, **kw).save_pretrained(folder)

    return write


# causal LMs: <unk>=0, <s>=1, </s>=2, then bytes; every prompt starts with <s>
_LLAMA_TOK = _tokenizer(
    ("<unk>", "<s>", "</s>"), 8192, prepend="<s>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
)
_LLAMA_IDS = {"bos_token_id": 1, "eos_token_id": 2}

LLAMA_3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    hidden_act="silu",
    **_LLAMA_IDS,
)
TINY_LLAMA = dict(
    vocab_size=384,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
    **_LLAMA_IDS,
)

# T5: <pad>=0 (also the decoder start), </s>=1, <unk>=2; every input ends with </s>
_T5_TOK = _tokenizer(
    ("<pad>", "</s>", "<unk>"), 512, append_eos="</s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
)
_T5_IDS = {"pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}
T5_BASE = dict(
    vocab_size=32128,
    d_model=768,
    d_ff=3072,
    d_kv=64,
    num_heads=12,
    num_layers=12,
    num_decoder_layers=12,
    feed_forward_proj="relu",
    tie_word_embeddings=True,
    **_T5_IDS,
)
TINY_T5 = dict(
    vocab_size=320,
    d_model=32,
    d_ff=64,
    d_kv=8,
    num_heads=4,
    num_layers=2,
    num_decoder_layers=2,
    feed_forward_proj="relu",
    tie_word_embeddings=True,
    relative_attention_num_buckets=8,
    **_T5_IDS,
)

# Marian: </s>=0, <unk>=1, <pad>=2 (the published vocabulary puts <pad> last; here it is id 2)
_MARIAN_TOK = _tokenizer(
    ("</s>", "<unk>", "<pad>"), 512, append_eos="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
)
OPUS_MT_EN_DE = {
    "vocab_size": 58101,
    "d_model": 512,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 8,
    "decoder_attention_heads": 8,
    "encoder_ffn_dim": 2048,
    "decoder_ffn_dim": 2048,
    "max_position_embeddings": 512,
    "activation_function": "swish",
    "scale_embedding": True,
    "share_encoder_decoder_embeddings": True,
    "pad_token_id": 2,
    "eos_token_id": 0,
    "decoder_start_token_id": 2,
    "forced_eos_token_id": 0,
}

for _name, _model, _task, _about in (
    (
        "tiny-llama",
        RandomTransformersModel("LlamaForCausalLM", "LlamaConfig", TINY_LLAMA, _LLAMA_TOK),
        "text-generation",
        "Llama architecture at toy size",
    ),
    (
        "llama-3-8b",
        RandomTransformersModel("LlamaForCausalLM", "LlamaConfig", LLAMA_3_8B, _LLAMA_TOK, save_fp16=True),
        "text-generation",
        "Llama 3 8B (8.0B parameters, GQA 32/8 heads, 128k vocabulary)",
    ),
    (
        "tiny-t5",
        RandomTransformersModel("T5ForConditionalGeneration", "T5Config", TINY_T5, _T5_TOK),
        "translation",
        "T5 encoder-decoder at toy size",
    ),
    (
        "t5-base",
        RandomTransformersModel("T5ForConditionalGeneration", "T5Config", T5_BASE, _T5_TOK, save_fp16=True),
        "translation",
        "T5-base (223M parameters)",
    ),
    (
        "opus-mt-en-de",
        RandomTransformersModel("MarianMTModel", "MarianConfig", OPUS_MT_EN_DE, _MARIAN_TOK, save_fp16=True),
        "translation",
        "Marian opus-mt-en-de (74M parameters)",
    ),
):
    _model.register(_name, _task, _about)
