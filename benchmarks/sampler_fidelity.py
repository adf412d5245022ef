"""Sampler fidelity under real inference: does a 10 ms sampler keep time, and what does it cost?

While the main thread runs a real torch forward loop on the CPU (a small transformer encoder),
a :class:`~energy_hpc.telemetry.sampler.Sampler` reads a sensor every ``--interval`` seconds. Blocks
with and without the sampler are interleaved (A B A B ...) so that drift of the machine (other
jobs, frequency) falls on both; the slowdown is the median over pairs of time(B)/time(A) - 1.

Targets (docs/performance.md, "Sampler fidelity"): median achieved interval within 5 % of the
request, p99 below 20 ms, inference slowdown below 1 %.

    .venv/bin/python benchmarks/sampler_fidelity.py                 # fake NVML sensor, 10 ms
    .venv/bin/python benchmarks/sampler_fidelity.py --sensor synthetic --pairs 8 --block-s 1.5
    .venv/bin/python benchmarks/sampler_fidelity.py --sensor synthetic --mode process   # what `run` uses
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_sensor(kind: str):
    from energy_hpc.telemetry.base import SensorContext

    if kind == "synthetic":
        from energy_hpc.telemetry.synthetic import SyntheticSensor

        return SyntheticSensor(n_channels=1, update_period_s=0.0)
    if kind == "fake-nvml":
        from energy_hpc.telemetry import nvml
        from energy_hpc.telemetry.emulated.pynvml_api import h100_node, make_pynvml

        return nvml.open_sensor(
            SensorContext(options={"nvml": {"probe_reads": 0}}), library=make_pynvml(h100_node(1))
        )
    raise SystemExit(f"unknown sensor {kind}")


def make_model(threads: int, d_model: int, layers: int, batch: int, seq: int):
    import torch

    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    layer = torch.nn.TransformerEncoderLayer(
        d_model=d_model, nhead=4, dim_feedforward=4 * d_model, batch_first=True
    )
    model = torch.nn.TransformerEncoder(layer, num_layers=layers).eval()
    x = torch.randn(batch, seq, d_model)
    return model, x


def run_block(model, x, seconds: float) -> tuple[float, int]:
    """Forward passes for about ``seconds``; returns (s per pass, passes)."""
    import torch

    n, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        while True:
            model(x)
            n += 1
            if time.perf_counter() - t0 >= seconds:
                break
    return (time.perf_counter() - t0) / n, n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensor", choices=("fake-nvml", "synthetic"), default="fake-nvml")
    ap.add_argument("--interval", type=float, default=0.010, help="requested sampling interval (s)")
    ap.add_argument("--pairs", type=int, default=10, help="interleaved A/B block pairs")
    ap.add_argument("--block-s", type=float, default=1.5, help="seconds per block")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (0: torch default; 1 leaves a core to the rest of a 2-core box)",
    )
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument(
        "--null",
        action="store_true",
        help="A/A control: no sampler in either block (measures the noise floor of the slowdown)",
    )
    ap.add_argument(
        "--mode",
        choices=("thread", "process"),
        default="thread",
        help="thread: a Sampler thread in this process; process: the sampling child process "
        "energy-hpc run uses by default (synthetic sensor only: fakes cannot cross processes)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.mode == "process" and args.sensor != "synthetic":
        ap.error("--mode process needs --sensor synthetic (a fake library cannot be handed to the child)")

    import torch

    from energy_hpc.telemetry.sampler import Sampler

    model, x = make_model(args.threads, args.d_model, args.layers, args.batch, args.seq)
    run_block(model, x, 1.0)  # warm-up: allocator, caches, frequency

    ratios, intervals, per_pass = [], [], {"off": [], "on": []}
    n_samples = 0
    for k in range(args.pairs):
        order = ("off", "on") if k % 2 == 0 else ("on", "off")  # alternate who goes first
        pair = {}
        for cond in order:
            if cond == "on" and not args.null:
                if args.mode == "process":
                    from energy_hpc.telemetry.base import SensorContext
                    from energy_hpc.telemetry.sampler_proc import ProcessSampler

                    sampler = ProcessSampler().open([args.sensor], SensorContext(), args.interval).start()
                else:
                    sampler = Sampler([make_sensor(args.sensor)], args.interval).start()
                pair[cond], _ = run_block(model, x, args.block_s)
                sampler.stop()
                t = sampler.traces()[0].time
                intervals.append(np.diff(t[1:-1]))  # drop the start()/stop() bracketing samples
                n_samples += len(t)
                sampler.close_sensors()
            else:
                pair[cond], _ = run_block(model, x, args.block_s)
            per_pass[cond].append(pair[cond])
        ratios.append(pair["on"] / pair["off"])
    iv = np.concatenate(intervals) * 1e3 if intervals else np.full(1, np.nan)
    result = {
        "mode": args.mode,
        "sensor": args.sensor,
        "interval_ms": args.interval * 1e3,
        "pairs": args.pairs,
        "block_s": args.block_s,
        "torch_threads": torch.get_num_threads(),
        "model": f"TransformerEncoder d={args.d_model} L={args.layers} x[{args.batch},{args.seq}]",
        "samples": int(n_samples),
        "median_interval_ms": float(np.median(iv)),
        "p99_interval_ms": float(np.percentile(iv, 99)),
        "max_interval_ms": float(iv.max()),
        "slowdown_pct_median": (statistics.median(ratios) - 1) * 100,
        "slowdown_pct_mean": (statistics.fmean(ratios) - 1) * 100,
        "pass_ms_off": statistics.median(per_pass["off"]) * 1e3,
        "pass_ms_on": statistics.median(per_pass["on"]) * 1e3,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v:.3f}" if isinstance(v, float) else f"{k:>22}: {v}")
    ok = (
        abs(result["median_interval_ms"] / result["interval_ms"] - 1) <= 0.05
        and result["p99_interval_ms"] < 20.0
        and result["slowdown_pct_median"] < 1.0
    )
    print("targets met" if ok else "targets NOT met", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
