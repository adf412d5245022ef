"""Spill files: each rank keeps what it has measured on disk while the run lasts, so a crash of the
whole job loses at most one spill interval.

Every rank writes ``<out>/.<run-stem>.spill/rank-NNNNN.h5`` (plain HDF5 through h5py):

- root attributes: the run's header (job text, epoch, rank count, ...: :class:`~energy_hpc.store.RunHeader`),
  its stem and cases, who this rank is, and its :class:`~energy_hpc.store.RankRecord` as JSON
  (``rank_json``); ``finished`` is 1 once the rank stopped sampling and wrote its last spill;
- ``/traces/<j>``: one (4, n) float64 dataset per channel (time in run seconds, power W, energy J,
  sensor time s), chunked and resizable; each spill appends the samples taken since the last one;
- ``/windows``: every window so far (WINDOW_DTYPE records); windows still open have status ``open``.

A :class:`Spiller` thread appends every ``spill_seconds`` and flushes the file, so what is on disk is a
consistent HDF5 file between spills (a process killed *during* the few milliseconds of a spill can
leave it unreadable: that rank then loses what it measured, and the merge says so). Each spill also
changes the file's modification time, which is how other ranks tell a slow rank from a dead one
(:class:`Liveness`). ``energy-hpc merge`` rebuilds a run file from the spill folder of a run that never
finished (:func:`rebuild`).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from energy_hpc import settings
from energy_hpc.store import (
    RankRecord,
    RunHeader,
    RunWriter,
    channel_record,
    emulated_parts,
    emulated_text,
    let_go,
    place,
    temp_path,
)
from energy_hpc.windows import WINDOW_DTYPE

if TYPE_CHECKING:
    from energy_hpc.telemetry.sampler import ChannelTrace

log = logging.getLogger(__name__)

SPILL_FORMAT = "energy-hpc spill"
SPILL_VERSION = "1"
_CHUNK = 8192  # samples per chunk in a spill file (256 KiB of float64 x 4 rows)


def rank_spill_path(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank:05d}.h5"


def grace_seconds(spill_seconds: float) -> float:
    """How long a peer's spill file may stay unchanged before the peer is taken for dead."""
    return max(3.0 * spill_seconds, 10.0)


def pack(t: ChannelTrace, offset: float) -> np.ndarray:
    """A ChannelTrace as a (4, n) float64 array in run time (time - offset)."""
    if not len(t.time):
        return np.empty((4, 0))
    return np.stack([t.time - offset, t.power, t.energy, t.sensor_time])


def windows_snapshot(windows: np.ndarray) -> np.ndarray:
    """Windows as spilled: a window not yet closed (end NaN) is marked ``open``."""
    w = windows.copy()
    if len(w):
        w["status"][np.isnan(w["end"])] = b"open"
    return w


def spill_attrs(
    header: RunHeader,
    record: RankRecord,
    *,
    rank: int,
    stem: str,
    spill_seconds: float,
    cases: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The root attributes a spill file starts with (:func:`header_from_spill` reads the header back)."""
    return {
        "format": SPILL_FORMAT,
        "spill_version": SPILL_VERSION,
        "finished": 0,
        "last_spill": math.nan,
        "rank_json": json.dumps(record.as_dict()),
        "channels_json": "[]",
        "rank": rank,
        "n_ranks": header.n_ranks,
        "n_nodes": header.n_nodes,
        "stem": stem,
        "job_name": header.job_name,
        "job_text": header.job_text,
        "job_path": header.job_path,
        "epoch_unix": header.epoch_unix,
        "launcher": header.launcher,
        "slurm_json": json.dumps(header.slurm, sort_keys=True),
        "interval_s": header.interval_s,
        "spill_seconds": spill_seconds,
        "host": record.host,
        "node": record.node,
        "cases_json": json.dumps(list(cases), sort_keys=True),
        # what the run file's root carries beside the fixed header (trials, trial_order, trial_seed) and
        # the settings Slurm applied: a run rebuilt from spills keeps them
        "extra_json": json.dumps(header.extra, sort_keys=True, default=str),
        "scheduler_settings": header.scheduler_settings,
    }


def header_from_spill(attrs: Mapping[str, Any]) -> RunHeader:
    """The run's header from a spill file's attributes (:func:`spill_attrs`)."""
    return RunHeader(
        job_name=str(attrs.get("job_name", "")),
        job_text=str(attrs.get("job_text", "")),
        job_path=str(attrs.get("job_path", "")),
        epoch_unix=float(attrs.get("epoch_unix", 0.0)),
        n_ranks=int(attrs.get("n_ranks", 1)),
        n_nodes=int(attrs.get("n_nodes", 1)),
        launcher=str(attrs.get("launcher", "")),
        slurm=json.loads(attrs.get("slurm_json", "{}")),
        interval_s=float(attrs.get("interval_s", 0.0)),
        extra=json.loads(attrs.get("extra_json", "{}")),
        scheduler_settings=str(attrs.get("scheduler_settings", "")),
    )


class NoRoom(OSError):
    """The spill folder has less free space than the next spill needs: nothing was written."""


def one_line(exc: BaseException) -> str:
    """An I/O failure in one line (h5py's messages run over several lines and name the buffer)."""
    if isinstance(exc, NoRoom):
        return f"OSError: {exc.strerror}"
    if isinstance(exc, OSError) and exc.errno:
        return f"{type(exc).__name__}: {os.strerror(exc.errno)}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def fallback_root() -> Path:
    """Where a spill goes when the output folder stays full: the ``fallback_dir`` setting, else the
    job's node-local folder (``local_dir``), else the temporary folder ($TMPDIR or /tmp)."""
    s = settings.current()
    return s.fallback_dir or s.local_dir or Path(tempfile.gettempdir())


class SpillWriter:
    """Appends one rank's traces and windows to its spill file. The file starts with the run's
    ``header``, the rank's ``record``, the run's ``stem``, ``spill_seconds`` and ``cases`` rows.

    ``home`` is the file other ranks watch (:class:`Liveness`); ``path`` is where the data are, the
    same file unless the rank fell back to another folder at the end (:meth:`restart`). After a
    write failed the file is let go (:meth:`abandon`) and ``broken`` is set: the next spill writes
    the whole file again (:meth:`restart`)."""

    def __init__(
        self,
        path: Path,
        header: RunHeader,
        record: RankRecord,
        *,
        rank: int,
        stem: str,
        spill_seconds: float = math.nan,
        cases: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.home = self.path = path
        self.rank, self.host, self.node = rank, record.host, record.node
        self.attrs = spill_attrs(
            header, record, rank=rank, stem=stem, spill_seconds=spill_seconds, cases=cases
        )
        self.broken = False
        self.n_spilled = 0  # samples per channel on disk, whole
        self._open(path)

    def _open(self, path: Path) -> None:
        import h5py

        self.f = h5py.File(path, "w")
        try:
            self.f.attrs.update(self.attrs)
            self.traces = self.f.create_group("traces")
            self.f.create_dataset("windows", shape=(0,), maxshape=(None,), dtype=WINDOW_DTYPE, chunks=(256,))
            self.f.flush()
        except BaseException:
            self.abandon()
            path.unlink(missing_ok=True)
            raise
        self.path, self.n_spilled, self.broken = path, 0, False

    def append(
        self, traces: Sequence[ChannelTrace], offset: float, windows: np.ndarray, *, last_time: float
    ) -> None:
        """Add the samples ``traces`` hold (those taken since the last spill) and rewrite the windows.

        Two steps, each flushed: the data, then the counts that say how much of them is whole
        (``channels_json``, ``n_windows``, ``last_spill``). A spill that breaks off in the first step
        leaves the counts of the spill before, so a reader never takes data that were not written
        completely. Raises :class:`NoRoom`, writing nothing, when the folder has less free space than
        the spill needs; any other failure lets the file go (:meth:`abandon`) and is raised."""
        packed = [pack(t, offset) for t in traces]
        snap = windows_snapshot(windows)
        # a new chunk per channel at most, the windows, and room for the metadata
        need = sum(p.nbytes for p in packed) + len(packed) * _CHUNK * 32 + snap.nbytes + (64 << 10)
        room = free_bytes(self.path.parent)
        if room < need:
            raise NoRoom(errno.ENOSPC, f"No space left on device ({room} bytes free, a spill needs {need})")
        try:
            records = []
            for j, (t, data) in enumerate(zip(traces, packed, strict=True)):
                name = str(j)
                if name not in self.traces:
                    self.traces.create_dataset(
                        name, shape=(4, 0), maxshape=(4, None), dtype="f8", chunks=(4, _CHUNK)
                    )
                ds = self.traces[name]
                n0 = ds.shape[1]
                if data.shape[1]:
                    ds.resize(n0 + data.shape[1], axis=1)
                    ds[:, n0:] = data
                rec = channel_record(t, self.rank, self.host, self.node)
                rec["n_samples"] = n0 + data.shape[1]
                records.append(rec)
            w = self.f["windows"]
            if len(snap) > len(w):
                w.resize((len(snap),))
            if len(snap):
                w[: len(snap)] = snap
            self.f.flush()  # the data first ...
            self.f.attrs["channels_json"] = json.dumps(records)
            self.f.attrs["n_windows"] = len(snap)
            self.f.attrs["last_spill"] = last_time
            self.f.flush()  # ... then the counts that cover them
        except BaseException:
            self.abandon()
            raise
        if traces:
            self.n_spilled += len(traces[0].time)
        touch(self.home)  # the heartbeat other ranks watch, even when a spill had nothing new

    def restart(
        self,
        traces: Sequence[ChannelTrace],
        offset: float,
        windows: np.ndarray,
        *,
        last_time: float,
        folder: Path | None = None,
    ) -> None:
        """Write the whole spill again from ``traces`` (every sample since the start) into a new file,
        which then takes the place of the broken one; or, with ``folder``, into that folder instead."""
        final = self.home if folder is None else rank_spill_path(folder, self.rank)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        if self.f.id.valid:
            self.abandon()
        self._open(tmp)
        try:
            self.append(traces, offset, windows, last_time=last_time)
            os.replace(tmp, final)
        except BaseException:
            self.abandon()
            tmp.unlink(missing_ok=True)
            raise
        self.path = final

    def finish(self, record: RankRecord) -> None:
        try:
            self.f.attrs["rank_json"] = json.dumps(record.as_dict())
            self.f.attrs["finished"] = 1
            self.f.flush()
        except BaseException:
            self.abandon()
            raise
        self.close()

    def close(self) -> None:
        if self.f.id.valid:
            try:
                self.f.close()
            except (OSError, RuntimeError, ValueError):
                self.abandon()

    def abandon(self) -> None:
        """Let go of the file after a failed write, writing nothing more to it (:func:`store.let_go`);
        what reached the disk stays, and its counts say what of it is whole."""
        self.broken = True
        let_go(self.f)


def touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


class Spiller:
    """Background thread that spills every ``interval_s`` seconds.

    It copies samples out through ``traces_since(start)`` (the sampler's :meth:`traces`, which holds
    the sampler's lock only for the copy), so the sampler thread is kept waiting at most for a copy,
    never for the disk. A spill that fails (disk full, quota) is logged once, in one line, and tried
    again every interval; the first one that works writes everything not yet on disk (after a failed
    write, the whole file again). Meanwhile the measurement goes on and the file is still touched
    every interval, so that peers judging this rank's liveness by it do not take it for dead. If the
    spill still fails when the rank stops, the whole spill is written into the fallback folder
    (:func:`fallback_root`), named in ``fallback``.
    """

    def __init__(
        self,
        writer: SpillWriter,
        interval_s: float,
        traces_since: Callable[[int], Sequence[ChannelTrace]],
        windows: Callable[[], np.ndarray],
        offset: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer, self.interval_s = writer, interval_s
        self.traces_since, self.windows, self.offset, self.clock = traces_since, windows, offset, clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._done = False
        self.failed = ""  # why the last spill failed; "" once one works again
        self.failures = 0  # spills that failed, all told
        self.fallback: Path | None = None  # the folder the whole spill went to at the end
        self.spills = 0
        self.seconds = 0.0  # time spent spilling, all spills

    def spill_now(self) -> None:
        with self._lock:
            if self._done:
                return
            t0 = time.perf_counter()
            w = self.writer
            try:
                if w.broken:
                    w.restart(self.traces_since(0), self.offset, self.windows(), last_time=self._now())
                else:
                    w.append(
                        self.traces_since(w.n_spilled), self.offset, self.windows(), last_time=self._now()
                    )
            except (OSError, ValueError, RuntimeError) as exc:  # h5py raises these for I/O failures
                self._fail(exc)
                return
            if self.failed:
                log.warning(
                    "rank %d: spilling to %s works again after %d failed spill(s); caught up",
                    w.rank,
                    w.path,
                    self.failures,
                )
                self.failed = ""
            self.spills += 1
            self.seconds += time.perf_counter() - t0

    def _now(self) -> float:
        return self.clock() - self.offset

    def _fail(self, exc: BaseException) -> None:
        why = one_line(exc)
        if not self.failed:
            log.warning(
                "rank %d: spill to %s failed (%s); trying again every %g s, the measurement goes on",
                self.writer.rank,
                self.writer.home,
                why,
                self.interval_s,
            )
        self.failed, self.failures = why, self.failures + 1
        # no data goes in, but the file still says this rank is alive: rank 0 judges liveness by the
        # file changing, and must not take a rank still measuring for dead
        touch(self.writer.home)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.spill_now()

    def start(self) -> Spiller:
        self.spill_now()
        self._thread = threading.Thread(target=self._loop, name="energy-hpc-spill", daemon=True)
        self._thread.start()
        return self

    def stop(self, record: RankRecord) -> None:
        """Stop the thread, write the last spill (everything up to now) and mark the file finished;
        if that fails, write the whole spill into the fallback folder."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.spill_now()
        with self._lock:
            self._done = True
            if not self.failed:
                try:
                    self.writer.finish(record)
                except (OSError, ValueError, RuntimeError) as exc:
                    self._fail(exc)
            if self.failed:
                self._fall_back(record)
            self.writer.close()
        if self.spills:
            log.debug(
                "spilled %d times, %.3f s in all (%.1f ms each)",
                self.spills,
                self.seconds,
                1000 * self.seconds / self.spills,
            )

    def _fall_back(self, record: RankRecord) -> None:
        w = self.writer
        folder = fallback_root() / w.home.parent.name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            w.restart(self.traces_since(0), self.offset, self.windows(), last_time=self._now(), folder=folder)
            w.finish(record)
        except (OSError, ValueError, RuntimeError) as exc:
            log.error(
                "rank %d: cannot write its spill into %s either (%s); what it measured since its last "
                "spill is only in memory until the run file is written",
                w.rank,
                folder,
                one_line(exc),
            )
            return
        self.fallback = folder
        log.warning("rank %d: the output folder is full; its whole spill is in %s", w.rank, w.path)


class Liveness:
    """Whether a peer is still alive, judged from its spill file changing.

    Skew-proof: it compares the file's modification time with the one seen before, never with this
    node's clock. A peer whose file has not changed for ``grace_s`` is taken for dead. Where there is
    no file to look at (a node-local output folder), the peer gets ``fallback_s`` from the start of the
    wait.
    """

    def __init__(
        self, path: Path, grace_s: float, fallback_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path, self.grace_s, self.fallback_s, self.clock = path, grace_s, fallback_s, clock
        self.t0 = self.last_change = clock()
        self.last_mtime: int | None = None

    def why_dead(self) -> str:
        now = self.clock()
        try:
            m = os.stat(self.path).st_mtime_ns
        except OSError:
            if now - self.t0 > self.fallback_s:
                return f"no answer within {self.fallback_s:.0f} s (and no spill file to show it alive)"
            return ""
        if m != self.last_mtime:
            self.last_mtime, self.last_change = m, now
            return ""
        if now - self.last_change > self.grace_s:
            return f"no answer, and its spill file unchanged for {self.grace_s:.0f} s"
        return ""


class Heartbeat:
    """Touches a file every ``period_s`` seconds while a long step runs (rank 0 during the gather),
    so that ranks waiting for it can see it is alive."""

    def __init__(self, path: Path, period_s: float) -> None:
        self.path, self.period_s = path, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="energy-hpc-heartbeat", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class SpillPlan:
    """Where this run's spill files are and how long to wait for a silent peer (``fallback_s``: by
    default the ``gather_timeout_s`` setting when the plan is made, ENERGY_HPC_GATHER_TIMEOUT)."""

    folder: Path
    spill_seconds: float
    fallback_s: float = field(default_factory=lambda: settings.current().gather_timeout_s)
    fallback_folder: Path | None = None  # where this rank's whole spill went when the output folder was full

    @property
    def grace_s(self) -> float:
        return grace_seconds(self.spill_seconds)

    def path(self, rank: int) -> Path:
        return rank_spill_path(self.folder, rank)

    def liveness(self, rank: int) -> Liveness:
        return Liveness(self.path(rank), self.grace_s, self.fallback_s)

    def read(self, rank: int) -> tuple[RankSpill | None, str]:
        """The spill of ``rank``, or None and why not."""
        p = self.path(rank)
        if not p.exists():
            return None, "no spill file"
        try:
            return RankSpill.open(p), ""
        except SpillError as exc:
            return None, str(exc)


class SpillError(Exception):
    """A spill file cannot be read (killed mid-write, truncated, not a spill)."""


@dataclass
class RankSpill:
    """One rank's spill file, read back."""

    path: Path
    attrs: dict[str, Any]
    rank_record: RankRecord
    channels: list[dict[str, Any]]
    windows: np.ndarray
    finished: bool
    last_spill: float
    _file: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Path) -> RankSpill:
        import h5py

        try:
            # no file lock: the writer may be a hung rank that still holds the file open
            f = h5py.File(path, "r", locking=False)
        except OSError as exc:
            raise SpillError(
                f"spill file {path.name} is unreadable ({exc}): the rank was probably killed while writing it"
            ) from None
        try:
            a = dict(f.attrs)
            if a.get("format") != SPILL_FORMAT:
                raise SpillError(f"{path} is not an energy-hpc spill file")
            channels = json.loads(a.get("channels_json", "[]"))
            # only the windows the counts written last cover (a spill that broke off may have grown
            # the dataset with rows never written), and never a row that holds no window
            n_windows = min(int(a.get("n_windows", f["windows"].shape[0])), f["windows"].shape[0])
            windows = np.asarray(f["windows"][:n_windows], dtype=WINDOW_DTYPE)
            windows = windows[windows["status"] != b""]
            # a channel's dataset may hold more than channels_json says if a spill broke off between
            # the two; trust the smaller
            for j, c in enumerate(channels):
                c["n_samples"] = (
                    min(int(c["n_samples"]), f["traces"][str(j)].shape[1]) if str(j) in f["traces"] else 0
                )
        except (OSError, KeyError, ValueError) as exc:
            f.close()
            raise SpillError(f"spill file {path.name} is damaged ({type(exc).__name__}: {exc})") from None
        except SpillError:
            f.close()
            raise
        return cls(
            path=path,
            attrs=a,
            rank_record=RankRecord.from_dict(json.loads(a.get("rank_json", "{}"))),
            channels=channels,
            windows=windows,
            finished=bool(a.get("finished", 0)),
            last_spill=float(a.get("last_spill", math.nan)),
            _file=f,
        )

    @property
    def rank(self) -> int:
        return int(self.attrs["rank"])

    def pieces(self, j: int, piece: int) -> Iterator[tuple[int, np.ndarray]]:
        """Channel ``j`` as (start, (4, n) array) pieces of at most ``piece`` samples."""
        n = int(self.channels[j]["n_samples"])
        ds = self._file["traces"][str(j)]
        for lo in range(0, n, piece):
            yield lo, ds[:, lo : min(n, lo + piece)]

    def windows_closed(self) -> np.ndarray:
        """Windows as they go into a run file: one still open when the rank stopped spilling is
        closed at its last spill and marked interrupted."""
        w = self.windows.copy()
        if len(w):
            still_open = w["status"] == b"open"
            w["end"][still_open] = self.last_spill
            w["status"][still_open] = b"interrupted"
        return w

    def close(self) -> None:
        if self._file is not None and self._file.id.valid:
            self._file.close()


def _completeness(s: RankSpill) -> tuple[bool, float]:
    return s.finished, s.last_spill if not math.isnan(s.last_spill) else -math.inf


def missing_rank_record(why: str, spill: RankSpill | None) -> RankRecord:
    """The ``/ranks`` row of a rank whose data came from its spill file (or not at all)."""
    if spill is None:
        return RankRecord(status="missing", error=f"{why}; nothing recovered")
    if spill.finished:
        kept = "all it measured recovered from its spill file"
    else:
        kept = (
            f"what it measured up to its last spill (t={spill.last_spill:.1f} s) recovered from its "
            "spill file"
        )
    earlier = spill.rank_record.error
    error = f"{why}; {kept}" + (f"; it had reported: {earlier}" if earlier else "")
    return replace(spill.rank_record, status="missing", error=error, spill_only=False)


def rebuild(
    folders: Sequence[Path], out: Path, compression: str = "none", piece: int = 1 << 20
) -> tuple[Path, str]:
    """Write a run file from the spill folders of one run that never finished.

    The run is marked partial ("rebuilt from spills"); every rank that has no finished spill is named
    with what was recovered. Returns (path, status reason).
    """
    from energy_hpc.errors import OutputError, RunFileError
    from energy_hpc.store import check_output_dir

    files = sorted({p for d in folders for p in Path(d).glob("rank-*.h5")})
    if not files:
        raise RunFileError(
            f"no spill files (rank-*.h5) in {', '.join(map(str, folders))}; give the "
            "run's .<name>.spill folder"
        )
    spills: dict[int, RankSpill] = {}
    broken: dict[int, str] = {}
    for p in files:
        try:
            s = RankSpill.open(p)
        except SpillError as exc:
            try:
                broken[int(p.stem.split("-")[1])] = str(exc)
            except (IndexError, ValueError):
                log.warning("skipping %s: %s", p, exc)
            continue
        kept = spills.get(s.rank)
        if kept is not None:  # the same rank in two folders (its output folder and the fallback)
            if _completeness(kept) >= _completeness(s):
                s.close()
                continue
            kept.close()
        spills[s.rank] = s
    if not spills:
        raise RunFileError(f"none of the {len(files)} spill files can be read: " + "; ".join(broken.values()))
    first = spills[min(spills)]
    stems = {s.attrs.get("stem") for s in spills.values()}
    if len(stems) > 1:
        raise RunFileError(
            f"the spill folders are from different runs ({', '.join(map(str, stems))}); "
            "merge one run at a time"
        )
    header = header_from_spill(first.attrs)
    n_ranks = header.n_ranks
    check_output_dir(out)
    ranks: list[RankRecord] = []
    problems: list[str] = []
    for r in range(n_ranks):
        spill = spills.get(r)
        if spill is not None and spill.finished:
            rec = spill.rank_record
            if rec.status != "ok":
                problems.append(f"rank {r}: {rec.status}: {rec.error}")
        else:
            why = broken.get(r, "no spill file" if spill is None else "did not finish")
            rec = missing_rank_record(why, spill)
            problems.append(f"rank {r}: {rec.error}")
        ranks.append(rec)
    reason = "rebuilt from spills" + (": " + "; ".join(problems) if problems else "")
    header.status, header.status_reason = "partial", reason[:4000]
    channels = [c for r in sorted(spills) for c in spills[r].channels]
    header.contains_synthetic = any(c["method"] == "synthetic" for c in channels)
    header.emulated = emulated_text(emulated_parts(channels))
    header.contains_estimate = any(c["method"] == "estimate" for c in channels)
    header.extra = {**header.extra, "rebuilt_from_spills": 1}
    stem = str(first.attrs.get("stem") or f"{header.job_name}-rebuilt")
    cases = json.loads(first.attrs.get("cases_json", "[]"))
    try:
        tmp = temp_path(out, stem)
        writer = RunWriter(
            tmp, header, channels, max((c["n_samples"] for c in channels), default=0), compression
        )
        try:
            i = 0
            for r in sorted(spills):
                for j in range(len(spills[r].channels)):
                    for lo, data in spills[r].pieces(j, piece):
                        writer.write_piece(i, data, lo)
                    i += 1
            windows = [spills[r].windows_closed() for r in sorted(spills)]
            writer.write_tables(
                ranks, np.concatenate(windows) if windows else np.zeros(0, WINDOW_DTYPE), cases
            )
        finally:
            writer.close()
        path = place(tmp, out, stem)
    except OSError as exc:
        raise OutputError(f"cannot write the rebuilt run file into {str(out)!r}: {exc}") from None
    finally:
        for s in spills.values():
            s.close()
    log.info("rebuilt %s from %d spill file(s) of %d rank(s)", path, len(spills), n_ranks)
    return path, reason
