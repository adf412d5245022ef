"""CPU package and DRAM energy through Linux powercap (RAPL), on Intel and on AMD (node level).

Zones are ``/sys/class/powercap/intel-rapl:<P>`` (name ``package-<P>``) and their subzones
``intel-rapl:<P>:<S>`` (``dram``; ``core``/``uncore`` are parts of the package and are not
recorded). Each has ``energy_uj`` (uJ, wraps at ``max_energy_range_uj``) and ``name``. The kernel's
``amd_energy`` / RAPL documentation gives a 1 ms update of the underlying MSRs, hence
``update_period_s=0.001``. There is no power file: power is the counter's difference over the
sampler interval (``power_kind="average"``), so there is nothing independent to check the counter
against and hygiene only unwraps it.

Since Linux 5.10 (CVE-2020-8694, "Platypus") ``energy_uj`` is readable by root only on most
distributions; the backend then says so and how to fix it instead of recording zeros.

The root is ``/sys/class/powercap`` or ``[measure.sensor_options.rapl] root`` (tests).
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from energy_hpc.errors import SensorReadError, SensorUnavailable
from energy_hpc.telemetry.base import ChannelInfo, Reading, Scope, Sensor, SensorContext
from energy_hpc.telemetry.hygiene import Unwrapper

NAN = math.nan
DEFAULT_ROOT = "/sys/class/powercap"
UPDATE_PERIOD_S = 0.001

PERMISSION_HELP = (
    "rapl: {path} is readable by root only (Linux 5.10 and later restrict RAPL energy counters, "
    "CVE-2020-8694). Ask the administrators to make them readable, e.g. at boot "
    "`chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj /sys/class/powercap/intel-rapl:*:*/energy_uj` "
    "or a udev rule, or leave 'rapl' out of [measure] sensors")


@dataclass(frozen=True)
class _Zone:
    path: Path
    key: str  # "package-0", "dram-0"
    scope: Scope
    max_range_uj: float


def _zones(root: Path) -> list[_Zone]:
    zones = []
    for d in sorted(root.glob("intel-rapl:*")):
        if not re.fullmatch(r"intel-rapl:\d+(:\d+)?", d.name):
            continue
        try:
            name = (d / "name").read_text().strip()
        except OSError:
            continue
        parts = d.name.split(":")
        pkg = parts[1]
        if len(parts) == 2:
            key, scope = f"package-{pkg}", Scope.CPU
        elif name == "dram":
            key, scope = f"dram-{pkg}", Scope.MEMORY
        else:
            continue  # core/uncore: inside the package counter
        try:
            rng = float((d / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            rng = 0.0
        zones.append(_Zone(d, key, scope, rng))
    return zones


class RaplSensor(Sensor):
    backend = "rapl"

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT, hostname: str = "localhost",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root, self.clock = Path(root), clock
        self.zones = _zones(self.root)
        if not self.zones:
            raise SensorUnavailable(f"rapl: no RAPL zones under {self.root} (the intel_rapl/rapl powercap "
                                    "driver is not loaded, or this CPU or VM does not expose RAPL)")
        for z in self.zones:
            path = z.path / "energy_uj"
            try:
                path.read_text()
            except PermissionError:
                raise SensorUnavailable(PERMISSION_HELP.format(path=path)) from None
            except OSError as exc:
                raise SensorUnavailable(f"rapl: cannot read {path}: {exc}") from None
        self.unwrap = [Unwrapper(z.max_range_uj) for z in self.zones]
        self.last: list[tuple[float, float]] = [(NAN, NAN)] * len(self.zones)
        self._infos = [ChannelInfo(
            name=f"rapl:{z.key}", scope=z.scope, device=f"{hostname}:{z.key}", backend=self.backend,
            has_power=True, has_energy=True, update_period_s=UPDATE_PERIOD_S, energy_resolution_J=1e-6,
            power_kind="average", node_level=True, label=f"RAPL {z.key}",
            note=f"power = counter difference over the sampling interval; counter wraps at "
                 f"{z.max_range_uj * 1e-6:.0f} J and is unwrapped") for z in self.zones]

    def channels(self) -> Sequence[ChannelInfo]:
        return self._infos

    def read(self) -> Reading:
        power, energy = [], []
        for k, z in enumerate(self.zones):
            t = self.clock()
            try:
                raw = float((z.path / "energy_uj").read_text())
            except (OSError, ValueError) as exc:
                raise SensorReadError(f"rapl: {z.path / 'energy_uj'}: {exc}") from None
            e = self.unwrap[k](raw) * 1e-6  # uJ -> J, monotonic
            t0, e0 = self.last[k]
            power.append((e - e0) / (t - t0) if t > t0 else NAN)
            energy.append(e)
            self.last[k] = (t, e)
        return Reading(power=power, energy=energy)


def open_sensor(ctx: SensorContext, clock: Callable[[], float] = time.monotonic) -> Sensor:
    opts = dict(ctx.options.get("rapl", {}))
    return RaplSensor(opts.get("root", DEFAULT_ROOT), ctx.hostname, clock)
