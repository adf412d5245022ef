"""Random-weight Llama-style decoders at several sizes of one family, for model-size ladders
(``jobs/size-ladder.toml``, ``jobs/tiny-size-ladder.toml``).

Llama 3.2 1B and 3B follow their released ``config.json`` files (tied embeddings, GQA with 8 key-value
heads, the 128k vocabulary; the 8B rung is ``llama-3-8b`` in configs/language.py). The tiny rungs keep
the toy tokenizer and vocabulary of ``tiny-llama`` and grow width and depth, so a CPU runs all three in
seconds while their parameter counts span a factor of about 20.
"""

from __future__ import annotations

from energy_hpc.workloads.configs.language import _LLAMA_IDS, _LLAMA_TOK, TINY_LLAMA
from energy_hpc.workloads.configs.random_model import RandomTransformersModel

_LLAMA_3_2 = dict(
    vocab_size=128256,
    intermediate_size=8192,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    rope_theta=500000.0,
    rope_scaling={
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    hidden_act="silu",
    **_LLAMA_IDS,
)
LLAMA_3_2_1B = dict(_LLAMA_3_2, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, head_dim=64)
LLAMA_3_2_3B = dict(_LLAMA_3_2, hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, head_dim=128)
TINY_LLAMA_M = dict(TINY_LLAMA, hidden_size=128, intermediate_size=256, num_hidden_layers=4)
TINY_LLAMA_L = dict(TINY_LLAMA, hidden_size=256, intermediate_size=512, num_hidden_layers=6)

for _name, _config, _fp16, _about in (
    ("llama-3.2-1b", LLAMA_3_2_1B, True, "Llama 3.2 1B (1.24B parameters, tied embeddings, GQA 32/8 heads)"),
    ("llama-3.2-3b", LLAMA_3_2_3B, True, "Llama 3.2 3B (3.21B parameters, tied embeddings, GQA 24/8 heads)"),
    (
        "tiny-llama-m",
        TINY_LLAMA_M,
        False,
        "Llama architecture at toy size, 4 layers of width 128 (ladder rung)",
    ),
    (
        "tiny-llama-l",
        TINY_LLAMA_L,
        False,
        "Llama architecture at toy size, 6 layers of width 256 (ladder rung)",
    ),
):
    RandomTransformersModel("LlamaForCausalLM", "LlamaConfig", _config, _LLAMA_TOK, save_fp16=_fp16).register(
        _name, "text-generation", _about
    )
