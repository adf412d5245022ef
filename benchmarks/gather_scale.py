"""Gather at scale: rank 0's peak memory and write speed when N ranks send large traces.

Every rank fabricates one channel of ``--samples`` samples (synthetic ChannelTrace objects, no
sensors, no inference) and calls :func:`energy_hpc.gather.gather_and_write` under mpi4py, exactly as
``energy-hpc run`` does at the end of a run. Rank 0 then writes the same bytes with plain h5py from
one process (same layout, same chunks: the baseline), and reports:

- ``peak_rss_MB``: rank 0's peak resident memory over the whole run (getrusage), and the part the
  gather added on top of what rank 0 held before it (its own trace);
- ``gather_s`` / ``gather_MBps``: wall time from entering the gather to the file in place;
- ``h5py_s`` / ``h5py_MBps``: the baseline; ``ratio`` = gather_MBps / h5py_MBps (target >= 0.5).

Targets (docs/performance.md, "Gather at scale"): with 32 ranks x 1,000,000 samples, rank 0's peak
under 512 MB and ratio >= 0.5. Files are deleted afterwards.

    .venv/bin/mpiexec -n 32 .venv/bin/python benchmarks/gather_scale.py --samples 1000000 --out /tmp/gs

With ``--nodes N`` the ranks are split into N pretend nodes (as ENERGY_HPC_PRETEND_NODES does) and
the run is written as ``--layout`` says (default: per node when N > 1, else one file); the row then
reports ``gather_s`` (rank 0: from the end of measuring to the whole run on disk, node files and index)
and rank 0's peak memory, without the h5py baseline:

    .venv/bin/mpiexec -n 64 .venv/bin/python benchmarks/gather_scale.py --samples 100000 --nodes 16

Each of ``--repeats`` pairs starts from a clean page cache (``os.sync``) and alternates which side
goes first; the medians are reported, with every pair's ratio beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fabricate(rank: int, n: int):
    import numpy as np

    from energy_hpc.telemetry.base import ChannelInfo, Scope
    from energy_hpc.telemetry.sampler import ChannelTrace

    info = ChannelInfo(
        name=f"synthetic:bench{rank}",
        scope=Scope.GPU,
        device=f"bench{rank}",
        backend="synthetic",
        has_power=True,
        has_energy=True,
        synthetic=True,
        label="SYNTHETIC benchmark trace",
    )
    t = np.arange(n, dtype=np.float64) * 0.01 + rank
    power = 100.0 + 50.0 * np.sin(t)
    return ChannelTrace(info, t, power, np.cumsum(power) * 0.01, np.full(n, np.nan))


def h5py_baseline(path: Path, traces_like, n_ranks: int, n: int) -> float:
    """The same bytes, same layout and chunks as the run file's /traces, from one process."""
    import h5py
    import numpy as np

    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        chunk = (1, int(min(max(n, 1), 262_144)))
        ds = {
            k: f.create_dataset(k, (n_ranks, n), dtype=dt, chunks=chunk, fillvalue=np.nan)
            for k, dt in (("time", "f8"), ("power", "f4"), ("energy", "f8"), ("sensor_time", "f8"))
        }
        tr = traces_like
        for i in range(n_ranks):
            ds["time"][i, :] = tr.time
            ds["power"][i, :] = tr.power
            ds["energy"][i, :] = tr.energy
            ds["sensor_time"][i, :] = tr.sensor_time
    return time.perf_counter() - t0


def quiet_wait(comm) -> None:
    """Wait for every rank without spinning: MPICH's blocking barrier busy-polls, and 31 spinning
    ranks on an oversubscribed node would starve the one rank that works (the run never spins)."""
    req = comm.comm.Ibarrier()
    while not req.Test():
        time.sleep(0.01)


def index_cost(args: argparse.Namespace) -> int:
    """Rank 0's last step on its own: the index of a run of N nodes x 8 ranks x 4 channels (its channel
    table, /ranks, and the virtual datasets), and the pickled size of the reports it receives."""
    import pickle

    from energy_hpc.store import NodePart, RankRecord, RunHeader, RunWriter, channel_record

    trace = fabricate(0, 10)
    args.out.mkdir(parents=True, exist_ok=True)
    for n_nodes in args.index_cost:
        ranks_per_node, per_rank, windows_per_rank = 8, 4, 200
        t0 = time.perf_counter()
        channels, parts, ranks = [], [], []
        for k in range(n_nodes):
            node_channels = [
                channel_record(trace, k * ranks_per_node + r, f"h+p{k}", k)
                for r in range(ranks_per_node)
                for _ in range(per_rank)
            ]
            n_w = ranks_per_node * windows_per_rank
            parts.append(
                NodePart(f"x.nodes/node-{k:05d}.h5", len(node_channels), 360_000, len(channels), n_w, n_w * k)
            )
            channels += node_channels
            ranks += [
                RankRecord(host=f"h+p{k}", node=k, local_rank=r, status="ok") for r in range(ranks_per_node)
            ]
        report_bytes = len(pickle.dumps({"channels": channels[:32], "ranks": ranks[:8]}))
        t1 = time.perf_counter()
        header = RunHeader("idx", "", "", 0.0, len(ranks), n_nodes, "mpi")
        path = args.out / f"index-{n_nodes}.h5"
        w = RunWriter(path, header, channels, 360_000, parts=parts)
        w.begin_windows(n_nodes * ranks_per_node * windows_per_rank)
        w.write_tables(ranks, None, [])
        w.close()
        t2 = time.perf_counter()
        row = {
            "nodes": n_nodes,
            "ranks": len(ranks),
            "channels": len(channels),
            "report_bytes_per_node": report_bytes,
            "index_write_s": round(t2 - t1, 3),
            "index_MB": round(path.stat().st_size / 1e6, 1),
            "peak_rss_MB": round(peak_mb(), 1),
            "build_records_s": round(t1 - t0, 3),
        }
        print(json.dumps(row), flush=True)
        path.unlink()
    return 0


def by_nodes(args: argparse.Namespace) -> int:
    """The gather on ``args.nodes`` pretend nodes: rank 0's time from the end of measuring to the
    complete run on disk, and its peak memory."""
    from energy_hpc.context import MpiComm

    comm = MpiComm()
    import h5py  # noqa: F401 - imported before anything is timed (a real run has it from its spills)
    import numpy as np

    from energy_hpc import settings
    from energy_hpc.gather import PIECE_SAMPLES, gather_and_write
    from energy_hpc.store import RankRecord, RunHeader, nodes_folder
    from energy_hpc.windows import WINDOW_DTYPE

    layout = comm.split_nodes(args.nodes)
    mode = args.layout or ("nodes" if layout.n_nodes > 1 else "single")
    trace = fabricate(comm.rank, args.samples)
    root = comm.rank == 0
    if root:
        args.out.mkdir(parents=True, exist_ok=True)
    quiet_wait(comm)
    before = rss_mb()
    record = RankRecord(
        host=f"h+p{layout.node_index}",
        node=layout.node_index,
        local_rank=layout.local_rank,
        device_kind="cpu",
        status="ok",
        sensors="synthetic",
    )
    times, status, file_bytes = [], "", 0
    with settings.override(gather_layout=mode):
        for k in range(args.repeats):
            stem = f"gather-nodes-{k}"
            header = RunHeader(
                job_name="gather-scale",
                job_text="",
                job_path="",
                epoch_unix=time.time(),
                n_ranks=comm.size,
                n_nodes=layout.n_nodes,
                launcher="mpi",
                interval_s=0.01,
            )
            if root:
                os.sync()
            quiet_wait(comm)
            t0 = time.perf_counter()
            path, status = gather_and_write(
                comm,
                traces=[trace],
                time_offset=0.0,
                windows=np.zeros(0, WINDOW_DTYPE),
                rank_record=record,
                header=header,
                cases=[],
                out=args.out,
                stem=stem,
                piece=args.piece or PIECE_SAMPLES,
                layout=layout,
            )
            dt = time.perf_counter() - t0
            quiet_wait(comm)
            if root:
                times.append(dt)
                parts = nodes_folder(args.out, None, stem)
                file_bytes = path.stat().st_size + sum(p.stat().st_size for p in parts.glob("*.h5"))
                if not (args.keep and k == args.repeats - 1):
                    os.sync()
                    path.unlink()
                    shutil.rmtree(parts, ignore_errors=True)
            quiet_wait(comm)
    if root:
        nbytes = comm.size * args.samples * (8 + 4 + 8 + 8)
        g = statistics.median(times)
        row = {
            "ranks": comm.size,
            "nodes": layout.n_nodes,
            "layout": mode,
            "samples": args.samples,
            "payload_MB": round(nbytes / 1e6, 1),
            "files_MB": round(file_bytes / 1e6, 1),
            "repeats": args.repeats,
            "gather_s": round(g, 3),
            "gather_s_all": [round(x, 3) for x in times],
            "gather_MBps": round(nbytes / 1e6 / g, 1),
            "rss_before_gather_MB": round(before, 1),
            "peak_rss_MB": round(peak_mb(), 1),
            "status": status,
        }
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(args.out, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/energy-hpc-gather-scale"))
    ap.add_argument("--piece", type=int, default=None, help="samples per message (default: the gather's)")
    ap.add_argument("--repeats", type=int, default=3, help="paired measurements; medians are reported")
    ap.add_argument("--keep", action="store_true", help="keep the files of the last repeat")
    ap.add_argument("--nodes", type=int, default=0, help="pretend nodes to split the ranks into (0: off)")
    ap.add_argument(
        "--layout",
        choices=("auto", "single", "nodes"),
        default=None,
        help="with --nodes: how the run is written",
    )
    ap.add_argument(
        "--index-cost",
        type=int,
        nargs="+",
        default=None,
        metavar="NODES",
        help="no MPI: time rank 0's index alone for these node counts (8 ranks, 4 channels, 200 windows "
        "per rank; the node files are not needed to write it)",
    )
    args = ap.parse_args()
    if args.index_cost:
        return index_cost(args)
    if args.nodes:
        return by_nodes(args)

    from energy_hpc.context import MpiComm

    comm = MpiComm()
    import h5py  # noqa: F401 - imported before either side is timed (a real run has it from its spills)
    import numpy as np

    from energy_hpc.gather import PIECE_SAMPLES, gather_and_write
    from energy_hpc.store import RankRecord, RunHeader
    from energy_hpc.windows import WINDOW_DTYPE

    trace = fabricate(comm.rank, args.samples)
    root = comm.rank == 0
    if root:
        args.out.mkdir(parents=True, exist_ok=True)
    quiet_wait(comm)
    before = rss_mb()
    record = RankRecord(
        host="h", node=0, local_rank=comm.rank, device_kind="cpu", status="ok", sensors="synthetic"
    )
    gather_times, h5_times, status, file_bytes = [], [], "", 0

    def run_gather(k: int):
        header = (
            RunHeader(
                job_name="gather-scale",
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
        t0 = time.perf_counter()
        path, st = gather_and_write(
            comm,
            traces=[trace],
            time_offset=0.0,
            windows=np.zeros(0, WINDOW_DTYPE),
            rank_record=record,
            header=header,
            cases=[],
            out=args.out if root else None,
            stem=f"gather-scale-{k}" if root else None,
            piece=args.piece or PIECE_SAMPLES,
        )
        return time.perf_counter() - t0, path, st

    def run_baseline(k: int):
        if not root:
            return 0.0, None
        base = args.out / f"baseline-{k}.h5"
        return h5py_baseline(base, trace, comm.size, args.samples), base

    # Each measurement starts from the same disk state: nothing dirty in the page cache (os.sync) and
    # the previous file deleted. On this VM's disk, a second 1 GB file written while the first still
    # exists took 2-4x longer than the first, whichever side wrote it. The order alternates too.
    for k in range(args.repeats):
        for what in ("gather", "h5py") if k % 2 == 0 else ("h5py", "gather"):
            if root:
                os.sync()
            quiet_wait(comm)
            if what == "gather":
                dt, path, status = run_gather(k)
                if root:
                    gather_times.append(dt)
                    file_bytes = path.stat().st_size
            else:
                dt, path = run_baseline(k)
                if root:
                    h5_times.append(dt)
            quiet_wait(comm)
            if root and not (args.keep and k == args.repeats - 1):
                os.sync()
                path.unlink()
    if root:
        gather_peak = peak_mb()
        nbytes = comm.size * args.samples * (8 + 4 + 8 + 8)
        g, h = statistics.median(gather_times), statistics.median(h5_times)
        row = {
            "ranks": comm.size,
            "samples": args.samples,
            "payload_MB": round(nbytes / 1e6, 1),
            "file_MB": round(file_bytes / 1e6, 1),
            "repeats": args.repeats,
            "gather_s": round(g, 2),
            "gather_s_all": [round(x, 2) for x in gather_times],
            "gather_MBps": round(nbytes / 1e6 / g, 1),
            "h5py_s": round(h, 2),
            "h5py_s_all": [round(x, 2) for x in h5_times],
            "h5py_MBps": round(nbytes / 1e6 / h, 1),
            "ratio": round(h / g, 2),
            "ratios_paired": [round(b / a, 2) for a, b in zip(gather_times, h5_times, strict=True)],
            "rss_before_gather_MB": round(before, 1),
            "peak_rss_MB": round(gather_peak, 1),
            "piece_samples": args.piece or PIECE_SAMPLES,
            "status": status,
        }
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(args.out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
