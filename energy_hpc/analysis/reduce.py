"""One run file reduced to energy per (channel, window): the step every table and figure starts from.

Which windows each channel is reduced over:

- a rank-level channel (device, package, estimate): the measured windows of its rank (whole iterations
  and stages, status ``ok``), the rank's idle window(s), and the *node windows* of its node;
- a node-level channel (recorded by the node leader): the node windows of its node and the leader's idle
  window(s).

A *node window* is a piece of the union of the windows of every rank on a node for one (case, stage),
merged so that no two overlap (ranks drift apart between iterations; overlapping spans would count the
node's energy twice). Ranks on a node work at the same time, but only the leader
records the node's channels, so node energy is taken over the span of the node's work and set against
the units every rank of the node produced; device channels are reduced over the same spans so that the
node's rest (CPU, memory, network, fans: node minus devices) compares like with like.

Channels are read one at a time, in sample chunks (:meth:`RunFile.chunks`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from energy_hpc.analysis.attribution import NEVER_ADDED, channel_roles, normalize_device
from energy_hpc.analysis.energy import Scratch, WindowEnergy, reduce_channel
from energy_hpc.analysis.runfile import CHUNK_SAMPLES, RunFile

log = logging.getLogger(__name__)

COUNTER_FAULT_PREFIX = "counter-fault"


def counter_ok(meta: dict[str, Any]) -> bool:
    """A channel flagged by the telemetry side (note starts with 'counter-fault', or a counter_fault
    field) uses the integral throughout."""
    if not int(meta.get("has_energy", 0) or 0):
        return False
    if str(meta.get("counter_fault", "") or ""):
        return False
    return not str(meta.get("note", "") or "").startswith(COUNTER_FAULT_PREFIX)


@dataclass
class ChannelResult:
    meta: dict[str, Any]
    role: str
    own_idx: np.ndarray  # indices into the run's windows
    own: WindowEnergy
    node_idx: np.ndarray  # indices into the run's node windows
    node: WindowEnergy
    idle_W: float  # mean power over the idle window(s); NaN without one
    idle_W_unc: float


@dataclass
class RunReduction:
    path: Path
    attrs: dict[str, Any]
    status: str
    missing: list[str]
    synthetic: bool
    estimate: bool
    n_ranks: int
    n_nodes: int
    params: list[dict[str, Any]]
    units_name: list[str]
    windows: dict[str, np.ndarray]  # the file's windows plus 'node' (node of the window's rank)
    node_windows: dict[str, np.ndarray]  # node, case, stage, iteration, start, end, units, n_ranks
    ranks: dict[str, np.ndarray]
    channels: list[ChannelResult] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "SYNTHETIC" if self.synthetic else ("ESTIMATE" if self.estimate else "measured")

    def bus_to_rank(self, host: str) -> dict[str, int]:
        out = {}
        for r, (h, bus) in enumerate(zip(self.ranks.get("host", []), self.ranks.get("device_bus_id", []))):
            if str(h) == str(host) and str(bus):
                out[normalize_device(str(bus))] = r
        return out


def _str(a: np.ndarray) -> np.ndarray:
    return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in a], dtype=object)


def _node_windows(w: dict[str, np.ndarray], counted: np.ndarray) -> dict[str, np.ndarray]:
    """The spans over which a node's channels count, per (node, case, stage): the union of that node's
    rank windows, merged into intervals that do not overlap. Ranks are not kept in step between
    iterations, so once they drift, iteration i of one rank overlaps iteration i+1 of another; spans
    taken per iteration would then overlap and count the node's energy twice. Each merged interval
    carries the units of the rank windows inside it."""
    groups: dict[tuple, list[int]] = {}
    for i in np.flatnonzero(counted):
        groups.setdefault((int(w["node"][i]), int(w["case"][i]), str(w["stage"][i])), []).append(i)
    cols: dict[str, list] = {k: [] for k in ("node", "case", "stage", "iteration", "start", "end", "units",
                                             "n_ranks")}

    def flush(key: tuple, first_it: int, a: float, b: float, units: float, ranks: set) -> None:
        node, case, stage = key
        for k, v in (("node", node), ("case", case), ("stage", stage), ("iteration", first_it), ("start", a),
                     ("end", b), ("units", units), ("n_ranks", len(ranks))):
            cols[k].append(v)

    for key, idx in sorted(groups.items()):
        idx = sorted(idx, key=lambda i: (float(w["start"][i]), float(w["end"][i])))
        cur = None
        for i in idx:
            a, b = float(w["start"][i]), float(w["end"][i])
            if cur is not None and a <= cur[2]:
                cur[2] = max(cur[2], b)
                cur[3] += float(w["units"][i])
                cur[4].add(int(w["rank"][i]))
            else:
                if cur is not None:
                    flush(key, *cur)
                cur = [int(w["iteration"][i]), a, b, float(w["units"][i]), {int(w["rank"][i])}]
        if cur is not None:
            flush(key, *cur)
    return {k: np.asarray(v, dtype=object if k == "stage" else float if k in ("start", "end", "units")
                          else int) for k, v in cols.items()}


def reduce_run(path: str | Path, chunk: int = CHUNK_SAMPLES) -> RunReduction:
    """Energy per (channel, window) for one run file; logs a warning naming what a partial run lacks."""
    with RunFile(path) as rf:
        w = rf.window_table()
        for k in ("phase", "stage", "status", "unit", "aux_unit"):
            if k in w:
                w[k] = _str(w[k])
        for k in ("rank", "case", "iteration"):
            w[k] = w[k].astype(int)
        for k in ("start", "end", "units"):
            w[k] = w[k].astype(float)
        ranks = rf.rank_table()
        for k in ("host", "device_bus_id", "status"):
            if k in ranks:
                ranks[k] = _str(ranks[k])
        rank_node = {r: int(n) for r, n in enumerate(ranks.get("node", []))}
        w["node"] = np.array([rank_node.get(int(r), 0) for r in w["rank"]], dtype=int)
        missing = rf.missing
        if missing:
            log.warning("%s: partial run, analysed with what is there; missing: %s", Path(path).name,
                        "; ".join(missing))
        red = RunReduction(
            path=Path(path), attrs=rf.attrs, status=rf.status, missing=missing, synthetic=rf.synthetic,
            estimate=rf.estimate or any(m.get("method") == "estimate" for m in rf.channel_meta),
            n_ranks=rf.n_ranks, n_nodes=rf.n_nodes,
            params=[rf.case_params(c) for c in range(rf.n_cases)],
            units_name=[rf.case_unit(c) for c in range(rf.n_cases)], windows=w, node_windows={}, ranks=ranks)
        counted = (w["phase"] == "measure") & (w["status"] == "ok") & (w["end"] > w["start"])
        idle = (w["phase"] == "idle") & (w["status"] == "ok") & (w["end"] > w["start"])
        nw = red.node_windows = _node_windows(w, counted)
        scratch = Scratch()  # work arrays shared by every channel's reduction
        for meta, role in zip(rf.channel_meta, channel_roles(rf.channel_meta)):
            if role in NEVER_ADDED:
                continue
            r, node = int(meta.get("rank", -1)), int(meta.get("node", rank_node.get(int(meta.get("rank", -1)), 0)))
            own_idx = np.flatnonzero(counted & (w["rank"] == r)) if not role.startswith("node") \
                else np.zeros(0, dtype=int)
            idle_idx = np.flatnonzero(idle & (w["rank"] == r))
            node_idx = np.flatnonzero(nw["node"] == node) if len(nw["node"]) else np.zeros(0, dtype=int)
            if not (len(own_idx) or len(node_idx)):
                continue
            starts = np.concatenate([w["start"][own_idx], w["start"][idle_idx], nw["start"][node_idx]]) \
                if len(nw["node"]) else np.concatenate([w["start"][own_idx], w["start"][idle_idx]])
            ends = np.concatenate([w["end"][own_idx], w["end"][idle_idx], nw["end"][node_idx]]) \
                if len(nw["node"]) else np.concatenate([w["end"][own_idx], w["end"][idle_idx]])
            we = reduce_channel(rf.chunks(int(meta["index"]), chunk, overlap=1, reuse=True), starts, ends,
                                update_period=float(meta.get("update_period", 0.0) or 0.0),
                                resolution=float(meta.get("energy_resolution", 0.0) or 0.0),
                                method_hint=str(meta.get("method", "counter")), counter_ok=counter_ok(meta),
                                scratch=scratch)
            a, b = len(own_idx), len(own_idx) + len(idle_idx)
            idle_we = we.take(np.arange(a, b))
            idle_dur = float((w["end"][idle_idx] - w["start"][idle_idx]).sum())
            ok = np.isfinite(idle_we.energy_J)
            if idle_dur > 0 and ok.all() and ok.any():
                idle_W = float(idle_we.energy_J.sum()) / idle_dur
                idle_W_unc = float(np.sqrt((idle_we.uncertainty_J ** 2).sum())) / idle_dur
            else:
                idle_W = idle_W_unc = math.nan
            red.channels.append(ChannelResult(meta, role, own_idx, we.take(np.arange(a)), node_idx,
                                              we.take(np.arange(b, len(starts))), idle_W, idle_W_unc))
        return red
