"""A stand-in for ``pynvml`` (nvidia-ml-py) on machines without an NVIDIA GPU.

It follows nvidia-ml-py 12.x/13.x (pynvml.py as shipped, checked against the copy installed in this
project's venv): the same function names and parameter names, return codes and their values
(nvml.h), the ``NVMLError`` class whose ``__new__`` hands out one subclass per code
(``NVMLError_NotSupported`` ...) with the code in ``.value``, field ids 185/186
(NVML_FI_DEV_POWER_AVERAGE / NVML_FI_DEV_POWER_INSTANT), ``c_nvmlFieldValue_t`` with the same
ctypes layout (per-field ``nvmlReturn``, ``timestamp`` in us since the epoch, a value union chosen
by ``valueType``), bus ids in NVML's 8-digit-domain upper-case form. ``tests/telemetry/test_fakes.py``
compares names, values and signatures with the real package when it is importable.

Build one with :func:`make_pynvml` and hand it to ``energy_hpc.telemetry.nvml.open_sensor(ctx,
library=...)``. Tests drive the GPUs by setting attributes of :class:`FakeGpu` between reads.
"""

from __future__ import annotations

import string
import sys
import types
from ctypes import Structure, Union, c_double, c_int, c_int64, c_longlong, c_uint, c_uint32, c_ulong, c_ulonglong, c_ushort
from dataclasses import dataclass, field

# nvml.h return codes (pynvml NVML_ERROR_*), same values as the library.
CODES = {
    "NVML_SUCCESS": 0, "NVML_ERROR_UNINITIALIZED": 1, "NVML_ERROR_INVALID_ARGUMENT": 2,
    "NVML_ERROR_NOT_SUPPORTED": 3, "NVML_ERROR_NO_PERMISSION": 4, "NVML_ERROR_ALREADY_INITIALIZED": 5,
    "NVML_ERROR_NOT_FOUND": 6, "NVML_ERROR_INSUFFICIENT_SIZE": 7, "NVML_ERROR_INSUFFICIENT_POWER": 8,
    "NVML_ERROR_DRIVER_NOT_LOADED": 9, "NVML_ERROR_TIMEOUT": 10, "NVML_ERROR_IRQ_ISSUE": 11,
    "NVML_ERROR_LIBRARY_NOT_FOUND": 12, "NVML_ERROR_FUNCTION_NOT_FOUND": 13, "NVML_ERROR_CORRUPTED_INFOROM": 14,
    "NVML_ERROR_GPU_IS_LOST": 15, "NVML_ERROR_RESET_REQUIRED": 16, "NVML_ERROR_OPERATING_SYSTEM": 17,
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": 18, "NVML_ERROR_IN_USE": 19, "NVML_ERROR_MEMORY": 20,
    "NVML_ERROR_NO_DATA": 21, "NVML_ERROR_UNKNOWN": 999,
}
FIELDS = {"NVML_FI_DEV_POWER_AVERAGE": 185, "NVML_FI_DEV_POWER_INSTANT": 186}
VALUE_TYPES = {"NVML_VALUE_TYPE_DOUBLE": 0, "NVML_VALUE_TYPE_UNSIGNED_INT": 1, "NVML_VALUE_TYPE_UNSIGNED_LONG": 2,
               "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG": 3, "NVML_VALUE_TYPE_SIGNED_LONG_LONG": 4,
               "NVML_VALUE_TYPE_SIGNED_INT": 5, "NVML_VALUE_TYPE_UNSIGNED_SHORT": 6}


class c_nvmlValue_t(Union):
    _fields_ = [("dVal", c_double), ("uiVal", c_uint), ("ulVal", c_ulong), ("ullVal", c_ulonglong),
                ("sllVal", c_longlong), ("siVal", c_int), ("usVal", c_ushort)]


class c_nvmlFieldValue_t(Structure):
    _fields_ = [("fieldId", c_uint32), ("scopeId", c_uint32), ("timestamp", c_int64), ("latencyUsec", c_int64),
                ("valueType", c_uint), ("nvmlReturn", c_uint), ("value", c_nvmlValue_t)]


class _PciInfo:
    """The attributes of nvmlPciInfo_t that callers use (strings decoded, as pynvml does)."""

    def __init__(self, bus_id: str) -> None:
        self.busId = bus_id  # "00000000:3B:00.0"
        self.busIdLegacy = bus_id[4:]  # "0000:3B:00.0"
        dom, bus, rest = bus_id.split(":")
        self.domain, self.bus, self.device = int(dom, 16), int(bus, 16), int(rest.split(".")[0], 16)


@dataclass
class FakeGpu:
    """One GPU as the fake NVML reports it. Change the attributes to script readings."""

    uuid: str
    bus_id: str  # NVML form, "00000000:3B:00.0"
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mJ: int = 1_000_000
    power_instant_mW: int = 300_000
    power_average_mW: int = 280_000
    timestamp_us: int = 1_700_000_000_000_000
    energy_supported: bool = True  # False: pre-Volta, NOT_SUPPORTED
    fields_supported: bool = True  # False: driver older than the power field ids (per-field NOT_SUPPORTED)
    mig: list[str] = field(default_factory=list)  # MIG instance UUIDs ("MIG-...")
    lost: bool = False  # every call raises GPU_IS_LOST


class _Handle:
    def __init__(self, gpu: FakeGpu, mig: str = "") -> None:
        self.gpu, self.mig = gpu, mig


def _make_errors(mod: types.ModuleType) -> None:
    """Build NVMLError and its per-code subclasses the way pynvml's _extractNVMLErrorsAsClasses does."""

    class NVMLError(Exception):
        _valClassMapping: dict = {}

        def __new__(typ, value):
            if typ == NVMLError:
                typ = NVMLError._valClassMapping.get(value, typ)
            obj = Exception.__new__(typ)
            obj.value = value
            return obj

        def __str__(self):
            for name, code in CODES.items():
                if code == self.value:
                    return name.replace("NVML_ERROR_", "").replace("_", " ").title()
            return "NVML Error with code %d" % self.value

        def __eq__(self, other):
            return self.value == other.value

        __hash__ = Exception.__hash__

    NVMLError.__module__ = "pynvml"
    mod.NVMLError = NVMLError
    for name, code in CODES.items():
        if not name.startswith("NVML_ERROR_"):
            continue
        cls_name = "NVMLError_" + string.capwords(name.replace("NVML_ERROR_", ""), "_").replace("_", "")

        def gen_new(val):
            def new(typ, *args):
                return NVMLError.__new__(typ, val)
            return new

        cls = type(cls_name, (NVMLError,), {"__new__": gen_new(code)})
        cls.__module__ = "pynvml"
        setattr(mod, cls_name, cls)
        NVMLError._valClassMapping[code] = cls


def make_pynvml(gpus: list[FakeGpu], *, library_found: bool = True, driver_loaded: bool = True,
                no_permission: bool = False) -> types.ModuleType:
    """A module object that behaves like ``pynvml`` on a node with ``gpus``."""
    mod = types.ModuleType("pynvml")
    for table in (CODES, FIELDS, VALUE_TYPES):
        for k, v in table.items():
            setattr(mod, k, v)
    mod.c_nvmlFieldValue_t = c_nvmlFieldValue_t
    mod.c_nvmlValue_t = c_nvmlValue_t
    _make_errors(mod)
    state = {"refcount": 0, "calls": 0}
    mod._state = state
    mod._gpus = gpus

    def err(name):
        return mod.NVMLError(CODES[name])

    def need_init():
        state["calls"] += 1
        if state["refcount"] == 0:
            raise err("NVML_ERROR_UNINITIALIZED")

    def gpu_of(handle):
        need_init()
        if handle.gpu.lost:
            raise err("NVML_ERROR_GPU_IS_LOST")
        return handle.gpu

    def nvmlInit():
        if not library_found:
            raise err("NVML_ERROR_LIBRARY_NOT_FOUND")
        if not driver_loaded:
            raise err("NVML_ERROR_DRIVER_NOT_LOADED")
        state["refcount"] += 1

    def nvmlInitWithFlags(flags):
        nvmlInit()

    def nvmlShutdown():
        need_init()
        state["refcount"] -= 1

    def nvmlDeviceGetCount():
        need_init()
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(index):
        need_init()
        if not 0 <= index < len(gpus):
            raise err("NVML_ERROR_INVALID_ARGUMENT")
        return _Handle(gpus[index])

    def nvmlDeviceGetHandleByUUID(uuid):
        need_init()
        for g in gpus:
            if g.uuid == uuid:
                return _Handle(g)
            if uuid in g.mig:
                return _Handle(g, uuid)
        raise err("NVML_ERROR_NOT_FOUND")

    def nvmlDeviceGetHandleByPciBusId(pciBusId):
        need_init()
        for g in gpus:
            if g.bus_id.lower().endswith(pciBusId.lower()[-12:]):
                return _Handle(g)
        raise err("NVML_ERROR_NOT_FOUND")

    def nvmlDeviceGetUUID(handle):
        g = gpu_of(handle)
        return handle.mig or g.uuid

    def nvmlDeviceGetName(handle):
        return gpu_of(handle).name

    def nvmlDeviceGetPciInfo(handle):
        return _PciInfo(gpu_of(handle).bus_id)

    def nvmlDeviceGetTotalEnergyConsumption(handle):
        g = gpu_of(handle)
        if handle.mig or not g.energy_supported:
            raise err("NVML_ERROR_NOT_SUPPORTED")
        if no_permission:
            raise err("NVML_ERROR_NO_PERMISSION")
        return int(g.energy_mJ)

    def nvmlDeviceGetPowerUsage(handle):
        g = gpu_of(handle)
        if handle.mig:
            raise err("NVML_ERROR_NOT_SUPPORTED")
        return int(g.power_average_mW)

    def nvmlDeviceGetFieldValues(handle, fieldIds):
        g = gpu_of(handle)
        values = (c_nvmlFieldValue_t * len(fieldIds))()
        for i, fid in enumerate(fieldIds):
            try:
                values[i].fieldId, values[i].scopeId = fid
            except TypeError:
                values[i].fieldId = fid
            values[i].timestamp = g.timestamp_us
            values[i].valueType = VALUE_TYPES["NVML_VALUE_TYPE_UNSIGNED_INT"]
            known = {FIELDS["NVML_FI_DEV_POWER_INSTANT"]: g.power_instant_mW,
                     FIELDS["NVML_FI_DEV_POWER_AVERAGE"]: g.power_average_mW}
            if not g.fields_supported or values[i].fieldId not in known:
                values[i].nvmlReturn = CODES["NVML_ERROR_NOT_SUPPORTED"]
            else:
                values[i].nvmlReturn = CODES["NVML_SUCCESS"]
                values[i].value.uiVal = int(known[values[i].fieldId])
        return values

    def nvmlDeviceGetMaxMigDeviceCount(device):
        g = gpu_of(device)
        if not g.mig:
            raise err("NVML_ERROR_NOT_SUPPORTED")
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(device, index):
        g = gpu_of(device)
        if index >= len(g.mig):
            raise err("NVML_ERROR_NOT_FOUND")
        return _Handle(g, g.mig[index])

    def nvmlDeviceIsMigDeviceHandle(device):
        gpu_of(device)
        return int(bool(device.mig))

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(migDevice):
        return _Handle(gpu_of(migDevice))

    for fn in (nvmlInit, nvmlInitWithFlags, nvmlShutdown, nvmlDeviceGetCount, nvmlDeviceGetHandleByIndex,
               nvmlDeviceGetHandleByUUID, nvmlDeviceGetHandleByPciBusId, nvmlDeviceGetUUID, nvmlDeviceGetName,
               nvmlDeviceGetPciInfo, nvmlDeviceGetTotalEnergyConsumption, nvmlDeviceGetPowerUsage,
               nvmlDeviceGetFieldValues, nvmlDeviceGetMaxMigDeviceCount, nvmlDeviceGetMigDeviceHandleByIndex,
               nvmlDeviceIsMigDeviceHandle, nvmlDeviceGetDeviceHandleFromMigDeviceHandle):
        fn.__module__ = "pynvml"
        setattr(mod, fn.__name__, fn)
    return mod


def h100_node(n: int = 4) -> list[FakeGpu]:
    """``n`` H100s with realistic UUIDs and bus ids (a DGX-like node)."""
    buses = ["00000000:18:00.0", "00000000:2A:00.0", "00000000:3A:00.0", "00000000:5D:00.0",
             "00000000:9A:00.0", "00000000:AB:00.0", "00000000:BA:00.0", "00000000:DB:00.0"]
    return [FakeGpu(uuid=f"GPU-{k:08x}-aaaa-bbbb-cccc-{k:012x}", bus_id=buses[k],
                    energy_mJ=1_000_000 * (k + 1)) for k in range(n)]


def install(monkeypatch, gpus: list[FakeGpu], **kw) -> types.ModuleType:
    """Put a fake in ``sys.modules['pynvml']`` for code that imports it (registry, CLI)."""
    mod = make_pynvml(gpus, **kw)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    return mod
