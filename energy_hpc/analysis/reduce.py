"""One run file reduced to energy per (channel, window): the step every table and figure starts from.

Which windows each channel is reduced over:

- a rank-level channel (device, package, estimate): the measured windows of its rank (whole iterations
  and stages, status ``ok``), the rank's idle window(s), and the *node windows* of its node;
- a node-level channel (recorded by the node leader): the node windows of its node and the leader's idle
  window(s);
- a device recorded by several ranks (ranks bound to one GPU, MIG instances of one GPU: the lowest
  rank's copy, see :func:`~energy_hpc.analysis.attribution.channel_roles`): its *shared windows*, the
  union of the sharing ranks' measured windows for each (case, stage), merged so that no two overlap,
  and the union of their idle windows. Counting one rank's copy over that rank's windows alone would
  lose the energy of the others' windows when they do not coincide (ranks taking turns); counting
  every copy over its own rank's windows would count the GPU twice where they overlap. The shared
  windows are appended to the run's window table with phase ``shared`` (no units, never counted as
  measured windows: the units stay on the ranks' own windows); where the lowest rank's copy has no
  samples in one (its sampler died), the next rank's copy stands in.

A *node window* is a piece of the union of the windows of every rank on a node for one (case, stage),
merged so that no two overlap (ranks drift apart between iterations; overlapping spans would count the
node's energy twice). Ranks on a node work at the same time, but only the leader
records the node's channels, so node energy is taken over the span of the node's work and set against
the units every rank of the node produced; device channels are reduced over the same spans so that the
node's rest (CPU, memory, network, fans: node minus devices) compares like with like.

Channels are read one at a time, in sample chunks (:meth:`RunFile.chunks`).

**Sampling gaps.** While a channel is read, every interval between two valid readings (a finite time and
a finite power or energy) longer than :func:`gap_threshold` of the channel's median read interval (more
than ``GAP_INTERVALS`` intervals *and* more than ``GAP_MIN_S``) is a *sampling gap*: the sampler missed
reads there (a busy machine, a sensor that hung) and the energy across it is interpolated. Each window
keeps the longest such gap that overlaps it (``ChannelResult.own_gap_s``, ``node_gap_s``; 0 where none);
the tables count and flag those windows (``gap_windows``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from energy_hpc.analysis.attribution import (
    NEVER_ADDED,
    Role,
    channel_roles,
    normalize_device,
    role_notes,
    sharer_ranks,
)
from energy_hpc.analysis.energy import Scratch, WindowEnergy, reduce_channel
from energy_hpc.analysis.runfile import CHUNK_SAMPLES, RunFile
from energy_hpc.store import emulated_kind

log = logging.getLogger(__name__)

COUNTER_FAULT_PREFIX = "counter-fault"
# a sampling gap: an interval between valid readings longer than GAP_INTERVALS read intervals and GAP_MIN_S
GAP_INTERVALS = 5.0
GAP_MIN_S = 0.05
SHARED_PHASE = "shared"  # phase of the appended windows of a device recorded by several ranks


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
    role: Role
    own_idx: np.ndarray  # indices into the run's windows
    own: WindowEnergy
    node_idx: np.ndarray  # indices into the run's node windows
    node: WindowEnergy
    idle_W: float  # mean power over the idle window(s); NaN without one
    idle_W_unc: float
    # the longest sampling gap (gap_threshold) overlapping each own / node window, s; 0 where none
    own_gap_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    node_gap_s: np.ndarray = field(default_factory=lambda: np.zeros(0))


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
    # the file's windows plus 'node' (node of the window's rank), then the shared windows (phase
    # SHARED_PHASE) of devices recorded by several ranks
    windows: dict[str, np.ndarray]
    node_windows: dict[str, np.ndarray]  # node, case, stage, iteration, start, end, units, n_ranks
    ranks: dict[str, np.ndarray]
    channels: list[ChannelResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # channels left out of every total, and why
    emulated: list[str] = field(default_factory=list)  # emulated parts (synthetic data from EMULATED sensors)

    @property
    def label(self) -> str:
        """The kind of data: ``measured``, ``ESTIMATE``, ``SYNTHETIC`` or, for synthetic data from emulated
        sensors, ``EMULATED <parts>`` (a kind of its own: it never merges with other synthetic data)."""
        if self.synthetic and self.emulated:
            return emulated_kind(self.emulated)
        return "SYNTHETIC" if self.synthetic else ("ESTIMATE" if self.estimate else "measured")

    def bus_to_rank(self, host: str) -> dict[str, int]:
        out = {}
        # strict=False: a file without device bus ids has no such column, and then no rank matches
        for r, (h, bus) in enumerate(
            zip(self.ranks.get("host", []), self.ranks.get("device_bus_id", []), strict=False)
        ):
            if str(h) == str(host) and str(bus):
                out[normalize_device(str(bus))] = r
        return out


def _str(a: np.ndarray) -> np.ndarray:
    return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in a], dtype=object)


SpanKey = tuple[int | str, ...]  # what windows are grouped by: (node, case, stage) or (case, stage)


class _Span(NamedTuple):
    """Windows of one group merged into one interval."""

    key: SpanKey
    iteration: int  # of the first window
    start: float
    end: float
    units: float  # of the windows inside it
    ranks: set[int]
    first: int  # index of the first window


def _union_spans(w: dict[str, np.ndarray], idx: np.ndarray, key_of: Callable[[int], SpanKey]) -> list[_Span]:
    """The windows ``idx`` grouped by ``key_of(i)`` and merged, group by group, into intervals that do
    not overlap, in key and time order. Ranks are not kept in step between iterations, so once they
    drift, iteration i of one rank overlaps iteration i+1 of another; spans taken per iteration would
    then overlap and count the same energy twice. Each merged interval carries the units of the windows
    inside it."""
    groups: dict[SpanKey, list[int]] = {}
    for i in idx:
        groups.setdefault(key_of(int(i)), []).append(int(i))
    out: list[_Span] = []
    for key, ii in sorted(groups.items()):
        ii = sorted(ii, key=lambda i: (float(w["start"][i]), float(w["end"][i])))
        cur: _Span | None = None
        for i in ii:
            a, b = float(w["start"][i]), float(w["end"][i])
            if cur is not None and a <= cur.end:
                cur.ranks.add(int(w["rank"][i]))
                cur = cur._replace(end=max(cur.end, b), units=cur.units + float(w["units"][i]))
            else:
                if cur is not None:
                    out.append(cur)
                cur = _Span(key, int(w["iteration"][i]), a, b, float(w["units"][i]), {int(w["rank"][i])}, i)
        if cur is not None:
            out.append(cur)
    return out


def _node_windows(w: dict[str, np.ndarray], counted: np.ndarray) -> dict[str, np.ndarray]:
    """The spans over which a node's channels count, per (node, case, stage): the union of that node's
    rank windows (:func:`_union_spans`)."""
    cols: dict[str, list[int | float | str]] = {
        k: [] for k in ("node", "case", "stage", "iteration", "start", "end", "units", "n_ranks")
    }
    spans = _union_spans(
        w, np.flatnonzero(counted), lambda i: (int(w["node"][i]), int(w["case"][i]), str(w["stage"][i]))
    )
    for (node, case, stage), first_it, a, b, units, ranks, _ in spans:
        for k, v in (
            ("node", node),
            ("case", case),
            ("stage", stage),
            ("iteration", first_it),
            ("start", a),
            ("end", b),
            ("units", units),
            ("n_ranks", len(ranks)),
        ):
            cols[k].append(v)
    return {
        k: np.asarray(v, dtype=object if k == "stage" else float if k in ("start", "end", "units") else int)
        for k, v in cols.items()
    }


def _append_shared_windows(
    w: dict[str, np.ndarray], counted: np.ndarray, meta: dict[str, Any], node: int
) -> np.ndarray:
    """Append the shared windows of a device recorded by the ranks ``meta["sharers"]`` (the union of
    their counted windows, per (case, stage)) to the window table; returns their indices."""
    spans = _union_spans(
        w,
        np.flatnonzero(counted & np.isin(w["rank"], sharer_ranks(meta))),
        lambda i: (int(w["case"][i]), str(w["stage"][i])),
    )
    n0 = len(w["rank"])
    if not spans:
        return np.zeros(0, dtype=int)
    src = np.array([s.first for s in spans], dtype=int)
    for k in list(w):
        w[k] = np.concatenate([w[k], w[k][src]])
    new = np.arange(n0, n0 + len(spans))
    w["phase"][new] = SHARED_PHASE
    w["status"][new] = "ok"
    w["start"][new] = [s.start for s in spans]
    w["end"][new] = [s.end for s in spans]
    w["iteration"][new] = [s.iteration for s in spans]
    w["rank"][new] = int(meta.get("rank", 0))
    w["node"][new] = node
    w["units"][new] = 0.0
    if "aux_units" in w:
        w["aux_units"][new] = 0.0
    return new


def gap_threshold(interval_s: float) -> float:
    """The shortest interval between two valid readings that is a sampling gap, for a channel read every
    ``interval_s`` seconds (its median read interval): more than ``GAP_INTERVALS`` intervals and more than
    ``GAP_MIN_S``. The rule lives here only; the tables count what it finds."""
    interval = interval_s if math.isfinite(interval_s) and interval_s > 0 else 0.0
    return max(GAP_INTERVALS * interval, GAP_MIN_S)


class _GapFinder:
    """The sampling gaps of one channel, found while its chunks pass on to the reduction: each chunk is
    looked at before it is handed on (the reader reuses its buffers), and only the intervals over the
    threshold are kept, so the cost is one pass over the time column."""

    def __init__(self) -> None:
        self.last_t = math.nan  # the last valid reading's time, from the chunk before
        self.threshold = math.nan  # set from the first chunk's median interval
        self.starts: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []

    def watch(self, chunks: Iterable[tuple[np.ndarray, ...]]) -> Iterator[tuple[np.ndarray, ...]]:
        for block in chunks:
            self.feed(*block[:3])
            yield block

    def feed(self, t: np.ndarray, p: np.ndarray, e: np.ndarray) -> None:
        valid = np.isfinite(t) & (np.isfinite(p) | np.isfinite(e))
        tv = t[valid]
        if math.isfinite(self.last_t):
            tv = tv[tv > self.last_t]  # chunks overlap by one sample
            tv = np.concatenate([[self.last_t], tv])
        if len(tv) < 2:
            if len(tv):
                self.last_t = float(tv[-1])
            return
        dt = np.diff(tv)
        if math.isnan(self.threshold):
            positive = dt[dt > 0]
            self.threshold = gap_threshold(float(np.median(positive)) if len(positive) else math.nan)
        big = np.flatnonzero(dt > self.threshold)
        if len(big):
            self.starts.append(tv[big])
            self.lengths.append(dt[big])
        self.last_t = float(tv[-1])

    def longest(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The longest gap overlapping each window ``[starts[i], ends[i]]``; 0 where none does."""
        out = np.zeros(len(starts))
        if not self.starts or not len(starts):
            return out
        g_start = np.concatenate(self.starts)
        g_len = np.concatenate(self.lengths)
        g_end = g_start + g_len
        # gaps are in time order and do not overlap: those overlapping a window are a run of them
        lo = np.searchsorted(g_end, starts, side="right")
        hi = np.searchsorted(g_start, ends, side="left")
        for i in np.flatnonzero(hi > lo):
            out[i] = float(g_len[lo[i] : hi[i]].max())
        return out


def _merged(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(starts, kind="stable")
    out_a: list[float] = []
    out_b: list[float] = []
    for a, b in zip(starts[order], ends[order], strict=True):
        if out_b and a <= out_b[-1]:
            out_b[-1] = max(out_b[-1], float(b))
        else:
            out_a.append(float(a))
            out_b.append(float(b))
    return np.asarray(out_a, float), np.asarray(out_b, float)


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
            log.warning(
                "%s: partial run, analysed with what is there; missing: %s",
                Path(path).name,
                "; ".join(missing),
            )
        red = RunReduction(
            path=Path(path),
            attrs=rf.attrs,
            status=rf.status,
            missing=missing,
            synthetic=rf.synthetic,
            estimate=rf.estimate or any(m.get("method") == "estimate" for m in rf.channel_meta),
            n_ranks=rf.n_ranks,
            n_nodes=rf.n_nodes,
            params=[rf.case_params(c) for c in range(rf.n_cases)],
            units_name=[rf.case_unit(c) for c in range(rf.n_cases)],
            windows=w,
            node_windows={},
            ranks=ranks,
            emulated=rf.emulated,
        )
        counted = (w["phase"] == "measure") & (w["status"] == "ok") & (w["end"] > w["start"])
        idle = (w["phase"] == "idle") & (w["status"] == "ok") & (w["end"] > w["start"])
        nw = red.node_windows = _node_windows(w, counted)
        metas = rf.channel_meta
        roles = channel_roles(metas)
        red.notes = role_notes(metas, roles)
        for note in red.notes:
            log.info("%s: %s", Path(path).name, note)
        by_index = {int(m["index"]): m for m in metas}

        def node_of(meta: dict[str, Any]) -> int:
            return int(meta.get("node", rank_node.get(int(meta.get("rank", -1)), 0)))

        # shared windows of the devices recorded by several ranks, appended before any channel is reduced
        shared_own: dict[int, np.ndarray] = {}
        for pos, (meta, role) in enumerate(zip(metas, roles, strict=True)):
            if role not in NEVER_ADDED and sharer_ranks(meta):
                shared_own[pos] = _append_shared_windows(w, counted, meta, node_of(meta))
        extra = len(w["rank"]) - len(counted)
        counted = np.concatenate([counted, np.zeros(extra, bool)])
        idle = np.concatenate([idle, np.zeros(extra, bool)])
        red.windows = w

        scratch = Scratch()  # work arrays shared by every channel's reduction

        def reduce_one(
            m: dict[str, Any], starts: np.ndarray, ends: np.ndarray, gaps: _GapFinder | None = None
        ) -> WindowEnergy:
            chunks = rf.chunks(int(m["index"]), chunk, overlap=1, reuse=True)
            return reduce_channel(
                gaps.watch(chunks) if gaps is not None else chunks,
                starts,
                ends,
                update_period=float(m.get("update_period", 0.0) or 0.0),
                resolution=float(m.get("energy_resolution", 0.0) or 0.0),
                power_window=float(m.get("power_window", 0.0) or 0.0),
                method_hint=str(m.get("method", "counter")),
                counter_ok=counter_ok(m),
                scratch=scratch,
            )

        for pos, (meta, role) in enumerate(zip(metas, roles, strict=True)):
            if role in NEVER_ADDED:
                continue
            r, node = int(meta.get("rank", -1)), node_of(meta)
            sharers = sharer_ranks(meta)
            if pos in shared_own:
                own_idx = shared_own[pos]
            elif not role.node_level:
                own_idx = np.flatnonzero(counted & (w["rank"] == r))
            else:
                own_idx = np.zeros(0, dtype=int)
            idle_idx = np.flatnonzero(idle & np.isin(w["rank"], sharers or [r]))
            idle_a, idle_b = _merged(w["start"][idle_idx], w["end"][idle_idx])
            node_idx = np.flatnonzero(nw["node"] == node) if len(nw["node"]) else np.zeros(0, dtype=int)
            if not (len(own_idx) or len(node_idx)):
                continue
            has_nw = len(nw["node"]) > 0
            starts = np.concatenate(
                [w["start"][own_idx], idle_a] + ([nw["start"][node_idx]] if has_nw else [])
            )
            ends = np.concatenate([w["end"][own_idx], idle_b] + ([nw["end"][node_idx]] if has_nw else []))
            gaps = _GapFinder()
            we = reduce_one(meta, starts, ends, gaps)
            gap_s = gaps.longest(starts, ends)
            # a copy without samples somewhere (its rank's sampler died): the next rank's copy stands in
            copies = [
                by_index[i] for i in meta.get("copies", []) if i in by_index and by_index[i] is not meta
            ]
            for other in copies:
                gap = np.flatnonzero(~np.isfinite(we.energy_J))
                if not len(gap):
                    break
                sub = reduce_one(other, starts[gap], ends[gap])
                fill = np.isfinite(sub.energy_J)
                for k in WindowEnergy.__dataclass_fields__:
                    getattr(we, k)[gap[fill]] = getattr(sub, k)[fill]
            a, b = len(own_idx), len(own_idx) + len(idle_a)
            idle_we = we.take(np.arange(a, b))
            idle_dur = float((idle_b - idle_a).sum())
            ok = np.isfinite(idle_we.energy_J)
            if idle_dur > 0 and ok.all() and ok.any():
                idle_W = float(idle_we.energy_J.sum()) / idle_dur
                idle_W_unc = float(np.sqrt((idle_we.uncertainty_J**2).sum())) / idle_dur
            else:
                idle_W = idle_W_unc = math.nan
            red.channels.append(
                ChannelResult(
                    meta,
                    role,
                    own_idx,
                    we.take(np.arange(a)),
                    node_idx,
                    we.take(np.arange(b, len(starts))),
                    idle_W,
                    idle_W_unc,
                    own_gap_s=gap_s[:a],
                    node_gap_s=gap_s[b:],
                )
            )
        return red
