"""Run under mpiexec by test_gather.py: every rank fabricates known traces (values that encode rank,
channel and sample, a time offset of its own, lengths that are not a multiple of the piece size)
and calls the real gather with small pieces. ``python gather_entry.py OUT PIECE``."""

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


def offset(rank: int) -> float:
    return 5000.0 + 123.25 * rank  # the rank's monotonic clock minus the run's epoch


def main() -> None:
    out, piece = Path(sys.argv[1]), int(sys.argv[2])
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
    record = RankRecord(
        host="h", node=0, local_rank=comm.rank, device_kind="cpu", status="ok", sensors="synthetic"
    )
    root = comm.rank == 0
    header = (
        RunHeader(
            job_name="gather-test",
            job_text="",
            job_path="",
            epoch_unix=time.time(),
            n_ranks=comm.size,
            n_nodes=1,
            launcher="mpi",
            interval_s=0.01,
        )
        if root
        else None
    )
    path, status = gather_and_write(
        comm,
        traces=traces,
        time_offset=offset(comm.rank),
        windows=windows,
        rank_record=record,
        header=header,
        cases=[],
        out=out if root else None,
        stem="gather-test" if root else None,
        piece=piece,
    )
    if root:
        print(path, status)


if __name__ == "__main__":
    main()
