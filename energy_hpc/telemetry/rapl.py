"""CPU package and DRAM energy through Linux powercap (RAPL), on Intel and on AMD (node level).

Zones are ``/sys/class/powercap/intel-rapl:<i>`` and their subzones ``intel-rapl:<i>:<j>`` (listed
at the top of the class folder and also nested in their parent's folder). What a zone measures is
its ``name``, never its position: a top-level ``package-<N>`` is CPU package N; a top-level ``psys``
is the platform domain (Intel client parts, and servers whose firmware enables it: often
``intel-rapl:1``, which would otherwise be read as package 1), which *contains* the packages and
more, and is not recorded (see :func:`_zones`); other top-level names are skipped. Under a package,
``dram`` is memory (channel ``dram-<N>``, N of its package), ``core``/``uncore`` are parts of the
package and are not recorded. Each zone has ``energy_uj`` (uJ, wraps at ``max_energy_range_uj``)
and ``name``. ``intel-rapl-mmio:*`` zones repeat the package counter through MMIO and are ignored. The kernel's
``amd_energy`` / RAPL documentation gives a 1 ms update of the underlying MSRs, hence
``update_period_s=0.001``. There is no power file: power is the counter's difference over the
sampler interval (``power_kind="average"``), so there is nothing independent to check the counter
against and hygiene only unwraps it.

Since Linux 5.10 (CVE-2020-8694, "Platypus") ``energy_uj`` is readable by root only on most
distributions; the backend then says so and how to fix it instead of recording zeros.

The root is ``/sys/class/powercap`` or ``[measure.sensor_options.rapl] root`` (tests).
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
from energy_hpc.telemetry.hygiene import Unwrapper

log = logging.getLogger(__name__)

NAN = math.nan
DEFAULT_ROOT = "/sys/class/powercap"
UPDATE_PERIOD_S = 0.001

PERMISSION_HELP = (
    "rapl: {path} is readable by root only (Linux 5.10 and later restrict RAPL energy counters, "
    "CVE-2020-8694). Ask the administrators to make them readable, e.g. at boot "
    "`chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj /sys/class/powercap/intel-rapl:*:*/energy_uj` "
    "or a udev rule, or leave 'rapl' out of [measure] sensors"
)


@dataclass(frozen=True)
class _Zone:
    path: Path
    key: str  # "package-0", "dram-0"
    scope: Scope
    max_range_uj: float


def _zone_dirs(root: Path) -> list[tuple[tuple[int, ...], Path]]:
    """Every ``intel-rapl:i[:j]`` zone once, whether listed at the top of ``root`` or nested."""
    found: dict[str, Path] = {}
    for d in [*sorted(root.glob("intel-rapl:*")), *sorted(root.glob("intel-rapl:*/intel-rapl:*"))]:
        if re.fullmatch(r"intel-rapl:\d+(:\d+)?", d.name) and d.name not in found:
            found[d.name] = d
    return sorted((tuple(int(x) for x in name.split(":")[1:]), d) for name, d in found.items())


def _zones(root: Path) -> tuple[list[_Zone], list[str]]:
    """The zones to record, and sentences on the top-level zones left out."""
    zones, skipped = [], []
    packages: dict[int, str] = {}  # top-level zone index -> "N" of its package-N name
    for idx, d in _zone_dirs(root):
        try:
            name = (d / "name").read_text().strip()
        except OSError:
            continue
        if len(idx) == 1:
            m = re.fullmatch(r"package-(\d+)", name)
            if m:
                packages[idx[0]] = m.group(1)
                key, scope = name, Scope.CPU
            elif name == "psys":
                # psys is the platform domain: it contains the packages (and the SoC, memory or more,
                # as the platform defines it). Not recorded: added to CPU energy it counts the packages
                # twice, and it is no well-defined node total either (what it covers is up to the
                # platform), so it must not stand beside pm_counters' node channel. Said in the notes.
                skipped.append(
                    f"{d.name} (psys, the platform domain that contains the packages) is not "
                    "recorded: it is neither CPU energy nor a defined node total"
                )
                continue
            else:
                skipped.append(f"{d.name} ({name!r}) is not recorded: not a CPU package")
                continue
        else:
            pkg = packages.get(idx[0])
            if pkg is None or name != "dram":
                continue  # core/uncore: inside the package counter; subzones of non-packages: not ours
            key, scope = f"dram-{pkg}", Scope.MEMORY
        try:
            rng = float((d / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            rng = 0.0
        zones.append(_Zone(d, key, scope, rng))
    return zones, skipped


class RaplSensor(Sensor):
    backend = "rapl"

    def __init__(
        self,
        root: str | os.PathLike = DEFAULT_ROOT,
        hostname: str = "localhost",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root, self.clock = Path(root), clock
        self.zones, skipped = _zones(self.root)
        for text in skipped:
            log.info("rapl: %s", text)
        if not self.zones:
            raise SensorUnavailable(
                f"rapl: no RAPL zones under {self.root} (the intel_rapl/rapl powercap "
                "driver is not loaded, or this CPU or VM does not expose RAPL)"
            )
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
        self._infos = [
            ChannelInfo(
                name=f"rapl:{z.key}",
                scope=z.scope,
                device=f"{hostname}:{z.key}",
                backend=self.backend,
                has_power=True,
                has_energy=True,
                update_period_s=UPDATE_PERIOD_S,
                energy_resolution_J=1e-6,
                power_kind="average",
                node_level=True,
                label=f"RAPL {z.key}",
                note="; ".join(
                    [
                        f"power = counter difference over the sampling interval; counter wraps at "
                        f"{z.max_range_uj * 1e-6:.0f} J and is unwrapped",
                        *skipped,
                    ]
                ),
            )
            for z in self.zones
        ]

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
