"""translation: generated target tokens as units (up to end-of-sequence), source tokens as aux units."""

from __future__ import annotations

import torch

from energy_hpc.workloads.translation import generated_tokens

from .conftest import job, run_case

CASE = """
[[case]]
task = "translation"
model = "tiny-t5"
source = "random"
batch_size = 3
[case.options]
max_new_tokens = 6
{extra}
"""


def test_greedy_has_prefill_and_decode_windows_with_exact_tokens(tiny) -> None:
    ran = run_case(job(CASE.format(extra='ignore_eos = true\nsentences = ["ab", "cde"]')))
    st = ran.stages()
    assert list(st) == ["prefill", "decode"]
    assert (st["prefill"].units, st["decode"].units) == (3, 15)
    # byte-level stand-in tokenizer: one token per byte, plus </s>
    assert (st["prefill"].aux_units, st["prefill"].aux_unit) == (3 + 4 + 3, "source-token")
    assert (ran.whole().units, ran.whole().unit, ran.whole().aux_unit) == (18, "token", "source-token")


def test_beam_search_runs_as_one_generate_window(tiny) -> None:
    ran = run_case(job(CASE.format(extra="num_beams = 2\nignore_eos = true")))
    st = ran.stages()
    assert list(st) == ["generate"] and st["generate"].units == 18 == ran.whole().units


def test_generated_tokens_stop_at_each_rows_end_of_sequence() -> None:
    seqs = torch.tensor(
        [
            [0, 5, 6, 1, 0, 0],  # 3 tokens: 5, 6, </s>
            [0, 5, 6, 7, 8, 9],  # never ended: 5
            [0, 1, 0, 0, 0, 0],
        ]
    )  # 1: </s> at once
    assert generated_tokens(seqs, eos_id=1) == 9
    assert generated_tokens(seqs, eos_id=None) == 15
