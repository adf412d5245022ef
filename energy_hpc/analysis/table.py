"""Per-case energy tables over one or many run files.

Each run file is reduced channel by channel (one channel's samples in memory at a time) into per-case
sums; sums from several files with the same grouping key merge (a study over node counts, repeats).

Which channels count: the rank-level device channels (GPU, GCD package, or the CPU-time estimate) are
the row's ``energy_J``; node-level channels (pm_counters, RAPL) go to their own columns. A run with no
rank-level channel (e.g. RAPL only) falls back to the node-level CPU+memory channels, and says so in
``energy_scope``. An MI250X package channel is recorded once, on the rank of its primary GCD, so it is
summed once; its energy covers both GCDs' ranks, which is why mean power per device divides by the
rank-seconds of every rank.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from energy_hpc.analysis.energy import channel_window_energy
from energy_hpc.analysis.runfile import RunFile

log = logging.getLogger(__name__)

FORMATS = ("markdown", "csv", "json", "latex")
_METHOD_ORDER = ("synthetic", "estimate", "integral", "counter")


@dataclass
class _Acc:
    params: dict[str, Any]
    unit: str
    n_nodes: int
    n_ranks: set = field(default_factory=set)  # ranks per file that ran the case
    rank_runs: int = 0  # (file, rank) pairs
    wall_seconds: float = 0.0  # sum over files of the mean measured seconds per rank
    files: list[str] = field(default_factory=list)
    n_windows: int = 0
    units: float = 0.0
    rank_seconds: float = 0.0
    energy: dict[str, float] = field(default_factory=lambda: {"device": 0.0, "hostcpu": 0.0, "node": 0.0})
    var: dict[str, float] = field(default_factory=lambda: {"device": 0.0, "hostcpu": 0.0, "node": 0.0})
    idle_energy: dict[str, float] = field(default_factory=lambda: {"device": 0.0, "hostcpu": 0.0, "node": 0.0})
    idle_power: dict[str, float] = field(default_factory=lambda: {"device": 0.0, "hostcpu": 0.0, "node": 0.0})
    has: dict[str, bool] = field(default_factory=lambda: {"device": False, "hostcpu": False, "node": False})
    methods: dict[str, set] = field(default_factory=lambda: {"device": set(), "hostcpu": set(), "node": set()})
    both_counter: float = 0.0  # device energy over windows where counter and integral both exist
    both_integral: float = 0.0
    peak_W: float = -math.inf
    short: int = 0
    interrupted: int = 0
    failed: int = 0
    partial_files: list[str] = field(default_factory=list)
    synthetic: bool = False
    estimate: bool = False
    n_files_idle_missing: int = 0

    def merge(self, o: "_Acc") -> None:
        self.n_ranks |= o.n_ranks
        self.files += o.files
        for k in ("rank_runs", "wall_seconds", "n_windows", "units", "rank_seconds", "both_counter", "both_integral", "short", "interrupted",
                  "failed", "n_files_idle_missing"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        for d in ("energy", "var", "idle_energy", "idle_power"):
            for k in getattr(self, d):
                getattr(self, d)[k] += getattr(o, d)[k]
        for k in self.has:
            self.has[k] |= o.has[k]
            self.methods[k] |= o.methods[k]
        self.peak_W = max(self.peak_W, o.peak_W)
        self.partial_files += o.partial_files
        self.synthetic |= o.synthetic
        self.estimate |= o.estimate


def _kind(meta: dict[str, Any]) -> str:
    """device: rank-level channels; hostcpu: node-level CPU/memory (RAPL, pm_counters cpu/memory);
    node: whole-node channels (pm_counters power/energy)."""
    if not int(meta.get("node_level", 0)):
        return "device"
    return "node" if meta.get("scope") == "node" else "hostcpu"


def _counter_ok(meta: dict[str, Any]) -> bool:
    """A channel flagged by counter hygiene (note starts with 'counter-fault') uses the integral."""
    return bool(int(meta.get("has_energy", 0))) and not str(meta.get("note", "")).startswith("counter-fault")


def _method_label(methods: set[str]) -> str:
    methods = {m for m in methods if m}
    if not methods:
        return "none"
    for m in ("synthetic", "estimate"):
        if m in methods:
            return m
    return "+".join(sorted(methods, key=_METHOD_ORDER.index, reverse=True))


def reduce_file(path: str | Path) -> dict[int, _Acc]:
    """Per-case sums for one run file."""
    with RunFile(path) as rf:
        w = rf.window_table()
        phase, stage, status = w["phase"].astype(str), w["stage"].astype(str), w["status"].astype(str)
        rank, case = w["rank"].astype(int), w["case"].astype(int)
        start, end, units = w["start"].astype(float), w["end"].astype(float), w["units"].astype(float)
        is_iter = (phase == "measure") & (stage == "")
        counted = is_iter & (status == "ok")
        accs: dict[int, _Acc] = {}
        for c in range(rf.n_cases):
            a = _Acc(params=rf.case_params(c), unit=rf.case_unit(c), n_nodes=rf.n_nodes, files=[str(path)])
            sel = counted & (case == c)
            nr = len(np.unique(rank[sel]))
            a.n_ranks = {nr} if nr else set()
            a.rank_runs = nr
            a.n_windows = int(sel.sum())
            a.units = float(units[sel].sum())
            a.rank_seconds = float((end[sel] - start[sel]).sum())
            a.wall_seconds = a.rank_seconds / nr if nr else 0.0
            a.interrupted = int((is_iter & (case == c) & (status == "interrupted")).sum())
            a.failed = int((is_iter & (case == c) & (status == "failed")).sum())
            if rf.status != "complete":
                a.partial_files.append(f"{Path(path).name}: {rf.status_reason or rf.status}")
            a.synthetic = rf.synthetic
            accs[c] = a
        idle_sel = phase == "idle"
        for tr in rf.iter_traces():
            m = tr.meta
            r = int(m["rank"])
            kind = _kind(m)
            mine = counted & (rank == r)
            idle = idle_sel & (rank == r)
            if not mine.any():
                continue
            idx = np.flatnonzero(mine)
            idle_idx = np.flatnonzero(idle)
            all_idx = np.concatenate([idx, idle_idx])
            we = channel_window_energy(tr.time, tr.power, tr.energy, start[all_idx], end[all_idx],
                                       update_period=float(m.get("update_period", 0.0)),
                                       resolution=float(m.get("energy_resolution", 0.0)),
                                       method_hint=str(m.get("method", "counter")), counter_ok=_counter_ok(m))
            k = len(idx)
            idle_J = we.energy_J[k:]
            idle_dur = (end[idle_idx] - start[idle_idx]).sum()
            idle_W = float(np.nansum(idle_J) / idle_dur) if idle_dur > 0 and np.isfinite(idle_J).any() else math.nan
            for j, wi in enumerate(idx):
                a = accs[int(case[wi])]
                e = we.energy_J[j]
                a.has[kind] = True
                if not np.isfinite(e):
                    a.methods[kind].add("")
                    continue
                a.energy[kind] += float(e)
                a.var[kind] += float(we.uncertainty_J[j]) ** 2
                a.methods[kind].add(str(we.method[j]))
                dur = end[wi] - start[wi]
                if math.isfinite(idle_W):
                    a.idle_energy[kind] += idle_W * dur
                else:
                    a.n_files_idle_missing += 1
                if kind == "device":
                    a.peak_W = max(a.peak_W, float(we.peak_W[j]) if np.isfinite(we.peak_W[j]) else -math.inf)
                    a.short += int(we.short[j])
                    if np.isfinite(we.counter_J[j]) and np.isfinite(we.integral_J[j]):
                        a.both_counter += float(we.counter_J[j])
                        a.both_integral += float(we.integral_J[j])
            # idle power per channel, attributed once to every case this channel measured
            for c in {int(case[wi]) for wi in idx}:
                if math.isfinite(idle_W):
                    accs[c].idle_power[kind] += idle_W
            if m.get("method") == "estimate":
                for c in {int(case[wi]) for wi in idx}:
                    accs[c].estimate = True
        return accs


def _row(key_fields: dict[str, Any], a: _Acc) -> dict[str, Any]:
    scope = "devices" if a.has["device"] else ("cpu+memory (node-level)" if a.has["hostcpu"] else
                                               ("node" if a.has["node"] else "none"))
    kind = {"devices": "device", "cpu+memory (node-level)": "hostcpu", "node": "node"}.get(scope, "device")
    n_ranks = max(a.n_ranks) if a.n_ranks else 0
    energy = a.energy[kind] if a.has[kind] else math.nan
    unc = math.sqrt(a.var[kind]) if a.has[kind] else math.nan
    units = a.units
    per_unit = energy / units if units > 0 else math.nan
    seconds = a.wall_seconds if a.rank_runs else math.nan
    net = energy - a.idle_energy[kind]
    n_dev = max(a.rank_runs, 1)
    method = _method_label(a.methods[kind])
    flags = []
    if a.synthetic:
        flags.append("SYNTHETIC data: not a measurement")
    if a.estimate or method == "estimate":
        flags.append("ESTIMATE from CPU time: not a measurement")
    if a.partial_files:
        flags.append("partial run: " + "; ".join(a.partial_files)[:300])
    if a.interrupted:
        flags.append(f"{a.interrupted} interrupted window(s) left out")
    if a.failed:
        flags.append(f"{a.failed} failed window(s) left out")
    if len(a.n_ranks) > 1:
        flags.append(f"groups runs with different rank counts: {sorted(a.n_ranks)}")
    if a.short:
        flags.append(f"{a.short} window(s) shorter than 3 sensor updates")
    if "" in a.methods[kind]:
        flags.append("some windows had no samples on some channel")
    node_J = a.energy["node"] if a.has["node"] else math.nan
    row = {
        "case": a.params,
        **key_fields,
        "task": a.params.get("task"), "model": a.params.get("model"), "dtype": a.params.get("dtype"),
        "batch_size": a.params.get("batch_size"),
        "n_ranks": n_ranks, "n_nodes": a.n_nodes, "n_files": len(a.files), "iterations": a.n_windows,
        "units": units, "unit": a.unit, "seconds": seconds,
        "throughput_per_s": units / seconds if seconds and seconds > 0 else math.nan,
        "energy_J": energy, "energy_uncertainty_J": unc,
        "energy_per_unit_J": per_unit,
        "energy_per_unit_uncertainty_J": unc / units if units > 0 else math.nan,
        "wh_per_1000_units": per_unit * 1000.0 / 3600.0 if units > 0 else math.nan,
        "mean_power_W": energy / a.rank_seconds if a.rank_seconds > 0 else math.nan,
        "idle_power_W": a.idle_power[kind] / n_dev if a.has[kind] else math.nan,
        "peak_power_W": a.peak_W if math.isfinite(a.peak_W) else math.nan,
        "net_energy_J": net, "net_energy_per_unit_J": net / units if units > 0 else math.nan,
        "node_energy_J": node_J,
        "node_energy_per_unit_J": node_J / units if units > 0 and a.has["node"] else math.nan,
        "host_cpu_memory_energy_J": a.energy["hostcpu"] if a.has["hostcpu"] and kind != "hostcpu" else math.nan,
        "counter_vs_integral_pct": (100.0 * (a.both_integral - a.both_counter) / a.both_counter
                                    if a.both_counter else math.nan),
        "method": method, "energy_scope": scope, "synthetic": a.synthetic,
        "flags": flags, "files": a.files,
    }
    return row


def _key(a: _Acc, by: Sequence[str] | None) -> tuple[tuple[str, Any], ...]:
    nr = max(a.n_ranks) if a.n_ranks else 0
    fields = {**a.params, "n_ranks": nr, "n_nodes": a.n_nodes, "unit": a.unit}
    if not by:
        return (("case", json.dumps(a.params, sort_keys=True)), ("n_ranks", nr), ("n_nodes", a.n_nodes))
    return tuple((b, json.dumps(fields.get(b), sort_keys=True)) for b in by)


def energy_table(paths: Iterable[str | Path], by: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per case (or per ``by`` group) over the given run files."""
    groups: dict[tuple, _Acc] = {}
    for p in paths:
        for a in reduce_file(p).values():
            if a.n_windows == 0 and not a.interrupted and not a.failed:
                continue
            k = _key(a, by) + (("unit", a.unit),)
            if k in groups:
                groups[k].merge(a)
            else:
                groups[k] = a
    rows = []
    for k, a in groups.items():
        key_fields = {name: json.loads(v) for name, v in k if name not in ("case", "unit")} if by else {}
        rows.append(_row(key_fields, a))
    return rows


# ---------------------------------------------------------------- formatting

def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v == 0:
            return "0"
        return f"{v:.{digits}g}"
    return str(v)


_COLUMNS = [
    ("task", "task"), ("model", "model"), ("dtype", "dtype"), ("batch_size", "batch"), ("n_ranks", "ranks"),
    ("n_nodes", "nodes"), ("units", "units"), ("seconds", "s"), ("energy_J", "energy J"),
    ("energy_per_unit_J", "J/unit"), ("energy_per_unit_uncertainty_J", "± J/unit"),
    ("wh_per_1000_units", "Wh/1000"), ("mean_power_W", "W/device"), ("idle_power_W", "idle W"),
    ("net_energy_per_unit_J", "net J/unit"), ("method", "method"),
]


def _cells(row: dict[str, Any]) -> list[str]:
    cells = []
    for key, _ in _COLUMNS:
        v = row.get(key)
        if key == "units":
            v = f"{_fmt(v)} {row['unit']}"
        cells.append(_fmt(v))
    return cells


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    notes = []
    for i, r in enumerate(rows):
        for f in r["flags"]:
            notes.append(f"row {i + 1}: {f}")
    return notes


def format_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([_jsonable(r) for r in rows], indent=2) + "\n"
    headers = [h for _, h in _COLUMNS]
    body = [_cells(r) for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        wr = csv.writer(buf)
        keys = [k for k in rows[0] if k not in ("case", "files", "flags")] if rows else []
        wr.writerow(keys + ["flags"])
        for r in rows:
            wr.writerow([_fmt(r[k], 8) if isinstance(r[k], float) else r[k] for k in keys] + ["; ".join(r["flags"])])
        return buf.getvalue()
    if fmt == "latex":
        esc = lambda s: s.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%") \
            .replace("&", "\\&").replace("#", "\\#").replace("±", "$\\pm$")  # noqa: E731
        lines = ["\\begin{tabular}{" + "l" * 4 + "r" * (len(headers) - 5) + "l}", "\\hline",
                 " & ".join(esc(h) for h in headers) + " \\\\", "\\hline"]
        lines += [" & ".join(esc(c) for c in cells) + " \\\\" for cells in body]
        lines += ["\\hline", "\\end{tabular}"]
        lines += [f"% {esc(n)}" for n in _notes(rows)]
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
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
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    return v
