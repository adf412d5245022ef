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
the rank's device is found by, in order: ``SensorContext.device_bus_id`` (looked up directly with
``nvmlDeviceGetHandleByPciBusId``); ``device_uuid`` (``nvmlDeviceGetHandleByUUID``); its entry in the
visible-devices list (an index is taken in PCI order among the GPUs this job may open, which is how
CUDA numbers them; ``GPU-...`` is matched as a UUID prefix, as CUDA does; ``MIG-...`` names a MIG
instance, as does the pre-R470 ``MIG-GPU-<uuid>/<gi>/<ci>``); else ``local_rank``. On nodes whose job
cgroup hides the other GPUs (Slurm ``ConstrainDevices=yes``) ``nvmlDeviceGetCount`` still counts them
all while their handles answer NO_PERMISSION: direct lookups never touch them, and listing skips them.

A MIG instance has no counter of its own: the channel measures the whole parent GPU and
``shared_with`` lists the MIG instances on it -- asked of the GPU itself, so a rank known only by its
bus id (torch gives the parent's) is still marked shared -- and the analysis counts a (host, device)
once however many ranks recorded it.

GH200 (Grace Hopper): ``nvmlDeviceGetTotalEnergyConsumption`` and ``nvmlDeviceGetPowerUsage`` cover the
module (Grace CPU + memory + GPU). A part whose field values answer at ``NVML_POWER_SCOPE_MODULE``
is read at ``NVML_POWER_SCOPE_GPU`` (power fields, energy from ``NVML_FI_DEV_ENERGY``); when only the
module scope answers the channel is ``nvml:<bus id>:module``, scope ``module``, labelled as the module,
and says it must stay out of GPU-only totals.

A GPU with an energy counter and no power reading is measured by the counter (``has_power`` False).

NVMLError instances are unhashable in pynvml (``__eq__`` without ``__hash__``): never put one in a set
or a dict key here.

All NVML error codes are turned into our exceptions in :func:`nvml_error`, except NO_PERMISSION while
looking a device up or listing, which says which device the job may not open and why.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Protocol

from energy_hpc.errors import SensorReadError, SensorUnavailable
from energy_hpc.telemetry.base import (
    ChannelInfo,
    Reading,
    Scope,
    Sensor,
    SensorContext,
    normalize_bus_id,
)
from energy_hpc.telemetry.hygiene import CounterGuard, HygieneConfig, startup_probe

log = logging.getLogger(__name__)

NAN = math.nan
UPDATE_PERIOD_S = 0.1  # energy counter and power refresh, see the module docstring
# what one power reading covers: NVML_FI_DEV_POWER_INSTANT measures about 25 ms of each 100 ms period
# (Yang et al., SC24); NVML_FI_DEV_POWER_AVERAGE and nvmlDeviceGetPowerUsage (Ampere+) a 1 s mean
INSTANT_WINDOW_S = 0.025
AVERAGE_WINDOW_S = 1.0
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
_FATAL = (
    "NVML_ERROR_LIBRARY_NOT_FOUND",
    "NVML_ERROR_DRIVER_NOT_LOADED",
    "NVML_ERROR_GPU_IS_LOST",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
    "NVML_ERROR_UNINITIALIZED",
    "NVML_ERROR_RESET_REQUIRED",
)


def _code_name(nvml: ModuleType, code: int) -> str:
    for name in _MEANING:
        if getattr(nvml, name, None) == code:
            return name
    return f"NVML error {code}"


def nvml_error(nvml: ModuleType, exc: BaseException, doing: str, *, reading: bool = False) -> Exception:
    """The one place where an NVMLError becomes ours: SensorUnavailable while opening,
    SensorReadError while reading. ``doing`` says what we were trying to do."""
    code = getattr(exc, "value", None)
    name = _code_name(nvml, code) if code is not None else type(exc).__name__
    meaning = _MEANING.get(name, str(exc) or name)
    text = f"nvml: {doing}: {meaning} [{name}]"
    return SensorReadError(text) if reading else SensorUnavailable(text)


def _is(nvml: ModuleType, exc: BaseException, name: str) -> bool:
    return getattr(exc, "value", object()) == getattr(nvml, name, None)


def import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as exc:
        raise SensorUnavailable(
            f"nvml: the Python package nvidia-ml-py is not installed ({exc}); "
            "install it with `pip install energy-hpc[nvidia]`"
        ) from None
    return pynvml


class _Gpu:
    """What we know about one NVML device while choosing."""

    def __init__(self, index: int, handle: object, uuid: str, bus_id: str, name: str) -> None:
        self.index, self.handle, self.uuid, self.bus_id, self.name = index, handle, uuid, bus_id, name


def _describe(nvml: ModuleType, index: int, handle: object) -> _Gpu:
    return _Gpu(
        index,
        handle,
        str(nvml.nvmlDeviceGetUUID(handle)),
        normalize_bus_id(str(nvml.nvmlDeviceGetPciInfo(handle).busId)),
        str(nvml.nvmlDeviceGetName(handle)),
    )


class _Listing:
    """The GPUs this job may use, in NVML (PCI) order, and how many others NVML counts but refuses
    (NO_PERMISSION: outside the job's device cgroup, Slurm ``ConstrainDevices=yes``)."""

    def __init__(self, gpus: list[_Gpu], hidden: int) -> None:
        self.gpus, self.hidden = gpus, hidden

    def where(self) -> str:
        seen = f"NVML sees {[g.bus_id for g in self.gpus]}"
        return seen + (f" ({self.hidden} more hidden by the job's device cgroup)" if self.hidden else "")


def _enumerate(nvml: ModuleType) -> _Listing:
    gpus, hidden = [], 0
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            try:
                gpus.append(_describe(nvml, i, nvml.nvmlDeviceGetHandleByIndex(i)))
            except nvml.NVMLError as exc:
                if not _is(nvml, exc, "NVML_ERROR_NO_PERMISSION"):
                    raise
                hidden += 1  # counted by nvmlDeviceGetCount, but not this job's to open
    except nvml.NVMLError as exc:
        raise nvml_error(nvml, exc, "listing GPUs") from None
    if not gpus:
        if hidden:
            raise SensorUnavailable(
                f"nvml: NVML counts {hidden} GPU(s) on this node but refuses every one "
                "[NVML_ERROR_NO_PERMISSION]: none is in this job's device cgroup (did the job "
                "ask for a GPU?), or power queries need a permission users lack"
            )
        raise SensorUnavailable("nvml: NVML works but reports no GPU on this node")
    return _Listing(gpus, hidden)


def _lookup(nvml: ModuleType, names: Sequence[str], key: str, what: str) -> object | None:
    """A device handle straight from NVML by bus id or UUID (no listing, so GPUs hidden from the job
    do not matter). None when NVML has no such call or no such device."""
    for name in names:
        fn = getattr(nvml, name, None)
        if fn is None:
            continue
        try:
            return fn(key)
        except nvml.NVMLError as exc:
            if _is(nvml, exc, "NVML_ERROR_FUNCTION_NOT_FOUND"):
                continue  # driver older than this entry point: try the next one
            if _is(nvml, exc, "NVML_ERROR_NOT_FOUND") or _is(nvml, exc, "NVML_ERROR_INVALID_ARGUMENT"):
                return None
            if _is(nvml, exc, "NVML_ERROR_NO_PERMISSION"):
                raise SensorUnavailable(
                    f"nvml: the GPU with {what} {key} refuses this job "
                    "[NVML_ERROR_NO_PERMISSION]: it is not in the job's device cgroup, or "
                    "NVML queries need a permission users lack"
                ) from None
            raise nvml_error(nvml, exc, f"looking up the GPU with {what} {key}") from None
    return None


_BY_BUS = ("nvmlDeviceGetHandleByPciBusId_v2", "nvmlDeviceGetHandleByPciBusId")
_BY_UUID = ("nvmlDeviceGetHandleByUUID",)


def _mig_handles(nvml: ModuleType, gpu: _Gpu) -> list[object]:
    """Handles of the MIG instances on a GPU (empty when MIG is off or unsupported: the library then
    reports a maximum of 0)."""
    out: list[object] = []
    try:
        n = int(nvml.nvmlDeviceGetMaxMigDeviceCount(gpu.handle))
    except nvml.NVMLError:  # drivers before MIG: no such call
        return out
    for k in range(n):
        try:
            out.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, k))
        except nvml.NVMLError:  # NOT_FOUND: slot k is empty
            continue
    return out


def _mig_uuids(nvml: ModuleType, gpu: _Gpu) -> list[str]:
    """UUIDs of the MIG instances on a GPU (empty when MIG is off or unsupported)."""
    out = []
    for h in _mig_handles(nvml, gpu):
        try:
            out.append(str(nvml.nvmlDeviceGetUUID(h)))
        except nvml.NVMLError:
            continue
    return out


def _legacy_mig(nvml: ModuleType, gpu: _Gpu, legacy: str) -> str:
    """The MIG instance UUID named by the pre-R470 form ``MIG-GPU-<uuid>/<gi>/<ci>``, found by its GPU
    and compute instance ids; the legacy string itself when the driver cannot tell."""
    try:
        gi, ci = (int(x) for x in legacy.split("/")[1:3])
    except ValueError:
        return legacy
    for h in _mig_handles(nvml, gpu):
        try:
            if (int(nvml.nvmlDeviceGetGpuInstanceId(h)), int(nvml.nvmlDeviceGetComputeInstanceId(h))) == (
                gi,
                ci,
            ):
                return str(nvml.nvmlDeviceGetUUID(h))
        except (nvml.NVMLError, AttributeError):
            return legacy
    return legacy


def _rank_entry(ctx: SensorContext) -> str:
    """The rank's entry of the visible-devices list ("" when there is none)."""
    entries = ctx.visible_devices
    if not entries:
        return ""
    return entries[0] if len(entries) == 1 else entries[ctx.local_rank % len(entries)]


def _direct_or_listed(
    nvml: ModuleType, how: Sequence[str], key: str, what: str, by_listing: Callable[[_Listing], _Gpu]
) -> _Gpu:
    """The GPU looked up directly by ``key`` (a bus id or UUID: works when the job's cgroup hides the
    node's other GPUs), else found by ``by_listing`` among the GPUs NVML lists."""
    h = _lookup(nvml, how, key, what)
    if h is None:
        return by_listing(_enumerate(nvml))
    try:
        return _describe(nvml, -1, h)
    except nvml.NVMLError as exc:
        raise nvml_error(nvml, exc, f"reading the GPU with {what} {key}") from None


def select_gpu(nvml: ModuleType, ctx: SensorContext) -> tuple[_Gpu, str, str]:
    """The rank's GPU, the MIG instance UUID when the rank is known to use one ("" otherwise), and how
    it was found. Whether the GPU is shared by MIG instances is asked of the GPU itself (see
    :class:`NvmlSensor`), so a GPU found by its bus id alone is still marked shared."""
    if ctx.device_bus_id:
        want = normalize_bus_id(ctx.device_bus_id)

        def by_listing(listing: _Listing) -> _Gpu:
            hits = [g for g in listing.gpus if g.bus_id == want]
            if not hits:
                raise SensorUnavailable(f"nvml: no GPU with bus id {want}; {listing.where()}")
            return hits[0]

        gpu = _direct_or_listed(nvml, _BY_BUS, want, "bus id", by_listing)
        # torch gives the parent's bus id for a MIG instance: the instance itself, when the context
        # names one, is in device_uuid or the visible-devices entry
        mig = ""
        for u in (ctx.device_uuid.strip(), _rank_entry(ctx).strip()):
            if u.startswith("MIG-GPU-"):
                mig = _legacy_mig(nvml, gpu, u)
            elif u.startswith("MIG-"):
                mig = u if u in _mig_uuids(nvml, gpu) else ""
            if mig:
                break
        return gpu, mig, f"bus id {want}"
    if ctx.device_uuid:
        return _by_uuid(nvml, ctx.device_uuid, "device_uuid")
    if ctx.visible_devices:
        entry = _rank_entry(ctx)
        var = ctx.visible_env or "visible devices"
        if entry.isdigit():
            listing = _enumerate(nvml)
            gpus, k = listing.gpus, int(entry)
            # CUDA numbers the GPUs it can open: with a device cgroup (Slurm ConstrainDevices) the
            # job's GPUs are 0..n-1 whatever NVML's index of them; without one the two agree
            if k >= len(gpus):
                raise SensorUnavailable(
                    f"nvml: {var} entry {entry} but the node has {len(gpus)} GPUs "
                    f"this job may use; {listing.where()}"
                )
            if len({g.name for g in gpus}) > 1:
                log.warning(
                    "nvml: mixed GPU models on this node: %s index %s is taken in PCI bus order, "
                    "which CUDA follows only with CUDA_DEVICE_ORDER=PCI_BUS_ID; bind by UUID to "
                    "be sure",
                    var,
                    entry,
                )
            among = f" among the {len(gpus)} GPUs this job may use" if listing.hidden else ""
            return gpus[k], "", f"{var} index {entry} (PCI order{among})"
        return _by_uuid(nvml, entry, var)
    listing = _enumerate(nvml)
    g = listing.gpus[ctx.local_rank % len(listing.gpus)]
    return g, "", f"local rank {ctx.local_rank}"


def _by_uuid(nvml: ModuleType, uuid: str, source: str) -> tuple[_Gpu, str, str]:
    u = uuid.strip()
    legacy = ""
    if u.startswith("MIG-GPU-"):  # pre-R470 MIG form: MIG-GPU-<gpu uuid>/<gi>/<ci>
        legacy, u = u, u[len("MIG-") :].split("/", 1)[0]
    if u.startswith("MIG-"):
        h = _lookup(nvml, _BY_UUID, u, "MIG instance")
        if h is not None:
            try:
                parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(h)
                return _describe(nvml, -1, parent), u, f"{source} MIG instance {u}"
            except nvml.NVMLError as exc:
                log.debug("nvml: parent of %s: %s; searching the GPUs", u, exc)
        listing = _enumerate(nvml)
        for g in listing.gpus:
            if u in _mig_uuids(nvml, g):
                return g, u, f"{source} MIG instance {u}"
        raise SensorUnavailable(f"nvml: no MIG instance {u} on this node ({source}); {listing.where()}")
    if not u.startswith("GPU-"):
        u = "GPU-" + u  # torch reports UUIDs without the prefix

    def by_listing(listing: _Listing) -> _Gpu:
        hits = [g for g in listing.gpus if g.uuid.startswith(u)]  # CUDA accepts unique prefixes
        if len(hits) != 1:
            raise SensorUnavailable(
                f"nvml: {source} {uuid!r} matches {len(hits)} GPUs on this node; "
                f"NVML sees {[g.uuid for g in listing.gpus]}"
                + (f" and {listing.hidden} hidden by the job's device cgroup" if listing.hidden else "")
            )
        return hits[0]

    gpu = _direct_or_listed(nvml, _BY_UUID, u, "UUID", by_listing)
    if legacy:
        mig = _legacy_mig(nvml, gpu, legacy)
        return gpu, mig, f"{source} MIG instance {legacy}"
    return gpu, "", f"{source} {gpu.uuid}"


class _FieldValue(Protocol):
    """What is read of an nvmlFieldValue_t (pynvml's ctypes structure)."""

    valueType: int
    value: object  # a ctypes union: one member per value type


# A field asked of nvmlDeviceGetFieldValues: a field id, or (field id, scope id)
FieldSpec = int | tuple[int, int]


def _field(fv: _FieldValue) -> float:
    """The numeric value of an nvmlFieldValue_t, whatever its valueType."""
    member = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")[int(fv.valueType)]
    return float(getattr(fv.value, member))


MODULE_LABEL = "module (Grace CPU + memory + GPU)"


class NvmlSensor(Sensor):
    backend = "nvml"

    def __init__(
        self,
        nvml: ModuleType,
        gpu: _Gpu,
        mig_uuid: str = "",
        how: str = "",
        clock: Callable[[], float] = time.monotonic,
        hygiene: HygieneConfig | None = None,
    ) -> None:
        self.nvml, self.gpu, self.clock = nvml, gpu, clock
        h = gpu.handle
        note = [f"mapped by {how}"] if how else []
        # field ids and scope ids: None where this pynvml predates them
        inst: int | None = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None)
        avg: int | None = getattr(nvml, "NVML_FI_DEV_POWER_AVERAGE", None)
        fi_energy: int | None = getattr(nvml, "NVML_FI_DEV_ENERGY", None)
        gpu_scope: int | None = getattr(nvml, "NVML_POWER_SCOPE_GPU", None)
        mod_scope: int | None = getattr(nvml, "NVML_POWER_SCOPE_MODULE", None)

        # GH200 (Grace Hopper): the plain counter and power cover the module (Grace CPU + memory +
        # GPU). A part is a module when the module scope answers with something other than the GPU
        # scope (a driver that ignores scopeId answers both alike).
        self.module = False
        gpu_scope_power = False
        if inst is not None and gpu_scope is not None and mod_scope is not None:
            got = self._fields([(inst, mod_scope), (inst, gpu_scope)])
            if got is not None and got[0][0]:
                gpu_scope_power = got[1][0]
                self.module = not gpu_scope_power or got[0][1] != got[1][1]
        self.scope_out = self.module and not gpu_scope_power  # only the module answers

        # power: the field ids (instant, average), else nvmlDeviceGetPowerUsage, else none
        if self.module:
            assert inst is not None and gpu_scope is not None and mod_scope is not None  # as above
            s = mod_scope if self.scope_out else gpu_scope
            specs: list[FieldSpec] = [(inst, s), (avg, s)] if avg is not None else [(inst, s)]
        else:
            specs = [i for i in (inst, avg) if i is not None] if inst is not None else []
        got = self._fields(specs) if specs else None
        ok = [bool(g[0]) for g in got] if got is not None else []
        self.power_specs: list[FieldSpec] = specs if ok and ok[0] else []
        self.with_avg = len(ok) > 1 and ok[0] and ok[1]
        self.use_usage = False
        if not self.power_specs and not self.module:  # GetPowerUsage is the module's on GH200
            self.use_usage = self._supported(lambda: nvml.nvmlDeviceGetPowerUsage(h), "reading power")
        self.has_power = bool(self.power_specs) or self.use_usage

        # energy: the counter (the module's on GH200), or on GH200 the GPU-scope energy field
        self.energy_spec: FieldSpec | None = None
        if self.module and not self.scope_out:
            if fi_energy is not None and gpu_scope is not None:  # gpu_scope is known on a module
                got = self._fields([(fi_energy, gpu_scope)])
                if got is not None and got[0][0]:
                    self.energy_spec = (fi_energy, gpu_scope)
            self.has_energy = self.energy_spec is not None
        else:
            self.has_energy = self._supported(
                lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h), "reading the energy counter"
            )
        if not self.has_power and not self.has_energy:
            raise SensorUnavailable(f"nvml: {gpu.name} ({gpu.bus_id}) reports neither power nor energy")
        self.read_specs = self.power_specs[: 2 if self.with_avg else 1] + (
            [self.energy_spec] if self.energy_spec is not None else []
        )

        main = f"nvml:{gpu.bus_id}" + (":module" if self.scope_out else "")
        shared: tuple[str, ...] = tuple(_mig_uuids(nvml, gpu))
        if mig_uuid:
            shared = shared or (mig_uuid,)
            note.append(f"rank uses MIG instance {mig_uuid}; NVML counts the whole GPU, all MIG instances")
        elif shared:
            note.append(
                f"MIG is on for this GPU ({len(shared)} instance(s)) and the rank's instance is not "
                "known; NVML counts the whole GPU, all MIG instances, recorded once per GPU"
            )
        scope, label = Scope.GPU, gpu.name
        if self.scope_out:
            scope, label = Scope.MODULE, f"{gpu.name} {MODULE_LABEL}"
            note.append(
                "GH200 module scope: NVML answers only for the whole module (Grace CPU + memory + GPU), "
                "not for the GPU alone (NVML_POWER_SCOPE_GPU not supported); recorded as scope 'module', "
                "not GPU energy: keep it out of GPU-only totals"
            )
        elif self.module:
            note.append(
                "GH200: power" + (" and energy" if self.has_energy else "") + " read at GPU scope "
                "(NVML_POWER_SCOPE_GPU); nvmlDeviceGetTotalEnergyConsumption and the module scope "
                "cover the whole module (Grace CPU + memory + GPU) and are not recorded"
            )
            if not self.has_energy:
                note.append(
                    "no GPU-scope energy counter (NVML_FI_DEV_ENERGY at GPU scope): windows use the "
                    "power integral"
                )
        if self.use_usage:
            note.append(
                "power from nvmlDeviceGetPowerUsage (1 s average on Ampere except GA100 and newer, "
                "instantaneous on older GPUs): NVML_FI_DEV_POWER_INSTANT is not supported here"
            )
        if not self.has_power:
            note.append(
                "no power reading on this GPU (neither NVML_FI_DEV_POWER_INSTANT nor "
                "nvmlDeviceGetPowerUsage): energy from the counter only"
            )
        if not self.has_energy and not self.module:
            note.append("no energy counter on this GPU: windows use the power integral")
        infos = [
            ChannelInfo(
                name=main,
                scope=scope,
                device=gpu.bus_id,
                backend=self.backend,
                has_power=self.has_power,
                has_energy=self.has_energy,
                update_period_s=UPDATE_PERIOD_S,
                energy_resolution_J=1e-3,
                power_kind="average" if self.use_usage else "instant",
                shared_with=shared,
                label=label,
                power_window_s=AVERAGE_WINDOW_S if self.use_usage else INSTANT_WINDOW_S,
                note="; ".join(note),
            )
        ]
        if self.with_avg:
            infos.append(
                ChannelInfo(
                    name=f"{main}:avg",
                    scope=scope,
                    device=gpu.bus_id,
                    backend=self.backend,
                    has_power=True,
                    has_energy=False,
                    update_period_s=UPDATE_PERIOD_S,
                    power_kind="average",
                    shared_with=shared,
                    power_window_s=AVERAGE_WINDOW_S,
                    label=label,
                    view_of=main,
                    note="NVML_FI_DEV_POWER_AVERAGE (1 s average), recorded beside the instant power to show the "
                    "averaging lag; a view of the same "
                    + ("module" if self.scope_out else "GPU")
                    + ", never added to totals",
                )
            )
        self._infos = infos
        self.guard = CounterGuard(infos, hygiene)

    def _fields(self, specs: list[FieldSpec]) -> list[tuple[bool, float]] | None:
        """(answered, value) per field spec, or None when the call itself is refused (old driver, or
        a pynvml that does not take (fieldId, scopeId) pairs). Fatal codes and NO_PERMISSION raise."""
        nvml = self.nvml
        try:
            vals = nvml.nvmlDeviceGetFieldValues(self.gpu.handle, specs)
        except TypeError:  # pynvml before scopeId support cannot set a (fieldId, scopeId) pair
            return None
        except nvml.NVMLError as exc:
            if _is(nvml, exc, "NVML_ERROR_NO_PERMISSION") or _code_name(nvml, exc.value) in _FATAL:
                raise nvml_error(nvml, exc, "reading power field values") from None
            return None
        return [
            (
                int(v.nvmlReturn) == nvml.NVML_SUCCESS,
                _field(v) if int(v.nvmlReturn) == nvml.NVML_SUCCESS else NAN,
            )
            for v in vals
        ]

    def _supported(self, call: Callable[[], object], doing: str) -> bool:
        try:
            call()
            return True
        except self.nvml.NVMLError as exc:
            if _is(self.nvml, exc, "NVML_ERROR_NOT_SUPPORTED") or _is(
                self.nvml, exc, "NVML_ERROR_FUNCTION_NOT_FOUND"
            ):
                return False
            raise nvml_error(self.nvml, exc, f"{doing} on {self.gpu.bus_id}") from None

    def channels(self) -> Sequence[ChannelInfo]:
        return self.guard.infos(self._infos)

    def read(self) -> Reading:
        nvml, h = self.nvml, self.gpu.handle
        n = len(self._infos)
        power, energy, stamp, errors = [NAN] * n, [NAN] * n, [NAN] * n, [False] * n
        t = self.clock()
        try:
            if self.use_usage:
                power[0] = nvml.nvmlDeviceGetPowerUsage(h) / 1000.0
            if self.read_specs:
                vals = nvml.nvmlDeviceGetFieldValues(h, self.read_specs)
                n_power = n if self.power_specs else 0
                for j in range(n_power):  # channel 0 <- instant, channel 1 <- average
                    fv = vals[j]
                    if int(fv.nvmlReturn) == nvml.NVML_SUCCESS:
                        power[j] = _field(fv) / 1000.0  # mW -> W
                        stamp[j] = fv.timestamp * 1e-6  # us since the epoch -> s
                    else:
                        errors[j] = True
                if self.energy_spec is not None:
                    fv = vals[n_power]
                    if int(fv.nvmlReturn) == nvml.NVML_SUCCESS:
                        energy[0] = _field(fv) / 1000.0  # mJ -> J
                    else:
                        errors[0] = True
            if self.has_energy and self.energy_spec is None:
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


def open_sensor(
    ctx: SensorContext,
    library: ModuleType | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Sensor:
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
        sensor = NvmlSensor(
            nvml, gpu, mig, how, clock=clock, hygiene=HygieneConfig.from_options(opts.get("hygiene"))
        )
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
