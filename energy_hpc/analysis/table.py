"""Per-case energy tables over one or many run files (a study: many files, any folder depth).

Each file is reduced channel by channel (:mod:`energy_hpc.analysis.reduce`) into per-(case, stage)
sums; sums from several files with the same grouping key merge (repeats, or ``--by`` groups). Files of
different data kinds (measured, ESTIMATE, SYNTHETIC) never merge.

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
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from energy_hpc.analysis.attribution import package_shares
from energy_hpc.analysis.reduce import RunReduction, reduce_run

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
    data: str  # measured, ESTIMATE or SYNTHETIC
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
    synthetic: bool = False
    estimate: bool = False

    def merge(self, o: "_Acc") -> None:
        self.n_ranks |= o.n_ranks
        self.files += o.files
        self.aux_unit = self.aux_unit or o.aux_unit
        for k in ("rank_runs", "wall_seconds", "n_windows", "units", "iter_units", "aux_units", "rank_seconds", "short",
                  "no_data", "interrupted", "failed", "idle_missing"):
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
        self.synthetic |= o.synthetic
        self.estimate |= o.estimate


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
    counted = (w["phase"] == "measure") & (w["status"] == "ok") & (w["end"] > w["start"])
    measure = w["phase"] == "measure"
    accs: dict[tuple[int, str], _Acc] = {}
    for c in range(len(red.params)):
        stages = sorted(set(w["stage"][measure & (w["case"] == c)]) | {""})
        whole = counted & (w["case"] == c) & (w["stage"] == "")
        for st in stages:
            a = _Acc(params=red.params[c], unit=red.units_name[c], n_nodes=red.n_nodes, stage=st, data=red.label,
                     files=[str(red.path)], synthetic=red.synthetic, estimate=red.estimate)
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
            a.interrupted = int((measure & (w["case"] == c) & (w["stage"] == st) & (w["status"] == "interrupted")).sum())
            a.failed = int((measure & (w["case"] == c) & (w["stage"] == st) & (w["status"] == "failed")).sum())
            if red.missing:
                a.partial.append(f"{red.path.name}: " + "; ".join(red.missing))
            accs[(c, st)] = a

    node_sets: dict[str, set[int]] = defaultdict(set)  # which nodes have node / hostcpu channels
    node_dev: dict[int, float] = defaultdict(float)  # node window -> device J over it
    for cr in red.channels:
        m, role = cr.meta, cr.role
        kind = "device" if role in ("device", "package") else ("node" if role == "node" else
                                                               "hostcpu" if role in ("node_cpu", "node_memory")
                                                               else "other")
        shares: dict[int, float] = {}
        if role == "package":
            bus = red.bus_to_rank(str(m.get("host", "")))
            shares, label = package_shares(m, bus, int(m.get("rank", 0)))
        if kind == "device":
            per_acc_dur: dict[tuple[int, str], float] = defaultdict(float)
            we = cr.own
            for j, wi in enumerate(cr.own_idx):
                key = (int(w["case"][wi]), str(w["stage"][wi]))
                a = accs.get(key)
                if a is None:
                    continue
                a.has.add("device")
                e = we.energy_J[j]
                if not np.isfinite(e):
                    a.no_data += 1
                    a.methods["device"].add("")
                    continue
                dur = float(w["end"][wi] - w["start"][wi])
                a.s["device"] += float(e)
                a.s["device_var"] += float(we.uncertainty_J[j]) ** 2
                a.methods["device"].add(str(we.method[j]))
                if math.isfinite(cr.idle_W):
                    a.s["device_idle"] += cr.idle_W * dur
                    per_acc_dur[key] += dur
                else:
                    a.idle_missing += 1
                if np.isfinite(we.counter_J[j]) and np.isfinite(we.integral_J[j]) and not we.counter_fault[j]:
                    a.s["both_counter"] += float(we.counter_J[j])
                    a.s["both_integral"] += float(we.integral_J[j])
                if we.counter_fault[j]:
                    a.faults[str(we.counter_fault[j])] += 1
                a.short += int(we.short[j])
                if np.isfinite(we.peak_W[j]):
                    share = max(shares.values()) if shares else 1.0
                    a.peak_W = max(a.peak_W, float(we.peak_W[j]) * share)
                if role == "package":
                    a.attribution.add(label)
            for key, dur in per_acc_dur.items():
                accs[key].s["device_idle_var"] += (cr.idle_W_unc * dur) ** 2 if math.isfinite(cr.idle_W_unc) else 0.0
                accs[key].s["idle_W_sum"] += cr.idle_W
            for j, k in enumerate(cr.node_idx):
                if np.isfinite(cr.node.energy_J[j]):
                    node_dev[int(k)] += float(cr.node.energy_J[j])
            continue
        # node-level channels: over the node windows
        col = {"node": "node", "node_cpu": "node_cpu", "node_memory": "node_memory", "node_accel": "node_accel"
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
                if not np.isfinite(e):
                    a.methods[t].add("")
                    continue
                a.s[t] += float(e)
                a.s[t + "_var"] += float(cr.node.uncertainty_J[j]) ** 2
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
        if node in node_sets["node"]:
            a.s["node_units"] += float(nw["units"][k])
            a.s["node_devices"] += node_dev.get(k, 0.0)
            a.s["node_count"] += 1
        if node in node_sets["hostcpu"]:
            a.s["hostcpu_units"] += float(nw["units"][k])
    for a in accs.values():
        a.s["n_node_channels"] = float(len(node_sets["node"]))
    return accs


def _nan_div(a: float, b: float) -> float:
    return a / b if b and b > 0 and math.isfinite(a) else math.nan


def _row(key_fields: dict[str, Any], a: _Acc) -> dict[str, Any]:
    kind = "device" if "device" in a.has else ("hostcpu" if "hostcpu" in a.has else
                                               ("node" if "node" in a.has else "device"))
    scope = {"device": "devices", "hostcpu": "cpu+memory (node-level)", "node": "node"}[kind]
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
    var = s[kind + "_var"]
    unc = math.sqrt(var) if kind in a.has else math.nan
    net = energy - s[kind + "_idle"]
    net_unc = math.sqrt(var + s[kind + "_idle_var"]) if kind in a.has else math.nan
    seconds = a.wall_seconds if a.rank_runs else math.nan
    n_dev = max(a.rank_runs, 1)
    idle_W = (s["idle_W_sum"] / n_dev if kind == "device" else s[kind + "_idle_W_sum"]) if kind in a.has else math.nan
    method = _method_label(a.methods[kind])
    flags = []
    if a.synthetic:
        flags.append("SYNTHETIC data: not a measurement")
    if a.estimate or method == "estimate":
        flags.append("ESTIMATE from CPU time: not a measurement")
    if a.partial:
        flags.append("partial run: " + " | ".join(dict.fromkeys(a.partial))[:400])
    if a.interrupted:
        flags.append(f"{a.interrupted} interrupted window(s) left out")
    if a.failed:
        flags.append(f"{a.failed} failed window(s) left out")
    if len(a.n_ranks) > 1:
        flags.append(f"groups runs with different rank counts: {sorted(a.n_ranks)}")
    if a.short:
        flags.append(f"{a.short} window(s) shorter than 3 sensor updates: edge effects dominate")
    if a.faults:
        flags.append("energy counter distrusted, power integral used: " +
                     ", ".join(f"{n} window(s) {f}" for f, n in sorted(a.faults.items())))
    if a.no_data or "" in a.methods[kind]:
        flags.append(f"{a.no_data} window(s) had no samples on some channel (energy under-counted)")
    if a.idle_missing:
        flags.append("no idle window on some channel: net energy counts those windows as gross")
    for lab in sorted(a.attribution):
        flags.append(f"MI250X package energy: {lab}")
    if a.stage and a.units <= 0:
        flags.append("stage windows carry no units: per unit = per unit of the whole iteration")
    has_node = "node" in a.has
    node_J = s["node"] if has_node else math.nan
    node_units = s["node_units"]
    node_dev = s["node_devices"] if has_node else math.nan
    rest = node_J - node_dev if has_node else math.nan
    both_c, both_i = s["both_counter"], s["both_integral"]
    row = {
        "case": a.params,
        **key_fields,
        "stage": a.stage,
        "task": a.params.get("task"), "model": a.params.get("model"), "dtype": a.params.get("dtype"),
        "batch_size": a.params.get("batch_size"), "label": a.params.get("label", ""),
        "n_ranks": n_ranks, "n_nodes": a.n_nodes, "n_files": len(a.files), "iterations": a.n_windows,
        "units": units, "unit": a.unit, "seconds": seconds,
        "aux_units": a.aux_units, "aux_unit": a.aux_unit,
        "energy_per_aux_unit_J": _nan_div(energy, a.aux_units) if a.aux_unit else math.nan,
        "throughput_per_s": _nan_div(units, seconds),
        "energy_J": energy, "energy_uncertainty_J": unc,
        "energy_per_unit_J": _nan_div(energy, units),
        "energy_per_unit_uncertainty_J": _nan_div(unc, units),
        "wh_per_1000_units": _nan_div(energy, units) * 1000.0 / 3600.0,
        "mean_power_W": _nan_div(energy, a.rank_seconds) if kind == "device" else _nan_div(energy, seconds),
        "idle_power_W": idle_W,
        "peak_power_W": a.peak_W if math.isfinite(a.peak_W) else math.nan,
        "net_energy_J": net, "net_energy_uncertainty_J": net_unc,
        "net_energy_per_unit_J": _nan_div(net, units),
        "net_energy_per_unit_uncertainty_J": _nan_div(net_unc, units),
        "counter_energy_J": both_c if both_c else math.nan,
        "integral_energy_J": both_i if both_c else math.nan,
        "counter_vs_integral_pct": 100.0 * (both_i - both_c) / both_c if both_c else math.nan,
        "node_energy_J": node_J,
        "node_energy_uncertainty_J": math.sqrt(s["node_var"]) if has_node else math.nan,
        "node_energy_per_unit_J": _nan_div(node_J, node_units) if has_node else math.nan,
        "node_devices_energy_J": node_dev,
        "node_rest_energy_J": rest,
        "node_rest_per_unit_J": _nan_div(rest, node_units) if has_node else math.nan,
        "node_cpu_energy_J": s["node_cpu"] if "node_cpu" in a.has else math.nan,
        "node_memory_energy_J": s["node_memory"] if "node_memory" in a.has else math.nan,
        "node_net_energy_per_unit_J": _nan_div(node_J - s["node_idle"], node_units) if has_node else math.nan,
        "host_cpu_memory_energy_J": s["hostcpu"] if "hostcpu" in a.has and kind != "hostcpu" else math.nan,
        "method": method, "energy_scope": scope, "data": a.data, "synthetic": a.synthetic,
        "estimate": a.estimate, "per_unit_of": per_unit_of if a.stage else "iteration units",
        "short_windows": a.short, "counter_fallback_windows": int(sum(a.faults.values())),
        "attribution": sorted(a.attribution),
        "flags": flags, "files": a.files,
    }
    return row


def _key(a: _Acc, by: Sequence[str] | None) -> tuple[tuple[str, Any], ...]:
    nr = max(a.n_ranks) if a.n_ranks else 0
    fields = {**a.params, "n_ranks": nr, "n_nodes": a.n_nodes, "unit": a.unit}
    if not by:
        k = (("case", json.dumps(a.params, sort_keys=True)), ("n_ranks", nr), ("n_nodes", a.n_nodes))
    else:
        k = tuple((b, json.dumps(fields.get(b), sort_keys=True)) for b in by)
    return k + (("stage", a.stage), ("unit", a.unit), ("data", a.data))


def reduce_files(paths: Iterable[str | Path]) -> list[RunReduction]:
    return [reduce_run(p) for p in paths]


def rows_from_reductions(reds: Iterable[RunReduction], by: Sequence[str] | None = None,
                         stages: bool = False) -> list[dict[str, Any]]:
    groups: dict[tuple, _Acc] = {}
    for red in reds:
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
        key_fields = {name: json.loads(v) for name, v in k
                      if name not in ("case", "unit", "stage", "data")} if by else {}
        rows.append(_row(key_fields, a))
    return rows


def energy_table(paths: Iterable[str | Path], by: Sequence[str] | None = None,
                 stages: bool = False) -> list[dict[str, Any]]:
    """One row per case (or per ``by`` group), and per stage with ``stages``, over the given run files."""
    return rows_from_reductions(reduce_files(paths), by=by, stages=stages)


# ---------------------------------------------------------------- per device (MI250X split)

def device_rows(reds: Iterable[RunReduction], stages: bool = False) -> list[dict[str, Any]]:
    """One row per (file, case, stage, device): a package's energy split among its GCDs
    (:func:`energy_hpc.analysis.attribution.package_shares`)."""
    out = []
    for red in reds:
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
                    shares, label = package_shares(m, red.bus_to_rank(str(m.get("host", ""))), rec_rank,
                                                   ranks_in_case)
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
                    var = float(np.nansum(cr.own.uncertainty_J[j] ** 2))
                    for r, share in shares.items():
                        cell = cells.setdefault((c, st, r), {"energy_J": 0.0, "var": 0.0, "channels": [],
                                                             "attribution": set(), "no_data": 0})
                        cell["no_data"] += no_data
                        cell["energy_J"] += share * E
                        cell["var"] += (share ** 2) * var
                        cell["channels"].append(str(m.get("name", "")))
                        cell["attribution"].add(label if cr.role == "package" else "own channel")
        for (c, st, r), cell in sorted(cells.items()):
            sel = counted & (w["case"] == c) & (w["stage"] == st) & (w["rank"] == r)
            units = float(w["units"][sel].sum())
            unc = math.sqrt(cell["var"])
            out.append({
                "file": red.path.name, "case": red.params[c], "stage": st, "rank": r,
                "host": str(red.ranks["host"][r]) if r < len(red.ranks.get("host", [])) else "",
                "device": str(red.ranks["device_bus_id"][r]) if r < len(red.ranks.get("device_bus_id", [])) else "",
                "units": units, "unit": red.units_name[c], "energy_J": cell["energy_J"],
                "energy_uncertainty_J": unc, "energy_per_unit_J": _nan_div(cell["energy_J"], units),
                "energy_per_unit_uncertainty_J": _nan_div(unc, units),
                "channels": sorted(set(cell["channels"])), "attribution": sorted(cell["attribution"]),
                "data": red.label, "no_data_windows": cell["no_data"],
            })
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
    ("task", "task"), ("model", "model"), ("dtype", "dtype"), ("batch_size", "batch"), ("n_ranks", "ranks"),
    ("n_nodes", "nodes"), ("units", "units"), ("seconds", "s"), ("energy_J", "energy J"),
    ("energy_per_unit_J", "J/unit"), ("energy_per_unit_uncertainty_J", "± J/unit"),
    ("wh_per_1000_units", "Wh/1000"), ("mean_power_W", "W/device"), ("idle_power_W", "idle W"),
    ("net_energy_per_unit_J", "net J/unit"), ("counter_vs_integral_pct", "int-ctr %"), ("method", "method"),
]
_STAGE_COLUMN = ("stage", "stage")
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


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    notes = []
    for i, r in enumerate(rows):
        for f in r["flags"]:
            notes.append(f"row {i + 1}: {f}")
    return notes


def data_banner(rows: list[dict[str, Any]]) -> str:
    """One line saying what kind of numbers these are (every output carries it)."""
    kinds = {r.get("data", "measured") for r in rows}
    parts = []
    if "SYNTHETIC" in kinds:
        parts.append("SYNTHETIC sensor data (not measurements)")
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
            wr.writerow([_fmt(r[k], 8) if isinstance(r[k], (float, list)) else r[k] for k in keys]
                        + ["; ".join(r["flags"])])
        return buf.getvalue()
    if fmt == "latex":
        def esc(s: str) -> str:
            return (s.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%")
                    .replace("&", "\\&").replace("#", "\\#").replace("±", "$\\pm$"))
        n_text = sum(1 for k, _ in cols if k in ("task", "model", "dtype", "stage"))
        spec = "l" * n_text + "r" * (len(headers) - n_text - 1) + "l"
        lines = [f"% {esc(data_banner(rows))}", "\\begin{tabular}{" + spec + "}", "\\hline",
                 " & ".join(esc(h) for h in headers) + " \\\\", "\\hline"]
        lines += [" & ".join(esc(c) for c in cells) + " \\\\" for cells in body]
        lines += ["\\hline", "\\end{tabular}"]
        lines += [f"% {esc(n)}" for n in _notes(rows)]
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    out = [f"Data: {data_banner(rows)}", "",
           "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |" for cells in body]
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
