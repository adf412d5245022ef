"""What the transformers-based workloads share: quiet libraries, loading onto the device in the case's
dtype, and the hook that splits one ``generate()`` call into prefill and decode stage windows."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from energy_hpc.windows import Window
from energy_hpc.workloads.base import StageFn, StageSequence
from energy_hpc.workloads.device import TorchDevice
from energy_hpc.workloads.quiet import quiet_libraries

if TYPE_CHECKING:
    import torch


# auto_cls: a transformers Auto class; the model and processor are transformers objects (untyped)
def load_model(auto_cls: Any, folder: Path, device: TorchDevice, dtype: str, **kwargs: Any) -> Any:
    """``auto_cls.from_pretrained(folder)`` in ``dtype`` on ``device``, in eval mode."""
    quiet_libraries()
    device.check_dtype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = auto_cls.from_pretrained(folder, dtype=device.dtype(dtype), **kwargs)
    return model.to(device.torch).eval()


def load_processor(auto_cls: Any, folder: Path, **kwargs: Any) -> Any:
    quiet_libraries()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return auto_cls.from_pretrained(folder, **kwargs)


class PrefillDecode:
    """A streamer for ``generate(streamer=...)`` that splits the call into two stage windows.

    ``generate`` hands the streamer the prompt first, then each new token as soon as it is chosen.
    The "prefill" window runs from the call to the first new token (time to first token: the prompt's
    forward pass, which fills the KV cache, and the first token's selection); "decode" runs from there
    to the end (one forward pass per further token). The window log synchronises the device at each
    edge. Use it as a context manager around the ``generate`` call.
    """

    def __init__(self, stage: StageFn, unit: str) -> None:
        self._stages = StageSequence(stage, "prefill", unit)
        self._puts = 0

    def __enter__(self) -> PrefillDecode:
        self._stages.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stages.__exit__(et, ev, tb)

    @property
    def prefill(self) -> Window:
        return self._stages.windows["prefill"]

    @property
    def decode(self) -> Window:
        """The decode window, there once ``generate`` has returned (it calls :meth:`end`)."""
        return self._stages.windows["decode"]

    # the streamer protocol (transformers.generation.streamers.BaseStreamer)
    def put(self, value: torch.Tensor) -> None:
        self._puts += 1
        if self._puts == 2:  # the first put is the prompt, the second the first generated token
            self._stages.switch("decode")

    def end(self) -> None:
        if self._puts < 2:  # nothing was generated: an empty decode window keeps the layout regular
            self._stages.switch("decode")


def free(device: TorchDevice) -> None:
    """Give the memory of the unloaded model back before the next case loads."""
    import gc

    gc.collect()
    if device.kind == "cuda":
        import torch

        torch.cuda.empty_cache()
