"""The emulated parts, opened through the real backends.

``open_part(name, workload, ...)`` builds the vendor-library stand-in (or sysfs folder) for one part,
drives it with a true power signal through a :mod:`hardware` model, opens the *real* backend module on
top of it (``nvml.open_sensor(ctx, library=...)``, ``pm_counters`` on the folder, ...) and returns an
:class:`EmulatedSensor`: the backend's sensor with every channel labelled EMULATED, plus the true
signal behind each channel. In a run (``sensors = ["emulated:h100"]``) the clock is the real one and
the workload a fixed duty cycle; the calibration benchmark drives a :class:`VirtualClock` instead.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from energy_hpc.errors import SensorUnavailable
from energy_hpc.telemetry.base import ChannelInfo, Reading, Sensor, SensorContext
from energy_hpc.telemetry.emulated import amdsmi_api, hardware, pynvml_api
from energy_hpc.telemetry.emulated.catalog import PARTS, Part
from energy_hpc.telemetry.emulated.signals import ActivitySignal, Constant, Signal, Sum, Workload

EMULATED = "EMULATED"


class VirtualClock:
    """A clock the caller moves: ``clock()`` reads it, ``sleep(s)`` advances it."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += max(float(s), 0.0)


class EmulatedSensor(Sensor):
    """A real backend's sensor on emulated hardware: every read first brings the hardware to the
    clock's time. Channels are labelled EMULATED (``synthetic``: never a measurement)."""

    backend = "emulated"

    def __init__(
        self, inner: Sensor, model: hardware.Model, clock: Callable[[], float], part: Part, t0: float = 0.0
    ) -> None:
        self.inner, self.model, self.clock, self.part, self.t0 = inner, model, clock, part, t0
        self.truth: dict[str, Signal] = {}
        infos = []
        for c in inner.channels():
            sig = _truth_for(c, model)
            if sig is not None:
                self.truth[c.name] = sig
            infos.append(
                dataclasses.replace(
                    c,
                    synthetic=True,
                    label=f"{EMULATED} {part.name}: {c.label}".strip(),
                    note=f"{EMULATED} sensor (not a measurement): {part.what}"
                    + (f"; {c.note}" if c.note else ""),
                )
            )
        self._infos = infos
        leaves = [q for sg in model.truth.values() for q in (sg.leaves() if isinstance(sg, Sum) else [sg])]
        self._live = list({id(q): q for q in leaves if isinstance(q, ActivitySignal)}.values())
        # the stand-in device and its library, for the device settings (telemetry.control)
        self.device: pynvml_api.FakeGpu | amdsmi_api.FakeGcd | None = None
        self.library: Any = None

    def control_target(self) -> tuple[str, Any, Any] | None:
        """(backend, library, handle) of the stand-in device, whose settings the emulated power follows;
        None for parts without one (pm_counters, RAPL)."""
        if self.device is None or self.library is None:
            return None
        if isinstance(self.device, pynvml_api.FakeGpu):
            self.library.nvmlInit()
            return "nvml", self.library, self.library.nvmlDeviceGetHandleByPciBusId(self.device.bus_id)
        self.library.amdsmi_init(self.library.AmdSmiInitFlags.INIT_AMD_GPUS)
        handles = self.library.amdsmi_get_processor_handles()
        return "amdsmi", self.library, next(h for h in handles if h.gcd is self.device)

    def sync(self) -> None:
        for sg in self._live:
            sg.update()
        self.model.sync(self.clock() - self.t0)

    def channels(self) -> Sequence[ChannelInfo]:
        inner = {c.name: c for c in self.inner.channels()}  # counter hygiene may have flagged some since
        return [
            dataclasses.replace(c, counter_fault=inner[c.name].counter_fault) if c.name in inner else c
            for c in self._infos
        ]

    def read(self) -> Reading:
        self.sync()
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


def _truth_for(c: ChannelInfo, model: hardware.Model) -> Signal | None:
    if c.view_of:
        return None
    name = c.name
    if c.backend == "nvml":
        scope_module = (
            "module" in (c.label + c.note).lower()
            and "module" in model.truth
            and "gpu scope" not in c.note.lower()
        )
        return model.truth["module" if scope_module else "gpu"]
    key = name.split(":", 1)[1] if c.backend in ("pm_counters", "rapl") else None
    if key is not None:
        return model.truth.get(key)
    if c.backend == "amdsmi":
        return next(iter(model.truth.values())) if c.has_power or c.has_energy else None
    return None


def part_signals(
    part: Part, workload: Workload | None, activity: Callable[[float, float], Signal] | None = None
) -> dict[str, Signal]:
    """The true signals of a part's channels for a workload, or (``activity(idle_W, busy_W)``, in a
    run) following the activity of the process measured."""
    p = part

    def sig(idle: float, busy: float, ripple: float, drift: float) -> Signal:
        if activity is not None:
            return activity(idle, busy)
        if workload is None:
            raise ValueError("part_signals needs a workload or an activity")
        return workload.signal(idle, busy, ripple, drift)

    dev = sig(p.idle_W, p.busy_W, p.ripple_W, p.drift_W)
    if part.name == "gh200":
        grace = sig(100.0, 160.0, 10.0, 2.0)
        return {"gpu": dev, "module": Sum((dev, grace))}
    if part.name == "cray-ex":
        accel = sig(180.0, 500.0, 40.0, 5.0)
        accels = {f"accel{i}": accel for i in range(4)}
        cpu = sig(110.0, 180.0, 10.0, 3.0)
        memory = sig(35.0, 50.0, 3.0, 1.0)
        rest = Constant(200.0)
        node = Sum((*accels.values(), cpu, memory, rest))
        return {"node": node, "cpu": cpu, "memory": memory, **accels}
    if part.name == "rapl":
        return {"package-0": dev, "dram-0": sig(12.0, 30.0, 3.0, 1.0)}
    return {"device": dev}


def open_part(
    name: str,
    workload: Workload | None,
    *,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    rng: np.random.Generator | None = None,
    folder: str | Path | None = None,
    t0: float = 0.0,
    options: dict[str, Any] | None = None,
    gpu_scope: bool = True,
    signals: dict[str, Signal] | None = None,
    privileged: bool = False,
) -> EmulatedSensor:
    """Open the real backend of part ``name`` on emulated hardware running ``workload``.

    ``clock``/``sleep`` default to a new :class:`VirtualClock`; signal time is ``clock() - t0``.
    ``rng`` draws the hardware's refresh phases. ``folder`` holds sysfs-like files (pm_counters,
    RAPL; a temporary folder by default). ``gpu_scope=False`` makes a GH200 answer module scope only.
    ``privileged``: the stand-in device lets this process change its power cap and clocks (else it
    answers NO_PERMISSION, as on most clusters); a device signal that follows the work
    (:class:`ActivitySignal`) then follows the settings too (:func:`hardware.settings_response`).
    """
    try:
        part = PARTS[name]
    except KeyError:
        raise SensorUnavailable(f"emulated: unknown part {name!r}; choose from {', '.join(PARTS)}") from None
    if clock is None:
        vc = VirtualClock()
        clock, sleep = vc, vc.sleep
    rng = rng or np.random.default_rng()
    sig = signals if signals is not None else part_signals(part, workload)
    model: hardware.Model
    real_sleep = sleep or time.sleep
    holder: list[hardware.Model] = []

    def synced_sleep(s: float) -> None:  # the start-up probe waits between reads: show it fresh values
        real_sleep(s)
        if holder:
            holder[0].sync(clock() - t0)

    opts = {part.backend: {"probe_reads": 3, **(options or {})}}
    ctx = SensorContext(hostname="emulated", options=opts)
    if part.backend == "nvml":
        from energy_hpc.telemetry import nvml

        gpu = pynvml_api.FakeGpu(
            uuid="GPU-e0000000-0000-0000-0000-000000000001",
            bus_id="00000000:18:00.0",
            name={
                "h100": "NVIDIA H100 80GB HBM3",
                "a100": "NVIDIA A100-SXM4-80GB",
                "gh200": "NVIDIA GH200 480GB",
            }[name],
        )
        if name == "gh200":
            gpu.gpu_scope_supported = gpu_scope
        counter_period = 0.02 if name == "a100" else 0.1
        model = hardware.NvmlModel(
            gpu,
            sig["gpu"] if "gpu" in sig else sig["device"],
            sig.get("module"),
            counter=hardware.random_phase(rng, counter_period),
            power=hardware.random_phase(rng, 0.1),
        )
        holder.append(model)
        gpu.privileged = privileged
        _settings_of(part, gpu)
        model.sync(clock() - t0)
        library: Any = pynvml_api.make_pynvml([gpu])
        device: pynvml_api.FakeGpu | amdsmi_api.FakeGcd | None = gpu
        inner = nvml.open_sensor(ctx, library=library, clock=clock, sleep=synced_sleep)
    elif part.backend == "amdsmi":
        from energy_hpc.telemetry import amdsmi

        if name == "mi250x":
            gcds = amdsmi_api.mi250x_node()[:2]
        else:
            gcds = [
                amdsmi_api.FakeGcd(
                    bdf="0000:05:00.0", market_name="AMD Instinct MI300X", device_id=0x74A1, instant=True
                )
            ]
        model = hardware.AmdModel(
            gcds[0], sig["device"], instant=(name != "mi250x"), counter=hardware.random_phase(rng, 0.001)
        )
        holder.append(model)
        gcds[0].privileged = privileged
        _settings_of(part, gcds[0])
        model.sync(clock() - t0)
        ctx = dataclasses.replace(ctx, device_bus_id=gcds[0].bdf, node_devices=tuple(g.bdf for g in gcds))
        library = amdsmi_api.make_amdsmi(gcds, "6.4")
        device = gcds[0]
        inner = amdsmi.open_sensor(ctx, library=library, clock=clock, sleep=synced_sleep)
    elif part.backend in ("pm_counters", "rapl"):
        library, device = None, None
        root = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix=f"emulated-{name}-"))
        if part.backend == "pm_counters":
            domains = {("" if k == "node" else k): s for k, s in sig.items()}
            model = hardware.PmCountersModel(root, domains, scan=hardware.random_phase(rng, 0.1))
        else:
            model = hardware.RaplModel(
                root, [sig["package-0"]], [sig["dram-0"]], counter=hardware.random_phase(rng, 0.001)
            )
        holder.append(model)
        model.sync(clock() - t0)
        opts[part.backend]["root"] = str(root)
        if part.backend == "pm_counters":
            from energy_hpc.telemetry import pm_counters

            inner = pm_counters.open_sensor(ctx, clock=clock, sleep=synced_sleep)
        else:
            from energy_hpc.telemetry import rapl

            inner = rapl.open_sensor(ctx, clock=clock)
    else:  # pragma: no cover - the table above names only these
        raise SensorUnavailable(f"emulated: no backend {part.backend}")
    sensor = EmulatedSensor(inner, model, clock, part, t0)
    sensor.device, sensor.library = device, library
    if device is not None:  # the device's own power follows its settings where it follows the work
        dev = sig.get("gpu", sig.get("device"))
        if isinstance(dev, ActivitySignal):
            dev.shape = hardware.settings_response(device, part.idle_W)
    return sensor


def _settings_of(part: Part, device: pynvml_api.FakeGpu | amdsmi_api.FakeGcd) -> None:
    """The part's power limit range (catalog) on its stand-in device, set at the top of the range."""
    if isinstance(device, pynvml_api.FakeGpu):
        device.min_limit_mW, device.max_limit_mW = int(part.min_cap_W * 1000), int(part.max_cap_W * 1000)
        device.power_limit_mW = device.default_limit_mW = device.max_limit_mW
    else:
        device.min_power_cap_uW, device.max_power_cap_uW = (
            int(part.min_cap_W * 1e6),
            int(part.max_cap_W * 1e6),
        )
        device.power_cap_uW = device.default_power_cap_uW = device.max_power_cap_uW


def duty_cycle(
    busy_s: float = 1.0, idle_s: float = 0.5, hours: float = 12.0, ripple_hz: float = 20.0
) -> Workload:
    """The signal an emulated sensor shows in a run: busy and idle in turn, from the sensor's opening."""
    n = int(hours * 3600 / (busy_s + idle_s))
    starts = idle_s + (busy_s + idle_s) * np.arange(n)
    return Workload(starts, starts + busy_s, np.full(n, ripple_hz), np.zeros(n))


def open_sensor(ctx: SensorContext) -> Sensor:
    """The ``emulated`` backend of a run: ``[measure.sensor_options.emulated] part`` names the part
    (``sensors = ["emulated:h100"]`` sets it). Labelled EMULATED everywhere; never a measurement.

    The emulated device draws busy power while the rank's process computes (its share of a core, from
    the kernel's run time of the process) and idle power otherwise, so that its figures follow the
    work the way a real device's do; ``signal = "duty-cycle"`` gives a fixed busy/idle cycle instead.
    ``privileged = true`` lets the run set the device's power cap and clocks (the busy power is then
    held under the cap and scaled with the SM clock); by default it answers NO_PERMISSION, as most
    clusters do."""
    opts = dict(ctx.options.get("emulated", {}))
    name = str(opts.get("part", "h100"))
    if name not in PARTS:
        raise SensorUnavailable(f"emulated: unknown part {name!r}; choose from {', '.join(PARTS)}")
    t0 = time.monotonic()
    privileged = bool(opts.get("privileged", False))
    if str(opts.get("signal", "activity")) == "duty-cycle":
        return open_part(
            name,
            duty_cycle(),
            clock=time.monotonic,
            sleep=time.sleep,
            t0=t0,
            rng=np.random.default_rng(),
            options={"probe_reads": 0},
            privileged=privileged,
        )
    from energy_hpc.telemetry import sampler_proc

    pid = os.getppid() if sampler_proc.IN_CHILD else os.getpid()
    cache: dict[tuple[float, float], Signal] = {}

    def activity(idle: float, busy: float) -> Signal:
        return cache.setdefault((idle, busy), ActivitySignal(pid, idle, busy, t0, time.monotonic))

    return open_part(
        name,
        None,
        clock=time.monotonic,
        sleep=time.sleep,
        t0=t0,
        rng=np.random.default_rng(),
        options={"probe_reads": 0},
        signals=part_signals(PARTS[name], None, activity),
        privileged=privileged,
    )


def true_energy(sig: Signal, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(sig.energy(np.asarray(b, float)) - sig.energy(np.asarray(a, float)))


__all__ = [
    "EMULATED",
    "PARTS",
    "EmulatedSensor",
    "Part",
    "VirtualClock",
    "duty_cycle",
    "open_part",
    "open_sensor",
    "part_signals",
    "true_energy",
]
