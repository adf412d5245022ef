"""Render an sbatch script from plain data: a system profile and a :class:`Request`.

The script is plain sbatch a person can read, edit and resubmit by hand. Every value that reaches
it is either validated against a strict pattern (``#SBATCH`` lines are parsed by sbatch, not by the
shell, so they cannot be shell-quoted; :mod:`.values`) or shell-quoted with :func:`shlex.quote`
(the settings block). Comment lines escape control characters, so a newline in a path or argument
cannot start a line of shell.

Templates (``energy_hpc/systems/templates/<system>.sbatch``, or the user's own) use ``@@{name}``
placeholders, which cannot collide with the shell's ``$``; they are filled with
:class:`string.Template`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import shlex
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from energy_hpc import __version__
from energy_hpc.errors import SlurmError, SystemProfileError
from energy_hpc.slurm.policy import check_size, cores_per_rank, limit_breaches, storage_warning
from energy_hpc.slurm.systems import SignalTo, SystemProfile
from energy_hpc.slurm.values import check_slurm_value, check_time, comment, directive_path, slurm_job_name


class ScriptTemplate(string.Template):
    delimiter = "@@"


@dataclass(frozen=True)
class SlurmOptions:
    """What the user chose for a submission besides the job file and the node count: the options
    ``submit`` and ``sweep`` share (None: the profile's default), plus the virtual environment and
    the command line the script records. A sweep uses one for every point."""

    time: str | None = None
    account: str = ""
    partition: str | None = None  # None: the profile's default; "": leave it to Slurm
    qos: str | None = None
    constraint: str | None = None
    ranks_per_node: int | None = None
    launcher: str | None = None
    enable: tuple[str, ...] = ()
    templates: Path | None = None  # the user's own templates and modules files (--templates)
    force: bool = False  # a request that breaks the system's published limits is warned about, not refused
    venv: str = ""
    command: tuple[str, ...] = ()
    # device settings Slurm applies for the job: --gpu-freq (e.g. "1200", "high", "1200,memory=2619")
    # and --gpu-power in W (where the system's profile says it has the plugin)
    gpu_freq: str | None = None
    gpu_power_W: int | None = None


@dataclass(frozen=True)
class Request:
    """Everything about one submission that is not the system profile. Plain data."""

    job_file: Path
    job_name: str
    results_dir: Path
    nodes: int
    options: SlurmOptions = field(default_factory=SlurmOptions)
    rendered_at: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc))


@dataclass(frozen=True)
class Rendered:
    script: str
    job_name: str
    ntasks: int
    log_pattern: str  # where Slurm writes the job's stdout/stderr when sbatch runs in the results folder
    warnings: tuple[str, ...] = ()  # for the user: limits broken under --force, a folder to avoid


def _launcher_argv(profile: SystemProfile, req: Request, ntasks: int, rpn: int, cpr: int) -> list[str]:
    launcher = profile.launcher(req.options.launcher)
    values = {
        "nodes": req.nodes,
        "ntasks": ntasks,
        "ranks_per_node": rpn,
        "cores_per_rank": cpr,
        "gpus_per_rank": profile.gpus_per_rank,
    }
    return [a.format(**values) for a in launcher.argv]


_FREQ = r"(?:low|medium|high|highm1|[1-9][0-9]{1,4})"
GPU_FREQ_RE = re.compile(rf"^{_FREQ}(?:,memory={_FREQ})?(?:,verbose)?$")


def gpu_freq_for(knobs: Mapping[str, float | int]) -> str | None:
    """The ``--gpu-freq`` value of a case's ``gpu_clock_MHz`` / ``memory_clock_MHz`` (None: neither set)."""
    parts = []
    if "gpu_clock_MHz" in knobs:
        parts.append(str(int(knobs["gpu_clock_MHz"])))
    if "memory_clock_MHz" in knobs:
        parts.append(f"memory={int(knobs['memory_clock_MHz'])}")
    return ",".join(parts) or None


def _device_directives(profile: SystemProfile, opts: SlurmOptions) -> list[str]:
    """``--gpu-freq`` and ``--gpu-power``, checked against the value's form and the system's profile."""
    out = []
    if opts.gpu_freq is not None:
        if not GPU_FREQ_RE.match(opts.gpu_freq):
            raise SlurmError(
                f"--gpu-freq {opts.gpu_freq!r} is not a Slurm GPU frequency: give MHz or low/medium/high/"
                "highm1, optionally with ,memory=<MHz or level> (e.g. 1200,memory=2619)"
            )
        if not profile.gpu_freq:
            raise SlurmError(
                f"system {profile.name} does not take --gpu-freq (its profile has [slurm] gpu_freq = false "
                "or no GPUs); set the clock in the job file (gpu_clock_MHz) where the job may, or ask the site"
            )
        out.append(f"--gpu-freq={opts.gpu_freq}")
    if opts.gpu_power_W is not None:
        if not 1 <= opts.gpu_power_W <= 5000:
            raise SlurmError(
                f"--gpu-power {opts.gpu_power_W} W is not a GPU power limit; give watts, e.g. 300"
            )
        if not profile.gpu_power:
            raise SlurmError(
                f"system {profile.name} has no --gpu-power (a site plugin, e.g. Perlmutter's); set "
                "power_cap_W in the job file where the job may, or ask the site"
            )
        out.append(f"--gpu-power={opts.gpu_power_W}")
    return out


def scheduler_settings(opts: SlurmOptions) -> dict[str, str | int]:
    """What the job asks Slurm to set on its GPUs (``gpu_freq`` text, ``gpu_power_W`` in W): the script
    exports it as ENERGY_HPC_SCHEDULER_SETTINGS and the run file keeps it (``scheduler_settings``)."""
    out: dict[str, str | int] = {}
    if opts.gpu_freq is not None:
        out["gpu_freq"] = opts.gpu_freq
    if opts.gpu_power_W is not None:
        out["gpu_power_W"] = opts.gpu_power_W
    return out


def render(profile: SystemProfile, req: Request) -> Rendered:
    opts = req.options
    rpn = profile.ranks_per_node if opts.ranks_per_node is None else opts.ranks_per_node
    check_size(profile, req.nodes, rpn)
    if (
        profile.gpus_per_node
        and profile.gpus_per_rank
        and rpn * profile.gpus_per_rank > profile.gpus_per_node
    ):
        raise SlurmError(
            f"{rpn} ranks per node × {profile.gpus_per_rank} GPU(s) exceed the "
            f"{profile.gpus_per_node} GPUs of a {profile.name} node; lower --ranks-per-node"
        )
    ntasks = req.nodes * rpn
    time = opts.time or profile.time
    time_s = check_time(time)
    account = opts.account
    if account:
        check_slurm_value("account", account)
    elif profile.account_required:
        raise SlurmError(f"{profile.name} needs a project account: pass --account (e.g. --account abc123)")
    partition = profile.partition if opts.partition is None else opts.partition
    qos = profile.qos if opts.qos is None else opts.qos
    constraint = profile.constraint if opts.constraint is None else opts.constraint
    for kind, value in (("partition", partition), ("qos", qos), ("constraint", constraint)):
        if value:
            check_slurm_value(kind, value)
    unknown = [e for e in opts.enable if e not in profile.optional]
    if unknown:
        known = ", ".join(sorted(profile.optional)) or "none"
        raise SlurmError(
            f"system {profile.name} has no optional setting {', '.join(map(repr, unknown))}; known: {known}"
        )
    cpr = cores_per_rank(profile, rpn, opts.enable)
    warnings = []
    breaches = limit_breaches(profile, req.nodes, time_s, time, partition, qos)
    if breaches and not opts.force:
        raise SlurmError(f"{'; '.join(breaches)}; ask for less, or pass --force to submit anyway")
    warnings += [f"{b} (submitting anyway: --force)" for b in breaches]
    launcher = profile.launcher(opts.launcher)
    if opts.templates is not None and not opts.templates.is_dir():
        raise SlurmError(
            f"--templates {opts.templates} is not a folder; give the folder that holds your own "
            "*.sbatch templates and *.sh modules files"
        )
    template_path = profile.file("template", opts.templates)
    modules_path = profile.file("modules", opts.templates)
    results = req.results_dir
    job_name = slurm_job_name(req.job_name)
    where = storage_warning(profile, results, account)
    if where:
        warnings.append(where)

    sig_prefix = "B:" if launcher.signal_to is SignalTo.BATCH else ""
    # Slurm opens --output before the script runs, so it must name a folder that exists then. A
    # relative name is relative to the folder sbatch runs in: `energy-hpc submit` runs sbatch in
    # the results folder (made first), and a person submitting a --dry-run script runs it where
    # they are. The script makes the results folder itself and works there (no --chdir: Slurm
    # would need that folder before the script could make it).
    log_name = "slurm-%x-%j.out"
    log_pattern = f"{directive_path(results, 'results folder')}/{log_name}"
    directives = [f"--job-name={job_name}"]
    if account:
        directives.append(f"--account={account}")
    if partition:
        directives.append(f"--partition={partition}")
    if qos:
        directives.append(f"--qos={qos}")
    if constraint:
        directives.append(f"--constraint={constraint}")
    directives += [
        f"--nodes={req.nodes}",
        f"--ntasks-per-node={rpn}",
        f"--cpus-per-task={cpr}",
    ]
    if profile.gpus_per_node:
        directives.append(f"--gpus-per-node={profile.gpus_per_node}")
    directives += [
        f"--time={time}",
        f"--output={log_name}",
        f"--signal={sig_prefix}{profile.signal_name}@{profile.signal_seconds}",
    ]
    directives += _device_directives(profile, opts)
    directives += list(profile.directives)
    env = list(profile.env)
    for name in opts.enable:
        directives += list(profile.optional[name].directives)
        env += list(profile.optional[name].env)
    for d in directives:  # belt and braces: nothing may leave its line
        if any(not ch.isprintable() for ch in d):
            raise SlurmError(f"directive {d!r} contains a control character")

    job_file = Path(req.job_file)
    try:
        digest = hashlib.sha256(job_file.read_bytes()).hexdigest()
    except OSError as exc:
        raise SlurmError(f"cannot read job file {job_file}: {exc}") from None
    when = req.rendered_at.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")
    header = [
        f"# Rendered by energy-hpc {__version__} at {when}",
        f"# command: {comment(shlex.join(opts.command)) if opts.command else '(python API)'}",
        f"# job file: {comment(str(job_file))} (sha256 {digest[:16]})",
        f"# system profile: {comment(profile.name)} ({comment(str(profile.source))})",
        f"# template: {comment(str(template_path))}",
        f"# {comment(profile.description)}" if profile.description else "#",
        f"# {req.nodes} node(s) x {rpn} rank(s) = {ntasks} rank(s); launcher: {launcher.name}",
        "# This is plain sbatch: edit it and submit it by hand with `sbatch THIS_FILE` if you like.",
        f"# Slurm writes the job's log ({log_name}) in the folder sbatch runs in; the script makes",
        f"# the results folder {comment(str(results))} and runs there.",
    ]
    if time_s <= profile.signal_seconds:
        header.append(
            f"# NOTE: the time limit ({time}) is not longer than the warning signal's lead "
            f"({profile.signal_seconds} s): the signal comes at the start."
        )

    q = shlex.quote
    settings = [
        "# Values rendered by energy-hpc (shell-quoted). Edit here, not below.",
        f"ENERGY_HPC_JOB_FILE={q(str(job_file))}",
        f"ENERGY_HPC_OUT={q(str(results))}",
        f"ENERGY_HPC_MODULES={q(str(modules_path))}",
        f"ENERGY_HPC_ACCOUNT={q(account)}",
        f"ENERGY_HPC_FORWARD_SIGNALS={1 if launcher.signal_to is SignalTo.BATCH else 0}",
        "ENERGY_HPC_LAUNCHER=("
        + " ".join(q(a) for a in _launcher_argv(profile, req, ntasks, rpn, cpr))
        + ")",
        "# The virtual environment: $ENERGY_HPC_VENV when the job starts, else the one that rendered this.",
        f'if [[ -z "${{ENERGY_HPC_VENV:-}}" ]]; then ENERGY_HPC_VENV={q(opts.venv)}; fi',
        "export ENERGY_HPC_VENV ENERGY_HPC_ACCOUNT",
    ]
    applied = scheduler_settings(opts)
    if applied:
        text = json.dumps(applied, sort_keys=True, separators=(",", ":"))
        settings.append(f"export ENERGY_HPC_SCHEDULER_SETTINGS={q(text)}  # what Slurm sets on the GPUs")
    settings += [f'export {k}="{v}"' for k, v in env]

    try:
        text = ScriptTemplate(template_path.read_text()).substitute(
            header="\n".join(header),
            directives="\n".join(f"#SBATCH {d}" for d in directives),
            settings="\n".join(settings),
        )
    except (KeyError, ValueError) as exc:
        raise SystemProfileError(
            f"template {template_path} has a bad placeholder ({exc}); "
            "templates may use @@{header}, @@{directives}, @@{settings}"
        ) from None
    if not text.startswith("#!"):
        raise SystemProfileError(f"template {template_path} must start with a #! line")
    return Rendered(
        script=text, job_name=job_name, ntasks=ntasks, log_pattern=log_pattern, warnings=tuple(warnings)
    )
