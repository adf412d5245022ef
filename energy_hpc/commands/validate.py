"""energy-hpc validate: check a job file and list the cases it expands into."""

from __future__ import annotations

import argparse
import json

HELP = "check a job file and print the cases it expands into (nothing runs)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="job file (TOML)")
    p.add_argument("--json", action="store_true", help="print the cases as JSON")


def run(args: argparse.Namespace) -> int:
    from energy_hpc.spec import load_job

    job = load_job(args.job)
    rows = [{"case": c.index, **c.params(), "model_path": c.model_path} for c in job.cases]
    if args.json:
        print(
            json.dumps(
                {
                    "job": job.name,
                    "measure": {k: v for k, v in vars(job.measure).items() if k != "sensor_options"},
                    "cases": rows,
                },
                indent=2,
                default=str,
            )
        )
    else:
        print(
            f"{job.name}: {len(rows)} case(s), sensors {', '.join(job.measure.sensors)}, "
            f"{job.measure.warmup} warm-up + {job.measure.iterations} measured iterations each"
        )
        for r in rows:
            opts = {
                k: v
                for k, v in r.items()
                if k not in ("case", "task", "model", "source", "dtype", "batch_size", "model_path")
            }
            print(
                f"  {r['case']:>3}  {r['task']:<14} {r['model']:<24} {r['dtype']:<5} bs={r['batch_size']:<4} "
                f"{json.dumps(opts, default=str)[:100]}"
            )
    return 0
