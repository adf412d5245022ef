"""Talk to Slurm through its commands: submit with ``sbatch --parsable``, ask where jobs stand.

Job states come from, in order: ``squeue -t all`` (pending, running, and finished jobs the
controller still remembers, MinJobAge), ``sacct`` (needs accounting storage; absent on many small
clusters and in the tests), and otherwise nothing: the caller then looks for the run file.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from pathlib import Path

from energy_hpc.errors import SlurmError

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


def _run_query(argv: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("%s failed: %s", argv[0], exc)
        return None


def squeue_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """States of the jobs the controller knows (all states, incl. recently finished)."""
    ids = [j for j in job_ids if j]
    if not ids or shutil.which("squeue") is None:
        return {}
    # One id at a time would cost a round trip each; squeue errors out when *none* of a list is
    # known ("Invalid job id specified"), which is simply "knows none of them".
    r = _run_query(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T"])
    if r is None or r.returncode != 0:
        if r is not None and "Invalid job id" not in r.stderr:
            log.warning("squeue: %s", r.stderr.strip())
        return {}
    out = {}
    for line in r.stdout.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            out[jid.strip()] = map_state(state)
    return out


def sacct_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """States from accounting; {} where sacct is missing or accounting is disabled."""
    ids = [j for j in job_ids if j]
    if not ids or shutil.which("sacct") is None:
        return {}
    r = _run_query(["sacct", "-n", "-X", "-P", "-j", ",".join(ids), "-o", "JobID,State"])
    if r is None or r.returncode != 0:
        log.debug("sacct unavailable: %s", r.stderr.strip() if r else "no answer")
        return {}
    out = {}
    for line in r.stdout.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            out[jid.strip()] = map_state(state)
    return out


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """Best knowledge of each job's state; jobs nobody knows are left out."""
    ids = list(dict.fromkeys(j for j in job_ids if j))
    states = squeue_states(ids)
    rest = [j for j in ids if j not in states]
    if rest:
        states.update(sacct_states(rest))
    return states


def load_job_name(job_file: Path) -> str:
    """Validate the job file and return its ``[job].name``: the one place that reads a job file
    for submission. Uses :func:`energy_hpc.spec.load_job` where it exists; until then reads the
    TOML and checks only the name (the run validates the rest, with exit status 2)."""
    try:
        from energy_hpc.spec import load_job  # type: ignore[attr-defined]
    except ImportError:
        load_job = None
    if load_job is not None:
        return str(load_job(job_file).name)
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from energy_hpc.errors import SpecError

    try:
        data = tomllib.loads(Path(job_file).read_text())
    except FileNotFoundError:
        raise SpecError(f"job file {job_file} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read job file {job_file}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"job file {job_file} is not valid TOML: {exc}") from None
    name = data.get("job", {}).get("name") if isinstance(data.get("job"), dict) else None
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f'job file {job_file} has no [job] name = "..."; add one')
    return name
