"""A model's components, found by module type, and the two ways the runner measures them.

A component is one torch module that an iteration calls: the embeddings, each layer's attention,
cross-attention and MLP, a final norm, a head; whole text encoders, the down / mid / up blocks of a
UNet and the VAE decoder of a diffusion pipeline; a whole encoder of an encoder-decoder. They are found
generically from the class and attribute names of the modules (:func:`find_components`) under the roots
a workload names (:meth:`~energy_hpc.workloads.base.Workload.component_roots`), outermost match first, so
components never nest and their times add up.

:class:`Probe` puts forward hooks on them:

- **timing** (``with probe.timing():``): each call's device time (CUDA events on a GPU, a monotonic clock
  around a device synchronisation elsewhere) and call count, per iteration (:meth:`Probe.take_times`);
- **capture** (``with probe.capture(calls):``): deep copies of the real inputs of at most
  :data:`MAX_CAPTURED` calls per component during one iteration, evenly spread over its calls;
- **replay** (:meth:`Probe.replay`): the captured calls of one component run again alone, in order, in
  rounds; a cache the model passes in (the KV cache of a decoder) is cut back after each call, so every
  round sees the state the iteration saw.

A component can be a group of modules called in turn (the self-attention of every transformer block of
one UNet down block): its calls are the calls of any of them, each replayed on its own module.

With :class:`Steps` (``components = "detail"``) every call of a component inside a *driver* module
(the whole causal LM, a UNet) is also told by the driver's call it falls in: the key of its times is
``name@tag`` (``L0.attn@prefill``, ``unet.down0.attn@middle``), the tag made from the step index and
the number of steps of the iteration. A :class:`Steps` with ``replay`` keeps the tags for the captured
calls too, so each tag is replayed in its own window; without, the tags are for the timing only.

Workloads know nothing of this module; the runner attaches it to the loaded workload.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from energy_hpc.workloads.device import TorchDevice

# the most calls of one component whose inputs are kept (evenly spread over the iteration's calls)
MAX_CAPTURED = 32

_ATTN_NAMES = ("self_attn", "attn", "attn1", "attention", "self_attention", "selfattention")
_XATTN_NAMES = ("encoder_attn", "cross_attn", "attn2", "crossattention", "cross_attention")
_MLP_NAMES = ("mlp", "ff", "ffn", "feed_forward", "fc1", "fc2")
_HEAD_NAMES = ("lm_head", "classifier", "head", "proj_out", "score")
_NORM_NAMES = ("norm", "final_layer_norm", "layer_norm", "layernorm", "ln_f", "final_layernorm")
_MLP_CLASS = re.compile(r"(mlp|feedforward|layerff|intermediate)$")


# separates a component's name from the tag of the step its calls fall in: "L0.attn@prefill"
STEP_SEP = "@"


@dataclass
class Component:
    name: str  # short and unique in the model: "L0.attn", "dec.L1.xattn", "unet.down0", "vae.decode"
    kind: str  # embed, attn, xattn, mlp, norm, head, encoder, block, text-encoder, vae-decode, ...
    module: Any  # the torch module
    more: list[Any] = field(default_factory=list)  # further modules of a group component

    def modules(self) -> list[Any]:
        return [self.module, *self.more]


@dataclass(frozen=True)
class Steps:
    """A driver module whose calls are the steps of an iteration (a causal LM's forward: prefill, then
    one per new token; a UNet's forward: one per denoising step). ``tag(i, n)`` names step ``i`` of
    ``n``; ``replay``: replay each tag's calls in a window of its own."""

    driver: Any
    tag: Callable[[int, int], str]
    replay: bool


def prefill_decode(i: int, n: int) -> str:
    """The first forward of a generation is the prefill, every later one a decode step."""
    return "prefill" if i == 0 else "decode"


def generation_steps(model: Any, components: str) -> list[Steps]:
    """With ``components = "detail"``: each forward of the whole ``model`` during ``generate`` is a step,
    the first the prefill and every later one a decode step, timed and replayed apart (a causal LM, and
    an encoder-decoder, whose encoder runs once before the first step and so keeps no tag)."""
    return [Steps(model, prefill_decode, replay=True)] if components == "detail" else []


def encoder_decoder_roots(model: Any, detail: bool) -> list[tuple[str, Any, bool]]:
    """The component roots of an encoder-decoder (T5, Whisper): the encoder whole ("encoder"; with
    ``detail`` split like the decoder, under "enc."), the decoder split ("dec": embeddings, per-layer
    attention, cross-attention and MLP, final norm), and the head."""
    return [
        ("enc" if detail else "encoder", model.get_encoder(), detail),
        ("dec", model.get_decoder(), True),
        ("head", model.get_output_embeddings(), False),
    ]


def first_middle_last(i: int, n: int) -> str:
    """Denoising steps in three groups, so a table stays short whatever the number of steps."""
    if i == 0:
        return "first"
    return "last" if i == n - 1 else "middle"


def split_key(key: str) -> tuple[str, str]:
    """``"L0.attn@prefill"`` -> ``("L0.attn", "prefill")``; a key without a tag -> ``(key, "")``."""
    name, _, tag = key.partition(STEP_SEP)
    return name, tag


def _kind(attr: str, module: Any, in_layer: bool) -> str:
    """What the module ``attr`` is, from its class and attribute name; "" if none of the kinds."""
    import torch

    cls = type(module).__name__.lower()
    a = attr.lower()
    if "crossattention" in cls or (a in _XATTN_NAMES and ("attention" in cls or "attn" in cls)):
        return "xattn"
    if "attention" in cls or a in _ATTN_NAMES:
        return "attn"
    if _MLP_CLASS.search(cls) or a in _MLP_NAMES or (a == "output" and "selfoutput" not in cls):
        return "mlp"
    if in_layer:
        return ""
    if isinstance(module, torch.nn.Embedding) or "embedding" in cls:
        return "embed"
    if a in _HEAD_NAMES:
        return "head"
    if a in _NORM_NAMES:
        return "norm"
    return ""


def _is_layer_list(module: Any) -> bool:
    """A ModuleList of repeated blocks (decoder layers, encoder layers, ViT layers, T5 blocks)."""
    import torch

    return isinstance(module, torch.nn.ModuleList) and len(module) > 0


def _walk(module: Any, prefix: str, layer: str, out: list[Component]) -> None:
    for attr, child in module.named_children():
        kind = _kind(attr, child, bool(layer))
        if kind:
            base = f"{prefix}{layer}{kind}"
            name = base if all(c.name != base for c in out) else f"{prefix}{layer}{attr}"
            n = 2
            while any(c.name == name for c in out):
                name, n = f"{base}{n}", n + 1
            out.append(Component(name, kind, child))
        elif not layer and _is_layer_list(child):
            for i, block in enumerate(child):
                _walk(block, prefix, f"L{i}.", out)
        else:
            _walk(child, prefix, layer, out)


def find_components(roots: list[tuple[str, Any, bool]]) -> list[Component]:
    """The components under ``roots``: (name, module, split). A root with ``split`` is searched for
    embeddings, per-layer attention / cross-attention / MLP, a final norm and a head (named with the
    root's name as a prefix); one without is a component itself (kind from its name)."""
    out: list[Component] = []
    for name, module, split in roots:
        if module is None or (isinstance(module, list) and not module):
            continue
        if split:
            _walk(module, f"{name}." if name else "", "", out)
        elif isinstance(module, list):  # a group: one component, several modules
            out.append(Component(name, name.split(".")[-1].rstrip("0123456789"), module[0], module[1:]))
        else:
            out.append(Component(name, name.split(".")[-1].rstrip("0123456789"), module))
    return out


class _Clock:
    """Device time of calls: CUDA events on a GPU (no synchronisation inside the iteration), a
    monotonic clock after a device synchronisation elsewhere."""

    def __init__(self, device: TorchDevice) -> None:
        self.device = device
        self.cuda = device.kind == "cuda"

    def start(self) -> Any:
        if self.cuda:
            import torch

            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        self.device.synchronize()
        return time.monotonic()

    def stop(self, started: Any) -> Any:
        if self.cuda:
            import torch

            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return (started, ev)
        self.device.synchronize()
        return time.monotonic() - started

    def seconds(self, span: Any) -> float:
        if self.cuda:
            a, b = span
            return float(a.elapsed_time(b)) / 1000.0  # the caller synchronised at the window's edge
        return float(span)


@dataclass
class _State:
    calls: int = 0
    spans: list[Any] = field(default_factory=list)
    open: list[Any] = field(default_factory=list)
    every: int = 1  # capture every n-th call
    captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    targets: list[Any] = field(default_factory=list)  # the module of each captured call (groups)
    per_iteration: float = 0.0  # calls in one iteration (what capture was told)


def _is_cache(v: Any) -> bool:
    """A transformers ``Cache`` or one of its layers: what a call appends to."""
    return hasattr(v, "get_seq_length") and hasattr(v, "__dict__")


def _snapshot(obj: Any, out: list[tuple[Any, dict[str, Any]]]) -> None:
    """The attributes of a cache, its layers and its sub-caches (an encoder-decoder cache's two), with
    dicts and lists copied: enough to undo a call (new tensors are concatenated, never written into;
    a static cache is written in place at the same positions each time, so it needs no undo)."""
    state = vars(obj)
    out.append((obj, {k: (type(v)(v) if isinstance(v, dict | list) else v) for k, v in state.items()}))
    for v in state.values():
        if _is_cache(v):
            _snapshot(v, out)
        elif isinstance(v, list):
            for x in v:
                if _is_cache(x):
                    _snapshot(x, out)


def _saved(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[Any, dict[str, Any]]]:
    """The state of every cache among a call's arguments, to restore after the call."""
    out: list[tuple[Any, dict[str, Any]]] = []
    for v in list(args) + list(kwargs.values()):
        if _is_cache(v):
            _snapshot(v, out)
    return out


def _restore(saved: list[tuple[Any, dict[str, Any]]]) -> None:
    for obj, state in saved:
        obj.__dict__.clear()
        obj.__dict__.update(state)


class Probe:
    """Forward hooks on a model's components: timing, capture and replay (module docstring)."""

    def __init__(self, components: list[Component], device: TorchDevice, steps: Sequence[Steps] = ()) -> None:
        self.components = components
        self.device = device
        self.clock = _Clock(device)
        self.steps = list(steps)
        # capture key -> captured calls; before any capture, one empty entry per component
        self.state = {c.name: _State() for c in components}
        self._handles: list[Any] = []
        self._step = [0] * len(self.steps)  # calls of each driver so far in this iteration
        self._active: list[int] = []  # the drivers running now, innermost last
        self._open: dict[str, list[tuple[Any, int, int]]] = {}
        self._raw: dict[tuple[str, int, int], _State] = {}  # (component, driver, step) -> times

    def _where(self) -> tuple[int, int]:
        """(driver, step) of a call made now; (-1, -1) outside every driver."""
        if not self._active:
            return -1, -1
        d = self._active[-1]
        return d, self._step[d] - 1

    def _key(self, name: str, d: int, i: int) -> str:
        if d < 0:
            return name
        return f"{name}{STEP_SEP}{self.steps[d].tag(i, self._step[d])}"

    def _hook(self, pre: Callable[..., Any], post: Callable[..., Any]) -> None:
        self._step = [0] * len(self.steps)
        self._active = []
        self._open = {}
        for d, s in enumerate(self.steps):
            self._handles.append(s.driver.register_forward_pre_hook(lambda m, a, _d=d: self._enter(_d)))
            self._handles.append(s.driver.register_forward_hook(lambda m, a, o: self._leave()))
        for c in self.components:
            for mod in c.modules():
                self._handles.append(
                    mod.register_forward_pre_hook(
                        lambda m, a, k, _c=c: pre(_c, m, a, k), with_kwargs=True, prepend=False
                    )
                )
                self._handles.append(
                    mod.register_forward_hook(lambda m, a, k, o, _c=c: post(_c), with_kwargs=True)
                )

    def _enter(self, d: int) -> None:
        self._step[d] += 1
        self._active.append(d)

    def _leave(self) -> None:  # returns None: a forward hook's return value would replace the output
        self._active.pop()

    def _unhook(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """Time every call of every component while the body runs (:meth:`take_times` reads them)."""

        def pre(c: Component, mod: Any, args: Any, kwargs: Any) -> None:
            self._open.setdefault(c.name, []).append((self.clock.start(), *self._where()))

        def post(c: Component) -> None:
            started, d, i = self._open[c.name].pop()
            st = self._raw.setdefault((c.name, d, i), _State())
            st.calls += 1
            st.spans.append(self.clock.stop(started))

        self._hook(pre, post)
        try:
            yield
        finally:
            self._unhook()

    def take_times(self) -> dict[str, tuple[int, float]]:
        """key -> (calls, device seconds) since the last call; the device must have been synchronised.
        The key is the component's name, with ``@tag`` for calls inside a driver; a component that
        made no call has its name with (0, 0.0)."""
        out: dict[str, tuple[int, float]] = {}
        for c in self.components:
            mine = sorted((d, i, st) for (name, d, i), st in self._raw.items() if name == c.name)
            if not mine:
                out[c.name] = (0, 0.0)
            for d, i, st in mine:
                key = self._key(c.name, d, i)
                calls, secs = out.get(key, (0, 0.0))
                out[key] = (calls + st.calls, secs + sum(self.clock.seconds(s) for s in st.spans))
        self._raw = {}
        return out

    @contextlib.contextmanager
    def capture(self, calls: dict[str, float]) -> Iterator[None]:
        """Keep deep copies of the inputs of at most :data:`MAX_CAPTURED` calls per component, every
        n-th call where a component is called ``calls[key]`` times per iteration (keys as
        :meth:`take_times` gives them)."""
        total: dict[str, float] = {}
        for key, n in calls.items():
            total[split_key(key)[0]] = total.get(split_key(key)[0], 0.0) + n
        every = {c.name: max(1, math.ceil(total.get(c.name, 1) / MAX_CAPTURED)) for c in self.components}
        seen = {c.name: 0 for c in self.components}
        kept: list[tuple[str, int, int, Any, tuple[Any, ...], dict[str, Any]]] = []

        def pre(c: Component, mod: Any, args: Any, kwargs: Any) -> None:
            n = seen[c.name]
            seen[c.name] += 1
            if n % every[c.name] == 0 and n // every[c.name] < MAX_CAPTURED:
                kept.append((c.name, *self._where(), mod, copy.deepcopy(args), copy.deepcopy(kwargs)))

        def post(c: Component) -> None:
            pass

        self._hook(pre, post)
        try:
            yield
        finally:
            self._unhook()
            self.state = {c.name: _State() for c in self.components}
            for name, d, i, mod, args, kwargs in kept:
                key = self._key(name, d, i) if d >= 0 and self.steps[d].replay else name
                st = self.state.setdefault(key, _State())
                st.captured.append((args, kwargs))
                st.targets.append(mod)
            for key, n in calls.items():
                st = self.state.get(key) or self.state[split_key(key)[0]]
                st.per_iteration += n
            # tagged keys replace their component's untagged entry where it caught nothing
            for c in self.components:
                if not self.state[c.name].captured and any(
                    k != c.name and split_key(k)[0] == c.name for k in self.state
                ):
                    del self.state[c.name]

    def captured(self, key: str) -> int:
        st = self.state.get(key)
        return len(st.captured) if st else 0

    def replay_keys(self) -> list[str]:
        """The keys with captured calls (a component's name, or ``name@tag`` where a driver's tags are
        replayed apart), in the components' order."""
        return [k for k, st in self.state.items() if st.captured]

    def calls_per_iteration(self, key: str) -> float:
        """Calls of ``key`` in one iteration, as :meth:`capture` was told."""
        st = self.state.get(key)
        return st.per_iteration if st else 0.0

    def replay(self, key: str) -> Callable[[int], int]:
        """``rounds(n)``: run the captured calls of ``key`` alone, in order, ``n`` times; returns the
        number of calls made. Caches the calls were given are cut back after each call."""
        import torch

        st = self.state[key]
        calls = list(zip(st.targets, st.captured, strict=True))

        def rounds(n: int) -> int:
            made = 0
            with torch.inference_mode():
                for _ in range(n):
                    for module, (args, kwargs) in calls:
                        saved = _saved(args, kwargs)
                        module(*args, **kwargs)
                        _restore(saved)
                        made += 1
            return made

        return rounds

    def release(self) -> None:
        """Drop the captured inputs (device memory) and the hooks."""
        self._unhook()
        for st in self.state.values():
            st.captured, st.targets = [], []


def rounds_for(seconds_per_round: float, min_seconds: float) -> int:
    """Rounds of replay that fill a window of at least ``min_seconds`` (at least one)."""
    if not seconds_per_round > 0:
        return 1
    return max(1, math.ceil(min_seconds / seconds_per_round))
