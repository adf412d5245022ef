"""``energy-hpc status STUDY``: where each point of a sweep stands."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "show where each point of a sweep study stands (queued, running, done, failed, lost)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", type=Path, help="the study folder (it holds manifest.json)")
    parser.add_argument("--json", action="store_true", help="print the points as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from energy_hpc.slurm.sweep import Study, status

    study = Study(args.study)
    manifest = status(study)
    if args.json:
        print(
            json.dumps(
                {
                    "study": str(study.root),
                    "job": manifest.job_name,
                    "system": manifest.system,
                    "points": [asdict(p) for p in manifest.points],
                },
                indent=2,
            )
        )
        return 0
    print(f"# study {study.root}: job {manifest.job_name}, system {manifest.system}")
    print(f"{'nodes':>5}  {'state':<8} {'job':<10} {'tries':>5}  run file / note")
    for p in manifest.points:
        last = p.last
        detail = ", ".join(p.run_files) or p.note or "-"
        print(f"{p.nodes:>5}  {p.state:<8} {last.job_id if last else '-':<10} {len(p.attempts):>5}  {detail}")
    return 0
