"""Reducing a run too big for memory: time and peak memory against a plain h5py read of the same bytes.

Builds a run file with >= 1 GB of traces directly with :class:`energy_hpc.store.RunWriter` (synthetic
data, written block by block: 16 channels x 4M samples of time f8 + power f4 + energy f8 = 1.28 GB; the
unused ``sensor_time`` column is never written, so HDF5 allocates nothing for it), then in separate
child processes (so each has its own peak RSS):

1. ``read``: h5py reads the same three columns of every channel in the same 1M-sample chunks;
2. ``reduce``: ``energy_table`` reduces the file to its table (200 windows per channel + idle).

Each is measured cold (page cache dropped with ``echo 3 > /proc/sys/vm/drop_caches`` when that is
allowed; the output says whether it was) and warm. Targets (docs/performance.md, "Analysis: reducing
large runs"): reduction at >= half the h5py read speed, peak RSS < 1 GB. The file is deleted at the end.

    .venv/bin/python benchmarks/reduce_large_run.py --dir /tmp            # full size
    .venv/bin/python benchmarks/reduce_large_run.py --samples 200000     # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BLOCK = 1 << 20


def build(path: Path, n_channels: int, n_samples: int, dt: float = 0.001) -> int:
    from energy_hpc.store import CHANNEL_FIELDS, RunHeader, RunWriter
    from energy_hpc.windows import WINDOW_DTYPE

    header = RunHeader(
        job_name="bench",
        job_text="",
        job_path="",
        epoch_unix=0.0,
        n_ranks=n_channels,
        n_nodes=max(n_channels // 8, 1),
        launcher="bench",
        contains_synthetic=True,
    )
    metas = []
    for r in range(n_channels):
        m = {k: ("" if kind == "str" else 0) for k, (kind, _, _) in CHANNEL_FIELDS.items()}
        m.update(
            rank=r,
            host=f"n{r // 8}",
            node=r // 8,
            name=f"bench:{r}",
            scope="gpu",
            device=f"gpu{r}",
            backend="synthetic",
            method="synthetic",
            shared_with="",
            has_energy=1,
            update_period=0.001,
            energy_resolution=1e-6,
            power_kind="instant",
            label="",
            note="",
            n_samples=n_samples,
        )
        metas.append(m)
    wr = RunWriter(path, header, metas, n_samples)
    for i in range(n_channels):
        e0 = 0.0
        for s in range(0, n_samples, BLOCK):
            e = min(n_samples, s + BLOCK)
            t = np.arange(s, e) * dt
            p = (200.0 + 100.0 * np.sin(t * (1 + 0.1 * i))).astype(np.float32)
            en = e0 + np.cumsum(p.astype(np.float64)) * dt
            e0 = float(en[-1])
            wr.write_channel(i, t, p, en, np.full(e - s, np.nan), start=s)
    t_end = n_samples * dt
    wins = [
        (r, -1, b"idle", -1, 0.5, 0.5 + t_end * 0.02, b"", 0.0, b"", 0.0, b"", b"ok")
        for r in range(n_channels)
    ]
    edges = np.linspace(t_end * 0.05, t_end * 0.99, 201)
    for r in range(n_channels):
        wins += [
            (r, 0, b"measure", k, edges[k], edges[k + 1] - 0.01, b"", 1.0, b"image", 0.0, b"", b"ok")
            for k in range(200)
        ]
    cases = [
        {
            "task": "text-to-image",
            "model": "bench",
            "source": "random",
            "dtype": "fp16",
            "batch_size": 1,
            "label": "",
            "unit": "image",
            "params": json.dumps({"task": "text-to-image", "model": "bench"}),
        }
    ]
    ranks = [
        {
            "host": f"n{r // 8}",
            "node": r // 8,
            "local_rank": r % 8,
            "device_kind": "cuda",
            "device_name": "",
            "device_uuid": "",
            "device_bus_id": "",
            "visible_devices": "",
            "status": "ok",
            "error": "",
            "sensors": "synthetic",
            "sensors_skipped": "{}",
        }
        for r in range(n_channels)
    ]
    wr.write_tables(ranks, np.array(wins, dtype=WINDOW_DTYPE), cases)
    wr.close()
    return n_channels * n_samples * (8 + 4 + 8)


def step_read(path: Path) -> dict:
    import h5py

    t0 = time.perf_counter()
    total = 0
    with h5py.File(path, "r") as f:
        g = f["traces"]
        n = g["n_samples"][()]
        for i in range(len(n)):
            for s in range(0, int(n[i]), BLOCK):
                e = min(int(n[i]), s + BLOCK)
                for k in ("time", "power", "energy"):
                    a = g[k][i, s:e]
                    total += a.nbytes
    return {"seconds": time.perf_counter() - t0, "bytes": total}


def step_reduce(path: Path) -> dict:
    t0 = time.perf_counter()
    from energy_hpc.analysis.table import energy_table

    t1 = time.perf_counter()
    rows = energy_table([path])
    if not (rows and rows[0]["energy_J"] == rows[0]["energy_J"] and rows[0]["method"] != "none"):
        raise SystemExit(
            f"the reduction produced no energy (method {rows[0]['method'] if rows else '-'}): "
            "the benchmark file is wrong, the timing would mean nothing"
        )
    return {
        "seconds": time.perf_counter() - t1,
        "import_seconds": t1 - t0,
        "energy_J": rows[0]["energy_J"],
        "units": rows[0]["units"],
    }


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def child(step: str, path: Path) -> dict:
    r = subprocess.run([sys.executable, __file__, "--step", step, str(path)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    out = json.loads(r.stdout)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--keep", action="store_true", help="keep the file")
    ap.add_argument("--step", choices=("read", "reduce"))
    ap.add_argument("path", nargs="?")
    a = ap.parse_args()
    if a.step:
        res = step_read(Path(a.path)) if a.step == "read" else step_reduce(Path(a.path))
        res["max_rss_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    path = Path(a.dir) / f"bench-reduce-{os.getpid()}.h5"
    try:
        t0 = time.perf_counter()
        nbytes = build(path, a.channels, a.samples)
        build_s = time.perf_counter() - t0
        result = {
            "channels": a.channels,
            "samples": a.samples,
            "trace_bytes": nbytes,
            "file_bytes": path.stat().st_size,
            "build_seconds": round(build_s, 1),
        }
        for label in ("cold", "warm"):
            cold = label == "cold"
            dropped = drop_caches() if cold else None
            rd = child("read", path)
            if cold:
                drop_caches()
            red = child("reduce", path)
            result[label] = {
                "caches_dropped": dropped,
                "h5py_read_s": round(rd["seconds"], 2),
                "h5py_read_MBps": round(rd["bytes"] / rd["seconds"] / 1e6, 1),
                "h5py_read_max_rss_MiB": round(rd["max_rss_MiB"]),
                "reduce_s": round(red["seconds"], 2),
                "reduce_MBps": round(rd["bytes"] / red["seconds"] / 1e6, 1),
                "reduce_import_s": round(red["import_seconds"], 2),
                "reduce_max_rss_MiB": round(red["max_rss_MiB"]),
                "speed_ratio": round(rd["seconds"] / red["seconds"], 3),
            }
        print(json.dumps(result, indent=2))
    finally:
        if not a.keep:
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
