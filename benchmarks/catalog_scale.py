"""The study catalogue at scale: a table over N run files from a fresh catalogue, and the rebuild's
throughput per rank with 1 and 2 ranks (issue 15, section 2; docs/performance.md, "Catalogue").

Builds N small synthetic run files with :class:`energy_hpc.store.RunWriter` (2 ranks, 2 cases, 3
iterations each, 2 s of 10 ms samples per channel; each its own epoch, so N runs), then, each in a child
process as a user would run it:

1. ``energy-hpc catalog DIR`` under ``mpiexec -n R`` for R in --ranks (the catalogue removed before each);
2. ``energy-hpc table DIR -f csv`` from the fresh catalogue (wall time of the whole command);
3. with --baseline, ``energy-hpc table`` over the first 300 files without a catalogue (per-file cost).

Each command's wall time and CPU time (user + system of the child and its children) are printed: on a
shared machine the CPU time is the steadier figure. ``--study DIR`` builds the runs into DIR (only those
missing) and keeps them, so that 10,000 runs are generated once and reused:

    .venv/bin/python benchmarks/catalog_scale.py --runs 1000 --dir /tmp
    .venv/bin/python benchmarks/catalog_scale.py --runs 10000 --study /tmp/study10k --baseline 0 --tables 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent


def build(path: Path, epoch: float, n_samples: int = 200) -> None:
    from energy_hpc.store import CHANNEL_FIELDS, RunHeader, RunWriter
    from energy_hpc.windows import WINDOW_DTYPE

    header = RunHeader(
        job_name="bench",
        job_text="",
        job_path="",
        epoch_unix=epoch,
        n_ranks=2,
        n_nodes=1,
        launcher="bench",
        contains_synthetic=True,
    )
    metas = []
    for r in range(2):
        m = {k: ("" if kind == "str" else 0) for k, (kind, _, _) in CHANNEL_FIELDS.items()}
        m.update(
            rank=r,
            host="n0",
            node=0,
            name=f"bench:{r}",
            scope="gpu",
            device=f"gpu{r}",
            backend="synthetic",
            method="synthetic",
            has_energy=1,
            update_period=0.01,
            power_kind="instant",
            n_samples=n_samples,
        )
        metas.append(m)
    wr = RunWriter(path, header, metas, n_samples)
    t = np.arange(n_samples) * 0.01
    for r in range(2):
        p = 200.0 + 50.0 * np.sin(t * (1 + r + epoch % 7))
        e = np.concatenate([[0.0], np.cumsum(np.diff(t) * (p[1:] + p[:-1]) / 2)])
        wr.write_channel(r, t, p.astype(np.float32), e, np.full(n_samples, np.nan))
    windows = []
    for r in range(2):
        for case in range(2):
            for i in range(3):
                start = 0.1 + case * 0.9 + i * 0.3
                windows.append(
                    (r, case, b"measure", i, start, start + 0.25, b"", 1.0, b"image", 0.0, b"", b"ok")
                )
    ranks = [
        {
            "host": "n0",
            "node": 0,
            "local_rank": r,
            "device_kind": "cuda",
            "device_name": "x",
            "device_uuid": "",
            "device_bus_id": f"0000:0{r + 1}:00.0",
            "visible_devices": "",
            "status": "ok",
            "error": "",
            "sensors": "synthetic",
            "sensors_skipped": "{}",
        }
        for r in range(2)
    ]
    cases = []
    for batch in (1, 4):
        p = {"task": "text-to-image", "model": "m", "dtype": "fp16", "batch_size": batch, "source": "random"}
        cases.append({**{k: p[k] for k in ("task", "model", "source", "dtype", "batch_size")}, "label": "",
                      "unit": "image", "params": json.dumps(p)})  # fmt: skip
    wr.write_tables(ranks, np.array(windows, dtype=WINDOW_DTYPE), cases)
    wr.close()


CPU = {"last": 0.0}  # CPU seconds of the last _cli command


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cli(*args: str, ranks: int = 0) -> tuple[float, subprocess.CompletedProcess[str]]:
    exe = BIN / "energy-hpc"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "energy_hpc"]
    if ranks:
        cmd = [str(BIN / "mpiexec"), "-n", str(ranks), *cmd]
    cpu = _children_cpu()
    started = time.perf_counter()
    p = subprocess.run([*cmd, *args], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{p.stderr}")
    CPU["last"] = _children_cpu() - cpu
    return time.perf_counter() - started, p


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--ranks", default="1,2", help="rank counts of the rebuild")
    ap.add_argument("--dir", default=None, help="where to build the study (a temporary folder inside)")
    ap.add_argument("--baseline", type=int, default=300, help="files reduced without catalogue (0: skip)")
    ap.add_argument(
        "--study", type=Path, default=None, help="build the runs here (missing ones only), keep them"
    )
    ap.add_argument("--tables", type=int, default=1, help="times the table from the fresh catalogue is made")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="catalog-scale-", dir=args.dir))
    study = args.study or work / "study"
    try:
        started = time.perf_counter()
        built = 0
        for i in range(args.runs):
            folder = study / f"n{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / f"run-{i:05d}.h5").exists():
                build(folder / f"run-{i:05d}.h5", epoch=1000.0 + i)
                built += 1
        print(f"built {built} run files in {time.perf_counter() - started:.1f} s", flush=True)
        if args.baseline:
            few = work / "few"
            few.mkdir()
            for f in sorted(study.rglob("*.h5"))[: args.baseline]:
                shutil.copy2(f, few / f.name)
            seconds, _ = _cli("table", str(few), "-f", "csv")
            n = min(args.baseline, args.runs)
            print(
                f"table without catalogue, {n} files: {seconds:.2f} s ({1000 * seconds / n:.1f} ms a file), "
                f"CPU {CPU['last']:.2f} s, {_load()}"
            )
        for ranks in (int(r) for r in args.ranks.split(",")):
            shutil.rmtree(study / ".energy-hpc-catalog", ignore_errors=True)
            seconds, _ = _cli("catalog", str(study), ranks=ranks)
            print(
                f"catalog rebuild, {ranks} rank(s): {seconds:.1f} s, {args.runs / seconds:.0f} files/s, "
                f"{args.runs / seconds / ranks:.0f} files/s per rank; CPU {CPU['last']:.1f} s "
                f"({1000 * CPU['last'] / args.runs:.1f} ms a file), {_load()}",
                flush=True,
            )
        for _ in range(args.tables):
            seconds, table = _cli("table", str(study), "-f", "csv")
            assert "not up to date" not in table.stderr and "reduced one by one" not in table.stderr
            print(
                f"table from the fresh catalogue, {args.runs} files: {seconds:.2f} s (whole command), "
                f"CPU {CPU['last']:.2f} s, {_load()}",
                flush=True,
            )
        seconds, _ = _cli("catalog", str(study))
        print(
            f"catalog refresh with nothing new, {args.runs} files: {seconds:.2f} s, CPU {CPU['last']:.2f} s"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
