"""``energy-hpc submit JOB --system S --nodes N``: render an sbatch script and submit it."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from energy_hpc import settings

if TYPE_CHECKING:
    from energy_hpc.slurm.render import SlurmOptions
    from energy_hpc.slurm.systems import SystemProfile

HELP = "render a job file into an sbatch script for a system (frontier, perlmutter, generic) and submit it"

log = logging.getLogger(__name__)


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``submit`` and ``sweep``."""
    parser.add_argument("job", type=Path, help="the job file (TOML)")
    parser.add_argument(
        "--system",
        required=True,
        help="a system profile: frontier, perlmutter, generic, or the path of your own TOML",
    )
    parser.add_argument("--time", metavar="HH:MM:SS", help="time limit (default: the profile's)")
    parser.add_argument(
        "--account", "-A", default="", help="project account to charge (default: $SBATCH_ACCOUNT)"
    )
    parser.add_argument("--partition", "-p", help="partition (default: the profile's; '' for Slurm's)")
    parser.add_argument("--qos", "-q", help="quality of service (default: the profile's; '' for Slurm's)")
    parser.add_argument("--constraint", "-C", help="node features (default: the profile's)")
    parser.add_argument(
        "--ranks-per-node",
        type=int,
        metavar="R",
        help="ranks per node (default: the profile's, e.g. 8 on Frontier)",
    )
    parser.add_argument("--launcher", help="one of the profile's launchers (generic: srun or mpiexec)")
    parser.add_argument(
        "--enable",
        action="append",
        default=[],
        metavar="NAME",
        help="turn on one of the profile's optional settings (frontier: nvme, all-cores)",
    )
    parser.add_argument(
        "--templates",
        type=Path,
        metavar="DIR",
        help="a folder with your own sbatch templates (*.sbatch) and modules files (*.sh): "
        "a file there is used instead of the built-in one of the same name",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the script(s) on stdout; write and submit nothing"
    )


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


def current_venv() -> str:
    """ENERGY_HPC_VENV (the ``venv`` setting), else the virtual environment this process runs in, else ''."""
    if settings.current().venv:
        return settings.current().venv
    return sys.prefix if sys.prefix != sys.base_prefix else ""


def account_from(args: argparse.Namespace, profile: SystemProfile) -> str:
    account = args.account or settings.current().account  # SBATCH_ACCOUNT
    if account and profile.account_suffix and not account.endswith(profile.account_suffix):
        log.warning(
            "account %r does not end in %r, as %s GPU accounts do; check --account",
            account,
            profile.account_suffix,
            profile.name,
        )
    return account


def command_line() -> tuple[str, ...]:
    return ("energy-hpc", *sys.argv[1:])


def slurm_options(args: argparse.Namespace, profile: SystemProfile) -> SlurmOptions:
    """The options of :func:`add_slurm_arguments` as the render's :class:`SlurmOptions`."""
    from energy_hpc.slurm.render import SlurmOptions

    return SlurmOptions(
        time=args.time,
        account=account_from(args, profile),
        partition=args.partition,
        qos=args.qos,
        constraint=args.constraint,
        ranks_per_node=args.ranks_per_node,
        launcher=args.launcher,
        enable=tuple(args.enable),
        templates=args.templates.expanduser().resolve() if args.templates else None,
        venv=current_venv(),
        command=command_line(),
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
    if args.dry_run:
        sys.stdout.write(rendered.script)
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
