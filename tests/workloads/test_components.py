"""Components found by module type on every task's tiny model, and the probe's timing, capture and
replay on real inference (CPU)."""

from __future__ import annotations

import pytest

from energy_hpc.errors import SpecError
from energy_hpc.workloads.base import no_stages
from energy_hpc.workloads.components import Probe, find_components, rounds_for
from energy_hpc.workloads.registry import workload_class

from .conftest import CPU, job

CASES = {
    "text-generation": ("tiny-llama", "max_new_tokens = 3"),
    "translation": ("tiny-t5", "max_new_tokens = 3\nignore_eos = true"),
    "speech-recognition": ("tiny-whisper", "max_new_tokens = 3\nignore_eos = true\naudio_seconds = 1.0"),
    "image-classification": ("tiny-vit", ""),
    "text-to-image": ("tiny-sd", "steps = 2"),
}

# what each task's tiny model must show (at least these, in this order)
EXPECTED = {
    "text-generation": ["embed", "L0.attn", "L0.mlp", "L1.attn", "L1.mlp", "norm", "head"],
    "translation": ["encoder", "dec.embed", "dec.L0.attn", "dec.L0.xattn", "dec.L0.mlp", "dec.norm", "head"],
    "speech-recognition": ["encoder", "dec.embed", "dec.L0.attn", "dec.L0.xattn", "dec.L0.mlp", "head"],
    "image-classification": ["embed", "L0.attn", "L0.mlp", "L1.attn", "L1.mlp", "head"],
    "text-to-image": [
        "text_encoder",
        "unet.down0",
        "unet.down1",
        "unet.mid",
        "unet.up0",
        "unet.up1",
        "vae.decode",
    ],
}


def _loaded(task: str):
    model, opts = CASES[task]
    case = job(
        f'[[case]]\ntask = "{task}"\nmodel = "{model}"\nsource = "random"\n[case.options]\n{opts}\n'
    ).cases[0]
    cls = workload_class(task)
    cls.prepare(case)
    wl = cls(case, CPU)
    wl.load()
    return wl


@pytest.mark.parametrize("task", list(CASES))
def test_components_are_found_timed_captured_and_replayed(tiny, task: str) -> None:
    wl = _loaded(task)
    try:
        comps = find_components(wl.component_roots())
        names = [c.name for c in comps]
        got = [n for n in names if n in EXPECTED[task]]
        assert got == EXPECTED[task], names
        assert len(set(names)) == len(names)
        # outermost matches only: no component inside another, so their times add up
        mods = [c.module for c in comps]
        for c in comps:
            inner = {id(m) for m in c.module.modules()} - {id(c.module)}
            assert not any(id(m) in inner for m in mods), c.name
        probe = Probe(comps, CPU)
        with probe.timing():
            wl.run(0, no_stages)
        times = probe.take_times()
        assert set(times) == set(names)
        assert all(calls >= 1 and secs > 0 for calls, secs in times.values()), times
        if task in ("text-generation", "translation", "speech-recognition"):
            # once per generated token in the decoder (prefill and decode calls alike)
            assert times[EXPECTED[task][2]][0] == 3
        with probe.capture({n: c for n, (c, _) in times.items()}):
            wl.run(0, no_stages)
        for c in comps:
            assert probe.captured(c.name) == times[c.name][0]
            assert probe.replay(c.name)(2) == 2 * times[c.name][0]
        probe.release()
        assert all(not probe.captured(n) for n in names)
    finally:
        wl.unload()


def test_replay_leaves_a_decoders_cache_as_the_iteration_saw_it(tiny) -> None:
    wl = _loaded("text-generation")
    try:
        comps = [c for c in find_components(wl.component_roots()) if c.name == "L0.attn"]
        probe = Probe(comps, CPU)
        with probe.capture({"L0.attn": 3}):
            wl.run(0, no_stages)
        calls = probe.state["L0.attn"].captured
        caches = [kw.get("past_key_values", kw.get("cache")) for _, kw in calls]
        caches = [c for c in caches if c is not None]
        assert caches, "the decoder's calls carry their KV cache"
        before = [c.get_seq_length() for c in caches]
        probe.replay("L0.attn")(3)
        assert [c.get_seq_length() for c in caches] == before
    finally:
        wl.unload()


def test_rounds_fill_the_shortest_window() -> None:
    assert rounds_for(0.3, 2.0) == 7
    assert rounds_for(5.0, 2.0) == 1
    assert rounds_for(0.0, 2.0) == 1


def test_the_case_option_is_checked_and_names_the_case() -> None:
    base = '[[case]]\ntask = "image-classification"\nmodel = "tiny-vit"\nsource = "random"\n'
    off = job(base).cases[0]
    assert off.components == "off" and "components" not in off.params()
    on = job(base + 'components = "blocks"\ncomponent_seconds = 0.1\n').cases[0]
    assert (on.components, on.component_seconds, on.params()["components"]) == ("blocks", 0.1, "blocks")
    with pytest.raises(SpecError, match="components") as exc:
        job(base + 'components = "layers"\n')
    assert "\n" not in str(exc.value) and "blocks" in str(exc.value)
