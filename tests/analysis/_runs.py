"""Run files built directly with the RunWriter from known traces, so tables can be checked against
closed forms."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from energy_hpc.store import CHANNEL_FIELDS, RunHeader, RunWriter
from energy_hpc.windows import WINDOW_DTYPE

DT = 0.001  # sampling interval of the built traces (s)


def channel(
    rank: int = 0,
    *,
    power: Callable[[np.ndarray], np.ndarray] | float = 100.0,
    t_end: float = 20.0,
    energy: Callable[[np.ndarray], np.ndarray] | str | None = "exact",
    dt: float = DT,
    **meta: Any,
) -> dict[str, Any]:
    """A channel dict: metadata plus 'time', 'power', 'energy'. ``energy='exact'`` integrates power."""
    t = np.arange(0.0, t_end, dt)
    p = np.full_like(t, float(power)) if not callable(power) else np.asarray(power(t), float)
    if isinstance(energy, str):
        e = np.concatenate([[0.0], np.cumsum(np.diff(t) * (p[1:] + p[:-1]) / 2)])
    elif energy is None:
        e = np.full_like(t, np.nan)
    else:
        e = np.asarray(energy(t), float)
    m = {
        "rank": rank,
        "host": "h0",
        "node": 0,
        "name": f"ch{rank}",
        "scope": "gpu",
        "device": f"dev{rank}",
        "backend": "test",
        "method": "counter",
        "shared_with": "",
        "node_level": 0,
        "has_energy": 1,
        "update_period": 0.0,
        "energy_resolution": 0.0,
        "power_kind": "instant",
        "label": "",
        "note": "",
        "read_errors": 0,
    }
    m.update(meta)
    m.update(time=t, power=p, energy=e)
    return m


def window(
    rank: int,
    case: int,
    phase: str,
    start: float,
    end: float,
    units: float = 0.0,
    iteration: int = 0,
    stage: str = "",
    unit: str = "image",
    status: str = "ok",
    aux_units: float = 0.0,
    aux_unit: str = "",
) -> tuple:
    return (
        rank,
        case,
        phase.encode(),
        iteration,
        start,
        end,
        stage.encode(),
        units,
        unit.encode(),
        aux_units,
        aux_unit.encode(),
        status.encode(),
    )


def rank_row(
    host: str = "h0", node: int = 0, local_rank: int = 0, bus: str = "", status: str = "ok", error: str = ""
) -> dict[str, Any]:
    return {
        "host": host,
        "node": node,
        "local_rank": local_rank,
        "device_kind": "cuda",
        "device_name": "x",
        "device_uuid": "",
        "device_bus_id": bus,
        "visible_devices": "",
        "status": status,
        "error": error,
        "sensors": "test",
        "sensors_skipped": "{}",
    }


def case_row(**params: Any) -> dict[str, Any]:
    p = {"task": "text-to-image", "model": "m", "dtype": "fp16", "batch_size": 1, "source": "random"}
    p.update(params)
    return {
        "task": p["task"],
        "model": p["model"],
        "source": p["source"],
        "dtype": p["dtype"],
        "batch_size": p["batch_size"],
        "label": p.get("label", ""),
        "unit": p.get("unit", "image"),
        "params": json.dumps(p),
    }


def build(
    path: Path,
    channels: Sequence[dict[str, Any]],
    windows: Sequence[tuple],
    *,
    ranks: Sequence[dict[str, Any]] | None = None,
    cases: Sequence[dict[str, Any]] | None = None,
    n_nodes: int = 1,
    status: str = "complete",
    reason: str = "",
    synthetic: bool = False,
) -> Path:
    ranks = list(ranks) if ranks is not None else [rank_row()]
    cases = list(cases) if cases is not None else [case_row()]
    header = RunHeader(
        job_name="t",
        job_text="",
        job_path="",
        epoch_unix=0.0,
        n_ranks=len(ranks),
        n_nodes=n_nodes,
        launcher="test",
        status=status,
        status_reason=reason,
        contains_synthetic=synthetic,
    )
    metas = [
        {
            k: c.get(k, "" if kind == "str" else 0)
            for k, (kind, _, _) in CHANNEL_FIELDS.items()
            if k != "n_samples"
        }
        | {"n_samples": len(c["time"])}
        for c in channels
    ]
    max_n = max((len(c["time"]) for c in channels), default=1)
    tmp = path.with_suffix(".tmp")
    wr = RunWriter(tmp, header, metas, max_n)
    for i, c in enumerate(channels):
        wr.write_channel(i, c["time"], c["power"], c["energy"], np.full(len(c["time"]), np.nan))
    wr.write_tables(ranks, np.array(list(windows), dtype=WINDOW_DTYPE), cases)
    wr.close()
    tmp.rename(path)
    return path
