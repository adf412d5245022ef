"""What the device really ran at, per case: the enforced power limit, the SM and memory clocks and the
temperature as read back at the edges of the case's measured iterations (``/ranks/device_state``,
written where the rank could read its device: NVML, amdsmi or an emulated part).

Reads the run file with h5py alone (no xarray, no torch). A file from before the column, or a rank
without a device, gives no rows; the table's columns are then NaN (an empty CSV field), never zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

# the per-case columns, in the order the table appends them
COLUMNS = (
    "power_limit_W",
    "sm_clock_MHz",
    "mem_clock_MHz",
    "temperature_start_C",
    "temperature_end_C",
)


def rank_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every window edge row of every rank: ``rank``, ``case``, ``phase``, ``iteration``, ``start`` and
    the state at the start and the end (keys as written: ``power_limit_W_start``, ...)."""
    import h5py

    out: list[dict[str, Any]] = []
    with h5py.File(path, "r") as f:
        if "ranks" not in f or "device_state" not in f["ranks"]:
            return out
        for rank, raw in enumerate(f["ranks"]["device_state"][()]):
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            if not text:
                continue
            table = json.loads(text)
            cols = list(table["columns"])
            for row in table["rows"]:
                out.append({"rank": rank, **dict(zip(cols, row, strict=True))})
    return out


def _mean(values: Iterable[float]) -> float:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    return float(v.mean()) if len(v) else math.nan


def case_state(path: str | Path, phase: str = "measure") -> dict[int, dict[str, float]]:
    """Per case index, over its ``phase`` windows on every rank: the enforced power limit (W) and the
    SM and memory clocks (MHz) as the mean of the start and end reads; the temperature (°C) at the
    start of the first window and at the end of the last."""
    by_case: dict[int, list[Mapping[str, Any]]] = {}
    for r in rank_rows(path):
        if r["phase"] == phase and int(r["case"]) >= 0:
            by_case.setdefault(int(r["case"]), []).append(r)
    out: dict[int, dict[str, float]] = {}
    for case, rows in sorted(by_case.items()):
        rows = sorted(rows, key=lambda r: float(r["start"]))

        def both(name: str, rows: list[Mapping[str, Any]] = rows) -> float:
            return _mean([r[f"{name}_start"] for r in rows] + [r[f"{name}_end"] for r in rows])

        out[case] = {
            "power_limit_W": both("power_limit_W"),
            "sm_clock_MHz": both("sm_clock_MHz"),
            "mem_clock_MHz": both("mem_clock_MHz"),
            "temperature_start_C": float(rows[0]["temperature_C_start"]),
            "temperature_end_C": float(rows[-1]["temperature_C_end"]),
        }
    return out


# each table column -> the keys of a window's row it is the mean of (the clocks and the limit at both
# edges, the temperatures at one)
WINDOW_KEYS = {
    "power_limit_W": ("power_limit_W_start", "power_limit_W_end"),
    "sm_clock_MHz": ("sm_clock_MHz_start", "sm_clock_MHz_end"),
    "mem_clock_MHz": ("mem_clock_MHz_start", "mem_clock_MHz_end"),
    "temperature_start_C": ("temperature_C_start",),
    "temperature_end_C": ("temperature_C_end",),
}


def window_state(
    path: str | Path, phase: str = "measure"
) -> dict[tuple[int, int, int], dict[str, list[float]]]:
    """Per (rank, case, iteration) of the ``phase`` windows: each of :data:`COLUMNS` as the finite reads
    that make it (W, MHz, °C; a read that failed, or a window end cut by a signal, left out)."""
    out: dict[tuple[int, int, int], dict[str, list[float]]] = {}
    for r in rank_rows(path):
        if r["phase"] != phase or int(r["case"]) < 0:
            continue
        values = out.setdefault((int(r["rank"]), int(r["case"]), int(r["iteration"])), {})
        for column, keys in WINDOW_KEYS.items():
            for k in keys:
                v = r.get(k)
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    values.setdefault(column, []).append(float(v))
    return out
