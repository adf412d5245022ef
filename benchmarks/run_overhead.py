"""Fixed overhead of `energy-hpc run` beyond the inference itself (issue 2).

Runs, as whole processes and interleaved, (A) a plain script that imports diffusers, loads the same tiny
pipeline with from_pretrained and runs the same warm-up + measured iterations, and (B) `energy-hpc run`
on a job doing exactly that with idle_seconds = 0 (the idle window is configured time, not overhead).
Overhead = median(B) - median(A): start-up, sensor discovery, sampler, windows, gather and write.

    .venv/bin/python benchmarks/run_overhead.py [--repeats 5] [--ranks 1] [--sensors auto] [--threads N]
        [--tree DIR] [--split]

Besides the medians of each side it reports the median of the paired ratios (B/A of each pair, robust
to the machine's load drifting between pairs), the CPU time (user + system) of each side's processes,
which other work on a shared machine disturbs less than wall time, and the load average before and
after. ``--threads N`` sets OMP_NUM_THREADS for both sides (default: torch's own choice). ``--tree DIR``
adds a third arm, interleaved with the others: `energy-hpc run` from another copy of the package.
``--split`` (one rank) starts each side through ``python -c`` with an atexit hook registered first, so
it runs last, and splits each wall time into the work (start to the last atexit handler: imports,
loading, inference, and for energy-hpc its measuring and writing) and the interpreter's teardown after
it, which `energy-hpc` shortens (docs/performance.md).

Target (issue 15): ratio <= 1.03 and under 0.3 s added. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
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


# the first atexit hook registered runs last: it notes when the work was done (--split)
AT_EXIT = (
    "import atexit, os, sys, time\n"
    "atexit.register(lambda: open(os.environ['RUN_OVERHEAD_ATEXIT'], 'w').write(repr(time.time())))\n"
)
# the plain script under `python -c` (argv: script, model)
PLAIN_C = "sys.argv = sys.argv[1:]; exec(compile(open(sys.argv[0]).read(), sys.argv[0], 'exec'))"
# the installed `energy-hpc` under `python -c`
INSTALLED_C = "sys.argv[0] = 'energy-hpc'; from energy_hpc.cli import main; sys.exit(main())"
# `energy-hpc` from another copy of the package: the editable install's finder is taken out first
TREE_C = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
    "sys.path.insert(0, {tree!r}); sys.argv[0] = 'energy-hpc'; from energy_hpc.cli import main; "
    "sys.exit(main())"
)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], env: dict[str, str], at_exit: Path | None = None) -> tuple[float, float, float]:
    """Wall and CPU seconds (user + system, the command and its children) of one run of ``cmd``, and
    with ``at_exit`` the wall seconds from its last atexit handler to its end (else NaN)."""
    if at_exit is not None:
        at_exit.unlink(missing_ok=True)
    c0, t0 = _children_cpu(), time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt, cpu, u1 = time.perf_counter() - t0, _children_cpu() - c0, time.time()
    if r.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    teardown = u1 - float(at_exit.read_text()) if at_exit is not None else math.nan
    return dt, cpu, teardown


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--sensors", default="auto")
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both sides (default: unset)")
    ap.add_argument(
        "--tree",
        type=Path,
        help="a folder holding another version's energy_hpc package (e.g. `git archive HEAD energy_hpc | "
        "tar -x -C DIR`): run it as a third arm, interleaved, to compare before and after a change",
    )
    ap.add_argument(
        "--split", action="store_true", help="split each wall time into work and teardown (one rank)"
    )
    args = ap.parse_args()
    if args.split and args.ranks > 1:
        ap.error("--split measures one process: use it with --ranks 1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from energy_hpc.workloads.models import materialise_random

    with tempfile.TemporaryDirectory() as d:
        at_exit = Path(d) / "at_exit" if args.split else None
        env = dict(
            os.environ,
            ENERGY_HPC_CACHE=d,
            TRANSFORMERS_VERBOSITY="error",
            DIFFUSERS_VERBOSITY="error",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            RUN_OVERHEAD_ATEXIT=str(at_exit),
        )
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
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
        run_args = ["-q", "run", str(job), "-o", str(Path(d) / "out")]
        py = [*launch, sys.executable, "-c"]
        pre = AT_EXIT if args.split else ""
        arms = {
            "plain": [*py, pre + PLAIN_C, str(plain), str(model)]
            if args.split
            else [*launch, sys.executable, str(plain), str(model)],
            "energy_hpc": [*py, pre + INSTALLED_C, *run_args]
            if args.split
            else [*launch, str(BIN / "energy-hpc"), *run_args],
        }
        if args.tree:
            arms["tree"] = [*py, pre + TREE_C.format(tree=str(args.tree.resolve())), *run_args]
        for cmd in arms.values():  # warm the page cache for every arm
            timed(cmd, env, at_exit)
        load_before = os.getloadavg()[0]
        wall: dict[str, list[float]] = {k: [] for k in arms}
        cpu: dict[str, list[float]] = {k: [] for k in arms}
        down: dict[str, list[float]] = {k: [] for k in arms}
        for i in range(args.repeats):
            for which, cmd in arms.items():
                w, c, t = timed(cmd, env, at_exit)
                wall[which].append(w)
                cpu[which].append(c)
                down[which].append(t)
                print(
                    f"repeat {i + 1}/{args.repeats} {which}: {w:.2f} s (cpu {c:.2f} s, teardown {t:.2f} s)",
                    file=sys.stderr,
                )
        med = statistics.median
        a = wall["plain"]
        out: dict[str, object] = {
            "ranks": args.ranks,
            "sensors": args.sensors,
            "threads": args.threads,
            "repeats": args.repeats,
            "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "plain_median_s": med(a),
            "plain_cpu_median_s": med(cpu["plain"]),
        }
        if args.split:
            out["plain_work_median_s"] = med(x - y for x, y in zip(a, down["plain"], strict=True))
            out["plain_teardown_median_s"] = med(down["plain"])
        for arm in [k for k in arms if k != "plain"]:
            prefix = "" if arm == "energy_hpc" else "tree_"
            b = wall[arm]
            out |= {
                f"{arm}_median_s": med(b),
                f"{prefix}overhead_s": med(b) - med(a),
                f"{prefix}ratio": med(b) / med(a),
                f"{prefix}paired_ratio_median": med(y / x for x, y in zip(a, b, strict=True)),
                f"{prefix}paired_added_median_s": med(y - x for x, y in zip(a, b, strict=True)),
                f"{arm}_cpu_median_s": med(cpu[arm]),
                f"{prefix}cpu_added_paired_median_s": med(
                    y - x for x, y in zip(cpu["plain"], cpu[arm], strict=True)
                ),
            }
            if args.split:  # the work alone: each side's wall time less its teardown, paired
                work_a = [x - y for x, y in zip(a, down["plain"], strict=True)]
                work_b = [x - y for x, y in zip(b, down[arm], strict=True)]
                out |= {
                    f"{arm}_work_median_s": med(work_b),
                    f"{arm}_teardown_median_s": med(down[arm]),
                    f"{prefix}work_paired_ratio_median": med(
                        y / x for x, y in zip(work_a, work_b, strict=True)
                    ),
                    f"{prefix}work_paired_added_median_s": med(
                        y - x for x, y in zip(work_a, work_b, strict=True)
                    ),
                }
        for arm in arms:
            out[f"{arm}_s"] = [round(x, 3) for x in wall[arm]]
            out[f"{arm}_cpu_s"] = [round(x, 3) for x in cpu[arm]]
            if args.split:
                out[f"{arm}_teardown_s"] = [round(x, 3) for x in down[arm]]
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
