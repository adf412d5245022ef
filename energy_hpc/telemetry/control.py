"""Device settings a case can sweep (power cap, SM clock, memory clock): applied to the rank's device
before the case, restored after it, and the device's state as read back (enforced power limit, clocks,
temperature) for every window edge.

Two backends, each over its vendor library (injected, as for the sensors): :class:`NvmlControl`
(``nvmlDeviceSetPowerManagementLimit`` in mW, ``nvmlDeviceSetGpuLockedClocks`` /
``nvmlDeviceSetMemoryLockedClocks`` in MHz, their ``Reset`` calls) and :class:`AmdsmiControl`
(``amdsmi_set_power_cap`` in µW, ``amdsmi_set_gpu_clk_range`` in MHz). Restoring sets back what was
read before the first change: the power limit and, on amdsmi, the clock ranges. NVML has no call that
reads locked clocks back, so there the clocks are reset (the state of a device nobody locked).

Setting any of these needs root on most systems: NVML answers NO_PERMISSION, amdsmi NO_PERM, and in a
guest VM amdsmi answers NOT_SUPPORTED. :meth:`DeviceControl.check` finds that out before any work, by
writing the current power limit back (a change of nothing), and raises :class:`ControlRefused` with the
ways to get the setting otherwise.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from energy_hpc.errors import UserError
from energy_hpc.telemetry.base import Sensor, SensorContext

log = logging.getLogger(__name__)

NAN = float("nan")
# what a refusal says about getting the setting another way
OTHER_WAYS = (
    "ask Slurm for it instead (sbatch --gpu-freq=<MHz> for clocks, --gpu-power=<W> where the site's "
    "plugin has it, e.g. Perlmutter), or ask the administrators to set it (nvidia-smi -pl / -lgc, "
    "amd-smi set --power-cap / --clk-limit) and leave the case's setting out"
)
STATE_FIELDS = ("power_limit_W", "sm_clock_MHz", "mem_clock_MHz", "temperature_C")


class ControlRefused(UserError):
    """A power cap or clock the job asks for cannot be set on this device (permission, range, support)."""


@dataclass(frozen=True)
class DeviceState:
    """The device as read back: enforced power limit (W), SM/graphics and memory clocks (MHz),
    temperature (°C). NaN where the device does not answer."""

    power_limit_W: float = NAN
    sm_clock_MHz: float = NAN
    mem_clock_MHz: float = NAN
    temperature_C: float = NAN

    def values(self) -> tuple[float, float, float, float]:
        return (self.power_limit_W, self.sm_clock_MHz, self.mem_clock_MHz, self.temperature_C)


class DeviceControl(ABC):
    """One device's settings. ``owner``: this rank applies them (of the ranks that share a device, one
    does); every rank reads the state."""

    backend = ""

    def __init__(self, owner: bool = True) -> None:
        self.owner = owner
        self._saved: dict[str, Any] = {}  # what was there before the first change, by setting

    @abstractmethod
    def state(self) -> DeviceState:
        """The device now (cheap reads; a read that fails is NaN)."""

    @abstractmethod
    def limits(self) -> dict[str, tuple[float, float]]:
        """The range each setting may take on this device, in the units of :data:`KNOBS` names."""

    @abstractmethod
    def _probe(self, knob: str, values: Sequence[float | int]) -> None:
        """Try ``knob`` the way a case will set it, leaving the device as it was (the power limit written
        back, a clock locked at the lowest asked value and released at once, a clock range written back):
        raises the library's error when the setting is refused, unsupported or out of range."""

    @abstractmethod
    def _save(self, knob: str) -> Any:
        """What ``knob`` is set to now, for :meth:`restore`."""

    @abstractmethod
    def _set(self, knob: str, value: float | int) -> None:
        """Set one knob (the library's error escapes)."""

    @abstractmethod
    def _put_back(self, knob: str, saved: Any) -> None:
        """Set ``knob`` back to ``saved`` (the library's error escapes)."""

    @abstractmethod
    def _refusal(self, exc: BaseException) -> str:
        """Why the library refused: ``"no-permission"``, ``"range"``, ``"unsupported"`` or the message."""

    def check(self, wanted: Sequence[Mapping[str, float | int]]) -> None:
        """Before any work: every setting the cases ask for is within the device's range, and this
        process may change settings. Raises :class:`ControlRefused` in one line."""
        asked = {k: sorted({c[k] for c in wanted if k in c}) for k in {k for c in wanted for k in c}}
        if not asked or not self.owner:
            return
        lim = self.limits()
        for k, values in asked.items():
            if k not in lim:
                raise ControlRefused(
                    f"{self.backend}: this device has no {k} setting; remove it from the job"
                )
            lo, hi = lim[k]
            bad = [v for v in values if not lo <= v <= hi]
            if bad:
                raise ControlRefused(
                    f"{self.backend}: {k} = {bad[0]:g} is outside what this device allows "
                    f"({lo:g} to {hi:g}); choose values in that range"
                )
        for (
            k,
            values,
        ) in asked.items():  # each setting asked for: a clock lock may be refused where the cap is not
            try:
                self._probe(k, values)
            except Exception as exc:
                raise ControlRefused(self._explain(exc, k)) from None

    def apply(self, knobs: Mapping[str, float | int]) -> None:
        """Set ``knobs`` (only the owner does); a knob set for an earlier case and not asked now goes
        back first."""
        if not self.owner:
            return
        for k in [k for k in self._saved if k not in knobs]:
            self._restore_one(k)
        for k, v in knobs.items():
            try:
                if k not in self._saved:
                    self._saved[k] = self._save(k)
                self._set(k, v)
            except Exception as exc:
                raise ControlRefused(self._explain(exc, k)) from None
            log.debug("%s: %s set to %s", self.backend, k, v)

    def restore(self) -> None:
        """Put every changed setting back as it was read before the change (safe to call twice; never
        raises: a failure is logged, since it runs on the way out of a failure or a signal)."""
        for k in list(self._saved):
            self._restore_one(k)

    def _restore_one(self, knob: str) -> None:
        # forgotten only once the library call is over: a signal arriving in between leaves it known
        # to the final restore() (the signal handler raises at any bytecode while armed)
        saved = self._saved[knob]
        try:
            self._put_back(knob, saved)
            del self._saved[knob]
        except Exception as exc:
            self._saved.pop(knob, None)
            log.error(
                "%s: could not restore %s (%s); the device keeps the case's setting until reset",
                self.backend,
                knob,
                exc,
            )

    def _explain(self, exc: BaseException, what: str) -> str:
        why = self._refusal(exc)
        if why == "no-permission":
            return (
                f"{self.backend}: setting {what} needs administrator rights this job does not have "
                f"(the library answered no permission); {OTHER_WAYS}"
            )
        if why == "unsupported":
            return f"{self.backend}: this device does not support setting {what} (a VM or an older part); {OTHER_WAYS}"
        if why == "range":
            return f"{self.backend}: the device refused the value of {what} as out of range; check its limits"
        return f"{self.backend}: setting {what} failed: {why}"

    def close(self) -> None:  # noqa: B027 - most controls hold nothing to release
        """Release the library (after :meth:`restore`)."""


def _read(fn: Callable[[], float], scale: float = 1.0) -> float:
    try:
        return float(fn()) * scale
    except Exception:  # a reading the device does not give: NaN in the state, never an error
        return NAN


class NvmlControl(DeviceControl):
    backend = "nvml"

    def __init__(self, nvml: ModuleType, handle: object, owner: bool = True, shutdown: bool = True) -> None:
        super().__init__(owner)
        self.nvml, self.handle, self._shutdown = nvml, handle, shutdown

    def state(self) -> DeviceState:
        n, h = self.nvml, self.handle
        return DeviceState(
            power_limit_W=_read(lambda: n.nvmlDeviceGetEnforcedPowerLimit(h), 1e-3),
            sm_clock_MHz=_read(lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
            mem_clock_MHz=_read(lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)),
            temperature_C=_read(lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
        )

    def limits(self) -> dict[str, tuple[float, float]]:
        n, h = self.nvml, self.handle
        lim: dict[str, tuple[float, float]] = {}
        try:
            lo, hi = n.nvmlDeviceGetPowerManagementLimitConstraints(h)
            lim["power_cap_W"] = (lo / 1000.0, hi / 1000.0)
        except n.NVMLError:
            pass
        for knob, clock in (("gpu_clock_MHz", n.NVML_CLOCK_SM), ("memory_clock_MHz", n.NVML_CLOCK_MEM)):
            try:
                lim[knob] = (1.0, float(n.nvmlDeviceGetMaxClockInfo(h, clock)))
            except n.NVMLError:
                pass
        return lim

    def _probe(self, knob: str, values: Sequence[float | int]) -> None:
        n, h = self.nvml, self.handle
        if knob == "power_cap_W":
            n.nvmlDeviceSetPowerManagementLimit(h, int(n.nvmlDeviceGetPowerManagementLimit(h)))
        elif knob == "gpu_clock_MHz":  # NVML cannot read a lock back: the reset is what restore does too
            n.nvmlDeviceSetGpuLockedClocks(h, int(min(values)), int(min(values)))
            n.nvmlDeviceResetGpuLockedClocks(h)
        elif knob == "memory_clock_MHz":  # NOT_SUPPORTED on many parts
            n.nvmlDeviceSetMemoryLockedClocks(h, int(min(values)), int(min(values)))
            n.nvmlDeviceResetMemoryLockedClocks(h)

    def _save(self, knob: str) -> Any:
        if knob == "power_cap_W":
            return int(self.nvml.nvmlDeviceGetPowerManagementLimit(self.handle))
        return None  # locked clocks cannot be read back: restored by a reset

    def _set(self, knob: str, value: float | int) -> None:
        n, h = self.nvml, self.handle
        if knob == "power_cap_W":
            n.nvmlDeviceSetPowerManagementLimit(h, round(value * 1000))
        elif knob == "gpu_clock_MHz":
            n.nvmlDeviceSetGpuLockedClocks(h, int(value), int(value))
        elif knob == "memory_clock_MHz":
            n.nvmlDeviceSetMemoryLockedClocks(h, int(value), int(value))

    def _put_back(self, knob: str, saved: Any) -> None:
        n, h = self.nvml, self.handle
        if knob == "power_cap_W":
            n.nvmlDeviceSetPowerManagementLimit(h, int(saved))
        elif knob == "gpu_clock_MHz":
            n.nvmlDeviceResetGpuLockedClocks(h)
        elif knob == "memory_clock_MHz":
            n.nvmlDeviceResetMemoryLockedClocks(h)

    def _refusal(self, exc: BaseException) -> str:
        code = getattr(exc, "value", None)
        n = self.nvml
        if code == getattr(n, "NVML_ERROR_NO_PERMISSION", None):
            return "no-permission"
        if code in (
            getattr(n, "NVML_ERROR_NOT_SUPPORTED", None),
            getattr(n, "NVML_ERROR_FUNCTION_NOT_FOUND", None),
        ):
            return "unsupported"
        if code == getattr(n, "NVML_ERROR_INVALID_ARGUMENT", None):
            return "range"
        return str(exc) or type(exc).__name__

    def close(self) -> None:
        if self._shutdown:
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError:
                pass


# amdsmi status codes (amdsmi.h) that say why a setting was refused
_AMD_NO_PERM, _AMD_NOT_SUPPORTED, _AMD_INVAL = 10, 2, 1


class AmdsmiControl(DeviceControl):
    backend = "amdsmi"

    def __init__(self, lib: ModuleType, handle: object, owner: bool = True, shutdown: bool = True) -> None:
        super().__init__(owner)
        self.lib, self.handle, self._shutdown = lib, handle, shutdown

    def _clock(self, which: str) -> dict[str, Any]:
        return dict(self.lib.amdsmi_get_clock_info(self.handle, getattr(self.lib.AmdSmiClkType, which)))

    @staticmethod
    def _current(info: Mapping[str, Any]) -> float:
        v = info.get("clk", info.get("cur_clk"))  # "cur_clk" before ROCm 6.1, "clk" since
        return float(v) if isinstance(v, int | float) else NAN

    def state(self) -> DeviceState:
        lib, h = self.lib, self.handle
        return DeviceState(
            power_limit_W=_read(lambda: lib.amdsmi_get_power_cap_info(h)["power_cap"], 1e-6),
            sm_clock_MHz=_read(lambda: self._current(self._clock("GFX"))),
            mem_clock_MHz=_read(lambda: self._current(self._clock("MEM"))),
            temperature_C=_read(
                lambda: lib.amdsmi_get_temp_metric(
                    h, lib.AmdSmiTemperatureType.EDGE, lib.AmdSmiTemperatureMetric.CURRENT
                )
            ),
        )

    def limits(self) -> dict[str, tuple[float, float]]:
        lim: dict[str, tuple[float, float]] = {}
        try:
            info = self.lib.amdsmi_get_power_cap_info(self.handle)
            lim["power_cap_W"] = (info["min_power_cap"] / 1e6, info["max_power_cap"] / 1e6)
        except (self.lib.AmdSmiException, KeyError):
            pass
        for knob, which in (("gpu_clock_MHz", "GFX"), ("memory_clock_MHz", "MEM")):
            try:
                self._clock(which)
                lim[knob] = (1.0, math.inf)  # the part's own range is not in the API: the set call checks
            except self.lib.AmdSmiException:
                pass
        return lim

    def _probe(self, knob: str, values: Sequence[float | int]) -> None:
        lib, h = self.lib, self.handle
        if knob == "power_cap_W":
            lib.amdsmi_set_power_cap(h, 0, int(lib.amdsmi_get_power_cap_info(h)["power_cap"]))
        else:  # the current range written back: refused where the range cannot be set (a VM)
            saved = self._save(knob)
            which = lib.AmdSmiClkType.GFX if knob == "gpu_clock_MHz" else lib.AmdSmiClkType.MEM
            lib.amdsmi_set_gpu_clk_range(h, int(saved[0]), int(saved[1]), which)

    def _save(self, knob: str) -> Any:
        if knob == "power_cap_W":
            return int(self.lib.amdsmi_get_power_cap_info(self.handle)["power_cap"])
        info = self._clock("GFX" if knob == "gpu_clock_MHz" else "MEM")
        return (int(info["min_clk"]), int(info["max_clk"]))

    def _set(self, knob: str, value: float | int) -> None:
        lib, h = self.lib, self.handle
        if knob == "power_cap_W":
            lib.amdsmi_set_power_cap(h, 0, round(value * 1e6))
        else:
            which = lib.AmdSmiClkType.GFX if knob == "gpu_clock_MHz" else lib.AmdSmiClkType.MEM
            lib.amdsmi_set_gpu_clk_range(h, int(value), int(value), which)

    def _put_back(self, knob: str, saved: Any) -> None:
        lib, h = self.lib, self.handle
        if knob == "power_cap_W":
            lib.amdsmi_set_power_cap(h, 0, int(saved))
        else:
            which = lib.AmdSmiClkType.GFX if knob == "gpu_clock_MHz" else lib.AmdSmiClkType.MEM
            lib.amdsmi_set_gpu_clk_range(h, int(saved[0]), int(saved[1]), which)

    def _refusal(self, exc: BaseException) -> str:
        get = getattr(exc, "get_error_code", None)
        code = get() if callable(get) else None
        if code == _AMD_NO_PERM:
            return "no-permission"
        if code == _AMD_NOT_SUPPORTED:
            return "unsupported"
        if code == _AMD_INVAL:
            return "range"
        return str(exc) or type(exc).__name__

    def close(self) -> None:
        if self._shutdown:
            try:
                self.lib.amdsmi_shut_down()
            except self.lib.AmdSmiException:
                pass


def emulated_control(sensors: Sequence[Sensor]) -> DeviceControl | None:
    """The control of an emulated part's stand-in device among ``sensors`` (opened in this process),
    or None. The emulated sensor offers its stand-in library and handle (``control_target()``)."""
    for s in sensors:
        inner: Any = s
        while inner is not None and not hasattr(inner, "control_target"):
            inner = getattr(inner, "inner", None)
        target = inner.control_target() if inner is not None else None
        if target is None:
            continue
        backend, lib, handle = target
        cls = NvmlControl if backend == "nvml" else AmdsmiControl
        return cls(lib, handle, shutdown=False)
    return None


def open_control(
    backend: str, ctx: SensorContext, *, owner: bool = True, library: ModuleType | None = None
) -> DeviceControl:
    """The control of the rank's device through ``backend`` (``nvml`` or ``amdsmi``), found the way
    the sensor finds it (bus id, UUID). ``library`` replaces the vendor module (tests).
    Raises SensorUnavailable when the library or the device is not there."""
    if backend == "nvml":
        from energy_hpc.telemetry import nvml as nv

        lib = library if library is not None else nv.import_pynvml()
        try:
            lib.nvmlInit()
        except lib.NVMLError as exc:
            raise nv.nvml_error(lib, exc, "initialising NVML") from None
        try:
            gpu, _, _ = nv.select_gpu(lib, ctx)
        except BaseException:
            lib.nvmlShutdown()
            raise
        return NvmlControl(lib, gpu.handle, owner)
    if backend == "amdsmi":
        from energy_hpc.telemetry import amdsmi as amd

        lib = library if library is not None else amd.import_amdsmi()
        try:
            lib.amdsmi_init(amd._init_flag(lib))
        except lib.AmdSmiException as exc:
            raise amd.amdsmi_error(exc, "initialising amdsmi") from None
        try:
            gcd, _ = amd.select_gcd(amd._enumerate(lib), ctx)
        except BaseException:
            lib.amdsmi_shut_down()
            raise
        return AmdsmiControl(lib, gcd.handle, owner)
    raise ValueError(f"no device control through {backend!r}")
