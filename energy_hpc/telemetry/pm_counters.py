"""HPE Cray EX node telemetry in ``/sys/cray/pm_counters`` (node level: recorded by the node leader).

Files (HPE "User Access to Compute Node Power Data", Cray-HPE/docs-csm; LDMS/perun/omnistat read the
same set): ``power``/``energy`` for the whole node (accelerators included), ``cpu_power``/
``cpu_energy`` (or per socket ``cpu0_*``, ``cpu1_*``), ``memory_power``/``memory_energy``,
``accelN_power``/``accelN_energy`` (one per MI250X package on Frontier; N is the blade's numbering,
not ROCm's), and the bookkeeping files ``freshness`` (free-running, ~10 Hz), ``generation`` (bumps on
a power-cap change), ``startup`` (changes when the controller restarts and the counters reset),
``version``, ``raw_scan_hz`` (the scan rate, 10 on EX) and ``power_cap`` (W, 0 = none).

Each measurement file holds one line ``<value> <unit> <timestamp> us`` (``123 W 1700000000123456
us``, ``456789 J ... us``); version 1 files have no timestamp. The sensor keeps that timestamp
(``Reading.sensor_time``, s), which is when the controller took the value -- windows can be aligned
to it instead of to the read time. Values refresh at ``raw_scan_hz`` (``update_period_s``
= 1/raw_scan_hz, 0.1 s).

A read is one scan: ``freshness`` is read before and after the value files and the read is repeated
(up to 3 times) when it changed in between, so that power and energy of one sample come from the
same scan. Channel hierarchy is explicit: ``cpu``, ``memory`` and ``accelN`` are ``included_in`` the
node channel, ``cpuN`` in ``cpu`` when both exist; totals take the node channel, never the sum.

The root is ``/sys/cray/pm_counters``, or ``[measure.sensor_options.pm_counters] root`` (tests).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from energy_hpc.errors import SensorReadError, SensorUnavailable
from energy_hpc.telemetry.base import ChannelInfo, Reading, Scope, Sensor, SensorContext
from energy_hpc.telemetry.hygiene import CounterGuard, HygieneConfig, startup_probe

log = logging.getLogger(__name__)

NAN = math.nan
DEFAULT_ROOT = "/sys/cray/pm_counters"
_LINE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*(?:(\d+)\s*us)?\s*$")


@dataclass(frozen=True)
class PmValue:
    value: float
    unit: str
    timestamp_s: float  # NaN when the file carries none


def parse_line(text: str) -> PmValue:
    """``"123 W 1700000000123456 us"`` -> PmValue(123.0, "W", 1700000000.123456)."""
    m = _LINE.match(text)
    if not m:
        raise ValueError(f"unexpected pm_counters line {text!r}")
    stamp = float(m.group(3)) * 1e-6 if m.group(3) else NAN
    return PmValue(float(m.group(1)), m.group(2), stamp)


@dataclass(frozen=True)
class _Domain:
    key: str  # "node", "cpu", "cpu0", "memory", "accel0"
    power_file: str | None
    energy_file: str | None
    scope: Scope
    included_in: str


def _domains(files: set[str]) -> list[_Domain]:
    stems = {"node": ("power", "energy")}
    for f in files:
        m = re.fullmatch(r"(cpu\d*|memory|accel\d*)_(power|energy)", f)
        if m:
            stems.setdefault(m.group(1), (f"{m.group(1)}_power", f"{m.group(1)}_energy"))
    has_node = "power" in files or "energy" in files
    has_cpu = "cpu_power" in files or "cpu_energy" in files
    out = []
    for key, (pf, ef) in sorted(stems.items(), key=lambda kv: (kv[0] != "node", kv[0])):
        p = pf if pf in files else None
        e = ef if ef in files else None
        if p is None and e is None:
            continue
        if key == "node":
            scope, inside = Scope.NODE, ""
        elif key.startswith("cpu"):
            scope = Scope.CPU
            inside = (
                "pm_counters:cpu" if key != "cpu" and has_cpu else ("pm_counters:node" if has_node else "")
            )
        else:  # memory, accelN (or "accel" on older blades)
            scope = Scope.MEMORY if key == "memory" else Scope.PACKAGE
            inside = "pm_counters:node" if has_node else ""
        out.append(_Domain(key, p, e, scope, inside))
    return out


class PmCountersSensor(Sensor):
    backend = "pm_counters"

    def __init__(
        self,
        root: str | os.PathLike = DEFAULT_ROOT,
        hostname: str = "localhost",
        clock: Callable[[], float] = time.monotonic,
        hygiene: HygieneConfig | None = None,
    ) -> None:
        self.root = Path(root)
        self.clock = clock
        if not self.root.is_dir():
            raise SensorUnavailable(f"pm_counters: {self.root} does not exist (not an HPE Cray EX node)")
        try:
            files = {p.name for p in self.root.iterdir() if p.is_file()}
        except OSError as exc:
            raise SensorUnavailable(f"pm_counters: cannot list {self.root}: {exc}") from None
        self.meta = {
            k: self._read_meta(k)
            for k in ("version", "raw_scan_hz", "startup", "generation", "power_cap", "accel_power_cap")
            if k in files
        }
        hz = self.meta.get("raw_scan_hz", NAN)
        self.update_period_s = 1.0 / hz if hz and hz > 0 and not math.isnan(hz) else 0.1
        self.has_freshness = "freshness" in files
        self.domains = _domains(files)
        if not self.domains:
            raise SensorUnavailable(f"pm_counters: no power/energy files in {self.root}")
        for d in self.domains:  # an unreadable file is a node problem: say so at open, not mid-run
            for f in (d.power_file, d.energy_file):
                if f:
                    try:
                        self._read(f)
                    except (OSError, ValueError) as exc:
                        raise SensorUnavailable(f"pm_counters: cannot read {self.root / f}: {exc}") from None
        cap = self.meta.get("power_cap", NAN)
        self._infos = [
            ChannelInfo(
                name=f"pm_counters:{d.key}",
                scope=d.scope,
                device=f"{hostname}:{d.key}",
                backend=self.backend,
                has_power=d.power_file is not None,
                has_energy=d.energy_file is not None,
                update_period_s=self.update_period_s,
                energy_resolution_J=1.0,
                power_kind="instant",
                node_level=True,
                included_in=d.included_in,
                label=f"Cray EX pm_counters {d.key}",
                note=self._note(d, cap),
            )
            for d in self.domains
        ]
        self.guard = CounterGuard(self._infos, hygiene)

    def _note(self, d: _Domain, cap: float) -> str:
        parts = [f"pm_counters version {self.meta.get('version', NAN):g}"]
        if d.key.startswith("accel"):
            parts.append("one MI250X package (or GPU) per accel index; the index is the blade's, not ROCm's")
        if d.key == "node" and cap and not math.isnan(cap):
            parts.append(f"node power cap {cap:g} W")
        return "; ".join(parts)

    def _read(self, name: str) -> PmValue:
        with open(self.root / name, "rb") as f:  # unbuffered small read: sysfs regenerates on each open
            return parse_line(f.read().decode("ascii", "replace"))

    def _read_meta(self, name: str) -> float:
        try:
            return self._read(name).value
        except (OSError, ValueError):
            return NAN

    def channels(self) -> Sequence[ChannelInfo]:
        return self.guard.infos(self._infos)

    def _scan(self) -> tuple[list[float], list[float], list[float]]:
        power, energy, stamp = [], [], []
        for d in self.domains:
            p = self._read(d.power_file) if d.power_file else None
            e = self._read(d.energy_file) if d.energy_file else None
            power.append(p.value if p else NAN)
            energy.append(e.value if e else NAN)
            # energy's stamp: the counter is what windows are cut from
            stamp.append(e.timestamp_s if e else (p.timestamp_s if p else NAN))
        return power, energy, stamp

    def read(self) -> Reading:
        t = self.clock()
        try:
            for _ in range(3):
                before = self._read("freshness").value if self.has_freshness else None
                power, energy, stamp = self._scan()
                if before is None or self._read("freshness").value == before:
                    break
        except (OSError, ValueError) as exc:
            raise SensorReadError(f"pm_counters: {exc}") from None
        return Reading(power=power, energy=self.guard.apply(t, power, energy), sensor_time=stamp)


def open_sensor(
    ctx: SensorContext,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Sensor:
    opts = dict(ctx.options.get("pm_counters", {}))
    sensor = PmCountersSensor(
        opts.get("root", DEFAULT_ROOT), ctx.hostname, clock, HygieneConfig.from_options(opts.get("hygiene"))
    )
    startup_probe(sensor.read, int(opts.get("probe_reads", 2)), sensor.update_period_s, sleep)
    return sensor
