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
"""

from __future__ import annotations

import logging
import queue
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from energy_hpc import settings
from energy_hpc.context import Comm, PeerTimeout
from energy_hpc.spill import Heartbeat, RankSpill, SpillPlan, missing_rank_record, one_line
from energy_hpc.store import (
    RankRecord,
    RunHeader,
    RunWriter,
    channel_record,
    emulated_parts,
    emulated_text,
    place,
    temp_path,
)
from energy_hpc.telemetry.sampler import ChannelTrace
from energy_hpc.windows import WINDOW_DTYPE

log = logging.getLogger(__name__)

__all__ = ["PIECE_SAMPLES", "GatherOutcome", "channel_record", "gather_and_write"]

_TAG_META = 21
_TAG_REQ = 22
_TAG_DATA = 23
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
) -> tuple[Path | None, str]:
    """Collective over the live ranks: every rank calls it. Returns (run file path, run status) on
    rank 0, (None, "") elsewhere. The run is ``complete`` when every rank finished every case, else
    ``partial`` with the reason. ``interrupted`` returns the name of a signal rank 0 got (then it waits at
    most the ``signal_grace_s`` setting more for ranks that have not reported). ``piece``: samples per
    piece (default: the ``gather_piece_samples`` setting)."""
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
    if comm.rank != 0:
        _serve(comm, meta, traces, time_offset, windows, spills, piece)
        return GatherOutcome(None, "", {})
    assert header is not None and out is not None and stem is not None
    heartbeat = Heartbeat(spills.path(0), min(spills.spill_seconds, spills.grace_s / 3)) if spills else None
    if heartbeat:
        heartbeat.__enter__()
    try:
        return _collect(
            comm,
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
) -> None:
    """A rank other than 0: report, wait for rank 0's go, then send everything in order: the
    windows, then each channel in pieces, each straight from the trace's memory (rank 0 subtracts
    the time offset). Each send completes only when rank 0 receives it, so nothing piles up."""
    sent = comm.isend_obj(meta, 0, _TAG_META)
    root = spills.liveness(0) if spills else None
    give_up = root.why_dead if root else (lambda: "")
    try:
        comm.wait_message(0, _TAG_REQ, give_up)
        req = comm.recv_obj(0, _TAG_REQ)
        if req[0] == "send":
            piece = int(req[1])
            comm.send_arrays([windows], 0, _TAG_DATA, give_up)
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
                        0,
                        _TAG_DATA,
                        give_up,
                    )
    except PeerTimeout as exc:
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
) -> GatherOutcome:
    metas: dict[int, dict] = {0: meta0}
    missing: dict[int, str] = {}
    if comm.size > 1:
        _wait_for_reports(comm, metas, missing, spills, interrupted)
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

    channels = [c for r in range(comm.size) for c in rank_channels(r)]
    first_channel = np.cumsum([0] + [len(rank_channels(r)) for r in range(comm.size)])
    n_windows = [
        metas[r]["n_windows"] if r in metas else (len(recovered[r].windows) if r in recovered else 0)
        for r in range(comm.size)
    ]
    first_window = np.cumsum([0, *n_windows])
    max_samples = max((c["n_samples"] for c in channels), default=0)
    header.contains_synthetic = any(c["method"] == "synthetic" for c in channels)
    header.emulated = emulated_text(emulated_parts(channels))
    header.contains_estimate = any(c["method"] == "estimate" for c in channels)
    live = [r for r in range(1, comm.size) if r in metas]
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
    try:
        behind.put(writer.begin_windows, int(first_window[-1]))
        for i, t in enumerate(traces):  # rank 0's own traces, written while the others arrive
            for lo in range(0, len(t.time), piece):
                behind.put(_write_own, writer, i, t, lo, lo + piece, offset)
        behind.put(writer.write_windows, 0, windows0.astype(WINDOW_DTYPE))
        failed = receiver.run(writer, behind, first_channel, first_window)
        for r, why in failed.items():
            missing[r] = f"stopped answering during the gather ({why})"
            log.error("rank %d: %s", r, missing[r])
            s, why = spills.read(r) if spills else (None, "no spill files")
            if s is None:
                missing[r] += f"; {why}"
                continue
            recovered[r] = s
            n_windows[r] = min(n_windows[r], len(s.windows))
        for r in range(1, comm.size):
            if r in recovered:
                behind.put(
                    _write_from_spill,
                    recovered[r],
                    writer,
                    int(first_channel[r]),
                    int(first_window[r]),
                    len(rank_channels(r)),
                    n_windows[r],
                    piece,
                )
        ranks: list[RankRecord] = [
            missing_rank_record(missing[r], recovered.get(r)) if r in missing else metas[r]["rank"]
            for r in range(comm.size)
        ]
        problems = [
            f"rank {r}: {rec.status}: {rec.error}" for r, rec in enumerate(ranks) if rec.status != "ok"
        ]
        if problems:
            header.status, header.status_reason = "partial", "; ".join(problems)[:4000]
            behind.put(writer.set_status, header.status, header.status_reason)
        behind.put(writer.write_tables, ranks, None, cases)
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
    if missing:
        comm.abandon()  # MPI_Finalize would wait for the missing ranks forever
    log.info(
        "wrote %s (%d ranks, %d channels, %d windows%s)",
        path,
        comm.size,
        len(channels),
        int(first_window[-1]),
        f", {len(missing)} rank(s) missing" if missing else "",
    )
    keep = set(missing) | {r for r, rec in enumerate(ranks) if rec.spill_only}
    return GatherOutcome(path, header.status, missing, keep)


def _wait_for_reports(
    comm: Comm,
    metas: dict[int, dict],
    missing: dict[int, str],
    spills: SpillPlan | None,
    interrupted: Callable[[], str],
) -> None:
    pending = set(range(1, comm.size))
    live = {r: spills.liveness(r) for r in pending} if spills else {}
    fallback = spills.fallback_s if spills else float("inf")
    t0 = time.monotonic()
    check_every = max(1.0, (spills.grace_s / 4) if spills else 1.0)
    next_check = [0.0]
    sig_at: list[float | None] = [None]
    # after a signal, how long rank 0 still waits for ranks to report (Slurm's KillWait is 30 s by default)
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
            src, _ = comm.wait_message(-1, _TAG_META, give_up)
        except PeerTimeout:
            break
        metas[src] = comm.recv_obj(src, _TAG_META)
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
        self, writer: RunWriter, behind: _WriteBehind, first_channel: Any, first_window: Any
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
                behind.put(_write_windows, writer, int(first_window[r]), win)
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


def _write_windows(writer: RunWriter, start: int, data: np.ndarray) -> None:
    writer.write_windows(start, data.astype(WINDOW_DTYPE))


def _write_rows(writer: RunWriter, i: int, rows: list[np.ndarray], start: int, offset: float) -> None:
    time_, power, energy, sensor_time = rows
    if offset:
        time_ -= offset  # in rank 0's receive buffer: the sender sent its trace as it is
    writer.write_channel(i, time_, power, energy, sensor_time, start)


def _write_from_spill(
    s: RankSpill,
    writer: RunWriter,
    first_channel: int,
    first_window: int,
    n_channels: int,
    n_windows: int,
    piece: int,
) -> None:
    for j in range(min(n_channels, len(s.channels))):
        for lo, data in s.pieces(j, piece):
            writer.write_piece(first_channel + j, data, lo)
    writer.write_windows(first_window, s.windows_closed()[:n_windows])
