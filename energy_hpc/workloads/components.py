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

Workloads know nothing of this module; the runner attaches it to the loaded workload.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import time
from collections.abc import Callable, Iterator
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


@dataclass
class Component:
    name: str  # short and unique in the model: "L0.attn", "dec.L1.xattn", "unet.down0", "vae.decode"
    kind: str  # embed, attn, xattn, mlp, norm, head, encoder, block, text-encoder, vae-decode, ...
    module: Any  # the torch module


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
        if module is None:
            continue
        if split:
            _walk(module, f"{name}." if name else "", "", out)
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

    def __init__(self, components: list[Component], device: TorchDevice) -> None:
        self.components = components
        self.device = device
        self.clock = _Clock(device)
        self.state = {c.name: _State() for c in components}
        self._handles: list[Any] = []

    def _hook(self, pre: Callable[..., Any], post: Callable[..., Any]) -> None:
        for c in self.components:
            st = self.state[c.name]
            self._handles.append(
                c.module.register_forward_pre_hook(
                    lambda m, a, k, _s=st: pre(_s, a, k), with_kwargs=True, prepend=False
                )
            )
            self._handles.append(
                c.module.register_forward_hook(lambda m, a, k, o, _s=st: post(_s), with_kwargs=True)
            )

    def _unhook(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """Time every call of every component while the body runs (:meth:`take_times` reads them)."""

        def pre(st: _State, args: Any, kwargs: Any) -> None:
            st.open.append(self.clock.start())

        def post(st: _State) -> None:
            st.calls += 1
            st.spans.append(self.clock.stop(st.open.pop()))

        self._hook(pre, post)
        try:
            yield
        finally:
            self._unhook()

    def take_times(self) -> dict[str, tuple[int, float]]:
        """name -> (calls, device seconds) since the last call; the device must have been synchronised."""
        out = {}
        for name, st in self.state.items():
            out[name] = (st.calls, sum(self.clock.seconds(s) for s in st.spans))
            st.calls, st.spans, st.open = 0, [], []
        return out

    @contextlib.contextmanager
    def capture(self, calls: dict[str, float]) -> Iterator[None]:
        """Keep deep copies of the inputs of at most :data:`MAX_CAPTURED` calls per component, every
        n-th call where a component is called ``calls[name]`` times per iteration."""
        for name, st in self.state.items():
            st.every = max(1, math.ceil(calls.get(name, 1) / MAX_CAPTURED))
            st.captured, st.calls = [], 0

        def pre(st: _State, args: Any, kwargs: Any) -> None:
            if st.calls % st.every == 0 and len(st.captured) < MAX_CAPTURED:
                st.captured.append((copy.deepcopy(args), copy.deepcopy(kwargs)))
            st.calls += 1

        def post(st: _State) -> None:
            pass

        self._hook(pre, post)
        try:
            yield
        finally:
            self._unhook()
            for st in self.state.values():
                st.calls = 0

    def captured(self, name: str) -> int:
        return len(self.state[name].captured)

    def replay(self, name: str) -> Callable[[int], int]:
        """``rounds(n)``: run the captured calls of component ``name`` alone, in order, ``n`` times;
        returns the number of calls made. Caches the calls were given are cut back after each call."""
        import torch

        module = next(c.module for c in self.components if c.name == name)
        calls = self.state[name].captured

        def rounds(n: int) -> int:
            made = 0
            with torch.inference_mode():
                for _ in range(n):
                    for args, kwargs in calls:
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
            st.captured = []


def rounds_for(seconds_per_round: float, min_seconds: float) -> int:
    """Rounds of replay that fill a window of at least ``min_seconds`` (at least one)."""
    if not seconds_per_round > 0:
        return 1
    return max(1, math.ceil(min_seconds / seconds_per_round))
