"""Fixed overhead of `energy-hpc run` beyond the inference itself (issue 2).

Runs, as whole processes and interleaved, (A) a plain script that imports diffusers, loads the same tiny
pipeline with from_pretrained and runs the same warm-up + measured iterations, and (B) `energy-hpc run`
on a job doing exactly that with idle_seconds = 0 (the idle window is configured time, not overhead).
Overhead = median(B) - median(A): start-up, sensor discovery, sampler, windows, gather and write.

    .venv/bin/python benchmarks/run_overhead.py [--repeats 5] [--ranks 1] [--sensors auto]

Target: under 1 s on the 2-core CI machine. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
STEPS, BATCH, WARMUP, ITERS = 4, 2, 1, 5

PLAIN = """
import sys, torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
for i in range({n}):
    g = torch.Generator().manual_seed(i)
    pipe(prompt=["a", "b"][:{batch}], num_inference_steps={steps}, generator=g, output_type="np")
"""

JOB = """
[job]
name = "overhead"
[measure]
idle_seconds = 0
warmup = {warmup}
iterations = {iters}
interval_ms = 10
sensors = ["{sensors}"]
[[case]]
task = "text-to-image"
model = "{model}"
source = "local"
batch_size = {batch}
[case.options]
steps = {steps}
prompts = ["a", "b"]
"""


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--sensors", default="auto")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from energy_hpc.workloads.models import materialise_random

    with tempfile.TemporaryDirectory() as d:
        env = dict(
            os.environ,
            ENERGY_HPC_CACHE=d,
            TRANSFORMERS_VERBOSITY="error",
            DIFFUSERS_VERBOSITY="error",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )
        os.environ["ENERGY_HPC_CACHE"] = d
        model = materialise_random("tiny-sd")
        job = Path(d) / "job.toml"
        job.write_text(
            JOB.format(
                warmup=WARMUP, iters=ITERS, sensors=args.sensors, model=model, batch=BATCH, steps=STEPS
            )
        )
        plain = Path(d) / "plain.py"
        plain.write_text(PLAIN.format(n=WARMUP + ITERS, batch=BATCH, steps=STEPS))
        launch = [str(BIN / "mpiexec"), "-n", str(args.ranks)] if args.ranks > 1 else []
        a_cmd = [*launch, sys.executable, str(plain), str(model)]
        b_cmd = [*launch, str(BIN / "energy-hpc"), "-q", "run", str(job), "-o", str(Path(d) / "out")]
        timed(a_cmd, env)  # warm the page cache for both
        a, b = [], []
        for i in range(args.repeats):
            for which, cmd, acc in (("plain", a_cmd, a), ("energy-hpc", b_cmd, b)):
                acc.append(timed(cmd, env))
                print(f"repeat {i + 1}/{args.repeats} {which}: {acc[-1]:.2f} s", file=sys.stderr)
        out = {
            "ranks": args.ranks,
            "sensors": args.sensors,
            "repeats": args.repeats,
            "plain_median_s": statistics.median(a),
            "energy_hpc_median_s": statistics.median(b),
            "overhead_s": statistics.median(b) - statistics.median(a),
            "ratio": statistics.median(b) / statistics.median(a),
            "plain_s": [round(x, 3) for x in a],
            "energy_hpc_s": [round(x, 3) for x in b],
        }
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
