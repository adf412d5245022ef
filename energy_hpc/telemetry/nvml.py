"""NVIDIA GPUs through NVML (``nvidia-ml-py``, imported as ``pynvml``).

What one rank records for its GPU:

* **energy** -- ``nvmlDeviceGetTotalEnergyConsumption``: mJ since the driver was loaded (Volta and
  newer), stored in J. This is the figure windows are computed from. The driver refreshes it about
  every 100 ms (Yang et al., "Part-time power measurements: nvidia-smi's lack of attention",
  arXiv:2312.02741, measured ~100 ms update periods on A100/H100), hence ``update_period_s=0.1``.
* **power, two readings of it** from one ``nvmlDeviceGetFieldValues`` call (mW, each with the CPU
  timestamp of its sample, kept as ``sensor_time``):

  - ``NVML_FI_DEV_POWER_INSTANT`` (field 186) on the main channel ``nvml:<bus id>``;
  - ``NVML_FI_DEV_POWER_AVERAGE`` (field 185) on ``nvml:<bus id>:avg``, a *view* of the same GPU
    (``ChannelInfo.view_of``), never added to anything.

  Why two channels rather than one: the instant value is what a 10 ms sampler can integrate, the
  1 s average is what ``nvidia-smi`` and ``nvmlDeviceGetPowerUsage`` report on Ampere (except GA100)
  and newer (NVML docs of nvmlDeviceGetPowerUsage), and comparing the two is how a reader sees the
  averaging lag. When the field ids are not supported (old driver) the main channel falls back to
  ``nvmlDeviceGetPowerUsage`` and says so in its note.

Which GPU: NVML enumerates every GPU of the node in PCI order and ignores CUDA_VISIBLE_DEVICES, so
the rank's device is found by, in order: ``SensorContext.device_bus_id``; ``device_uuid``; its entry
in the visible-devices list (an index is taken as NVML's PCI-order index; ``GPU-...`` is matched as
a UUID prefix, as CUDA does; ``MIG-...`` names a MIG instance); else ``local_rank``. A MIG instance
has no counter of its own: the channel measures the whole parent GPU, ``shared_with`` lists the MIG
instances on it, and the analysis counts a (host, device) once however many ranks recorded it.

All NVML error codes are turned into our exceptions in :func:`nvml_error` and nowhere else.
"""

from __future__ import annotations

import logging
import math
import time
from types import ModuleType
from typing import Any, Callable, Sequence

from energy_hpc.errors import SensorReadError, SensorUnavailable
from energy_hpc.telemetry.base import ChannelInfo, Reading, Scope, Sensor, SensorContext
from energy_hpc.telemetry.hygiene import CounterGuard, HygieneConfig, startup_probe

log = logging.getLogger(__name__)

NAN = math.nan
UPDATE_PERIOD_S = 0.1  # energy counter and power refresh, see the module docstring
FIELD_POWER_AVERAGE = 185  # NVML_FI_DEV_POWER_AVERAGE in nvml.h / pynvml (driver 535+)
FIELD_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT

# NVML return-code name -> what it means for the user. Looked up through the library's own
# constants, so the same table serves pynvml and its stand-in.
_MEANING = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": "libnvidia-ml.so.1 was not found: no NVIDIA driver is installed on this node",
    "NVML_ERROR_DRIVER_NOT_LOADED": "the NVIDIA kernel driver is not loaded (no NVIDIA GPU on this node, "
                                    "or the driver failed to start)",
    "NVML_ERROR_NO_PERMISSION": "NVML refused the query for lack of permission; ask the system administrators "
                                "to allow power/energy queries for users",
    "NVML_ERROR_NOT_SUPPORTED": "not supported by this GPU or driver (the energy counter needs Volta or newer)",
    "NVML_ERROR_GPU_IS_LOST": "the GPU has fallen off the bus or is otherwise inaccessible; report the node",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "the NVML library and the kernel driver differ in version "
                                          "(driver updated without a reboot?)",
    "NVML_ERROR_NOT_FOUND": "no such device",
    "NVML_ERROR_UNINITIALIZED": "NVML is not initialised",
    "NVML_ERROR_FUNCTION_NOT_FOUND": "the installed driver is too old for this NVML call",
    "NVML_ERROR_TIMEOUT": "the driver timed out",
    "NVML_ERROR_RESET_REQUIRED": "the GPU needs a reset",
    "NVML_ERROR_INSUFFICIENT_POWER": "a power cable of the GPU is not connected properly",
}
# Codes after which the whole sensor is unusable (as opposed to one value missing this time).
_FATAL = ("NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED", "NVML_ERROR_GPU_IS_LOST",
          "NVML_ERROR_LIB_RM_VERSION_MISMATCH", "NVML_ERROR_UNINITIALIZED", "NVML_ERROR_RESET_REQUIRED")


def _code_name(nvml: Any, code: int) -> str:
    for name in _MEANING:
        if getattr(nvml, name, None) == code:
            return name
    return f"NVML error {code}"


def nvml_error(nvml: Any, exc: BaseException, doing: str, *, reading: bool = False) -> Exception:
    """The one place where an NVMLError becomes ours: SensorUnavailable while opening,
    SensorReadError while reading. ``doing`` says what we were trying to do."""
    code = getattr(exc, "value", None)
    name = _code_name(nvml, code) if code is not None else type(exc).__name__
    meaning = _MEANING.get(name, str(exc) or name)
    text = f"nvml: {doing}: {meaning} [{name}]"
    return SensorReadError(text) if reading else SensorUnavailable(text)


def _is(nvml: Any, exc: BaseException, name: str) -> bool:
    return getattr(exc, "value", object()) == getattr(nvml, name, None)


def import_pynvml() -> ModuleType:
    try:
        import pynvml  # noqa: PLC0415 - kept out of module import on purpose
    except ImportError as exc:
        raise SensorUnavailable(f"nvml: the Python package nvidia-ml-py is not installed ({exc}); "
                                "install it with `pip install energy-hpc[nvidia]`") from None
    return pynvml


def normalize_bus_id(bus_id: str) -> str:
    """``00000000:3B:00.0`` / ``0000:3b:00.0`` / ``3b:00.0`` -> ``0000:3b:00.0`` (lower case,
    4-digit domain): the form used as ``ChannelInfo.device`` for every backend."""
    s = bus_id.strip().lower()
    parts = s.split(":")
    if len(parts) == 2:
        parts = ["0", *parts]
    if len(parts) != 3 or "." not in parts[2]:
        raise ValueError(f"not a PCI bus id: {bus_id!r}")
    dev, fn = parts[2].split(".", 1)
    return f"{int(parts[0], 16):04x}:{int(parts[1], 16):02x}:{int(dev, 16):02x}.{int(fn, 16):x}"


class _Gpu:
    """What we know about one NVML device while choosing."""

    def __init__(self, index: int, handle: Any, uuid: str, bus_id: str, name: str) -> None:
        self.index, self.handle, self.uuid, self.bus_id, self.name = index, handle, uuid, bus_id, name


def _enumerate(nvml: Any) -> list[_Gpu]:
    gpus = []
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append(_Gpu(i, h, str(nvml.nvmlDeviceGetUUID(h)),
                             normalize_bus_id(str(nvml.nvmlDeviceGetPciInfo(h).busId)),
                             str(nvml.nvmlDeviceGetName(h))))
    except nvml.NVMLError as exc:
        raise nvml_error(nvml, exc, "listing GPUs") from None
    return gpus


def _mig_uuids(nvml: Any, gpu: _Gpu) -> list[str]:
    """UUIDs of the MIG instances on a GPU (empty when MIG is off or unsupported)."""
    out = []
    try:
        n = nvml.nvmlDeviceGetMaxMigDeviceCount(gpu.handle)
    except nvml.NVMLError:
        return out
    for k in range(n):
        try:
            out.append(str(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, k))))
        except nvml.NVMLError:  # NOT_FOUND: slot k is empty
            continue
    return out


def select_gpu(nvml: Any, ctx: SensorContext) -> tuple[_Gpu, str, str]:
    """The rank's GPU, the MIG instance UUID when it is one ("" otherwise), and how it was found."""
    gpus = _enumerate(nvml)
    if not gpus:
        raise SensorUnavailable("nvml: NVML works but reports no GPU on this node")
    if ctx.device_bus_id:
        want = normalize_bus_id(ctx.device_bus_id)
        for g in gpus:
            if g.bus_id == want:
                return g, "", f"bus id {want}"
        raise SensorUnavailable(f"nvml: no GPU with bus id {want}; NVML sees {[g.bus_id for g in gpus]}")
    if ctx.device_uuid:
        return _by_uuid(nvml, gpus, ctx.device_uuid, "device_uuid")
    if ctx.visible_devices:
        entries = ctx.visible_devices
        entry = entries[0] if len(entries) == 1 else entries[ctx.local_rank % len(entries)]
        var = ctx.visible_env or "visible devices"
        if entry.isdigit():
            k = int(entry)
            if k >= len(gpus):
                raise SensorUnavailable(f"nvml: {var} entry {entry} but the node has {len(gpus)} GPUs")
            if len({g.name for g in gpus}) > 1:
                log.warning("nvml: mixed GPU models on this node: %s index %s is taken in PCI bus order, "
                            "which CUDA follows only with CUDA_DEVICE_ORDER=PCI_BUS_ID; bind by UUID to "
                            "be sure", var, entry)
            return gpus[k], "", f"{var} index {entry} (PCI order)"
        return _by_uuid(nvml, gpus, entry, var)
    g = gpus[ctx.local_rank % len(gpus)]
    return g, "", f"local rank {ctx.local_rank}"


def _by_uuid(nvml: Any, gpus: list[_Gpu], uuid: str, source: str) -> tuple[_Gpu, str, str]:
    u = uuid.strip()
    if u.startswith("MIG-GPU-"):  # pre-R470 MIG form: MIG-GPU-<gpu uuid>/<gi>/<ci>
        u = u[len("MIG-"):].split("/", 1)[0]
    if u.startswith("MIG-"):
        for g in gpus:
            if u in _mig_uuids(nvml, g):
                return g, u, f"{source} MIG instance {u}"
        raise SensorUnavailable(f"nvml: no MIG instance {u} on this node ({source})")
    if not u.startswith("GPU-"):
        u = "GPU-" + u  # torch reports UUIDs without the prefix
    hits = [g for g in gpus if g.uuid.startswith(u)]  # CUDA accepts unique prefixes
    if len(hits) != 1:
        raise SensorUnavailable(f"nvml: {source} {uuid!r} matches {len(hits)} GPUs on this node; "
                                f"NVML sees {[g.uuid for g in gpus]}")
    return hits[0], "", f"{source} {hits[0].uuid}"


def _field(fv: Any) -> float:
    """The numeric value of an nvmlFieldValue_t, whatever its valueType."""
    member = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")[int(fv.valueType)]
    return float(getattr(fv.value, member))


class NvmlSensor(Sensor):
    backend = "nvml"

    def __init__(self, nvml: Any, gpu: _Gpu, mig_uuid: str = "", how: str = "",
                 clock: Callable[[], float] = time.monotonic, hygiene: HygieneConfig | None = None) -> None:
        self.nvml, self.gpu, self.clock = nvml, gpu, clock
        h = gpu.handle
        self.has_energy = self._supported(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h),
                                          "reading the energy counter")
        ids = [getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None), getattr(nvml, "NVML_FI_DEV_POWER_AVERAGE", None)]
        self.field_ids: list[int] = []
        self.field_ok = [False, False]
        if None not in ids:
            try:
                vals = nvml.nvmlDeviceGetFieldValues(h, ids)
                self.field_ok = [int(v.nvmlReturn) == nvml.NVML_SUCCESS for v in vals]
                self.field_ids = ids
            except nvml.NVMLError as exc:
                if _is(nvml, exc, "NVML_ERROR_NO_PERMISSION") or _code_name(nvml, exc.value) in _FATAL:
                    raise nvml_error(nvml, exc, "reading power field values") from None
        self.use_usage = not self.field_ok[0]
        if self.use_usage and not self._supported(lambda: nvml.nvmlDeviceGetPowerUsage(h), "reading power"):
            if not self.has_energy:
                raise SensorUnavailable(f"nvml: {gpu.name} ({gpu.bus_id}) reports neither power nor energy")
        main = f"nvml:{gpu.bus_id}"
        shared: tuple[str, ...] = ()
        note = [f"mapped by {how}"] if how else []
        if mig_uuid:
            shared = tuple(_mig_uuids(nvml, gpu)) or (mig_uuid,)
            note.append(f"rank uses MIG instance {mig_uuid}; NVML counts the whole GPU, all MIG instances")
        if self.use_usage:
            note.append("power from nvmlDeviceGetPowerUsage (1 s average on Ampere except GA100 and newer, "
                        "instantaneous on older GPUs): NVML_FI_DEV_POWER_INSTANT is not supported here")
        if not self.has_energy:
            note.append("no energy counter on this GPU: windows use the power integral")
        infos = [ChannelInfo(
            name=main, scope=Scope.GPU, device=gpu.bus_id, backend=self.backend, has_power=True,
            has_energy=self.has_energy, update_period_s=UPDATE_PERIOD_S, energy_resolution_J=1e-3,
            power_kind="average" if self.use_usage else "instant", shared_with=shared, label=gpu.name,
            note="; ".join(note))]
        self.with_avg = self.field_ok[0] and self.field_ok[1]
        if self.with_avg:
            infos.append(ChannelInfo(
                name=f"{main}:avg", scope=Scope.GPU, device=gpu.bus_id, backend=self.backend, has_power=True,
                has_energy=False, update_period_s=UPDATE_PERIOD_S, power_kind="average", shared_with=shared,
                label=gpu.name, view_of=main,
                note="NVML_FI_DEV_POWER_AVERAGE (1 s average), recorded beside the instant power to show the "
                     "averaging lag; a view of the same GPU, never added to totals"))
        self._infos = infos
        self.guard = CounterGuard(infos, hygiene)

    def _supported(self, call: Callable[[], Any], doing: str) -> bool:
        try:
            call()
            return True
        except self.nvml.NVMLError as exc:
            if _is(self.nvml, exc, "NVML_ERROR_NOT_SUPPORTED") or _is(self.nvml, exc, "NVML_ERROR_FUNCTION_NOT_FOUND"):
                return False
            raise nvml_error(self.nvml, exc, f"{doing} on {self.gpu.bus_id}") from None

    def channels(self) -> Sequence[ChannelInfo]:
        return self.guard.infos(self._infos)

    def read(self) -> Reading:
        nvml, h = self.nvml, self.gpu.handle
        n = len(self._infos)
        power, stamp, errors = [NAN] * n, [NAN] * n, [False] * n
        t = self.clock()
        try:
            if self.use_usage:
                power[0] = nvml.nvmlDeviceGetPowerUsage(h) / 1000.0
            else:
                vals = nvml.nvmlDeviceGetFieldValues(h, self.field_ids)
                for j in range(n):  # channel 0 <- instant, channel 1 <- average
                    fv = vals[j]
                    if int(fv.nvmlReturn) == nvml.NVML_SUCCESS:
                        power[j] = _field(fv) / 1000.0  # mW -> W
                        stamp[j] = fv.timestamp * 1e-6  # us since the epoch -> s
                    else:
                        errors[j] = True
            energy = [NAN] * n
            if self.has_energy:
                energy[0] = nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0  # mJ -> J
        except nvml.NVMLError as exc:
            raise nvml_error(nvml, exc, f"reading {self.gpu.bus_id}", reading=True) from None
        energy = self.guard.apply(t, power, energy)
        return Reading(power=power, energy=energy, sensor_time=stamp, errors=errors)

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError as exc:  # shutting down twice must not lose the run
            log.debug("nvml: shutdown: %s", exc)


def open_sensor(ctx: SensorContext, library: Any = None, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> Sensor:
    """Open NVML for the rank's GPU. ``library`` replaces ``pynvml`` (tests pass the stand-in).

    Options (``[measure.sensor_options.nvml]``): ``probe_reads`` (start-up probe, default 3, 0 to
    skip) and ``hygiene`` (:class:`~energy_hpc.telemetry.hygiene.HygieneConfig` thresholds)."""
    nvml = library if library is not None else import_pynvml()
    opts = dict(ctx.options.get("nvml", {}))
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise nvml_error(nvml, exc, "initialising NVML") from None
    try:
        gpu, mig, how = select_gpu(nvml, ctx)
        sensor = NvmlSensor(nvml, gpu, mig, how, clock=clock,
                            hygiene=HygieneConfig.from_options(opts.get("hygiene")))
        try:
            startup_probe(sensor.read, int(opts.get("probe_reads", 3)), UPDATE_PERIOD_S, sleep)
        except SensorReadError as exc:
            raise SensorUnavailable(f"{exc} (during the start-up probe)") from None
    except BaseException:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass
        raise
    return sensor
