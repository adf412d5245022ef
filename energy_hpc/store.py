"""The run file: one HDF5 file per run, netCDF4-compatible (h5py with netCDF-4 dimension scales), self-describing.

Layout (schema version in the root attribute ``schema_version``; docs/file-format.md is the reference):

- ``/``        attributes: what ran, where, when, and whether the run is complete
- ``/ranks``   dim ``rank``: host, node, local rank, bound device, status, error, what a signal was taken for
- ``/traces``  dims ``channel`` x ``sample``: time, power, energy, sensor_time (NaN-padded), plus one
               variable per channel attribute (rank, scope, device, backend, method, shared_with, ...)
- ``/windows`` dim ``window``: rank, case, phase, stage, iteration, start, end, units, status
- ``/cases``   dim ``case``: the expanded case parameters

The writer fills ``/traces`` one piece of a channel at a time, so the process writing never holds more
than one piece of a channel's samples; ``/windows`` can be filled in pieces too. The file is written under a hidden temporary name and linked into place under a
name no other run has (``os.link`` fails rather than overwrite), then the temporary name is removed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from energy_hpc import __version__
from energy_hpc.errors import OutputError

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.5"
RUN_FILE_SUFFIX = ".h5"
MIN_FREE_BYTES = 64 * 2**20

# per-channel metadata written as variables along `channel`: name -> (dtype, units, long_name)
CHANNEL_FIELDS: dict[str, tuple[str, str, str]] = {
    "rank": ("i4", "1", "rank that recorded the channel"),
    "host": ("str", "1", "host name"),
    "node": ("i4", "1", "node index within the job"),
    "name": ("str", "1", "channel name, unique within its rank"),
    "scope": ("str", "1", "what the channel measures: gpu, package, cpu, memory, node, other"),
    "device": ("str", "1", "stable device identity (PCI bus id, UUID, node)"),
    "backend": ("str", "1", "sensor backend"),
    "method": ("str", "1", "strongest method the channel supports: counter, integral, estimate, synthetic"),
    "shared_with": ("str", "1", "comma-separated devices whose consumption this reading includes"),
    "node_level": ("i1", "1", "1 if sampled once per node"),
    "has_energy": ("i1", "1", "1 if the channel has a hardware energy counter"),
    "update_period": ("f8", "s", "how often the hardware refreshes the value"),
    "energy_resolution": ("f8", "J", "smallest step of the energy counter"),
    "power_kind": ("str", "1", "instant or average power"),
    "power_window": (
        "f8",
        "s",
        "span each power reading averages over, ending when it is refreshed (0: a point or unknown)",
    ),
    "label": ("str", "1", "human name of the device"),
    "note": ("str", "1", "what to know about this channel"),
    "n_samples": ("i8", "1", "valid samples (the rest of the row is NaN padding)"),
    "read_errors": ("i8", "1", "reads that failed on this channel (recorded as gaps)"),
    "included_in": ("str", "1", "name of a channel whose reading already includes this one (never add both)"),
    "view_of": (
        "str",
        "1",
        "name of the channel this one reads another way (e.g. 1 s average power); never added",
    ),
    "counter_fault": (
        "str",
        "1",
        "why the energy counter is distrusted (backwards, stuck, disagrees); '' if trusted",
    ),
}
TRACE_FIELDS: dict[str, tuple[str, str, str]] = {
    "time": ("f8", "s", "time since the run's epoch (root attribute epoch_unix)"),
    "power": ("f4", "W", "sampled power"),
    "energy": ("f8", "J", "energy counter (cumulative, arbitrary origin); NaN where the channel has none"),
    "sensor_time": ("f8", "s", "the sensor's own timestamp, where it gives one"),
}
WINDOW_FIELDS: dict[str, tuple[str, str, str]] = {
    "rank": ("i4", "1", "rank"),
    "case": ("i4", "1", "case index (-1 for run-level windows)"),
    "phase": ("str", "1", "idle, load, warmup, measure, cooldown, component or timed"),
    "stage": ("str", "1", "part of an iteration ('' for the whole iteration); component name"),
    "iteration": ("i4", "1", "iteration within the phase (-1 where it does not apply)"),
    "start": ("f8", "s", "window start since the run's epoch"),
    "end": ("f8", "s", "window end since the run's epoch"),
    "units": ("f8", "1", "units of work produced"),
    "unit": ("str", "1", "what a unit is (image, token, sample, ...)"),
    "aux_units": ("f8", "1", "second count where the task has one"),
    "aux_unit": ("str", "1", "what the second count is"),
    "status": ("str", "1", "ok, interrupted or failed"),
}
CASE_FIELDS: dict[str, tuple[str, str, str]] = {
    "task": ("str", "1", "task"),
    "model": ("str", "1", "model as named in the job file"),
    "source": ("str", "1", "local, hub or random (random weights)"),
    "dtype": ("str", "1", "fp32, fp16 or bf16"),
    "batch_size": ("i4", "1", "inputs per iteration"),
    "label": ("str", "1", "label from the job file"),
    "unit": ("str", "1", "unit of work"),
    "params": ("str", "1", "JSON of every case parameter, task options included"),
    "provenance": ("str", "1", "JSON: where the model came from (folder, hub revision, random weights)"),
    "trial": ("i4", "1", "which repeat of its parameters ([measure] trials; 0 for the first)"),
    "order": ("i4", "1", "position in the order the cases ran (root attribute trial_order, trial_seed)"),
    "warmup_rule": ("str", "1", "'fixed N' warm-up iterations or 'steady TOLERANCE max N'"),
}


def _var(kind: str, units: str, long_name: str) -> dict[str, tuple[str, str, str]]:
    """Field metadata: the field is a ``/ranks`` variable of this dtype, units and long name."""
    return {"var": (kind, units, long_name)}


@dataclass
class RankRecord:
    """What one rank says about itself: its row of ``/ranks``, the ``rank_json`` attribute of its spill
    file, and its report to rank 0 in the gather. The one place these fields are listed: each field
    with ``var`` metadata is a ``/ranks`` variable (:data:`RANK_FIELDS`, in this order)."""

    host: str = field(default="", metadata=_var("str", "1", "host name"))
    node: int = field(default=-1, metadata=_var("i4", "1", "node index within the job"))
    local_rank: int = field(default=-1, metadata=_var("i4", "1", "rank within the node"))
    device_kind: str = field(default="", metadata=_var("str", "1", "cpu or cuda"))
    device_name: str = field(default="", metadata=_var("str", "1", "device the rank ran on"))
    device_uuid: str = field(default="", metadata=_var("str", "1", "its UUID"))
    device_bus_id: str = field(default="", metadata=_var("str", "1", "its PCI bus id"))
    visible_devices: str = field(default="", metadata=_var("str", "1", "VAR=value the rank was started with"))
    status: str = field(
        default="running",
        metadata=_var("str", "1", "ok, failed (some cases failed), interrupted, missing"),
    )
    error: str = field(default="", metadata=_var("str", "1", "what went wrong, if anything"))
    interrupt_cause: str = field(
        default="",
        metadata=_var(
            "str",
            "1",
            "what the signal that ended the measuring was taken for: time-limit, rank-failed or request",
        ),
    )
    sensors: str = field(default="", metadata=_var("str", "1", "sensor backends opened"))
    sensors_skipped: str = field(
        default="{}", metadata=_var("str", "1", "JSON: backend -> why it was not used")
    )
    device_state: str = field(
        default="",
        metadata=_var(
            "str", "1", "JSON: the device's power limit, clocks and temperature at each window's edges"
        ),
    )
    # not in the run file: the rank's samples since its last spill were lost (its sampling process
    # died), so its spill file holds data the run file lacks and is kept
    spill_only: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (``spill_only`` only when set, as spill files have always had it)."""
        # shallow: every field is a str, int or bool (asdict's deep copy cost 0.1 ms a record)
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if not self.spill_only:
            del d["spill_only"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RankRecord:
        """A record from :meth:`as_dict` (a spill file's ``rank_json``); unknown keys are ignored and
        missing ones take their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# the /ranks variables: name -> (dtype, units, long_name), from RankRecord
RANK_FIELDS: dict[str, tuple[str, str, str]] = {
    f.name: f.metadata["var"] for f in fields(RankRecord) if "var" in f.metadata
}


# what a field added in a later schema minor version reads as in rows made by older code (spills)
_MISSING = {"str": "", "i1": 0, "i4": -1, "i8": -1, "f8": float("nan")}


def _column(values: Sequence[Any], kind: str) -> np.ndarray:
    if kind == "str":
        return np.array([str(v) for v in values], dtype=object)
    return np.asarray(values, dtype=kind)


class _NcFile:
    """The part of the netCDF-4 data model a run file needs, written straight with h5py.

    Dimensions are HDF5 dimension scales carrying netCDF-C's markers (``NAME`` "This is a netCDF
    dimension but not a netCDF variable.", ``_Netcdf4Dimid``); every variable has its scales attached
    and ``_Netcdf4Coordinates``, so netCDF-C, h5netcdf and xarray read the file as netCDF-4. Written
    this way rather than through h5netcdf because h5netcdf's bookkeeping made creating the run file's
    ~60 variables cost 0.3 s, most of energy-hpc's fixed overhead per run.
    """

    _DIM_NAME = "This is a netCDF dimension but not a netCDF variable."

    def __init__(self, path: Path) -> None:
        import h5py

        self.h5py = h5py
        self.f = h5py.File(path, "w", track_order=True)
        self._next_dimid = 0
        self.dims: dict[tuple[str, str], Any] = {}
        self._maps: dict[tuple[tuple[int, ...], int], list[tuple[bytes, Any, Any]]] = {}
        self.f.attrs["_NCProperties"] = np.bytes_(
            f"version=2,energy-hpc={__version__},hdf5={h5py.version.hdf5_version},h5py={h5py.__version__}"
        )

    def group(self, name: str) -> Any:
        return self.f.create_group(name, track_order=True)

    def dimension(self, group: Any, name: str, size: int) -> None:
        ds = group.create_dataset(name, shape=(size,), dtype=">f4")
        ds.make_scale(f"{self._DIM_NAME}{size:10d}")
        ds.attrs["_Netcdf4Dimid"] = np.int32(self._next_dimid)
        self.dims[(group.name, name)] = (ds, self._next_dimid)
        self._next_dimid += 1

    def variable(
        self, group: Any, name: str, dims: tuple[str, ...], kind: str, units: str, long_name: str, **kw: Any
    ) -> Any:
        scales = [self.dims[(group.name, d)] for d in dims]
        dtype = self.h5py.string_dtype() if kind == "str" else kind
        if "fillvalue" in kw:
            kw["fillvalue"] = np.array(kw["fillvalue"], dtype=dtype)
        sources = kw.pop("sources", None)
        shape = tuple(sc.shape[0] for sc, _ in scales)
        if sources is not None:
            ds = self._virtual(group, name, shape, dtype, kw.get("fillvalue"), sources)
        else:
            ds = group.create_dataset(name, shape=shape, dtype=dtype, **kw)
        for i, (sc, _) in enumerate(scales):
            ds.dims[i].attach_scale(sc)
        ds.attrs["_Netcdf4Coordinates"] = np.array([dimid for _, dimid in scales], dtype=np.int32)
        if "fillvalue" in kw:
            ds.attrs["_FillValue"] = np.array([kw["fillvalue"]], dtype=dtype)
        ds.attrs["units"] = units
        ds.attrs["long_name"] = long_name
        return ds

    def _virtual(
        self,
        group: Any,
        name: str,
        shape: tuple[int, ...],
        dtype: Any,
        fill: Any,
        sources: Sequence[NodePart],
    ) -> Any:
        """A virtual dataset over the node files: each part's rows of ``/traces/<name>`` (2-D) or
        ``/windows/<name>`` (1-D) at its place in the index. Made with the low-level calls, the
        selections made once per shape and reused for every variable: h5py's ``VirtualLayout`` took
        80 us a mapping, 12 s for the 150,000 mappings of a 9,408-node run."""
        h5s, h5p, h5t, h5d = self.h5py.h5s, self.h5py.h5p, self.h5py.h5t, self.h5py.h5d
        maps = self._maps.get((shape, id(sources)))
        if maps is None:
            maps = []
            for part in sources:
                src_shape: tuple[int, ...]
                at: tuple[int, ...]
                if len(shape) == 2 and part.n_channels:
                    src_shape, at = (part.n_channels, part.n_samples), (part.first_channel, 0)
                elif len(shape) == 1 and part.n_windows:
                    src_shape, at = (part.n_windows,), (part.first_window,)
                else:
                    continue
                vspace = h5s.create_simple(shape)
                vspace.select_hyperslab(at, src_shape)
                maps.append((part.file.encode(), vspace, h5s.create_simple(src_shape)))
            self._maps[(shape, id(sources))] = maps
        where = "traces" if len(shape) == 2 else "windows"
        dcpl = h5p.create(h5p.DATASET_CREATE)
        if fill is not None:
            dcpl.set_fill_value(np.array(fill, dtype=dtype))
        dset = f"/{where}/{name}".encode()
        for file, vspace, src_space in maps:
            dcpl.set_virtual(vspace, file, dset, src_space)
        tid = h5t.py_create(np.dtype(dtype), logical=True)
        dsid = h5d.create(group.id, name.encode(), tid, h5s.create_simple(shape), dcpl=dcpl)
        return self.h5py.Dataset(dsid)

    def table(
        self,
        group: Any,
        dim: str,
        fields: dict[str, tuple[str, str, str]],
        rows: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        self.dimension(group, dim, len(rows))
        out = {}
        for name, (kind, units, long_name) in fields.items():
            var = out[name] = self.variable(group, name, (dim,), kind, units, long_name)
            if rows:
                var[:] = _column([r.get(name, _MISSING[kind]) for r in rows], kind)
        return out


@dataclass
class RunHeader:
    """Root attributes of a run file."""

    job_name: str
    job_text: str
    job_path: str
    epoch_unix: float
    n_ranks: int
    n_nodes: int
    launcher: str
    slurm: dict = field(default_factory=dict)
    status: str = "complete"
    status_reason: str = ""
    interval_s: float = 0.0
    contains_synthetic: bool = False
    contains_estimate: bool = False
    emulated: str = ""  # emulated_text() of the run's EMULATED channels; "" when none
    extra: dict = field(default_factory=dict)
    scheduler_settings: str = ""  # JSON object: the device settings Slurm applied (--gpu-freq, ...); "" none

    def attrs(self) -> dict[str, Any]:
        a = {
            "schema_version": SCHEMA_VERSION,
            "format": "energy-hpc run",
            "package_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "job_name": self.job_name,
            "job_text": self.job_text,
            "job_path": self.job_path,
            "epoch_unix": self.epoch_unix,
            "n_ranks": self.n_ranks,
            "n_nodes": self.n_nodes,
            "launcher": self.launcher,
            "run_status": self.status,
            "run_status_reason": self.status_reason,
            "sampling_interval_s": self.interval_s,
            "contains_synthetic": int(self.contains_synthetic),
            "contains_estimate": int(self.contains_estimate),
            "slurm_job_id": self.slurm.get("job_id", ""),
            "slurm_step_id": self.slurm.get("step_id", ""),
            "slurm_json": json.dumps(self.slurm),
        }
        if self.scheduler_settings:
            a["scheduler_settings"] = self.scheduler_settings
        if self.contains_synthetic:
            a["WARNING"] = (
                "contains SYNTHETIC sensor data"
                + (f" from the {self.emulated}" if self.emulated else "")
                + ": these numbers are not measurements"
            )
        a.update(self.extra)
        return a


EMULATED_MARK = "EMULATED"


def emulated_parts(channels: Sequence[dict[str, Any]]) -> list[str]:
    """The emulated parts (``h100``, ``cray-ex``, ...) whose channels a run holds, in order: an
    emulated sensor labels its channels ``EMULATED <part>: ...`` and starts their note with ``EMULATED``
    (``""`` stands for a channel whose label names no part)."""
    out: dict[str, None] = {}
    for c in channels:
        label, note = str(c.get("label", "") or ""), str(c.get("note", "") or "")
        if label.startswith(EMULATED_MARK):
            out[label[len(EMULATED_MARK) :].split(":", 1)[0].strip()] = None
        elif note.startswith(EMULATED_MARK):
            out[""] = None
    return list(out)


def emulated_kind(parts: Sequence[str]) -> str:
    """The kind of data of a run with emulated channels: ``EMULATED h100``, ``EMULATED h100 + cray-ex``
    (``EMULATED`` where no label names the part); "" for none."""
    if not parts:
        return ""
    named = [p for p in parts if p]
    return EMULATED_MARK + (" " + " + ".join(named) if named else "")


def emulated_text(parts: Sequence[str]) -> str:
    """``EMULATED h100 sensor``, ``EMULATED h100 + cray-ex sensors``; "" for none."""
    return sensor_words(emulated_kind(parts))


def sensor_words(kind: str) -> str:
    """``EMULATED h100`` -> ``EMULATED h100 sensor`` (``... sensors`` for several parts)."""
    return kind + (" sensors" if " + " in kind else " sensor") if kind else ""


# A run written per node (docs/file-format.md, "Runs written per node"): the node files are in a folder
# beside the run file, named after the run's spill folder, and searches for run files skip it.
NODES_FOLDER_SUFFIX = ".nodes"
PART_FORMAT = "energy-hpc run part"


@dataclass(frozen=True)
class NodePart:
    """One node file of a run written per node, as the index maps it: ``file`` relative to the index's
    folder, its ``n_channels`` x ``n_samples`` traces placed at rows ``first_channel`` onwards and its
    ``n_windows`` windows at rows ``first_window`` onwards."""

    file: str
    n_channels: int
    n_samples: int
    first_channel: int
    n_windows: int = 0
    first_window: int = 0


def nodes_folder(out: Path, spill_folder: Path | None, stem: str) -> Path:
    """Where the node files of a run go: ``<out>/<S>.nodes`` for the spill folder ``.<S>.spill`` (unique
    to the run, and known to every rank), else ``<out>/<stem>.nodes``."""
    name = stem
    if spill_folder is not None and spill_folder.name.endswith(SPILL_FOLDER_SUFFIX):
        name = spill_folder.name[: -len(SPILL_FOLDER_SUFFIX)].lstrip(".") or stem
    return out / f"{name}{NODES_FOLDER_SUFFIX}"


def is_nodes_folder(path: Path) -> bool:
    return path.name.endswith(NODES_FOLDER_SUFFIX)


class RunWriter:
    """Writes one run file. Create it with the sizes, fill channels one at a time, then ``close``.

    With ``parts`` the file is the index of a run written per node: ``/traces`` time, power, energy and
    sensor_time are HDF5 virtual datasets over the node files (nothing is written into them here)."""

    def __init__(
        self,
        tmp_path: Path,
        header: RunHeader,
        channels: Sequence[dict[str, Any]],
        max_samples: int,
        compression: str = "none",
        parts: Sequence[NodePart] | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.parts = parts
        self.nc = _NcFile(tmp_path)
        self.f = self.nc.f
        self.f.attrs.update(header.attrs())
        g = self.nc.group("traces")
        self.nc.table(g, "channel", CHANNEL_FIELDS, channels)
        self.nc.dimension(g, "sample", max(int(max_samples), 1))
        kw: dict[str, Any] = {}
        if parts is not None:
            kw["sources"] = parts
            self.f.attrs["layout"] = "nodes"
            self.f.attrs["node_files"] = json.dumps([p.file for p in parts])
        else:
            if compression != "none":
                kw["compression"] = compression
            kw["chunks"] = (1, int(min(max(max_samples, 1), 262_144)))
        self.trace_vars = {
            name: self.nc.variable(
                g, name, ("channel", "sample"), kind, units, long_name, fillvalue=np.nan, **kw
            )
            for name, (kind, units, long_name) in TRACE_FIELDS.items()
        }
        self.n_channels = len(channels)

    def write_channel(
        self,
        i: int,
        time: np.ndarray,
        power: np.ndarray,
        energy: np.ndarray,
        sensor_time: np.ndarray,
        start: int = 0,
    ) -> None:
        """Samples ``start:start+len(time)`` of channel ``i`` (a channel may come in pieces)."""
        n = len(time)
        if n:
            v = self.trace_vars
            v["time"][i, start : start + n] = time
            v["power"][i, start : start + n] = power
            v["energy"][i, start : start + n] = energy
            v["sensor_time"][i, start : start + n] = sensor_time

    def write_piece(self, i: int, packed: np.ndarray, start: int = 0) -> None:
        """A (4, n) array of time, power, energy, sensor_time rows, as gathered and spilled."""
        self.write_channel(i, packed[0], packed[1], packed[2], packed[3], start)

    def begin_windows(self, n: int) -> None:
        """Create ``/windows`` for ``n`` rows, to be filled with :meth:`write_windows` in pieces (in an
        index, virtual datasets over the node files' windows: nothing is written into them)."""
        g = self.nc.group("windows")
        self.nc.dimension(g, "window", n)
        kw = {"sources": self.parts} if self.parts is not None else {}
        self._windows = {
            name: self.nc.variable(g, name, ("window",), kind, units, long_name, **kw)
            for name, (kind, units, long_name) in WINDOW_FIELDS.items()
        }

    def write_windows(self, start: int, windows: np.ndarray) -> None:
        """Rows ``start:start+len(windows)`` of ``/windows`` from a WINDOW_DTYPE array."""
        if not len(windows):
            return
        end = start + len(windows)
        for name, (kind, _, _) in WINDOW_FIELDS.items():
            col = windows[name]
            if kind == "str":
                col = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in col], dtype=object)
            self._windows[name][start:end] = col

    def write_tables(
        self,
        ranks: Sequence[RankRecord | Mapping[str, Any]],
        windows: np.ndarray | None,
        cases: Sequence[Mapping[str, Any]],
    ) -> None:
        """``/ranks`` (one record per rank, in rank order) and ``/cases``; and ``/windows`` too unless
        it was written in pieces."""
        rows = [r.as_dict() if isinstance(r, RankRecord) else r for r in ranks]
        self.nc.table(self.nc.group("ranks"), "rank", RANK_FIELDS, rows)
        if windows is not None:
            self.begin_windows(len(windows))
            self.write_windows(0, windows)
        self.nc.table(self.nc.group("cases"), "case", CASE_FIELDS, cases)

    def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Root attributes added or replaced (a node file says which run it is a part of)."""
        self.f.attrs.update(attrs)

    def set_status(self, status: str, reason: str) -> None:
        self.f.attrs["run_status"] = status
        self.f.attrs["run_status_reason"] = reason

    def close(self) -> None:
        try:
            self.f.close()
        except (OSError, RuntimeError, ValueError):
            let_go(self.f)
            raise

    def abort(self) -> None:
        """Drop the file after a failed write: closed without writing more, its temporary name removed."""
        let_go(self.f)
        self.tmp_path.unlink(missing_ok=True)


def let_go(f: Any) -> None:
    """Close an h5py file that a write failed on, writing nothing more to it.

    HDF5 keeps what it could not write and tries again at every flush and at close; a file whose close
    failed crashes the process when h5py drops it (``Exception ignored in ... __dealloc__``, then a
    segmentation fault). So the file's descriptor is pointed at /dev/null first: the close that
    follows succeeds and writes nowhere. What reached the disk stays as it was."""
    if not f.id.valid:
        return
    try:
        fd = f.id.get_vfd_handle()
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except (OSError, RuntimeError, ValueError, TypeError):
        pass
    try:
        f.close()
    except (OSError, RuntimeError, ValueError):
        pass


def channel_record(t: Any, rank: int, host: str, node: int) -> dict[str, Any]:
    """The ``/traces`` per-channel fields of one sampled channel (a ChannelTrace)."""
    c = t.info
    return {
        "rank": rank,
        "host": host,
        "node": node,
        "name": c.name,
        "scope": c.scope.value,
        "device": c.device,
        "backend": c.backend,
        "method": c.method.value,
        "shared_with": ",".join(c.shared_with),
        "node_level": int(c.node_level),
        "has_energy": int(c.has_energy),
        "update_period": c.update_period_s,
        "energy_resolution": c.energy_resolution_J,
        "power_kind": c.power_kind,
        "power_window": c.power_window_s,
        "label": c.label,
        "note": c.note,
        "n_samples": len(t.time),
        "read_errors": t.errors,
        "included_in": c.included_in,
        "view_of": c.view_of,
        "counter_fault": c.counter_fault,
    }


# Bytes one sample of one channel takes in the run file (time, power, energy, sensor_time), and again
# in its spill file while the run lasts.
BYTES_PER_SAMPLE = 8 + 4 + 8 + 8 + 4 * 8


def estimate_run_bytes(n_ranks: int, seconds: float, interval_s: float, channels_per_rank: int = 4) -> int:
    """Disk a run needs: every rank's channels for ``seconds`` at ``interval_s`` (run file + spills),
    with room for the tables. A guess to refuse hopeless runs early, not a promise."""
    samples = seconds / max(interval_s, 1e-6) + 2
    return int(n_ranks * channels_per_rank * samples * BYTES_PER_SAMPLE) + MIN_FREE_BYTES


def run_file_stem(job_name: str, slurm: dict, now: dt.datetime | None = None) -> str:
    """``<job>-<slurm job>.<step>`` under Slurm, else ``<job>-<UTC time>-<pid>``."""
    if slurm.get("job_id"):
        stem = f"{job_name}-{slurm['job_id']}"
        if slurm.get("array_task_id"):
            stem += f"_{slurm['array_task_id']}"
        if slurm.get("step_id") not in (None, "", "batch"):
            stem += f".{slurm['step_id']}"
    else:
        now = now or dt.datetime.now(dt.timezone.utc)
        stem = f"{job_name}-{now.strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)


def check_output_dir(out: Path, need_bytes: int = MIN_FREE_BYTES) -> Path:
    """Make sure ``out`` exists, takes a file and has ``need_bytes`` free, before any expensive work."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create output folder {str(out)!r}: {exc.strerror}; choose another with -o"
        ) from None
    probe = out / f".energy-hpc-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"output folder {str(out)!r} is not writable: {exc.strerror}; choose another with -o"
        ) from None
    free = shutil.disk_usage(out).free
    if free < need_bytes:
        raise OutputError(
            f"output folder {str(out)!r} has {free // 2**20} MiB free, less than the "
            f"{need_bytes // 2**20} MiB this run needs; free space or choose another with -o"
        )
    return out


def temp_path(out: Path, stem: str) -> Path:
    return out / f".{stem}.{os.getpid()}{RUN_FILE_SUFFIX}.partial"


def place(tmp: Path, out: Path, stem: str) -> Path:
    """Give the finished temporary file its final name without ever replacing another file."""
    for k in range(1, 10_000):
        final = out / (f"{stem}{RUN_FILE_SUFFIX}" if k == 1 else f"{stem}-{k}{RUN_FILE_SUFFIX}")
        try:
            os.link(tmp, final)
        except FileExistsError:
            continue
        except OSError:  # file systems without hard links: check-then-rename (small race window)
            if final.exists():
                continue
            os.rename(tmp, final)
            return final
        tmp.unlink()
        return final
    raise OutputError(f"could not find a free run file name for {stem!r} in {str(out)!r}")


def make_spill_dir(out: Path, stem: str) -> Path:
    """Create ``<out>/.<stem>.spill`` (or ``.<stem>-2.spill``, ...) for this run alone: a folder left by
    an earlier attempt with the same name (a requeued Slurm job) is never reused."""
    for k in range(1, 1000):
        d = out / (f".{stem}.spill" if k == 1 else f".{stem}-{k}.spill")
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(
                f"cannot create spill folder {str(d)!r}: {exc.strerror}; choose another output folder with -o"
            ) from None
        return d
    raise OutputError(f"could not find a free spill folder name for {stem!r} in {str(out)!r}")


def is_run_file(path: Path) -> bool:
    return path.suffix == RUN_FILE_SUFFIX and not path.name.startswith(".")


SPILL_FOLDER_SUFFIX = ".spill"


def find_run_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders into run files, in a stable order. Folders are searched recursively,
    leaving out hidden files and folders (``.<run>.spill/`` kept spills, ``.<run>.partial`` temporary
    files), spill folders (``*.spill``) whatever their name: a spill is not a run file (``energy-hpc
    merge`` rebuilds one from it), and the node files of runs written per node (``*.nodes``). Files named explicitly are taken as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(_search(p)))
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def is_spill_folder(path: Path) -> bool:
    return path.name.endswith(SPILL_FOLDER_SUFFIX)


def _search(folder: Path) -> list[Path]:
    if is_spill_folder(folder) or is_nodes_folder(folder):
        return []
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".") and not is_spill_folder(Path(d)) and not is_nodes_folder(Path(d))
        ]
        found += [Path(root) / f for f in files if is_run_file(Path(f))]
    return found


def _columns(group: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        if name in group:
            ds = group[name]
            out[name] = ds.asstr()[()] if ds.dtype.kind == "O" else ds[()]
    return out


def _rows(columns: dict[str, np.ndarray], n: int) -> list[dict[str, Any]]:
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def write_single(src: Path, out: Path, compression: str = "none", piece: int = 1 << 20) -> Path:
    """One run file that stands alone, from the index of a run written per node and its node files:
    the same attributes, tables and samples, the traces copied ``piece`` samples at a time. Placed in
    ``out`` under the index's name (``-2``, ... where taken); the index and its node files stay."""
    import h5py

    with h5py.File(src, "r") as f:
        if f.attrs.get("layout") != "nodes":
            raise OutputError(f"{src}: already one file that stands alone; nothing to do")
        files = [str(x) for x in json.loads(str(f.attrs.get("node_files", "[]")))]
        lost = [x for x in files if not (src.parent / x).is_file()]
        if lost:
            raise OutputError(
                f"{src}: {len(lost)} of its node files are not beside it ({lost[0]}); run this where the "
                "run file and its folder of node files are"
            )
        tr = f["traces"]
        n_channels = tr["channel"].shape[0]
        channels = _rows(_columns(tr, list(CHANNEL_FIELDS)), n_channels)
        max_samples = max((int(c.get("n_samples", 0)) for c in channels), default=0)
        header = RunHeader(
            job_name="", job_text="", job_path="", epoch_unix=0.0, n_ranks=0, n_nodes=0, launcher=""
        )
        stem = src.name[: -len(RUN_FILE_SUFFIX)] if src.name.endswith(RUN_FILE_SUFFIX) else src.name
        tmp = temp_path(out, stem)
        writer = RunWriter(tmp, header, channels, max_samples, compression)
        try:
            for k in list(writer.f.attrs):
                if k != "_NCProperties":
                    del writer.f.attrs[k]
            writer.set_attrs(
                {
                    k: v
                    for k, v in f.attrs.items()
                    if k not in ("layout", "node_files", "nodes_folder", "_NCProperties")
                }
            )
            for i, c in enumerate(channels):
                for lo in range(0, int(c.get("n_samples", 0)), piece):
                    hi = min(lo + piece, int(c["n_samples"]))
                    t, p, e, st = (tr[v][i, lo:hi] for v in TRACE_FIELDS)
                    writer.write_channel(i, t, p, e, st, lo)
            w = f["windows"]
            n_windows = w["window"].shape[0]
            writer.begin_windows(n_windows)
            for name, col in _columns(w, list(WINDOW_FIELDS)).items():
                if n_windows:
                    writer._windows[name][:] = col
            ranks = _rows(_columns(f["ranks"], list(RANK_FIELDS)), f["ranks"]["rank"].shape[0])
            cases = _rows(_columns(f["cases"], list(CASE_FIELDS)), f["cases"]["case"].shape[0])
            writer.write_tables(ranks, None, cases)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return place(tmp, out, stem)
