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


def _detail(task: str, model: str, opts: str):
    case = job(
        f'[[case]]\ntask = "{task}"\nmodel = "{model}"\nsource = "random"\ncomponents = "detail"\n'
        f"[case.options]\n{opts}\n"
    ).cases[0]
    cls = workload_class(task)
    cls.prepare(case)
    wl = cls(case, CPU)
    wl.load()
    return wl


def test_detail_splits_a_unet_by_layer_type_and_tags_its_calls_by_step(tiny) -> None:
    wl = _detail("text-to-image", "tiny-sd", "steps = 4")
    try:
        comps = find_components(wl.component_roots())
        names = [c.name for c in comps]
        # tiny-sd: down0 resnets + downsampler, down1 with transformer layers, mid, up0 with transformer
        # layers + upsampler, up1 resnets
        for want in ("unet.down0.resnet", "unet.down0.conv", "unet.down1.attn", "unet.down1.xattn"):
            assert want in names, names
        assert "unet.down1" not in names and "text_encoder" in names and "vae.decode" in names
        group = next(c for c in comps if c.name == "unet.down1.resnet")
        assert len(group.modules()) == 1  # layers_per_block = 1
        probe = Probe(comps, CPU, wl.component_steps())
        with probe.timing():
            wl.run(0, no_stages)
        times = probe.take_times()
        # a UNet layer is called once per denoising step: 1 first, 2 middle, 1 last
        assert {k: times[k][0] for k in times if k.startswith("unet.down1.attn")} == {
            "unet.down1.attn@first": 1,
            "unet.down1.attn@middle": 2,
            "unet.down1.attn@last": 1,
        }
        # outside the UNet no tag: the text encoder runs before the first step, the VAE after the last
        # (the text encoder twice: the prompt and the empty prompt of classifier-free guidance)
        assert times["text_encoder"][0] == 2 and times["vae.decode"][0] == 1
        # the time method only: the captured calls of a UNet layer are replayed as one component
        with probe.capture({k: float(c) for k, (c, _) in times.items()}):
            wl.run(0, no_stages)
        keys = probe.replay_keys()
        assert "unet.down1.attn" in keys and not any("@" in k for k in keys)
        assert probe.calls_per_iteration("unet.down1.attn") == 4
        assert probe.replay("unet.down1.attn")(1) == 4
        probe.release()
    finally:
        wl.unload()


def test_detail_times_and_replays_prefill_and_decode_apart(tiny) -> None:
    wl = _detail("text-generation", "tiny-llama", "max_new_tokens = 4")
    try:
        comps = find_components(wl.component_roots())
        probe = Probe(comps, CPU, wl.component_steps())
        with probe.timing():
            wl.run(0, no_stages)
        times = probe.take_times()
        # one forward for the prompt, then one per further token: 1 prefill and 3 decode calls
        assert times["L0.attn@prefill"][0] == 1 and times["L0.attn@decode"][0] == 3
        assert "L0.attn" not in times
        with probe.capture({k: float(c) for k, (c, _) in times.items()}):
            wl.run(0, no_stages)
        assert {"L0.attn@prefill", "L0.attn@decode", "head@prefill", "head@decode"} <= set(
            probe.replay_keys()
        )
        assert probe.calls_per_iteration("L0.attn@decode") == 3
        assert probe.replay("L0.attn@prefill")(2) == 2
        assert probe.replay("L0.attn@decode")(1) == 3
        # the prefill call sees the whole prompt, a decode call one new token
        (args, kwargs), *_ = probe.state["L0.attn@prefill"].captured
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        (dargs, dkwargs), *_ = probe.state["L0.attn@decode"].captured
        dhidden = dkwargs.get("hidden_states", dargs[0] if dargs else None)
        assert hidden.shape[1] > 1 and dhidden.shape[1] == 1
        probe.release()
    finally:
        wl.unload()


@pytest.mark.parametrize(
    ("task", "model", "opts"),
    [
        ("translation", "tiny-t5", "max_new_tokens = 4\nignore_eos = true"),
        ("speech-recognition", "tiny-whisper", "max_new_tokens = 4\nignore_eos = true\naudio_seconds = 1.0"),
    ],
)
def test_detail_tags_an_encoder_decoders_decoder_calls_by_generation_step(
    tiny, task: str, model: str, opts: str
) -> None:
    wl = _detail(task, model, opts)
    try:
        comps = find_components(wl.component_roots())
        probe = Probe(comps, CPU, wl.component_steps())
        with probe.timing():
            wl.run(0, no_stages)
        times = probe.take_times()
        # the first decoder pass makes the first token (prefill), then one pass per further token
        for name in ("dec.L0.attn", "dec.L0.xattn", "dec.L0.mlp", "head"):
            assert times[f"{name}@prefill"][0] == 1 and times[f"{name}@decode"][0] == 3, times
            assert name not in times
        # the encoder runs once, before the first decoder step: no tag
        assert times["enc.L0.attn"][0] == 1
        assert not any(k.startswith("enc.") and "@" in k for k in times)
        with probe.capture({k: float(c) for k, (c, _) in times.items()}):
            wl.run(0, no_stages)
        keys = probe.replay_keys()
        assert {"dec.L0.xattn@prefill", "dec.L0.xattn@decode", "head@decode", "enc.L0.attn"} <= set(keys)
        assert probe.calls_per_iteration("dec.L0.attn@decode") == 3
        assert probe.replay("dec.L0.attn@prefill")(2) == 2
        assert probe.replay("dec.L0.xattn@decode")(2) == 6
        # replaying a decode call leaves the cache it was given as the iteration saw it
        (_, kwargs), *_ = probe.state["dec.L0.attn@decode"].captured
        cache = kwargs.get("past_key_values", kwargs.get("past_key_value"))
        if cache is not None:
            before = cache.get_seq_length()
            probe.replay("dec.L0.attn@decode")(1)
            assert cache.get_seq_length() == before
        probe.release()
    finally:
        wl.unload()


def test_without_detail_an_encoder_decoder_has_no_steps(tiny) -> None:
    wl = _loaded("translation")
    try:
        assert wl.component_steps() == []
    finally:
        wl.unload()
