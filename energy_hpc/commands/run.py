"""energy-hpc run: measure a job on this rank (single process, mpiexec or srun)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

HELP = "run a job file: sample power around its inference on every rank, write one run file"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="job file (TOML)")
    p.add_argument("-o", "--output", default="results", help="folder for the run file (default: results)")
    p.add_argument(
        "--sensors",
        help="comma-separated sensor backends, overriding the job file "
        "(auto, nvml, amdsmi, pm_counters, rapl, estimate, synthetic, "
        "emulated:<part>)",
    )
    p.add_argument("--interval-ms", type=float, help="sampling interval, overriding the job file")
    p.add_argument(
        "--keep-spills",
        action="store_true",
        default=None,
        help="keep the per-rank spill files after the run file is written (default: removed; "
        "also ENERGY_HPC_KEEP_SPILLS=1)",
    )
    mpi = p.add_mutually_exclusive_group()
    mpi.add_argument(
        "--mpi",
        dest="mpi",
        action="store_true",
        default=None,
        help="initialise MPI even if no launcher variables are seen",
    )
    mpi.add_argument("--no-mpi", dest="mpi", action="store_false", help="never initialise MPI")


def run(args: argparse.Namespace, *, sleep: Callable[[float], None] | None = None) -> int:
    """The command; ``sleep`` is passed on to :func:`~energy_hpc.run.run_job` (tests inject a fault with it)."""
    from energy_hpc import settings
    from energy_hpc.context import detect
    from energy_hpc.jobtypes import Job
    from energy_hpc.run import CollectiveUserError, run_job
    from energy_hpc.spec import load_job, parse_job

    settings.load()  # the environment's settings, read once: a bad value stops the run here, on every rank
    # MPI first (before torch, as Cray MPICH requires), then the job file: rank 0 reads and validates
    # it and the others parse the same text, so every rank agrees and only rank 0 reports a problem.
    ctx, comm = detect(force_mpi=args.mpi)
    if not ctx.is_root and args.verbose == 0:
        logging.getLogger("energy_hpc").setLevel(logging.WARNING)
    loaded: Job | None = None
    err: Exception | None = None
    if ctx.is_root:
        try:
            loaded = load_job(args.job)
        except Exception as exc:
            err = exc
    err_text = comm.bcast(str(err) if err else "", root=0)
    if err_text:
        if err is not None:
            raise err
        raise CollectiveUserError(err_text, quiet=True)
    text_path = comm.bcast((loaded.text, loaded.path) if loaded is not None else None, root=0)
    job = loaded if loaded is not None else parse_job(*text_path)
    sensors = tuple(s.strip() for s in args.sensors.split(",") if s.strip()) if args.sensors else None
    if sensors:
        from energy_hpc.errors import SpecError
        from energy_hpc.telemetry.registry import EMULATED, parse_sensor, sensor_choices

        for s in sensors:
            if s.partition(":")[0] == EMULATED and ":" in s:
                parse_sensor(s, "--sensors")  # an unknown part: one line naming the parts
            elif s not in sensor_choices():
                raise SpecError(
                    f"--sensors: unknown sensor {s!r}; choose from {', '.join(sensor_choices())}, "
                    f"or {EMULATED}:<part>"
                )
    result = run_job(
        job,
        Path(args.output),
        ctx,
        comm,
        sensors=sensors,
        interval_ms=args.interval_ms,
        keep_spills=args.keep_spills,
        sleep=sleep,
    )
    if result.path is not None:
        print(result.path)
        sys.stdout.flush()
    return result.exit_code
