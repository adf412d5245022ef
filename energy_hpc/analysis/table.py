"""Per-case energy tables over one or many run files (a study: many files, any folder depth).

Each file is reduced channel by channel (:mod:`energy_hpc.analysis.reduce`) into per-(case, stage)
sums; sums from several files with the same grouping key merge (repeats, or ``--by`` groups). Files of
different data kinds (measured, ESTIMATE, SYNTHETIC, EMULATED <part>) never merge.

Columns (JSON keys; all energies in J, powers in W):

- ``energy_J``: the sum over the rank-level device channels (GPU, MI250X package once, or the CPU-time
  estimate) over every measured window; by counter where usable, else by power integral
  (``method``). ``energy_uncertainty_J`` adds the window uncertainties in quadrature.
- ``counter_vs_integral_pct``: how far the power integral is from the counter over the windows where
  both exist (positive: the integral is higher).
- ``idle_power_W``: idle power per device (from each channel's idle window); ``net_energy_J``: gross
  minus idle power x window time, channel by channel.
- ``node_energy_J`` (where node-level channels exist): whole-node energy over the node windows;
  ``node_devices_energy_J``: device channels over the same spans; ``node_rest_energy_J``: the rest
  (CPU, memory, network, ...); ``node_cpu_energy_J``, ``node_memory_energy_J`` where measured.
- A run with no rank-level channel (RAPL only) falls back to node-level CPU+memory (``energy_scope``).
- ``module_energy_J`` (± ``module_energy_uncertainty_J``, per unit ``module_energy_per_unit_J``;
  ``module_includes_cpu_memory`` true): GH200 modules that NVML reads only at module scope (GPU + Grace
  CPU + memory). Never added to ``energy_J``, which is GPU-only, and said in a flag; a row whose ranks
  have no GPU-scope channel at all takes the module energy as ``energy_J`` with ``energy_scope``
  ``module (GH200: GPU + Grace CPU + memory)`` and a flag saying so.
- Per unit, three uncertainties, each named for what it is: ``energy_per_unit_meas_unc_J`` (measurement,
  1 sigma; ``energy_per_unit_uncertainty_J`` is its kept name), ``energy_per_unit_sem_J`` (standard
  error of the mean from the spread between the ``n_iterations`` iterations, repeats pooled; NaN below
  two) and ``energy_per_unit_unc_J`` (both in quadrature) (:func:`iteration_spread`).

Files that hold the same measurements (one run in a run file and in a merge of its spills, or merged
twice) are counted once (:func:`unique_runs`).

Cells, JSON values and the LaTeX and Markdown tables are written by :mod:`energy_hpc.analysis.formatting`,
shared with :mod:`energy_hpc.analysis.scaling`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from energy_hpc.analysis import devstate
from energy_hpc.analysis.attribution import DEVICE_ROLES, Role, package_shares, sharer_ranks
from energy_hpc.analysis.formatting import (
    UNCERTAINTY_LEGEND,
    compact_legend,
    count_cell,
    csv_cell,
    data_banner,
    format_number,
    format_uncertainty,
    is_emulated,
    jsonable,
    latex_table,
    markdown_table,
    value_pm,
)
from energy_hpc.analysis.reduce import GAP_INTERVALS, GAP_MIN_S, ChannelResult, RunReduction, reduce_run
from energy_hpc.analysis.runfile import trace_heads
from energy_hpc.store import sensor_words
from energy_hpc.telemetry.base import Method

log = logging.getLogger(__name__)

FORMATS = ("markdown", "csv", "json", "latex")
# weakest first: a row whose windows were taken several ways names the strongest first
_METHOD_ORDER = (Method.SYNTHETIC, Method.ESTIMATE, Method.INTEGRAL, Method.COUNTER)

# The CPU-time estimate's own assumption: watts per core is a round figure for a busy server core, not a
# property of the CPU that ran (docs/analysis.md). Taken as uncertain by half of itself (1 sigma), a
# systematic: one figure scales every window of the estimate, so it adds linearly over windows and
# channels and does not average down; it is added in quadrature to the estimate's measurement terms.
ESTIMATE_REL_UNC = 0.5

MODULE_SCOPE = "module (GH200: GPU + Grace CPU + memory)"

# the case settings that change the device (telemetry.control): the compact table then shows its state
SETTING_KEYS = ("power_cap_W", "gpu_clock_MHz", "memory_clock_MHz")

# (file, iteration): one iteration of one file; repeats in other files are other iterations. Within a file
# the iteration is offset by case << TRIAL_SHIFT (:func:`accumulate`), so trials of the same parameters in one
# file ([measure] trials) stay apart when their rows merge
IterationKey = tuple[str, int]
TRIAL_SHIFT = 20  # above the most iterations a case may have (1,000,000)


@dataclass
class IterationCell:
    """One iteration of one file, for the spread between iterations (:func:`iteration_spread`): the
    energy of all the case's ranks or devices, as in the row's total, and their units."""

    energy_J: float = 0.0
    units: float = 0.0
    windows_with_energy: int = 0
    windows_without_data: int = 0

    def add(self, other: IterationCell) -> None:
        self.energy_J += other.energy_J
        self.units += other.units
        self.windows_with_energy += other.windows_with_energy
        self.windows_without_data += other.windows_without_data


@dataclass
class ScopeSums:
    """What the windows of one row add up to for one scope (the devices, the GH200 modules, one kind of
    node-level channel, or node CPU and memory together). The window counts, counter figures, peak
    and recording ranks are kept for the devices and the modules only."""

    recorded: bool = False  # some channel of this scope covers a window of the row (with data or not)
    energy_J: float = 0.0
    random_var_J2: float = 0.0  # the windows' independent uncertainties, in quadrature
    systematic_J: float = 0.0  # their one-sided parts, added linearly (and the estimate's assumption)
    idle_J: float = 0.0  # idle power x window time, channel by channel
    idle_var_J2: float = 0.0
    idle_systematic_J: float = 0.0  # the estimate's assumption in idle_J
    idle_W: float = 0.0  # the channels' idle powers added (once per channel and row)
    units: float = 0.0  # node-level scopes: the units of the node windows of the nodes they measure
    methods: set[Method] = field(default_factory=set)
    windows_without_data: int = 0
    idle_missing_windows: int = 0  # windows of a channel without an idle window (net counts them gross)
    short_windows: int = 0
    gap_windows: int = 0  # windows holding a sampling gap (reduce.gap_threshold), on some channel
    longest_gap_s: float = 0.0
    # windows whose counter was distrusted, by reason (node-level: "<role>:<reason>")
    counter_faults: Counter[str] = field(default_factory=Counter)
    peak_W: float = -math.inf
    # over the windows where the counter and the power integral both exist and the counter is trusted
    counter_J: float = 0.0
    integral_J: float = 0.0
    recorded_by: set[tuple[str, int]] = field(default_factory=set)  # (file, rank)
    iterations: dict[IterationKey, IterationCell] = field(default_factory=dict)
    # pairs of iterations one window's energy spans (a merged span of a device shared by several ranks, a
    # node window over drifting ranks): they count as one sample of the spread
    iteration_links: list[tuple[IterationKey, IterationKey]] = field(default_factory=list)
    # (energy J, units) of each trial: one case of one file, its iterations with data (trial_spread)
    trials: list[tuple[float, float]] = field(default_factory=list)

    def cell(self, file_id: str, iteration: int) -> IterationCell:
        """The cell of one iteration, made empty the first time."""
        cell = self.iterations.get((file_id, iteration))
        if cell is None:
            cell = self.iterations[(file_id, iteration)] = IterationCell()
        return cell

    def link_spanned(self, file_id: str, first: int, spanned: Iterable[int]) -> None:
        for iteration in spanned:
            if iteration != first:
                self.iteration_links.append(((file_id, first), (file_id, iteration)))

    def merge(self, other: ScopeSums) -> None:
        self.recorded |= other.recorded
        self.energy_J += other.energy_J
        self.random_var_J2 += other.random_var_J2
        self.systematic_J += other.systematic_J
        self.idle_J += other.idle_J
        self.idle_var_J2 += other.idle_var_J2
        self.idle_systematic_J += other.idle_systematic_J
        self.idle_W += other.idle_W
        self.units += other.units
        self.methods |= other.methods
        self.windows_without_data += other.windows_without_data
        self.idle_missing_windows += other.idle_missing_windows
        self.short_windows += other.short_windows
        self.gap_windows += other.gap_windows
        self.longest_gap_s = max(self.longest_gap_s, other.longest_gap_s)
        self.counter_faults.update(other.counter_faults)
        self.peak_W = max(self.peak_W, other.peak_W)
        self.counter_J += other.counter_J
        self.integral_J += other.integral_J
        self.recorded_by |= other.recorded_by
        self.iterations.update(other.iterations)  # keys carry the file: repeats pool their iterations
        self.iteration_links += other.iteration_links
        self.trials += other.trials

    def close_trial(self, file_id: str, case: int) -> None:
        """Once one case of one file is summed: its iterations keyed apart from the file's other cases,
        and its energy and units as one trial."""
        offset = case << TRIAL_SHIFT

        def moved(key: IterationKey) -> IterationKey:
            return (key[0], key[1] + offset) if key[0] == file_id else key

        self.iterations = {moved(k): c for k, c in self.iterations.items()}
        self.iteration_links = [(moved(a), moved(b)) for a, b in self.iteration_links]
        usable = [
            c
            for c in self.iterations.values()
            if c.units > 0 and c.windows_with_energy and not c.windows_without_data
        ]
        if usable:
            self.trials.append((sum(c.energy_J for c in usable), sum(c.units for c in usable)))


@dataclass
class Scopes:
    """The sums of one row, scope by scope."""

    device: ScopeSums = field(default_factory=ScopeSums)  # GPUs, MI250X packages once, CPU-time estimate
    module: ScopeSums = field(default_factory=ScopeSums)  # GH200 modules read at NVML module scope
    node: ScopeSums = field(default_factory=ScopeSums)
    node_cpu: ScopeSums = field(default_factory=ScopeSums)
    node_memory: ScopeSums = field(default_factory=ScopeSums)
    node_accel: ScopeSums = field(default_factory=ScopeSums)
    node_other: ScopeSums = field(default_factory=ScopeSums)
    # node-level CPU and memory together: the row's figure where no rank-level channel exists (RAPL only)
    host_cpu_memory: ScopeSums = field(default_factory=ScopeSums)

    def node_level(self) -> tuple[ScopeSums, ...]:
        return (self.node, self.node_cpu, self.node_memory, self.node_accel, self.node_other)

    def all(self) -> tuple[ScopeSums, ...]:
        return (self.device, self.module, *self.node_level(), self.host_cpu_memory)

    def of_node_role(self, role: Role) -> ScopeSums:
        """The scope a node-level channel of ``role`` adds to (its own; node CPU and memory also add to
        :attr:`host_cpu_memory`, see :func:`_node_level_targets`)."""
        return {
            Role.NODE: self.node,
            Role.NODE_CPU: self.node_cpu,
            Role.NODE_MEMORY: self.node_memory,
            Role.NODE_ACCEL: self.node_accel,
        }.get(role, self.node_other)

    def merge(self, other: Scopes) -> None:
        for mine, theirs in zip(self.all(), other.all(), strict=True):
            mine.merge(theirs)


class RowBasis(Enum):
    """What a row's ``energy_J`` is taken from, in order of preference; the value is its
    ``energy_scope``. A GH200 module (GPU + Grace CPU + memory) only where no rank has a GPU-scope
    channel; node-level CPU and memory, then the whole node, only where no rank-level channel exists."""

    DEVICES = "devices"
    MODULE = MODULE_SCOPE
    HOST_CPU_MEMORY = "cpu+memory (node-level)"
    NODE = "node"

    @property
    def per_device(self) -> bool:
        """Whether the figure is a sum over rank-level devices (idle and mean power given per device)."""
        return self in (RowBasis.DEVICES, RowBasis.MODULE)

    @staticmethod
    def of(scopes: Scopes) -> RowBasis:
        for basis in RowBasis:
            if basis.sums(scopes).recorded:
                return basis
        return RowBasis.DEVICES

    def sums(self, scopes: Scopes) -> ScopeSums:
        return {
            RowBasis.DEVICES: scopes.device,
            RowBasis.MODULE: scopes.module,
            RowBasis.HOST_CPU_MEMORY: scopes.host_cpu_memory,
            RowBasis.NODE: scopes.node,
        }[self]


@dataclass
class RowSums:
    """Everything one table row is computed from: one (case, stage) of one file, or several merged
    (repeats, ``--by`` groups)."""

    params: dict[str, Any]
    unit: str
    n_nodes: int
    stage: str
    data: str  # measured, ESTIMATE, SYNTHETIC or EMULATED <parts> (synthetic data from emulated sensors)
    rank_counts: set[int] = field(default_factory=set)  # the rank counts of the runs merged
    rank_runs: int = 0  # ranks with a counted window, added over the runs merged
    wall_seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    n_windows: int = 0
    units: float = 0.0
    iter_units: float = 0.0  # units of the whole iterations of the case (stage rows without units)
    aux_units: float = 0.0  # the task's second count (prompt tokens, audio seconds), where it has one
    aux_unit: str = ""
    rank_seconds: float = 0.0
    interrupted: int = 0
    failed: int = 0
    attribution: set[str] = field(default_factory=set)
    partial: list[str] = field(default_factory=list)
    same_run: list[str] = field(default_factory=list)  # duplicates of this file's run that were left out
    synthetic: bool = False
    estimate: bool = False
    node_devices_J: float = 0.0  # device energy over the node windows of nodes with a whole-node channel
    scopes: Scopes = field(default_factory=Scopes)
    # the device's state over the measured windows (devstate.COLUMNS): the reads' sum and count, per column
    state_sum: dict[str, float] = field(default_factory=dict)
    state_n: dict[str, int] = field(default_factory=dict)
    # GPU settings Slurm applied to the run (the run file's scheduler_settings: gpu_freq, gpu_power_W)
    scheduler: dict[str, Any] = field(default_factory=dict)

    def merge(self, other: RowSums) -> None:
        self.rank_counts |= other.rank_counts
        self.files += other.files
        self.aux_unit = self.aux_unit or other.aux_unit
        self.rank_runs += other.rank_runs
        self.wall_seconds += other.wall_seconds
        self.n_windows += other.n_windows
        self.units += other.units
        self.iter_units += other.iter_units
        self.aux_units += other.aux_units
        self.rank_seconds += other.rank_seconds
        self.interrupted += other.interrupted
        self.failed += other.failed
        self.attribution |= other.attribution
        self.partial += other.partial
        self.same_run += other.same_run
        self.synthetic |= other.synthetic
        self.estimate |= other.estimate
        self.node_devices_J += other.node_devices_J
        self.scopes.merge(other.scopes)
        for k, v in other.state_sum.items():
            self.state_sum[k] = self.state_sum.get(k, 0.0) + v
            self.state_n[k] = self.state_n.get(k, 0) + other.state_n[k]
        # a --by group over runs with other scheduler settings keeps only the settings they share
        self.scheduler = {k: v for k, v in self.scheduler.items() if other.scheduler.get(k) == v}


def is_estimate(meta: dict[str, Any]) -> bool:
    return str(meta.get("method", "")) == Method.ESTIMATE or str(meta.get("backend", "")) == "estimate"


class _Spans:
    """The counted windows of one file by (node, case, stage), to find the iterations a span covers."""

    def __init__(self, windows: dict[str, np.ndarray], counted: np.ndarray) -> None:
        groups: dict[tuple[int, int, str], list[int]] = defaultdict(list)
        for i in np.flatnonzero(counted):
            groups[(int(windows["node"][i]), int(windows["case"][i]), str(windows["stage"][i]))].append(
                int(i)
            )
        # (node, case, stage) -> (starts, ends, iterations) in start order, and the longest window
        self.by_key: dict[tuple[int, int, str], tuple[np.ndarray, np.ndarray, np.ndarray, float]] = {}
        for key, members in groups.items():
            idx = np.array(sorted(members, key=lambda i: float(windows["start"][i])))
            starts, ends = windows["start"][idx].astype(float), windows["end"][idx].astype(float)
            self.by_key[key] = (
                starts,
                ends,
                windows["iteration"][idx].astype(int),
                float((ends - starts).max()),
            )

    def iterations(self, node: int, case: int, stage: str, start: float, end: float) -> set[int]:
        found = self.by_key.get((node, case, stage))
        if found is None:
            return set()
        starts, ends, iterations, longest = found
        lo, hi = np.searchsorted(starts, start - longest, "left"), np.searchsorted(starts, end, "left")
        overlapping = ends[lo:hi] > start
        return {int(x) for x in iterations[lo:hi][overlapping]}


def iteration_spread(
    cells: dict[IterationKey, IterationCell], links: Sequence[tuple[IterationKey, IterationKey]] = ()
) -> tuple[float, int]:
    """Standard error of energy per unit from the spread between iterations, and how many iterations.

    Each iteration ``i`` (of every file pooled) gives an energy ``E_i`` (all the case's ranks/devices,
    as the total) and units ``u_i``; the row's figure is the ratio ``R = sum E / sum u``, whose
    standard error is ``sqrt(sum (E_i - R u_i)^2 / (n (n - 1))) / mean(u)`` (the ratio estimator's;
    with equal units per iteration it is the plain ``SD(E_i/u_i) / sqrt(n)``). Iterations one window's
    energy spans (``links``) are one sample. Iterations with a window without data, or without units,
    are left out. Fewer than two iterations: NaN (undefined)."""
    if links:
        parent = {key: key for key in cells}

        def root(key: IterationKey) -> IterationKey:
            while parent[key] != key:
                parent[key] = parent[parent[key]]
                key = parent[key]
            return key

        for first, other in links:
            if first in parent and other in parent:
                parent[root(other)] = root(first)
        merged: dict[IterationKey, IterationCell] = {}
        for key, cell in cells.items():
            merged.setdefault(root(key), IterationCell()).add(cell)
        cells = merged
    points = np.array(
        [
            (c.energy_J, c.units)
            for c in cells.values()
            if c.units > 0 and c.windows_with_energy > 0 and not c.windows_without_data
        ],
        float,
    )
    n = len(points)
    if n < 2:
        return math.nan, n
    energy, units = points[:, 0], points[:, 1]
    ratio = energy.sum() / units.sum()
    return float(math.sqrt(((energy - ratio * units) ** 2).sum() / (n * (n - 1))) / units.mean()), n


def trial_spread(trials: Sequence[tuple[float, float]], pooled_per_unit: float) -> tuple[float, int]:
    """Trial-to-trial spread of energy per unit, in % of the pooled figure: the sample standard deviation
    (n - 1) of each trial's energy per unit (its energy over its units), over ``pooled_per_unit``; and how
    many trials. Fewer than two: NaN."""
    per_unit = [e / u for e, u in trials if u > 0]
    if len(per_unit) < 2 or not pooled_per_unit > 0:
        return math.nan, len(per_unit)
    return 100.0 * float(np.std(per_unit, ddof=1)) / pooled_per_unit, len(per_unit)


def _method_label(methods: set[Method]) -> str:
    if not methods:
        return "none"
    for weakest in (Method.SYNTHETIC, Method.ESTIMATE):
        if weakest in methods:
            return weakest.value
    return "+".join(m.value for m in sorted(methods, key=_METHOD_ORDER.index, reverse=True))


def _new_rows(red: RunReduction, counted: np.ndarray) -> dict[tuple[int, str], RowSums]:
    """One :class:`RowSums` per (case, stage) of one file, with its windows counted, before any channel."""
    windows, file_id = red.windows, str(red.path)
    measured = windows["phase"] == "measure"
    rows: dict[tuple[int, str], RowSums] = {}
    for case in range(len(red.params)):
        in_case = windows["case"] == case
        stages = sorted(set(windows["stage"][measured & in_case]) | {""})
        whole = counted & in_case & (windows["stage"] == "")
        for stage in stages:
            row = RowSums(
                params=red.params[case],
                unit=red.units_name[case],
                n_nodes=red.n_nodes,
                stage=stage,
                data=red.label,
                files=[str(red.path)],
                synthetic=red.synthetic,
                estimate=red.estimate,
            )
            in_stage = in_case & (windows["stage"] == stage)
            sel = counted & in_stage
            ranks = {int(r) for r in windows["rank"][sel]}
            row.rank_counts = {len(ranks)} if ranks else set()
            row.rank_runs = len(ranks)
            row.n_windows = int(sel.sum())
            row.units = float(windows["units"][sel].sum())
            row.iter_units = float(windows["units"][whole].sum())
            if "aux_units" in windows:
                row.aux_units = float(windows["aux_units"][sel].sum())
                row.aux_unit = next((str(u) for u in windows["aux_unit"][sel] if str(u)), "")
            row.rank_seconds = float((windows["end"][sel] - windows["start"][sel]).sum())
            row.wall_seconds = row.rank_seconds / len(ranks) if ranks else 0.0
            row.interrupted = int((measured & in_stage & (windows["status"] == "interrupted")).sum())
            row.failed = int((measured & in_stage & (windows["status"] == "failed")).sum())
            if red.missing:
                row.partial.append(f"{red.path.name}: " + "; ".join(red.missing))
            row.same_run = list(same_run_notes(red))
            # units per iteration, summed over the case's ranks as the row's units are
            per_unit_of = sel if row.units > 0 or not stage else whole
            for i in np.flatnonzero(per_unit_of):
                row.scopes.device.cell(file_id, int(windows["iteration"][i])).units += float(
                    windows["units"][i]
                )
            rows[(case, stage)] = row
    return rows


def _add_rank_level(
    rows: dict[tuple[int, str], RowSums],
    red: RunReduction,
    channel: ChannelResult,
    spans: _Spans,
    node_devices_J: dict[int, float],
) -> None:
    """A device (GPU, MI250X package once, a device recorded by several ranks once, CPU-time estimate)
    or GH200 module channel, over the windows it covers; a device's energy over the node windows goes
    into ``node_devices_J`` (node window -> J)."""
    windows, file_id = red.windows, str(red.path)
    meta, role = channel.meta, Role(channel.role)
    is_module = role == Role.MODULE
    shares: dict[int, float] = {}
    label = ""  # how a package is split (package_shares), said in the row's attribution
    if role == Role.PACKAGE:
        shares, label = package_shares(
            meta, red.bus_to_rank(str(meta.get("host", ""))), int(meta.get("rank", 0))
        )
    peak_share = max(shares.values()) if shares else 1.0
    estimate = is_estimate(meta)
    sharers = {(file_id, rank) for rank in sharer_ranks(meta)}
    own = channel.own
    random_J = own.random_J()
    idle_seconds: dict[tuple[int, str], float] = defaultdict(float)
    for j, wi in enumerate(channel.own_idx):
        key = (int(windows["case"][wi]), str(windows["stage"][wi]))
        row = rows.get(key)
        if row is None:
            continue
        # a module (GH200 at NVML module scope: GPU + Grace CPU + memory) is summed apart from the
        # GPU-only devices; _row decides its use
        sums = row.scopes.module if is_module else row.scopes.device
        sums.recorded = True
        sums.recorded_by |= {(file_id, int(windows["rank"][wi]))} | sharers
        energy_J = own.energy_J[j]
        iteration = int(windows["iteration"][wi])
        cell = sums.cell(file_id, iteration)
        if windows["phase"][wi] != "measure":  # a span over several ranks' windows (shared device)
            node = int(windows["node"][wi])
            start, end = float(windows["start"][wi]), float(windows["end"][wi])
            sums.link_spanned(file_id, iteration, spans.iterations(node, key[0], key[1], start, end))
        if not np.isfinite(energy_J):
            sums.windows_without_data += 1
            cell.windows_without_data += 1
            continue
        seconds = float(windows["end"][wi] - windows["start"][wi])
        if j < len(channel.own_gap_s) and channel.own_gap_s[j] > 0:
            sums.gap_windows += 1
            sums.longest_gap_s = max(sums.longest_gap_s, float(channel.own_gap_s[j]))
        sums.energy_J += float(energy_J)
        sums.random_var_J2 += float(random_J[j]) ** 2
        sums.systematic_J += float(own.systematic_J[j])
        cell.energy_J += float(energy_J)
        cell.windows_with_energy += 1
        sums.methods.add(Method(str(own.method[j])))
        if estimate:  # the watts-per-core assumption: one systematic for every window
            sums.systematic_J += ESTIMATE_REL_UNC * float(energy_J)
        if math.isfinite(channel.idle_W):
            sums.idle_J += channel.idle_W * seconds
            if estimate:
                sums.idle_systematic_J += ESTIMATE_REL_UNC * channel.idle_W * seconds
            idle_seconds[key] += seconds
        else:
            sums.idle_missing_windows += 1
        counter_fault = own.counter_fault[j]
        if np.isfinite(own.counter_J[j]) and np.isfinite(own.integral_J[j]) and not counter_fault:
            sums.counter_J += float(own.counter_J[j])
            sums.integral_J += float(own.integral_J[j])
        if counter_fault:
            sums.counter_faults[str(counter_fault)] += 1
        sums.short_windows += int(own.short[j])
        if np.isfinite(own.peak_W[j]):
            sums.peak_W = max(sums.peak_W, float(own.peak_W[j]) * peak_share)
        if role == Role.PACKAGE:
            row.attribution.add(label)
    for key, seconds in idle_seconds.items():
        sums = rows[key].scopes.module if is_module else rows[key].scopes.device
        sums.idle_var_J2 += (channel.idle_W_unc * seconds) ** 2 if math.isfinite(channel.idle_W_unc) else 0.0
        sums.idle_W += channel.idle_W
    if not is_module:
        for j, k in enumerate(channel.node_idx):
            if np.isfinite(channel.node.energy_J[j]):
                node_devices_J[int(k)] += float(channel.node.energy_J[j])


def _node_level_targets(row: RowSums, role: Role) -> list[ScopeSums]:
    """The scopes a node-level channel adds to: its own, and node CPU + memory for a CPU or memory one."""
    own = row.scopes.of_node_role(role)
    return [own, row.scopes.host_cpu_memory] if role in (Role.NODE_CPU, Role.NODE_MEMORY) else [own]


def _add_node_level(
    rows: dict[tuple[int, str], RowSums], red: RunReduction, channel: ChannelResult, spans: _Spans
) -> None:
    """A node-level channel (whole node, CPU, memory, accelerators, other) over its node's windows."""
    node_windows, file_id = red.node_windows, str(red.path)
    role = Role(channel.role)
    measured = channel.node
    random_J = measured.random_J()
    idle_seconds: dict[tuple[int, str], float] = defaultdict(float)
    for j, k in enumerate(channel.node_idx):
        key = (int(node_windows["case"][k]), str(node_windows["stage"][k]))
        row = rows.get(key)
        if row is None:
            continue
        energy_J = measured.energy_J[j]
        iteration = int(node_windows["iteration"][k])
        start, end = float(node_windows["start"][k]), float(node_windows["end"][k])
        spanned = spans.iterations(int(node_windows["node"][k]), key[0], key[1], start, end)
        targets = _node_level_targets(row, role)
        for sums in targets:
            sums.recorded = True
            cell = sums.cell(file_id, iteration)
            sums.link_spanned(file_id, iteration, spanned)
            if not np.isfinite(energy_J):
                sums.windows_without_data += 1
                cell.windows_without_data += 1
                continue
            cell.energy_J += float(energy_J)
            cell.windows_with_energy += 1
            if j < len(channel.node_gap_s) and channel.node_gap_s[j] > 0:
                sums.gap_windows += 1
                sums.longest_gap_s = max(sums.longest_gap_s, float(channel.node_gap_s[j]))
            sums.energy_J += float(energy_J)
            sums.random_var_J2 += float(random_J[j]) ** 2
            sums.systematic_J += float(measured.systematic_J[j])
            sums.methods.add(Method(str(measured.method[j])))
            seconds = float(node_windows["end"][k] - node_windows["start"][k])
            if math.isfinite(channel.idle_W):
                sums.idle_J += channel.idle_W * seconds
                if sums is targets[0]:
                    idle_seconds[key] += seconds
        if np.isfinite(energy_J) and measured.counter_fault[j]:
            targets[0].counter_faults[f"{role.value}:{measured.counter_fault[j]}"] += 1
    for key, seconds in idle_seconds.items():
        for sums in _node_level_targets(rows[key], role):
            if math.isfinite(channel.idle_W_unc):
                sums.idle_var_J2 += (channel.idle_W_unc * seconds) ** 2
            sums.idle_W += channel.idle_W


def accumulate(red: RunReduction) -> dict[tuple[int, str], RowSums]:
    """Per (case, stage) sums for one reduced run file."""
    windows, node_windows = red.windows, red.node_windows
    file_id = str(red.path)
    counted = (
        (windows["phase"] == "measure") & (windows["status"] == "ok") & (windows["end"] > windows["start"])
    )
    spans = _Spans(windows, counted)
    rows = _new_rows(red, counted)
    # the nodes with a whole-node channel, and those with a node-level CPU or memory channel
    nodes_measured: set[int] = set()
    nodes_cpu_memory: set[int] = set()
    node_devices_J: dict[int, float] = defaultdict(float)  # node window -> device J over it
    for channel in red.channels:
        role = Role(channel.role)
        if role in (*DEVICE_ROLES, Role.MODULE):
            _add_rank_level(rows, red, channel, spans, node_devices_J)
            continue
        node = int(channel.meta.get("node", 0))
        if role == Role.NODE:
            nodes_measured.add(node)
        if role in (Role.NODE_CPU, Role.NODE_MEMORY):
            nodes_cpu_memory.add(node)
        _add_node_level(rows, red, channel, spans)
    # units seen by node-level channels, and the devices over the same spans, node by node
    for k in range(len(node_windows.get("node", []))):
        key, node = (
            (int(node_windows["case"][k]), str(node_windows["stage"][k])),
            int(node_windows["node"][k]),
        )
        row = rows.get(key)
        if row is None:
            continue
        iteration = int(node_windows["iteration"][k])
        units = float(node_windows["units"][k])
        if node in nodes_measured:
            row.scopes.node.units += units
            row.node_devices_J += node_devices_J.get(k, 0.0)
            row.scopes.node.cell(file_id, iteration).units += units
        if node in nodes_cpu_memory:
            row.scopes.host_cpu_memory.units += units
            row.scopes.host_cpu_memory.cell(file_id, iteration).units += units
    _add_device_state(rows, red, counted)
    scheduler = scheduler_settings(red)
    for (case, _), row in rows.items():
        row.scheduler = dict(scheduler)
        row.attribution.update(red.notes)  # channels left out (attribution.channel_roles), and why
        for scope in row.scopes.all():
            scope.close_trial(file_id, case)
    return rows


def _add_device_state(rows: dict[tuple[int, str], RowSums], red: RunReduction, counted: np.ndarray) -> None:
    """The device's state (devstate.COLUMNS) read at the edges of each counted whole-iteration window, into
    every row of its case (a stage row shows its case's state: the state is read per whole window)."""
    windows = red.windows
    whole = counted & (windows["stage"] == "")
    keys = {
        (int(r), int(c), int(i))
        for r, c, i in zip(
            windows["rank"][whole], windows["case"][whole], windows["iteration"][whole], strict=True
        )
    }
    by_case: dict[int, list[RowSums]] = defaultdict(list)
    for (case, _), row in rows.items():
        by_case[case].append(row)
    for key, values in sorted(devstate.window_state(red.path).items()):
        if key not in keys:
            continue
        for row in by_case.get(key[1], []):
            for column, reads in values.items():
                row.state_sum[column] = row.state_sum.get(column, 0.0) + float(sum(reads))
                row.state_n[column] = row.state_n.get(column, 0) + len(reads)


def scheduler_settings(red: RunReduction) -> dict[str, Any]:
    """The GPU settings Slurm applied to the run (root attribute ``scheduler_settings``, a JSON object such
    as ``{"gpu_freq": "1200", "gpu_power_W": 300}``); {} when absent, empty or unreadable (said once)."""
    text = str(red.attrs.get("scheduler_settings", "") or "").strip()
    if not text:
        return {}
    try:
        settings = json.loads(text)
    except ValueError:
        settings = None
    if not isinstance(settings, dict):
        log.warning(
            "%s: scheduler_settings %r is not a JSON object: the run's rows show no Slurm GPU settings",
            red.path.name,
            text[:80],
        )
        return {}
    return settings


def _scheduler_columns(settings: dict[str, Any]) -> dict[str, Any]:
    """``slurm_gpu_freq`` (as given to ``--gpu-freq``: MHz or a level such as ``high``; "" when not set)
    and ``slurm_gpu_power_W`` (``--gpu-power``; NaN when not set)."""
    freq = settings.get("gpu_freq")
    power = settings.get("gpu_power_W")
    try:
        power_W = float(power) if power is not None and power != "" else math.nan
    except (TypeError, ValueError):
        power_W = math.nan
    return {"slurm_gpu_freq": "" if freq is None else str(freq), "slurm_gpu_power_W": power_W}


def _state_columns(row: RowSums) -> dict[str, float]:
    """devstate.COLUMNS as the means of their reads over the row's measured windows; NaN without any."""
    return {
        c: row.state_sum[c] / row.state_n[c] if row.state_n.get(c) else math.nan for c in devstate.COLUMNS
    }


def _nan_div(a: float, b: float) -> float:
    return a / b if b and b > 0 and math.isfinite(a) else math.nan


def _row(key_fields: dict[str, Any], row: RowSums) -> dict[str, Any]:
    scopes = row.scopes
    basis = RowBasis.of(scopes)
    sums = basis.sums(scopes)
    recorded = sums.recorded
    n_ranks = max(row.rank_counts) if row.rank_counts else 0
    units = row.units if row.units > 0 or not row.stage else row.iter_units
    per_unit_of = "stage units" if row.units > 0 else "iteration units"
    if basis == RowBasis.HOST_CPU_MEMORY:
        units = scopes.host_cpu_memory.units
    elif basis == RowBasis.NODE:
        units = scopes.node.units
    energy = sums.energy_J if recorded else math.nan
    systematic = sums.systematic_J  # the estimate's watts-per-core assumption (0 for measurements)
    unc = math.sqrt(sums.random_var_J2 + systematic**2) if recorded else math.nan
    net = energy - sums.idle_J
    net_unc = (
        math.sqrt(sums.random_var_J2 + sums.idle_var_J2 + (systematic - sums.idle_systematic_J) ** 2)
        if recorded
        else math.nan
    )
    meas_pu = _nan_div(unc, units)
    sem_pu, n_iter = iteration_spread(sums.iterations, sums.iteration_links) if recorded else (math.nan, 0)
    total_pu = math.hypot(meas_pu, sem_pu) if math.isfinite(sem_pu) else math.nan
    seconds = row.wall_seconds if row.rank_runs else math.nan
    n_devices = max(row.rank_runs, 1)
    if not recorded:
        idle_W = math.nan
    else:
        idle_W = sums.idle_W / n_devices if basis.per_device else sums.idle_W
    # the window counts of what the row's energy is (a module's when the row falls back to it); the
    # devices' counter faults come with the node-level channels'
    counts = scopes.module if basis == RowBasis.MODULE else scopes.device
    faults = Counter(counts.counter_faults)
    if basis != RowBasis.MODULE:
        for node_sums in scopes.node_level():
            faults.update(node_sums.counter_faults)
    short, no_data, idle_missing = (
        counts.short_windows,
        counts.windows_without_data,
        counts.idle_missing_windows,
    )
    peak_W = counts.peak_W
    both_counter, both_integral = counts.counter_J, counts.integral_J
    method = _method_label(sums.methods)
    flags = []
    if row.synthetic:
        flags.append(
            f"SYNTHETIC data from the {sensor_words(row.data)}: not a measurement"
            if is_emulated(row.data)
            else "SYNTHETIC data: not a measurement"
        )
    if row.estimate or method == Method.ESTIMATE:
        flags.append(
            "ESTIMATE from CPU time: not a measurement"
            + (
                f"; its ± includes ±{ESTIMATE_REL_UNC:.0%} (1 sigma, systematic) for the watts-per-core figure"
                if systematic > 0
                else "; its ± is the CPU-time reading alone: the watts-per-core figure is not in it"
            )
        )
    for note in dict.fromkeys(row.same_run):
        flags.append(note)
    if recorded and n_iter < 2 and math.isfinite(energy):
        flags.append(
            f"{n_iter} iteration(s) with data: the spread between iterations is unknown "
            "(SEM undefined, no total ±); only the measurement uncertainty is given"
        )
    if row.partial:
        flags.append("partial run: " + " | ".join(dict.fromkeys(row.partial))[:400])
    if row.interrupted:
        flags.append(f"{row.interrupted} interrupted window(s) left out")
    if row.failed:
        flags.append(f"{row.failed} failed window(s) left out")
    if len(row.rank_counts) > 1:
        flags.append(f"groups runs with different rank counts: {sorted(row.rank_counts)}")
    if short:
        flags.append(f"{short} window(s) shorter than 3 sensor updates: edge effects dominate")
    gap_windows, longest_gap = sums.gap_windows, sums.longest_gap_s
    node_gaps = [ns for ns in scopes.node_level() if ns is not sums and ns.gap_windows]
    if gap_windows:
        flags.append(
            f"{gap_windows} window(s) with a sampling gap (no reading for over {GAP_INTERVALS:g} read "
            f"intervals and {GAP_MIN_S * 1000:g} ms; longest {longest_gap:.2g} s): energy interpolated "
            "across it"
        )
    if node_gaps:
        flags.append(
            f"node-level channels: {sum(ns.gap_windows for ns in node_gaps)} node window(s) with a sampling "
            f"gap (longest {max(ns.longest_gap_s for ns in node_gaps):.2g} s)"
        )
    if faults:
        flags.append(
            "energy counter distrusted, power integral used: "
            + ", ".join(f"{n} window(s) {f}" for f, n in sorted(faults.items()))
        )
    if no_data or sums.windows_without_data:
        flags.append(f"{no_data} window(s) had no samples on some channel (energy under-counted)")
    if idle_missing:
        flags.append("no idle window on some channel: net energy counts those windows as gross")
    flags += _module_flags(row, basis)
    for label in sorted(row.attribution):
        flags.append(f"attribution: {label}")
    if row.stage and row.units <= 0:
        flags.append("stage windows carry no units: per unit = per unit of the whole iteration")
    node = scopes.node
    has_node = node.recorded
    node_J = node.energy_J if has_node else math.nan
    node_units = node.units
    node_devices_J = row.node_devices_J if has_node else math.nan
    rest = node_J - node_devices_J if has_node else math.nan
    module = scopes.module
    has_module = module.recorded
    module_J = module.energy_J if has_module else math.nan
    module_unc = math.sqrt(module.random_var_J2 + module.systematic_J**2) if has_module else math.nan
    host_cpu_memory = scopes.host_cpu_memory
    return {
        "case": row.params,
        **key_fields,
        "stage": row.stage,
        "task": row.params.get("task"),
        "model": row.params.get("model"),
        "dtype": row.params.get("dtype"),
        "batch_size": row.params.get("batch_size"),
        "label": row.params.get("label", ""),
        "n_ranks": n_ranks,
        "n_nodes": row.n_nodes,
        "n_files": len(row.files),
        "iterations": row.n_windows,
        "units": units,
        "unit": row.unit,
        "seconds": seconds,
        "aux_units": row.aux_units,
        "aux_unit": row.aux_unit,
        "energy_per_aux_unit_J": _nan_div(energy, row.aux_units) if row.aux_unit else math.nan,
        "throughput_per_s": _nan_div(units, seconds),
        "energy_J": energy,
        "energy_uncertainty_J": unc,
        "energy_per_unit_J": _nan_div(energy, units),
        "energy_per_unit_uncertainty_J": meas_pu,  # kept name: the measurement uncertainty, as before
        "energy_per_unit_meas_unc_J": meas_pu,
        "energy_per_unit_sem_J": sem_pu,
        "energy_per_unit_unc_J": total_pu,
        "n_iterations": n_iter,
        "wh_per_1000_units": _nan_div(energy, units) * 1000.0 / 3600.0,
        "mean_power_W": _nan_div(energy, row.rank_seconds) if basis.per_device else _nan_div(energy, seconds),
        "idle_power_W": idle_W,
        "peak_power_W": peak_W if math.isfinite(peak_W) else math.nan,
        "net_energy_J": net,
        "net_energy_uncertainty_J": net_unc,
        "net_energy_per_unit_J": _nan_div(net, units),
        "net_energy_per_unit_uncertainty_J": _nan_div(net_unc, units),
        "counter_energy_J": both_counter if both_counter else math.nan,
        "integral_energy_J": both_integral if both_counter else math.nan,
        "counter_vs_integral_pct": 100.0 * (both_integral - both_counter) / both_counter
        if both_counter
        else math.nan,
        "node_energy_J": node_J,
        "node_energy_uncertainty_J": math.sqrt(node.random_var_J2 + node.systematic_J**2)
        if has_node
        else math.nan,
        "node_energy_per_unit_J": _nan_div(node_J, node_units) if has_node else math.nan,
        "node_devices_energy_J": node_devices_J,
        "node_rest_energy_J": rest,
        "node_rest_per_unit_J": _nan_div(rest, node_units) if has_node else math.nan,
        "node_cpu_energy_J": scopes.node_cpu.energy_J if scopes.node_cpu.recorded else math.nan,
        "node_memory_energy_J": scopes.node_memory.energy_J if scopes.node_memory.recorded else math.nan,
        "node_net_energy_per_unit_J": _nan_div(node_J - node.idle_J, node_units) if has_node else math.nan,
        "host_cpu_memory_energy_J": host_cpu_memory.energy_J
        if host_cpu_memory.recorded and basis != RowBasis.HOST_CPU_MEMORY
        else math.nan,
        # GH200 modules read at NVML module scope: GPU + Grace CPU + memory, never in a GPU-only energy_J
        "module_energy_J": module_J,
        "module_energy_uncertainty_J": module_unc,
        "module_energy_per_unit_J": _nan_div(module_J, units) if has_module else math.nan,
        "module_includes_cpu_memory": has_module,
        "method": method,
        "energy_scope": basis.value if any(s.recorded for s in scopes.all()) else "none",
        "data": row.data,
        "synthetic": row.synthetic,
        "estimate": row.estimate,
        "per_unit_of": per_unit_of if row.stage else "iteration units",
        "short_windows": short,
        "counter_fallback_windows": int(sum(faults.values())),
        "attribution": sorted(row.attribution),
        "flags": flags,
        "files": row.files,
        # added after the first columns so that readers by position keep working
        "rank_iterations": row.n_windows,  # the same count as "iterations": windows, one per rank and iteration
        "iterations_per_rank": _per_rank(row.n_windows, row.rank_runs),
        "seconds_per_unit": _nan_div(row.rank_seconds, units),
        "gap_windows": gap_windows,
        "longest_gap_s": longest_gap if gap_windows else math.nan,
        **_trial_columns(sums, _nan_div(energy, units)),
        # added after the trial columns: the device's state as read back, and the settings Slurm applied
        **_state_columns(row),
        **_scheduler_columns(row.scheduler),
    }


def _trial_columns(sums: ScopeSums, pooled_per_unit: float) -> dict[str, Any]:
    """``n_trials`` (one per case of each file pooled in the row: [measure] trials, and repeat runs) and
    ``trial_spread_pct`` (:func:`trial_spread`)."""
    spread, n = trial_spread(sums.trials, pooled_per_unit)
    return {"n_trials": n, "trial_spread_pct": spread}


def _per_rank(windows: int, rank_runs: int) -> float | int:
    """Windows per rank (and run): a whole number where every rank ran as many, else their mean."""
    if not rank_runs:
        return 0
    return windows // rank_runs if windows % rank_runs == 0 else windows / rank_runs


def _module_flags(row: RowSums, basis: RowBasis) -> list[str]:
    """What a row says about GH200 modules recorded at NVML module scope (GPU + Grace CPU + memory)."""
    if not row.scopes.module.recorded:
        return []
    modules = row.scopes.module.recorded_by
    if basis == RowBasis.MODULE:
        return [
            f"energy_J is GH200 module energy (GPU + Grace CPU + memory) of {len(modules)} rank(s): NVML answers "
            "only at module scope there; not comparable with GPU-only figures"
        ]
    alone = modules - row.scopes.device.recorded_by
    out = [
        f"module_energy_J: GH200 module energy (GPU + Grace CPU + memory) of {len(modules)} rank(s), recorded at "
        "module scope; not in energy_J (GPU only)"
    ]
    if alone:
        out.append(
            f"energy_J leaves out {len(alone)} rank(s) whose GPU answers only at module scope "
            "(their module energy is in module_energy_J)"
        )
    return out


def _key(row: RowSums, by: Sequence[str] | None) -> tuple[tuple[str, Any], ...]:
    n_ranks = max(row.rank_counts) if row.rank_counts else 0
    slurm = _scheduler_columns(row.scheduler)
    fields = {**row.params, "n_ranks": n_ranks, "n_nodes": row.n_nodes, "unit": row.unit}
    fields.update(slurm)
    if not by:
        key: tuple[tuple[str, Any], ...] = (
            ("case", json.dumps(row.params, sort_keys=True)),
            ("n_ranks", n_ranks),
            ("n_nodes", row.n_nodes),
            ("scheduler", json.dumps(row.scheduler, sort_keys=True)),
        )
    else:
        key = tuple((name, json.dumps(fields.get(name), sort_keys=True)) for name in by)
    return (*key, ("stage", row.stage), ("unit", row.unit), ("data", row.data))


# ---------------------------------------------------------------- one run, counted once

_SAME_RUN_ATTR = "same_run_notes"


def same_run_notes(red: RunReduction) -> list[str]:
    """What :func:`unique_runs` said about this file: the copies of its run it left out."""
    return list(getattr(red, _SAME_RUN_ATTR, []))


def _counted(windows: dict[str, np.ndarray]) -> np.ndarray:
    """The windows that count: measured, ok, and not empty."""
    return (windows["phase"] == "measure") & (windows["status"] == "ok") & (windows["end"] > windows["start"])


RunIdentity = tuple[str, str, str, str, str, int, int, str]


def run_identity(red: RunReduction) -> RunIdentity:
    """What makes a run: job, epoch (Unix time rank 0 took at start and every rank, spill and merge
    keeps), Slurm job, array task and step, geometry, and the kind of data. Two runs of one job differ
    in epoch."""
    attrs = red.attrs
    try:
        slurm = json.loads(str(attrs.get("slurm_json") or "{}"))
    except ValueError:
        slurm = {}
    return (
        str(attrs.get("job_name", "")),
        repr(float(attrs.get("epoch_unix", math.nan))),
        str(attrs.get("slurm_job_id", "")),
        str(slurm.get("array_task_id", "")),
        str(attrs.get("slurm_step_id", "")),
        int(red.n_ranks),
        int(red.n_nodes),
        red.label,
    )


def _window_keys(red: RunReduction) -> dict[int, set[tuple[int, str, str, int, float]]]:
    """Each rank's windows as (case, phase, stage, iteration, start)."""
    windows = red.windows
    out: dict[int, set[tuple[int, str, str, int, float]]] = defaultdict(set)
    for rank, case, phase, stage, iteration, start in zip(
        windows["rank"],
        windows["case"],
        windows["phase"],
        windows["stage"],
        windows["iteration"],
        windows["start"],
        strict=False,
    ):
        out[int(rank)].add((int(case), str(phase), str(stage), int(iteration), float(start)))
    return out


def _measured_ranks(red: RunReduction) -> set[int]:
    return {int(r) for r in red.windows["rank"][_counted(red.windows)]}


def _channel_indices(red: RunReduction, ranks: Sequence[int]) -> dict[tuple[int, str], int]:
    """(rank, channel name) -> channel index in the file, for the channels of ``ranks`` with samples."""
    return {
        (int(c.meta.get("rank", -1)), str(c.meta.get("name", ""))): int(c.meta["index"])
        for c in red.channels
        if int(c.meta.get("rank", -1)) in ranks and int(c.meta.get("n_samples", 0) or 0)
    }


def _shared_measurements(one: RunReduction, other: RunReduction) -> list[int]:
    """Ranks whose measurements are in both files (same windows, same hosts, same first samples on
    the channels both have); [] when the files share none."""
    keys_one, keys_other = _window_keys(one), _window_keys(other)
    shared = sorted(r for r in keys_one.keys() & keys_other.keys() if keys_one[r] & keys_other[r])
    no_ranks = np.array([], dtype=object)
    hosts_one, hosts_other = one.ranks.get("host", no_ranks), other.ranks.get("host", no_ranks)

    def other_host(r: int) -> bool:
        if r >= len(hosts_one) or r >= len(hosts_other):
            return False
        host_one, host_other = str(hosts_one[r]), str(hosts_other[r])
        return bool(host_one and host_other and host_one != host_other)

    shared = [r for r in shared if not other_host(r)]
    if not shared:
        return []
    channels_one, channels_other = _channel_indices(one, shared), _channel_indices(other, shared)
    both = sorted(channels_one.keys() & channels_other.keys())
    if both:
        heads_one = trace_heads(one.path, [channels_one[k] for k in both])
        heads_other = trace_heads(other.path, [channels_other[k] for k in both])
        n = min(min(h.shape[1] for h in heads_one.values()), min(h.shape[1] for h in heads_other.values()))
        for k in both:
            if not np.array_equal(
                heads_one[channels_one[k]][:, :n], heads_other[channels_other[k]][:, :n], equal_nan=True
            ):
                return []  # same windows but other samples: not the same measurements
    return shared


def _completeness(red: RunReduction) -> tuple[bool, int, int, int, bool]:
    """Which copy of a run to keep: a complete run file first, then the one holding more ranks, more
    windows, samples; a file written by the run before one rebuilt from its spills."""
    return (
        red.status == "complete",
        len(_measured_ranks(red)),
        int(_counted(red.windows).sum()),
        sum(int(c.meta.get("n_samples", 0) or 0) for c in red.channels),
        not int(red.attrs.get("rebuilt_from_spills", 0) or 0),
    )


def _why_kept(kept: RunReduction, dropped: RunReduction) -> str:
    """The first point of :func:`_completeness` on which the kept copy wins."""
    kept_has, dropped_has = _completeness(kept), _completeness(dropped)
    if kept_has[0] and not dropped_has[0]:
        return "complete"
    if kept_has[1] > dropped_has[1]:
        return "more ranks"
    if kept_has[2] > dropped_has[2]:
        return "more windows"
    if kept_has[3] > dropped_has[3]:
        return "more samples"
    if kept_has[4] and not dropped_has[4]:
        return "written by the run"
    return "given first"


def _ranks_text(ranks: Iterable[int]) -> str:
    ranks = sorted(ranks)
    return ",".join(map(str, ranks[:12])) + (f",... ({len(ranks)})" if len(ranks) > 12 else "")


def unique_runs(reds: Iterable[RunReduction]) -> list[RunReduction]:
    """The reductions with every run once: files holding the same measurements (a run file and a merge
    of the same run's kept spills, the same spills merged twice, one file given twice) are one run,
    not repeats. Of such files the most complete is kept (:func:`_completeness`); each one left out is
    named in one warning and in a flag on the rows of the one kept. Runs of the same job with other
    epochs are repeats and all stay."""
    reds = list(reds)
    by_id: dict[RunIdentity, list[int]] = defaultdict(list)
    for i, red in enumerate(reds):
        by_id[run_identity(red)].append(i)
    parent = list(range(len(reds)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    shared: dict[tuple[int, int], list[int]] = {}
    for same_id in by_id.values():
        for pos, i in enumerate(same_id):
            for j in same_id[pos + 1 :]:
                ranks = _shared_measurements(reds[i], reds[j])
                if ranks:
                    shared[(i, j)] = shared[(j, i)] = ranks
                    parent[root(j)] = root(i)
    clusters: dict[int, list[int]] = defaultdict(list)
    for i in range(len(reds)):
        clusters[root(i)].append(i)
    dropped: set[int] = set()
    for members in clusters.values():
        if len(members) < 2:
            continue
        keep = max(members, key=lambda i: (_completeness(reds[i]), -i))
        kept = reds[keep]
        kept_ranks = _measured_ranks(kept)
        for i in members:
            if i == keep:
                continue
            left_out = reds[i]
            dropped.add(i)
            same = shared.get((keep, i)) or sorted(_measured_ranks(left_out) & kept_ranks)
            lost = _measured_ranks(left_out) - kept_ranks
            if left_out.path.resolve() == kept.path.resolve():
                text = f"same run: {left_out.path.name} given twice; counted once"
            else:
                text = (
                    f"same run in {kept.path.name} and {left_out.path.name} (job "
                    f"{kept.attrs.get('job_name', '')!r}, epoch {kept.attrs.get('epoch_unix', '?')}, the same "
                    f"measurements of rank(s) {_ranks_text(same)}): counted once, from {kept.path.name} "
                    f"({_why_kept(kept, left_out)}); {left_out.path.name} left out"
                )
                if lost:
                    text += (
                        f", and with it rank(s) {_ranks_text(lost)} that only it holds: merge all of the "
                        "run's spill folders into one file to count them"
                    )
                text += "; move the extra file away to silence this"
            log.warning("%s (%s, %s)", text, kept.path, left_out.path)
            setattr(kept, _SAME_RUN_ATTR, [*same_run_notes(kept), text])
    return [red for i, red in enumerate(reds) if i not in dropped]


def reduce_files(paths: Iterable[str | Path]) -> list[RunReduction]:
    """One reduction per run, in the order given: a run whose measurements arrive in several files is
    reduced from every file but kept once (:func:`unique_runs`)."""
    return unique_runs(reduce_run(p) for p in paths)


# a case's only stage is the whole iteration again when its windows last at least this share of it
SOLE_STAGE_COVERS = 0.99


def _repeats_the_iteration(per_case: dict[tuple[int, str], RowSums], case: int, stage: str) -> bool:
    """Whether the row of ``stage`` is its case's only stage and covers the whole iterations (the same
    units, at least ``SOLE_STAGE_COVERS`` of their time): text-to-image without a refiner runs one
    "base" stage, whose row would repeat the whole-iteration row beside it."""
    whole = per_case.get((case, ""))
    if whole is None or [k for k in per_case if k[0] == case and k[1]] != [(case, stage)]:
        return False
    mine = per_case[(case, stage)]
    return mine.units == whole.units and mine.rank_seconds >= SOLE_STAGE_COVERS * whole.rank_seconds


def rows_from_reductions(
    reds: Iterable[RunReduction], by: Sequence[str] | None = None, stages: bool = False
) -> list[dict[str, Any]]:
    return rows_from_sums((accumulate(red) for red in unique_runs(reds)), by=by, stages=stages)


def rows_from_sums(
    per_file: Iterable[dict[tuple[int, str], RowSums]], by: Sequence[str] | None = None, stages: bool = False
) -> list[dict[str, Any]]:
    """The table's rows from each run's :func:`accumulate` (reduced now, or read from the catalogue)."""
    groups: dict[tuple[tuple[str, Any], ...], RowSums] = {}
    for per_case in per_file:
        for (case, stage), sums in per_case.items():
            if stage and (not stages or _repeats_the_iteration(per_case, case, stage)):
                continue
            if sums.n_windows == 0 and not sums.interrupted and not sums.failed:
                continue
            key = _key(sums, by)
            if key in groups:
                groups[key].merge(sums)
            else:
                groups[key] = sums
    rows = []
    for key, sums in groups.items():
        key_fields = (
            {name: json.loads(v) for name, v in key if name not in ("case", "unit", "stage", "data")}
            if by
            else {}
        )
        rows.append(_row(key_fields, sums))
    return rows


def energy_table(
    paths: Iterable[str | Path], by: Sequence[str] | None = None, stages: bool = False
) -> list[dict[str, Any]]:
    """One row per case (or per ``by`` group), and per stage with ``stages``, over the given run files."""
    return rows_from_reductions(reduce_files(paths), by=by, stages=stages)


# ---------------------------------------------------------------- per device (MI250X split)


@dataclass
class _DeviceSums:
    """One device's (rank's) share of the device channels over one (case, stage) of one file."""

    energy_J: float = 0.0
    var_J2: float = 0.0
    channels: list[str] = field(default_factory=list)
    attribution: set[str] = field(default_factory=set)
    no_data_windows: int = 0


def device_rows(reds: Iterable[RunReduction], stages: bool = False) -> list[dict[str, Any]]:
    """One row per (file, case, stage, device): a package's energy split among its GCDs
    (:func:`energy_hpc.analysis.attribution.package_shares`)."""
    out = []
    for red in unique_runs(reds):
        windows = red.windows
        counted = _counted(windows)
        devices: dict[tuple[int, str, int], _DeviceSums] = {}
        for channel in red.channels:
            role = Role(channel.role)
            if role not in DEVICE_ROLES:
                continue
            meta, own_idx = channel.meta, channel.own_idx
            recording_rank = int(meta.get("rank", 0))
            # random parts in quadrature, the one-sided part linearly
            random_J = channel.own.random_J()
            systematic_J = channel.own.systematic_J
            for case in sorted({int(x) for x in windows["case"][own_idx]}):
                ranks_in_case = sorted({int(r) for r in windows["rank"][counted & (windows["case"] == case)]})
                if role == Role.PACKAGE:
                    shares, label = package_shares(
                        meta, red.bus_to_rank(str(meta.get("host", ""))), recording_rank, ranks_in_case
                    )
                else:
                    shares, label = {recording_rank: 1.0}, "own channel"
                for stage in sorted({str(s) for s in windows["stage"][own_idx]}):
                    if stage and not stages:
                        continue
                    j = np.flatnonzero(
                        (windows["case"][own_idx] == case) & (windows["stage"][own_idx] == stage)
                    )
                    energy_J = channel.own.energy_J[j]
                    # a window with no data is not 0 J: the cell becomes NaN and says how many
                    no_data = int((~np.isfinite(energy_J)).sum())
                    total_J = float(energy_J.sum()) if not no_data else math.nan
                    var = float(np.nansum(random_J[j] ** 2)) + float(np.nansum(systematic_J[j])) ** 2
                    for rank, share in shares.items():
                        sums = devices.setdefault((case, stage, rank), _DeviceSums())
                        sums.no_data_windows += no_data
                        sums.energy_J += share * total_J
                        sums.var_J2 += (share**2) * var
                        sums.channels.append(str(meta.get("name", "")))
                        sums.attribution.add(label if role == Role.PACKAGE else "own channel")
        no_ranks = np.array([], dtype=object)
        hosts, buses = red.ranks.get("host", no_ranks), red.ranks.get("device_bus_id", no_ranks)
        for (case, stage, rank), sums in sorted(devices.items()):
            sel = (
                counted & (windows["case"] == case) & (windows["stage"] == stage) & (windows["rank"] == rank)
            )
            units = float(windows["units"][sel].sum())
            unc = math.sqrt(sums.var_J2)
            out.append(
                {
                    "file": red.path.name,
                    "case": red.params[case],
                    "stage": stage,
                    "rank": rank,
                    "host": str(hosts[rank]) if rank < len(hosts) else "",
                    "device": str(buses[rank]) if rank < len(buses) else "",
                    "units": units,
                    "unit": red.units_name[case],
                    "energy_J": sums.energy_J,
                    "energy_uncertainty_J": unc,
                    "energy_per_unit_J": _nan_div(sums.energy_J, units),
                    "energy_per_unit_uncertainty_J": _nan_div(unc, units),
                    "channels": sorted(set(sums.channels)),
                    "attribution": sorted(sums.attribution),
                    "data": red.label,
                    "no_data_windows": sums.no_data_windows,
                }
            )
    return out


# ---------------------------------------------------------------- formatting

# the default Markdown table keeps within this many characters (a terminal); --wide or --columns do not
TERMINAL_WIDTH = 100
WIDE = "wide"  # format_rows(columns=WIDE): every column the table has (the full set)
_SHORTEST_NAME = 12  # a model name is cut to no fewer characters than this to fit TERMINAL_WIDTH

# a value -> the keys of its one-sigma uncertainty, first found used: the value is printed to the
# decimal place of the uncertainty's second significant figure
_UNCERTAINTY_OF = {
    "energy_J": ("energy_uncertainty_J",),
    "energy_per_unit_J": ("energy_per_unit_unc_J", "energy_per_unit_meas_unc_J"),
    "net_energy_J": ("net_energy_uncertainty_J",),
    "net_energy_per_unit_J": ("net_energy_per_unit_uncertainty_J",),
    "node_energy_J": ("node_energy_uncertainty_J",),
    "module_energy_J": ("module_energy_uncertainty_J",),
    "co2e_g": ("co2e_uncertainty_g",),
    "co2e_per_1000_units_g": ("co2e_per_1000_units_uncertainty_g",),
}
# printed to two significant figures
_UNCERTAINTIES = {k for keys in _UNCERTAINTY_OF.values() for k in keys} | {
    "energy_per_unit_sem_J",
    "energy_per_unit_uncertainty_J",
}

# headers of the row keys a table may show (a key not named here is its own header)
_HEADERS = {
    "task": "task",
    "model": "model",
    "label": "label",
    "stage": "stage",
    "dtype": "precision",
    "batch_size": "batch",
    "n_ranks": "ranks",
    "n_nodes": "nodes",
    "unit": "unit",
    "units": "units",
    "seconds": "seconds",
    "energy_J": "energy J",
    "energy_per_unit_J": "J/unit",
    "energy_per_unit_meas_unc_J": "±meas J/unit",
    "energy_per_unit_sem_J": "±SEM J/unit",
    "energy_per_unit_unc_J": "±total J/unit",
    "n_iterations": "n iter",
    "energy_per_aux_unit_J": "J/aux unit",
    "wh_per_1000_units": "Wh/1000 units",
    "mean_power_W": "W per rank",
    "idle_power_W": "idle W per rank",
    "net_energy_per_unit_J": "net J/unit",
    "node_energy_per_unit_J": "node J/unit",
    "node_rest_per_unit_J": "rest J/unit",
    "module_energy_per_unit_J": "module J/unit",  # GH200 module scope (GPU + Grace CPU + memory)
    "counter_vs_integral_pct": "integral vs counter %",
    "method": "method",
    "seconds_per_unit": "s/unit",
    "iterations_per_rank": "iterations per rank",
    "rank_iterations": "rank iterations",
    "gap_windows": "gap windows",
    "longest_gap_s": "longest gap s",
    "trial_spread_pct": "trial spread %",
    "power_limit_W": "limit W",
    "sm_clock_MHz": "SM MHz",
    "mem_clock_MHz": "mem MHz",
    "temperature_start_C": "start °C",
    "temperature_end_C": "end °C",
    "slurm_gpu_freq": "slurm freq",
    "slurm_gpu_power_W": "slurm W",
    "co2e_g": "CO2e g (conversion)",
    "co2e_per_1000_units_g": "CO2e g/1000 units (conversion)",
}
# the full set (--wide), in order; stage, label, J/aux unit, node and module columns join where rows have them
_WIDE_KEYS = [
    "task",
    "model",
    "dtype",
    "batch_size",
    "n_ranks",
    "n_nodes",
    "units",
    "seconds",
    "energy_J",
    "energy_per_unit_J",
    "energy_per_unit_meas_unc_J",
    "energy_per_unit_sem_J",
    "energy_per_unit_unc_J",
    "n_iterations",
    "wh_per_1000_units",
    "mean_power_W",
    "idle_power_W",
    "net_energy_per_unit_J",
    "counter_vs_integral_pct",
    "method",
]
_TEXT_KEYS = (
    "task",
    "model",
    "label",
    "stage",
    "dtype",
    "unit",
    "method",
    "slurm_gpu_freq",
)  # left-aligned in LaTeX


@dataclass(frozen=True)
class Column:
    """One column of a Markdown or LaTeX table: the row key it shows, its header, and how a row's cell
    is written."""

    key: str
    header: str
    cell: Callable[[dict[str, Any]], str]

    @property
    def text(self) -> bool:
        return self.key in _TEXT_KEYS


def _uncertainty(row: dict[str, Any], key: str) -> float:
    for k in _UNCERTAINTY_OF.get(key, ()):
        value = row.get(k)
        if isinstance(value, float) and math.isfinite(value) and value > 0:
            return value
    return math.nan


def _number(row: dict[str, Any], key: str) -> str:
    """A row's value as a cell: an uncertainty to two significant figures, a value that has one to the
    same decimal place, a count of units in words (``6 images``), anything else by
    :func:`format_number`."""
    value = row.get(key)
    if key == "units":
        return count_cell(value, str(row.get("unit", "")))
    if key == "energy_per_aux_unit_J" and row.get("aux_unit"):
        return f"{format_number(value)} per {row['aux_unit']}"
    if key in _UNCERTAINTIES:
        return format_uncertainty(value, value)[1]
    if key in _UNCERTAINTY_OF:
        return format_uncertainty(value, _uncertainty(row, key))[0]
    return format_number(value)


def _column(key: str, header: str | None = None) -> Column:
    return Column(key, header or _HEADERS.get(key, key), lambda row: _number(row, key))


def _one_unit(rows: list[dict[str, Any]]) -> str:
    """The unit every row counts in, or '' when they differ."""
    units = {str(r.get("unit", "")) for r in rows}
    return units.pop() if len(units) == 1 else ""


def _short_names(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Model -> the name the compact table shows: the last part of a path or hub id, unless two models
    would then look alike."""
    models = {str(r.get("model")) for r in rows}
    short = {m: m.rstrip("/").rsplit("/", 1)[-1] or m for m in models}
    return short if len(set(short.values())) == len(models) else {m: m for m in models}


def _compact_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """The default set: case, precision, batch, energy per unit ± 1 sigma, power, time per unit, n."""
    unit = _one_unit(rows) or "unit"
    names = _short_names(rows)
    cols = [Column("model", "model", lambda row: names[str(row.get("model"))])]
    if any(r.get("label") for r in rows):
        cols.append(_column("label"))
    if any(r.get("stage") for r in rows):
        cols.append(_column("stage"))
    cols += [_column("dtype"), _column("batch_size")]
    if any(r.get("n_ranks") != 1 for r in rows):
        cols.append(_column("n_ranks"))
    if any(r.get("n_nodes") != 1 for r in rows):
        cols.append(_column("n_nodes"))
    if not _one_unit(rows):
        cols.append(_column("unit"))
    cols += [
        Column(
            "energy_per_unit_J",
            f"J/{unit}",
            lambda row: value_pm(row.get("energy_per_unit_J"), _uncertainty(row, "energy_per_unit_J")),
        ),
        Column("mean_power_W", "power W", lambda row: format_number(row.get("mean_power_W"), 3)),
        Column("seconds_per_unit", f"s/{unit}", lambda row: format_number(row.get("seconds_per_unit"), 3)),
        _column("n_iterations", "n"),
    ]
    if any(r.get("n_trials", 0) > 1 for r in rows):
        cols.append(Column("trial_spread_pct", "trials ±%", lambda row: _trials_cell(row)))
    cols += _setting_columns(rows)
    if any("co2e_per_1000_units_g" in r for r in rows):  # analysis.carbon: only when asked for
        cols.append(
            Column(
                "co2e_per_1000_units_g",
                f"gCO2e/1000 {unit}*",
                lambda row: value_pm(
                    row.get("co2e_per_1000_units_g"), _uncertainty(row, "co2e_per_1000_units_g")
                ),
            )
        )
    return cols


def _sets_device(row: dict[str, Any]) -> bool:
    """Whether the row's case set a power cap or clock, or Slurm applied GPU settings to its run."""
    case = row.get("case") or {}
    return any(case.get(k) is not None for k in SETTING_KEYS) or bool(
        row.get("slurm_gpu_freq") or _finite_number(row.get("slurm_gpu_power_W"))
    )


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _setting_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """The compact table's columns of device settings, only where a row's case set a power cap or clock
    or Slurm applied GPU settings: what Slurm was asked for, then the limit and clocks as read back."""
    if not any(_sets_device(r) for r in rows):
        return []
    cols = []
    if any(r.get("slurm_gpu_freq") for r in rows):
        cols.append(Column("slurm_gpu_freq", "slurm freq", lambda row: str(row.get("slurm_gpu_freq") or "-")))
    if any(_finite_number(r.get("slurm_gpu_power_W")) for r in rows):
        cols.append(_column("slurm_gpu_power_W", "slurm W"))
    for key, header in (
        ("power_limit_W", "limit W"),
        ("sm_clock_MHz", "SM MHz"),
        ("mem_clock_MHz", "mem MHz"),
    ):
        if any(_finite_number(r.get(key)) for r in rows):
            cols.append(_column(key, header))
    return cols


def _trials_cell(row: dict[str, Any]) -> str:
    """``3: 1.2`` (trials, their spread in % of the row's energy per unit)."""
    return f"{row.get('n_trials', 0)}: {format_number(row.get('trial_spread_pct'), 2)}"


def _wide_columns(rows: list[dict[str, Any]]) -> list[Column]:
    keys = list(_WIDE_KEYS)
    if any(r.get("stage") for r in rows):
        keys.insert(4, "stage")
    if any(r.get("label") for r in rows):
        keys.insert(1, "label")
    if any(r.get("aux_unit") for r in rows):
        keys.insert(keys.index("wh_per_1000_units"), "energy_per_aux_unit_J")
    if any(isinstance(r.get("node_energy_J"), float) and math.isfinite(r["node_energy_J"]) for r in rows):
        keys[-1:-1] = ["node_energy_per_unit_J", "node_rest_per_unit_J"]
    if any(r.get("module_includes_cpu_memory") and r.get("energy_scope") != MODULE_SCOPE for r in rows):
        keys[-1:-1] = ["module_energy_per_unit_J"]
    keys += [k for k in devstate.COLUMNS if any(_finite_number(r.get(k)) for r in rows)]
    if any(r.get("slurm_gpu_freq") for r in rows):
        keys.append("slurm_gpu_freq")
    if any(_finite_number(r.get("slurm_gpu_power_W")) for r in rows):
        keys.append("slurm_gpu_power_W")
    return [_column(k) for k in keys]


def column_names(rows: list[dict[str, Any]]) -> list[str]:
    """The row keys ``columns=`` (``--columns``) may pick: every key of the rows."""
    return list(dict.fromkeys(k for r in rows for k in r))


def table_columns(rows: list[dict[str, Any]], columns: str | Sequence[str] | None = None) -> list[Column]:
    """The columns a Markdown or LaTeX table of ``rows`` shows: the compact set (None), every column
    (:data:`WIDE`), or the row keys named, in that order (ValueError naming an unknown one)."""
    if columns is None:
        return _compact_columns(rows)
    if isinstance(columns, str):
        if columns != WIDE:
            raise ValueError(f"columns must be None, {WIDE!r} or a list of row keys, not {columns!r}")
        return _wide_columns(rows)
    known = column_names(rows)
    unknown = [k for k in columns if k not in known]
    if rows and unknown:
        raise ValueError(f"unknown column(s) {', '.join(unknown)}; the table has: {', '.join(known)}")
    return [_column(k) for k in columns]


def _fit(headers: list[str], body: list[list[str]], cut: Sequence[int], width: int) -> None:
    """Cut the longest cells of the columns at positions ``cut`` with '…' until the Markdown table is at
    most ``width`` characters wide, or those columns are down to ``_SHORTEST_NAME`` characters."""
    for i in cut:
        widths = [max([len(h), *(len(cells[k]) for cells in body)]) for k, h in enumerate(headers)]
        over = sum(widths) + 3 * len(widths) + 1 - width
        if over <= 0:
            return
        keep = max(widths[i] - over, _SHORTEST_NAME, len(headers[i]))
        for cells in body:
            if len(cells[i]) > keep:
                cells[i] = cells[i][: keep - 1] + "…"


def carbon_legend(rows: list[dict[str, Any]]) -> list[str]:
    """The line a table with CO2e columns carries (analysis.carbon): they are a conversion, not measured."""
    factors = sorted({(r["carbon_intensity_g_per_kWh"], r["pue"]) for r in rows if "pue" in r})
    return [
        f"* CO2e = energy x PUE {pue:g} x {g:g} gCO2e/kWh: a conversion of measured energy by a stated "
        "factor, not a measurement"
        for g, pue in factors
    ]


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    return [f"row {i + 1}: {flag}" for i, row in enumerate(rows) for flag in row["flags"]]


def format_rows(rows: list[dict[str, Any]], fmt: str, columns: str | Sequence[str] | None = None) -> str:
    """The table in ``fmt``: CSV and JSON always hold every column at full precision (a missing number is
    an empty CSV field, a JSON null); Markdown and LaTeX show ``columns`` (:func:`table_columns`: by
    default the compact set, whose Markdown fits :data:`TERMINAL_WIDTH` characters), uncertainties to two
    significant figures and values to match, and the line saying what each ± is."""
    if fmt == "json":
        return json.dumps([jsonable(r) for r in rows], indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        keys = [k for k in rows[0] if k not in ("case", "files", "flags")] if rows else []
        writer.writerow([*keys, "flags"])
        for r in rows:
            writer.writerow([csv_cell(r[k]) for k in keys] + ["; ".join(r["flags"])])
        return buf.getvalue()
    cols = table_columns(rows, columns)
    headers = [c.header for c in cols]
    body = [[c.cell(r) for c in cols] for r in rows]
    legend = compact_legend(_one_unit(rows) or "unit") if columns is None else [UNCERTAINTY_LEGEND]
    if fmt == "latex":
        return latex_table(
            headers,
            body,
            "".join("l" if c.text else "r" for c in cols),
            comments_before=[data_banner(rows)],
            comments_after=[*legend, *carbon_legend(rows), *_notes(rows)],
        )
    if columns is None:
        _fit(headers, body, [k for k, c in enumerate(cols) if c.key in ("model", "label")], TERMINAL_WIDTH)
    out = [f"Data: {data_banner(rows)}", "", *markdown_table(headers, body), ""]
    out += legend
    out += carbon_legend(rows)
    notes = _notes(rows)
    if notes:
        out.append("")
        out += [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"
