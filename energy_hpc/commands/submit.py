"""``energy-hpc submit JOB --system S --nodes N``: render an sbatch script and submit it."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from energy_hpc.commands._common import add_slurm_arguments, slurm_options, warn_once

HELP = "render a job file into an sbatch script for a system (frontier, perlmutter, generic) and submit it"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    add_slurm_arguments(parser)
    parser.add_argument("--nodes", "-N", type=int, required=True, help="number of nodes")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="RESULTS_DIR",
        help="where the run file, script and Slurm log go (default: results/<job name>)",
    )


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    from energy_hpc.errors import OutputError
    from energy_hpc.slurm.render import Request, render
    from energy_hpc.slurm.submit import load_job_name, sbatch
    from energy_hpc.slurm.systems import load_profile
    from energy_hpc.slurm.values import slurm_job_name

    profile = load_profile(args.system)
    job = args.job.expanduser().resolve()
    name = load_job_name(job)
    results = (args.output or Path("results") / slurm_job_name(name)).expanduser().resolve()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    # The script names the job file where it is (not a copy): relative model folders in it stay
    # valid. The header records its sha256, and the run file keeps the text that actually ran.
    req = Request(
        job_file=job,
        job_name=name,
        results_dir=results,
        nodes=args.nodes,
        options=slurm_options(args, profile),
    )
    rendered = render(profile, req)
    warn_once(rendered.warnings)
    if args.dry_run:
        sys.stdout.write(rendered.script)
        log.info(
            "dry run: nothing written. Submitted by hand, the script makes %s itself; Slurm writes "
            "its log in the folder you run sbatch in",
            results,
        )
        return 0
    script = results / f"{slurm_job_name(name)}-{stamp}.sbatch"
    try:
        results.mkdir(parents=True, exist_ok=True)
        script.write_text(rendered.script)
        script.chmod(0o755)
    except OSError as exc:
        raise OutputError(
            f"cannot write to results folder {results}: {exc}; choose another with -o"
        ) from None
    log.info("wrote %s", script)
    job_id = sbatch(script, cwd=results)
    log.info(
        "submitted job %s; Slurm log: %s",
        job_id,
        rendered.log_pattern.replace("%x", rendered.job_name).replace("%j", job_id),
    )
    print(job_id)
    return 0
