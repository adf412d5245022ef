"""Hardware models: what a part's sensors report at time t, given the power it really draws.

Each model holds the true :class:`~energy_hpc.telemetry.emulated.signals.Signal` of what its channel
covers and, at :meth:`sync` time t, writes what the vendor interface would show at t into the
library stand-in (``pynvml_api.FakeGpu``, ``amdsmi_api.FakeGcd``) or into a sysfs-like folder (Cray
pm_counters, RAPL powercap). The real backend modules read them unchanged.

What is modelled, and where it comes from (docs/telemetry.md has the table):

- NVML (A100/H100/GH200): the energy counter (mJ, integer) is held between refreshes every
  ``counter_period_s`` (about 100 ms; Yang et al., "Part-time Power Measurements", SC24); the
  instant power field is refreshed every ``power_period_s`` from a measurement that covers only the
  last ``power_window_s`` (about 25 ms) of each period, so periodic work aliases; the average power
  field and ``nvmlDeviceGetPowerUsage`` are a 1 s trailing mean. Field timestamps are the refresh
  instants (us). Refresh phases are random: the sampler never knows them.
- amdsmi (MI250X, MI300X): the energy accumulator counts ticks of ``counter_resolution`` uJ and
  refreshes about every 1 ms; MI250X ``average_socket_power`` is a trailing mean (``avg_window_s``),
  MI300X ``current_socket_power`` is the power of the last 1 ms; both integer W. An MI250X package is
  one sensor for two GCDs: the secondary reports nothing.
- Cray pm_counters: a scan every 100 ms (``raw_scan_hz`` 10) writes integer W and integer J with the
  scan's own us timestamp; the node figure contains the accelerators, CPU and memory.
- RAPL: a uJ counter refreshed about every 1 ms that wraps at ``max_energy_range_uj``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from energy_hpc.telemetry.emulated.amdsmi_api import FakeGcd
from energy_hpc.telemetry.emulated.pynvml_api import FakeGpu
from energy_hpc.telemetry.emulated.signals import Signal

EPOCH_US = 1_700_000_000_000_000  # where field timestamps start (us since the Unix epoch)


@dataclass
class Refresh:
    """Refresh instants ``phase + k * period``: :meth:`index` is the latest one at or before t."""

    period_s: float
    phase_s: float = 0.0

    def index(self, t: float) -> int:
        return math.floor((t - self.phase_s) / self.period_s)

    def at(self, k: np.ndarray | int) -> np.ndarray:
        return self.phase_s + np.asarray(k, float) * self.period_s

    def last(self, t: float) -> float:
        return float(self.at(self.index(t)))


class Table:
    """What a model shows after refresh k, computed for blocks of refreshes at once (vectorised over
    the true signal) and looked up by index: the emulation costs a lookup per read."""

    BLOCK = 4096

    def __init__(
        self,
        refresh: Refresh,
        fn: Callable[[np.ndarray], Sequence[np.ndarray]],
        signals: Sequence[Signal] = (),
    ) -> None:
        """``fn(refresh instants)`` gives the columns shown after those refreshes."""
        self.refresh, self.fn = refresh, fn
        # a signal recorded as it happens (a run's activity) cannot be computed ahead
        self.block = 1 if any(getattr(sg, "live", False) for sg in signals) else self.BLOCK
        self.k0 = 0
        self.cols: list[np.ndarray] | None = None

    def row(self, t: float) -> tuple[np.number, ...]:
        k = self.refresh.index(t)
        if self.cols is None or not self.k0 <= k < self.k0 + self.block:
            self.k0 = k
            self.cols = [np.asarray(c) for c in self.fn(self.refresh.at(np.arange(k, k + self.block)))]
        return tuple(c[k - self.k0] for c in self.cols)


def _mean(sig: Signal, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return sig.mean_power(a, b)


def _energy(sig: Signal, t: np.ndarray) -> np.ndarray:
    return sig.energy(np.maximum(t, 0.0))


class Model:
    """One emulated sensor surface. ``truth`` maps the backend's channel-name suffix (what the
    analysis reduces) to the true signal of what that channel covers."""

    truth: dict[str, Signal]

    def sync(self, t: float) -> None:
        raise NotImplementedError


@dataclass
class NvmlModel(Model):
    gpu: FakeGpu
    signal: Signal  # GPU scope
    module: Signal | None = None  # GH200: GPU + Grace CPU + memory
    counter: Refresh = field(default_factory=lambda: Refresh(0.1))
    power: Refresh = field(default_factory=lambda: Refresh(0.1))
    power_window_s: float = 0.025
    average_window_s: float = 1.0
    energy0_mJ: int = 5_000_000

    def __post_init__(self) -> None:
        self.truth = {"gpu": self.signal}
        sigs = [self.signal] + ([self.module] if self.module is not None else [])
        if self.module is not None:
            self.truth["module"] = self.module
        self._energy = Table(
            self.counter,
            lambda r: [self.energy0_mJ + np.floor(1000.0 * _energy(sg, r)).astype(np.int64) for sg in sigs],
            sigs,
        )
        self._power = Table(
            self.power,
            lambda r: (
                [
                    (1000.0 * _mean(sg, r - w, r)).astype(np.int64)
                    for sg in sigs
                    for w in (self.power_window_s, self.average_window_s)
                ]
                + [EPOCH_US + np.round(r * 1e6).astype(np.int64)]
            ),
            sigs,
        )

    def sync(self, t: float) -> None:
        g = self.gpu
        e = self._energy.row(t)
        p = self._power.row(t)
        g.energy_mJ, g.power_instant_mW, g.power_average_mW, g.timestamp_us = (
            int(e[0]),
            int(p[0]),
            int(p[1]),
            int(p[-1]),
        )
        if self.module is not None:
            g.module_energy_mJ, g.module_power_instant_mW, g.module_power_average_mW = (
                int(e[1]),
                int(p[2]),
                int(p[3]),
            )


@dataclass
class AmdModel(Model):
    gcd: FakeGcd  # the package's primary GCD
    signal: Signal  # the whole package (MI250X: both GCDs)
    instant: bool = False  # MI300X: current_socket_power; MI250X: average_socket_power
    counter: Refresh = field(default_factory=lambda: Refresh(0.001))
    avg_window_s: float = 1.0
    ticks0: int = 1_000_000_000

    def __post_init__(self) -> None:
        self.truth = {"package" if not self.instant else "gpu": self.signal}
        window = self.counter.period_s if self.instant else self.avg_window_s
        self._table = Table(
            self.counter,
            lambda r: [
                self.ticks0
                + np.floor(_energy(self.signal, r) * 1e6 / float(self.gcd.counter_resolution)).astype(
                    np.int64
                ),
                np.round(_mean(self.signal, r - window, r)).astype(np.int64),
            ],
            [self.signal],
        )

    def sync(self, t: float) -> None:
        ticks, watts = self._table.row(t)
        self.gcd.energy_ticks, self.gcd.power_W = int(ticks), int(watts)


@dataclass
class PmCountersModel(Model):
    """A Cray EX node's /sys/cray/pm_counters folder. ``domains`` maps a file stem ('', 'cpu',
    'memory', 'accel0', ...) to its true signal; '' is the node and must contain the others."""

    root: Path
    domains: dict[str, Signal]
    scan: Refresh = field(default_factory=lambda: Refresh(0.1))
    energy0_J: int = 40_000_000
    _last: int = -(2**62)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.truth = {("node" if k == "" else k): s for k, s in self.domains.items()}
        for name, value in (
            ("version", "2"),
            ("raw_scan_hz", "10"),
            ("startup", "1700000000"),
            ("generation", "3"),
            ("power_cap", "0 W"),
        ):
            (self.root / name).write_text(value + "\n")
        self._freshness = 0

        # power: a point reading at the scan (its last millisecond); energy: the accumulated joules
        sigs = list(self.domains.values())
        self._table = Table(
            self.scan,
            lambda r: (
                [EPOCH_US + np.round(r * 1e6).astype(np.int64)]
                + [np.round(_mean(sg, r - 0.001, r)).astype(np.int64) for sg in sigs]
                + [self.energy0_J + np.floor(_energy(sg, r)).astype(np.int64) for sg in sigs]
            ),
            sigs,
        )

    def sync(self, t: float) -> None:
        k = self.scan.index(t)
        if k == self._last:
            return
        self._last = k
        row = self._table.row(t)
        stamp, n = int(row[0]), len(self.domains)
        for i, stem in enumerate(self.domains):
            pre = f"{stem}_" if stem else ""
            _write(self.root / f"{pre}power", f"{int(row[1 + i])} W {stamp} us\n")
            _write(self.root / f"{pre}energy", f"{int(row[1 + n + i])} J {stamp} us\n")
        self._freshness += 1
        _write(self.root / "freshness", f"{self._freshness}\n")


@dataclass
class RaplModel(Model):
    """A /sys/class/powercap tree: ``packages[i]`` is package i's true signal, ``dram[i]`` its DRAM."""

    root: Path
    packages: Sequence[Signal]
    dram: Sequence[Signal] = ()
    counter: Refresh = field(default_factory=lambda: Refresh(0.001))
    max_range_uj: int = 262_143_328_850
    start_uj: int = 262_000_000_000  # close to the wrap, so that runs cross it

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.truth = {}
        self._files: list[tuple[Path, Signal]] = []
        for i, sig in enumerate(self.packages):
            d = self.root / f"intel-rapl:{i}"
            self._zone(d, f"package-{i}", sig)
            self.truth[f"package-{i}"] = sig
            if i < len(self.dram):
                self._zone(d / f"intel-rapl:{i}:0", "dram", self.dram[i])
                self.truth[f"dram-{i}"] = self.dram[i]

    def _zone(self, d: Path, name: str, sig: Signal) -> None:
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(name + "\n")
        (d / "max_energy_range_uj").write_text(f"{self.max_range_uj}\n")
        self._files.append((d / "energy_uj", sig))
        _write(d / "energy_uj", f"{self.start_uj}\n")

        self._table = Table(
            self.counter,
            lambda r: [
                (self.start_uj + np.floor(_energy(sg, r) * 1e6).astype(np.int64)) % (self.max_range_uj + 1)
                for _, sg in self._files
            ],
            [sg for _, sg in self._files],
        )

    def sync(self, t: float) -> None:
        for (path, _), uj in zip(self._files, self._table.row(t), strict=True):
            _write(path, f"{int(uj)}\n")


def _write(path: Path, text: str) -> None:
    # written in place: readers open the file anew each time, as with sysfs
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def random_phase(rng: np.random.Generator, period_s: float, drift: float = 50e-6) -> Refresh:
    """Refreshes at a random phase, every ``period_s`` within ``drift`` (the sensor's clock is not the
    sampler's: two crystal clocks differ by tens of ppm, so the refresh instants slide slowly past
    the sampler's ticks)."""
    return Refresh(period_s * (1.0 + float(rng.uniform(-drift, drift))), float(rng.uniform(0.0, period_s)))


def settings_response(device: FakeGpu | FakeGcd, idle_W: float) -> Callable[[float], float]:
    """How the stand-in device's power follows its settings, as a map from the power the work would draw
    at full clocks and no cap to what the device draws (W). The power above idle scales with the SM
    clock over its maximum (a locked clock), and the total is held at the power limit; a device held
    at its limit runs its clock down by the same share, and its temperature follows the power
    (30 °C plus 0.08 °C per W). The clock and temperature go into the stand-in, where the device-state
    reads find them."""

    def respond(level: float) -> float:
        if isinstance(device, FakeGpu):
            top, locked = device.sm_clock_max_MHz, device.locked_sm_MHz
            clock = min(locked[1], top) if locked else top
            cap = device.power_limit_mW / 1000.0
        else:
            top = device.gfx_clk_limits_MHz[1]
            clock = min(device.gfx_clk_range_MHz[1], top)
            cap = device.power_cap_uW / 1e6
        busy = max(level - idle_W, 0.0) * clock / top
        drawn = min(idle_W + busy, max(cap, idle_W))
        throttle = (drawn - idle_W) / busy if busy > 0 else 1.0
        shown = round(clock * min(throttle, 1.0)) if busy > 0 else clock
        if isinstance(device, FakeGpu):
            device.sm_clock_MHz = shown
        else:
            device.gfx_clk_MHz = shown
        device.temperature_C = int(30 + 0.08 * drawn)
        return drawn

    return respond
