"""Which sensor backends exist, which of them a node offers, and opening them for a rank.

A backend is one row, :class:`Backend`, naming a module with ``open_sensor(ctx: SensorContext) ->
Sensor`` that raises :class:`~energy_hpc.errors.SensorUnavailable` with the reason when it cannot be
used here. The row says everything else the tool needs: whether the backend is read once per node,
its place in ``auto``, and whether it has a start-up probe. The rows come from three places: the
built-in ones below, the entry points of the group ``energy_hpc.sensors`` of installed packages
(loaded once, when a backend is first looked up), and :func:`register_backend`. Everything here reads
the rows when it is called, so a backend added at any time is a sensor choice of job files, of
``energy-hpc run --sensors`` and of ``energy-hpc sensors``. Backend modules are imported only when
opened, so a login node without pynvml or amdsmi never imports them.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib
import importlib.metadata
import logging
import re
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from energy_hpc.errors import SensorUnavailable, SpecError
from energy_hpc.telemetry.base import ChannelInfo, Reading, Sensor, SensorContext

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "energy_hpc.sensors"
AUTO = "auto"
EMULATED = "emulated"
DEFAULT_EMULATED_PART = "h100"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


class Auto(str, enum.Enum):
    """A backend's place in ``sensors = ["auto"]`` (see :func:`open_sensors`)."""

    NO = "no"  # opened only when a job names it
    DEVICE = "device"  # the first of these (by ``order``) that sees the rank's device
    NODE = "node"  # each of these (by ``order``), unless one before it measures every scope it would
    FALLBACK = "fallback"  # the first of these, only when nothing measurable is there (saying so)


@dataclass(frozen=True)
class Backend:
    """One sensor backend: the one place that says what the tool needs to know about it.

    ``name`` is what a job file writes in ``sensors`` (letters, digits, ``_``, ``-``, ``.``; not
    ``auto``); ``module`` holds ``open_sensor(ctx)``; ``what`` is the line ``energy-hpc sensors``
    shows. ``auto`` and ``order`` place it in ``auto`` (lowest order first; equal orders in the order
    the rows were added). ``probe``: opening it runs a start-up counter probe (option
    ``probe_reads``), which ``energy-hpc sensors`` leaves out unless asked (``--probe``). ``options``:
    the option names its ``open_sensor`` reads from ``ctx.options[name]``."""

    name: str
    module: str
    node_level: bool  # one per node (opened by the node leader only), not one per rank
    what: str
    auto: Auto = Auto.NO
    order: int = 100
    probe: bool = False
    # the keys its ``[measure.sensor_options.<name>]`` table may hold, checked when the job file is
    # validated; None: the backend does not say, and any key passes
    options: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or self.name == AUTO:
            raise ValueError(f"sensor backend name {self.name!r}: use letters, digits, _ - . (not {AUTO!r})")
        object.__setattr__(self, "auto", Auto(self.auto))  # "node" as well as Auto.NODE
        if self.auto is Auto.NODE and not self.node_level:
            raise ValueError(f"sensor backend {self.name!r}: auto = node needs node_level = True")
        if self.auto is Auto.DEVICE and self.node_level:
            raise ValueError(f"sensor backend {self.name!r}: auto = device is per rank, not node_level")


_BUILT_IN = (
    Backend(
        "nvml",
        "energy_hpc.telemetry.nvml",
        False,
        "NVIDIA GPUs through NVML (nvidia-ml-py)",
        auto=Auto.DEVICE,
        order=10,
        probe=True,
        options=("probe_reads", "hygiene"),
    ),
    Backend(
        "amdsmi",
        "energy_hpc.telemetry.amdsmi",
        False,
        "AMD GPUs/GCDs through ROCm amdsmi",
        auto=Auto.DEVICE,
        order=20,
        probe=True,
        options=("packages", "update_period_s", "probe_reads", "hygiene"),
    ),
    # before RAPL: pm_counters reads the node's own controller (its node figure includes the CPUs and
    # memory), RAPL only the CPUs; auto leaves RAPL out where pm_counters measures its scopes already
    Backend(
        "pm_counters",
        "energy_hpc.telemetry.pm_counters",
        True,
        "HPE Cray EX node telemetry in /sys/cray/pm_counters",
        auto=Auto.NODE,
        order=10,
        probe=True,
        options=("root", "probe_reads", "hygiene"),
    ),
    Backend(
        "rapl",
        "energy_hpc.telemetry.rapl",
        True,
        "CPU package/DRAM energy via Linux powercap (RAPL)",
        auto=Auto.NODE,
        order=20,
        options=("root",),
    ),
    Backend(
        "estimate",
        "energy_hpc.telemetry.estimate",
        False,
        "ESTIMATE from process CPU time x watts per core (not a measurement)",
        auto=Auto.FALLBACK,
        options=("watts_per_core",),
    ),
    Backend(
        "synthetic",
        "energy_hpc.telemetry.synthetic",
        False,
        "SYNTHETIC deterministic test signal (not a measurement)",
        options=("n_channels", "base_W", "amp_W", "period_s", "step_W", "update_period_s", "device_prefix"),
    ),
    # per rank for the GPU parts, per node (node leader only) for cray-ex and rapl: see backend_node_level
    Backend(
        EMULATED,
        "energy_hpc.telemetry.emulated.parts",
        False,
        "EMULATED sensors: the real backends on a vendor-library stand-in driven by a known true power "
        "signal, for tests and demos (not a measurement); name a part: emulated:<part>",
        options=("part", "signal", "privileged"),
    ),
)

# The rows of this process, by name. Read them through backends(), change them through
# register_backend(); the sampling child gets its parent's through use_backends().
BACKENDS: dict[str, Backend] = {b.name: b for b in _BUILT_IN}
_entry_points_loaded = False


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _load_entry_points() -> None:
    """Add the backends of the ``energy_hpc.sensors`` entry points, once per process. Each entry point
    names a :class:`Backend` (``mysite = "mysite.power:BACKEND"``) whose name is the entry point's; one
    that cannot be loaded, is no Backend, or takes a name in use is skipped with one warning."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    try:
        found = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # broken package metadata must not stop a run
        log.warning("sensor entry points (%s) not read: %s", ENTRY_POINT_GROUP, _one_line(exc))
        return
    for ep in found:
        try:
            backend = ep.load()
            if not isinstance(backend, Backend):
                raise TypeError(f"it names a {type(backend).__name__}, not an energy_hpc Backend")
            if backend.name != ep.name:
                raise ValueError(f"it names backend {backend.name!r}; the entry point must have its name")
            have = BACKENDS.get(backend.name)
            if have is not None and have != backend:
                raise ValueError(f"a backend {backend.name!r} exists already ({have.module})")
        except Exception as exc:
            log.warning(
                "sensor entry point %r (%s = %s) skipped: %s",
                ep.name,
                ENTRY_POINT_GROUP,
                ep.value,
                _one_line(exc),
            )
            continue
        BACKENDS.setdefault(backend.name, backend)


def backends() -> dict[str, Backend]:
    """Every backend of this process by name (built-in, entry points, registered): a copy."""
    _load_entry_points()
    return dict(BACKENDS)


def register_backend(backend: Backend) -> Callable[[], None]:
    """Add a backend, or replace the one of its name; returns a function that undoes it (puts back
    the row it replaced, or removes it). Tests use :func:`registered`."""
    if not isinstance(backend, Backend):
        raise TypeError(f"register_backend takes a Backend, not {type(backend).__name__}")
    _load_entry_points()  # first, so that an entry point of this name cannot come in later
    previous = BACKENDS.get(backend.name)
    BACKENDS[backend.name] = backend

    def undo() -> None:
        if previous is None:
            BACKENDS.pop(backend.name, None)
        else:
            BACKENDS[backend.name] = previous

    return undo


@contextmanager
def registered(*rows: Backend) -> Iterator[None]:
    """The backends registered inside the ``with`` block only."""
    undo = [register_backend(b) for b in rows]
    try:
        yield
    finally:
        for u in reversed(undo):
            u()


@contextmanager
def fresh_registry() -> Iterator[None]:
    """For tests: inside the block the backends are those of a new process (the built-in ones; entry
    points loaded again when first needed); after it, what they were."""
    global BACKENDS, _entry_points_loaded
    saved = BACKENDS, _entry_points_loaded
    BACKENDS, _entry_points_loaded = {b.name: b for b in _BUILT_IN}, False
    try:
        yield
    finally:
        BACKENDS, _entry_points_loaded = saved


def use_backends(rows: Mapping[str, Backend]) -> None:
    """Take another process's backends as this one's (the sampling child gets its parent's, so what the
    parent registered exists there too); its entry points were loaded there, so they are not here."""
    global _entry_points_loaded
    BACKENDS.clear()
    BACKENDS.update(rows)
    _entry_points_loaded = True


def sensor_choices() -> tuple[str, ...]:
    """What ``sensors`` may name: ``auto`` and every backend (``emulated`` also as ``emulated:<part>``)."""
    return (AUTO, *backends())


def auto_backends(role: Auto) -> tuple[str, ...]:
    """The backends of one place in ``auto``, in the order it tries them."""
    rows = [b for b in backends().values() if b.auto is role]
    return tuple(b.name for b in sorted(rows, key=lambda b: b.order))


def device_backends() -> tuple[str, ...]:
    return auto_backends(Auto.DEVICE)


def node_backends() -> tuple[str, ...]:
    return auto_backends(Auto.NODE)


def fallback_backends() -> tuple[str, ...]:
    return auto_backends(Auto.FALLBACK)


def probe_backends() -> tuple[str, ...]:
    """The backends with a start-up counter probe (option ``probe_reads``)."""
    return tuple(name for name, b in backends().items() if b.probe)


def emulated_parts() -> dict[str, str]:
    """The emulated parts, each with the real backend it runs on."""
    from energy_hpc.telemetry.emulated.catalog import PARTS

    return {name: part.backend for name, part in PARTS.items()}


def check_emulated_part(part: str, where: str) -> str:
    """``part`` when it is an emulated part; else one SpecError naming the choices."""
    parts = list(emulated_parts())
    if part not in parts:
        close = difflib.get_close_matches(part, parts, n=1, cutoff=0.5)
        hint = f" (did you mean {EMULATED}:{close[0]}?)" if close else ""
        raise SpecError(f"{where}: unknown emulated part {part!r}; choose from {', '.join(parts)}{hint}")
    return part


def parse_sensor(name: str, where: str = "sensor") -> tuple[str, dict[str, Any]]:
    """A sensor entry of a job file as (backend, options): ``"emulated:h100"`` is the backend
    ``emulated`` with ``part = "h100"``; a plain name is itself with no options. Raises SpecError for an
    unknown backend or emulated part."""
    backend, sep, arg = name.partition(":")
    if not sep:
        if name not in backends() and name != AUTO:
            raise SpecError(
                f"{where}: unknown sensor {name!r}; choose from {', '.join(sensor_choices())}, "
                f"or {EMULATED}:<part>"
            )
        return name, {}
    if backend != EMULATED:
        raise SpecError(
            f"{where}: {name!r}: only {EMULATED} takes a part ({EMULATED}:<part>); "
            f"choose from {', '.join(sensor_choices())}"
        )
    return EMULATED, {"part": check_emulated_part(arg, where)}


def _node_level(name: str) -> bool:
    b = backends().get(name)
    return bool(b and b.node_level)


def backend_node_level(backend: str, ctx: SensorContext) -> bool:
    """Whether a backend is opened once per node (by the node leader only). ``emulated`` is per rank for
    a device part and per node for the node-level ones (cray-ex on pm_counters, rapl)."""
    if backend == EMULATED:
        part = str(ctx.options.get(EMULATED, {}).get("part", DEFAULT_EMULATED_PART))
        return _node_level(emulated_parts().get(part, ""))
    return _node_level(backend)


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

    def read(self) -> Reading:
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


def open_backend(name: str, ctx: SensorContext) -> Sensor:
    """Open one backend by name; raises SensorUnavailable with the reason."""
    backend = backends().get(name)
    if backend is None:
        raise SpecError(f"unknown sensor {name!r}: choose from {', '.join(sensor_choices())}")
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
        if name == AUTO:
            continue
        backend, options = parse_sensor(name) if name not in backends() else (name, {})
        bctx = ctx
        if options:  # "emulated:h100": the part goes into the backend's options
            bctx = dataclasses.replace(
                ctx, options={**ctx.options, backend: {**ctx.options.get(backend, {}), **options}}
            )
        if backend_node_level(backend, bctx) and not ctx.node_leader:
            out.skipped[name] = "node-level sensor: opened by the node leader only"
            continue
        out.sensors.append(open_backend(backend, bctx))
    if AUTO in wanted:
        _open_auto(ctx, out, already={s.backend for s in out.sensors})
    return out


def _scopes(sensor: Sensor) -> set[str]:
    """The scopes a sensor's channels measure (views of another channel left aside)."""
    return {c.scope.value for c in sensor.channels() if not c.view_of}


def _open_auto(ctx: SensorContext, out: Opened, already: set[str]) -> None:
    """``auto``: the first device backend that sees this rank's device; the node-level backends on the
    node leader, in the order of :func:`node_backends`, leaving out one whose every scope a backend opened
    before it measures already (RAPL on an HPE Cray EX node: pm_counters reads the node's CPU and
    memory too, and its node figure includes them; recording both would tempt every reader to add
    them twice); and the CPU-time estimate only when nothing measurable is there (saying so).

    Why skip RAPL there rather than record it marked as not to be added: one source per scope and
    node keeps every reader of the file right, not only this analysis; the node leader's sampler does
    less work; and a user who wants both for a comparison names both (``sensors = ["pm_counters",
    "rapl"]``), which the analysis then counts once per scope and host (attribution.channel_roles).
    """
    measurable = False
    node_level = node_backends()
    for name in device_backends():
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
        if s.backend in node_level:
            for scope in _scopes(s):
                covered.setdefault(scope, s.backend)
    for name in node_level:
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
    fallback = fallback_backends()
    if not measurable and fallback and not already.intersection(fallback):
        name = fallback[0]
        what, means = (
            ("the CPU-time ESTIMATE", "a model, not a measurement")
            if name == "estimate"
            else (name, backends()[name].what)
        )
        # one short line, then what it means, why each sensor is not there and what to do, indented;
        # once per node
        tried = [v if v.startswith(f"{k}:") else f"{k}: {v}" for k, v in out.skipped.items()] or [
            "none: no device or node-level backend is registered"
        ]
        details = [
            f"    ({means}). Sensors tried:",
            *(textwrap.fill(t, 100, initial_indent="    ", subsequent_indent="      ") for t in tried),
            "    To measure, see what each sensor needs in `energy-hpc sensors`; to choose this fallback",
            f'      without the warning, write sensors = ["{name}"] in the job',
        ]
        (log.warning if ctx.node_leader else log.debug)(
            "no measurable sensor on %s; falling back to %s\n%s", ctx.hostname, what, "\n".join(details)
        )
        out.sensors.append(open_backend(name, ctx))


def describe(ctx: SensorContext) -> list[dict[str, Any]]:
    """Every backend, whether it is usable here, its channels, and why not when it is not."""
    rows = []
    for name, backend in backends().items():
        row: dict[str, Any] = {"backend": name, "what": backend.what, "node_level": backend.node_level}
        bctx = ctx
        if name == EMULATED:  # usable anywhere; the channels shown are those of the default part
            parts = emulated_parts()
            row["parts"] = [
                {"part": p, "sensor": f"{EMULATED}:{p}", "backend": b, "node_level": _node_level(b)}
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


def channel_dict(c: ChannelInfo) -> dict[str, Any]:
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
