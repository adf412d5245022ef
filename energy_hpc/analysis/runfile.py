"""Opening run files for analysis.

The small groups (``/ranks``, ``/windows``, ``/cases`` and the per-channel metadata of ``/traces``) are
loaded with xarray. The ``(channel, sample)`` trace arrays are never loaded whole: :meth:`RunFile.chunks`
reads one channel in sample chunks straight from HDF5 (h5py), so a reduction holds at most one chunk of
one channel, whatever the size of the run.

Unusable input (not HDF5, not a run file, truncated, a group missing, a newer major schema) raises
:class:`~energy_hpc.errors.RunFileError` with one line saying what to do. A *partial* run (root
attribute ``run_status`` != ``complete``) opens, and :attr:`RunFile.missing` names what is missing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from energy_hpc.errors import RunFileError
from energy_hpc.store import PART_FORMAT, emulated_parts

if TYPE_CHECKING:
    import xarray as xr

log = logging.getLogger(__name__)

SUPPORTED_MAJOR = "1"
CHUNK_SAMPLES = 1 << 20  # samples per read: 8 MiB per float64 column
TRACE_COLUMNS = ("time", "power", "energy")


@dataclass
class Trace:
    """One channel's valid samples (padding removed)."""

    index: int
    meta: dict[str, Any]
    time: np.ndarray
    power: np.ndarray
    energy: np.ndarray
    sensor_time: np.ndarray


# The variables the analysis cannot do without, per group: a file that lacks one (a half-written file
# given the name of a finished one) is refused in one line rather than failing later with a KeyError.
REQUIRED_VARIABLES: dict[str, tuple[str, ...]] = {
    "traces": ("rank", "n_samples", "time"),
    "windows": ("rank", "case", "phase", "stage", "iteration", "start", "end", "status", "units", "aux_unit"),
    "cases": ("unit", "params"),
}


def _damaged(path: Path, exc: BaseException) -> RunFileError:
    return RunFileError(
        f"{path}: run file is incomplete or damaged ({type(exc).__name__}: {exc}); "
        "it may have been truncated by a full disk or a killed job: copy it again, or re-run"
    )


class RunFile:
    """A run file opened for reading. Small groups are loaded; traces are read lazily per channel."""

    def __init__(self, path: str | Path) -> None:
        import h5py

        self.path = Path(path)
        if not self.path.exists():
            raise RunFileError(f"{self.path}: no such file; check the path (run files end in .h5)")
        if self.path.is_dir():
            raise RunFileError(f"{self.path}: a folder; give run files or use energy-hpc table on the folder")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            msg = str(exc)
            if "truncated" in msg.lower() or "eof" in msg.lower():
                raise _damaged(self.path, exc) from None
            raise RunFileError(
                f"{self.path}: not a readable HDF5 run file ({msg}); give the .h5 files energy-hpc run wrote"
            ) from None
        try:
            self.attrs = {k: _scalar(v) for k, v in self._h5.attrs.items()}
        except Exception as exc:
            self._h5.close()
            raise _damaged(self.path, exc) from None
        if self.attrs.get("format") == PART_FORMAT:
            self._h5.close()
            raise RunFileError(
                f"{self.path}: one node's file of the run {self.attrs.get('run_stem', '?')!r}, written per "
                "node; give the run file beside its folder (or the folder the run is in)"
            )
        if self.attrs.get("layout") == "nodes":
            self._check_node_files()
        if self.attrs.get("format") != "energy-hpc run":
            self._h5.close()
            raise RunFileError(
                f"{self.path}: an HDF5 file but not an energy-hpc run file (no 'format' "
                "attribute); give the .h5 files energy-hpc run wrote"
            )
        version = str(self.attrs.get("schema_version", "?"))
        if version.split(".")[0] != SUPPORTED_MAJOR:
            self._h5.close()
            raise RunFileError(
                f"{self.path}: schema version {version} is not supported by this energy-hpc "
                f"(reads {SUPPORTED_MAJOR}.x); upgrade energy-hpc"
            )
        missing_groups = [g for g in ("ranks", "traces", "windows", "cases") if g not in self._h5]
        if missing_groups:
            self._h5.close()
            raise RunFileError(
                f"{self.path}: run file lacks the group(s) {', '.join(missing_groups)}: it was "
                "not finished; re-run, or analyse the complete files only"
            )
        try:
            self.ranks = _read_group(self._h5["ranks"], "rank")
            self.windows = _read_group(self._h5["windows"], "window")
            self.cases = _read_group(self._h5["cases"], "case")
            meta = _read_group(self._h5["traces"], "channel")
            meta_vars = [str(k) for k in meta.data_vars]  # names are str: _read_group made them
            self._tr = {
                k: self._h5["traces"][k] for k in (*TRACE_COLUMNS, "sensor_time") if k in self._h5["traces"]
            }
            self._ring: list[list[np.ndarray]] = []  # chunks(reuse=True)'s buffers
            self._ring_key: tuple[tuple[np.dtype, ...], int] | None = None
        except Exception as exc:
            self._h5.close()
            raise _damaged(self.path, exc) from None
        lacking = [
            f"{group}/{name}"
            for group, names in REQUIRED_VARIABLES.items()
            for name in names
            if name not in self._h5[group]
        ]
        if lacking:
            self._h5.close()
            raise RunFileError(
                f"{self.path}: run file lacks {', '.join(lacking[:5])}"
                + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
                + ": it was not written completely; re-run, or analyse the complete files only"
            )
        self.channel_meta: list[dict[str, Any]] = [
            {k: _scalar(meta[k].values[i]) for k in meta_vars} for i in range(meta.sizes.get("channel", 0))
        ]
        for i, m in enumerate(self.channel_meta):
            m.setdefault("n_samples", 0)
            m["index"] = i

    def _check_node_files(self) -> None:
        """A run written per node keeps its traces in node files beside it (HDF5 reads a missing one
        as NaN without a word): refuse it, saying how to get a file that stands alone."""
        try:
            files = [str(f) for f in json.loads(str(self.attrs.get("node_files", "[]")))]
        except ValueError:
            files = []
        lost = [f for f in files if not (self.path.parent / f).is_file()]
        if lost:
            self._h5.close()
            folder = str(self.attrs.get("nodes_folder", "") or Path(lost[0]).parent)
            raise RunFileError(
                f"{self.path}: its traces are in {len(files)} node files under {folder}/ beside it, and "
                f"{len(lost)} of them are not there ({lost[0]}{', ...' if len(lost) > 1 else ''}); "
                f"copy the folder {folder}/ with the run file, or make one file that stands alone with "
                f"`energy-hpc merge --single RUN.h5 -o DIR` where the folder is"
            )

    # ------------------------------------------------------------------ properties
    @property
    def status(self) -> str:
        return str(self.attrs.get("run_status", "?"))

    @property
    def status_reason(self) -> str:
        return str(self.attrs.get("run_status_reason", ""))

    @property
    def n_ranks(self) -> int:
        return int(self.attrs.get("n_ranks", self.ranks.sizes.get("rank", 0)))

    @property
    def n_nodes(self) -> int:
        return int(self.attrs.get("n_nodes", 1))

    @property
    def synthetic(self) -> bool:
        return bool(int(self.attrs.get("contains_synthetic", 0)))

    @property
    def estimate(self) -> bool:
        return bool(int(self.attrs.get("contains_estimate", 0)))

    @property
    def emulated(self) -> list[str]:
        """The emulated parts whose channels this run holds (labels ``EMULATED <part>: ...``); [] when none."""
        return emulated_parts(self.channel_meta)

    @property
    def missing(self) -> list[str]:
        """What a partial run lacks, in words (empty for a complete run)."""
        out = []
        if self.status != "complete":
            out.append(f"run_status {self.status!r}: {self.status_reason or 'no reason recorded'}")
        rank_status = [str(s) for s in self.ranks["status"].values] if "status" in self.ranks else []
        errors = (
            [str(s) for s in self.ranks["error"].values] if "error" in self.ranks else [""] * len(rank_status)
        )
        # strict=False: a file without rank statuses has errors but no statuses (and nothing to say)
        for r, (s, e) in enumerate(zip(rank_status, errors, strict=False)):
            if s != "ok":
                out.append(f"rank {r} {s}" + (f" ({e})" if e else ""))
        w_ranks = {int(r) for r in self.windows["rank"].values} if "rank" in self.windows else set()
        no_win = sorted(set(range(self.n_ranks)) - w_ranks)
        if no_win:
            out.append(f"no windows from rank(s) {', '.join(map(str, no_win))}")
        c_ranks = {int(m.get("rank", -1)) for m in self.channel_meta}
        no_ch = sorted(set(range(self.n_ranks)) - c_ranks)
        if no_ch and self.channel_meta:
            out.append(f"no channels from rank(s) {', '.join(map(str, no_ch))}")
        return out

    def case_params(self, i: int) -> dict[str, Any]:
        return json.loads(str(self.cases["params"].values[i]))

    def case_unit(self, i: int) -> str:
        return str(self.cases["unit"].values[i])

    @property
    def n_cases(self) -> int:
        return int(self.cases.sizes.get("case", 0))

    def window_table(self) -> dict[str, np.ndarray]:
        return {str(k): self.windows[k].values for k in self.windows.data_vars}

    def rank_table(self) -> dict[str, np.ndarray]:
        return {str(k): self.ranks[k].values for k in self.ranks.data_vars}

    # ------------------------------------------------------------------ traces
    def chunks(
        self,
        i: int,
        chunk: int = CHUNK_SAMPLES,
        columns: tuple[str, ...] = TRACE_COLUMNS,
        prefetch: bool = True,
        overlap: int = 0,
        reuse: bool = False,
    ) -> Iterator[tuple[np.ndarray, ...]]:
        """Channel ``i``'s valid samples in consecutive blocks of at most ``chunk`` samples, as float64;
        with ``overlap``, every block after the first starts with the last ``overlap`` samples of the
        one before (a reduction then needs no copy to join them).

        ``reuse`` reads each column in its stored type (power is float32) into three sets of buffers
        used in turn and kept by the file from channel to channel (no fresh pages to fault in per
        block). A block is then valid only until the caller asks for the block after next, and only
        one such iteration may be under way per file.

        With ``prefetch`` the next block is read in a background thread while the caller works on this
        one (HDF5 reads and numpy both release the GIL for most of their time), so a reduction runs at
        close to the speed of the disk rather than the sum of disk and arithmetic. At most two blocks
        are in memory.
        """
        n = int(self.channel_meta[i]["n_samples"])
        spans = [(max(s - overlap, 0), min(n, s + chunk)) for s in range(0, n, chunk)]
        if reuse and spans:
            longest = max(b - a for a, b in spans)
            dtypes = tuple(self._tr[k].dtype if k in self._tr else np.dtype(np.float64) for k in columns)
            if self._ring_key != (dtypes, longest):
                self._ring = [[np.empty(longest, dt) for dt in dtypes] for _ in range(3)]
                self._ring_key = (dtypes, longest)
        turn = [0]

        def read(span: tuple[int, int]) -> tuple[np.ndarray, ...]:
            s, e = span
            if not reuse:
                return tuple(
                    self._tr[k][i, s:e].astype(np.float64, copy=False)
                    if k in self._tr
                    else np.full(e - s, np.nan)
                    for k in columns
                )
            bufs = [b[: e - s] for b in self._ring[turn[0] % 3]]
            turn[0] += 1
            for k, b in zip(columns, bufs, strict=True):
                if k in self._tr:
                    self._tr[k].read_direct(b, np.s_[i, s:e])
                else:
                    b.fill(np.nan)
            return tuple(bufs)

        try:
            if not prefetch or len(spans) < 2:
                for span in spans:
                    yield read(span)
                return
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=1) as pool:
                nxt = pool.submit(read, spans[0])
                for k in range(len(spans)):
                    cur = nxt.result()
                    if k + 1 < len(spans):
                        nxt = pool.submit(read, spans[k + 1])
                    yield cur
        except (OSError, KeyError, ValueError) as exc:
            raise _damaged(self.path, exc) from None

    def trace(self, i: int) -> Trace:
        """One channel in memory (small channels, plots of short runs, tests)."""
        cols = [
            np.concatenate(c) if c else np.zeros(0)
            for c in zip(*self.chunks(i, columns=(*TRACE_COLUMNS, "sensor_time")), strict=True)
        ] or [np.zeros(0)] * 4
        return Trace(i, self.channel_meta[i], *cols)

    def iter_traces(self) -> Iterator[Trace]:
        for i in range(len(self.channel_meta)):
            yield self.trace(i)

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> RunFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_group(g: Any, dim: str) -> xr.Dataset:
    """A group's 1-D variables along ``dim`` as an xarray Dataset (read with h5py: the small groups of a
    run file load in milliseconds, where opening each through xarray's backend costs a large fraction of
    a second; strings decoded, attributes kept)."""
    import xarray as xr

    data = {}
    for name, ds in g.items():
        if name == dim or not hasattr(ds, "shape") or len(ds.shape) != 1:
            continue
        if name in ("sample",) and ds.attrs.get("CLASS") == b"DIMENSION_SCALE":
            continue
        v = ds[()]
        if v.dtype.kind in ("O", "S"):
            v = np.array([x.decode() if isinstance(x, bytes) else str(x) for x in v], dtype=object)
        # looked up by name: reading every attribute (dimension lists included) cost a third of the open
        attrs = {k: _scalar(ds.attrs[k]) for k in ("units", "long_name") if k in ds.attrs}
        data[name] = ((dim,), v, attrs)
    return xr.Dataset(data)


def _scalar(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(())[()]
        if isinstance(v, bytes):
            return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def trace_heads(path: str | Path, indices: list[int], n: int = 4) -> dict[int, np.ndarray]:
    """The first ``n`` samples (time, power, energy rows) of the given channels, read straight from
    HDF5: enough to tell whether two files hold the same measurements without reading their traces."""
    import h5py

    out: dict[int, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            tr = f["traces"]
            for i in indices:
                out[i] = np.stack([tr[k][i, :n].astype(np.float64) for k in TRACE_COLUMNS])
    except (OSError, KeyError, ValueError) as exc:
        raise _damaged(Path(path), exc) from None
    return out
