"""Helpers shared by several commands (not a command: cli.py skips modules whose name starts with _).

The analysis commands (``table``, ``plot``, ``report``) take run files and folders and a ``--by``
list alike; ``submit`` and ``sweep`` take the same Slurm options.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from energy_hpc import settings

if TYPE_CHECKING:
    from energy_hpc.analysis.carbon import CarbonFactor
    from energy_hpc.slurm.render import SlurmOptions
    from energy_hpc.slurm.systems import SystemProfile

log = logging.getLogger(__name__)


def add_carbon_options(p: argparse.ArgumentParser, what: str = "") -> None:
    """``--carbon-intensity G`` and ``--pue P`` (table, report): CO2e as a stated conversion."""
    p.add_argument(
        "--carbon-intensity",
        type=float,
        metavar="G",
        help=f"add co2e_g and co2e_per_1000_units_g{what}: energy converted at G gCO2e/kWh (a conversion "
        "by the factor you state, not a measurement)",
    )
    p.add_argument(
        "--pue",
        type=float,
        metavar="P",
        help="with --carbon-intensity: the facility's power usage effectiveness (default 1.0: the measured "
        "energy alone)",
    )


def carbon_factor(args: argparse.Namespace) -> CarbonFactor | None:
    """The stated conversion of ``--carbon-intensity`` and ``--pue``, or None when not asked for."""
    from energy_hpc.errors import UserError

    if args.carbon_intensity is None:
        if args.pue is not None:
            raise UserError("--pue scales the CO2e conversion: give --carbon-intensity G (gCO2e/kWh) with it")
        return None
    from energy_hpc.analysis.carbon import CarbonFactor

    return CarbonFactor(args.carbon_intensity, 1.0 if args.pue is None else args.pue)


def parse_by(text: str | None) -> list[str] | None:
    """``--by model,nodes`` as a list of names; None when not given."""
    return [b.strip() for b in text.split(",") if b.strip()] if text else None


def find_files(paths: list[str]) -> list[Path]:
    """The run files in the files and folders given; one RunFileError line when there are none (naming a
    spill folder given by mistake)."""
    from energy_hpc.errors import RunFileError
    from energy_hpc.store import find_run_files, is_spill_folder

    files = find_run_files(paths)
    if not files:
        spills = [p for p in paths if is_spill_folder(Path(p))]
        if spills:
            raise RunFileError(
                f"{', '.join(spills)}: a spill folder holds spills, not a run file; rebuild the "
                f"run from it with energy-hpc merge {' '.join(spills)} -o FOLDER"
            )
        raise RunFileError(
            f"no run files (*.h5) in {', '.join(paths)}; give the folder energy-hpc run wrote to (-o)"
        )
    return files


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
        "--force",
        action="store_true",
        help="submit a request that breaks the system's published limits (a time limit longer than its "
        "job-size bin allows) with a warning instead of refusing it",
    )
    parser.add_argument(
        "--gpu-freq",
        metavar="F",
        help="GPU clock Slurm sets for the job (sbatch --gpu-freq): MHz or low/medium/high/highm1, "
        "optionally ,memory=<MHz>; a sweep takes several, comma-separated, one job each (e.g. 900,1200,1980)",
    )
    parser.add_argument(
        "--gpu-power",
        metavar="W",
        help="GPU power limit in W the site's plugin sets (sbatch --gpu-power, e.g. Perlmutter); a sweep "
        "takes several, comma-separated, one job each (e.g. 250,300,400)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the script(s) on stdout; write and submit nothing"
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


def warn_once(warnings: Iterable[str], seen: set[str] | None = None) -> None:
    """Log each of a rendered script's warnings (a sweep renders many alike: each is said once)."""
    seen = set() if seen is None else seen
    for w in warnings:
        if w not in seen:
            seen.add(w)
            log.warning("%s", w)


def command_line() -> tuple[str, ...]:
    return ("energy-hpc", *sys.argv[1:])


def one_device_setting(args: argparse.Namespace) -> tuple[str | None, int | None]:
    """``--gpu-freq`` and ``--gpu-power`` of ``submit``: one value each (None: not given)."""
    from energy_hpc.errors import SlurmError
    from energy_hpc.slurm.sweep import parse_gpu_freqs, parse_gpu_powers

    freqs = parse_gpu_freqs(args.gpu_freq) if args.gpu_freq is not None else [None]
    powers = parse_gpu_powers(args.gpu_power) if args.gpu_power is not None else [None]
    if len(freqs) > 1 or len(powers) > 1:
        raise SlurmError(
            "submit takes one --gpu-freq and one --gpu-power value; to run one job per value, use "
            "energy-hpc sweep JOB --nodes N --gpu-freq 900,1200 (or --gpu-power 250,300)"
        )
    return freqs[0], powers[0]


def slurm_options(args: argparse.Namespace, profile: SystemProfile, *, device: bool = True) -> SlurmOptions:
    """The options of :func:`add_slurm_arguments` as the render's :class:`SlurmOptions`; with ``device``
    (``submit``), its one ``--gpu-freq``/``--gpu-power`` too (a sweep sets those per point)."""
    from energy_hpc.slurm.render import SlurmOptions

    gpu_freq, gpu_power_W = one_device_setting(args) if device else (None, None)
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
        force=args.force,
        venv=current_venv(),
        command=command_line(),
        gpu_freq=gpu_freq,
        gpu_power_W=gpu_power_W,
    )
