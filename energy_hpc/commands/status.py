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
    # a sweep over Slurm's GPU settings has several points per node count: name each point's setting
    settings = [_setting(p.gpu_freq, p.gpu_power_W) for p in manifest.points]
    width = max((len(s) for s in settings), default=0)
    head = f"  {'setting':<{width}}" if width else ""
    print(f"{'nodes':>5}{head}  {'state':<8} {'job':<10} {'tries':>5}  run file / note")
    for p, setting in zip(manifest.points, settings, strict=True):
        last = p.last
        detail = ", ".join(p.run_files) or p.note or "-"
        col = f"  {setting:<{width}}" if width else ""
        job = last.job_id if last else "-"
        print(f"{p.nodes:>5}{col}  {p.state:<8} {job:<10} {len(p.attempts):>5}  {detail}")
    return 0


def _setting(gpu_freq: str | None, gpu_power_W: int | None) -> str:
    """``gpu-freq=1200 gpu-power=300W``; "" where Slurm sets nothing at the point."""
    parts = ([f"gpu-freq={gpu_freq}"] if gpu_freq is not None else []) + (
        [f"gpu-power={gpu_power_W}W"] if gpu_power_W is not None else []
    )
    return " ".join(parts)
