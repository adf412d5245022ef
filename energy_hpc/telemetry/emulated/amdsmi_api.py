"""A stand-in for ROCm's ``amdsmi`` Python package, release by release.

Sources for what it returns (ROCm/amdsmi py-interface and its docs):

* ``amdsmi_get_power_info`` -- amdsmi_power_info_t per release (rocm.docs.amd.com, docs-5.7.1 ...
  docs-7.1.1) and ``amdsmi_interface.py``: 5.7 ``average_socket_power, gfx_voltage, soc_voltage,
  mem_voltage, power_limit``; 6.0-6.4 adds ``current_socket_power`` ("N/A" on MI200 and older,
  ``average_socket_power`` "N/A" on MI300); 7.x adds ``socket_power`` ("matches current or average").
* ``amdsmi_get_energy_count`` -- ``power, counter_resolution, timestamp`` up to 6.2;
  ``power`` and ``energy_accumulator`` in 6.3; ``energy_accumulator`` only from 6.4 (``power``
  "Deprecated in ROCm 6.4" in amdsmi-py-api.md). counter_resolution 15.259 uJ/tick on MI200.
* ``AmdSmiLibraryException(err_code)`` with ``get_error_code()``, ``err_code``, ``err_info``
  (py-interface/amdsmi_exception.py), status values of amdsmi.h (NOT_SUPPORTED = 2).
* ``AmdSmiInitFlags.INIT_AMD_GPUS`` (6.x and later; ``AMD_GPUS`` in 5.x).
* ``amdsmi_get_gpu_device_bdf`` -> "0000:c1:00.0" (lower case, _format_bdf);
  ``amdsmi_get_minmax_bandwidth_between_processors`` -> {"min_bandwidth", "max_bandwidth"} in MB/s.
* MI250X node topology (Frontier/LUMI, ``rocm-smi --shownodesbw`` as printed in Hugging Face's
  optimum-amd "AMD Instinct GPU connectivity"): GCD pairs (0,1) (2,3) (4,5) (6,7) at 50000-200000,
  other links 50000-50000 or 50000-100000, or not connected (0-0). Secondary dies read 0 power and a
  0 energy counter ("drm/amd/pm: Only primary die supports power data"), or "N/A", or raise
  NOT_SUPPORTED depending on the stack.

Use :func:`mi250x_node` for the 8-GCD Frontier node and :func:`make_amdsmi` for the module object.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from enum import IntEnum

VERSIONS = ("5.7", "6.0", "6.2", "6.3", "6.4", "7.0")
NA = "N/A"

STATUS = {"AMDSMI_STATUS_SUCCESS": 0, "AMDSMI_STATUS_INVAL": 1, "AMDSMI_STATUS_NOT_SUPPORTED": 2,
          "AMDSMI_STATUS_NOT_YET_IMPLEMENTED": 3, "AMDSMI_STATUS_TIMEOUT": 8, "AMDSMI_STATUS_RETRY": 9,
          "AMDSMI_STATUS_NO_PERM": 10, "AMDSMI_STATUS_INIT_ERROR": 18, "AMDSMI_STATUS_NOT_FOUND": 31,
          "AMDSMI_STATUS_NOT_INIT": 32, "AMDSMI_STATUS_DRIVER_NOT_LOADED": 34}


class AmdSmiException(Exception):
    """Base smi exception class"""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code):
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        names = {v: k for k, v in STATUS.items()}
        self.err_info = names.get(err_code, "AMDSMI_STATUS_UNKNOWN_ERROR - An unknown error occurred")

    def __str__(self):
        return f"An error occured with code: {self.err_code}({self.err_info})"

    def get_error_code(self):
        return self.err_code

    def get_error_info(self):
        return self.err_info


class AmdSmiParameterException(AmdSmiException):
    pass


@dataclass
class FakeGcd:
    """One GPU/GCD. ``silent`` makes it an MI250X secondary; ``silent_mode`` says how it shows."""

    bdf: str  # "0000:c1:00.0"
    market_name: str = "AMD Instinct MI250X"
    device_id: int = 0x7408
    serial: str = "0x0000000000000000"
    uuid: str = ""
    power_W: int = 90
    energy_ticks: int = 2_000_000_000
    counter_resolution: float = 15.259
    silent: bool = False
    silent_mode: str = "zero"  # "zero" (0 W, 0 J), "na" ("N/A" power, 0 J) or "raise" (NOT_SUPPORTED)
    instant: bool = False  # MI300-class: current_socket_power numeric, average_socket_power "N/A"
    link_bw: dict = field(default_factory=dict)  # other bdf -> max bandwidth (MB/s)


class ProcessorHandle:
    """Stands in for amdsmi_wrapper.amdsmi_processor_handle (an opaque pointer)."""

    def __init__(self, gcd: FakeGcd) -> None:
        self.gcd = gcd


def make_amdsmi(gcds: list[FakeGcd], version: str = "6.4", *, driver_loaded: bool = True,
                bandwidth_supported: bool = True) -> types.ModuleType:
    """A module object that behaves like ``amdsmi`` of ROCm ``version`` on a node with ``gcds``."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}")
    major_minor = tuple(int(x) for x in version.split("."))
    mod = types.ModuleType("amdsmi")
    mod.__version__ = version
    mod.AmdSmiException = AmdSmiException
    mod.AmdSmiLibraryException = AmdSmiLibraryException
    mod.AmdSmiParameterException = AmdSmiParameterException
    if major_minor < (6, 0):
        mod.AmdSmiInitFlags = IntEnum("AmdSmiInitFlags", {"ALL_DEVICES": 0xFFFFFFFF, "AMD_CPUS": 1, "AMD_GPUS": 2})
    else:
        mod.AmdSmiInitFlags = IntEnum("AmdSmiInitFlags", {"INIT_ALL_PROCESSORS": 0xFFFFFFFF, "INIT_AMD_CPUS": 1,
                                                          "INIT_AMD_GPUS": 2, "INIT_NON_AMD_CPUS": 4,
                                                          "INIT_NON_AMD_GPUS": 8, "INIT_AMD_APUS": 3})
    state = {"init": 0, "flags": None}
    mod._state = state
    handles = [ProcessorHandle(g) for g in gcds]

    def fail(name):
        raise AmdSmiLibraryException(STATUS[name])

    def check(h):
        if not state["init"]:
            fail("AMDSMI_STATUS_NOT_INIT")
        if not isinstance(h, ProcessorHandle):
            raise AmdSmiParameterException(h)
        return h.gcd

    def amdsmi_init(flag=mod.AmdSmiInitFlags(2)):
        if not driver_loaded:
            fail("AMDSMI_STATUS_DRIVER_NOT_LOADED")
        state["init"] += 1
        state["flags"] = flag

    def amdsmi_shut_down():
        if not state["init"]:
            fail("AMDSMI_STATUS_NOT_INIT")
        state["init"] -= 1

    def amdsmi_get_processor_handles():
        if not state["init"]:
            fail("AMDSMI_STATUS_NOT_INIT")
        return list(handles)

    def amdsmi_get_gpu_device_bdf(processor_handle):
        return check(processor_handle).bdf

    def amdsmi_get_gpu_device_uuid(processor_handle):
        g = check(processor_handle)
        return g.uuid or f"{g.device_id:04x}ff74-0000-1000-80{g.bdf[5:7]}-{g.serial[-12:]}"

    def amdsmi_get_gpu_asic_info(processor_handle):
        g = check(processor_handle)
        return {"market_name": g.market_name, "vendor_id": "0x1002", "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
                "subvendor_id": "0x1002", "device_id": hex(g.device_id), "rev_id": "0x01", "asic_serial": g.serial,
                "oam_id": NA, "num_compute_units": 110, "target_graphics_version": "gfx90a"}

    def amdsmi_get_power_info(processor_handle, *args):
        g = check(processor_handle)
        if g.silent and g.silent_mode == "raise":
            fail("AMDSMI_STATUS_NOT_SUPPORTED")
        if g.silent:
            p = 0 if g.silent_mode == "zero" else NA
            avg, cur = p, NA
        elif g.instant:
            avg, cur = NA, g.power_W
        else:
            avg, cur = g.power_W, NA
        d = {"average_socket_power": avg, "gfx_voltage": 800, "soc_voltage": 900, "mem_voltage": 1200,
             "power_limit": 0 if g.silent else 560}
        if major_minor >= (6, 0):
            d = {"current_socket_power": cur, **d}
        if major_minor >= (7, 0):
            sp = cur if cur != NA else avg
            d = {"socket_power": sp, **d}
        return d

    def amdsmi_get_energy_count(processor_handle):
        g = check(processor_handle)
        if g.silent and g.silent_mode == "raise":
            fail("AMDSMI_STATUS_NOT_SUPPORTED")
        ticks = 0 if g.silent else g.energy_ticks
        d = {"counter_resolution": g.counter_resolution, "timestamp": 1_700_000_000_000_000_000}
        if major_minor <= (6, 2):
            return {"power": ticks, **d}
        if major_minor == (6, 3):
            return {"power": ticks, "energy_accumulator": ticks, **d}
        return {"energy_accumulator": ticks, **d}

    def amdsmi_get_minmax_bandwidth_between_processors(processor_handle_src, processor_handle_dst):
        a, b = check(processor_handle_src), check(processor_handle_dst)
        if not bandwidth_supported:
            fail("AMDSMI_STATUS_NOT_SUPPORTED")
        mx = a.link_bw.get(b.bdf, 0)
        return {"min_bandwidth": 50000 if mx else 0, "max_bandwidth": mx}

    for fn in (amdsmi_init, amdsmi_shut_down, amdsmi_get_processor_handles, amdsmi_get_gpu_device_bdf,
               amdsmi_get_gpu_device_uuid, amdsmi_get_gpu_asic_info, amdsmi_get_power_info,
               amdsmi_get_energy_count, amdsmi_get_minmax_bandwidth_between_processors):
        setattr(mod, fn.__name__, fn)
    return mod


FRONTIER_BDFS = ("0000:c1:00.0", "0000:c6:00.0", "0000:c9:00.0", "0000:ce:00.0",
                 "0000:d1:00.0", "0000:d6:00.0", "0000:d9:00.0", "0000:de:00.0")
# rocm-smi --shownodesbw on a 4 x MI250 node (optimum-amd docs): max bandwidth, MB/s
_BW = {(0, 1): 200000, (0, 2): 50000, (0, 6): 100000, (1, 3): 50000, (1, 5): 50000, (2, 3): 200000,
       (2, 4): 100000, (3, 7): 50000, (4, 5): 200000, (4, 6): 50000, (5, 7): 50000, (6, 7): 200000}


def mi250x_node(silent_mode: str = "zero", primaries_first: bool = True) -> list[FakeGcd]:
    """A Frontier node: 4 MI250X = 8 GCDs, packages (0,1) (2,3) (4,5) (6,7) by xGMI bandwidth.

    ``primaries_first=False`` makes the higher bus id of each pair the primary, as happens on some
    nodes ("usually one above or below the secondary", rocm-smi).
    """
    gcds = []
    for i, bdf in enumerate(FRONTIER_BDFS):
        secondary = (i % 2 == 1) if primaries_first else (i % 2 == 0)
        gcds.append(FakeGcd(bdf=bdf, serial=f"0x{0xCF1182F2988C0A40 + i:X}", silent=secondary,
                            silent_mode=silent_mode, power_W=90 + 10 * (i // 2),
                            energy_ticks=1_000_000_000 * (i // 2 + 1)))
    for (i, j), bw in _BW.items():
        gcds[i].link_bw[gcds[j].bdf] = bw
        gcds[j].link_bw[gcds[i].bdf] = bw
    return gcds


def install(monkeypatch, gcds: list[FakeGcd], version: str = "6.4", **kw) -> types.ModuleType:
    mod = make_amdsmi(gcds, version, **kw)
    monkeypatch.setitem(sys.modules, "amdsmi", mod)
    return mod
