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
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from energy_hpc.analysis.attribution import package_shares
from energy_hpc.analysis.reduce import RunReduction, reduce_run
from energy_hpc.store import EMULATED_MARK, sensor_words

log = logging.getLogger(__name__)

FORMATS = ("markdown", "csv", "json", "latex")
_METHOD_ORDER = ("synthetic", "estimate", "integral", "counter")
_KINDS = ("device", "hostcpu", "node")


@dataclass
class _Acc:
    params: dict[str, Any]
    unit: str
    n_nodes: int
    stage: str
    data: str  # measured, ESTIMATE, SYNTHETIC or EMULATED <parts> (synthetic data from emulated sensors)
    n_ranks: set = field(default_factory=set)
    rank_runs: int = 0
    wall_seconds: float = 0.0
    files: list = field(default_factory=list)
    n_windows: int = 0
    units: float = 0.0
    iter_units: float = 0.0  # units of the whole iterations of the case (stage rows without units)
    aux_units: float = 0.0  # the task's second count (prompt tokens, audio seconds), where it has one
    aux_unit: str = ""
    rank_seconds: float = 0.0
    s: dict = field(default_factory=lambda: defaultdict(float))  # named sums
    has: set = field(default_factory=set)
    methods: dict = field(default_factory=lambda: defaultdict(set))
    faults: Counter = field(default_factory=Counter)
    attribution: set = field(default_factory=set)
    peak_W: float = -math.inf
    short: int = 0
    no_data: int = 0
    interrupted: int = 0
    failed: int = 0
    idle_missing: int = 0
    partial: list = field(default_factory=list)
    same_run: list = field(default_factory=list)  # duplicates of this file's run that were left out
    synthetic: bool = False
    estimate: bool = False
    # GH200 modules at NVML module scope (GPU + Grace CPU + memory), kept out of the GPU-only device total:
    # their window counts (no_data, idle_missing, short), counter faults and peak, apart from the devices'
    module: Counter = field(default_factory=Counter)
    module_faults: Counter = field(default_factory=Counter)
    module_peak_W: float = -math.inf
    # (file, rank) recorded by "device" channels and by "module" channels
    ranks_of: dict = field(default_factory=lambda: defaultdict(set))
    # per iteration, by kind (device, node, hostcpu): (file, iteration) -> [energy J, units, windows
    # with energy, windows without data]; the spread between iterations comes from these
    iters: dict = field(default_factory=lambda: defaultdict(dict))
    # by kind: pairs of those cells that one window's energy spans (a merged span of a device shared
    # by several ranks, a node window over drifting ranks): they count as one sample of the spread
    iter_links: dict = field(default_factory=lambda: defaultdict(list))

    def merge(self, o: _Acc) -> None:
        self.n_ranks |= o.n_ranks
        self.files += o.files
        self.aux_unit = self.aux_unit or o.aux_unit
        for k in (
            "rank_runs",
            "wall_seconds",
            "n_windows",
            "units",
            "iter_units",
            "aux_units",
            "rank_seconds",
            "short",
            "no_data",
            "interrupted",
            "failed",
            "idle_missing",
        ):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        for k, v in o.s.items():
            self.s[k] += v
        self.has |= o.has
        for k, v in o.methods.items():
            self.methods[k] |= v
        self.faults.update(o.faults)
        self.attribution |= o.attribution
        self.peak_W = max(self.peak_W, o.peak_W)
        self.partial += o.partial
        self.same_run += o.same_run
        for kind, cells in o.iters.items():
            self.iters[kind].update(cells)  # keys carry the file: repeats pool their iterations
        for kind, links in o.iter_links.items():
            self.iter_links[kind] += links
        self.synthetic |= o.synthetic
        self.estimate |= o.estimate
        self.module.update(o.module)
        self.module_faults.update(o.module_faults)
        self.module_peak_W = max(self.module_peak_W, o.module_peak_W)
        for kind, ranks in o.ranks_of.items():
            self.ranks_of[kind] |= ranks


# The CPU-time estimate's own assumption: watts per core is a round figure for a busy server core, not a
# property of the CPU that ran (docs/analysis.md). Taken as uncertain by half of itself (1 sigma), a
# systematic: one figure scales every window of the estimate, so it adds linearly over windows and
# channels and does not average down; it is added in quadrature to the estimate's measurement terms.
ESTIMATE_REL_UNC = 0.5


def is_estimate(meta: dict[str, Any]) -> bool:
    return str(meta.get("method", "")) == "estimate" or str(meta.get("backend", "")) == "estimate"


def _bump(a: _Acc, kind: str, name: str, n: int = 1) -> None:
    """Count a window (no data, no idle, short) for the device total, or apart for the module's."""
    if kind == "device":
        setattr(a, name, getattr(a, name) + n)
    else:
        a.module[name] += n


def _sharers_of(meta: dict[str, Any]) -> list[int]:
    return [int(x) for x in str(meta.get("sharers", "") or "").split(",") if x.strip()]


def _iter_cell(a: _Acc, kind: str, fid: str, iteration: int) -> list:
    """The per-iteration cell [energy J, units, windows with energy, windows without data]."""
    cells = a.iters[kind]
    cell = cells.get((fid, iteration))
    if cell is None:
        cell = cells[(fid, iteration)] = [0.0, 0.0, 0, 0]
    return cell


def _link_spanned(a: _Acc, kind: str, fid: str, first: int, spanned: Iterable[int]) -> None:
    for it in spanned:
        if it != first:
            a.iter_links[kind].append(((fid, first), (fid, it)))


class _Spans:
    """The counted windows of one file by (node, case, stage), to find the iterations a span covers."""

    def __init__(self, w: dict[str, np.ndarray], counted: np.ndarray) -> None:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i in np.flatnonzero(counted):
            groups[(int(w["node"][i]), int(w["case"][i]), str(w["stage"][i]))].append(int(i))
        self.g = {}
        for key, idx in groups.items():
            idx = np.array(sorted(idx, key=lambda i: float(w["start"][i])))
            st, en = w["start"][idx].astype(float), w["end"][idx].astype(float)
            self.g[key] = (st, en, w["iteration"][idx].astype(int), float((en - st).max()))

    def iterations(self, node: int, case: int, stage: str, a: float, b: float) -> set[int]:
        g = self.g.get((node, case, stage))
        if g is None:
            return set()
        st, en, its, longest = g
        lo, hi = np.searchsorted(st, a - longest, "left"), np.searchsorted(st, b, "left")
        sel = en[lo:hi] > a
        return set(int(x) for x in its[lo:hi][sel])


def iteration_spread(cells: dict[tuple[str, int], list], links: Sequence[tuple] = ()) -> tuple[float, int]:
    """Standard error of energy per unit from the spread between iterations, and how many iterations.

    Each iteration ``i`` (of every file pooled) gives an energy ``E_i`` (all the case's ranks/devices,
    as the total) and units ``u_i``; the row's figure is the ratio ``R = sum E / sum u``, whose
    standard error is ``sqrt(sum (E_i - R u_i)^2 / (n (n - 1))) / mean(u)`` (the ratio estimator's;
    with equal units per iteration it is the plain ``SD(E_i/u_i) / sqrt(n)``). Iterations one window's
    energy spans (``links``) are one sample. Iterations with a window without data, or without units,
    are left out. Fewer than two iterations: NaN (undefined)."""
    if links:
        parent = {k: k for k in cells}

        def root(k: tuple) -> tuple:
            while parent[k] != k:
                parent[k] = parent[parent[k]]
                k = parent[k]
            return k

        for x, y in links:
            if x in parent and y in parent:
                parent[root(y)] = root(x)
        merged: dict[tuple, list] = {}
        for k, c in cells.items():
            m = merged.setdefault(root(k), [0.0, 0.0, 0, 0])
            for q in range(4):
                m[q] += c[q]
        cells = merged
    pts = np.array([(c[0], c[1]) for c in cells.values() if c[1] > 0 and c[2] > 0 and not c[3]], float)
    n = len(pts)
    if n < 2:
        return math.nan, n
    E, u = pts[:, 0], pts[:, 1]
    R = E.sum() / u.sum()
    return float(math.sqrt(((E - R * u) ** 2).sum() / (n * (n - 1))) / u.mean()), n


def _method_label(methods: set[str]) -> str:
    methods = {m for m in methods if m}
    if not methods:
        return "none"
    for m in ("synthetic", "estimate"):
        if m in methods:
            return m
    return "+".join(sorted(methods, key=_METHOD_ORDER.index, reverse=True))


def accumulate(red: RunReduction) -> dict[tuple[int, str], _Acc]:
    """Per (case, stage) sums for one reduced run file."""
    w, nw = red.windows, red.node_windows
    fid = str(red.path)
    counted = (w["phase"] == "measure") & (w["status"] == "ok") & (w["end"] > w["start"])
    measure = w["phase"] == "measure"
    spans = _Spans(w, counted)
    accs: dict[tuple[int, str], _Acc] = {}
    for c in range(len(red.params)):
        stages = sorted(set(w["stage"][measure & (w["case"] == c)]) | {""})
        whole = counted & (w["case"] == c) & (w["stage"] == "")
        for st in stages:
            a = _Acc(
                params=red.params[c],
                unit=red.units_name[c],
                n_nodes=red.n_nodes,
                stage=st,
                data=red.label,
                files=[str(red.path)],
                synthetic=red.synthetic,
                estimate=red.estimate,
            )
            sel = counted & (w["case"] == c) & (w["stage"] == st)
            ranks = set(int(r) for r in w["rank"][sel])
            a.n_ranks = {len(ranks)} if ranks else set()
            a.rank_runs = len(ranks)
            a.n_windows = int(sel.sum())
            a.units = float(w["units"][sel].sum())
            a.iter_units = float(w["units"][whole].sum())
            if "aux_units" in w:
                a.aux_units = float(w["aux_units"][sel].sum())
                a.aux_unit = next((str(u) for u in w["aux_unit"][sel] if str(u)), "")
            a.rank_seconds = float((w["end"][sel] - w["start"][sel]).sum())
            a.wall_seconds = a.rank_seconds / len(ranks) if ranks else 0.0
            a.interrupted = int(
                (measure & (w["case"] == c) & (w["stage"] == st) & (w["status"] == "interrupted")).sum()
            )
            a.failed = int(
                (measure & (w["case"] == c) & (w["stage"] == st) & (w["status"] == "failed")).sum()
            )
            if red.missing:
                a.partial.append(f"{red.path.name}: " + "; ".join(red.missing))
            a.same_run = list(same_run_notes(red))
            # units per iteration, summed over the case's ranks as the row's units are
            per_unit_of = sel if a.units > 0 or not st else whole
            for i in np.flatnonzero(per_unit_of):
                _iter_cell(a, "device", fid, int(w["iteration"][i]))[1] += float(w["units"][i])
            accs[(c, st)] = a

    node_sets: dict[str, set[int]] = defaultdict(set)  # which nodes have node / hostcpu channels
    node_dev: dict[int, float] = defaultdict(float)  # node window -> device J over it
    for cr in red.channels:
        m, role = cr.meta, cr.role
        kind = (
            "device"
            if role in ("device", "package")
            else (
                "module"
                if role == "module"
                else "node"
                if role == "node"
                else "hostcpu"
                if role in ("node_cpu", "node_memory")
                else "other"
            )
        )
        shares: dict[int, float] = {}
        if role == "package":
            bus = red.bus_to_rank(str(m.get("host", "")))
            shares, label = package_shares(m, bus, int(m.get("rank", 0)))
        if kind in ("device", "module"):
            # a module (GH200 at NVML module scope: GPU + Grace CPU + memory) is summed apart from the
            # GPU-only devices, under its own keys ("module", "module_var", ...); _row decides its use
            pre = "" if kind == "device" else "module_"
            estimate = is_estimate(m)
            per_acc_dur: dict[tuple[int, str], float] = defaultdict(float)
            we = cr.own
            for j, wi in enumerate(cr.own_idx):
                key = (int(w["case"][wi]), str(w["stage"][wi]))
                a = accs.get(key)
                if a is None:
                    continue
                a.has.add(kind)
                a.ranks_of[kind] |= {(fid, int(w["rank"][wi]))} | {(fid, r) for r in _sharers_of(m)}
                e = we.energy_J[j]
                cell = _iter_cell(a, kind, fid, int(w["iteration"][wi]))
                if w["phase"][wi] != "measure":  # a span over several ranks' windows (shared device)
                    _link_spanned(
                        a,
                        kind,
                        fid,
                        int(w["iteration"][wi]),
                        spans.iterations(
                            int(w["node"][wi]), key[0], key[1], float(w["start"][wi]), float(w["end"][wi])
                        ),
                    )
                if not np.isfinite(e):
                    _bump(a, kind, "no_data")
                    a.methods[kind].add("")
                    cell[3] += 1
                    continue
                dur = float(w["end"][wi] - w["start"][wi])
                a.s[kind] += float(e)
                a.s[kind + "_var"] += float(we.random_J()[j]) ** 2
                a.s[kind + "_sys"] += float(we.systematic_J[j]) if we.systematic_J is not None else 0.0
                cell[0] += float(e)
                cell[2] += 1
                a.methods[kind].add(str(we.method[j]))
                if estimate:  # the watts-per-core assumption: one systematic for every window
                    a.s[kind + "_sys"] += ESTIMATE_REL_UNC * float(e)
                if math.isfinite(cr.idle_W):
                    a.s[kind + "_idle"] += cr.idle_W * dur
                    if estimate:
                        a.s[kind + "_idle_sys"] += ESTIMATE_REL_UNC * cr.idle_W * dur
                    per_acc_dur[key] += dur
                else:
                    _bump(a, kind, "idle_missing")
                if np.isfinite(we.counter_J[j]) and np.isfinite(we.integral_J[j]) and not we.counter_fault[j]:
                    a.s[pre + "both_counter"] += float(we.counter_J[j])
                    a.s[pre + "both_integral"] += float(we.integral_J[j])
                if we.counter_fault[j]:
                    (a.faults if kind == "device" else a.module_faults)[str(we.counter_fault[j])] += 1
                _bump(a, kind, "short", int(we.short[j]))
                if np.isfinite(we.peak_W[j]):
                    share = max(shares.values()) if shares else 1.0
                    if kind == "device":
                        a.peak_W = max(a.peak_W, float(we.peak_W[j]) * share)
                    else:
                        a.module_peak_W = max(a.module_peak_W, float(we.peak_W[j]) * share)
                if role == "package":
                    a.attribution.add(label)
            for key, dur in per_acc_dur.items():
                accs[key].s[kind + "_idle_var"] += (
                    (cr.idle_W_unc * dur) ** 2 if math.isfinite(cr.idle_W_unc) else 0.0
                )
                accs[key].s[pre + "idle_W_sum"] += cr.idle_W
            if kind == "device":
                for j, k in enumerate(cr.node_idx):
                    if np.isfinite(cr.node.energy_J[j]):
                        node_dev[int(k)] += float(cr.node.energy_J[j])
            continue
        # node-level channels: over the node windows
        col = {
            "node": "node",
            "node_cpu": "node_cpu",
            "node_memory": "node_memory",
            "node_accel": "node_accel",
        }.get(role, "node_other")
        node_sets[col].add(int(m.get("node", 0)))
        if kind == "hostcpu":
            node_sets["hostcpu"].add(int(m.get("node", 0)))
        per_acc_dur = defaultdict(float)
        for j, k in enumerate(cr.node_idx):
            key = (int(nw["case"][k]), str(nw["stage"][k]))
            a = accs.get(key)
            if a is None:
                continue
            e = cr.node.energy_J[j]
            targets = [col] + (["hostcpu"] if kind == "hostcpu" else [])
            for t in targets:
                a.has.add(t)
                cell = _iter_cell(a, t, fid, int(nw["iteration"][k]))
                _link_spanned(
                    a,
                    t,
                    fid,
                    int(nw["iteration"][k]),
                    spans.iterations(
                        int(nw["node"][k]), key[0], key[1], float(nw["start"][k]), float(nw["end"][k])
                    ),
                )
                if not np.isfinite(e):
                    a.methods[t].add("")
                    cell[3] += 1
                    continue
                cell[0] += float(e)
                cell[2] += 1
                a.s[t] += float(e)
                a.s[t + "_var"] += float(cr.node.random_J()[j]) ** 2
                a.s[t + "_sys"] += float(cr.node.systematic_J[j]) if cr.node.systematic_J is not None else 0.0
                a.methods[t].add(str(cr.node.method[j]))
                dur = float(nw["end"][k] - nw["start"][k])
                if math.isfinite(cr.idle_W):
                    a.s[t + "_idle"] += cr.idle_W * dur
                    if t == targets[0]:
                        per_acc_dur[key] += dur
            if np.isfinite(e) and cr.node.counter_fault[j]:
                a.faults[f"{col}:{cr.node.counter_fault[j]}"] += 1
        for key, dur in per_acc_dur.items():
            for t in [col] + (["hostcpu"] if kind == "hostcpu" else []):
                if math.isfinite(cr.idle_W_unc):
                    accs[key].s[t + "_idle_var"] += (cr.idle_W_unc * dur) ** 2
                accs[key].s[t + "_idle_W_sum"] += cr.idle_W
    # units seen by node-level channels, and the devices over the same spans, node by node
    for k in range(len(nw.get("node", []))):
        key, node = (int(nw["case"][k]), str(nw["stage"][k])), int(nw["node"][k])
        a = accs.get(key)
        if a is None:
            continue
        it = int(nw["iteration"][k])
        if node in node_sets["node"]:
            a.s["node_units"] += float(nw["units"][k])
            a.s["node_devices"] += node_dev.get(k, 0.0)
            a.s["node_count"] += 1
            _iter_cell(a, "node", fid, it)[1] += float(nw["units"][k])
        if node in node_sets["hostcpu"]:
            a.s["hostcpu_units"] += float(nw["units"][k])
            _iter_cell(a, "hostcpu", fid, it)[1] += float(nw["units"][k])
    for a in accs.values():
        a.s["n_node_channels"] = float(len(node_sets["node"]))
        a.attribution.update(red.notes)  # channels left out (attribution.channel_roles), and why
    return accs


def _nan_div(a: float, b: float) -> float:
    return a / b if b and b > 0 and math.isfinite(a) else math.nan


def _row(key_fields: dict[str, Any], a: _Acc) -> dict[str, Any]:
    # a GH200 module (GPU + Grace CPU + memory) is the row's figure only where no rank has a GPU-scope one
    kind = (
        "device"
        if "device" in a.has
        else (
            "module"
            if "module" in a.has
            else "hostcpu"
            if "hostcpu" in a.has
            else ("node" if "node" in a.has else "device")
        )
    )
    scope = {
        "device": "devices",
        "module": MODULE_SCOPE,
        "hostcpu": "cpu+memory (node-level)",
        "node": "node",
    }[kind]
    if not a.has:
        scope = "none"
    s = a.s
    n_ranks = max(a.n_ranks) if a.n_ranks else 0
    units = a.units if a.units > 0 or not a.stage else a.iter_units
    per_unit_of = "stage units" if a.units > 0 else "iteration units"
    if kind == "hostcpu":
        units = s["hostcpu_units"]
    elif kind == "node":
        units = s["node_units"]
    energy = s[kind] if kind in a.has else math.nan
    sys_ = s[kind + "_sys"]  # the estimate's watts-per-core assumption (0 for measurements)
    var = s[kind + "_var"] + sys_**2
    unc = math.sqrt(var) if kind in a.has else math.nan
    net = energy - s[kind + "_idle"]
    net_unc = (
        math.sqrt(s[kind + "_var"] + s[kind + "_idle_var"] + (sys_ - s[kind + "_idle_sys"]) ** 2)
        if kind in a.has
        else math.nan
    )
    meas_pu = _nan_div(unc, units)
    sem_pu, n_iter = iteration_spread(a.iters[kind], a.iter_links[kind]) if kind in a.has else (math.nan, 0)
    total_pu = math.hypot(meas_pu, sem_pu) if math.isfinite(sem_pu) else math.nan
    seconds = a.wall_seconds if a.rank_runs else math.nan
    n_dev = max(a.rank_runs, 1)
    idle_W = (
        (
            s["idle_W_sum"] / n_dev
            if kind == "device"
            else s[kind + "_idle_W_sum"] / n_dev
            if kind == "module"
            else s[kind + "_idle_W_sum"]
        )
        if kind in a.has
        else math.nan
    )
    # the window counts of what the row's energy is (a module's when the row falls back to it)
    if kind == "module":
        short, faults, no_data, idle_missing, peak_W = (
            a.module["short"],
            a.module_faults,
            a.module["no_data"],
            a.module["idle_missing"],
            a.module_peak_W,
        )
        both_c, both_i = s["module_both_counter"], s["module_both_integral"]
    else:
        short, faults, no_data, idle_missing, peak_W = a.short, a.faults, a.no_data, a.idle_missing, a.peak_W
        both_c, both_i = s["both_counter"], s["both_integral"]
    method = _method_label(a.methods[kind])
    flags = []
    if a.synthetic:
        flags.append(
            f"SYNTHETIC data from the {sensor_words(a.data)}: not a measurement"
            if is_emulated(a.data)
            else "SYNTHETIC data: not a measurement"
        )
    if a.estimate or method == "estimate":
        flags.append(
            "ESTIMATE from CPU time: not a measurement"
            + (
                f"; its ± includes ±{ESTIMATE_REL_UNC:.0%} (1 sigma, systematic) for the watts-per-core figure"
                if sys_ > 0
                else "; its ± is the CPU-time reading alone: the watts-per-core figure is not in it"
            )
        )
    for note in dict.fromkeys(a.same_run):
        flags.append(note)
    if kind in a.has and n_iter < 2 and math.isfinite(energy):
        flags.append(
            f"{n_iter} iteration(s) with data: the spread between iterations is unknown "
            "(SEM undefined, no total ±); only the measurement uncertainty is given"
        )
    if a.partial:
        flags.append("partial run: " + " | ".join(dict.fromkeys(a.partial))[:400])
    if a.interrupted:
        flags.append(f"{a.interrupted} interrupted window(s) left out")
    if a.failed:
        flags.append(f"{a.failed} failed window(s) left out")
    if len(a.n_ranks) > 1:
        flags.append(f"groups runs with different rank counts: {sorted(a.n_ranks)}")
    if short:
        flags.append(f"{short} window(s) shorter than 3 sensor updates: edge effects dominate")
    if faults:
        flags.append(
            "energy counter distrusted, power integral used: "
            + ", ".join(f"{n} window(s) {f}" for f, n in sorted(faults.items()))
        )
    if no_data or "" in a.methods[kind]:
        flags.append(f"{no_data} window(s) had no samples on some channel (energy under-counted)")
    if idle_missing:
        flags.append("no idle window on some channel: net energy counts those windows as gross")
    flags += _module_flags(a, kind)
    for lab in sorted(a.attribution):
        flags.append(f"attribution: {lab}")
    if a.stage and a.units <= 0:
        flags.append("stage windows carry no units: per unit = per unit of the whole iteration")
    has_node = "node" in a.has
    node_J = s["node"] if has_node else math.nan
    node_units = s["node_units"]
    node_dev = s["node_devices"] if has_node else math.nan
    rest = node_J - node_dev if has_node else math.nan
    has_module = "module" in a.has
    module_J = s["module"] if has_module else math.nan
    module_unc = math.sqrt(s["module_var"] + s["module_sys"] ** 2) if has_module else math.nan
    row = {
        "case": a.params,
        **key_fields,
        "stage": a.stage,
        "task": a.params.get("task"),
        "model": a.params.get("model"),
        "dtype": a.params.get("dtype"),
        "batch_size": a.params.get("batch_size"),
        "label": a.params.get("label", ""),
        "n_ranks": n_ranks,
        "n_nodes": a.n_nodes,
        "n_files": len(a.files),
        "iterations": a.n_windows,
        "units": units,
        "unit": a.unit,
        "seconds": seconds,
        "aux_units": a.aux_units,
        "aux_unit": a.aux_unit,
        "energy_per_aux_unit_J": _nan_div(energy, a.aux_units) if a.aux_unit else math.nan,
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
        "mean_power_W": _nan_div(energy, a.rank_seconds)
        if kind in ("device", "module")
        else _nan_div(energy, seconds),
        "idle_power_W": idle_W,
        "peak_power_W": peak_W if math.isfinite(peak_W) else math.nan,
        "net_energy_J": net,
        "net_energy_uncertainty_J": net_unc,
        "net_energy_per_unit_J": _nan_div(net, units),
        "net_energy_per_unit_uncertainty_J": _nan_div(net_unc, units),
        "counter_energy_J": both_c if both_c else math.nan,
        "integral_energy_J": both_i if both_c else math.nan,
        "counter_vs_integral_pct": 100.0 * (both_i - both_c) / both_c if both_c else math.nan,
        "node_energy_J": node_J,
        "node_energy_uncertainty_J": math.sqrt(s["node_var"] + s["node_sys"] ** 2) if has_node else math.nan,
        "node_energy_per_unit_J": _nan_div(node_J, node_units) if has_node else math.nan,
        "node_devices_energy_J": node_dev,
        "node_rest_energy_J": rest,
        "node_rest_per_unit_J": _nan_div(rest, node_units) if has_node else math.nan,
        "node_cpu_energy_J": s["node_cpu"] if "node_cpu" in a.has else math.nan,
        "node_memory_energy_J": s["node_memory"] if "node_memory" in a.has else math.nan,
        "node_net_energy_per_unit_J": _nan_div(node_J - s["node_idle"], node_units) if has_node else math.nan,
        "host_cpu_memory_energy_J": s["hostcpu"] if "hostcpu" in a.has and kind != "hostcpu" else math.nan,
        # GH200 modules read at NVML module scope: GPU + Grace CPU + memory, never in a GPU-only energy_J
        "module_energy_J": module_J,
        "module_energy_uncertainty_J": module_unc,
        "module_energy_per_unit_J": _nan_div(module_J, units) if has_module else math.nan,
        "module_includes_cpu_memory": has_module,
        "method": method,
        "energy_scope": scope,
        "data": a.data,
        "synthetic": a.synthetic,
        "estimate": a.estimate,
        "per_unit_of": per_unit_of if a.stage else "iteration units",
        "short_windows": short,
        "counter_fallback_windows": int(sum(faults.values())),
        "attribution": sorted(a.attribution),
        "flags": flags,
        "files": a.files,
    }
    return row


MODULE_SCOPE = "module (GH200: GPU + Grace CPU + memory)"


def _module_flags(a: _Acc, kind: str) -> list[str]:
    """What a row says about GH200 modules recorded at NVML module scope (GPU + Grace CPU + memory)."""
    if "module" not in a.has:
        return []
    mod = a.ranks_of["module"]
    if kind == "module":
        return [
            f"energy_J is GH200 module energy (GPU + Grace CPU + memory) of {len(mod)} rank(s): NVML answers "
            "only at module scope there; not comparable with GPU-only figures"
        ]
    alone = mod - a.ranks_of["device"]
    out = [
        f"module_energy_J: GH200 module energy (GPU + Grace CPU + memory) of {len(mod)} rank(s), recorded at "
        "module scope; not in energy_J (GPU only)"
    ]
    if alone:
        out.append(
            f"energy_J leaves out {len(alone)} rank(s) whose GPU answers only at module scope "
            "(their module energy is in module_energy_J)"
        )
    return out


def _key(a: _Acc, by: Sequence[str] | None) -> tuple[tuple[str, Any], ...]:
    nr = max(a.n_ranks) if a.n_ranks else 0
    fields = {**a.params, "n_ranks": nr, "n_nodes": a.n_nodes, "unit": a.unit}
    if not by:
        k = (("case", json.dumps(a.params, sort_keys=True)), ("n_ranks", nr), ("n_nodes", a.n_nodes))
    else:
        k = tuple((b, json.dumps(fields.get(b), sort_keys=True)) for b in by)
    return k + (("stage", a.stage), ("unit", a.unit), ("data", a.data))


# ---------------------------------------------------------------- one run, counted once

_SAME_RUN_ATTR = "same_run_notes"


def same_run_notes(red: RunReduction) -> list[str]:
    """What :func:`unique_runs` said about this file: the copies of its run it left out."""
    return list(getattr(red, _SAME_RUN_ATTR, []))


def run_identity(red: RunReduction) -> tuple:
    """What makes a run: job, epoch (Unix time rank 0 took at start and every rank, spill and merge
    keeps), Slurm job, array task and step, geometry, and the kind of data. Two runs of one job differ
    in epoch."""
    a = red.attrs
    try:
        slurm = json.loads(str(a.get("slurm_json") or "{}"))
    except ValueError:
        slurm = {}
    return (
        str(a.get("job_name", "")),
        repr(float(a.get("epoch_unix", math.nan))),
        str(a.get("slurm_job_id", "")),
        str(slurm.get("array_task_id", "")),
        str(a.get("slurm_step_id", "")),
        int(red.n_ranks),
        int(red.n_nodes),
        red.label,
    )


def _window_keys(red: RunReduction) -> dict[int, set]:
    w = red.windows
    out: dict[int, set] = defaultdict(set)
    for r, c, ph, st, it, t0 in zip(w["rank"], w["case"], w["phase"], w["stage"], w["iteration"], w["start"]):
        out[int(r)].add((int(c), str(ph), str(st), int(it), float(t0)))
    return out


def _measured_ranks(red: RunReduction) -> set[int]:
    w = red.windows
    counted = (w["phase"] == "measure") & (w["status"] == "ok") & (w["end"] > w["start"])
    return {int(r) for r in w["rank"][counted]}


def _shared_measurements(a: RunReduction, b: RunReduction) -> list[int]:
    """Ranks whose measurements are in both files (same windows, same hosts, same first samples on
    the channels both have); [] when the files share none."""
    from energy_hpc.analysis.runfile import trace_heads

    ka, kb = _window_keys(a), _window_keys(b)
    shared = sorted(r for r in ka.keys() & kb.keys() if ka[r] & kb[r])
    ha, hb = a.ranks.get("host", []), b.ranks.get("host", [])
    shared = [
        r
        for r in shared
        if not (r < len(ha) and r < len(hb) and str(ha[r]) and str(hb[r]) and str(ha[r]) != str(hb[r]))
    ]
    if not shared:
        return []
    ca = {
        (int(c.meta.get("rank", -1)), str(c.meta.get("name", ""))): int(c.meta["index"])
        for c in a.channels
        if int(c.meta.get("rank", -1)) in shared and int(c.meta.get("n_samples", 0) or 0)
    }
    cb = {
        (int(c.meta.get("rank", -1)), str(c.meta.get("name", ""))): int(c.meta["index"])
        for c in b.channels
        if int(c.meta.get("rank", -1)) in shared and int(c.meta.get("n_samples", 0) or 0)
    }
    both = sorted(ca.keys() & cb.keys())
    if both:
        heads_a = trace_heads(a.path, [ca[k] for k in both])
        heads_b = trace_heads(b.path, [cb[k] for k in both])
        n = min(min(h.shape[1] for h in heads_a.values()), min(h.shape[1] for h in heads_b.values()))
        for k in both:
            if not np.array_equal(heads_a[ca[k]][:, :n], heads_b[cb[k]][:, :n], equal_nan=True):
                return []  # same windows but other samples: not the same measurements
    return shared


def _completeness(red: RunReduction) -> tuple:
    """Which copy of a run to keep: a complete run file first, then the one holding more ranks, more
    windows, samples; a file written by the run before one rebuilt from its spills."""
    w = red.windows
    counted = (w["phase"] == "measure") & (w["status"] == "ok") & (w["end"] > w["start"])
    return (
        red.status == "complete",
        len(_measured_ranks(red)),
        int(counted.sum()),
        sum(int(c.meta.get("n_samples", 0) or 0) for c in red.channels),
        not int(red.attrs.get("rebuilt_from_spills", 0) or 0),
    )


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
    by_id: dict[tuple, list[int]] = defaultdict(list)
    for i, red in enumerate(reds):
        by_id[run_identity(red)].append(i)
    parent = list(range(len(reds)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    shared: dict[tuple[int, int], list[int]] = {}
    for idx in by_id.values():
        for x, i in enumerate(idx):
            for j in idx[x + 1 :]:
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
        k = reds[keep]
        k_ranks = _measured_ranks(k)
        for i in members:
            if i == keep:
                continue
            d = reds[i]
            dropped.add(i)
            ck, cd = _completeness(k), _completeness(d)
            why = (
                "complete"
                if ck[0] and not cd[0]
                else "more ranks"
                if ck[1] > cd[1]
                else "more windows"
                if ck[2] > cd[2]
                else "more samples"
                if ck[3] > cd[3]
                else "written by the run"
                if ck[4] and not cd[4]
                else "given first"
            )
            same = shared.get((keep, i)) or sorted(_measured_ranks(d) & k_ranks)
            lost = _measured_ranks(d) - k_ranks
            if d.path.resolve() == k.path.resolve():
                text = f"same run: {d.path.name} given twice; counted once"
            else:
                text = (
                    f"same run in {k.path.name} and {d.path.name} (job {k.attrs.get('job_name', '')!r}, "
                    f"epoch {k.attrs.get('epoch_unix', '?')}, the same measurements of rank(s) "
                    f"{_ranks_text(same)}): counted once, from {k.path.name} ({why}); {d.path.name} "
                    "left out"
                )
                if lost:
                    text += (
                        f", and with it rank(s) {_ranks_text(lost)} that only it holds: merge all of the "
                        "run's spill folders into one file to count them"
                    )
                text += "; move the extra file away to silence this"
            log.warning("%s (%s, %s)", text, k.path, d.path)
            setattr(k, _SAME_RUN_ATTR, same_run_notes(k) + [text])
    return [red for i, red in enumerate(reds) if i not in dropped]


def reduce_files(paths: Iterable[str | Path]) -> list[RunReduction]:
    """One reduction per run, in the order given: a run whose measurements arrive in several files is
    reduced from every file but kept once (:func:`unique_runs`)."""
    return unique_runs(reduce_run(p) for p in paths)


def rows_from_reductions(
    reds: Iterable[RunReduction], by: Sequence[str] | None = None, stages: bool = False
) -> list[dict[str, Any]]:
    groups: dict[tuple, _Acc] = {}
    for red in unique_runs(reds):
        for (c, st), a in accumulate(red).items():
            if st and not stages:
                continue
            if a.n_windows == 0 and not a.interrupted and not a.failed:
                continue
            k = _key(a, by)
            if k in groups:
                groups[k].merge(a)
            else:
                groups[k] = a
    rows = []
    for k, a in groups.items():
        key_fields = (
            {name: json.loads(v) for name, v in k if name not in ("case", "unit", "stage", "data")}
            if by
            else {}
        )
        rows.append(_row(key_fields, a))
    return rows


def energy_table(
    paths: Iterable[str | Path], by: Sequence[str] | None = None, stages: bool = False
) -> list[dict[str, Any]]:
    """One row per case (or per ``by`` group), and per stage with ``stages``, over the given run files."""
    return rows_from_reductions(reduce_files(paths), by=by, stages=stages)


# ---------------------------------------------------------------- per device (MI250X split)


def device_rows(reds: Iterable[RunReduction], stages: bool = False) -> list[dict[str, Any]]:
    """One row per (file, case, stage, device): a package's energy split among its GCDs
    (:func:`energy_hpc.analysis.attribution.package_shares`)."""
    out = []
    for red in unique_runs(reds):
        w = red.windows
        counted = (w["phase"] == "measure") & (w["status"] == "ok") & (w["end"] > w["start"])
        cells: dict[tuple[int, str, int], dict[str, Any]] = {}
        for cr in red.channels:
            if cr.role not in ("device", "package"):
                continue
            m = cr.meta
            rec_rank = int(m.get("rank", 0))
            for c in sorted(set(int(x) for x in w["case"][cr.own_idx])):
                sel_case = counted & (w["case"] == c)
                ranks_in_case = sorted(set(int(r) for r in w["rank"][sel_case]))
                if cr.role == "package":
                    shares, label = package_shares(
                        m, red.bus_to_rank(str(m.get("host", ""))), rec_rank, ranks_in_case
                    )
                else:
                    shares, label = {rec_rank: 1.0}, "own channel"
                for st in sorted(set(str(s) for s in w["stage"][cr.own_idx])):
                    if st and not stages:
                        continue
                    j = np.flatnonzero((w["case"][cr.own_idx] == c) & (w["stage"][cr.own_idx] == st))
                    e = cr.own.energy_J[j]
                    # a window with no data is not 0 J: the cell becomes NaN and says how many
                    no_data = int((~np.isfinite(e)).sum())
                    E = float(e.sum()) if not no_data else math.nan
                    # random parts in quadrature, the one-sided part linearly
                    sys_j = cr.own.systematic_J[j] if cr.own.systematic_J is not None else np.zeros(len(j))
                    var = float(np.nansum(cr.own.random_J()[j] ** 2)) + float(np.nansum(sys_j)) ** 2
                    for r, share in shares.items():
                        cell = cells.setdefault(
                            (c, st, r),
                            {"energy_J": 0.0, "var": 0.0, "channels": [], "attribution": set(), "no_data": 0},
                        )
                        cell["no_data"] += no_data
                        cell["energy_J"] += share * E
                        cell["var"] += (share**2) * var
                        cell["channels"].append(str(m.get("name", "")))
                        cell["attribution"].add(label if cr.role == "package" else "own channel")
        for (c, st, r), cell in sorted(cells.items()):
            sel = counted & (w["case"] == c) & (w["stage"] == st) & (w["rank"] == r)
            units = float(w["units"][sel].sum())
            unc = math.sqrt(cell["var"])
            out.append(
                {
                    "file": red.path.name,
                    "case": red.params[c],
                    "stage": st,
                    "rank": r,
                    "host": str(red.ranks["host"][r]) if r < len(red.ranks.get("host", [])) else "",
                    "device": str(red.ranks["device_bus_id"][r])
                    if r < len(red.ranks.get("device_bus_id", []))
                    else "",
                    "units": units,
                    "unit": red.units_name[c],
                    "energy_J": cell["energy_J"],
                    "energy_uncertainty_J": unc,
                    "energy_per_unit_J": _nan_div(cell["energy_J"], units),
                    "energy_per_unit_uncertainty_J": _nan_div(unc, units),
                    "channels": sorted(set(cell["channels"])),
                    "attribution": sorted(cell["attribution"]),
                    "data": red.label,
                    "no_data_windows": cell["no_data"],
                }
            )
    return out


# ---------------------------------------------------------------- formatting


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v == 0:
            return "0"
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return "; ".join(map(str, v))
    return str(v)


_COLUMNS = [
    ("task", "task"),
    ("model", "model"),
    ("dtype", "dtype"),
    ("batch_size", "batch"),
    ("n_ranks", "ranks"),
    ("n_nodes", "nodes"),
    ("units", "units"),
    ("seconds", "s"),
    ("energy_J", "energy J"),
    ("energy_per_unit_J", "J/unit"),
    ("energy_per_unit_meas_unc_J", "±meas J/unit"),
    ("energy_per_unit_sem_J", "±SEM J/unit"),
    ("energy_per_unit_unc_J", "±total J/unit"),
    ("n_iterations", "n iter"),
    ("wh_per_1000_units", "Wh/1000"),
    ("mean_power_W", "W/device"),
    ("idle_power_W", "idle W"),
    ("net_energy_per_unit_J", "net J/unit"),
    ("counter_vs_integral_pct", "int-ctr %"),
    ("method", "method"),
]
_STAGE_COLUMN = ("stage", "stage")
_MODULE_COLUMN = (
    "module_energy_per_unit_J",
    "module J/unit",
)  # GH200 module scope (GPU + Grace CPU + memory)
_NODE_COLUMNS = [("node_energy_per_unit_J", "node J/unit"), ("node_rest_per_unit_J", "rest J/unit")]


def _columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    cols = list(_COLUMNS)
    if any(r.get("stage") for r in rows):
        cols.insert(4, _STAGE_COLUMN)
    if any(r.get("label") for r in rows):
        cols.insert(1, ("label", "label"))
    if any(r.get("aux_unit") for r in rows):
        cols.insert(cols.index(("wh_per_1000_units", "Wh/1000")), ("energy_per_aux_unit_J", "J/aux unit"))
    if any(isinstance(r.get("node_energy_J"), float) and math.isfinite(r["node_energy_J"]) for r in rows):
        cols[-1:-1] = _NODE_COLUMNS
    if any(r.get("module_includes_cpu_memory") and r.get("energy_scope") != MODULE_SCOPE for r in rows):
        cols[-1:-1] = [_MODULE_COLUMN]
    return cols


def _cells(row: dict[str, Any], cols: list[tuple[str, str]]) -> list[str]:
    cells = []
    for key, _ in cols:
        v = row.get(key)
        if key == "units":
            v = f"{_fmt(v)} {row['unit']}"
        elif key == "energy_per_aux_unit_J" and row.get("aux_unit"):
            v = f"{_fmt(v)} per {row['aux_unit']}"
        cells.append(_fmt(v))
    return cells


# what each ± is, under every table that shows them
UNCERTAINTY_LEGEND = (
    "±meas: measurement uncertainty, 1 sigma (sensor model, docs/analysis.md; for an ESTIMATE it includes "
    "the watts-per-core assumption); ±SEM: standard error of the mean from the spread between the n iter "
    "iterations (all repeats pooled; '-' when fewer than 2); ±total: both in quadrature"
)


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    notes = []
    for i, r in enumerate(rows):
        for f in r["flags"]:
            notes.append(f"row {i + 1}: {f}")
    return notes


def is_emulated(kind: str) -> bool:
    """Whether a row's ``data`` is synthetic data from emulated sensors (``EMULATED h100``)."""
    return str(kind).startswith(EMULATED_MARK)


def data_banner(rows: list[dict[str, Any]]) -> str:
    """One line saying what kind of numbers these are (every output carries it)."""
    kinds = {r.get("data", "measured") for r in rows}
    parts = []
    if "SYNTHETIC" in kinds:
        parts.append("SYNTHETIC sensor data (not measurements)")
    for k in sorted(k for k in kinds if is_emulated(k)):
        parts.append(f"SYNTHETIC ({sensor_words(k)}, not a measurement)")
    if "ESTIMATE" in kinds:
        parts.append("ESTIMATE from CPU time x watts per core (a model, not measurements)")
    if "measured" in kinds or not kinds:
        parts.append("measured (counter = hardware energy counter, integral = sampled power)")
    return ("MIXED: " if len(parts) > 1 else "") + "; ".join(parts)


def format_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([_jsonable(r) for r in rows], indent=2) + "\n"
    cols = _columns(rows)
    headers = [h for _, h in cols]
    body = [_cells(r, cols) for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        wr = csv.writer(buf)
        keys = [k for k in rows[0] if k not in ("case", "files", "flags")] if rows else []
        wr.writerow(keys + ["flags"])
        for r in rows:
            wr.writerow(
                [_fmt(r[k], 8) if isinstance(r[k], (float, list)) else r[k] for k in keys]
                + ["; ".join(r["flags"])]
            )
        return buf.getvalue()
    if fmt == "latex":

        def esc(s: str) -> str:
            return (
                s.replace("\\", "\\textbackslash{}")
                .replace("_", "\\_")
                .replace("%", "\\%")
                .replace("&", "\\&")
                .replace("#", "\\#")
                .replace("±", "$\\pm$")
            )

        n_text = sum(1 for k, _ in cols if k in ("task", "model", "dtype", "stage"))
        spec = "l" * n_text + "r" * (len(headers) - n_text - 1) + "l"
        lines = [
            f"% {esc(data_banner(rows))}",
            "\\begin{tabular}{" + spec + "}",
            "\\hline",
            " & ".join(esc(h) for h in headers) + " \\\\",
            "\\hline",
        ]
        lines += [" & ".join(esc(c) for c in cells) + " \\\\" for cells in body]
        lines += ["\\hline", "\\end{tabular}"]
        lines += [f"% {esc(UNCERTAINTY_LEGEND)}"] + [f"% {esc(n)}" for n in _notes(rows)]
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    out = [
        f"Data: {data_banner(rows)}",
        "",
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |" for cells in body]
    out += ["", UNCERTAINTY_LEGEND]
    notes = _notes(rows)
    if notes:
        out.append("")
        out += [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
