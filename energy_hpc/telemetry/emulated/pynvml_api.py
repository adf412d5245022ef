"""A stand-in for ``pynvml`` (nvidia-ml-py) on machines without an NVIDIA GPU.

It follows nvidia-ml-py 12.x/13.x (pynvml.py as shipped, checked against the copy installed in this
project's venv): the same function names and parameter names, return codes and their values
(nvml.h), the ``NVMLError`` class whose ``__new__`` hands out one subclass per code
(``NVMLError_NotSupported`` ...) with the code in ``.value`` and, like the real one, ``__eq__``
without ``__hash__`` (instances are unhashable), field ids 185/186/191
(NVML_FI_DEV_POWER_AVERAGE / NVML_FI_DEV_POWER_INSTANT / NVML_FI_DEV_ENERGY) with their ``scopeId``
(NVML_POWER_SCOPE_GPU / _MODULE / _MEMORY), ``c_nvmlFieldValue_t`` with the same ctypes layout
(per-field ``nvmlReturn``, ``timestamp`` in us since the epoch, a value union chosen by
``valueType``), bus ids in NVML's 8-digit-domain upper-case form. ``tests/telemetry/test_fakes.py``
compares names, values and signatures with the real package when it is importable.

Behaviours of the real driver it reproduces:

* **cgroup-hidden GPUs** (Slurm ``ConstrainDevices=yes``): ``nvmlDeviceGetCount`` still counts every
  GPU of the node, while ``nvmlDeviceGetHandleByIndex`` / ``...ByUUID`` / ``...ByPciBusId`` answer
  NVML_ERROR_NO_PERMISSION for the hidden ones (``FakeGpu.hidden`` or ``make_pynvml(hidden=...)``).
* **MIG**: ``nvmlDeviceGetMaxMigDeviceCount`` returns 0 when MIG is off or unsupported (never an
  error), 7 when it is on; MIG device handles answer NOT_SUPPORTED for energy and power.
* **GH200 (Grace Hopper)**: when any ``module_*`` attribute is set the part is a module (Grace CPU +
  memory + GPU). ``nvmlDeviceGetTotalEnergyConsumption`` and ``nvmlDeviceGetPowerUsage`` then report
  the module; field values give the module with ``scopeId=NVML_POWER_SCOPE_MODULE`` and the GPU alone
  with ``NVML_POWER_SCOPE_GPU`` (0, also what a bare field id asks for) only when
  ``gpu_scope_supported``; otherwise the GPU-scope fields answer NOT_SUPPORTED. On other parts the
  module scope answers NOT_SUPPORTED.

* **Device settings** (``nvmlDeviceSetPowerManagementLimit`` in mW, ``nvmlDeviceSetGpuLockedClocks`` /
  ``nvmlDeviceSetMemoryLockedClocks`` and their ``Reset`` calls): NO_PERMISSION unless
  ``FakeGpu.privileged``, as for a user without root; INVALID_ARGUMENT for a limit outside
  ``nvmlDeviceGetPowerManagementLimitConstraints`` or a clock above the part's maximum; NOT_SUPPORTED on a
  MIG instance. ``nvmlDeviceGetEnforcedPowerLimit``, ``nvmlDeviceGetClockInfo`` (NVML_CLOCK_SM / _MEM) and
  ``nvmlDeviceGetTemperature`` read the state back.

Build one with :func:`make_pynvml` and hand it to ``energy_hpc.telemetry.nvml.open_sensor(ctx,
library=...)``. Tests drive the GPUs by setting attributes of :class:`FakeGpu` between reads.
"""

from __future__ import annotations

import ctypes
import string
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from ctypes import (
    Structure,
    Union,
    c_double,
    c_int,
    c_int64,
    c_longlong,
    c_uint,
    c_uint32,
    c_ulong,
    c_ulonglong,
    c_ushort,
)
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pytest

# nvml.h return codes (pynvml NVML_ERROR_*), same values as the library.
CODES = {
    "NVML_SUCCESS": 0,
    "NVML_ERROR_UNINITIALIZED": 1,
    "NVML_ERROR_INVALID_ARGUMENT": 2,
    "NVML_ERROR_NOT_SUPPORTED": 3,
    "NVML_ERROR_NO_PERMISSION": 4,
    "NVML_ERROR_ALREADY_INITIALIZED": 5,
    "NVML_ERROR_NOT_FOUND": 6,
    "NVML_ERROR_INSUFFICIENT_SIZE": 7,
    "NVML_ERROR_INSUFFICIENT_POWER": 8,
    "NVML_ERROR_DRIVER_NOT_LOADED": 9,
    "NVML_ERROR_TIMEOUT": 10,
    "NVML_ERROR_IRQ_ISSUE": 11,
    "NVML_ERROR_LIBRARY_NOT_FOUND": 12,
    "NVML_ERROR_FUNCTION_NOT_FOUND": 13,
    "NVML_ERROR_CORRUPTED_INFOROM": 14,
    "NVML_ERROR_GPU_IS_LOST": 15,
    "NVML_ERROR_RESET_REQUIRED": 16,
    "NVML_ERROR_OPERATING_SYSTEM": 17,
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": 18,
    "NVML_ERROR_IN_USE": 19,
    "NVML_ERROR_MEMORY": 20,
    "NVML_ERROR_NO_DATA": 21,
    "NVML_ERROR_UNKNOWN": 999,
}
# nvmlClockType_t and nvmlTemperatureSensors_t
CLOCKS = {"NVML_CLOCK_GRAPHICS": 0, "NVML_CLOCK_SM": 1, "NVML_CLOCK_MEM": 2, "NVML_CLOCK_VIDEO": 3}
TEMPERATURE_SENSORS = {"NVML_TEMPERATURE_GPU": 0}
FIELDS = {"NVML_FI_DEV_POWER_AVERAGE": 185, "NVML_FI_DEV_POWER_INSTANT": 186, "NVML_FI_DEV_ENERGY": 191}
# scopeId of the power/energy field values (nvml.h nvmlPowerScopeType_t)
SCOPES = {"NVML_POWER_SCOPE_GPU": 0, "NVML_POWER_SCOPE_MODULE": 1, "NVML_POWER_SCOPE_MEMORY": 2}
MIG_MODES = {"NVML_DEVICE_MIG_DISABLE": 0, "NVML_DEVICE_MIG_ENABLE": 1}
VALUE_TYPES = {
    "NVML_VALUE_TYPE_DOUBLE": 0,
    "NVML_VALUE_TYPE_UNSIGNED_INT": 1,
    "NVML_VALUE_TYPE_UNSIGNED_LONG": 2,
    "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG": 3,
    "NVML_VALUE_TYPE_SIGNED_LONG_LONG": 4,
    "NVML_VALUE_TYPE_SIGNED_INT": 5,
    "NVML_VALUE_TYPE_UNSIGNED_SHORT": 6,
}


class c_nvmlValue_t(Union):
    _fields_ = [
        ("dVal", c_double),
        ("uiVal", c_uint),
        ("ulVal", c_ulong),
        ("ullVal", c_ulonglong),
        ("sllVal", c_longlong),
        ("siVal", c_int),
        ("usVal", c_ushort),
    ]


class c_nvmlFieldValue_t(Structure):
    _fields_ = [
        ("fieldId", c_uint32),
        ("scopeId", c_uint32),
        ("timestamp", c_int64),
        ("latencyUsec", c_int64),
        ("valueType", c_uint),
        ("nvmlReturn", c_uint),
        ("value", c_nvmlValue_t),
    ]


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
    power_supported: bool = (
        True  # False: no power reading at all (nvmlDeviceGetPowerUsage and fields NOT_SUPPORTED)
    )
    mig: list[str] = field(default_factory=list)  # MIG instance UUIDs ("MIG-..."); non-empty = MIG mode on
    # (GPU instance id, compute instance id) of each MIG instance, as in the pre-R470 form
    # MIG-GPU-<uuid>/<gi>/<ci>; default (k + 1, 0) for the k-th instance
    mig_ids: list[tuple[int, int]] = field(default_factory=list)
    mig_capable: bool = True  # False: pre-Ampere, nvmlDeviceGetMigMode answers NOT_SUPPORTED
    lost: bool = False  # every call raises GPU_IS_LOST
    hidden: bool = False  # outside the job's device cgroup: handle lookups answer NO_PERMISSION
    # GH200: module scope (Grace CPU + memory + GPU). None on parts without a module scope.
    module_energy_mJ: int | None = None
    module_power_instant_mW: int | None = None
    module_power_average_mW: int | None = None
    gpu_scope_supported: bool = True  # GH200: False when the GPU-only scope does not answer
    # device settings. Setting them needs root on most systems: unless ``privileged`` the Set* calls answer
    # NO_PERMISSION, as nvidia-smi -pl / -lgc do for a normal user. Limits in mW, clocks in MHz.
    privileged: bool = False
    # False: a part whose memory clock cannot be locked (NVML documents the memory lock for Ampere and
    # newer): nvmlDeviceSetMemoryLockedClocks answers NOT_SUPPORTED whatever the privileges
    memory_lock_supported: bool = True
    power_limit_mW: int = 700_000  # nvmlDeviceGetPowerManagementLimit (what was set)
    default_limit_mW: int = 700_000
    min_limit_mW: int = 200_000
    max_limit_mW: int = 700_000
    sm_clock_max_MHz: int = 1980
    mem_clock_MHz: int = 2619  # HBM3: one memory clock
    mem_clock_min_MHz: int = 2619
    locked_sm_MHz: tuple[int, int] | None = None  # (min, max) of nvmlDeviceSetGpuLockedClocks
    locked_mem_MHz: tuple[int, int] | None = None
    sm_clock_MHz: int = 1980  # what nvmlDeviceGetClockInfo(SM) reads; the hardware model sets it
    temperature_C: int = 35

    @property
    def is_module(self) -> bool:
        return any(
            v is not None
            for v in (self.module_energy_mJ, self.module_power_instant_mW, self.module_power_average_mW)
        )

    def mig_gi_ci(self, k: int) -> tuple[int, int]:
        return self.mig_ids[k] if k < len(self.mig_ids) else (k + 1, 0)


class _Handle:
    def __init__(self, gpu: FakeGpu, mig: str = "") -> None:
        self.gpu, self.mig = gpu, mig


class FakePynvml(types.ModuleType):
    """The module :func:`make_pynvml` returns. pynvml's constants, functions and per-code error classes
    are set on it by name, as the real module has them (read through the module's dynamic attributes);
    declared here are what the stand-in itself uses and what tests look at."""

    NVMLError: type[Exception]
    c_nvmlFieldValue_t: type[c_nvmlFieldValue_t]
    c_nvmlValue_t: type[c_nvmlValue_t]
    _state: dict[str, int]  # "refcount" (nvmlInit minus nvmlShutdown), "calls"
    _gpus: list[FakeGpu]


def _make_errors(mod: FakePynvml) -> None:
    """Build NVMLError and its per-code subclasses the way pynvml's _extractNVMLErrorsAsClasses does."""

    class NVMLError(Exception):
        _valClassMapping: ClassVar[dict[int, type[NVMLError]]] = {}
        value: int

        def __new__(typ, value: int) -> NVMLError:
            cls: type[NVMLError] = typ
            if typ == NVMLError:
                cls = NVMLError._valClassMapping.get(value, typ)
            obj = Exception.__new__(cls)
            obj.value = value
            return obj

        def __str__(self) -> str:
            for name, code in CODES.items():
                if code == self.value:
                    return name.replace("NVML_ERROR_", "").replace("_", " ").title()
            return f"NVML Error with code {self.value:d}"

        # as pynvml: compares the code of whatever it is given, and defines no __hash__ with it, so
        # instances are unhashable
        def __eq__(self, other: Any) -> bool:
            return self.value == other.value

    NVMLError.__module__ = "pynvml"
    mod.NVMLError = NVMLError
    for name, code in CODES.items():
        if not name.startswith("NVML_ERROR_"):
            continue
        cls_name = "NVMLError_" + string.capwords(name.replace("NVML_ERROR_", ""), "_").replace("_", "")

        def gen_new(val: int) -> Callable[..., NVMLError]:
            def new(typ: type[NVMLError], *args: object) -> NVMLError:
                return NVMLError.__new__(typ, val)

            return new

        cls = type(cls_name, (NVMLError,), {"__new__": gen_new(code)})
        cls.__module__ = "pynvml"
        setattr(mod, cls_name, cls)
        NVMLError._valClassMapping[code] = cls


def make_pynvml(
    gpus: list[FakeGpu],
    *,
    library_found: bool = True,
    driver_loaded: bool = True,
    no_permission: bool = False,
    hidden: Iterable[int | str] = (),
) -> FakePynvml:
    """A module object that behaves like ``pynvml`` on a node with ``gpus``.

    ``no_permission``: the energy counter answers NO_PERMISSION. ``hidden``: GPUs outside the job's
    device cgroup, by NVML index, UUID or bus id (sets ``FakeGpu.hidden``)."""
    for h in hidden:
        for k, g in enumerate(gpus):
            if h == k or (isinstance(h, str) and h.lower() in (g.uuid.lower(), g.bus_id.lower())):
                g.hidden = True
    mod = FakePynvml("pynvml")
    for table in (CODES, FIELDS, SCOPES, MIG_MODES, VALUE_TYPES, CLOCKS, TEMPERATURE_SENSORS):
        for name, value in table.items():
            setattr(mod, name, value)
    mod.c_nvmlFieldValue_t = c_nvmlFieldValue_t
    mod.c_nvmlValue_t = c_nvmlValue_t
    _make_errors(mod)
    state = {"refcount": 0, "calls": 0}
    mod._state = state
    mod._gpus = gpus

    def err(name: str) -> Exception:
        return mod.NVMLError(CODES[name])

    def need_init() -> None:
        state["calls"] += 1
        if state["refcount"] == 0:
            raise err("NVML_ERROR_UNINITIALIZED")

    def gpu_of(handle: _Handle) -> FakeGpu:
        need_init()
        if handle.gpu.lost:
            raise err("NVML_ERROR_GPU_IS_LOST")
        return handle.gpu

    def nvmlInit() -> None:
        if not library_found:
            raise err("NVML_ERROR_LIBRARY_NOT_FOUND")
        if not driver_loaded:
            raise err("NVML_ERROR_DRIVER_NOT_LOADED")
        state["refcount"] += 1

    def nvmlInitWithFlags(flags: int) -> None:
        nvmlInit()

    def nvmlShutdown() -> None:
        need_init()
        state["refcount"] -= 1

    def nvmlDeviceGetCount() -> int:
        need_init()
        return len(gpus)

    def attach(g: FakeGpu, mig: str = "") -> _Handle:
        if g.hidden:  # the device node is outside the job's cgroup
            raise err("NVML_ERROR_NO_PERMISSION")
        return _Handle(g, mig)

    def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
        need_init()
        if not 0 <= index < len(gpus):
            raise err("NVML_ERROR_INVALID_ARGUMENT")
        return attach(gpus[index])

    def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> _Handle:
        need_init()
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for g in gpus:
            if g.uuid == uuid:
                return attach(g)
            if uuid in g.mig:
                return attach(g, uuid)
        raise err("NVML_ERROR_NOT_FOUND")

    def _bus_key(bus_id: str) -> tuple[int, int, int, int] | None:
        """domain:bus:device.function or bus:device.function, any case, any domain width."""
        parts = bus_id.strip().lower().split(":")
        if len(parts) == 2:
            parts = ["0", *parts]
        if len(parts) != 3 or "." not in parts[2]:
            return None
        dev, fn = parts[2].split(".", 1)
        try:
            return int(parts[0], 16), int(parts[1], 16), int(dev, 16), int(fn, 16)
        except ValueError:
            return None

    def nvmlDeviceGetHandleByPciBusId(pciBusId: str | bytes) -> _Handle:
        need_init()
        key = _bus_key(pciBusId.decode() if isinstance(pciBusId, bytes) else pciBusId)
        if key is None:
            raise err("NVML_ERROR_INVALID_ARGUMENT")
        for g in gpus:
            if _bus_key(g.bus_id) == key:
                return attach(g)
        raise err("NVML_ERROR_NOT_FOUND")

    def nvmlDeviceGetUUID(handle: _Handle) -> str:
        g = gpu_of(handle)
        return handle.mig or g.uuid

    def nvmlDeviceGetName(handle: _Handle) -> str:
        return gpu_of(handle).name

    def nvmlDeviceGetPciInfo(handle: _Handle) -> _PciInfo:
        return _PciInfo(gpu_of(handle).bus_id)

    def nvmlDeviceGetTotalEnergyConsumption(handle: _Handle) -> int:
        g = gpu_of(handle)
        if handle.mig or not g.energy_supported:
            raise err("NVML_ERROR_NOT_SUPPORTED")
        if no_permission:
            raise err("NVML_ERROR_NO_PERMISSION")
        if g.is_module:  # GH200: the plain counter covers the whole module
            if g.module_energy_mJ is None:
                raise err("NVML_ERROR_NOT_SUPPORTED")
            return int(g.module_energy_mJ)
        return int(g.energy_mJ)

    def nvmlDeviceGetPowerUsage(handle: _Handle) -> int:
        g = gpu_of(handle)
        if handle.mig or not g.power_supported:
            raise err("NVML_ERROR_NOT_SUPPORTED")
        if g.is_module:
            if g.module_power_average_mW is None:
                raise err("NVML_ERROR_NOT_SUPPORTED")
            return int(g.module_power_average_mW)
        return int(g.power_average_mW)

    def field_value(g: FakeGpu, fid: int, scope: int) -> tuple[str, int | None, str]:
        """(nvmlReturn name, value, valueType name) of one field at one scope."""
        if not g.fields_supported or fid not in FIELDS.values():
            return "NVML_ERROR_NOT_SUPPORTED", None, ""
        energy = fid == FIELDS["NVML_FI_DEV_ENERGY"]
        if not energy and not g.power_supported:
            return "NVML_ERROR_NOT_SUPPORTED", None, ""
        if energy and not g.energy_supported:
            return "NVML_ERROR_NOT_SUPPORTED", None, ""
        if scope == SCOPES["NVML_POWER_SCOPE_MODULE"]:
            if not g.is_module:
                return "NVML_ERROR_NOT_SUPPORTED", None, ""
            v = {
                FIELDS["NVML_FI_DEV_POWER_INSTANT"]: g.module_power_instant_mW,
                FIELDS["NVML_FI_DEV_POWER_AVERAGE"]: g.module_power_average_mW,
                FIELDS["NVML_FI_DEV_ENERGY"]: g.module_energy_mJ,
            }[fid]
        elif scope == SCOPES["NVML_POWER_SCOPE_GPU"]:
            if g.is_module and not g.gpu_scope_supported:
                return "NVML_ERROR_NOT_SUPPORTED", None, ""
            v = {
                FIELDS["NVML_FI_DEV_POWER_INSTANT"]: g.power_instant_mW,
                FIELDS["NVML_FI_DEV_POWER_AVERAGE"]: g.power_average_mW,
                FIELDS["NVML_FI_DEV_ENERGY"]: g.energy_mJ,
            }[fid]
        else:  # memory scope: not modelled
            return "NVML_ERROR_NOT_SUPPORTED", None, ""
        if v is None:
            return "NVML_ERROR_NOT_SUPPORTED", None, ""
        vtype = "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG" if energy else "NVML_VALUE_TYPE_UNSIGNED_INT"
        return "NVML_SUCCESS", int(v), vtype

    def nvmlDeviceGetFieldValues(
        handle: _Handle, fieldIds: Sequence[Any]
    ) -> ctypes.Array[c_nvmlFieldValue_t]:
        """``fieldIds``: field ids, or (field id, scope id) pairs; as pynvml, whatever unpacks into two
        is a pair, anything else a field id."""
        g = gpu_of(handle)
        values = (c_nvmlFieldValue_t * len(fieldIds))()
        for i, fid in enumerate(fieldIds):
            try:
                values[i].fieldId, values[i].scopeId = fid
            except TypeError:
                values[i].fieldId = fid
            if handle.mig:
                ret, v, vtype = "NVML_ERROR_NOT_SUPPORTED", None, ""
            else:
                ret, v, vtype = field_value(g, int(values[i].fieldId), int(values[i].scopeId))
            values[i].nvmlReturn = CODES[ret]
            if v is not None:
                values[i].timestamp = g.timestamp_us
                values[i].valueType = VALUE_TYPES[vtype]
                if vtype == "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG":
                    values[i].value.ullVal = v
                else:
                    values[i].value.uiVal = v
        return values

    def mig_on(g: FakeGpu) -> bool:
        return g.mig_capable and bool(g.mig)

    def nvmlDeviceGetMigMode(device: _Handle) -> list[int]:
        g = gpu_of(device)
        if device.mig or not g.mig_capable:
            raise err("NVML_ERROR_NOT_SUPPORTED")
        mode = MIG_MODES["NVML_DEVICE_MIG_ENABLE" if mig_on(g) else "NVML_DEVICE_MIG_DISABLE"]
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(device: _Handle) -> int:
        g = gpu_of(device)
        return 7 if mig_on(g) else 0  # "Returns zero if MIG is not supported or enabled"

    def nvmlDeviceGetMigDeviceHandleByIndex(device: _Handle, index: int) -> _Handle:
        g = gpu_of(device)
        if index >= nvmlDeviceGetMaxMigDeviceCount(device):
            raise err("NVML_ERROR_INVALID_ARGUMENT")
        if index >= len(g.mig):
            raise err("NVML_ERROR_NOT_FOUND")
        return _Handle(g, g.mig[index])

    def nvmlDeviceGetGpuInstanceId(device: _Handle) -> int:
        g = gpu_of(device)
        if not device.mig:
            raise err("NVML_ERROR_NOT_SUPPORTED")
        return g.mig_gi_ci(g.mig.index(device.mig))[0]

    def nvmlDeviceGetComputeInstanceId(device: _Handle) -> int:
        g = gpu_of(device)
        if not device.mig:
            raise err("NVML_ERROR_NOT_SUPPORTED")
        return g.mig_gi_ci(g.mig.index(device.mig))[1]

    def nvmlDeviceIsMigDeviceHandle(device: _Handle) -> int:
        gpu_of(device)
        return int(bool(device.mig))

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(migDevice: _Handle) -> _Handle:
        return _Handle(gpu_of(migDevice))

    def settable(handle: _Handle) -> FakeGpu:
        g = gpu_of(handle)
        if handle.mig:
            raise err("NVML_ERROR_NOT_SUPPORTED")
        if not g.privileged:
            raise err("NVML_ERROR_NO_PERMISSION")
        return g

    def nvmlDeviceGetPowerManagementLimit(handle: _Handle) -> int:
        return int(gpu_of(handle).power_limit_mW)

    def nvmlDeviceGetPowerManagementDefaultLimit(handle: _Handle) -> int:
        return int(gpu_of(handle).default_limit_mW)

    def nvmlDeviceGetPowerManagementLimitConstraints(handle: _Handle) -> list[int]:
        g = gpu_of(handle)
        return [int(g.min_limit_mW), int(g.max_limit_mW)]

    def nvmlDeviceGetEnforcedPowerLimit(handle: _Handle) -> int:
        # the lowest of the limits in force; only the management limit is emulated
        return int(gpu_of(handle).power_limit_mW)

    def nvmlDeviceSetPowerManagementLimit(handle: _Handle, limit: int) -> None:
        g = settable(handle)
        if not g.min_limit_mW <= int(limit) <= g.max_limit_mW:
            raise err("NVML_ERROR_INVALID_ARGUMENT")
        g.power_limit_mW = int(limit)

    def nvmlDeviceSetGpuLockedClocks(handle: _Handle, minGpuClockMHz: int, maxGpuClockMHz: int) -> None:
        g = settable(handle)
        if not 0 < int(minGpuClockMHz) <= int(maxGpuClockMHz) <= g.sm_clock_max_MHz:
            raise err("NVML_ERROR_INVALID_ARGUMENT")
        g.locked_sm_MHz = (int(minGpuClockMHz), int(maxGpuClockMHz))
        g.sm_clock_MHz = int(maxGpuClockMHz)

    def nvmlDeviceResetGpuLockedClocks(handle: _Handle) -> None:
        g = settable(handle)
        g.locked_sm_MHz = None
        g.sm_clock_MHz = g.sm_clock_max_MHz

    def nvmlDeviceSetMemoryLockedClocks(handle: _Handle, minMemClockMHz: int, maxMemClockMHz: int) -> None:
        if not gpu_of(handle).memory_lock_supported:
            raise err("NVML_ERROR_NOT_SUPPORTED")
        g = settable(handle)
        if not g.mem_clock_min_MHz <= int(minMemClockMHz) <= int(maxMemClockMHz) <= g.mem_clock_MHz:
            raise err("NVML_ERROR_INVALID_ARGUMENT")
        g.locked_mem_MHz = (int(minMemClockMHz), int(maxMemClockMHz))

    def nvmlDeviceResetMemoryLockedClocks(handle: _Handle) -> None:
        settable(handle).locked_mem_MHz = None

    def nvmlDeviceGetClockInfo(handle: _Handle, type: int) -> int:
        g = gpu_of(handle)
        if type in (CLOCKS["NVML_CLOCK_SM"], CLOCKS["NVML_CLOCK_GRAPHICS"]):
            return int(g.sm_clock_MHz)
        if type == CLOCKS["NVML_CLOCK_MEM"]:
            return int(g.locked_mem_MHz[1] if g.locked_mem_MHz else g.mem_clock_MHz)
        if type == CLOCKS["NVML_CLOCK_VIDEO"]:
            return 1500
        raise err("NVML_ERROR_INVALID_ARGUMENT")

    def nvmlDeviceGetMaxClockInfo(handle: _Handle, type: int) -> int:
        g = gpu_of(handle)
        if type in (CLOCKS["NVML_CLOCK_SM"], CLOCKS["NVML_CLOCK_GRAPHICS"]):
            return int(g.sm_clock_max_MHz)
        if type == CLOCKS["NVML_CLOCK_MEM"]:
            return int(g.mem_clock_MHz)
        raise err("NVML_ERROR_INVALID_ARGUMENT")

    def nvmlDeviceGetTemperature(handle: _Handle, sensor: int) -> int:
        g = gpu_of(handle)
        if sensor != TEMPERATURE_SENSORS["NVML_TEMPERATURE_GPU"]:
            raise err("NVML_ERROR_INVALID_ARGUMENT")
        return int(g.temperature_C)

    for fn in (
        nvmlDeviceGetPowerManagementLimit,
        nvmlDeviceGetPowerManagementDefaultLimit,
        nvmlDeviceGetPowerManagementLimitConstraints,
        nvmlDeviceGetEnforcedPowerLimit,
        nvmlDeviceSetPowerManagementLimit,
        nvmlDeviceSetGpuLockedClocks,
        nvmlDeviceResetGpuLockedClocks,
        nvmlDeviceSetMemoryLockedClocks,
        nvmlDeviceResetMemoryLockedClocks,
        nvmlDeviceGetClockInfo,
        nvmlDeviceGetMaxClockInfo,
        nvmlDeviceGetTemperature,
        nvmlInit,
        nvmlInitWithFlags,
        nvmlShutdown,
        nvmlDeviceGetCount,
        nvmlDeviceGetHandleByIndex,
        nvmlDeviceGetHandleByUUID,
        nvmlDeviceGetHandleByPciBusId,
        nvmlDeviceGetUUID,
        nvmlDeviceGetName,
        nvmlDeviceGetPciInfo,
        nvmlDeviceGetTotalEnergyConsumption,
        nvmlDeviceGetPowerUsage,
        nvmlDeviceGetFieldValues,
        nvmlDeviceGetMigMode,
        nvmlDeviceGetMaxMigDeviceCount,
        nvmlDeviceGetMigDeviceHandleByIndex,
        nvmlDeviceIsMigDeviceHandle,
        nvmlDeviceGetDeviceHandleFromMigDeviceHandle,
        nvmlDeviceGetGpuInstanceId,
        nvmlDeviceGetComputeInstanceId,
    ):
        fn.__module__ = "pynvml"
        setattr(mod, fn.__name__, fn)
    return mod


def h100_node(n: int = 4) -> list[FakeGpu]:
    """``n`` H100s with realistic UUIDs and bus ids (a DGX-like node)."""
    buses = [
        "00000000:18:00.0",
        "00000000:2A:00.0",
        "00000000:3A:00.0",
        "00000000:5D:00.0",
        "00000000:9A:00.0",
        "00000000:AB:00.0",
        "00000000:BA:00.0",
        "00000000:DB:00.0",
    ]
    return [
        FakeGpu(uuid=f"GPU-{k:08x}-aaaa-bbbb-cccc-{k:012x}", bus_id=buses[k], energy_mJ=1_000_000 * (k + 1))
        for k in range(n)
    ]


def install(monkeypatch: pytest.MonkeyPatch, gpus: list[FakeGpu], **kw: Any) -> FakePynvml:
    """Put a fake in ``sys.modules['pynvml']`` for code that imports it (registry, CLI)."""
    mod = make_pynvml(gpus, **kw)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    return mod
