"""AMD GPUs and MI250X GCDs through ROCm's ``amdsmi`` Python package.

What is read for the rank's device (the primary's handle when it is an MI250X package):

* **energy** -- ``amdsmi_get_energy_count``: an accumulator times ``counter_resolution`` (uJ per
  tick) = uJ since driver load, stored in J. The library reports ``counter_resolution`` as the
  hard-coded ``15.3F`` of rocm_smi.cc (15.300000190734863 in Python), for every part; the result's
  ``timestamp`` is gpu_metrics ``system_clock_counter`` in ns (amdsmi.h: "Resolution: 1 ns"), not
  used here. The key is ``energy_accumulator`` from ROCm 6.4, both ``energy_accumulator`` and the
  deprecated ``power`` in 6.3, only ``power`` up to 6.2 (amdsmi Python API reference, "Deprecated
  in ROCm 6.4").
* **power** -- ``amdsmi_get_power_info`` in whole W. *What* it measures is decided by the part, not by
  which key happens to hold a number: on MI200 (gfx90a: MI210/MI250/MI250X) the firmware reports only
  ``average_socket_power``, a running average, and ROCm 6.0 copies it into ``current_socket_power``
  (rocm_smi_gpu_metrics.cc, gpu_metrics 1.3, "Backwards compatibility"), so every MI200 reading is
  ``average``. On MI300-class parts (gfx94x/gfx95x) ``current_socket_power`` is the instantaneous
  socket power (``instant``) and ``average_socket_power`` is unavailable. ROCm 7.0's
  ``socket_power`` is the one of the two the part has. Other parts are taken as ``average`` (said in
  the note). Unavailable values are the sentinel 0xFFFF (raw up to 6.0) or ``"N/A"`` (from 6.2).

The update period of the MI200 counters is not documented by AMD; it is of the order of a
millisecond (McDaniel et al., "Fine-grained power and energy attribution on AMD GPU/APU-based
exascale nodes", arXiv:2604.06056, characterise it on Frontier). The default ``update_period_s`` of
1 ms can be set with ``[measure.sensor_options.amdsmi] update_period_s``.

Which device: amdsmi sees every GPU of the node whatever ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES
say. The rank's GCD is found by ``SensorContext.device_bus_id``; else ``device_uuid`` in any of the
forms it comes in: amdsmi's own UUID (``amdsmi_get_gpu_device_uuid``, built from the ASIC serial and
device id), ROCr's ``GPU-<serial hex>``, or torch's ``get_device_properties(i).uuid`` on ROCm, which is
the 16 ASCII characters of that serial printed as 8-4-4-4-12 hex (HIP copies ROCr's UUID string into
``hipDeviceProp_t.uuid``; ``58580000-...`` is ROCr's "GPU-XX", no unique id). A UUID that matches no
GCD is logged and the next way is tried: its visible-devices entry (already resolved through ROCR ->
HIP layering by :func:`energy_hpc.context.visible_devices`): an index is the position in PCI bus
order, which is how ROCr numbers GCDs on Frontier (GCD i = i-th of c1, c6, c9, ce, d1, d6, d9, de),
and ``GPU-<hex>`` is ROCr's UUID, the ASIC serial amdsmi reports as ``asic_serial``; else
``local_rank`` in bus order.

MI250X packages. Each MI250X holds two GCDs; only the *primary* reports power and energy, for the
whole package; the *secondary* reads 0, ``"N/A"`` or NOT_SUPPORTED (kernel patch "drm/amd/pm: Only
primary die supports power data", 2021; rocm-smi's ``checkIfSecondaryDie`` tests for an energy
counter of 0). Pairs are found, in order, from ``[measure.sensor_options.amdsmi] packages`` (lists
of bus ids), else from the xGMI bandwidth between GCDs -- the two GCDs of a package are joined by
four links, twice or four times the bandwidth of any other pair (``rocm-smi --shownodesbw``:
200 GB/s vs 50-100 GB/s; ``amdsmi_get_minmax_bandwidth_between_processors``, spelled
``..._bandwith_...`` in ROCm 5.7), the partner must be
the unique and mutual best --, else from PCI bus order (pairs of neighbours), with a warning.

Attribution rule (what the channels mean and how the analysis must use them):

1. A package is recorded once, as channel ``amdsmi:pkg:<primary bus id>`` with scope ``package``,
   ``device`` = the primary's bus id and ``shared_with`` = both GCDs' bus ids. It is recorded by the
   rank bound to the primary GCD; when the launcher says (``SensorContext.node_devices``) that no
   rank of the job uses the primary, by the rank bound to the secondary instead -- same name, so
   still once.
2. The other GCD's rank opens no power channel; it records a placeholder ``amdsmi:<its bus id>``
   (no power, no energy) with ``included_in`` = the package channel. This is how the analysis knows
   where the secondary's energy went, even when another rank holds the numbers.
3. Totals add every package channel once per (host, device) and never add placeholders.
4. Per-device figures split a package window's energy equally among ``shared_with`` (the hardware
   reports only the sum; the split is a convention and is labelled ``equal split of package``).
   When only one GCD of a package is used by the job, the whole package goes to that GCD, labelled
   ``includes idle partner GCD``: the idle die's draw is a cost of the job and nobody else's.

Error codes of ``AmdSmiLibraryException.get_error_code()`` become our exceptions in
:func:`amdsmi_error` only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum
from types import ModuleType

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
DEFAULT_UPDATE_PERIOD_S = 0.001
MI200_DEVICE_IDS = (0x7408, 0x740C)  # MI250X, MI250 (MI210, 0x740f, has one GCD)
MI200_ALL_IDS = (0x7408, 0x740C, 0x740F)
MI300_DEVICE_IDS = frozenset(range(0x74A0, 0x74C0)) | frozenset(
    range(0x75A0, 0x75C0)
)  # MI300A/X, MI325X, MI35x
# ROCm 5.7 spells it "bandwith"; 6.0 and later "bandwidth" (amdsmi_interface.py of each release)
_BANDWIDTH_FNS = (
    "amdsmi_get_minmax_bandwidth_between_processors",
    "amdsmi_get_minmax_bandwith_between_processors",
)

# amdsmi_status_t (amdsmi.h) -> (name, meaning). The numbers are those Zeus maps in
# zeus/device/gpu/amd.py and the AmdSmiRetCode enum of py-interface/amdsmi_exception.py.
_STATUS = {
    1: ("AMDSMI_STATUS_INVAL", "invalid argument"),
    2: ("AMDSMI_STATUS_NOT_SUPPORTED", "not supported on this GPU/GCD"),
    3: ("AMDSMI_STATUS_NOT_YET_IMPLEMENTED", "not implemented in this ROCm release"),
    8: ("AMDSMI_STATUS_TIMEOUT", "the driver timed out"),
    9: ("AMDSMI_STATUS_RETRY", "the device is busy, retry"),
    10: (
        "AMDSMI_STATUS_NO_PERM",
        "permission denied; ask the system administrators for access to the GPU "
        "management interface (render group)",
    ),
    18: ("AMDSMI_STATUS_INIT_ERROR", "amdsmi could not initialise (is the amdgpu driver loaded?)"),
    31: ("AMDSMI_STATUS_NOT_FOUND", "device not found"),
    32: ("AMDSMI_STATUS_NOT_INIT", "amdsmi is not initialised"),
    34: (
        "AMDSMI_STATUS_DRIVER_NOT_LOADED",
        "the amdgpu kernel driver is not loaded (no AMD GPU on this node?)",
    ),
}
NOT_SUPPORTED = 2


def _code(exc: BaseException) -> int | None:
    get = getattr(exc, "get_error_code", None)
    return int(get()) if callable(get) else None


def amdsmi_error(exc: BaseException, doing: str, *, reading: bool = False) -> Exception:
    """The one place where an amdsmi exception becomes ours (SensorUnavailable when opening,
    SensorReadError when reading)."""
    code = _code(exc)
    known = _STATUS.get(code) if code is not None else None
    name, meaning = known or (f"amdsmi status {code}", getattr(exc, "err_info", "") or str(exc))
    text = f"amdsmi: {doing}: {meaning} [{name}]"
    return SensorReadError(text) if reading else SensorUnavailable(text)


def import_amdsmi() -> ModuleType:
    # amdsmi prints to stdout when libamd_smi.so is missing; stdout carries only what we were asked for.
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import amdsmi
    except ImportError as exc:
        raise SensorUnavailable(
            f"amdsmi: the Python package amdsmi is not importable ({exc}); install the copy that matches "
            "the node's ROCm: `pip install /opt/rocm/share/amd_smi`"
        ) from None
    except (OSError, AttributeError, KeyError) as exc:  # library missing, or package/ROCm mismatch
        raise SensorUnavailable(
            f"amdsmi: the package is installed but its library cannot be loaded ({exc}); "
            "load the ROCm module and use the amdsmi shipped with it"
        ) from None
    return amdsmi


def _number(v: object) -> float:
    """amdsmi numbers: int/float, or "N/A"; older releases return raw UINT16/UINT32 sentinels."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return NAN
    return NAN if v >= 0xFFFF else float(v)


def energy_joules(d: Mapping[str, object]) -> float:
    """J from an ``amdsmi_get_energy_count`` dict of any release (see module docstring)."""
    acc = d.get("energy_accumulator", d.get("power"))
    res = d.get("counter_resolution")
    if not isinstance(acc, (int, float)) or not isinstance(res, (int, float)):
        return NAN
    return float(acc) * float(res) * 1e-6


def power_key(d: Mapping[str, object], part: str = "other") -> tuple[str, str, str] | None:
    """(key, kind, why) of the ``amdsmi_get_power_info`` dict that carries power on this ``part``.

    The kind comes from the part (see the module docstring), never from which key holds a number:
    ROCm 6.0 fills ``current_socket_power`` with the average on MI200."""

    def numeric(k: str) -> bool:
        return not math.isnan(_number(d.get(k)))

    if part == "mi300":
        for k in ("current_socket_power", "socket_power"):
            if numeric(k):
                return k, "instant", f"power from {k}: instantaneous socket power (MI300-class)"
        if numeric("average_socket_power"):
            return (
                "average_socket_power",
                "average",
                "power from average_socket_power (no current power here)",
            )
        return None
    why = (
        "running average of socket power (MI200 firmware reports no instantaneous power)"
        if part == "mi200"
        else "taken as an average: this part's power kind is not known"
    )
    for k in ("average_socket_power", "socket_power", "current_socket_power"):
        if numeric(k):
            return k, "average", f"power from {k}: {why}"
    return None


def _part(device_id: int, market: str, gfx: str) -> str:
    """ "mi300" (gfx94x/gfx95x), "mi200" (gfx90a) or "other": what the power readings mean."""
    gfx = gfx.lower()
    if gfx.startswith(("gfx94", "gfx95")) or device_id in MI300_DEVICE_IDS or re.search(r"\bMI3\d\d", market):
        return "mi300"
    if gfx == "gfx90a" or device_id in MI200_ALL_IDS or re.search(r"\bMI2\d\d", market):
        return "mi200"
    return "other"


class _Gcd:
    def __init__(
        self, handle: object, bdf: str, uuid: str, serial: str, market: str, device_id: int, gfx: str = ""
    ) -> None:
        self.handle, self.bdf, self.uuid, self.serial = handle, bdf, uuid, serial
        self.market, self.device_id = market, device_id
        self.part = _part(device_id, market, gfx)

    @property
    def mi200(self) -> bool:
        """An MI250/MI250X GCD (two per package), the parts that are paired."""
        return self.device_id in MI200_DEVICE_IDS or "MI250" in self.market


def _enumerate(lib: ModuleType) -> list[_Gcd]:
    out = []
    try:
        for h in lib.amdsmi_get_processor_handles():
            asic = lib.amdsmi_get_gpu_asic_info(h)
            try:
                uuid = str(lib.amdsmi_get_gpu_device_uuid(h))
            except lib.AmdSmiException:
                uuid = ""
            serial = str(asic.get("asic_serial", "")).lower().removeprefix("0x")
            dev = asic.get("device_id", 0)  # int up to 6.0, hex() from 6.2, "N/A" when unknown
            try:
                dev_id = int(dev, 16) if isinstance(dev, str) else int(dev)
            except ValueError:
                dev_id = 0
            out.append(
                _Gcd(
                    h,
                    normalize_bus_id(lib.amdsmi_get_gpu_device_bdf(h)),
                    uuid,
                    serial,
                    str(asic.get("market_name", "")),
                    dev_id,
                    str(asic.get("target_graphics_version", "")),
                )
            )
    except lib.AmdSmiException as exc:
        raise amdsmi_error(exc, "listing GPUs") from None
    return sorted(out, key=lambda g: g.bdf)


def select_gcd(gcds: list[_Gcd], ctx: SensorContext) -> tuple[_Gcd, str]:
    if not gcds:
        raise SensorUnavailable("amdsmi: no AMD GPU on this node")
    if ctx.device_bus_id:
        want = normalize_bus_id(ctx.device_bus_id)
        for g in gcds:
            if g.bdf == want:
                return g, f"bus id {want}"
        raise SensorUnavailable(f"amdsmi: no GPU with bus id {want}; amdsmi sees {[g.bdf for g in gcds]}")
    unmatched = ""
    if ctx.device_uuid:
        found = match_uuid(gcds, ctx.device_uuid)
        if found is not None:
            return found, f"uuid {ctx.device_uuid}"
        unmatched = f"uuid {ctx.device_uuid} matched no GPU; "
        log.warning(
            "amdsmi: device uuid %s matches no GPU (amdsmi uuids %s, serials %s); mapping by the next key",
            ctx.device_uuid,
            [x.uuid for x in gcds],
            [x.serial for x in gcds],
        )
    g, how = _select_without_uuid(gcds, ctx)
    return g, unmatched + how


def uuid_serial(uuid: str) -> str:
    """The ASIC serial (lower-case hex, as ``asic_serial`` without 0x) a runtime UUID names, or "".

    ``GPU-<hex>`` is ROCr's form; torch's ``get_device_properties(i).uuid`` on ROCm prints the bytes
    of HIP's uuid, which are the ASCII characters after ``GPU-``: "63663131-3832-..." is "cf1182...".
    """
    u = uuid.strip().lower()
    if u.startswith("gpu-"):
        u = u[4:]
    elif re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", u):
        try:
            u = bytes.fromhex(u.replace("-", "")).decode("ascii").rstrip("\0").lower()
        except (UnicodeDecodeError, ValueError):
            return ""
    return u if re.fullmatch(r"[0-9a-f]{1,16}", u) else ""


def match_uuid(gcds: list[_Gcd], uuid: str) -> _Gcd | None:
    """The GCD a UUID of any form names (amdsmi's own, ROCr's, torch's on ROCm), or None."""
    want = uuid.strip().lower()
    for g in gcds:
        if g.uuid and g.uuid.lower() == want:
            return g
    serial = uuid_serial(uuid)
    if serial:
        hits = [g for g in gcds if g.serial and g.serial.lstrip("0") == serial.lstrip("0")]
        if len(hits) == 1:
            return hits[0]
    return None


def _select_without_uuid(gcds: list[_Gcd], ctx: SensorContext) -> tuple[_Gcd, str]:
    if ctx.visible_devices:
        entries = ctx.visible_devices
        entry = entries[0] if len(entries) == 1 else entries[ctx.local_rank % len(entries)]
        var = ctx.visible_env or "visible devices"
        if entry.isdigit():
            if int(entry) >= len(gcds):
                raise SensorUnavailable(f"amdsmi: {var} entry {entry} but the node has {len(gcds)} GPUs")
            return gcds[int(entry)], f"{var} index {entry} (PCI bus order)"
        want = entry.lower().removeprefix("gpu-")
        for g in gcds:
            if g.serial and g.serial == want:
                return g, f"{var} {entry} (ASIC serial)"
        raise SensorUnavailable(
            f"amdsmi: {var} entry {entry!r} matches no GPU (known serials "
            f"{['GPU-' + g.serial for g in gcds]})"
        )
    return gcds[ctx.local_rank % len(gcds)], f"local rank {ctx.local_rank} (PCI bus order)"


def _reports_power(lib: ModuleType, g: _Gcd) -> bool:
    """False for an MI250X secondary: energy counter 0 and power 0 / "N/A" / NOT_SUPPORTED."""
    acc, watts = 0.0, 0.0
    try:
        e = energy_joules(lib.amdsmi_get_energy_count(g.handle))
        acc = 0.0 if math.isnan(e) else e
    except lib.AmdSmiLibraryException as exc:
        if _code(exc) != NOT_SUPPORTED:
            raise amdsmi_error(exc, f"reading the energy counter of {g.bdf}") from None
    try:
        d = lib.amdsmi_get_power_info(g.handle)
        vals = [_number(d.get(k)) for k in ("socket_power", "current_socket_power", "average_socket_power")]
        watts = max((v for v in vals if not math.isnan(v)), default=0.0)
    except lib.AmdSmiLibraryException as exc:
        if _code(exc) != NOT_SUPPORTED:
            raise amdsmi_error(exc, f"reading the power of {g.bdf}") from None
    return acc > 0 or watts > 0


def find_packages(
    lib: ModuleType, gcds: list[_Gcd], explicit: Sequence[Sequence[str]] = ()
) -> list[tuple[_Gcd, _Gcd]]:
    """MI250X packages as (primary, secondary) pairs; see the module docstring for the rules."""
    by_bdf = {g.bdf: g for g in gcds}
    pairs: list[tuple[_Gcd, _Gcd]] = []
    if explicit:
        for p in explicit:
            a, b = (by_bdf.get(normalize_bus_id(x)) for x in p)
            if a is None or b is None:
                raise SensorUnavailable(f"amdsmi: packages option names {list(p)}, not GPUs of this node")
            pairs.append((a, b))
    else:
        mi200 = [g for g in gcds if g.mi200]
        by_bandwidth = _pairs_by_bandwidth(lib, mi200)
        if by_bandwidth is not None:
            pairs = by_bandwidth
        else:
            log.warning(
                "amdsmi: xGMI bandwidth between GCDs unavailable; pairing MI250X GCDs by PCI bus "
                "order (neighbours), as rocm-smi assumes. Set [measure.sensor_options.amdsmi] "
                "packages to be sure"
            )
            pairs = [(mi200[i], mi200[i + 1]) for i in range(0, len(mi200) - 1, 2)]
    out = []
    for a, b in pairs:
        ra, rb = _reports_power(lib, a), _reports_power(lib, b)
        if ra and rb:
            log.warning("amdsmi: both GCDs %s and %s report power; recording them separately", a.bdf, b.bdf)
            continue
        if not ra and not rb:
            log.warning(
                "amdsmi: neither GCD of package %s+%s reports power; taking %s as primary",
                a.bdf,
                b.bdf,
                a.bdf,
            )
        out.append((a, b) if ra or not rb else (b, a))
    return out


def _pairs_by_bandwidth(lib: ModuleType, gcds: list[_Gcd]) -> list[tuple[_Gcd, _Gcd]] | None:
    if len(gcds) < 2:
        return []
    fn = next((getattr(lib, n) for n in _BANDWIDTH_FNS if hasattr(lib, n)), None)
    if fn is None:
        return None
    best: dict[str, str] = {}
    for a in gcds:
        bw = []
        for b in gcds:
            if b is a:
                continue
            try:
                bw.append((float(fn(a.handle, b.handle)["max_bandwidth"]), b.bdf))
            except lib.AmdSmiException:
                return None
        bw.sort(reverse=True)
        if bw[0][0] <= 0 or (len(bw) > 1 and bw[0][0] == bw[1][0]):
            return None  # no unique widest link: cannot tell the package partner
        best[a.bdf] = bw[0][1]
    by_bdf = {g.bdf: g for g in gcds}
    pairs: list[tuple[_Gcd, _Gcd]] = []
    seen: set[str] = set()
    for bdf, partner in best.items():
        if best.get(partner) != bdf:
            return None  # not mutual
        if bdf not in seen:
            pairs.append((by_bdf[bdf], by_bdf[partner]))
            seen |= {bdf, partner}
    return pairs


class AmdSmiSensor(Sensor):
    """One rank's view: a GPU channel, a package channel, or a secondary GCD's placeholder."""

    backend = "amdsmi"

    def __init__(
        self,
        lib: ModuleType,
        gcd: _Gcd,
        role: str,
        partner: _Gcd | None = None,
        how: str = "",
        update_period_s: float = DEFAULT_UPDATE_PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
        hygiene: HygieneConfig | None = None,
        why_here: str = "",
    ) -> None:
        self.lib, self.clock, self.role = lib, clock, role
        label = gcd.market
        note = [f"mapped by {how}"] if how else []
        if role == "placeholder":
            assert partner is not None
            self.source = None
            pkg = f"amdsmi:pkg:{partner.bdf}"
            note.append(
                f"MI250X secondary GCD: no power of its own; its consumption is in {pkg} "
                f"(primary {partner.bdf}), recorded by the rank on that GCD"
            )
            info = ChannelInfo(
                name=f"amdsmi:{gcd.bdf}",
                scope=Scope.GPU,
                device=gcd.bdf,
                backend=self.backend,
                has_power=False,
                has_energy=False,
                update_period_s=update_period_s,
                shared_with=(partner.bdf, gcd.bdf),
                label=label,
                included_in=pkg,
                note="; ".join(note),
            )
            self._infos = [info]
            self.guard = CounterGuard(self._infos, hygiene)
            return
        self.source = (
            gcd if role in ("gpu", "package") else partner
        )  # "package-for-secondary" reads the primary
        assert self.source is not None
        try:
            pinfo = lib.amdsmi_get_power_info(self.source.handle)
            einfo = lib.amdsmi_get_energy_count(self.source.handle)
        except lib.AmdSmiLibraryException as exc:
            raise amdsmi_error(exc, f"reading {self.source.bdf}") from None
        key = power_key(pinfo, self.source.part)
        self.power_key, kind, why = key if key else ("", "instant", "")
        self.has_energy = not math.isnan(energy_joules(einfo))
        if not key and not self.has_energy:
            raise SensorUnavailable(f"amdsmi: {self.source.bdf} reports neither power nor energy")
        res = einfo.get("counter_resolution", 0.0)
        resolution = float(res) * 1e-6 if isinstance(res, (int, float)) else 0.0
        if key:
            note.append(why)
        shared: tuple[str, ...] = ()
        if role == "gpu":
            name, scope, device = f"amdsmi:{gcd.bdf}", Scope.GPU, gcd.bdf
        else:
            primary, secondary = (gcd, partner) if role == "package" else (partner, gcd)
            assert primary is not None and secondary is not None
            name, scope, device = f"amdsmi:pkg:{primary.bdf}", Scope.PACKAGE, primary.bdf
            shared = (primary.bdf, secondary.bdf)
            note.append(
                f"MI250X package: primary {primary.bdf} reports both GCDs ({primary.bdf}, "
                f"{secondary.bdf}); per-GCD figures split it equally"
            )
            if why_here:
                note.append(why_here)
        self._infos = [
            ChannelInfo(
                name=name,
                scope=scope,
                device=device,
                backend=self.backend,
                has_power=bool(key),
                has_energy=self.has_energy,
                update_period_s=update_period_s,
                energy_resolution_J=resolution,
                power_kind=kind,
                shared_with=shared,
                label=label,
                note="; ".join(note),
                # MI300-class current_socket_power is the last 1 ms; MI200's average has no documented window
                power_window_s=update_period_s if kind == "instant" else 0.0,
            )
        ]
        self.guard = CounterGuard(self._infos, hygiene)

    def channels(self) -> Sequence[ChannelInfo]:
        return self.guard.infos(self._infos)

    def read(self) -> Reading:
        if self.source is None:  # placeholder: nothing to read, and that is not an error
            return Reading(power=[NAN], energy=[NAN])
        lib, h = self.lib, self.source.handle
        t = self.clock()
        try:
            power = _number(lib.amdsmi_get_power_info(h).get(self.power_key)) if self.power_key else NAN
            energy = energy_joules(lib.amdsmi_get_energy_count(h)) if self.has_energy else NAN
        except lib.AmdSmiLibraryException as exc:
            raise amdsmi_error(exc, f"reading {self.source.bdf}", reading=True) from None
        return Reading(power=[power], energy=self.guard.apply(t, [power], [energy]))

    def close(self) -> None:
        try:
            self.lib.amdsmi_shut_down()
        except self.lib.AmdSmiException as exc:
            log.debug("amdsmi: shutdown: %s", exc)


def _init_flag(lib: ModuleType) -> IntEnum:
    flags = lib.AmdSmiInitFlags
    return getattr(flags, "INIT_AMD_GPUS", None) or flags.AMD_GPUS  # AMD_GPUS in ROCm 5.x


def open_sensor(
    ctx: SensorContext,
    library: ModuleType | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Sensor:
    """Open amdsmi for the rank's GCD. ``library`` replaces the ``amdsmi`` module (tests).

    Options (``[measure.sensor_options.amdsmi]``): ``packages`` (explicit MI250X pairs),
    ``update_period_s``, ``probe_reads`` (default 3, 0 to skip), ``hygiene``."""
    lib = library if library is not None else import_amdsmi()
    opts = dict(ctx.options.get("amdsmi", {}))
    try:
        lib.amdsmi_init(_init_flag(lib))
    except lib.AmdSmiException as exc:
        raise amdsmi_error(exc, "initialising amdsmi") from None
    try:
        gcds = _enumerate(lib)
        gcd, how = select_gcd(gcds, ctx)
        update_period_s = float(opts.get("update_period_s", DEFAULT_UPDATE_PERIOD_S))
        hygiene = HygieneConfig.from_options(opts.get("hygiene"))
        role, partner, why = "gpu", None, ""
        for primary, secondary in find_packages(lib, gcds, opts.get("packages", ())):
            if gcd is primary:
                role, partner = "package", secondary
            elif gcd is secondary:
                partner = primary
                used = {normalize_bus_id(b) for b in ctx.node_devices}
                if used and primary.bdf not in used:
                    role = "package-for-secondary"
                    why = f"recorded on the secondary's rank: no rank of this job uses the primary {primary.bdf}"
                else:
                    role = "placeholder"
        sensor = AmdSmiSensor(
            lib,
            gcd,
            role,
            partner,
            how,
            update_period_s=update_period_s,
            clock=clock,
            hygiene=hygiene,
            why_here=why,
        )
        try:
            startup_probe(sensor.read, int(opts.get("probe_reads", 3)), 0.05, sleep)
        except SensorReadError as exc:
            raise SensorUnavailable(f"{exc} (during the start-up probe)") from None
    except BaseException:
        with contextlib.suppress(Exception):
            lib.amdsmi_shut_down()
        raise
    return sensor
