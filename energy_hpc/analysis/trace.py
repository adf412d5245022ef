"""A run as a timeline for trace viewers: Chrome trace-event / Perfetto JSON and OTF2 (Vampir, Score-P).

Both exporters start from one :class:`Timeline`, built from the run file and its reduction
(:func:`~energy_hpc.analysis.reduce.reduce_run`):

- one *track* per rank holding its windows (idle baseline, load, warm-up, measured iterations and their
  stages, cool-down) as spans nested properly (a span that would end after the one around it is cut at
  its end, and says so in its arguments); measured windows carry their energy and its uncertainty per
  channel, as the tables compute them, and the idle baseline its mean power;
- one node track per node that has node-level sensors, holding the *node windows* (the union of the
  node's ranks' windows, over which node channels count) with the node channels' energies;
- one *counter* per channel with samples (power in W, and the energy counter where there is one),
  under the node that recorded it.

Power traces longer than ``max_points`` samples are decimated for display: the samples are cut into
buckets of equal length and each bucket keeps its lowest and its highest sample (at their own times),
so a spike never disappears. The trace says so (``otherData.decimation`` in JSON, the archive's
description in OTF2) and a warning line on stderr says by how much.

Times: JSON ``ts``/``dur`` are microseconds since the run's epoch (root attribute ``epoch_unix``);
OTF2 timestamps are nanoseconds since 1970: ``round(epoch_unix * 1e9)`` plus the time since the epoch
in ns. Synthetic, emulated and estimated data say so in process names and in the trace's metadata.
"""

from __future__ import annotations

import gzip
import importlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from energy_hpc.analysis.formatting import data_banner, jsonable
from energy_hpc.analysis.reduce import RunReduction, reduce_run
from energy_hpc.analysis.runfile import CHUNK_SAMPLES, RunFile
from energy_hpc.errors import OutputError, UserError

log = logging.getLogger(__name__)

FORMATS = ("perfetto", "otf2")
DEFAULT_MAX_POINTS = 50_000  # per channel, for the JSON (a browser holds a few million events)
OTF2_ANCHOR = "traces.otf2"  # the file of an OTF2 archive that Vampir opens
INSTALL_OTF2 = "pip install energy-hpc[trace]"
NS = 1_000_000_000


@dataclass
class Span:
    """One window on a track (times in s since the run's epoch)."""

    name: str
    start: float
    end: float
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Track:
    """A rank's windows, or a node's node windows."""

    node: int
    rank: int  # -1 for a node track
    name: str
    spans: list[Span]


@dataclass
class Counter:
    """One channel's samples, shown under the node that recorded it."""

    index: int  # channel index in the run file
    node: int
    rank: int
    name: str  # track name, unique in its node
    node_level: bool
    has_energy: bool
    n_samples: int
    label: str


@dataclass
class Timeline:
    path: Path
    job: str
    epoch_unix: float
    kind: str  # measured, ESTIMATE, SYNTHETIC or EMULATED <parts>
    banner: str  # data_banner: one line saying what kind of numbers these are
    n_ranks: int
    hosts: dict[int, str]  # node index -> host name
    tracks: list[Track]
    counters: list[Counter]
    left_out: list[str]  # windows that could not be placed, in words

    def process_name(self, node: int) -> str:
        name = f"node {node} ({self.hosts.get(node, '?')})"
        return name if self.kind == "measured" else f"{name} [{self.kind}]"


@dataclass
class Decimation:
    """How a channel's power trace was thinned for display (bucket 0: kept whole)."""

    samples: int
    points: int
    bucket: int


# ------------------------------------------------------------------ the timeline


def _case_label(params: dict[str, Any]) -> str:
    if params.get("label"):
        return str(params["label"])
    return f"{params.get('model', '?')} {params.get('dtype', '')} b{params.get('batch_size', '?')}".replace(
        "  ", " "
    )


def _span_name(phase: str, stage: str, case: str) -> str:
    if phase == "idle":
        return "idle baseline"
    if phase == "cooldown":
        return "cool-down"
    if phase == "load":
        return f"load [{case}]"
    if phase == "warmup":
        return f"warm-up [{case}]"
    if stage:
        return f"{stage} [{case}]"
    return f"iteration [{case}]" if phase == "measure" else f"{phase} [{case}]"


def channel_name(meta: dict[str, Any]) -> str:
    """A channel's track name: ``rank R: <name>`` for a rank's channel, ``node: <name>`` for a node's,
    with the device's label after a dash."""
    label = str(meta.get("label", "") or "")
    who = "node" if int(meta.get("node_level", 0) or 0) else f"rank {int(meta.get('rank', -1))}"
    return f"{who}: {meta.get('name', '?')}" + (f" - {label}" if label else "")


def nest(spans: list[Span]) -> list[Span]:
    """The spans of one track in start order, longest first where two start together, each inside the
    one around it: a span that would end after the span it starts in is cut at that span's end (its
    arguments keep the true end). Trace viewers draw a track as a stack and need this."""
    out: list[Span] = []
    stack: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, -s.end)):
        while stack and stack[-1].end <= s.start:
            stack.pop()
        if stack and s.end > stack[-1].end:
            s.args["cut_at_enclosing_end"] = True
            s.args["true_end_s"] = s.end
            s.end = stack[-1].end
        out.append(s)
        stack.append(s)
    return out


def _energy_args(items: list[tuple[str, float, float, str]]) -> dict[str, Any]:
    if not items:
        return {"energy": "not reduced (only measured and idle windows are counted)"}
    return {
        "energy_J": {k: _num(e) for k, e, _, _ in items},
        "uncertainty_J": {k: _num(u) for k, _, u, _ in items},
        "method": {k: m for k, _, _, m in items},
    }


def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def build_timeline(path: str | Path, red: RunReduction | None = None) -> Timeline:
    """The timeline of one run file (``red``: its reduction, when the caller has it already)."""
    red = red if red is not None else reduce_run(path)
    with RunFile(path) as rf:
        metas = rf.channel_meta
    w = red.windows
    n_file = len(w["rank"]) - int(np.sum(w["phase"] == "shared"))
    hosts_of_rank = [str(h) for h in red.ranks.get("host", [])]
    node_of_rank = [int(n) for n in red.ranks.get("node", [])]
    # strict=False: a file without the host column still names its nodes (from the channels, below)
    hosts = {n: h for h, n in zip(hosts_of_rank, node_of_rank, strict=False)}
    for m in metas:
        hosts.setdefault(int(m.get("node", 0)), str(m.get("host", "?")))
    cases = [_case_label(p) for p in red.params]

    def case_of(c: int) -> str:
        return cases[c] if 0 <= c < len(cases) else f"case {c}"

    # energy per (window, channel) from the reduction; the idle baseline per channel
    per_window: dict[int, list[tuple[str, float, float, str]]] = {}
    per_node_window: dict[int, list[tuple[str, float, float, str]]] = {}
    idle_of_rank: dict[int, list[tuple[str, float, float, str]]] = {}
    idle_of_node: dict[int, list[tuple[str, float, float, str]]] = {}
    for ch in red.channels:
        key = str(ch.meta.get("name", "?"))
        for j, i in enumerate(ch.own_idx):
            if int(i) < n_file:
                per_window.setdefault(int(i), []).append(
                    (key, ch.own.energy_J[j], ch.own.uncertainty_J[j], str(ch.own.method[j]))
                )
        idle = (key, ch.idle_W, ch.idle_W_unc, str(ch.meta.get("method", "")))
        if ch.role.node_level:
            node = int(ch.meta.get("node", 0))
            idle_of_node.setdefault(node, []).append(idle)
            for j, i in enumerate(ch.node_idx):
                per_node_window.setdefault(int(i), []).append(
                    (key, ch.node.energy_J[j], ch.node.uncertainty_J[j], str(ch.node.method[j]))
                )
        else:
            idle_of_rank.setdefault(int(ch.meta.get("rank", -1)), []).append(idle)

    left_out: list[str] = []
    by_rank: dict[int, list[Span]] = {r: [] for r in range(red.n_ranks)}
    leader_idle: dict[int, list[tuple[float, float]]] = {}
    for i in range(n_file):
        r, c = int(w["rank"][i]), int(w["case"][i])
        a, b = float(w["start"][i]), float(w["end"][i])
        phase, stage, status = str(w["phase"][i]), str(w["stage"][i]), str(w["status"][i])
        if not (math.isfinite(a) and math.isfinite(b)) or b < a:
            left_out.append(f"rank {r} {phase} window {i} (no valid start or end)")
            continue
        name = _span_name(phase, stage, case_of(c))
        if status != "ok":
            name += f" ({status})"
        args: dict[str, Any] = {
            "case": c,
            "case_label": case_of(c) if c >= 0 else "",
            "phase": phase,
            "stage": stage,
            "iteration": int(w["iteration"][i]),
            "units": float(w["units"][i]),
            "unit": str(w["unit"][i]) if "unit" in w else "",
            "status": status,
        }
        if phase == "idle":
            dur = b - a
            items = idle_of_rank.get(r, [])
            args["idle_W"] = {k: _num(p) for k, p, _, _ in items}
            args["idle_uncertainty_W"] = {k: _num(u) for k, _, u, _ in items}
            args.update(_energy_args([(k, p * dur, u * dur, m) for k, p, u, m in items]))
            node = node_of_rank[r] if 0 <= r < len(node_of_rank) else 0
            local = red.ranks.get("local_rank")
            if local is None or not 0 <= r < len(local) or int(local[r]) == 0:  # the node leader's
                leader_idle.setdefault(node, []).append((a, b))
        else:
            args.update(_energy_args(per_window.get(i, [])))
        by_rank.setdefault(r, []).append(Span(name, a, b, args))
    tracks = [
        Track(node_of_rank[r] if 0 <= r < len(node_of_rank) else 0, r, f"rank {r}", nest(spans))
        for r, spans in sorted(by_rank.items())
    ]

    nw = red.node_windows
    for node in sorted(idle_of_node):
        spans = []
        for a, b in leader_idle.get(node, []):
            items = idle_of_node[node]
            args = {
                "idle_W": {k: _num(p) for k, p, _, _ in items},
                "idle_uncertainty_W": {k: _num(u) for k, _, u, _ in items},
            }
            args.update(_energy_args([(k, p * (b - a), u * (b - a), m) for k, p, u, m in items]))
            spans.append(Span("idle baseline", a, b, args))
        for i in np.flatnonzero(nw["node"] == node) if len(nw.get("node", [])) else []:
            c, stage = int(nw["case"][i]), str(nw["stage"][i])
            args = {
                "case": c,
                "case_label": case_of(c),
                "stage": stage,
                "first_iteration": int(nw["iteration"][i]),
                "units": float(nw["units"][i]),
                "ranks": int(nw["n_ranks"][i]),
            }
            args.update(_energy_args(per_node_window.get(int(i), [])))
            name = f"node: {stage} [{case_of(c)}]" if stage else f"node: measured [{case_of(c)}]"
            spans.append(Span(name, float(nw["start"][i]), float(nw["end"][i]), args))
        tracks.append(Track(node, -1, f"node sensors ({hosts.get(node, '?')})", nest(spans)))

    counters = [
        Counter(
            index=int(m["index"]),
            node=int(m.get("node", 0)),
            rank=int(m.get("rank", -1)),
            name=channel_name(m),
            node_level=bool(int(m.get("node_level", 0) or 0)),
            has_energy=bool(int(m.get("has_energy", 0) or 0)),
            n_samples=int(m.get("n_samples", 0)),
            label=str(m.get("label", "") or ""),
        )
        for m in metas
    ]
    return Timeline(
        path=Path(path),
        job=str(red.attrs.get("job_name", "")),
        epoch_unix=float(red.attrs.get("epoch_unix", 0.0)),
        kind=red.label,
        banner=data_banner([{"data": red.label}]),
        n_ranks=red.n_ranks,
        hosts=hosts,
        tracks=tracks,
        counters=counters,
        left_out=left_out,
    )


# ------------------------------------------------------------------ decimation


def bucket_size(n_samples: int, max_points: int) -> int:
    """Samples per bucket for a channel of ``n_samples`` shown in at most ``max_points`` points (two per
    bucket); 0 when it is shown whole (``max_points`` 0 means always)."""
    if max_points <= 0 or n_samples <= max_points:
        return 0
    return -(-n_samples // max(max_points // 2, 1))


def envelope_indices(power: np.ndarray, bucket: int) -> np.ndarray:
    """Indices of the lowest and the highest finite sample of each bucket of ``bucket`` samples, in
    order (one index where they coincide; none for a bucket with no finite sample). ``bucket`` 0: every
    finite sample."""
    finite = np.isfinite(power)
    if bucket <= 0:
        return np.flatnonzero(finite)
    n = len(power)
    nb = -(-n // bucket)
    pad = nb * bucket - n
    lo = np.pad(np.where(finite, power, np.inf), (0, pad), constant_values=np.inf).reshape(nb, bucket)
    hi = np.pad(np.where(finite, power, -np.inf), (0, pad), constant_values=-np.inf).reshape(nb, bucket)
    base = np.arange(nb) * bucket
    i_lo, i_hi = lo.argmin(axis=1) + base, hi.argmax(axis=1) + base
    keep = np.isfinite(lo.min(axis=1))
    return np.unique(np.concatenate([i_lo[keep], i_hi[keep]]))


def counter_samples(
    rf: RunFile, counter: Counter, max_points: int, keep_gaps: bool = False
) -> tuple[Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]], Decimation]:
    """The samples of one channel to show, in blocks of (time, power, energy), and how it was thinned.
    Shown whole, a sample whose power is not a number (a failed read) is left out (JSON cannot hold
    NaN) unless ``keep_gaps``; a sample without a time is always left out."""
    bucket = bucket_size(counter.n_samples, max_points)
    dec = Decimation(counter.n_samples, 0, bucket)
    chunk = bucket * max(1, CHUNK_SAMPLES // bucket) if bucket else CHUNK_SAMPLES  # buckets never straddle

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for t, p, e in rf.chunks(counter.index, chunk):
            timed = np.isfinite(t)
            if keep_gaps and not bucket:
                idx = np.flatnonzero(timed)
            else:
                idx = envelope_indices(np.where(timed, p, np.nan), bucket)
            dec.points += len(idx)
            yield t[idx], p[idx], e[idx]

    return blocks(), dec


def _decimation_note(decs: dict[str, Decimation]) -> str:
    thinned = {k: d for k, d in decs.items() if d.bucket}
    if not thinned:
        return ""
    n = sum(d.samples for d in thinned.values())
    m = sum(d.points for d in thinned.values())
    return (
        f"power traces decimated for display: {len(thinned)} of {len(decs)} channel(s), {n} samples shown "
        f"as {m} points ({n / max(m, 1):.1f}x fewer; the lowest and highest sample of each bucket kept)"
    )


# ------------------------------------------------------------------ Chrome trace-event / Perfetto JSON


def _open_text(path: Path, compress: bool) -> IO[str]:
    if compress:
        return gzip.open(path, "wt", encoding="utf-8")
    return path.open("w", encoding="utf-8")


def write_perfetto(
    tl: Timeline, out: str | Path, max_points: int = DEFAULT_MAX_POINTS, creator: str = "energy-hpc"
) -> dict[str, Decimation]:
    """Write the timeline as Chrome trace-event JSON (``.json``, or gzip-compressed ``.json.gz``),
    which ui.perfetto.dev and chrome://tracing open. Returns each counter's decimation."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    decs: dict[str, Decimation] = {}
    pids = {node: node + 1 for node in sorted(tl.hosts)}
    node_tid = tl.n_ranks + 1  # the node track's thread id in its node's process
    try:
        with _open_text(tmp, out.name.endswith(".gz")) as f:
            first = [True]

            def sep() -> str:
                if first[0]:
                    first[0] = False
                    return ""
                return ",\n"

            def emit(ev: dict[str, Any]) -> None:
                f.write(sep() + json.dumps(jsonable(ev), separators=(",", ":"), allow_nan=False))

            f.write('{"displayTimeUnit":"ms","traceEvents":[\n')
            for node, pid in pids.items():
                emit(_meta("process_name", pid, 0, {"name": tl.process_name(node)}))
                emit(_meta("process_sort_index", pid, 0, {"sort_index": node}))
                if tl.kind != "measured":
                    emit(_meta("process_labels", pid, 0, {"labels": tl.banner}))
            for tr in tl.tracks:
                pid = pids.setdefault(tr.node, tr.node + 1)
                tid = tr.rank + 1 if tr.rank >= 0 else node_tid
                emit(_meta("thread_name", pid, tid, {"name": tr.name}))
                emit(_meta("thread_sort_index", pid, tid, {"sort_index": tid}))
                for s in tr.spans:
                    emit(
                        {
                            "name": s.name,
                            "cat": str(s.args.get("phase", "node")),
                            "ph": "X",
                            "ts": _us(s.start),
                            "dur": round(_us(s.end) - _us(s.start), 3),
                            "pid": pid,
                            "tid": tid,
                            "args": s.args,
                        }
                    )
            with RunFile(tl.path) as rf:
                for c in tl.counters:
                    pid = pids.setdefault(c.node, c.node + 1)
                    blocks, dec = counter_samples(rf, c, max_points)
                    head = f'{{"name":{json.dumps(c.name)},"ph":"C","pid":{pid},"ts":'
                    for t, p, _ in blocks:
                        for ts, v in zip((t * 1e6).round(3).tolist(), p.tolist(), strict=True):
                            f.write(f'{sep()}{head}{ts!r},"args":{{"W":{v!r}}}}}')
                    decs[c.name] = dec
            note = _decimation_note(decs)
            other = {
                "exporter": creator,
                "run_file": tl.path.name,
                "job": tl.job,
                "epoch_unix": tl.epoch_unix,
                "time": "ts and dur in microseconds since the run's epoch (epoch_unix)",
                "data": tl.banner,
                "data_kind": tl.kind,
                "decimated": bool(note),
                "decimation_note": note or "every sample shown",
                "decimation": {
                    k: {"samples": d.samples, "points": d.points, "bucket_samples": d.bucket}
                    for k, d in decs.items()
                },
                "windows_left_out": tl.left_out,
            }
            f.write('\n],"otherData":' + json.dumps(jsonable(other), allow_nan=False) + "}\n")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if note:
        log.warning("%s: %s; --max-points 0 keeps every sample", out.name, note)
    return decs


def _us(t: float) -> float:
    """Seconds since the epoch as the JSON's microseconds (to the ns: ``dur`` is taken between rounded
    edges, so a span inside another stays inside it)."""
    return round(t * 1e6, 3)


def _meta(kind: str, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    """A metadata event (``process_name``, ``thread_name``, ``process_sort_index``, ...)."""
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": args}


# ------------------------------------------------------------------ OTF2


def _import_otf2() -> Any:
    """The otf2 package (an optional dependency, without type information), or one line saying how to
    install it."""
    try:
        return importlib.import_module("otf2")
    except ImportError:
        raise UserError(f"OTF2 export needs the otf2 package: {INSTALL_OTF2}") from None


def write_otf2(tl: Timeline, out: str | Path, max_points: int = 0, creator: str = "energy-hpc") -> Path:
    """Write the timeline as an OTF2 archive in the folder ``out`` (which must not exist, or be empty);
    returns the anchor file (``out/traces.otf2``) that Vampir opens. Locations: one thread per rank
    (its windows as regions entered and left) and one metric location per channel (power in W and
    the energy counter in J, where there is one) in its rank's group, or in its node's for a node-level
    channel. Every sample is written unless ``max_points`` asks for decimation."""
    otf2 = _import_otf2()
    LocationGroupType, LocationType, MetricMode = (
        otf2.enums.LocationGroupType,
        otf2.enums.LocationType,
        otf2.enums.MetricMode,
    )
    Paradigm, RegionRole, Type = otf2.enums.Paradigm, otf2.enums.RegionRole, otf2.enums.Type

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"{out}: exists; OTF2 writes a new folder: remove it or give another -o")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    base = round(tl.epoch_unix * NS)

    def ns(t: float) -> int:
        return base + round(t * NS)

    decs: dict[str, Decimation] = {}
    try:
        writer = otf2.writer.Writer(str(tmp), timer_resolution=NS)
        d = writer.definitions
        root = d.system_tree_node(f"{tl.job or 'run'} [{tl.kind}]", class_name="machine")
        nodes = {
            n: d.system_tree_node(h, parent=root, class_name="node") for n, h in sorted(tl.hosts.items())
        }
        groups: dict[tuple[int, int], Any] = {}

        def group(node: int, rank: int) -> Any:
            if (node, rank) not in groups:
                if node not in nodes:
                    nodes[node] = d.system_tree_node(f"node {node}", parent=root, class_name="node")
                groups[node, rank] = d.location_group(
                    f"rank {rank}" if rank >= 0 else f"node {node} sensors",
                    location_group_type=LocationGroupType.PROCESS,
                    system_tree_parent=nodes[node],
                )
            return groups[node, rank]

        energy_attr = d.attribute(
            "energy", "energy of the window from the analysis (J, 1 sigma)", Type.STRING
        )
        regions: dict[str, Any] = {}
        for tr in tl.tracks:
            loc = d.location(tr.name, type=LocationType.CPU_THREAD, group=group(tr.node, tr.rank))
            ev = writer.event_writer_from_location(loc)
            stack: list[tuple[int, Any]] = []
            for s in tr.spans:
                while stack and stack[-1][0] <= ns(s.start):
                    t_end, reg = stack.pop()
                    ev.leave(t_end, reg)
                if s.name not in regions:
                    regions[s.name] = d.region(s.name, paradigm=Paradigm.USER, region_role=RegionRole.CODE)
                ev.enter(ns(s.start), regions[s.name], attributes={energy_attr: _energy_text(s.args)})
                stack.append((ns(s.end), regions[s.name]))
            while stack:
                t_end, reg = stack.pop()
                ev.leave(t_end, reg)

        with RunFile(tl.path) as rf:
            for c in tl.counters:
                members = [
                    d.metric_member(
                        f"{c.name} power",
                        c.label,
                        metric_mode=MetricMode.ABSOLUTE_POINT,
                        value_type=Type.DOUBLE,
                        unit="W",
                    )
                ]
                if c.has_energy:
                    members.append(
                        d.metric_member(
                            f"{c.name} energy",
                            c.label + " (cumulative counter, arbitrary origin)",
                            metric_mode=MetricMode.ACCUMULATED_START,
                            value_type=Type.DOUBLE,
                            unit="J",
                        )
                    )
                metric = d.metric_class(members)
                rank = -1 if c.node_level else c.rank
                loc = d.location(c.name, type=LocationType.METRIC, group=group(c.node, rank))
                ev = writer.event_writer_from_location(loc)
                blocks, dec = counter_samples(rf, c, max_points, keep_gaps=True)
                for t, p, e in blocks:
                    times = (base + np.rint(t * NS)).astype(np.int64).tolist()
                    if c.has_energy:
                        for ts, pv, ev_ in zip(times, p.tolist(), e.tolist(), strict=True):
                            ev.metric(ts, metric, [pv, ev_])
                    else:
                        for ts, pv in zip(times, p.tolist(), strict=True):
                            ev.metric(ts, metric, [pv])
                decs[c.name] = dec
        note = _decimation_note(decs)
        writer.description = tl.banner + (f"; {note}" if note else "; every sample written")
        writer.creator = creator
        if getattr(writer, "_first_timestamp", None) is not None:
            # the wall clock at the first timestamp (the package would put the time of writing there)
            writer._realtime_timestamp = writer._first_timestamp / NS
        writer.close()
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if note:
        log.warning("%s: %s; leave out --max-points to keep every sample", out.name, note)
    return out / OTF2_ANCHOR


def _energy_text(args: dict[str, Any]) -> str:
    energy = args.get("energy_J")
    if not isinstance(energy, dict):
        return str(args.get("energy", ""))
    unc, method = args.get("uncertainty_J", {}), args.get("method", {})
    return "; ".join(
        f"{k}: {'-' if e is None else f'{e:.6g}'} ± {'-' if unc.get(k) is None else f'{unc[k]:.3g}'} J "
        f"({method.get(k, '')})"
        for k, e in energy.items()
    )


# ------------------------------------------------------------------ choosing the format


def format_for(out: str | Path, fmt: str | None) -> str:
    """The format asked for, or the one the output's name says (``.json``, ``.json.gz``: perfetto;
    ``.otf2``: otf2)."""
    if fmt:
        if fmt not in FORMATS:
            raise UserError(f"unknown trace format {fmt!r}: give --format perfetto or --format otf2")
        return fmt
    name = Path(out).name.lower()
    if name.endswith((".json", ".json.gz")):
        return "perfetto"
    if name.endswith(".otf2"):
        return "otf2"
    raise UserError(
        f"{out}: cannot tell the format from the name; end it in .json or .json.gz (Perfetto) or "
        ".otf2 (a folder for OTF2), or give --format perfetto|otf2"
    )


def export(
    path: str | Path,
    out: str | Path,
    fmt: str | None = None,
    max_points: int | None = None,
    creator: str = "energy-hpc",
) -> Path:
    """Export one run file; returns what a viewer opens (the JSON file, or the OTF2 anchor file)."""
    fmt = format_for(out, fmt)
    if fmt == "otf2":
        _import_otf2()  # before the reduction: say at once what is missing
    if max_points is not None and (max_points < 0 or max_points == 1):
        raise UserError(
            f"--max-points {max_points}: give at least 2 points per channel, or 0 for every sample"
        )
    tl = build_timeline(path)
    if fmt == "otf2":
        return write_otf2(tl, out, max_points or 0, creator)
    write_perfetto(tl, out, DEFAULT_MAX_POINTS if max_points is None else max_points, creator)
    return Path(out)
