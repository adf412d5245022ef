"""A stand-in for ROCm's ``amdsmi`` Python package, release by release.

What each release's ``amdsmi_interface.py`` does (read from the pip wheels amdsmi 5.7.0, 6.0.0, 6.2.0,
6.3.0, 6.4.0 and 7.0.0) and what the C library behind it fills in (ROCm/amdsmi tags rocm-5.7.0 ...
rocm-6.2.0, ``src/amd_smi/amd_smi.cc`` and ``rocm_smi/src/rocm_smi_gpu_metrics.cc``):

* ``AmdSmiInitFlags``: ``INIT_ALL_PROCESSORS, INIT_AMD_CPUS, INIT_AMD_GPUS, INIT_NON_AMD_CPUS,
  INIT_NON_AMD_GPUS`` in every release (5.7 included: the ``AMD_GPUS`` spelling is 5.5/5.6);
  ``INIT_ALL_PROCESSORS`` is 0 in 5.7/6.0 and 0xFFFFFFFF from 6.2; ``INIT_AMD_APUS`` (3) from 6.2.
  ``amdsmi_init(flag=INIT_AMD_GPUS)`` raises AmdSmiParameterException for anything but the enum.
* xGMI bandwidth: ``amdsmi_get_minmax_bandwith_between_processors`` (sic) in 5.7,
  ``amdsmi_get_minmax_bandwidth_between_processors`` from 6.0; both return
  ``{"min_bandwidth", "max_bandwidth"}`` (MB/s).
* ``amdsmi_get_power_info``: 5.7 ``average_socket_power, gfx_voltage, soc_voltage, mem_voltage,
  power_limit``; 6.0-6.4 add ``current_socket_power``; 7.0 adds ``socket_power``. Values are ints (W);
  an unavailable value is the C sentinel 0xFFFF, returned raw by 5.7/6.0 and as the string ``"N/A"``
  from 6.2. 6.4 alone takes ``sensor_ind=0``. On MI200 (gpu_metrics 1.3) ROCm 6.0 copies
  ``average_socket_power`` into ``current_socket_power`` ("Backwards compatibility" in
  GpuMetricsBase_v13_t::copy_internal_to_external_metrics, rocm-6.0.0 and rocm-6.0.2); from 6.1 the
  copy is commented out and ``current_socket_power`` is the sentinel. On MI300 (gpu_metrics 1.4/1.5)
  ``average_socket_power`` is the sentinel and ``current_socket_power`` the instantaneous socket power.
  7.0's ``socket_power`` is the current power where the part has one, else the average.
* ``amdsmi_get_energy_count``: ``power, counter_resolution, timestamp`` up to 6.2; ``power`` and
  ``energy_accumulator`` in 6.3; ``energy_accumulator`` only from 6.4. ``counter_resolution`` is the
  hard-coded ``kEnergyCounterResolution = 15.3F`` of rocm_smi.cc, a C float: Python sees
  15.300000190734863. ``timestamp`` is gpu_metrics ``system_clock_counter``, in ns ("Resolution: 1 ns",
  amdsmi.h).
* ``amdsmi_get_gpu_asic_info``: 5.7/6.0 return ``device_id`` etc. as ints and ``asic_serial`` as the raw
  sysfs ``unique_id`` (16 lower-case hex digits); from 6.2 ``device_id`` is ``hex()`` and ``asic_serial``
  ``"0x%016X"``; ``oam_id`` from 6.2, ``num_compute_units`` and ``target_graphics_version`` from 6.3,
  ``subsystem_id`` in 7.0.
* ``amdsmi_get_gpu_device_uuid``: ``amdsmi_uuid_gen(serial, device_id, 0xff)`` of amd_smi_uuid.cc, e.g.
  serial 0xCF1182F2988C0A40 on 0x7408 -> ``cfff7408-0000-1000-8011-82f2988c0a40``. It is *not* what
  HIP/torch report: ROCr's UUID is ``GPU-<unique_id in hex>`` and HIP's ``hipDeviceProp_t.uuid`` holds
  the 16 ASCII characters after ``GPU-`` (clr rocdevice.cpp), which torch prints as 8-4-4-4-12 hex of
  those bytes (see :func:`torch_uuid`).
* ``AmdSmiLibraryException(err_code)`` with ``get_error_code()``, ``err_code``, ``err_info``; status
  values of amdsmi.h (NOT_SUPPORTED = 2). ``AMDSMI_STATUS_DRIVER_NOT_LOADED`` (34) exists from 6.0;
  5.7 answers a missing driver with INIT_ERROR (18).
* MI250X (Frontier/LUMI, ``rocm-smi --shownodesbw`` in Hugging Face optimum-amd "AMD Instinct GPU
  connectivity"): GCD pairs (0,1) (2,3) (4,5) (6,7) at 50000-200000, other links 50000-50000 or
  50000-100000, or not connected (0-0). Secondary dies read 0 power and a 0 energy counter
  ("drm/amd/pm: Only primary die supports power data"), or an unavailable power (the sentinel: raw
  0xFFFF to 6.0, "N/A" from 6.2), or raise NOT_SUPPORTED, depending on the stack (``silent_mode``).

* Device settings: ``amdsmi_set_power_cap(handle, sensor_ind, cap)`` (µW, ints only, else
  AmdSmiParameterException), ``amdsmi_set_gpu_clk_range(handle, min, max, AmdSmiClkType)`` (MHz);
  ``AMDSMI_STATUS_NO_PERM`` (10) unless ``FakeGcd.privileged``, NOT_SUPPORTED in a guest VM
  (``FakeGcd.virtual``), INVAL out of range. ``amdsmi_get_power_cap_info`` returns ``power_cap,
  default_power_cap, dpm_cap, min_power_cap, max_power_cap`` (µW); ``amdsmi_get_clock_info`` returns
  ``cur_clk, max_clk, min_clk, sleep_clk`` up to 6.0 and ``clk, min_clk, max_clk, clk_locked,
  clk_deep_sleep`` from 6.2; ``amdsmi_get_temp_metric(handle, sensor_type, metric)`` an int in °C.

Opt-in quirks (``make_amdsmi(..., quirks=...)``), only on the releases where they are documented:

* ``"stuck"`` (6.0): gpu_metrics read once and then served from a cache, so power and energy never
  change (ROCm/amdsmi#22 "Power info and energy counter APIs always return the same info", fixed in 6.1
  by commit 78074d7 "forces rereading gpu metrics unconditionally"; AMDResearch/hpcfund#21 on 6.0.2).
* ``"backwards"`` (5.7-6.4): now and then a read returns a smaller accumulator than the one before
  (ROCm/amdsmi#115, reported as gone with 7.0); every ``backwards_every``-th read is
  ``backwards_ticks`` low.

Use :func:`mi250x_node` for the 8-GCD Frontier node and :func:`make_amdsmi` for the module object.
"""

from __future__ import annotations

import struct
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

if TYPE_CHECKING:
    import pytest

VERSIONS = ("5.7", "6.0", "6.2", "6.3", "6.4", "7.0")
NA = "N/A"
SENTINEL = 0xFFFF  # amd_smi.cc fills amdsmi_power_info_t with 0xFFFF before reading gpu_metrics

STATUS = {
    "AMDSMI_STATUS_SUCCESS": 0,
    "AMDSMI_STATUS_INVAL": 1,
    "AMDSMI_STATUS_NOT_SUPPORTED": 2,
    "AMDSMI_STATUS_NOT_YET_IMPLEMENTED": 3,
    "AMDSMI_STATUS_TIMEOUT": 8,
    "AMDSMI_STATUS_RETRY": 9,
    "AMDSMI_STATUS_NO_PERM": 10,
    "AMDSMI_STATUS_INIT_ERROR": 18,
    "AMDSMI_STATUS_NOT_FOUND": 31,
    "AMDSMI_STATUS_NOT_INIT": 32,
    "AMDSMI_STATUS_DRIVER_NOT_LOADED": 34,
}

# Quirk -> releases whose sources/issues document it (see the module docstring).
QUIRKS = {"stuck": ("6.0",), "backwards": ("5.7", "6.0", "6.2", "6.3", "6.4")}

# amdsmi_wrapper.AMDSMI_INIT_* per release
_INIT_FLAGS = {
    "5.7": {
        "INIT_ALL_PROCESSORS": 0,
        "INIT_AMD_CPUS": 1,
        "INIT_AMD_GPUS": 2,
        "INIT_NON_AMD_CPUS": 4,
        "INIT_NON_AMD_GPUS": 8,
    },
    "6.0": {
        "INIT_ALL_PROCESSORS": 0,
        "INIT_AMD_CPUS": 1,
        "INIT_AMD_GPUS": 2,
        "INIT_NON_AMD_CPUS": 4,
        "INIT_NON_AMD_GPUS": 8,
    },
}
for _v in ("6.2", "6.3", "6.4", "7.0"):
    _INIT_FLAGS[_v] = {
        "INIT_ALL_PROCESSORS": 0xFFFFFFFF,
        "INIT_AMD_CPUS": 1,
        "INIT_AMD_GPUS": 2,
        "INIT_AMD_APUS": 3,
        "INIT_NON_AMD_CPUS": 4,
        "INIT_NON_AMD_GPUS": 8,
    }

BANDWIDTH_FN = {"5.7": "amdsmi_get_minmax_bandwith_between_processors"}  # sic, 5.7 only
for _v in VERSIONS[1:]:
    BANDWIDTH_FN[_v] = "amdsmi_get_minmax_bandwidth_between_processors"

# amdsmi_interface.AmdSmiClkType (SYS and GFX are one value), AmdSmiTemperatureType (HOTSPOT and
# JUNCTION are one value), AmdSmiTemperatureMetric: the members this stand-in answers
CLK_TYPES = {"SYS": 0, "GFX": 0, "DF": 1, "DCEF": 2, "SOC": 3, "MEM": 4, "PCIE": 5}
TEMPERATURE_TYPES = {"EDGE": 0, "HOTSPOT": 1, "JUNCTION": 1, "VRAM": 2}
TEMPERATURE_METRICS = {"CURRENT": 0, "MAX": 1, "MIN": 2}

MI300_DEVICE_IDS = frozenset(range(0x74A0, 0x74C0)) | frozenset(
    range(0x75A0, 0x75C0)
)  # MI300A/X, MI325X, MI35x


def c_float(x: float) -> float:
    """What ctypes.c_float(x).value gives back: the nearest IEEE single."""
    return struct.unpack("f", struct.pack("f", float(x)))[0]


def amdsmi_uuid(serial: int, device_id: int, fcn: int = 0xFF) -> str:
    """amd_smi_uuid.cc ``amdsmi_uuid_gen``: a version-1 UUID laid out from the ASIC serial and device id."""
    time_low = (device_id & 0xFFFF) | (fcn & 0xFF) << 16 | ((serial >> 56) & 0xFF) << 24
    clk_seq_low = (serial >> 48) & 0xFF  # shares its byte with asic_6
    asic_4 = (serial >> 32) & 0xFFFF
    asic_0 = serial & 0xFFFFFFFF
    return f"{time_low:08x}-0000-1000-{0x80:02x}{clk_seq_low:02x}-{asic_4:04x}{asic_0:08x}"


def rocr_uuid(serial: int) -> str:
    """ROCr's HSA_AMD_AGENT_INFO_UUID (``rocminfo`` "Uuid", what ROCR_VISIBLE_DEVICES accepts)."""
    return f"GPU-{serial:016x}"


def torch_uuid(serial: int) -> str:
    """``str(torch.cuda.get_device_properties(i).uuid)`` on ROCm: HIP's uuid holds the 16 characters
    after ``GPU-`` of ROCr's UUID as bytes; torch prints the bytes as 8-4-4-4-12 hex."""
    b = rocr_uuid(serial)[4:].encode("ascii").hex()
    return f"{b[:8]}-{b[8:12]}-{b[12:16]}-{b[16:20]}-{b[20:]}"


class AmdSmiException(Exception):
    """Base smi exception class"""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        names = {v: k for k, v in STATUS.items()}
        self.err_info = names.get(err_code, "AMDSMI_STATUS_UNKNOWN_ERROR - An unknown error occurred")

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | {self.err_info}"

    def get_error_code(self) -> int:
        return self.err_code

    def get_error_info(self) -> str:
        return self.err_info


class AmdSmiParameterException(AmdSmiException):
    pass


@dataclass
class FakeGcd:
    """One GPU/GCD. ``silent`` makes it an MI250X secondary; ``silent_mode`` says how it shows.

    ``power_W`` may be set to a float (an emulator's average); the library returns whole watts, so the
    fake returns ``int(power_W)``. ``energy_ticks`` is the accumulator, ``counter_resolution`` the
    µJ per tick that the library reports (15.3, returned as a C float)."""

    bdf: str  # "0000:c1:00.0"
    market_name: str = "AMD Instinct MI250X"
    device_id: int = 0x7408
    serial: str = "0x0000000000000000"
    uuid: str = ""  # overrides the amdsmi UUID computed from serial and device id
    power_W: float = 90
    energy_ticks: int = 2_000_000_000
    counter_resolution: float = 15.3
    timestamp_ns: int = 1_700_000_000_000_000_000
    silent: bool = False
    silent_mode: str = "zero"  # "zero" (0 W, 0 J), "na" (power unavailable, 0 J) or "raise" (NOT_SUPPORTED)
    instant: bool = False  # MI300-class: current_socket_power numeric, average_socket_power unavailable
    link_bw: dict[str, int] = field(default_factory=dict)  # other bdf -> max bandwidth (MB/s)
    # device settings: amdsmi_set_power_cap and amdsmi_set_gpu_clk_range need root (NO_PERM otherwise,
    # unless ``privileged``) and answer NOT_SUPPORTED in a guest VM (``virtual``). Caps in µW, clocks MHz.
    privileged: bool = False
    virtual: bool = False
    power_cap_uW: int = 560_000_000
    default_power_cap_uW: int = 560_000_000
    min_power_cap_uW: int = 0
    max_power_cap_uW: int = 560_000_000
    gfx_clk_range_MHz: tuple[int, int] = (500, 1700)  # (min, max) of amdsmi_set_gpu_clk_range, GFX
    gfx_clk_limits_MHz: tuple[int, int] = (500, 1700)  # what the part allows
    mem_clk_range_MHz: tuple[int, int] = (400, 1600)
    mem_clk_limits_MHz: tuple[int, int] = (400, 1600)
    gfx_clk_MHz: int = 1700  # what amdsmi_get_clock_info(GFX) reads as current; the hardware model sets it
    temperature_C: int = 40

    @property
    def mi300(self) -> bool:
        return self.instant or self.device_id in MI300_DEVICE_IDS

    @property
    def serial_int(self) -> int:
        return int(self.serial, 16)


class ProcessorHandle:
    """Stands in for amdsmi_wrapper.amdsmi_processor_handle (an opaque pointer)."""

    def __init__(self, gcd: FakeGcd) -> None:
        self.gcd = gcd


class FakeAmdsmiState(TypedDict):
    init: int  # amdsmi_init calls minus amdsmi_shut_down calls
    flags: IntEnum | None  # the flag of the last amdsmi_init
    reads: dict[int, int]  # energy reads per GCD (id of the FakeGcd), for the "backwards" quirk
    cache: dict[int, tuple[int, int, int]]  # gpu_metrics per GCD, for the "stuck" quirk


class FakeAmdsmi(types.ModuleType):
    """The module :func:`make_amdsmi` returns. The release's functions are set on it by name, as the
    real module has them (read through the module's dynamic attributes); declared here are the
    attributes the stand-in itself uses and what tests look at."""

    __version__: str
    AmdSmiException: type[AmdSmiException]
    AmdSmiLibraryException: type[AmdSmiLibraryException]
    AmdSmiParameterException: type[AmdSmiParameterException]
    AmdSmiInitFlags: type[IntEnum]
    AmdSmiClkType: type[IntEnum]
    AmdSmiTemperatureType: type[IntEnum]
    AmdSmiTemperatureMetric: type[IntEnum]
    _state: FakeAmdsmiState


def make_amdsmi(
    gcds: list[FakeGcd],
    version: str = "6.4",
    *,
    driver_loaded: bool = True,
    bandwidth_supported: bool = True,
    quirks: tuple[str, ...] = (),
    backwards_every: int = 50,
    backwards_ticks: int = 10_000_000,
) -> FakeAmdsmi:
    """A module object that behaves like ``amdsmi`` of ROCm ``version`` on a node with ``gcds``."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}")
    for q in quirks:
        if q not in QUIRKS:
            raise ValueError(f"unknown quirk {q!r}; known: {sorted(QUIRKS)}")
        if version not in QUIRKS[q]:
            raise ValueError(f"quirk {q!r} is documented for ROCm {QUIRKS[q]} only, not {version}")
    v = tuple(int(x) for x in version.split("."))
    na = NA if v >= (6, 2) else SENTINEL  # 6.2 added the 0xFFFF -> "N/A" loop to amdsmi_get_power_info
    mod = FakeAmdsmi("amdsmi")
    mod.__version__ = version
    mod.AmdSmiException = AmdSmiException
    mod.AmdSmiLibraryException = AmdSmiLibraryException
    mod.AmdSmiParameterException = AmdSmiParameterException
    # the members differ per release: the functional API, which mypy follows only for literal members
    flags = IntEnum("AmdSmiInitFlags", _INIT_FLAGS[version])  # type: ignore[misc]
    mod.AmdSmiInitFlags = flags
    state: FakeAmdsmiState = {"init": 0, "flags": None, "reads": {}, "cache": {}}
    mod._state = state
    handles = [ProcessorHandle(g) for g in gcds]

    def fail(name: str) -> NoReturn:
        if name == "AMDSMI_STATUS_DRIVER_NOT_LOADED" and v < (6, 0):
            name = "AMDSMI_STATUS_INIT_ERROR"  # no DRIVER_NOT_LOADED status in 5.7
        raise AmdSmiLibraryException(STATUS[name])

    def check(h: object) -> FakeGcd:
        if not state["init"]:
            fail("AMDSMI_STATUS_NOT_INIT")
        if not isinstance(h, ProcessorHandle):
            raise AmdSmiParameterException(h)
        return h.gcd

    def metrics(g: FakeGcd) -> tuple[int, int, int]:
        """(power W, accumulator ticks, timestamp ns) as gpu_metrics gives them now (or cached)."""
        now = (int(g.power_W), int(g.energy_ticks), int(g.timestamp_ns))
        if "stuck" in quirks:
            return state["cache"].setdefault(id(g), now)
        return now

    def amdsmi_init(flag: object = flags["INIT_AMD_GPUS"]) -> None:
        if not isinstance(flag, flags):
            raise AmdSmiParameterException(flag)
        if not driver_loaded:
            fail("AMDSMI_STATUS_DRIVER_NOT_LOADED")
        state["init"] += 1
        state["flags"] = flag

    def amdsmi_shut_down() -> None:
        if not state["init"]:
            fail("AMDSMI_STATUS_NOT_INIT")
        state["init"] -= 1

    def amdsmi_get_processor_handles() -> list[ProcessorHandle]:
        if not state["init"]:
            fail("AMDSMI_STATUS_NOT_INIT")
        return list(handles)

    def amdsmi_get_gpu_device_bdf(processor_handle: object) -> str:
        return check(processor_handle).bdf

    def amdsmi_get_gpu_device_uuid(processor_handle: object) -> str:
        g = check(processor_handle)
        return g.uuid or amdsmi_uuid(g.serial_int, g.device_id)

    def amdsmi_get_gpu_asic_info(processor_handle: object) -> dict[str, int | str]:
        g = check(processor_handle)
        d: dict[str, int | str]
        if v < (6, 2):
            d = {
                "market_name": g.market_name,
                "vendor_id": 0x1002,
                "subvendor_id": 0x1002,
                "device_id": g.device_id,
                "rev_id": 1,
                "asic_serial": f"{g.serial_int:016x}",
            }
            if v >= (6, 0):
                d = {**d, "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]", "xgmi_physical_id": 0}
            return d
        d = {
            "market_name": g.market_name,
            "vendor_id": hex(0x1002),
            "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
            "subvendor_id": hex(0x1002),
            "device_id": hex(g.device_id),
            "rev_id": "0x01",
            "asic_serial": f"0x{g.serial_int:016X}",
            "oam_id": NA,
        }
        if v >= (6, 3):
            d["num_compute_units"] = 304 if g.mi300 else 110
            d["target_graphics_version"] = "gfx942" if g.mi300 else "gfx90a"
        if v >= (7, 0):
            d["subvendor_id"], d["subsystem_id"] = "0x1002", "0x0c34"
        return d

    def _power_info(processor_handle: object) -> dict[str, int | str]:
        g = check(processor_handle)
        avg: int | str
        cur: int | str
        if g.silent and g.silent_mode == "raise":
            fail("AMDSMI_STATUS_NOT_SUPPORTED")
        watts = metrics(g)[0]
        if g.silent:
            avg = 0 if g.silent_mode == "zero" else na
            cur = avg if version == "6.0" else na
        elif g.mi300:
            avg, cur = na, watts  # gpu_metrics 1.4/1.5: average_socket_power is the sentinel
        else:
            avg = watts
            cur = watts if version == "6.0" else na  # 6.0: v1.3 copies the average into current
        d: dict[str, int | str] = {
            "current_socket_power": cur,
            "average_socket_power": avg,
            "gfx_voltage": 800,
            "soc_voltage": 900,
            "mem_voltage": 1200,
            "power_limit": na if g.silent else 560,
        }
        if v < (6, 0):
            del d["current_socket_power"]
        if v >= (7, 0):
            d = {"socket_power": cur if g.mi300 else avg, **d}
        return d

    def power_info_6_4(processor_handle: object, sensor_ind: int = 0) -> dict[str, int | str]:
        return _power_info(processor_handle)

    def power_info(processor_handle: object) -> dict[str, int | str]:
        return _power_info(processor_handle)

    # 6.4 alone takes sensor_ind
    amdsmi_get_power_info: Callable[..., dict[str, int | str]] = (
        power_info_6_4 if version == "6.4" else power_info
    )
    amdsmi_get_power_info.__name__ = "amdsmi_get_power_info"

    def amdsmi_get_energy_count(processor_handle: object) -> dict[str, int | float]:
        g = check(processor_handle)
        if g.silent and g.silent_mode == "raise":
            fail("AMDSMI_STATUS_NOT_SUPPORTED")
        _, ticks, ts = metrics(g)
        if g.silent:
            ticks = 0
        elif "backwards" in quirks:
            n = state["reads"][id(g)] = state["reads"].get(id(g), 0) + 1
            if n % backwards_every == 0:
                ticks = max(0, ticks - backwards_ticks)
        d = {"counter_resolution": c_float(g.counter_resolution), "timestamp": ts}
        if v <= (6, 2):
            return {"power": ticks, **d}
        if v == (6, 3):
            return {"power": ticks, "energy_accumulator": ticks, **d}
        return {"energy_accumulator": ticks, **d}

    def minmax_bandwidth(processor_handle_src: object, processor_handle_dst: object) -> dict[str, int]:
        a, b = check(processor_handle_src), check(processor_handle_dst)
        if not bandwidth_supported:
            fail("AMDSMI_STATUS_NOT_SUPPORTED")
        mx = a.link_bw.get(b.bdf, 0)
        return {"min_bandwidth": 50000 if mx else 0, "max_bandwidth": mx}

    clk_type = IntEnum("AmdSmiClkType", CLK_TYPES)  # type: ignore[misc]
    temp_type = IntEnum("AmdSmiTemperatureType", TEMPERATURE_TYPES)  # type: ignore[misc]
    temp_metric = IntEnum("AmdSmiTemperatureMetric", TEMPERATURE_METRICS)  # type: ignore[misc]
    mod.AmdSmiClkType = clk_type
    mod.AmdSmiTemperatureType = temp_type
    mod.AmdSmiTemperatureMetric = temp_metric

    def settable(h: object) -> FakeGcd:
        g = check(h)
        if g.virtual:
            fail("AMDSMI_STATUS_NOT_SUPPORTED")
        if not g.privileged:
            fail("AMDSMI_STATUS_NO_PERM")
        return g

    def amdsmi_get_power_cap_info(processor_handle: object) -> dict[str, int]:
        g = check(processor_handle)
        return {
            "power_cap": int(g.power_cap_uW),
            "default_power_cap": int(g.default_power_cap_uW),
            "dpm_cap": int(g.gfx_clk_limits_MHz[1]),
            "min_power_cap": int(g.min_power_cap_uW),
            "max_power_cap": int(g.max_power_cap_uW),
        }

    def amdsmi_set_power_cap(processor_handle: object, sensor_ind: int, cap: int) -> None:
        check(processor_handle)
        for x in (sensor_ind, cap):
            if not isinstance(x, int):
                raise AmdSmiParameterException(x)
        g = settable(processor_handle)
        if not g.min_power_cap_uW <= cap <= g.max_power_cap_uW:
            fail("AMDSMI_STATUS_INVAL")
        g.power_cap_uW = cap

    def limits(g: FakeGcd, clock_type: object) -> tuple[str, tuple[int, int]]:
        if not isinstance(clock_type, clk_type):
            raise AmdSmiParameterException(clock_type)
        if clock_type == CLK_TYPES["GFX"]:
            return "gfx", g.gfx_clk_limits_MHz
        if clock_type == CLK_TYPES["MEM"]:
            return "mem", g.mem_clk_limits_MHz
        fail("AMDSMI_STATUS_NOT_SUPPORTED")

    def amdsmi_get_clock_info(processor_handle: object, clock_type: object) -> dict[str, Any]:
        g = check(processor_handle)
        which, (lo, _) = limits(g, clock_type)
        cur = g.gfx_clk_MHz if which == "gfx" else g.mem_clk_range_MHz[1]
        rng = g.gfx_clk_range_MHz if which == "gfx" else g.mem_clk_range_MHz
        if v < (6, 2):  # amdsmi_clk_info_t before 6.1: cur_clk, max_clk, min_clk, sleep_clk
            return {"cur_clk": cur, "max_clk": rng[1], "min_clk": rng[0], "sleep_clk": lo}
        return {
            "clk": cur,
            "min_clk": rng[0],
            "max_clk": rng[1],
            "clk_locked": rng[0] == rng[1],
            "clk_deep_sleep": na,
        }

    def amdsmi_set_gpu_clk_range(
        processor_handle: object, min_clk_value: int, max_clk_value: int, clk_type: object
    ) -> None:
        check(processor_handle)
        for x in (min_clk_value, max_clk_value):
            if not isinstance(x, int):
                raise AmdSmiParameterException(x)
        g = settable(processor_handle)
        which, (lo, hi) = limits(g, clk_type)
        if not lo <= min_clk_value <= max_clk_value <= hi:
            fail("AMDSMI_STATUS_INVAL")
        if which == "gfx":
            g.gfx_clk_range_MHz = (min_clk_value, max_clk_value)
            g.gfx_clk_MHz = max_clk_value
        else:
            g.mem_clk_range_MHz = (min_clk_value, max_clk_value)

    def amdsmi_get_temp_metric(processor_handle: object, sensor_type: object, metric: object) -> int:
        g = check(processor_handle)
        if not isinstance(sensor_type, temp_type) or not isinstance(metric, temp_metric):
            raise AmdSmiParameterException(sensor_type)
        return int(g.temperature_C)  # °C

    for fn in (
        amdsmi_get_power_cap_info,
        amdsmi_set_power_cap,
        amdsmi_get_clock_info,
        amdsmi_set_gpu_clk_range,
        amdsmi_get_temp_metric,
        amdsmi_init,
        amdsmi_shut_down,
        amdsmi_get_processor_handles,
        amdsmi_get_gpu_device_bdf,
        amdsmi_get_gpu_device_uuid,
        amdsmi_get_gpu_asic_info,
        amdsmi_get_power_info,
        amdsmi_get_energy_count,
    ):
        setattr(mod, fn.__name__, fn)
    minmax_bandwidth.__name__ = BANDWIDTH_FN[version]
    setattr(mod, BANDWIDTH_FN[version], minmax_bandwidth)
    return mod


FRONTIER_BDFS = (
    "0000:c1:00.0",
    "0000:c6:00.0",
    "0000:c9:00.0",
    "0000:ce:00.0",
    "0000:d1:00.0",
    "0000:d6:00.0",
    "0000:d9:00.0",
    "0000:de:00.0",
)
# rocm-smi --shownodesbw on a 4 x MI250 node (optimum-amd docs): max bandwidth, MB/s
_BW = {
    (0, 1): 200000,
    (0, 2): 50000,
    (0, 6): 100000,
    (1, 3): 50000,
    (1, 5): 50000,
    (2, 3): 200000,
    (2, 4): 100000,
    (3, 7): 50000,
    (4, 5): 200000,
    (4, 6): 50000,
    (5, 7): 50000,
    (6, 7): 200000,
}


def mi250x_node(silent_mode: str = "zero", primaries_first: bool = True) -> list[FakeGcd]:
    """A Frontier node: 4 MI250X = 8 GCDs, packages (0,1) (2,3) (4,5) (6,7) by xGMI bandwidth.

    ``primaries_first=False`` makes the higher bus id of each pair the primary, as happens on some
    nodes ("usually one above or below the secondary", rocm-smi).
    """
    gcds = []
    for i, bdf in enumerate(FRONTIER_BDFS):
        secondary = (i % 2 == 1) if primaries_first else (i % 2 == 0)
        gcds.append(
            FakeGcd(
                bdf=bdf,
                serial=f"0x{0xCF1182F2988C0A40 + i:X}",
                silent=secondary,
                silent_mode=silent_mode,
                power_W=90 + 10 * (i // 2),
                energy_ticks=1_000_000_000 * (i // 2 + 1),
            )
        )
    for (i, j), bw in _BW.items():
        gcds[i].link_bw[gcds[j].bdf] = bw
        gcds[j].link_bw[gcds[i].bdf] = bw
    return gcds


def install(
    monkeypatch: pytest.MonkeyPatch, gcds: list[FakeGcd], version: str = "6.4", **kw: Any
) -> FakeAmdsmi:
    mod = make_amdsmi(gcds, version, **kw)
    monkeypatch.setitem(sys.modules, "amdsmi", mod)
    return mod
