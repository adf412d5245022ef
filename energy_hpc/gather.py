"""Rank 0 collects every rank's traces and windows and writes the run file.

Small metadata (channel descriptions, rank records) travels as one gather of plain dicts; the traces
travel as raw numpy buffers, one channel at a time, rank after rank, so rank 0 holds at most one
channel's samples in memory whatever the number of ranks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from energy_hpc.context import Comm
from energy_hpc.store import RunHeader, RunWriter, place, temp_path
from energy_hpc.telemetry.sampler import ChannelTrace
from energy_hpc.windows import WINDOW_DTYPE

log = logging.getLogger(__name__)

_TAG_TRACE = 11
_TAG_WINDOWS = 12


def channel_record(t: ChannelTrace, rank: int, host: str, node: int) -> dict[str, Any]:
    c = t.info
    return {
        "rank": rank, "host": host, "node": node, "name": c.name, "scope": c.scope.value, "device": c.device,
        "backend": c.backend, "method": c.method.value, "shared_with": ",".join(c.shared_with),
        "node_level": int(c.node_level), "has_energy": int(c.has_energy), "update_period": c.update_period_s,
        "energy_resolution": c.energy_resolution_J, "power_kind": c.power_kind, "label": c.label,
        "note": c.note, "n_samples": len(t.time), "read_errors": t.errors,
    }


def _pack(t: ChannelTrace, offset: float) -> np.ndarray:
    return np.stack([t.time - offset, t.power, t.energy, t.sensor_time]) if len(t.time) else np.empty((4, 0))


def gather_and_write(comm: Comm, *, traces: Sequence[ChannelTrace], time_offset: float,
                     windows: np.ndarray, rank_record: dict[str, Any], node: int, host: str,
                     header: RunHeader | None, cases: Sequence[dict] | None, out: Path | None,
                     stem: str | None, compression: str = "none") -> tuple[Path | None, str]:
    """Collective: every rank calls it. Returns (run file path, run status) on rank 0, (None, "") elsewhere.

    The run is ``complete`` when every rank finished every case, else ``partial`` with the reason."""
    meta = {"rank": rank_record, "channels": [channel_record(t, comm.rank, host, node) for t in traces]}
    metas = comm.gather(meta, root=0)
    if comm.rank != 0:
        comm.send_array(windows, 0, _TAG_WINDOWS)
        for t in traces:
            comm.send_array(_pack(t, time_offset), 0, _TAG_TRACE)
        return None, ""

    assert metas is not None and header is not None and out is not None and stem is not None
    channels = [c for m in metas for c in m["channels"]]
    max_samples = max((c["n_samples"] for c in channels), default=0)
    all_windows = [windows] + [comm.recv_array(r, _TAG_WINDOWS) for r in range(1, comm.size)]
    win = np.concatenate([w.astype(WINDOW_DTYPE) for w in all_windows]) if all_windows else \
        np.zeros(0, WINDOW_DTYPE)
    problems = [f"rank {r}: {m['rank']['status']}: {m['rank']['error']}" for r, m in enumerate(metas)
                if m["rank"]["status"] != "ok"]
    if problems:
        header.status, header.status_reason = "partial", "; ".join(problems)[:4000]
    header.contains_synthetic = any(c["method"] == "synthetic" for c in channels)
    header.contains_estimate = any(c["method"] == "estimate" for c in channels)
    tmp = temp_path(out, stem)
    writer = RunWriter(tmp, header, channels, max_samples, compression)
    try:
        i = 0
        for t in traces:
            writer.write_channel(i, *_pack(t, time_offset))
            i += 1
        for r in range(1, comm.size):
            for _ in metas[r]["channels"]:
                writer.write_channel(i, *comm.recv_array(r, _TAG_TRACE))
                i += 1
        ranks = []
        for r, m in enumerate(metas):
            ranks.append(dict(m["rank"], rank=r))
        writer.write_tables(ranks, win, cases or [])
    finally:
        writer.close()
    path = place(tmp, out, stem)
    log.info("wrote %s (%d ranks, %d channels, %d windows)", path, comm.size, len(channels), len(win))
    return path, header.status

