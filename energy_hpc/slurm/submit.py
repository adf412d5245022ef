"""Talk to Slurm through its commands: submit with ``sbatch --parsable``, ask where jobs stand.

Job states come from, in order: ``squeue -t all`` (pending, running, and finished jobs the
controller still remembers, MinJobAge), ``sacct`` (needs accounting storage; absent on many small
clusters and in the tests), and otherwise nothing: the caller then looks for the run file. Both
print one ``JOBID|STATE`` line per job, read by :func:`parse_states`.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from energy_hpc.errors import SlurmError
from energy_hpc.spec import load_job

log = logging.getLogger(__name__)

QUERY_TIMEOUT_S = 60


class JobState(str, Enum):
    """Where a submitted job stands, reduced to what a sweep must decide on."""

    QUEUED = "queued"  # PENDING, CONFIGURING, REQUEUED, SUSPENDED, ...
    RUNNING = "running"  # RUNNING, COMPLETING, STAGE_OUT, ...
    COMPLETED = "completed"  # Slurm says COMPLETED (exit status 0)
    FAILED = "failed"  # FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL, DEADLINE, ...
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # Slurm no longer knows the job and there is no accounting

    @property
    def active(self) -> bool:
        return self in (JobState.QUEUED, JobState.RUNNING)

    @property
    def final(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


_SLURM_STATES = {
    "PENDING": JobState.QUEUED,
    "CONFIGURING": JobState.QUEUED,
    "REQUEUED": JobState.QUEUED,
    "REQUEUE_HOLD": JobState.QUEUED,
    "REQUEUE_FED": JobState.QUEUED,
    "RESV_DEL_HOLD": JobState.QUEUED,
    "SUSPENDED": JobState.QUEUED,
    "STOPPED": JobState.QUEUED,
    "RESIZING": JobState.QUEUED,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "DEADLINE": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
}


def map_state(slurm_state: str) -> JobState:
    """``CANCELLED by 123`` -> CANCELLED; unknown words -> UNKNOWN."""
    word = slurm_state.strip().split(" ")[0].rstrip("+").upper()
    return _SLURM_STATES.get(word, JobState.UNKNOWN)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SlurmError(
            f"`{name}` is not on PATH: run this on a Slurm login node (or load the "
            "Slurm module), or use --dry-run to only write the script"
        )
    return path


def parse_parsable(stdout: str) -> str:
    """``sbatch --parsable`` prints ``jobid`` or ``jobid;cluster``."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";")[0].strip()
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered {stdout.strip()!r}, not a job id; see its messages above")
    return job_id


def sbatch(
    script: Path, *, args: Sequence[str] = (), env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """Submit ``script``; return the job id. Slurm's refusal becomes a one-line SlurmError."""
    argv = [_tool("sbatch"), "--parsable", *args, str(script)]
    log.debug("running %s", argv)
    try:
        r = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=QUERY_TIMEOUT_S,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired:
        raise SlurmError(
            f"sbatch did not answer within {QUERY_TIMEOUT_S} s; is slurmctld up (`sinfo`)? Try again later"
        ) from None
    for line in r.stderr.strip().splitlines():
        log.info("sbatch: %s", line)
    if r.returncode != 0:
        msg = " ".join(r.stderr.strip().splitlines()[-2:]) or f"exit status {r.returncode}"
        raise SlurmError(f"sbatch refused {script}: {msg}")
    return parse_parsable(r.stdout)


@dataclass(frozen=True)
class StateQuery:
    """A Slurm command that prints ``JOBID|STATE`` for the jobs given after ``-j``."""

    tool: str
    args: tuple[str, ...]
    # stderr that means "knows none of these jobs", not a fault: logged at debug level only
    expected_errors: tuple[str, ...] = ()
    failure_level: int = logging.WARNING  # how any other failure is logged


# squeue errors out when *none* of a list is known ("Invalid job id specified"): it simply knows
# none of them. sacct fails wherever accounting is disabled, which is common: not worth a warning.
SQUEUE = StateQuery("squeue", ("-h", "-t", "all", "-o", "%i|%T"), expected_errors=("Invalid job id",))
SACCT = StateQuery("sacct", ("-n", "-X", "-P", "-o", "JobID,State"), failure_level=logging.DEBUG)
STATE_SOURCES = (SQUEUE, SACCT)  # asked in this order; a later one only for jobs not yet known


def parse_states(stdout: str) -> dict[str, JobState]:
    """``JOBID|STATE`` lines -> {job id: state}; lines without ``|`` are skipped."""
    out = {}
    for line in stdout.splitlines():
        job_id, sep, state = line.partition("|")
        if sep:
            out[job_id.strip()] = map_state(state)
    return out


def query_states(query: StateQuery, job_ids: Iterable[str]) -> dict[str, JobState]:
    """States of the jobs ``query`` knows; {} where its command is missing, fails or hangs. One
    call for all ids (one id at a time would cost a round trip each)."""
    ids = [j for j in job_ids if j]
    if not ids or shutil.which(query.tool) is None:
        return {}
    argv = [query.tool, *query.args, "-j", ",".join(ids)]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("%s failed: %s", query.tool, exc)
        return {}
    if r.returncode != 0:
        err = r.stderr.strip() or f"exit status {r.returncode}"
        expected = any(e in err for e in query.expected_errors)
        log.log(logging.DEBUG if expected else query.failure_level, "%s: %s", query.tool, err)
        return {}
    return parse_states(r.stdout)


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """Best knowledge of each job's state; jobs nobody knows are left out."""
    ids = list(dict.fromkeys(j for j in job_ids if j))
    states: dict[str, JobState] = {}
    for query in STATE_SOURCES:
        rest = [j for j in ids if j not in states]
        if not rest:
            break
        states.update(query_states(query, rest))
    return states


def load_job_name(job_file: Path) -> str:
    """Validate the job file as the run will (a bad one exits with status 2 before anything is
    written) and return its ``[job].name``: the one place that reads a job file for submission."""
    return load_job(job_file).name
