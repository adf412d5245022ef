"""Stand-in tokenizers for random-weight models, built offline.

A random-weight model needs a tokenizer whose ids fall inside its vocabulary, not the published one
(which would have to be downloaded). These are byte-level: every UTF-8 byte is one token and there are
no merges, so any text tokenises, ids stay small, and nothing but ``tokenizers``/``transformers`` is
needed (no sentencepiece). Text is about four times as many tokens as with a trained vocabulary;
the text-generation task's ``prompt_tokens`` option fixes input lengths where that matters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE tokenizers (GPT-2, CLIP, Whisper)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def write_clip_tokenizer(folder: Path, max_length: int = 77) -> int:
    """A CLIP tokenizer with a byte-level vocabulary and no merges; returns the vocab size.
    Its last two ids are ``<|startoftext|>`` and ``<|endoftext|>``."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(folder)
    return len(vocab)


def byte_level_tokenizer(
    specials: tuple[str, ...], *, max_length: int, prepend: str = "", append_eos: str = "", **roles: str
) -> PreTrainedTokenizerFast:
    """A fast tokenizer: ``specials`` take ids 0..k-1 in order, then the 256 bytes. ``roles`` name the
    special tokens' parts (``pad_token="<pad>"``, ``eos_token="</s>"``, ...). Every encoded text starts
    with ``prepend`` (Llama's ``<s>``) and ends with ``append_eos`` (T5's ``</s>``) where given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(specials)}
    for c in bytes_to_unicode().values():
        vocab[c] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=roles.get("unk_token")))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    if prepend or append_eos:
        ends = [t for t in (prepend, append_eos) if t]
        single = " ".join(t for t in (prepend, "$A", append_eos) if t)
        pair = " ".join(t for t in (prepend, "$A", append_eos, "$B", append_eos) if t)
        tk.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(t, vocab[t]) for t in ends]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tk, model_max_length=max_length, **roles)
