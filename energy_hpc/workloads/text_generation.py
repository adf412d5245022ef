"""Text generation with a transformers causal language model (Llama, Mistral, GPT-2, ...).

One iteration generates exactly ``max_new_tokens`` tokens for each of ``batch_size`` prompts, greedily,
with end-of-sequence ignored (``min_new_tokens = max_new_tokens``), so every dtype and batch size does
the same amount of work. The ``generate`` call is split into two stage windows: "prefill" (the
prompt's forward pass up to the first new token: time to first token) and "decode" (every further
token). Units: generated tokens; aux units: prompt tokens (padding excluded).
"""

from __future__ import annotations

import logging
from typing import Any

from energy_hpc.errors import ModelSourceError, SpecError
from energy_hpc.workloads.base import StageFn, Units, Workload
from energy_hpc.workloads.inputs import PROMPT, in_turn, text_lines
from energy_hpc.workloads.options import Option

log = logging.getLogger(__name__)

OPTIONS: dict[str, Option] = {
    "max_new_tokens": Option(
        int, 128, "tokens generated per prompt, exactly (end-of-sequence is ignored)", lo=1, hi=1_000_000
    ),
    "prompt_tokens": Option(
        int,
        0,
        "prompt length in tokens: 0 keeps each prompt as written (batches are "
        "left-padded); N repeats or cuts each prompt's tokens to exactly N",
        lo=0,
        hi=1_000_000,
        blank="each prompt as written",
    ),
    "prompts": Option(
        list, [PROMPT], "prompts, used in turn to fill each batch", overridden_by="prompt_file"
    ),
    "prompt_file": Option(str, "", "a text file with one prompt per line (overrides prompts)", path="file"),
    "attention": Option(
        str,
        "",
        "attention implementation (empty: the library's default, sdpa where it can)",
        choices=("", "eager", "sdpa", "flash_attention_2"),
        blank="the library's default",
    ),
}


class TextGeneration(Workload):
    unit = "token"
    aux_unit = "prompt-token"
    description = "transformers causal LM, fixed number of new tokens, prefill and decode windows"
    OPTIONS = OPTIONS

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        from energy_hpc.workloads.hf import load_model, load_processor

        o = self.case.options
        self.device.check_dtype(self.case.dtype)  # before anything loads
        folder = self.model_folder()
        tok = load_processor(AutoTokenizer, folder)
        tok.padding_side = "left"  # decoder-only: new tokens follow the prompt directly
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise ModelSourceError(
                    f"the tokenizer in {str(folder)!r} has neither a pad nor an end-of-sequence "
                    "token; batches cannot be padded"
                )
            tok.pad_token = tok.eos_token
        self.tokenizer = tok
        extra = {"attn_implementation": o["attention"]} if o["attention"] else {}
        self.model = load_model(AutoModelForCausalLM, folder, self.device, self.case.dtype, **extra)
        n = int(o["max_new_tokens"])
        self.generation = GenerationConfig(
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            num_beams=1,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
        )
        prompts = (
            text_lines(o["prompt_file"], "options.prompt_file") if o["prompt_file"] else list(o["prompts"])
        )
        self.prompts = self._fixed_length(prompts, int(o["prompt_tokens"])) if o["prompt_tokens"] else prompts
        self._check_length(n)

    def _fixed_length(self, prompts: list[str], n: int) -> list[list[int]]:
        """Each prompt's token ids repeated or cut to exactly ``n`` (so batches need no padding)."""
        out = []
        for p in prompts:
            ids = self.tokenizer(p)["input_ids"]
            if not ids:
                raise SpecError(f"options.prompts: prompt {p!r} has no tokens")
            out.append((ids * (n // len(ids) + 1))[:n])
        return out

    def _check_length(self, new_tokens: int) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if not limit:
            return
        longest = max(
            len(p) if isinstance(p, list) else len(self.tokenizer(p)["input_ids"]) for p in self.prompts
        )
        if longest + new_tokens > limit:
            raise SpecError(
                f"prompt ({longest} tokens) + max_new_tokens ({new_tokens}) exceed the model's "
                f"{limit} positions; shorten the prompt (prompt_tokens) or lower max_new_tokens"
            )

    def _batch(self, iteration: int) -> dict[str, Any]:
        import torch

        rows = in_turn(self.prompts, iteration, self.case.batch_size)
        if isinstance(rows[0], list):
            ids = torch.tensor(rows, dtype=torch.long)
            enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        else:
            enc = dict(self.tokenizer(rows, return_tensors="pt", padding=True))
        return {k: v.to(self.device.torch) for k, v in enc.items()}

    def run(self, iteration: int, stage: StageFn) -> Units:
        from energy_hpc.workloads.hf import PrefillDecode

        enc = self._batch(iteration)
        batch, prompt_len = enc["input_ids"].shape
        prompt_tokens = float(enc["attention_mask"].sum())
        n = int(self.case.options["max_new_tokens"])
        with PrefillDecode(stage, self.unit) as split:
            out = self.model.generate(**enc, generation_config=self.generation, streamer=split)
        made = out.shape[1] - prompt_len
        if made != n:  # the count is the measurement's denominator: never report one that was not produced
            raise RuntimeError(f"generate made {made} new tokens per prompt, not the {n} asked for")
        split.prefill.units, split.prefill.aux_units, split.prefill.aux_unit = (
            batch,
            prompt_tokens,
            self.aux_unit,
        )
        split.decode.units = batch * (n - 1)
        return Units(batch * n, prompt_tokens)

    def component_steps(self) -> list[Any]:
        """With ``components = "detail"``: each forward of the model is a step, the first the prefill
        and every later one a decode step; the components' calls are timed and replayed apart."""
        from energy_hpc.workloads.components import generation_steps

        return generation_steps(self.model, self.case.components)

    def unload(self) -> None:
        from energy_hpc.workloads.hf import free

        self.model = self.tokenizer = None
        free(self.device)
