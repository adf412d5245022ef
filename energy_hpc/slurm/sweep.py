"""A sweep over node counts: one Slurm job per point, all under one study folder.

::

    STUDY/
      manifest.json       what was submitted, job ids, states, paths (the study's memory)
      nodes-1/            one point: its scripts (attempt-K.sbatch), Slurm logs, run files
      nodes-2/ ...
      nodes-1-gpu-freq-1200/    with --gpu-freq/--gpu-power lists: one point per node count and setting
      nodes-1-gpu-power-300W/

The sweep is declared as data (lists of node counts and of device settings Slurm applies, crossed)
and expanded here; each point is rendered with the same code as ``energy-hpc submit`` and submitted
with ``sbatch`` (not submitit: the run is a command under srun/mpiexec with the system's modules,
which submitit's pickled-function model does not express; rendering ourselves keeps each script
readable plain sbatch).

Re-running a sweep refreshes every point's state first and submits only points that have never
been submitted, or whose last attempt failed, was cancelled, or vanished without a run file. A
point that is queued, running, or finished (Slurm says COMPLETED, or its run file exists where
Slurm no longer knows the job) is left alone.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path

from energy_hpc import __version__
from energy_hpc.errors import OutputError, SlurmError
from energy_hpc.slurm.render import GPU_FREQ_RE, Request, SlurmOptions, render
from energy_hpc.slurm.submit import JobState, job_states
from energy_hpc.slurm.systems import SystemProfile

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SCHEMA = 1


class PointState(str, Enum):
    NEW = "new"  # never submitted
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # Slurm says COMPLETED and/or the run file is there
    FAILED = "failed"  # failed, timed out, cancelled, or completed without a run file
    LOST = "lost"  # Slurm no longer knows the job and there is no run file

    @property
    def needs_submit(self) -> bool:
        return self in (PointState.NEW, PointState.FAILED, PointState.LOST)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def parse_gpu_freqs(text: str) -> list[str]:
    """``"900,1200,1980"`` -> ["900", "1200", "1980"]: Slurm ``--gpu-freq`` values, in the order given.
    A ``memory=...`` or ``verbose`` part belongs to the value before it (``"1200,memory=2619,900"`` is two
    values). Each value is checked here, before it names a folder."""
    values: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if (part.startswith("memory=") or part == "verbose") and values:
            values[-1] += f",{part}"
        elif part:
            values.append(part)
        else:
            raise SlurmError(f"--gpu-freq {text!r} has an empty value; give e.g. 900,1200,1980")
    for value in values:
        if not GPU_FREQ_RE.match(value):
            raise SlurmError(
                f"--gpu-freq {value!r} is not a Slurm GPU frequency: give MHz or low/medium/high/highm1, "
                "optionally with ,memory=<MHz or level>, comma-separated for several (e.g. 900,1200,1980)"
            )
    return list(dict.fromkeys(values))


def parse_gpu_powers(text: str) -> list[int]:
    """``"250,300,400"`` -> [250, 300, 400]: ``--gpu-power`` values in W, in the order given."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise SlurmError(f"--gpu-power {text!r}: {part!r} is not a power in W; give e.g. 250,300,400")
        values.append(int(part))
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class Setting:
    """One point's device settings that Slurm applies (None: not asked for)."""

    gpu_freq: str | None = None
    gpu_power_W: int | None = None

    @property
    def suffix(self) -> str:
        """What the point's folder name adds to ``nodes-N``: ``-gpu-freq-1200-memory-2619``,
        ``-gpu-power-300W`` (the values are checked first: :func:`parse_gpu_freqs`)."""
        out = ""
        if self.gpu_freq is not None:
            out += "-gpu-freq-" + self.gpu_freq.replace(",", "-").replace("=", "-")
        if self.gpu_power_W is not None:
            out += f"-gpu-power-{self.gpu_power_W}W"
        return out

    @property
    def label(self) -> str:
        """``gpu_freq=1200 gpu_power_W=300``; "" for none."""
        return " ".join(
            f"{k}={v}"
            for k, v in (("gpu_freq", self.gpu_freq), ("gpu_power_W", self.gpu_power_W))
            if v is not None
        )


def settings_grid(gpu_freqs: Sequence[str] = (), gpu_powers: Sequence[int] = ()) -> list[Setting]:
    """Every combination of the values given (one Setting with nothing when neither list has any)."""
    freqs: list[str | None] = [*gpu_freqs] or [None]
    powers: list[int | None] = [*gpu_powers] or [None]
    return [Setting(f, w) for f in freqs for w in powers]


def parse_node_counts(text: str) -> list[int]:
    """``"1,2,4,8"`` -> [1, 2, 4, 8] (sorted, unique)."""
    counts = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise SlurmError(f"--nodes {text!r}: {part!r} is not a node count; give e.g. 1,2,4,8")
        counts.append(int(part))
    return sorted(set(counts))


@dataclass
class Attempt:
    job_id: str
    script: str  # relative to the study
    submitted_at: str
    state: str = JobState.QUEUED.value
    state_source: str = "sbatch"  # squeue | sacct | run-file | sbatch
    checked_at: str = ""
    time: str = ""
    account: str = ""


@dataclass
class Point:
    nodes: int
    dir: str  # relative to the study
    gpu_freq: str | None = None  # the --gpu-freq Slurm applies at this point (None: not asked for)
    gpu_power_W: int | None = None  # the --gpu-power, W
    attempts: list[Attempt] = field(default_factory=list)
    run_files: list[str] = field(default_factory=list)  # relative to the study
    state: str = PointState.NEW.value
    note: str = ""

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


@dataclass
class Manifest:
    job_name: str
    job_file: str  # absolute; the scripts name it where it is (relative model paths)
    job_sha256: str  # its content when the study was started
    system: str
    profile: str
    launcher: str
    created: str
    updated: str = ""
    energy_hpc_version: str = __version__
    schema: int = SCHEMA
    points: list[Point] = field(default_factory=list)

    def point(self, nodes: int, setting: Setting | None = None) -> Point | None:
        s = setting or Setting()
        return next(
            (
                p
                for p in self.points
                if (p.nodes, p.gpu_freq, p.gpu_power_W) == (nodes, s.gpu_freq, s.gpu_power_W)
            ),
            None,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: Path) -> Manifest:
        try:
            data = json.loads(text)
            if data.get("schema") != SCHEMA:
                raise OutputError(
                    f"{where} has manifest schema {data.get('schema')!r}; this "
                    f"energy-hpc reads schema {SCHEMA}: use a new --study folder"
                )
            points = [
                Point(**{**p, "attempts": [Attempt(**a) for a in p.get("attempts", [])]})
                for p in data.pop("points", [])
            ]
            return cls(**data, points=points)
        except (ValueError, TypeError, AttributeError) as exc:
            raise OutputError(
                f"{where} is not an energy-hpc study manifest ({exc}); point --study "
                "at a study folder, or at an empty/new one"
            ) from None


class Study:
    """A study folder and its manifest; use as a context manager to hold its lock."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.manifest_path = self.root / MANIFEST
        self._lock_file = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[Study]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fh = open(self.root / ".manifest.lock", "a")
        except OSError as exc:
            raise OutputError(f"cannot use study folder {self.root}: {exc}") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield self
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def load(self) -> Manifest:
        if not self.exists():
            raise OutputError(
                f"{self.root} is not a study folder (no {MANIFEST}); start one with "
                "`energy-hpc sweep JOB --system S --nodes 1,2,4 --study DIR`"
            )
        return Manifest.from_json(self.manifest_path.read_text(), self.manifest_path)

    def save(self, manifest: Manifest) -> None:
        manifest.updated = now()
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(manifest.to_json())
        os.replace(tmp, self.manifest_path)  # a reader never sees half a manifest


def find_run_files(point_dir: Path, job_id: str) -> list[Path]:
    """Run files of one job: ``<jobname>-<jobid>.<step>.h5`` (or ``<jobname>-<jobid>.h5``)."""
    if not point_dir.is_dir():
        return []
    return sorted(
        p for p in point_dir.glob(f"*-{job_id}*.h5") if p.name.split("-")[-1].split(".")[0] == job_id
    )


def refresh(
    study: Study, manifest: Manifest, query: Callable[[Sequence[str]], dict[str, JobState]] = job_states
) -> None:
    """Bring every point's state up to date (Slurm first, then run files)."""
    pending = [p.last.job_id for p in manifest.points if p.last and not JobState(p.last.state).final]
    states = query(pending) if pending else {}
    stamp = now()
    for point in manifest.points:
        last = point.last
        if last is None:
            point.state, point.note = PointState.NEW.value, ""
            continue
        files = find_run_files(study.root / point.dir, last.job_id)
        point.run_files = [str(f.relative_to(study.root)) for f in files]
        if not JobState(last.state).final:
            if last.job_id in states:
                last.state, last.state_source = states[last.job_id].value, "slurm"
            elif files:
                last.state, last.state_source = JobState.COMPLETED.value, "run-file"
            else:
                last.state, last.state_source = JobState.UNKNOWN.value, "none"
            last.checked_at = stamp
        point.state, point.note = _point_state(JobState(last.state), bool(files))


def _point_state(state: JobState, has_run_file: bool) -> tuple[str, str]:
    if state is JobState.QUEUED:
        return PointState.QUEUED.value, ""
    if state is JobState.RUNNING:
        return PointState.RUNNING.value, ""
    if state is JobState.COMPLETED:
        if has_run_file:
            return PointState.DONE.value, ""
        return PointState.FAILED.value, "job completed but wrote no run file; see its Slurm log"
    if state is JobState.UNKNOWN:
        if has_run_file:
            return PointState.DONE.value, "Slurm no longer knows the job; run file found"
        return PointState.LOST.value, "Slurm no longer knows the job and there is no run file"
    return PointState.FAILED.value, f"job {state.value}; see its Slurm log"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Action:
    nodes: int
    action: str  # submitted | would-submit | kept
    state: str
    job_id: str = ""
    script: str = ""
    setting: str = ""  # the point's device settings (Setting.label), "" for none


def open_or_start(
    study: Study, job_file: Path, job_name: str, profile: SystemProfile, launcher: str
) -> Manifest:
    """The study's manifest; a new one if there is none. A study belongs to one job file (by
    content) and one system and launcher: mixing would make its points incomparable."""
    digest = _sha256(job_file)
    if study.exists():
        m = study.load()
        if m.job_sha256 != digest:
            raise OutputError(
                f"job file {job_file} is not the one study {study.root} was started with "
                f"({m.job_file}, sha256 {m.job_sha256[:12]}); use a new --study folder, "
                "or restore the job file"
            )
        if m.system != profile.name or m.launcher != launcher:
            raise OutputError(
                f"study {study.root} runs on system {m.system!r} with launcher "
                f"{m.launcher!r}, not {profile.name!r}/{launcher!r}; use a new --study folder"
            )
        return m
    return Manifest(
        job_name=job_name,
        job_file=str(job_file),
        job_sha256=digest,
        system=profile.name,
        profile=str(profile.source),
        launcher=launcher,
        created=now(),
    )


def run_sweep(
    study: Study,
    job_file: Path,
    job_name: str,
    profile: SystemProfile,
    node_counts: Sequence[int],
    options: SlurmOptions,
    *,
    submit: Callable[[Path, Path], str],
    dry_run: bool = False,
    query: Callable[[Sequence[str]], dict[str, JobState]] = job_states,
    show: Callable[[int, str], None] | None = None,
    settings: Sequence[Setting] = (),
) -> list[Action]:
    """Submit every point that needs it; return what happened to each requested point.

    Every point is rendered with ``options`` (what ``energy-hpc submit`` takes) and its own node
    count and folder; with ``settings`` (:func:`settings_grid`), one point per node count and setting,
    each rendered with that setting's ``--gpu-freq``/``--gpu-power`` in place of the options' own.
    ``submit(script, cwd) -> job id`` is :func:`energy_hpc.slurm.submit.sbatch` in real use. With
    ``dry_run`` nothing is written or submitted; ``show(nodes, script_text)`` sees each script that
    would be submitted."""
    launcher = options.launcher or profile.default_launcher
    profile.launcher(launcher)  # fail early on an unknown launcher
    chosen = list(settings) or [Setting(options.gpu_freq, options.gpu_power_W)]
    grid = [(n, s) for n in node_counts for s in chosen]
    if dry_run and not study.exists():
        manifest = Manifest(
            job_name=job_name,
            job_file=str(job_file),
            job_sha256=_sha256(job_file),
            system=profile.name,
            profile=str(profile.source),
            launcher=launcher,
            created=now(),
        )
        return _plan(study, manifest, job_file, profile, grid, options, submit, True, show)
    with study.locked():
        manifest = open_or_start(study, job_file, job_name, profile, launcher)
        refresh(study, manifest, query)
        try:
            return _plan(study, manifest, job_file, profile, grid, options, submit, dry_run, show)
        finally:
            if not dry_run:
                study.save(manifest)


def _plan(
    study: Study,
    manifest: Manifest,
    job_file: Path,
    profile: SystemProfile,
    grid: Sequence[tuple[int, Setting]],
    options: SlurmOptions,
    submit: Callable[[Path, Path], str],
    dry_run: bool,
    show: Callable[[int, str], None] | None,
) -> list[Action]:
    actions = []
    said: set[str] = set()  # the points' scripts share most warnings: each is said once
    for nodes, setting in grid:
        point = manifest.point(nodes, setting)
        if point is None:
            point = Point(
                nodes=nodes,
                dir=f"nodes-{nodes}{setting.suffix}",
                gpu_freq=setting.gpu_freq,
                gpu_power_W=setting.gpu_power_W,
            )
            if not dry_run:
                manifest.points.append(point)
                manifest.points.sort(key=lambda p: (p.nodes, p.gpu_freq or "", p.gpu_power_W or 0))
        state = PointState(point.state)
        where = f"{nodes} node(s)" + (f" {setting.label}" if setting.label else "")
        if not state.needs_submit:
            log.info(
                "%s: %s (job %s); not resubmitting",
                where,
                state.value,
                point.last.job_id if point.last else "-",
            )
            actions.append(
                Action(nodes, "kept", state.value, point.last.job_id if point.last else "", "", setting.label)
            )
            continue
        point_dir = study.root / point.dir
        req = Request(
            job_file=job_file,
            job_name=manifest.job_name,
            results_dir=point_dir,
            nodes=nodes,
            options=replace(
                options,
                launcher=manifest.launcher,
                gpu_freq=setting.gpu_freq,
                gpu_power_W=setting.gpu_power_W,
            ),
        )
        rendered = render(profile, req)
        for warning in rendered.warnings:
            if warning not in said:
                said.add(warning)
                log.warning("%s", warning)
        script_rel = f"{point.dir}/attempt-{len(point.attempts) + 1}.sbatch"
        if dry_run:
            if show:
                show(nodes, rendered.script)
            actions.append(Action(nodes, "would-submit", state.value, "", script_rel, setting.label))
            continue
        point_dir.mkdir(parents=True, exist_ok=True)
        script = study.root / script_rel
        script.write_text(rendered.script)
        script.chmod(0o755)
        job_id = submit(script, point_dir)
        log.info("%s: submitted job %s (%s)", where, job_id, script_rel)
        point.attempts.append(
            Attempt(
                job_id=job_id,
                script=script_rel,
                submitted_at=now(),
                time=options.time or profile.time,
                account=options.account,
            )
        )
        point.state, point.note, point.run_files = PointState.QUEUED.value, "", []
        actions.append(Action(nodes, "submitted", PointState.QUEUED.value, job_id, script_rel, setting.label))
    return actions


def status(study: Study, query: Callable[[Sequence[str]], dict[str, JobState]] = job_states) -> Manifest:
    """Refresh and save the study's states; return the manifest."""
    with study.locked():
        manifest = study.load()
        refresh(study, manifest, query)
        study.save(manifest)
    return manifest
