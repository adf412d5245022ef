"""Opening run files for analysis: xarray over the file, traces read one channel at a time."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from energy_hpc.errors import RunFileError

log = logging.getLogger(__name__)

SUPPORTED_MAJOR = "1"


@dataclass
class Trace:
    """One channel's valid samples (padding removed)."""

    index: int
    meta: dict[str, Any]
    time: np.ndarray
    power: np.ndarray
    energy: np.ndarray
    sensor_time: np.ndarray


class RunFile:
    """A run file opened for reading. Small groups are loaded; traces are read lazily per channel."""

    def __init__(self, path: str | Path) -> None:
        import xarray as xr

        self.path = Path(path)
        if not self.path.exists():
            raise RunFileError(f"{self.path}: no such file; check the path (run files end in .h5)")
        try:
            root = xr.open_dataset(self.path, engine="h5netcdf")
        except Exception as exc:  # noqa: BLE001 - h5py/xarray raise many types for a bad file
            raise RunFileError(f"{self.path}: not a readable HDF5 run file ({type(exc).__name__}: {exc}); "
                               "if the run never finished, rebuild it from its spills with energy-hpc merge") \
                from None
        self.attrs = dict(root.attrs)
        root.close()
        if self.attrs.get("format") != "energy-hpc run":
            raise RunFileError(f"{self.path}: an HDF5 file but not an energy-hpc run file (no 'format' "
                               "attribute); give the .h5 files energy-hpc run wrote")
        version = str(self.attrs.get("schema_version", "?"))
        if version.split(".")[0] != SUPPORTED_MAJOR:
            raise RunFileError(f"{self.path}: schema version {version} is not supported by this energy-hpc "
                               f"(reads {SUPPORTED_MAJOR}.x); upgrade energy-hpc")
        try:
            self.ranks = xr.open_dataset(self.path, group="ranks", engine="h5netcdf").load()
            self.windows = xr.open_dataset(self.path, group="windows", engine="h5netcdf").load()
            self.cases = xr.open_dataset(self.path, group="cases", engine="h5netcdf").load()
            self.traces = xr.open_dataset(self.path, group="traces", engine="h5netcdf")
        except (OSError, KeyError, ValueError) as exc:
            raise RunFileError(f"{self.path}: run file is incomplete or damaged ({exc}); rebuild it from "
                               "its spills with energy-hpc merge, or re-run") from None
        self.channel_meta = [
            {k: _scalar(self.traces[k].values[i]) for k in self.traces.data_vars
             if self.traces[k].dims == ("channel",)}
            for i in range(self.traces.sizes.get("channel", 0))
        ]

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

    def case_params(self, i: int) -> dict[str, Any]:
        return json.loads(str(self.cases["params"].values[i]))

    def case_unit(self, i: int) -> str:
        return str(self.cases["unit"].values[i])

    @property
    def n_cases(self) -> int:
        return int(self.cases.sizes.get("case", 0))

    def window_table(self) -> dict[str, np.ndarray]:
        return {k: self.windows[k].values for k in self.windows.data_vars}

    def trace(self, i: int) -> Trace:
        meta = self.channel_meta[i]
        n = int(meta["n_samples"])
        cols = {k: np.asarray(self.traces[k][i, :n].values, dtype=np.float64)
                for k in ("time", "power", "energy", "sensor_time")}
        return Trace(i, meta, cols["time"], cols["power"], cols["energy"], cols["sensor_time"])

    def iter_traces(self) -> Iterator[Trace]:
        for i in range(len(self.channel_meta)):
            yield self.trace(i)

    def close(self) -> None:
        self.traces.close()

    def __enter__(self) -> "RunFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v
