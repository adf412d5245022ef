"""System profiles: what a machine looks like to a batch job, as data.

A profile is a TOML file (``energy_hpc/systems/<name>.toml``, or any path the user gives): GPUs per
node and their vendor, ranks per node, cores per rank, the launcher line, the default partition /
QOS / constraint, the template and modules file, extra directives, and optional directive sets
(``--enable nvme``). :func:`load_profile` validates it completely, so that rendering never meets a
surprise; unknown keys are errors (a typo must not silently drop a setting).

The built-in system data is package data, read with :mod:`importlib.resources`::

    energy_hpc/systems/<name>.toml              the profiles
    energy_hpc/systems/templates/<name>.sbatch  the sbatch templates (@@{name} placeholders)
    energy_hpc/systems/modules/<name>.sh        the environment files the scripts source

(the top-level ``slurm/`` and ``modules/`` folders of a checkout link to these).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from energy_hpc.errors import SlurmError, SystemProfileError
from energy_hpc.slurm.values import check_slurm_value, check_time

# The folders of the built-in data under energy_hpc/systems/, by what a profile names.
RESOURCE_DIRS = {"template": "templates", "modules": "modules"}

# Placeholders a launcher argument may contain, filled at render time.
LAUNCHER_FIELDS = ("nodes", "ntasks", "ranks_per_node", "cores_per_rank", "gpus_per_rank")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Environment values are rendered inside double quotes; only plain $NAME / ${NAME} expansions.
_ENV_VALUE = re.compile(r'^(?:[^"`\\$\x00-\x1f\x7f]|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})*$')
# A directive is parsed by sbatch, not the shell; it must still be one line and start with '-'.
_DIRECTIVE = re.compile(r"^-[-A-Za-z0-9]*[A-Za-z0-9](?:[= ][^\x00-\x1f\x7f#'\"`$\\]*)?$")


class GpuVendor(str, Enum):
    AMD = "amd"
    NVIDIA = "nvidia"
    NONE = "none"


class SignalTo(str, Enum):
    """Who Slurm sends the warning signal to (``--signal=[B:]SIG@T``)."""

    STEPS = "steps"  # every job step, i.e. the srun-launched ranks; not the batch shell
    BATCH = "batch"  # only the batch shell, which forwards it to the launcher (mpiexec)


@dataclass(frozen=True)
class Launcher:
    name: str
    argv: tuple[str, ...]
    signal_to: SignalTo


@dataclass(frozen=True)
class Optional_:
    name: str
    help: str
    directives: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cores_per_node: int = 0  # CPUs per node a job gets with this setting on (0: unchanged)


@dataclass(frozen=True)
class LimitBin:
    """One line of a system's published job-size policy: jobs of ``nodes_min``..``nodes_max`` nodes
    (in ``partition`` and/or ``qos``, where given) may run at most ``time``."""

    name: str
    nodes_min: int
    nodes_max: int
    time: str
    seconds: int
    partition: str = ""  # "": any partition
    qos: str = ""  # "": any QOS

    def applies_to(self, partition: str, qos: str) -> bool:
        return (not self.partition or self.partition == partition) and (not self.qos or self.qos == qos)


@dataclass(frozen=True)
class Storage:
    """Where a job may write: paths compute nodes cannot write (``read_only``), paths they can
    write but the centre asks jobs not to use (``not_for_jobs``), and where to write instead
    (``write_to``: ``$VARIABLES`` and ``{account}`` filled at submission)."""

    read_only: tuple[str, ...] = ()
    not_for_jobs: tuple[str, ...] = ()
    write_to: str = ""


@dataclass(frozen=True)
class SystemProfile:
    name: str
    description: str
    source: Path
    template: str
    modules: str
    gpus_per_node: int
    gpu_vendor: GpuVendor
    ranks_per_node: int
    cores_per_rank: int
    gpus_per_rank: int
    visible_devices: str
    partition: str
    qos: str
    constraint: str
    account_required: bool
    account_suffix: str
    time: str
    directives: tuple[str, ...]
    signal_name: str
    signal_seconds: int
    launchers: Mapping[str, Launcher]
    default_launcher: str
    env: tuple[tuple[str, str], ...] = ()
    optional: Mapping[str, Optional_] = field(default_factory=dict)
    cores_per_node: int = 0  # CPUs per node a job gets by default (0: not stated)
    max_nodes: int = 0  # compute nodes in the system (0: not stated)
    limits: tuple[LimitBin, ...] = ()
    storage: Storage = field(default_factory=Storage)
    # what sbatch takes for a device setting here: --gpu-freq (Slurm's own, where the GPU plugin can set
    # clocks) and --gpu-power (a site plugin: Perlmutter's), from [slurm] gpu_freq / gpu_power
    gpu_freq: bool = True
    gpu_power: bool = False

    def file(self, what: Literal["template", "modules"], site_dir: Path | None = None) -> Path:
        """The template or modules file the profile names. A bare name is looked up in ``site_dir``
        (the user's own folder, ``--templates``) first, then among the built-in files; a path is
        taken relative to the profile file."""
        ref = self.template if what == "template" else self.modules
        if "/" in ref:
            path = Path(ref).expanduser()
            if not path.is_absolute():
                path = self.source.parent / path
        else:
            builtin = data_dir(RESOURCE_DIRS[what]) / ref
            path = site_dir / ref if site_dir is not None and (site_dir / ref).is_file() else builtin
        if not path.is_file():
            raise SystemProfileError(
                f"{what} {path} named by system profile {self.source} does not "
                f"exist; fix system.{what} in the profile"
            )
        return path.resolve()

    def launcher(self, name: str | None = None) -> Launcher:
        name = name or self.default_launcher
        if name not in self.launchers:
            raise SystemProfileError(
                f"system {self.name!r} has no launcher {name!r}; choose one of "
                f"{', '.join(sorted(self.launchers))}"
            )
        return self.launchers[name]


@functools.cache
def data_dir(sub: str = "") -> Path:
    """A folder of the built-in system data (package data under ``energy_hpc/systems/``).

    A rendered script names its modules file by path, so the data must be plain files on disk, as
    pip installs them (an editable install reads them from the checkout)."""
    root = files("energy_hpc").joinpath("systems")
    if not isinstance(root, Path) or not root.is_dir():
        raise SystemProfileError(
            f"energy-hpc's built-in system data is not a folder on disk ({root}); "
            "reinstall energy-hpc with pip (not as a zip)"
        )
    return root / sub if sub else root


def builtin_profiles() -> list[str]:
    """The names of the built-in system profiles."""
    return sorted(p.stem for p in data_dir().glob("*.toml"))


def resolve_profile_path(system: str) -> Path:
    """A built-in name (``frontier``) or a path to the user's own profile TOML."""
    looks_like_path = "/" in system or system.endswith(".toml")
    if looks_like_path:
        path = Path(system).expanduser()
        if not path.is_file():
            raise SystemProfileError(
                f"system profile {system} does not exist; give a built-in name "
                f"({', '.join(builtin_profiles())}) or the path of a TOML file"
            )
        return path.resolve()
    if not _NAME.fullmatch(system) or not (data_dir() / f"{system}.toml").is_file():
        raise SystemProfileError(
            f"unknown system {system!r}; use one of {', '.join(builtin_profiles())} "
            "or the path of your own profile (copy one of energy_hpc/systems/*.toml)"
        )
    return data_dir() / f"{system}.toml"


def load_profile(system: str | Path) -> SystemProfile:
    path = resolve_profile_path(str(system))
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemProfileError(f"cannot read system profile {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SystemProfileError(f"system profile {path} is not valid TOML: {exc}") from None
    return parse_profile(data, path)


class _Table:
    """Typed, exhaustive reads from one TOML table; unknown keys are errors."""

    def __init__(self, data: Any, where: str, path: Path) -> None:
        if not isinstance(data, dict):
            raise SystemProfileError(f"{path}: [{where}] must be a table")
        self.data, self.where, self.path = data, where, path
        self.used: set[str] = set()

    def _fail(self, key: str, msg: str) -> SystemProfileError:
        return SystemProfileError(f"{self.path}: {self.where}.{key} {msg}")

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise self._fail(key, "is missing")
            return default
        value = self.data[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise self._fail(key, f"must be an integer, not {value!r}")
        if not isinstance(value, kind):
            raise self._fail(key, f"must be a {kind.__name__}, not {value!r}")
        return value

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        value = self.get(key, list, default)
        if not all(isinstance(v, str) for v in value):
            raise self._fail(key, "must be a list of strings")
        return tuple(value)

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise SystemProfileError(f"{self.path}: unknown key(s) in [{self.where}]: {', '.join(extra)}")


def _check_directives(directives: tuple[str, ...], where: str, path: Path) -> tuple[str, ...]:
    for d in directives:
        if not _DIRECTIVE.fullmatch(d):
            raise SystemProfileError(
                f"{path}: {where} has directive {d!r}; a directive is one option such as "
                "'--constraint=nvme' (no quotes, '#', '$', backslashes or line breaks)"
            )
    return directives


def _check_env(env: Any, where: str, path: Path) -> tuple[tuple[str, str], ...]:
    if not isinstance(env, dict):
        raise SystemProfileError(f'{path}: {where} must be a table of NAME = "value"')
    out = []
    for k, v in env.items():
        if not _ENV_NAME.fullmatch(k) or not isinstance(v, str) or not _ENV_VALUE.fullmatch(v):
            raise SystemProfileError(
                f"{path}: {where}.{k} = {v!r} is not allowed; names are shell identifiers and values "
                "plain text with at most $NAME or ${NAME} references (no quotes, backticks, $( ) or "
                "backslashes)"
            )
        out.append((k, v))
    return tuple(out)


def parse_profile(data: Mapping[str, Any], path: Path) -> SystemProfile:
    top = _Table(dict(data), "profile", path)
    sysinfo = _Table(top.get("system", dict), "system", path)
    node = _Table(top.get("node", dict), "node", path)
    slurm = _Table(top.get("slurm", dict), "slurm", path)
    sig = _Table(top.get("signal", dict), "signal", path)
    launch = _Table(top.get("launcher", dict), "launcher", path)
    env = _check_env(top.get("env", dict, {}), "env", path)
    opt_data = top.get("optional", dict, {})
    limits_data = top.get("limits", dict, {})
    storage_data = top.get("storage", dict, {})
    top.done()

    name = sysinfo.get("name", str)
    if not _NAME.fullmatch(name):
        raise SystemProfileError(f"{path}: system.name {name!r} must be letters, digits, '.', '_', '-'")
    description = sysinfo.get("description", str, "")
    template = sysinfo.get("template", str)
    modules = sysinfo.get("modules", str)
    sysinfo.done()

    try:
        vendor = GpuVendor(node.get("gpu_vendor", str))
    except ValueError:
        raise SystemProfileError(
            f"{path}: node.gpu_vendor must be one of {', '.join(v.value for v in GpuVendor)}"
        ) from None
    gpus = node.get("gpus", int)
    ranks = node.get("ranks", int)
    cores = node.get("cores_per_rank", int)
    gpr = node.get("gpus_per_rank", int, 0)
    visible = node.get("visible_devices", str, "")
    node_cores = node.get("cores", int, 0)
    node.done()
    if ranks < 1 or cores < 1 or gpus < 0 or gpr < 0 or node_cores < 0:
        raise SystemProfileError(
            f"{path}: node.ranks and node.cores_per_rank must be >= 1, node.gpus, node.gpus_per_rank "
            "and node.cores >= 0"
        )
    if node_cores and ranks * cores > node_cores:
        raise SystemProfileError(
            f"{path}: {ranks} ranks × {cores} cores per rank exceed node.cores = {node_cores}"
        )
    if gpus and gpr and ranks * gpr > gpus:
        raise SystemProfileError(
            f"{path}: {ranks} ranks × {gpr} GPU(s) per rank exceed the node's {gpus} GPUs"
        )
    if (vendor is GpuVendor.NONE) != (gpus == 0):
        raise SystemProfileError(
            f"{path}: node.gpu_vendor = {vendor.value!r} does not fit node.gpus = {gpus}"
        )

    partition = slurm.get("partition", str, "")
    qos = slurm.get("qos", str, "")
    constraint = slurm.get("constraint", str, "")
    for key, value in (("partition", partition), ("qos", qos), ("constraint", constraint)):
        if value:
            try:
                check_slurm_value(key, value)
            except SlurmError as exc:
                raise SystemProfileError(f"{path}: slurm.{key}: {exc}") from None
    account_required = slurm.get("account_required", bool, False)
    account_suffix = slurm.get("account_suffix", str, "")
    time = slurm.get("time", str, "00:30:00")
    try:
        check_time(time)
    except SlurmError as exc:
        raise SystemProfileError(f"{path}: slurm.time: {exc}") from None
    directives = _check_directives(slurm.strings("directives", ()), "slurm.directives", path)
    gpu_freq = slurm.get("gpu_freq", bool, gpus > 0)
    gpu_power = slurm.get("gpu_power", bool, False)
    slurm.done()

    signal_name = sig.get("name", str, "USR1").upper().removeprefix("SIG")
    if signal_name not in ("USR1", "USR2", "TERM", "INT"):
        raise SystemProfileError(f"{path}: signal.name must be USR1, USR2, TERM or INT")
    signal_seconds = sig.get("seconds", int, 120)
    if not 0 <= signal_seconds <= 65535:
        raise SystemProfileError(f"{path}: signal.seconds must be between 0 and 65535 (sbatch's limit)")
    sig.done()

    default_launcher = launch.get("default", str)
    launchers: dict[str, Launcher] = {}
    for lname, ldata in launch.data.items():
        if lname == "default":
            continue
        launch.used.add(lname)
        lt = _Table(ldata, f"launcher.{lname}", path)
        argv = lt.strings("argv")
        try:
            signal_to = SignalTo(lt.get("signal_to", str, "steps"))
        except ValueError:
            raise SystemProfileError(
                f"{path}: launcher.{lname}.signal_to must be 'steps' or 'batch'"
            ) from None
        lt.done()
        if not argv:
            raise SystemProfileError(f"{path}: launcher.{lname}.argv is empty")
        for arg in argv:
            try:
                arg.format(**dict.fromkeys(LAUNCHER_FIELDS, 1))
            except (KeyError, IndexError, ValueError) as exc:
                raise SystemProfileError(
                    f"{path}: launcher.{lname}.argv item {arg!r} uses an unknown placeholder ({exc}); "
                    f"known: {', '.join('{' + f + '}' for f in LAUNCHER_FIELDS)}"
                ) from None
        launchers[lname] = Launcher(lname, argv, signal_to)
    launch.done()
    if default_launcher not in launchers:
        raise SystemProfileError(
            f"{path}: launcher.default = {default_launcher!r} names no [launcher.*] table"
        )

    optional: dict[str, Optional_] = {}
    for oname, odata in opt_data.items():
        if not _NAME.fullmatch(oname):
            raise SystemProfileError(f"{path}: optional.{oname}: names are letters, digits, '.', '_', '-'")
        ot = _Table(odata, f"optional.{oname}", path)
        optional[oname] = Optional_(
            name=oname,
            help=ot.get("help", str, ""),
            directives=_check_directives(ot.strings("directives", ()), f"optional.{oname}.directives", path),
            env=_check_env(ot.get("env", dict, {}), f"optional.{oname}.env", path),
            cores_per_node=ot.get("cores", int, 0),
        )
        ot.done()
        if optional[oname].cores_per_node < 0:
            raise SystemProfileError(f"{path}: optional.{oname}.cores must be >= 0")

    max_nodes, limits = _parse_limits(limits_data, path)
    st = _Table(storage_data, "storage", path)
    storage = Storage(
        read_only=_check_prefixes(st.strings("read_only", ()), "storage.read_only", path),
        not_for_jobs=_check_prefixes(st.strings("not_for_jobs", ()), "storage.not_for_jobs", path),
        write_to=st.get("write_to", str, ""),
    )
    st.done()

    return SystemProfile(
        name=name,
        description=description,
        source=path,
        template=template,
        modules=modules,
        gpus_per_node=gpus,
        gpu_vendor=vendor,
        ranks_per_node=ranks,
        cores_per_rank=cores,
        gpus_per_rank=gpr,
        visible_devices=visible,
        partition=partition,
        qos=qos,
        constraint=constraint,
        account_required=account_required,
        account_suffix=account_suffix,
        time=time,
        directives=directives,
        signal_name=signal_name,
        signal_seconds=signal_seconds,
        launchers=launchers,
        default_launcher=default_launcher,
        env=env,
        optional=optional,
        cores_per_node=node_cores,
        max_nodes=max_nodes,
        limits=limits,
        storage=storage,
        gpu_freq=gpu_freq,
        gpu_power=gpu_power,
    )


def _check_prefixes(paths: tuple[str, ...], where: str, path: Path) -> tuple[str, ...]:
    for p in paths:
        if not p.startswith("/"):
            raise SystemProfileError(f"{path}: {where} item {p!r} must be an absolute path")
    return paths


def _parse_limits(data: Any, path: Path) -> tuple[int, tuple[LimitBin, ...]]:
    """``[limits]``: ``max_nodes`` and ``[[limits.bins]]`` (name, nodes = [min, max], time,
    partition, qos)."""
    lt = _Table(data, "limits", path)
    max_nodes = lt.get("max_nodes", int, 0)
    bins_data = lt.get("bins", list, [])
    lt.done()
    if max_nodes < 0:
        raise SystemProfileError(f"{path}: limits.max_nodes must be >= 0")
    bins = []
    for i, b in enumerate(bins_data):
        bt = _Table(b, f"limits.bins[{i}]", path)
        name = bt.get("name", str, f"bin {i + 1}")
        nodes = bt.get("nodes", list, [1, max_nodes or 2**31])
        time = bt.get("time", str)
        partition = bt.get("partition", str, "")
        qos = bt.get("qos", str, "")
        bt.done()
        if (
            len(nodes) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in nodes)
            or not 1 <= nodes[0] <= nodes[1]
        ):
            raise SystemProfileError(
                f"{path}: limits.bins[{i}].nodes must be [min, max] with 1 <= min <= max"
            )
        try:
            seconds = check_time(time)
            for kind, value in (("partition", partition), ("qos", qos)):
                if value:
                    check_slurm_value(kind, value)
        except SlurmError as exc:
            raise SystemProfileError(f"{path}: limits.bins[{i}]: {exc}") from None
        bins.append(LimitBin(name, nodes[0], nodes[1], time, seconds, partition, qos))
    return max_nodes, tuple(bins)
