"""Run under mpiexec by test_gather.py: every rank fabricates known traces (values that encode rank,
channel and sample, a time offset of its own, lengths that are not a multiple of the piece size)
and calls the real gather with small pieces. ``python gather_entry.py OUT PIECE [NODES]``: with NODES,
the ranks are split into that many pretend nodes (ENERGY_HPC_GATHER_LAYOUT says how the run is written)
and each rank has windows of the ``measure`` phase whose energy is known exactly (:func:`window_truth`)."""

import sys
import time
from pathlib import Path

import numpy as np

from energy_hpc.context import MpiComm

comm = MpiComm()

from energy_hpc.gather import gather_and_write  # noqa: E402
from energy_hpc.store import RankRecord, RunHeader  # noqa: E402
from energy_hpc.telemetry.base import ChannelInfo, Scope  # noqa: E402
from energy_hpc.telemetry.sampler import ChannelTrace  # noqa: E402
from energy_hpc.windows import WINDOW_DTYPE  # noqa: E402


def expected(rank: int, channel: int) -> dict[str, np.ndarray]:
    """What rank ``rank``'s channel ``channel`` must look like in the run file."""
    n = 1000 + 317 * rank + 101 * channel
    i = np.arange(n, dtype=np.float64)
    return {
        "time": i * 0.01 + rank,
        "power": (100 + rank + channel / 10 + i % 7).astype(np.float32),
        "energy": np.cumsum(i) + 1e6 * rank,
        "sensor_time": i * 0.001 + channel,
    }


def window_edges(rank: int) -> list[tuple[float, float]]:
    """Rank ``rank``'s windows (run time, s): on sample times, inside every channel's trace."""
    return [(rank + 1.0 + k, rank + 3.0 + k) for k in range(rank + 1)]


def window_power_integral(rank: int, channel: int, start: float, end: float) -> float:
    """The energy of a window from the fabricated power (trapezoids between samples; the edges are on
    samples). Its channels are marked synthetic, so the analysis integrates the power, not the counter."""
    e = expected(rank, channel)
    lo, hi = np.searchsorted(e["time"], [start, end])
    p, t = e["power"][lo : hi + 1].astype(np.float64), e["time"][lo : hi + 1]
    return float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(t)))


def offset(rank: int) -> float:
    return 5000.0 + 123.25 * rank  # the rank's monotonic clock minus the run's epoch


def main() -> None:
    out, piece = Path(sys.argv[1]), int(sys.argv[2])
    pretend = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    layout = comm.split_nodes(pretend) if pretend else None
    traces = []
    for j in range(2):
        e = expected(comm.rank, j)
        info = ChannelInfo(
            name=f"synthetic:r{comm.rank}c{j}",
            scope=Scope.GPU,
            device=f"d{comm.rank}",
            backend="synthetic",
            has_power=True,
            has_energy=True,
            synthetic=True,
            label="SYNTHETIC test trace",
        )
        traces.append(
            ChannelTrace(
                info,
                e["time"] + offset(comm.rank),
                e["power"].astype(np.float64),
                e["energy"],
                e["sensor_time"],
            )
        )
    windows = np.zeros(comm.rank + 1, WINDOW_DTYPE)
    windows["rank"] = comm.rank
    windows["start"] = np.arange(comm.rank + 1)
    node, host, local = 0, "h", comm.rank
    if layout is not None:
        node, host, local = layout.node_index, f"h+p{layout.node_index}", layout.local_rank
        edges = np.array(window_edges(comm.rank))
        windows["case"], windows["phase"], windows["iteration"] = 0, "measure", np.arange(len(edges))
        windows["start"], windows["end"] = edges[:, 0], edges[:, 1]
        windows["units"], windows["unit"], windows["status"] = 1.0, "sample", "ok"
    record = RankRecord(
        host=host, node=node, local_rank=local, device_kind="cpu", status="ok", sensors="synthetic"
    )
    root = comm.rank == 0
    # with pretend nodes every node leader writes too: every rank gets the folder and the header
    writes = root or layout is not None
    header = (
        RunHeader(
            job_name="gather-test",
            job_text="",
            job_path="",
            epoch_unix=time.time(),
            n_ranks=comm.size,
            n_nodes=layout.n_nodes if layout else 1,
            launcher="mpi",
            interval_s=0.01,
        )
        if writes
        else None
    )
    cases = [{"task": "sleep", "model": "none", "unit": "sample", "params": "{}"}] if layout else []
    path, status = gather_and_write(
        comm,
        traces=traces,
        time_offset=offset(comm.rank),
        windows=windows,
        rank_record=record,
        header=header,
        cases=cases,
        out=out if writes else None,
        stem="gather-test" if writes else None,
        piece=piece,
        layout=layout,
    )
    if root:
        print(path, status)


if __name__ == "__main__":
    main()
