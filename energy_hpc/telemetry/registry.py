"""Which sensor backends exist, which of them a node offers, and opening them for a rank.

Each backend is a module with ``open_sensor(ctx: SensorContext) -> Sensor`` that raises
:class:`~energy_hpc.errors.SensorUnavailable` with the reason when it cannot be used here. Modules are
imported only when asked for, so a login node without pynvml or amdsmi never imports them.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from energy_hpc.errors import SensorUnavailable, SpecError
from energy_hpc.telemetry.base import ChannelInfo, Sensor, SensorContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    name: str
    module: str
    node_level: bool  # one per node (opened by the node leader only), not one per rank
    what: str


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("nvml", "energy_hpc.telemetry.nvml", False, "NVIDIA GPUs through NVML (nvidia-ml-py)"),
        Backend("amdsmi", "energy_hpc.telemetry.amdsmi", False, "AMD GPUs/GCDs through ROCm amdsmi"),
        Backend(
            "pm_counters",
            "energy_hpc.telemetry.pm_counters",
            True,
            "HPE Cray EX node telemetry in /sys/cray/pm_counters",
        ),
        Backend(
            "rapl", "energy_hpc.telemetry.rapl", True, "CPU package/DRAM energy via Linux powercap (RAPL)"
        ),
        Backend(
            "estimate",
            "energy_hpc.telemetry.estimate",
            False,
            "ESTIMATE from process CPU time x watts per core (not a measurement)",
        ),
        Backend(
            "synthetic",
            "energy_hpc.telemetry.synthetic",
            False,
            "SYNTHETIC deterministic test signal (not a measurement)",
        ),
        # per rank for the GPU parts, per node (node leader only) for cray-ex and rapl: see backend_node_level
        Backend(
            "emulated",
            "energy_hpc.telemetry.emulated.parts",
            False,
            "EMULATED sensors: the real backends on a vendor-library stand-in driven by a known true power "
            "signal, for tests and demos (not a measurement); name a part: emulated:<part>",
        ),
    )
}

DEVICE_BACKENDS = ("nvml", "amdsmi")
NODE_BACKENDS = ("pm_counters", "rapl")
SENSOR_CHOICES = ("auto", *BACKENDS)
EMULATED = "emulated"
DEFAULT_EMULATED_PART = "h100"


def emulated_parts() -> dict[str, str]:
    """The emulated parts, each with the real backend it runs on (imported only when asked for)."""
    from energy_hpc.telemetry.emulated.parts import PARTS

    return {name: part.backend for name, part in PARTS.items()}


def check_emulated_part(part: str, where: str) -> str:
    """``part`` when it is an emulated part; else one SpecError naming the choices."""
    parts = list(emulated_parts())
    if part not in parts:
        close = difflib.get_close_matches(part, parts, n=1, cutoff=0.5)
        hint = f" (did you mean {EMULATED}:{close[0]}?)" if close else ""
        raise SpecError(f"{where}: unknown emulated part {part!r}; choose from {', '.join(parts)}{hint}")
    return part


def parse_sensor(name: str, where: str = "sensor") -> tuple[str, dict]:
    """A sensor entry of a job file as (backend, options): ``"emulated:h100"`` is the backend
    ``emulated`` with ``part = "h100"``; a plain name is itself with no options. Raises SpecError for an
    unknown backend or emulated part."""
    backend, sep, arg = name.partition(":")
    if not sep:
        if name not in BACKENDS and name != "auto":
            raise SpecError(
                f"{where}: unknown sensor {name!r}; choose from {', '.join(SENSOR_CHOICES)}, "
                f"or {EMULATED}:<part>"
            )
        return name, {}
    if backend != EMULATED:
        raise SpecError(
            f"{where}: {name!r}: only {EMULATED} takes a part ({EMULATED}:<part>); "
            f"choose from {', '.join(SENSOR_CHOICES)}"
        )
    return EMULATED, {"part": check_emulated_part(arg, where)}


def backend_node_level(backend: str, ctx: SensorContext) -> bool:
    """Whether a backend is opened once per node (by the node leader only). ``emulated`` is per rank for
    a device part and per node for the node-level ones (cray-ex on pm_counters, rapl)."""
    if backend == EMULATED:
        part = str(ctx.options.get(EMULATED, {}).get("part", DEFAULT_EMULATED_PART))
        return emulated_parts().get(part, "") in NODE_BACKENDS
    b = BACKENDS.get(backend)
    return bool(b and b.node_level)


class _PerRankDevice(Sensor):
    """An emulated device part as one rank records it: its stand-in always has the same bus id, so
    every rank of a node would record "the same" device and the analysis would count it once for all
    of them (attribution.device_key); each rank's emulated device is its own, so the local rank goes
    into the device id."""

    backend = EMULATED

    def __init__(self, inner: Sensor, local_rank: int) -> None:
        self.inner, self.suffix = inner, f"/local-rank-{local_rank}"

    def channels(self) -> Sequence[ChannelInfo]:
        return [dataclasses.replace(c, device=c.device + self.suffix) for c in self.inner.channels()]

    def read(self):
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


def open_backend(name: str, ctx: SensorContext) -> Sensor:
    """Open one backend by name; raises SensorUnavailable with the reason."""
    try:
        backend = BACKENDS[name]
    except KeyError:
        raise SpecError(f"unknown sensor {name!r}: choose from {', '.join(SENSOR_CHOICES)}") from None
    if name == EMULATED:
        check_emulated_part(
            str(ctx.options.get(EMULATED, {}).get("part", DEFAULT_EMULATED_PART)),
            f"[measure.sensor_options.{EMULATED}] part",
        )
    try:
        module = importlib.import_module(backend.module)
    except ImportError as exc:
        raise SensorUnavailable(f"{name}: backend module cannot be imported ({exc})") from None
    sensor = module.open_sensor(ctx)
    if name == EMULATED and not backend_node_level(name, ctx):
        sensor = _PerRankDevice(sensor, ctx.local_rank)
    return sensor


@dataclass
class Opened:
    sensors: list[Sensor] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # backend -> why not used


def open_sensors(names: Sequence[str], ctx: SensorContext) -> Opened:
    """Open the sensors a job asks for on one rank.

    Named backends must open (a missing one is the user's to fix); ``auto`` opens what the node
    offers: the first device backend that sees this rank's device, the node-level backends on the
    node leader, and the CPU-time estimate only when nothing measurable is there (saying so).
    """
    out = Opened()
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        if name == "auto":
            continue
        backend, options = parse_sensor(name) if name not in BACKENDS else (name, {})
        bctx = ctx
        if options:  # "emulated:h100": the part goes into the backend's options
            bctx = dataclasses.replace(
                ctx, options={**ctx.options, backend: {**ctx.options.get(backend, {}), **options}}
            )
        if backend_node_level(backend, bctx) and not ctx.node_leader:
            out.skipped[name] = "node-level sensor: opened by the node leader only"
            continue
        out.sensors.append(open_backend(backend, bctx))
    if "auto" in wanted:
        _open_auto(ctx, out, already={s.backend for s in out.sensors})
    return out


def _scopes(sensor: Sensor) -> set[str]:
    """The scopes a sensor's channels measure (views of another channel left aside)."""
    return {c.scope.value for c in sensor.channels() if not c.view_of}


def _open_auto(ctx: SensorContext, out: Opened, already: set[str]) -> None:
    """``auto``: the first device backend that sees this rank's device; the node-level backends on the
    node leader, in the order of NODE_BACKENDS, leaving out one whose every scope a backend opened
    before it measures already (RAPL on an HPE Cray EX node: pm_counters reads the node's CPU and
    memory too, and its node figure includes them; recording both would tempt every reader to add
    them twice); and the CPU-time estimate only when nothing measurable is there (saying so).

    Why skip RAPL there rather than record it marked as not to be added: one source per scope and
    node keeps every reader of the file right, not only this analysis; the node leader's sampler does
    less work; and a user who wants both for a comparison names both (``sensors = ["pm_counters",
    "rapl"]``), which the analysis then counts once per scope and host (attribution.channel_roles).
    """
    measurable = False
    for name in DEVICE_BACKENDS:
        if name in already:
            measurable = True
            break
        try:
            out.sensors.append(open_backend(name, ctx))
            measurable = True
            break
        except SensorUnavailable as exc:
            out.skipped[name] = str(exc)
    # scope -> the node-level backend measuring it (named ones first), on every rank of the node alike
    covered: dict[str, str] = {}
    for s in out.sensors:
        if s.backend in NODE_BACKENDS:
            for scope in _scopes(s):
                covered.setdefault(scope, s.backend)
    for name in NODE_BACKENDS:
        if name in already:
            measurable = True
            continue
        try:
            sensor = open_backend(name, ctx)
        except SensorUnavailable as exc:
            out.skipped[name] = str(exc)
            continue
        measurable = True
        scopes = _scopes(sensor)
        by = sorted({covered[sc] for sc in scopes if sc in covered})
        if scopes and all(sc in covered for sc in scopes):
            sensor.close()
            out.skipped[name] = (
                f"{' and '.join(by)} already measures this node's {', '.join(sorted(scopes))}; "
                f"{name} beside it would count them twice"
            )
            continue
        for scope in scopes:
            covered.setdefault(scope, name)
        if ctx.node_leader:
            out.sensors.append(sensor)
        else:
            sensor.close()
            out.skipped[name] = "node-level sensor: recorded by the node leader"
    if not measurable and "estimate" not in already:
        # once per node, not once per rank
        (log.warning if ctx.node_leader else log.debug)(
            "auto: no measurable sensor on %s (%s); falling back to the CPU-time ESTIMATE, which is a "
            "model, not a measurement",
            ctx.hostname,
            "; ".join(v if v.startswith(f"{k}:") else f"{k}: {v}" for k, v in out.skipped.items())
            or "nothing found",
        )
        out.sensors.append(open_backend("estimate", ctx))


def describe(ctx: SensorContext) -> list[dict]:
    """Every backend, whether it is usable here, its channels, and why not when it is not."""
    rows = []
    for name, backend in BACKENDS.items():
        row: dict = {"backend": name, "what": backend.what, "node_level": backend.node_level}
        bctx = ctx
        if name == EMULATED:  # usable anywhere; the channels shown are those of the default part
            parts = emulated_parts()
            row["parts"] = [
                {"part": p, "sensor": f"{EMULATED}:{p}", "backend": b, "node_level": b in NODE_BACKENDS}
                for p, b in parts.items()
            ]
            row["channels_of"] = f"{EMULATED}:{DEFAULT_EMULATED_PART}"
            bctx = dataclasses.replace(
                ctx, options={**ctx.options, EMULATED: {"part": DEFAULT_EMULATED_PART}}
            )
        try:
            sensor = open_backend(name, bctx)
        except SensorUnavailable as exc:
            row.update(usable=False, reason=str(exc), channels=[])
        else:
            with sensor:
                row.update(usable=True, reason="", channels=[channel_dict(c) for c in sensor.channels()])
        rows.append(row)
    return rows


def channel_dict(c: ChannelInfo) -> dict:
    return {
        "name": c.name,
        "scope": c.scope.value,
        "device": c.device,
        "method": c.method.value,
        "has_power": c.has_power,
        "has_energy": c.has_energy,
        "update_period_s": c.update_period_s,
        "shared_with": list(c.shared_with),
        "label": c.label,
        "note": c.note,
        "included_in": c.included_in,
        "view_of": c.view_of,
        "counter_fault": c.counter_fault,
    }
