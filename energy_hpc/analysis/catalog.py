"""The study catalogue: every run file of a folder tree reduced once, in Parquet beside the runs.

A table over thousands of runs would otherwise open and reduce every file again each time (about 55 ms a
file). ``energy-hpc catalog DIR`` reduces each run file under ``DIR`` that is new or changed and keeps,
in ``DIR/.energy-hpc-catalog/`` (hidden: folder searches never take it for runs):

- ``index.parquet``: one row per run file: its path relative to ``DIR``, size and mtime (what makes an
  entry fresh), the run's identity (:func:`energy_hpc.analysis.table.run_identity`) and the part holding
  its rows;
- ``parts/<part>.cases.parquet``: one row per (file, case, stage) with the table's columns for that file
  alone (stage ``""``: whole iterations), and the sums the table merges them from (``sums_json``);
- ``parts/<part>.devices.parquet``: one row per (file, case, stage, device), as ``table --devices``.

A refresh writes new parts (one per rank when run under ``mpiexec``/``srun``: rank r reduces files r,
r + size, ...) and rank 0 then writes the index. ``table``, ``plot`` and ``report`` use the catalogue
only when it is fresh for every file they would read (:func:`read_study`); the rows are then the same,
to the last bit, as those reduced from the files. Files that share a run identity (a copy, a merge of a
run's spills) are reduced from the files each time, so the same measurements are counted once exactly
as without the catalogue. Schema and a DuckDB query: docs/analysis.md, "Catalogue".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from energy_hpc.analysis import table
from energy_hpc.analysis.reduce import RunReduction, reduce_run
from energy_hpc.errors import RunFileError, UserError
from energy_hpc.store import find_run_files

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

CATALOG_DIR = ".energy-hpc-catalog"
INDEX = "index.parquet"
PARTS = "parts"
# bumped whenever what the catalogue stores, or how a file is reduced, changes: an older catalogue is stale
# (2: the device state read back and the Slurm GPU settings in the sums and the rows)
SCHEMA_VERSION = 2
# below this many files a table is quick anyway: no hint about the catalogue
HINT_FILES = 100

# table columns that are counts (int64 in Parquet); other numbers are float64
_INT_COLUMNS = {
    "batch_size",
    "n_ranks",
    "n_nodes",
    "n_files",
    "iterations",
    "n_iterations",
    "short_windows",
    "counter_fallback_windows",
    "rank_iterations",
    "gap_windows",
    "case_index",
    "rank",
    "no_data_windows",
    "size",
    "mtime_ns",
}


def _version() -> str:
    try:
        code = metadata.version("energy-hpc")
    except metadata.PackageNotFoundError:
        code = "unknown"
    return f"{SCHEMA_VERSION}/{code}"


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet  # makes pa.parquet
    except ImportError:
        return None
    return pa


def _read(pa: Any, path: Path, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file as a table. Through ``ParquetFile``, not ``read_table``: the latter imports
    pyarrow.dataset and with it pandas, a quarter of a second on every table from the catalogue."""
    with pa.parquet.ParquetFile(path) as f:
        return f.read(columns=columns)


def _version_of(t: pa.Table) -> str:
    return (t.schema.metadata or {}).get(b"energy_hpc_catalog", b"").decode()


# ---------------------------------------------------------------- the sums, as JSON


def _is_default(f: dataclasses.Field[Any], value: Any) -> bool:
    """Whether a dataclass field holds exactly its default (same type, and for floats the same bits as
    ``repr`` shows them: -0.0 and 0.0 differ), so that leaving it out changes nothing on reading."""
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        return False
    if type(value) is not type(default):
        return False
    if isinstance(value, float):
        return repr(value) == repr(default)
    return bool(value == default)


def _encode(x: Any, file_id: str) -> Any:
    """A run's :func:`~energy_hpc.analysis.table.accumulate` output as JSON values that :func:`_decode`
    turns back into equal objects (floats kept exactly; the file's own path left out, put back on
    reading, so that a moved study stays fresh). Dataclass fields at their default are left out (most of
    a row's scopes are empty): a quarter of the size, a third of the time to decode."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {
            "$dc": type(x).__name__,
            **{
                f.name: _encode(value, file_id)
                for f in dataclasses.fields(x)
                if not _is_default(f, value := getattr(x, f.name))
            },
        }
    if isinstance(x, Enum):
        return {"$enum": type(x).__name__, "v": x.value}
    if isinstance(x, Counter):
        return {"$counter": [[_encode(k, file_id), v] for k, v in x.items()]}
    if isinstance(x, dict):
        return {"$map": [[_encode(k, file_id), _encode(v, file_id)] for k, v in x.items()]}
    if isinstance(x, set | frozenset):
        return {"$set": [_encode(v, file_id) for v in x]}
    if isinstance(x, tuple):
        return {"$tuple": [_encode(v, file_id) for v in x]}
    if isinstance(x, list):
        return [_encode(v, file_id) for v in x]
    if isinstance(x, str) and x == file_id:
        return {"$file": 1}
    if x is None or isinstance(x, bool | int | float | str):
        return x
    raise TypeError(f"the catalogue cannot store a {type(x).__name__}")


def _decoder(file_id: str) -> Any:
    names = vars(table)

    def hook(d: dict[str, Any]) -> Any:
        if "$dc" in d:
            cls = names[d.pop("$dc")]
            return cls(**d)
        if "$map" in d:
            return dict(d["$map"])
        if "$set" in d:
            return set(d["$set"])
        if "$tuple" in d:
            return tuple(d["$tuple"])
        if "$counter" in d:
            return Counter(dict(d["$counter"]))
        if "$enum" in d:
            return names[d["$enum"]](d["v"])
        if "$file" in d:
            return file_id
        return d

    return hook


def _loads(text: str, file_id: str) -> Any:
    return json.loads(text, object_hook=_decoder(file_id))


# ---------------------------------------------------------------- what a study is read from


@dataclass
class _Run:
    """One run as the commands need it: its sums per (case, stage) (JSON, decoded for each use: merging
    rows changes them) and its device rows (stages included)."""

    path: Path
    sums_json: dict[tuple[int, str], str]
    devices: list[dict[str, Any]]

    @staticmethod
    def of(red: RunReduction, sums: dict[tuple[int, str], table.RowSums] | None = None) -> _Run:
        """``red``'s run; ``sums``: its :func:`~energy_hpc.analysis.table.accumulate`, when already made."""
        file_id = str(red.path)
        sums = table.accumulate(red) if sums is None else sums
        encoded = {key: json.dumps(_encode(s, file_id)) for key, s in sums.items()}
        return _Run(red.path, encoded, table.device_rows([red], stages=True))

    def sums(self) -> dict[tuple[int, str], table.RowSums]:
        file_id = str(self.path)
        return {key: _loads(text, file_id) for key, text in self.sums_json.items()}


class Study:
    """The runs a command reads: reduced now (``reds``) or read from the catalogue (``runs``); the same rows
    either way."""

    def __init__(self, reds: list[RunReduction] | None = None, runs: list[_Run] | None = None) -> None:
        self.reds = reds
        self.runs = runs

    @property
    def from_catalog(self) -> bool:
        return self.runs is not None

    def rows(self, by: Sequence[str] | None = None, stages: bool = False) -> list[dict[str, Any]]:
        """As :func:`energy_hpc.analysis.table.energy_table`."""
        if self.runs is None:
            return table.rows_from_reductions(self.reds or [], by=by, stages=stages)
        return table.rows_from_sums((run.sums() for run in self.runs), by=by, stages=stages)

    def device_rows(self, stages: bool = False) -> list[dict[str, Any]]:
        """As :func:`energy_hpc.analysis.table.device_rows`."""
        if self.runs is None:
            return table.device_rows(self.reds or [], stages=stages)
        return [dict(r) for run in self.runs for r in run.devices if stages or not r["stage"]]


def read_study(files: Sequence[Path]) -> Study:
    """The runs in ``files``: from the catalogue when it is fresh for every one of them, else reduced
    from the files as ever (saying on stderr, for a large study, that a catalogue would be faster)."""
    runs = _from_catalog(files)
    if runs is not None:
        return Study(runs=runs)
    return Study(reds=table.reduce_files(files))


def _catalog_of(path: Path, seen: dict[Path, Path | None]) -> Path | None:
    """The folder whose catalogue covers ``path`` (the nearest above it), or None; ``seen`` keeps the
    answers by parent folder, so a study of 10,000 files in a few folders costs a few lookups."""
    parent = Path(os.path.abspath(path)).parent
    if parent not in seen:
        seen[parent] = next(
            (d for d in (parent, *parent.parents) if (d / CATALOG_DIR / INDEX).is_file()), None
        )
    return seen[parent]


def _from_catalog(files: Sequence[Path]) -> list[_Run] | None:
    pa = _pyarrow()
    roots: dict[Path, list[Path]] = {}
    uncovered = 0
    seen: dict[Path, Path | None] = {}
    for f in files:
        root = _catalog_of(f, seen)
        if root is None:
            uncovered += 1
        else:
            roots.setdefault(root, []).append(f)
    if uncovered or pa is None:
        if len(files) >= HINT_FILES:
            where = " ".join(sorted({str(Path(f).parent) for f in files})[:3])
            log.warning(
                "%d run files reduced one by one: `energy-hpc catalog %s` makes tables of them fast",
                len(files),
                where if len({Path(f).parent for f in files}) <= 3 else "STUDY_FOLDER",
            )
        return None
    entries: dict[Path, dict[str, Any]] = {}
    for root, members in roots.items():
        try:
            found = _fresh_entries(pa, root, members)
        except Exception as e:  # an unreadable catalogue is never an error: the files are read instead
            log.warning("catalogue %s unreadable (%s): reducing the run files instead", root / CATALOG_DIR, e)
            return None
        if found is None:
            return None
        entries.update(found)
    identities = Counter(e["run_identity"] for e in entries.values())
    runs: dict[Path, _Run] = {}
    try:
        for root, members in roots.items():
            runs.update(_read_runs(pa, root, {f: entries[f] for f in members}))
    except Exception as e:
        log.warning("catalogue unreadable (%s): reducing the run files instead", e)
        return None
    # files that share a run identity: decided from the files, as without the catalogue
    copies = [f for f in files if identities[entries[f]["run_identity"]] > 1]
    kept = {red.path: _Run.of(red) for red in table.reduce_files(copies)} if copies else {}
    out = []
    for f in files:
        if f in kept:
            out.append(kept[f])
        elif f not in copies:
            missing = json.loads(entries[f]["missing_json"])
            if missing:  # what reduce_run says of a partial run
                log.warning(
                    "%s: partial run, analysed with what is there; missing: %s", f.name, "; ".join(missing)
                )
            out.append(runs[f])
    return out


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _rel(root: Path, path: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), root)).as_posix()


def _fresh_entries(pa: Any, root: Path, members: list[Path]) -> dict[Path, dict[str, Any]] | None:
    """The index entries of ``members``, or None (saying why) when any is missing or stale."""
    index = _read(pa, root / CATALOG_DIR / INDEX)
    version = _version_of(index)
    if version != _version():
        log.warning(
            "catalogue %s was written by another energy-hpc version (%s): `energy-hpc catalog %s` renews it",
            root / CATALOG_DIR,
            version or "unknown",
            root,
        )
        return None
    by_file = {e["file"]: e for e in index.to_pylist()}
    out: dict[Path, dict[str, Any]] = {}
    stale = 0
    for f in members:
        entry = by_file.get(_rel(root, f))
        try:
            fresh = entry is not None and (entry["size"], entry["mtime_ns"]) == _stat(f)
        except OSError:
            fresh = False
        if not fresh:
            stale += 1
        else:
            out[f] = entry  # type: ignore[assignment]
    if stale:
        log.warning(
            "catalogue %s is not up to date for %d of %d run file(s): reducing them all; "
            "`energy-hpc catalog %s` brings it up to date",
            root / CATALOG_DIR,
            stale,
            len(members),
            root,
        )
        return None
    return out


def _read_runs(pa: Any, root: Path, entries: dict[Path, dict[str, Any]]) -> dict[Path, _Run]:
    """The runs of ``entries`` from the parts their index entries name."""
    by_rel = {e["file"]: f for f, e in entries.items()}
    sums: dict[Path, dict[tuple[int, str], str]] = {f: {} for f in entries}
    devices: dict[Path, list[dict[str, Any]]] = {f: [] for f in entries}
    parts = sorted({e["part"] for e in entries.values()})
    folder = root / CATALOG_DIR / PARTS
    for part in parts:
        cases = _read(
            pa, folder / f"{part}.cases.parquet", columns=["file", "case_index", "stage", "sums_json"]
        )
        for rel, case, stage, text in zip(
            *(cases.column(c).to_pylist() for c in cases.column_names), strict=True
        ):
            f = by_rel.get(rel)
            if f is not None and entries[f]["part"] == part:
                sums[f][(case, stage)] = text
        devs = _read(pa, folder / f"{part}.devices.parquet", columns=["file", "row_json"])
        for rel, text in zip(
            devs.column("file").to_pylist(), devs.column("row_json").to_pylist(), strict=True
        ):
            f = by_rel.get(rel)
            if f is not None and entries[f]["part"] == part:
                devices[f].append(json.loads(text))
    return {f: _Run(f, sums[f], devices[f]) for f in entries}


# ---------------------------------------------------------------- writing


def require_pyarrow() -> Any:
    pa = _pyarrow()
    if pa is None:
        raise UserError("the catalogue is Parquet and needs pyarrow: pip install 'energy-hpc[analysis]'")
    return pa


def run_id(identity: Sequence[Any]) -> str:
    """A short, stable name of a run identity (the same run in two files has the same run_id)."""
    return hashlib.sha1(json.dumps(list(identity)).encode()).hexdigest()[:16]


def stale_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(every run file under ``root``, those the catalogue lacks or holds an older state of)."""
    pa = require_pyarrow()
    files = find_run_files([root])
    known: dict[str, tuple[int, int]] = {}
    index = root / CATALOG_DIR / INDEX
    if index.is_file():
        try:
            t = _read(pa, index)
            if _version_of(t) == _version():
                for e in t.to_pylist():
                    known[e["file"]] = (e["size"], e["mtime_ns"])
        except Exception as e:
            log.warning("catalogue index %s unreadable (%s): every file is catalogued again", index, e)
    stale = []
    for f in files:
        try:
            if known.get(_rel(root, f)) != _stat(f):
                stale.append(f)
        except OSError:
            continue
    return files, stale


def _column_type(pa: Any, key: str, values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if key in _INT_COLUMNS and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    if present and all(isinstance(v, list) for v in present):
        return pa.list_(pa.string())
    return pa.string()


def _to_table(pa: Any, records: list[dict[str, Any]]) -> pa.Table:
    keys = list(dict.fromkeys(k for r in records for k in r))
    arrays, fields = [], []
    for k in keys:
        values = [r.get(k) for r in records]
        kind = _column_type(pa, k, values)
        if kind == pa.string():
            values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
        elif kind == pa.list_(pa.string()):
            values = [None if v is None else [str(x) for x in v] for v in values]
        arrays.append(pa.array(values, type=kind))
        fields.append(pa.field(k, kind))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata={"energy_hpc_catalog": _version()}))


def _write(pa: Any, table_: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pa.parquet.write_table(table_, tmp)
    os.replace(tmp, path)


def build_part(root: Path, files: Iterable[Path], part: str) -> int:
    """Reduce ``files`` (under ``root``) into the part ``part``; returns how many were catalogued. A file
    that cannot be read is left out with a warning (readers then reduce it, and say what is wrong)."""
    pa = require_pyarrow()
    entries: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []
    devices: list[dict[str, Any]] = []
    for f in files:
        rel = _rel(root, f)
        try:
            before = _stat(f)
            red = reduce_run(f)
            sums = table.accumulate(red)
            run = _Run.of(red, sums)
            if _stat(f) != before:
                log.warning("%s changed while it was read: not catalogued", f)
                continue
        except (RunFileError, OSError) as e:
            log.warning("%s: not catalogued: %s", f, e)
            continue
        identity = table.run_identity(red)
        rid = run_id(identity)
        entries.append(
            {
                "file": rel,
                "size": before[0],
                "mtime_ns": before[1],
                "part": part,
                "run_id": rid,
                "run_identity": json.dumps(list(identity)),
                "job_name": str(red.attrs.get("job_name", "")),
                "epoch_unix": float(red.attrs.get("epoch_unix", float("nan"))),
                "status": red.status,
                "data": red.label,
                "missing_json": json.dumps(red.missing),
            }
        )
        for (case, stage), s in sums.items():
            row = table._row({}, s)  # this file's row for this case and stage, alone
            params = row.pop("case")
            row.pop("files")
            cases.append(
                {
                    "file": rel,
                    "part": part,
                    "run_id": rid,
                    "case_index": case,
                    "case_json": json.dumps(params, sort_keys=True),
                    **row,
                    "sums_json": run.sums_json[(case, stage)],
                }
            )
        for d in run.devices:
            rec = {k: v for k, v in d.items() if k not in ("file", "case")}
            devices.append(
                {
                    "file": rel,
                    "part": part,
                    "run_id": rid,
                    "case_json": json.dumps(d["case"], sort_keys=True),
                    **rec,
                    "row_json": json.dumps(d),
                }
            )
    folder = root / CATALOG_DIR / PARTS
    folder.mkdir(parents=True, exist_ok=True)
    _write(pa, _to_table(pa, cases), folder / f"{part}.cases.parquet")
    _write(pa, _to_table(pa, devices), folder / f"{part}.devices.parquet")
    _write(pa, _to_table(pa, entries), folder / f"{part}.files.parquet")
    return len(entries)


def new_part_name() -> str:
    """A part name no other refresh has (time and process id); ranks add ``-r<rank>``."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"


def write_index(root: Path, files: Sequence[Path], parts: Sequence[str]) -> int:
    """The index of ``root``'s catalogue: the entries of the new ``parts``, and the old index's entries of
    the other ``files`` still there; parts no entry names are removed. Returns the number of entries."""
    pa = require_pyarrow()
    catalog = root / CATALOG_DIR
    folder = catalog / PARTS
    present = {_rel(root, f) for f in files}
    entries: dict[str, dict[str, Any]] = {}
    index = catalog / INDEX
    if index.is_file():
        try:
            old = _read(pa, index)
            if _version_of(old) == _version():
                entries = {e["file"]: e for e in old.to_pylist() if e["file"] in present}
        except Exception as e:
            log.warning("catalogue index %s unreadable (%s): written anew", index, e)
    for part in parts:
        listing = folder / f"{part}.files.parquet"
        for entry in _read(pa, listing).to_pylist():
            entries[entry["file"]] = entry
        listing.unlink()
    records = [entries[k] for k in sorted(entries)]
    if records:
        _write(pa, _to_table(pa, records), index)
    else:
        index.unlink(missing_ok=True)
    named = {e["part"] for e in records}
    for p in folder.glob("*.parquet"):
        name = p.name.split(".", 1)[0]
        if name not in named and not p.name.endswith(".files.parquet"):
            p.unlink(missing_ok=True)
    return len(records)
