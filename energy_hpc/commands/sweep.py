"""``energy-hpc sweep JOB --system S --nodes 1,2,4,8``: one Slurm job per node count, in a study."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from energy_hpc.commands._common import add_slurm_arguments, slurm_options

HELP = (
    "submit one Slurm job per node count (and --gpu-freq/--gpu-power value) into a study folder; "
    "re-running submits only what is missing or failed"
)

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    add_slurm_arguments(parser)
    parser.add_argument(
        "--nodes",
        "-N",
        required=True,
        metavar="N1,N2,...",
        help="node counts, comma-separated (e.g. 1,2,4,8)",
    )
    parser.add_argument(
        "--study",
        type=Path,
        metavar="DIR",
        help="the study folder (default: results/<job name>-<system>-sweep)",
    )


def run(args: argparse.Namespace) -> int:
    from energy_hpc.slurm.submit import load_job_name, sbatch
    from energy_hpc.slurm.sweep import (
        Study,
        parse_gpu_freqs,
        parse_gpu_powers,
        parse_node_counts,
        run_sweep,
        settings_grid,
    )
    from energy_hpc.slurm.systems import load_profile
    from energy_hpc.slurm.values import slurm_job_name

    profile = load_profile(args.system)
    counts = parse_node_counts(args.nodes)
    grid = settings_grid(
        parse_gpu_freqs(args.gpu_freq) if args.gpu_freq is not None else (),
        parse_gpu_powers(args.gpu_power) if args.gpu_power is not None else (),
    )
    job = args.job.expanduser().resolve()
    name = load_job_name(job)
    study = Study(args.study or Path("results") / f"{slurm_job_name(name)}-{profile.name}-sweep")

    def show(nodes: int, script: str) -> None:
        sys.stdout.write(f"# ===== {nodes} node(s): would submit =====\n{script}\n")

    actions = run_sweep(
        study,
        job,
        name,
        profile,
        counts,
        slurm_options(args, profile, device=False),
        submit=lambda script, cwd: sbatch(script, cwd=cwd),
        dry_run=args.dry_run,
        show=show,
        settings=grid,
    )
    if not args.dry_run:
        log.info("study: %s", study.root)
        print(f"{'nodes':>5}  {'action':<12} {'state':<8} {'job':<10} setting")
        for a in actions:
            print(f"{a.nodes:>5}  {a.action:<12} {a.state:<8} {a.job_id or '-':<10} {a.setting or '-'}")
    return 0
