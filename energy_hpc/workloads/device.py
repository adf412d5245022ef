"""The torch device a rank runs on, its dtype support, and synchronisation at window edges."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from energy_hpc.errors import DeviceError

if TYPE_CHECKING:  # aliases: the property TorchDevice.torch hides the module's name inside the class
    from torch import device as torch_device
    from torch import dtype as torch_dtype

log = logging.getLogger(__name__)

TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass
class TorchDevice:
    kind: str  # "cpu" or "cuda" (torch calls ROCm devices cuda too)
    index: int | None
    name: str = "cpu"
    uuid: str = ""
    bus_id: str = ""
    hip: bool = False

    @property
    def torch(self) -> torch_device:
        import torch

        return torch.device(self.kind if self.index is None else f"{self.kind}:{self.index}")

    def synchronize(self) -> None:
        if self.kind == "cuda":
            import torch

            torch.cuda.synchronize(self.index)

    def dtype(self, name: str) -> torch_dtype:
        import torch

        return getattr(torch, TORCH_DTYPES[name])

    def check_dtype(self, name: str) -> None:
        """Fail before loading when the device cannot run ``name``."""
        if self.kind == "cuda" and name == "bf16":
            import torch

            if not torch.cuda.is_bf16_supported():
                raise DeviceError(f'{self.name} cannot run bf16; use dtype = "fp16" or "fp32" for this case')

    def describe(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "index": "" if self.index is None else str(self.index),
            "name": self.name,
            "uuid": self.uuid,
            "bus_id": self.bus_id,
            "runtime": "hip" if self.hip else self.kind,
        }


def _bus_id(props: Any) -> str:
    """``props``: torch's device properties (torch before 2.2 has no PCI fields in them)."""
    try:
        return f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    except AttributeError:
        return ""


def resolve(want: str, ordinal_for: Callable[[int], int | None]) -> TorchDevice:
    """Pick this rank's device. ``want`` is auto, cpu or cuda; ``ordinal_for(n)`` maps the number of
    devices the runtime shows to the index this rank uses (RankContext.bound_ordinal)."""
    if want == "cpu":
        return TorchDevice("cpu", None)
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        if want == "cuda":
            raise DeviceError(
                'the job asks for device = "cuda" but this rank sees no GPU; check the '
                'allocation (--gpus-per-task) and CUDA/ROCR_VISIBLE_DEVICES, or set device = "auto"'
            )
        return TorchDevice("cpu", None)
    k = ordinal_for(n)
    props = torch.cuda.get_device_properties(k)
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid and not uuid.startswith(("GPU-", "MIG-")) and torch.version.hip is None:
        uuid = f"GPU-{uuid}"
    dev = TorchDevice(
        "cuda", k, name=props.name, uuid=uuid, bus_id=_bus_id(props), hip=torch.version.hip is not None
    )
    torch.cuda.set_device(k)
    return dev
