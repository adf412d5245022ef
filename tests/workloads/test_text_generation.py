"""text-generation: exact token counts, prefill and decode windows, prompt tokens as aux units."""

from __future__ import annotations

import pytest

from energy_hpc.errors import SpecError

from .conftest import job, run_case

CASE = """
[[case]]
task = "text-generation"
model = "tiny-llama"
source = "random"
batch_size = {bs}
[case.options]
max_new_tokens = {n}
{extra}
"""


def test_prefill_and_decode_windows_split_the_generated_tokens(tiny) -> None:
    ran = run_case(job(CASE.format(bs=3, n=5, extra="prompt_tokens = 7")))
    st = ran.stages()
    assert list(st) == ["prefill", "decode"]
    assert (st["prefill"].units, st["prefill"].unit) == (3, "token")  # the first token of each sequence
    assert (st["prefill"].aux_units, st["prefill"].aux_unit) == (21, "prompt-token")
    assert (st["decode"].units, st["decode"].aux_units) == (12, 0)
    assert st["prefill"].end <= st["decode"].start  # consecutive, not overlapping
    whole = ran.whole()
    assert (whole.units, whole.unit, whole.aux_units, whole.aux_unit) == (15, "token", 21, "prompt-token")
    assert whole.start <= st["prefill"].start and st["decode"].end <= whole.end


def test_natural_prompts_count_prompt_tokens_without_padding(tiny) -> None:
    body = CASE.format(bs=2, n=2, extra='prompts = ["a", "a much longer prompt"]')
    ran = run_case(job(body))
    tok = ran.workload  # unloaded: count with a fresh tokenizer from the same folder
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(tok.model_folder())
    expected = sum(len(t(p)["input_ids"]) for p in ("a", "a much longer prompt"))
    assert ran.whole().aux_units == expected
    assert ran.whole().units == 4


def test_prompt_longer_than_the_model_positions_is_a_spec_error(tiny) -> None:
    with pytest.raises(SpecError, match="exceed the model's 2048 positions"):
        run_case(job(CASE.format(bs=1, n=100, extra="prompt_tokens = 2000")))


def test_one_new_token_leaves_an_empty_decode_window(tiny) -> None:
    st = run_case(job(CASE.format(bs=2, n=1, extra="prompt_tokens = 4"))).stages()
    assert st["prefill"].units == 2 and st["decode"].units == 0
