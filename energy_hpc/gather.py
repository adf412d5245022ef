"""Rank 0 collects every rank's traces and windows and writes the run file.

The gather never blocks forever on a rank that died, and rank 0 never holds more than its own traces
plus a few pieces of one channel (the write-behind pool: 4 buffers of at most 28 MiB each):

1. every other rank sends rank 0 a small description of itself (rank record, channel list with
   sample counts, number of windows) and then serves rank 0's requests;
2. rank 0 waits for those descriptions. A rank that has not sent one is waited for as long as its
   spill file keeps changing (it spills every ``spill_seconds`` while it measures); once the file has
   not changed for the grace time (3 x spill_seconds, at least 10 s), or rank 0 itself got a signal,
   the rank is taken for missing and what it spilled is read from its spill file instead;
3. rank 0 tells the first few live ranks to start (more as it goes: ``ENERGY_HPC_GATHER_AHEAD``,
   default 4), creates the file, and receives each rank's windows and then each channel in pieces of
   at most ``piece`` samples (default 2^20). A rank sends straight from its trace's memory, no
   packing copy, and never spins while it waits. Rank 0 writes each piece on a second thread while
   it receives the next (h5py releases the GIL; MPI stays on the main thread), into a small pool of
   reused buffers. A rank that stops answering mid-way is handled like a missing one;
4. ranks that wait for rank 0's requests watch rank 0's spill file the same way (a heartbeat thread
   keeps touching it while rank 0 gathers) and give up, keeping their spill files, if rank 0 is gone.

Every message is point to point; there is no collective here a dead rank could hang.

From :data:`NODES_FROM` nodes on (or as ``ENERGY_HPC_GATHER_LAYOUT`` says), the run is written per node
instead, so that writing scales with the file system rather than with rank 0:

5. each node leader does steps 1-4 for its own node's ranks (node-local, and all nodes at once) and
   writes a node file into ``<run>.nodes/`` beside the run file (:func:`energy_hpc.store.nodes_folder`);
   it sends rank 0 a small report: the node's rank records, channel list and windows;
6. rank 0 waits for the leaders' reports the way it waits for ranks (a leader keeps touching its spill
   file while it gathers). A node whose leader is gone, or could not write its file, is rebuilt by
   rank 0 from its ranks' spill files into a node file of its own;
7. rank 0 writes the run file as the index: run attributes, ranks, cases, channels and windows, with
   ``/traces`` presented as HDF5 virtual datasets over the node files (paths relative to the run file).
"""

from __future__ import annotations

import logging
import queue
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from energy_hpc import settings
from energy_hpc.context import Comm, NodeLayout, PeerTimeout
from energy_hpc.spill import Heartbeat, RankSpill, SpillPlan, missing_rank_record, one_line
from energy_hpc.store import (
    PART_FORMAT,
    NodePart,
    RankRecord,
    RunHeader,
    RunWriter,
    channel_record,
    emulated_parts,
    emulated_text,
    nodes_folder,
    place,
    temp_path,
)
from energy_hpc.telemetry.sampler import ChannelTrace
from energy_hpc.windows import WINDOW_DTYPE

log = logging.getLogger(__name__)

__all__ = ["NODES_FROM", "PIECE_SAMPLES", "GatherOutcome", "channel_record", "gather_and_write", "per_node"]

_TAG_META = 21
_TAG_REQ = 22
_TAG_DATA = 23
_TAG_NODE = 24  # a node leader's report to rank 0
# ENERGY_HPC_GATHER_LAYOUT=auto writes per node from this many nodes on: below it one file through
# rank 0 is as fast and simpler (benchmarks/gather_scale.py --nodes, docs/performance.md)
NODES_FROM = 4
# the default piece (ENERGY_HPC_GATHER_PIECE_SAMPLES): 2^20 samples of time, energy, sensor_time float64
# + power float32 = 28 MiB
PIECE_SAMPLES = settings.Settings.gather_piece_samples
_ANSWER_S = 60.0  # a rank that is serving requests answers each within this (else it is gone)


@dataclass
class GatherOutcome:
    path: Path | None
    status: str  # "complete" / "partial" on rank 0, "" elsewhere
    missing: dict[int, str]  # rank -> why (rank 0)
    keep_spills: set[int] = field(default_factory=set)  # ranks whose spill holds what the file lacks


@dataclass
class _Part:
    """What one collection wrote (the run file, or one node's file) and what the index needs of it."""

    path: Path
    status: str
    missing: dict[int, str]
    keep: set[int]
    ranks: dict[int, RankRecord]  # world rank -> record
    channels: list[dict]  # in the file's order
    n_windows: int
    max_samples: int


def per_node(layout: NodeLayout | None) -> bool:
    """Whether the run is written per node: the same answer on every rank (node count and settings)."""
    if layout is None or layout.n_nodes < 2:
        return False
    mode = settings.current().gather_layout
    return mode == "nodes" or (mode == "auto" and layout.n_nodes >= NODES_FROM)


def gather_and_write(
    comm: Comm,
    *,
    traces: Sequence[ChannelTrace],
    time_offset: float,
    windows: np.ndarray,
    rank_record: RankRecord,
    header: RunHeader | None,
    cases: Sequence[dict] | None,
    out: Path | None,
    stem: str | None,
    compression: str = "none",
    spills: SpillPlan | None = None,
    interrupted: Callable[[], str] = lambda: "",
    piece: int | None = None,
    layout: NodeLayout | None = None,
) -> tuple[Path | None, str]:
    """Collective over the live ranks: every rank calls it. Returns (run file path, run status) on
    rank 0, (None, "") elsewhere. The run is ``complete`` when every rank finished every case, else
    ``partial`` with the reason. ``interrupted`` returns the name of a signal rank 0 got (then it waits at
    most the ``signal_grace_s`` setting more for ranks that have not reported). ``piece``: samples per
    piece (default: the ``gather_piece_samples`` setting). ``layout``: the rank's node, where the run
    may be written per node (:func:`per_node`; then every node leader needs ``out`` and ``stem`` too)."""
    o = gather(
        comm,
        traces=traces,
        time_offset=time_offset,
        windows=windows,
        rank_record=rank_record,
        header=header,
        cases=cases,
        out=out,
        stem=stem,
        compression=compression,
        spills=spills,
        interrupted=interrupted,
        piece=piece,
        layout=layout,
    )
    return o.path, o.status


def gather(
    comm: Comm,
    *,
    traces: Sequence[ChannelTrace],
    time_offset: float,
    windows: np.ndarray,
    rank_record: RankRecord,
    header: RunHeader | None,
    cases: Sequence[dict] | None,
    out: Path | None,
    stem: str | None,
    compression: str = "none",
    spills: SpillPlan | None = None,
    interrupted: Callable[[], str] = lambda: "",
    piece: int | None = None,
    layout: NodeLayout | None = None,
) -> GatherOutcome:
    if piece is None:
        piece = settings.current().gather_piece_samples
    meta = {
        "rank": rank_record,
        "channels": [channel_record(t, comm.rank, rank_record.host, rank_record.node) for t in traces],
        "n_windows": len(windows),
        "time_offset": float(time_offset),
        "spill_fallback": str(spills.fallback_folder) if spills and spills.fallback_folder else "",
    }
    nodes = per_node(layout)
    leader = layout.leader if nodes and layout else 0
    if comm.rank != leader:
        _serve(comm, meta, traces, time_offset, windows, spills, piece, leader)
        return GatherOutcome(None, "", {})
    assert out is not None and stem is not None and (header is not None or nodes)
    me = comm.rank
    heartbeat = Heartbeat(spills.path(me), min(spills.spill_seconds, spills.grace_s / 3)) if spills else None
    if heartbeat:
        heartbeat.__enter__()
    try:
        if not nodes:
            assert header is not None
            part = _collect(
                comm,
                list(range(comm.size)),
                meta,
                traces,
                time_offset,
                windows,
                header,
                cases or [],
                out,
                stem,
                compression,
                spills,
                interrupted,
                piece,
            )
            if part.missing:
                comm.abandon()  # MPI_Finalize would wait for the missing ranks forever
            return GatherOutcome(part.path, part.status, part.missing, part.keep)
        assert layout is not None
        return _by_node(
            comm,
            layout,
            meta,
            traces,
            time_offset,
            windows,
            header,
            cases or [],
            out,
            stem,
            compression,
            spills,
            interrupted,
            piece,
        )
    finally:
        if heartbeat:
            heartbeat.__exit__()


def _serve(
    comm: Comm,
    meta: dict,
    traces: Sequence[ChannelTrace],
    offset: float,
    windows: np.ndarray,
    spills: SpillPlan | None,
    piece: int,
    dest: int = 0,
) -> None:
    """A rank other than the collector ``dest`` (rank 0, or its node leader): report, wait for the
    collector's go, then send everything in order: the windows, then each channel in pieces, each
    straight from the trace's memory (the collector subtracts the time offset). Each send completes
    only when the collector receives it, so nothing piles up."""
    sent = comm.isend_obj(meta, dest, _TAG_META)
    root = spills.liveness(dest) if spills else None
    give_up = root.why_dead if root else (lambda: "")
    try:
        comm.wait_message(dest, _TAG_REQ, give_up)
        req = comm.recv_obj(dest, _TAG_REQ)
        if req[0] == "send":
            piece = int(req[1])
            comm.send_arrays([windows], dest, _TAG_DATA, give_up)
            for t in traces:
                for lo in range(0, len(t.time), piece):
                    hi = lo + piece
                    comm.send_arrays(
                        [
                            t.time[lo:hi],
                            t.power[lo:hi].astype(np.float32),
                            t.energy[lo:hi],
                            t.sensor_time[lo:hi],
                        ],
                        dest,
                        _TAG_DATA,
                        give_up,
                    )
    except PeerTimeout as exc:
        if dest != 0:
            # rank 0 reads this rank from its spill file and ends the job once the run file is written
            log.error("rank %d: its node leader, rank %d, is gone (%s)", comm.rank, dest, exc)
            return
        where = (
            f"; its spill file stays in {spills.folder}: rebuild the run with `energy-hpc merge`"
            if spills
            else ""
        )
        log.error("rank %d: rank 0 is gone (%s): nobody will write the run file%s", comm.rank, exc, where)
        comm.abandon()
        return
    sent.wait()


def _collect(
    comm: Comm,
    members: list[int],
    meta0: dict,
    traces: Sequence[ChannelTrace],
    offset: float,
    windows0: np.ndarray,
    header: RunHeader,
    cases: Sequence[dict],
    out: Path,
    stem: str,
    compression: str,
    spills: SpillPlan | None,
    interrupted: Callable[[], str],
    piece: int,
    part_attrs: dict[str, Any] | None = None,
) -> _Part:
    """This rank (``members[0]``) collects ``members`` (world ranks, in order) into one file: the run
    file, or with ``part_attrs`` one node's file of a run written per node."""
    me, others = members[0], members[1:]
    metas: dict[int, dict] = {me: meta0}
    missing: dict[int, str] = {}
    if others:
        # a node leader (part_attrs) waits half the grace after a signal for its members, so that its
        # node file and report still reach rank 0 within rank 0's whole grace for the leaders
        grace = settings.current().signal_grace_s * (0.5 if part_attrs is not None else 1.0)
        _wait_for_reports(comm, metas, missing, spills, interrupted, set(others), _TAG_META, grace)
    recovered: dict[int, RankSpill] = {}
    for r in sorted(missing):
        s, why = spills.read(r) if spills else (None, "no spill files")
        if s is not None:
            recovered[r] = s
        elif why:
            missing[r] = f"{missing[r]}; {why}"
        log.error("rank %d is missing: %s", r, missing[r])

    def rank_channels(r: int) -> list[dict]:
        if r in metas:
            return metas[r]["channels"]
        return recovered[r].channels if r in recovered else []

    channels = [c for r in members for c in rank_channels(r)]
    n_windows = {
        r: metas[r]["n_windows"] if r in metas else (len(recovered[r].windows) if r in recovered else 0)
        for r in members
    }
    first_channel = _offsets(members, [len(rank_channels(r)) for r in members])
    first_window = _offsets(members, [n_windows[r] for r in members])
    n_rows = int(sum(n_windows.values()))
    max_samples = max((c["n_samples"] for c in channels), default=0)
    header.contains_synthetic = any(c["method"] == "synthetic" for c in channels)
    header.emulated = emulated_text(emulated_parts(channels))
    header.contains_estimate = any(c["method"] == "estimate" for c in channels)
    live = [r for r in others if r in metas]
    receiver = _Receiver(comm, live, metas, piece, settings.current().gather_ahead)
    receiver.tell_ahead(0)  # the first ranks wake and offer their first piece while the file is created
    tmp = temp_path(out, stem)
    # Every write goes through the write-behind thread. When one fails (a full disk), the rest are
    # dropped but every rank is still received to the end, so no rank waits for rank 0 in vain; the
    # failure is raised once everything is in, below.
    behind = _WriteBehind()
    writer: Any
    try:
        writer = RunWriter(tmp, header, channels, max_samples, compression)
    except OSError as exc:
        writer, behind.error = _Unwritten(), exc

    def put_windows(start: int, data: np.ndarray) -> None:
        behind.put(writer.write_windows, start, data.astype(WINDOW_DTYPE))

    try:
        if part_attrs:
            behind.put(writer.set_attrs, part_attrs)
        behind.put(writer.begin_windows, n_rows)
        for i, t in enumerate(traces):  # this rank's own traces, written while the others arrive
            for lo in range(0, len(t.time), piece):
                behind.put(_write_own, writer, i, t, lo, lo + piece, offset)
        put_windows(0, windows0)
        failed = receiver.run(writer, behind, first_channel, first_window, put_windows)
        for r, why in failed.items():
            missing[r] = f"stopped answering during the gather ({why})"
            log.error("rank %d: %s", r, missing[r])
            s, why = spills.read(r) if spills else (None, "no spill files")
            if s is None:
                missing[r] += f"; {why}"
                continue
            recovered[r] = s
            n_windows[r] = min(n_windows[r], len(s.windows))
        for r in others:
            if r in recovered:
                behind.put(
                    _write_from_spill,
                    recovered[r],
                    writer,
                    int(first_channel[r]),
                    len(rank_channels(r)),
                    piece,
                )
                put_windows(int(first_window[r]), recovered[r].windows_closed()[: n_windows[r]])
        ranks = {
            r: missing_rank_record(missing[r], recovered.get(r)) if r in missing else metas[r]["rank"]
            for r in members
        }
        problems = [f"rank {r}: {rec.status}: {rec.error}" for r, rec in ranks.items() if rec.status != "ok"]
        if problems:
            header.status, header.status_reason = "partial", "; ".join(problems)[:4000]
            behind.put(writer.set_status, header.status, header.status_reason)
        behind.put(writer.write_tables, [ranks[r] for r in members], None, cases)
        behind.put(writer.close)
        try:
            behind.close()
            path = place(tmp, out, stem)
        except OSError as exc:
            writer.abort()
            raise _unwritten(exc, out, spills, metas) from None
    finally:
        behind.join()
        for s in recovered.values():
            s.close()
    log.info(
        "wrote %s (%d ranks, %d channels, %d windows%s)",
        path,
        len(members),
        len(channels),
        n_rows,
        f", {len(missing)} rank(s) missing" if missing else "",
    )
    keep = set(missing) | {r for r, rec in ranks.items() if rec.spill_only}
    return _Part(path, header.status, missing, keep, ranks, channels, n_rows, int(max_samples))


def _offsets(members: Sequence[int], counts: Sequence[int]) -> dict[int, int]:
    """Where each member's rows start, its rows following the members before it."""
    out, at = {}, 0
    for r, n in zip(members, counts, strict=True):
        out[r], at = at, at + int(n)
    return out


def _by_node(
    comm: Comm,
    layout: NodeLayout,
    meta: dict,
    traces: Sequence[ChannelTrace],
    offset: float,
    windows: np.ndarray,
    header: RunHeader | None,
    cases: Sequence[dict],
    out: Path,
    stem: str,
    compression: str,
    spills: SpillPlan | None,
    interrupted: Callable[[], str],
    piece: int,
) -> GatherOutcome:
    """A node leader: its node's file, then its report to rank 0; rank 0 then writes the index."""
    folder = nodes_folder(out, spills.folder if spills else None, stem)
    k = layout.node_index
    node_header = _node_header(header, comm.size, layout.n_nodes)
    attrs = _part_attrs(stem, k, layout.members)
    args = (meta, traces, offset, windows, node_header, cases, folder, f"node-{k:05d}", compression, spills)
    report: dict[str, Any]
    try:
        try:  # inside: a folder that cannot be made is a run file not written, with the merge hint
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unwritten(exc, out, spills, {}) from None
        part = _collect(comm, list(layout.members), *args, interrupted, piece, attrs)
        report = _report(part, out)
    except RunFileNotWritten as exc:
        if comm.rank == 0:
            raise
        log.error("node %d: %s", k, exc)
        report = {"error": str(exc)}
        part = None
    if comm.rank != 0:
        _send_report(comm, report, spills)
        return GatherOutcome(None, "", part.missing if part else {})
    assert header is not None and part is not None
    return _write_index(
        comm, layout, part, header, cases, out, stem, folder, compression, spills, interrupted, piece
    )


def _node_header(header: RunHeader | None, n_ranks: int, n_nodes: int) -> RunHeader:
    if header is not None:
        return replace(header, slurm=dict(header.slurm), extra=dict(header.extra))
    return RunHeader(
        job_name="",
        job_text="",
        job_path="",
        epoch_unix=0.0,
        n_ranks=n_ranks,
        n_nodes=n_nodes,
        launcher="mpi",
    )


def _part_attrs(stem: str, node: int, members: Sequence[int]) -> dict[str, Any]:
    return {
        "format": PART_FORMAT,
        "run_stem": stem,
        "node_index": node,
        "node_ranks": ",".join(map(str, members)),
    }


def _report(part: _Part, out: Path) -> dict[str, Any]:
    """What rank 0 needs of a node's file for the index: small (no samples)."""
    return {
        "error": "",
        "file": part.path.relative_to(out).as_posix(),
        "status": part.status,
        "missing": part.missing,
        "keep": part.keep,
        "ranks": part.ranks,
        "channels": part.channels,
        "n_windows": part.n_windows,
        "max_samples": part.max_samples,
    }


def _send_report(comm: Comm, report: dict[str, Any], spills: SpillPlan | None) -> None:
    """A node leader hands rank 0 its report, giving up if rank 0 is gone."""
    req = comm.isend_obj(report, 0, _TAG_NODE)
    root = spills.liveness(0) if spills else None
    next_check = time.monotonic() + 1.0
    while not req.Test():
        if root is not None and time.monotonic() >= next_check:
            why = root.why_dead()
            if why:
                where = f" and the spill files in {spills.folder}" if spills else ""
                log.error(
                    "rank %d: rank 0 is gone (%s): nobody will write the run file; this node's file%s "
                    "stay: rebuild the run with `energy-hpc merge`",
                    comm.rank,
                    why,
                    where,
                )
                req.Cancel()
                comm.abandon()
                return
            next_check = time.monotonic() + 1.0
        time.sleep(0.01)


def _from_spills(
    members: Sequence[int],
    why: str,
    node: int,
    header: RunHeader,
    cases: Sequence[dict],
    folder: Path,
    stem: str,
    compression: str,
    spills: SpillPlan | None,
    piece: int,
) -> _Part:
    """Rank 0 writes the file of a node whose leader is gone (or could not write it) from its ranks'
    spill files."""
    recovered: dict[int, RankSpill] = {}
    missing: dict[int, str] = {}
    for r in members:
        s, err = spills.read(r) if spills else (None, "no spill files")
        missing[r] = why if s is not None else f"{why}; {err}"
        if s is not None:
            recovered[r] = s
        log.error("rank %d is missing: %s", r, missing[r])
    try:
        channels = [c for r in members if r in recovered for c in recovered[r].channels]
        wins = [recovered[r].windows_closed() for r in members if r in recovered]
        windows = np.concatenate(wins).astype(WINDOW_DTYPE) if wins else np.zeros(0, WINDOW_DTYPE)
        max_samples = max((c["n_samples"] for c in channels), default=0)
        ranks = {r: missing_rank_record(missing[r], recovered.get(r)) for r in members}
        header.status = "partial"
        header.status_reason = "; ".join(f"rank {r}: missing: {rec.error}" for r, rec in ranks.items())[:4000]
        header.contains_synthetic = any(c["method"] == "synthetic" for c in channels)
        header.contains_estimate = any(c["method"] == "estimate" for c in channels)
        header.emulated = emulated_text(emulated_parts(channels))
        tmp = temp_path(folder, f"node-{node:05d}")
        try:
            writer = RunWriter(tmp, header, channels, max_samples, compression)
            writer.set_attrs(_part_attrs(stem, node, members))
            first = 0
            for r in members:
                if r in recovered:
                    n = len(recovered[r].channels)
                    _write_from_spill(recovered[r], writer, first, n, piece)
                    first += n
            writer.write_tables([ranks[r] for r in members], windows, cases)
            writer.close()
            path = place(tmp, folder, f"node-{node:05d}")
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _unwritten(exc, folder.parent, spills, {}) from None
    finally:
        for s in recovered.values():
            s.close()
    return _Part(path, "partial", missing, set(members), ranks, channels, len(windows), int(max_samples))


def _write_index(
    comm: Comm,
    layout: NodeLayout,
    own: _Part,
    header: RunHeader,
    cases: Sequence[dict],
    out: Path,
    stem: str,
    folder: Path,
    compression: str,
    spills: SpillPlan | None,
    interrupted: Callable[[], str],
    piece: int,
) -> GatherOutcome:
    """Rank 0: wait for every other node leader's report, rebuild the nodes whose leader is gone from
    spills, then write the run file as the index over the node files."""
    t0 = time.monotonic()
    leaders = {members[0]: k for k, members in enumerate(layout.nodes) if k > 0}
    reports: dict[int, dict] = {}
    gone: dict[int, str] = {}
    if leaders:
        _wait_for_reports(comm, reports, gone, spills, interrupted, set(leaders), _TAG_NODE)
    parts: list[dict[str, Any]] = [_report(own, out)]
    for leader, k in sorted(leaders.items(), key=lambda x: x[1]):
        rep = reports.get(leader)
        if rep is not None and not rep["error"]:
            parts.append(rep)
            continue
        why = (
            f"its node leader, rank {leader}, could not write the node's file ({rep['error'][:300]})"
            if rep is not None
            else f"its node leader, rank {leader}, is gone ({gone.get(leader, 'no report')})"
        )
        node_header = _node_header(header, comm.size, layout.n_nodes)
        members = layout.nodes[k]
        part = _from_spills(members, why, k, node_header, cases, folder, stem, compression, spills, piece)
        parts.append(_report(part, out))
    t_reports = time.monotonic()
    channels: list[dict] = []
    node_parts: list[NodePart] = []
    ranks: dict[int, RankRecord] = {}
    missing: dict[int, str] = {}
    keep: set[int] = set()
    n_windows = 0
    for p in parts:
        n_samples = max(int(p["max_samples"]), 1)
        node_parts.append(
            NodePart(p["file"], len(p["channels"]), n_samples, len(channels), p["n_windows"], n_windows)
        )
        channels += p["channels"]
        n_windows += p["n_windows"]
        ranks.update(p["ranks"])
        missing.update(p["missing"])
        keep |= set(p["keep"])
    header.contains_synthetic = any(c["method"] == "synthetic" for c in channels)
    header.emulated = emulated_text(emulated_parts(channels))
    header.contains_estimate = any(c["method"] == "estimate" for c in channels)
    problems = [
        f"rank {r}: {rec.status}: {rec.error}" for r, rec in sorted(ranks.items()) if rec.status != "ok"
    ]
    if problems:
        header.status, header.status_reason = "partial", "; ".join(problems)[:4000]
    header.extra = {**header.extra, "nodes_folder": folder.name}
    tmp = temp_path(out, stem)
    max_samples = max((p.n_samples for p in node_parts), default=1)
    try:
        writer = RunWriter(tmp, header, channels, max_samples, compression, parts=node_parts)
        try:
            writer.begin_windows(n_windows)  # virtual: each node file's windows, node after node
            writer.write_tables([ranks[r] for r in range(comm.size)], None, cases)
            writer.close()
        except (OSError, RuntimeError, ValueError):
            writer.abort()
            raise
        path = place(tmp, out, stem)
    except OSError as exc:
        raise _unwritten(exc, out, spills, {}) from None
    if missing:
        comm.abandon()  # MPI_Finalize would wait for the missing ranks forever
    log.info(
        "wrote %s: the index of %d node files in %s (%d ranks, %d channels%s); the other nodes' reports "
        "came %.3f s after node 0's file, the index took %.3f s",
        path,
        len(parts),
        folder,
        comm.size,
        len(channels),
        f", {len(missing)} rank(s) missing" if missing else "",
        t_reports - t0,
        time.monotonic() - t_reports,
    )
    return GatherOutcome(path, header.status, missing, keep)


def _wait_for_reports(
    comm: Comm,
    metas: dict[int, dict],
    missing: dict[int, str],
    spills: SpillPlan | None,
    interrupted: Callable[[], str],
    pending: set[int],
    tag: int,
    grace_s: float | None = None,
) -> None:
    """Receive the reports (``tag``) of the ranks in ``pending`` into ``metas``; those that are gone
    go into ``missing`` with why. ``grace_s``: how long to wait after a signal (default: the
    setting)."""
    live = {r: spills.liveness(r) for r in pending} if spills else {}
    fallback = spills.fallback_s if spills else float("inf")
    t0 = time.monotonic()
    check_every = max(1.0, (spills.grace_s / 4) if spills else 1.0)
    next_check = [0.0]
    sig_at: list[float | None] = [None]
    # after a signal, how long rank 0 still waits for ranks to report (Slurm's KillWait is 30 s by default)
    if grace_s is None:
        grace_s = settings.current().signal_grace_s

    def give_up() -> str:
        # A signal reaches every rank at once, and each needs a moment (its torch call in progress,
        # stopping its sampler, its last spill) before it reports: wait for them a bounded time, well
        # inside Slurm's KillWait, rather than taking them all for missing at the first check.
        sig = interrupted()
        now = time.monotonic()
        if sig:
            first = sig_at[0]
            if first is None:
                first = sig_at[0] = now
            if now - first >= grace_s:
                for r in pending:
                    missing[r] = f"had not reported {grace_s:.0f} s after rank 0 got {sig}"
                pending.clear()
                return sig
        if now < next_check[0]:
            return ""
        next_check[0] = now + check_every
        for r in sorted(pending):
            why = (
                live[r].why_dead()
                if live
                else ("" if now - t0 < fallback else f"no answer within {fallback:.0f} s")
            )
            if why:
                missing[r] = why
                pending.discard(r)
        return "every other rank answered or is gone" if not pending else ""

    while pending:
        try:
            src, _ = comm.wait_message(-1, tag, give_up)
        except PeerTimeout:
            break
        metas[src] = comm.recv_obj(src, tag)
        if src in pending:
            pending.discard(src)
        else:  # a rank taken for missing reported after all: too late for its data to be waited for
            log.warning("rank %d reported after it was taken for missing", src)
            missing.pop(src, None)


class _WriteBehind:
    """Writes on a second thread while the main thread receives the next piece: h5py releases the
    GIL while it writes, and the transfer needs the receiving side's CPU (MPI progress, the copy
    out of shared memory). MPI stays on the main thread, so MPI_THREAD_FUNNELED is enough (Cray
    MPICH gives SERIALIZED unless asked). Receive buffers are reused from a pool of ``depth + 2``:
    rank 0 holds at most that many pieces, and a fresh array per piece (up to 28 MiB) would cost
    its page faults every time."""

    def __init__(self, depth: int = 2) -> None:
        self._todo: queue.Queue = queue.Queue(maxsize=depth)
        # the pool: depth + 2 places, each empty until first needed; last in, first out, so a freed
        # buffer is taken again before a new one is made
        self._free: queue.LifoQueue = queue.LifoQueue()
        for _ in range(depth + 2):
            self._free.put(np.empty(0, np.uint8))
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="energy-hpc-gather-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            fn, args, buf = item
            try:
                if self.error is None:
                    fn(*args)
            except BaseException as exc:  # handed to the main thread at its next put/close
                self.error = exc
            finally:
                if buf is not None:
                    self._free.put(buf)

    def buffer(self, nbytes: int) -> np.ndarray:
        """A uint8 buffer of at least ``nbytes`` from the pool, waiting for the writer to free one."""
        while True:
            try:
                buf = self._free.get(timeout=0.5)
            except queue.Empty:
                continue
            return buf if len(buf) >= nbytes else np.empty(nbytes, np.uint8)

    def give_back(self, buf: np.ndarray) -> None:
        self._free.put(buf)

    def put(self, fn: Callable, *args: Any, buf: np.ndarray | None = None) -> None:
        """Queue a write. After a write failed, later ones are dropped (``close`` raises the failure):
        the caller goes on receiving, so the ranks that send are not left waiting."""
        while True:
            if self.error is not None:
                if buf is not None:
                    self._free.put(buf)
                return
            try:
                self._todo.put((fn, args, buf), timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait for every queued write; raise what the writer thread raised."""
        self.join()
        self._raise()

    def join(self) -> None:
        """Wait for every queued write (again: nothing)."""
        if self._thread.is_alive():
            self._todo.put(None)
            self._thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


class RunFileNotWritten(Exception):
    """Rank 0 could not write the run file (a full disk); the message says how to rebuild the run
    from its spills. The runner turns it into an :class:`~energy_hpc.errors.OutputError`."""


class _Unwritten:
    """Stands in for a run file that could not be created: every write to it is dropped."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kw: None


def _unwritten(
    exc: OSError, out: Path, spills: SpillPlan | None, metas: dict[int, dict]
) -> RunFileNotWritten:
    """The one line a run file that could not be written comes to: why, and how to get the run back
    from the spills (each rank's, in the output folder or, where it was full, in the fallback)."""
    why = one_line(exc).split(": ", 1)[-1]
    if spills is None:
        return RunFileNotWritten(f"cannot write the run file into {str(out)!r}: {why}")
    fallbacks = {m["spill_fallback"] for m in metas.values() if m.get("spill_fallback")}
    folders = [str(spills.folder), *sorted(fallbacks - {str(spills.folder)})]
    merge = " ".join(["energy-hpc merge", *map(shlex.quote, folders), "-o", shlex.quote(str(out))])
    return RunFileNotWritten(
        f"cannot write the run file into {str(out)!r}: {why}; what was measured is kept in the spill "
        f"files: once there is room, rebuild the run with: {merge}"
    )


def _write_own(writer: RunWriter, i: int, t: ChannelTrace, lo: int, hi: int, offset: float) -> None:
    writer.write_channel(i, t.time[lo:hi] - offset, t.power[lo:hi], t.energy[lo:hi], t.sensor_time[lo:hi], lo)


class _Receiver:
    """Receive every live rank's windows and channels, rank after rank. The next ``ahead`` ranks
    are told to start before their turn, so each is awake with its first piece offered when rank 0
    gets to it, and each piece is written on the write-behind thread while the next is received.
    Large pieces travel by rendezvous: an offered piece holds no memory on rank 0 until it is
    received."""

    def __init__(self, comm: Comm, live: list[int], metas: dict[int, dict], piece: int, ahead: int) -> None:
        self.comm, self.live, self.metas, self.piece, self.ahead = comm, live, metas, piece, ahead
        self.sends: list[Any] = []
        self.told = 0

    def tell_ahead(self, i: int) -> None:
        while self.told < len(self.live) and self.told <= i + self.ahead:
            self.sends.append(self.comm.isend_obj(("send", self.piece), self.live[self.told], _TAG_REQ))
            self.told += 1

    def run(
        self,
        writer: RunWriter,
        behind: _WriteBehind,
        first_channel: dict[int, int],
        first_window: dict[int, int],
        put_windows: Callable[[int, np.ndarray], None],
    ) -> dict[int, str]:
        """Returns the ranks that stopped answering, with why."""
        comm, failed = self.comm, {}
        lent: list[np.ndarray] = []  # the buffer the piece being received lands in

        def alloc(nbytes: int) -> np.ndarray:
            lent.append(behind.buffer(nbytes))
            return lent[-1]

        for i, r in enumerate(self.live):
            self.tell_ahead(i)
            last = [time.monotonic()]

            def give_up(last: list[float] = last) -> str:
                return f"no answer in {_ANSWER_S:.0f} s" if time.monotonic() - last[0] > _ANSWER_S else ""

            try:
                (win,) = comm.recv_arrays_until(r, _TAG_DATA, give_up)
                put_windows(int(first_window[r]), win)
                for j, c in enumerate(self.metas[r]["channels"]):
                    for lo in range(0, int(c["n_samples"]), self.piece):
                        last[0] = time.monotonic()
                        rows = comm.recv_arrays_until(r, _TAG_DATA, give_up, alloc=alloc)
                        behind.put(
                            _write_rows,
                            writer,
                            int(first_channel[r]) + j,
                            rows,
                            lo,
                            self.metas[r]["time_offset"],
                            buf=lent.pop(),
                        )
            except PeerTimeout as exc:
                failed[r] = str(exc)
                while lent:
                    behind.give_back(lent.pop())
        for s in self.sends:
            if not s.Test():
                s.Cancel() if failed else s.wait()
        return failed


def _write_rows(writer: RunWriter, i: int, rows: list[np.ndarray], start: int, offset: float) -> None:
    time_, power, energy, sensor_time = rows
    if offset:
        time_ -= offset  # in rank 0's receive buffer: the sender sent its trace as it is
    writer.write_channel(i, time_, power, energy, sensor_time, start)


def _write_from_spill(
    s: RankSpill, writer: RunWriter, first_channel: int, n_channels: int, piece: int
) -> None:
    for j in range(min(n_channels, len(s.channels))):
        for lo, data in s.pieces(j, piece):
            writer.write_piece(first_channel + j, data, lo)
