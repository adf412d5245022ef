"""The sensor interface every telemetry backend implements.

A *sensor* is one backend opened on one rank (NVML for the rank's GPU, pm_counters for the node, ...).
It exposes a fixed list of *channels*; one ``read()`` returns one value per channel. Sensors know
nothing of MPI, workloads or files: the sampler calls ``read()`` on a clock, the store writes what
the sampler kept, the analysis decides what the numbers mean from the channel metadata.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

NAN = math.nan


class Scope(str, Enum):
    """What part of the machine a channel measures."""

    GPU = "gpu"  # one device as the runtime sees it (a GPU, an MI250X GCD)
    PACKAGE = "package"  # a physical package that holds several devices (MI250X: two GCDs)
    CPU = "cpu"
    MEMORY = "memory"
    NODE = "node"  # the whole node (Cray pm_counters 'power'/'energy')
    # a module of several parts read as one (GH200 at NVML module scope: Grace CPU + memory + GPU);
    # never added to GPU-only totals
    MODULE = "module"
    OTHER = "other"


class Method(str, Enum):
    """How an energy figure was obtained, strongest first. Every output names one."""

    COUNTER = "counter"  # difference of a hardware energy counter
    INTEGRAL = "integral"  # time integral of sampled power
    ESTIMATE = "estimate"  # a model (CPU time x watts per core), not a measurement
    SYNTHETIC = "synthetic"  # made-up numbers for tests and demos; never a measurement


@dataclass(frozen=True)
class ChannelInfo:
    """What one channel measures and how far to trust it.

    ``device`` is a stable identity (PCI bus id, UUID, ``"node"``, ``"cpu0"``), never an index that
    depends on CUDA_VISIBLE_DEVICES. ``shared_with`` lists the devices whose consumption this reading
    includes when it is more than ``device`` alone (an MI250X package covers two GCDs): the analysis
    uses it to attribute energy without counting a package twice.
    """

    name: str  # unique within the rank, e.g. "nvml:0000:3b:00.0"
    scope: Scope
    device: str
    backend: str
    has_power: bool = True
    has_energy: bool = False
    update_period_s: float = 0.1  # how often the hardware refreshes the value (for uncertainty)
    energy_resolution_J: float = 0.0  # smallest step of the energy counter
    power_kind: str = "instant"  # "instant" or "average" (and over what, in ``note``)
    # the span each power reading averages over, ending at the instant it is refreshed (NVML's
    # instant field: the last 25 ms of each period; 0: a point reading or unknown). The analysis
    # places each reading at the middle of that span.
    power_window_s: float = 0.0
    shared_with: tuple[str, ...] = ()
    node_level: bool = False  # sampled once per node, not per rank
    synthetic: bool = False
    estimate: bool = False
    label: str = ""  # human name of the device, e.g. "NVIDIA H100 80GB HBM3"
    note: str = ""
    # Name of a channel whose reading already contains this one's consumption (pm_counters
    # "cpu" inside "node"; an MI250X secondary GCD inside its package channel, possibly recorded
    # by another rank). Totals never add a channel to the one it is included in.
    included_in: str = ""
    # Name of a channel that measures the same quantity on the same device, read another way
    # (NVML 1 s average power beside the instant power). A view is never added to anything.
    view_of: str = ""
    # Set when counter hygiene distrusts this channel's energy counter ("backwards", "stuck",
    # "disagrees"); its energy is then NaN and windows must be integrated from power.
    counter_fault: str = ""

    @property
    def method(self) -> Method:
        """The strongest method this channel can support."""
        if self.synthetic:
            return Method.SYNTHETIC
        if self.estimate:
            return Method.ESTIMATE
        return Method.COUNTER if self.has_energy and not self.counter_fault else Method.INTEGRAL


@dataclass
class Reading:
    """One read of a sensor: one value per channel, NaN where the channel has none this time.

    ``sensor_time`` is the sensor's own timestamp in seconds (pm_counters gives one), NaN otherwise.
    ``errors`` flags channels whose read failed this time (they are NaN and counted as gaps).
    """

    power: Sequence[float]
    energy: Sequence[float]
    sensor_time: Sequence[float] | None = None
    errors: Sequence[bool] | None = None


def normalize_bus_id(bus_id: str) -> str:
    """``00000000:3B:00.0`` / ``0000:3b:00.0`` / ``3b:00.0`` -> ``0000:3b:00.0`` (lower case,
    4-digit domain): the form used as ``ChannelInfo.device`` for every backend. Raises ValueError for
    what is not a PCI bus id."""
    s = bus_id.strip().lower()
    parts = s.split(":")
    if len(parts) == 2:
        parts = ["0", *parts]
    if len(parts) != 3 or "." not in parts[2]:
        raise ValueError(f"not a PCI bus id: {bus_id!r}")
    dev, fn = parts[2].split(".", 1)
    return f"{int(parts[0], 16):04x}:{int(parts[1], 16):02x}:{int(dev, 16):02x}.{int(fn, 16):x}"


def bus_id_key(device: str) -> str:
    """A device id as files and ranks are compared by: a PCI bus id normalised by
    :func:`normalize_bus_id` without its domain (``0000:C1:00.0`` -> ``c1:00.0``); anything else (a
    UUID, a MIG id, an emulated device's ``.../local-rank-1``) stripped and in lower case."""
    d = str(device).strip()
    try:
        return normalize_bus_id(d).split(":", 1)[1]
    except ValueError:
        return d.lower()


@dataclass(frozen=True)
class SensorContext:
    """What a backend needs to know about the rank it is opened on, and nothing about MPI."""

    hostname: str = "localhost"
    local_rank: int = 0
    node_leader: bool = True  # only the node leader opens node-level sensors
    visible_devices: tuple[str, ...] = ()  # the rank's bound devices as the runtime names them
    visible_env: str = ""  # which variable ``visible_devices`` came from (CUDA/ROCR/HIP_VISIBLE_DEVICES)
    device_uuid: str = ""  # the bound device's UUID as the runtime reports it, when known
    device_bus_id: str = ""  # its PCI bus id ("0000:c1:00.0"), when known: the surest key to map by
    # PCI bus ids of the devices bound by all ranks of this node, when the launcher gathered them;
    # empty means unknown. amdsmi uses it to decide which rank records a shared MI250X package.
    node_devices: tuple[str, ...] = ()
    # backend options from the job file ([measure.sensor_options]): backend -> its table
    options: dict[str, Any] = field(default_factory=dict)


class Sensor(ABC):
    """One opened backend. Subclasses set ``backend`` and implement the three methods."""

    backend: ClassVar[str] = ""

    @abstractmethod
    def channels(self) -> Sequence[ChannelInfo]:
        """The channels this sensor records, in the order ``read()`` returns them."""

    @abstractmethod
    def read(self) -> Reading:
        """Read every channel once. Raise :class:`~energy_hpc.errors.SensorReadError` when the whole
        read failed; flag single failed channels in ``Reading.errors`` instead."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the backend (NVML shutdown, file handles)."""

    def __enter__(self) -> Sensor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
