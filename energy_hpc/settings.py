"""Settings from the environment, in one place: every variable energy-hpc reads to tune itself.

:class:`Settings` is a frozen record built once, at the start of a command, by
:meth:`Settings.from_env`; a value it cannot use is one line naming the variable, the value and what
is allowed (a :class:`SettingsError`). Code reads the settings of the moment with :func:`current`
when it needs them, never at import. Tests change them with :func:`override`, a context manager, and
processes started by energy-hpc (the sampling child) get them through their environment
(:meth:`Settings.to_env`), the same interface a user has.

Launch facts (``SLURM_*``, ``PMI_*``, ``*_VISIBLE_DEVICES``) are not settings: they describe how this
process was started, and :mod:`energy_hpc.context` reads them from the environment it is given.
docs/settings.md lists every variable.

A leaf module: it imports nothing of energy_hpc, so any module may read the settings.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["SAMPLER_MODES", "Settings", "SettingsError", "current", "load", "override"]

SAMPLER_MODES = ("auto", "process", "thread")
_TRUE = ("1", "yes", "true", "on")
_FALSE = ("0", "no", "false", "off")


class SettingsError(ValueError):
    """An environment variable energy-hpc reads holds a value it cannot use. Like a
    :class:`~energy_hpc.errors.UserError` (which this leaf module cannot import), the ``energy-hpc``
    command prints its one line and exits with ``exit_code``."""

    exit_code = 2


# --------------------------------------------------------------------------- parsing and checks
# A parser turns the variable's text into a value (ValueError if it cannot); a check says what is
# wrong with a value ("" when nothing is). Both name what is allowed, for the error line.


def _bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError


def _bool_or_auto(raw: str) -> bool | None:
    return None if raw.strip().lower() == "auto" else _bool(raw)


def _int(raw: str) -> int:
    return int(raw.strip())


def _float(raw: str) -> float:
    return float(raw.strip())


def _text(raw: str) -> str:
    return raw


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


def _lower(raw: str) -> str:
    return raw.strip().lower()


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_optional_bool(v: Any) -> bool:
    return v is None or isinstance(v, bool)


def _at_least(lo: float, whole: bool = False) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int if whole else (int, float)):
            return False
        return not math.isnan(v) and v >= lo

    return check


def _above(lo: float) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and v > lo

    return check


def _is_text(v: Any) -> bool:
    return isinstance(v, str)


def _is_path(v: Any) -> bool:
    return isinstance(v, Path)


def _is_optional_path(v: Any) -> bool:
    return v is None or isinstance(v, Path)


def _is_sampler(v: Any) -> bool:
    return v is None or v in SAMPLER_MODES


def _json_object(raw: str) -> str:
    """A JSON object's text, as compact JSON with sorted keys (ValueError if it is not one)."""
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _is_json_object(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        return v == "" or isinstance(json.loads(v), dict)
    except ValueError:
        return False


def _is_gather_layout(v: Any) -> bool:
    return v in ("auto", "single", "nodes")


def _meta(env: str, parse: Callable[[str], Any], ok: Callable[[Any], bool], allowed: str) -> dict[str, Any]:
    """A field's variable, parser, check and the words saying what is allowed."""
    return {"env": env, "parse": parse, "ok": ok, "allowed": allowed}


def _default_cache(env: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/energy-hpc``, else ``~/.cache/energy-hpc``."""
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "energy-hpc"


_SECONDS_0 = "a number of seconds >= 0"
_SECONDS = "a number of seconds > 0"
_WHOLE = "a whole number >= 1"
_ON_OFF = "1/yes/true/on or 0/no/false/off"


@dataclass(frozen=True)
class Settings:
    """What the environment sets, validated. Field order is the order of docs/settings.md."""

    mpi: bool | None = field(
        default=None,
        metadata=_meta("ENERGY_HPC_MPI", _bool_or_auto, _is_optional_bool, f"{_ON_OFF}, or auto/unset"),
    )
    """Initialise MPI (True), never (False), or when an MPI launcher started the process (None)."""
    spin_s: float = field(
        default=0.0005, metadata=_meta("ENERGY_HPC_SPIN_S", _float, _at_least(0.0), _SECONDS_0)
    )
    """Pause between tests of an MPI transfer in progress."""
    signal_grace_s: float = field(
        default=10.0, metadata=_meta("ENERGY_HPC_SIGNAL_GRACE_S", _float, _at_least(0.0), _SECONDS_0)
    )
    """After a signal, how long rank 0 still waits for the other ranks to report."""
    gather_ahead: int = field(
        default=4, metadata=_meta("ENERGY_HPC_GATHER_AHEAD", _int, _at_least(1, whole=True), _WHOLE)
    )
    """Requests rank 0 keeps in flight while it gathers."""
    gather_timeout_s: float = field(
        default=600.0, metadata=_meta("ENERGY_HPC_GATHER_TIMEOUT", _float, _above(0.0), _SECONDS)
    )
    """How long rank 0 waits for a silent rank whose spill file cannot tell it whether the rank lives."""
    gather_piece_samples: int = field(
        default=1 << 20,
        metadata=_meta("ENERGY_HPC_GATHER_PIECE_SAMPLES", _int, _at_least(1, whole=True), _WHOLE),
    )
    """Samples per piece a rank sends to rank 0 (rank 0 holds at most four pieces)."""
    gather_layout: str = field(
        default="auto",
        metadata=_meta("ENERGY_HPC_GATHER_LAYOUT", _lower, _is_gather_layout, "one of auto, single, nodes"),
    )
    """How the run is written: one file (single), one file per node behind an index run file (nodes),
    or by node count (auto)."""
    pretend_nodes: int = field(
        default=0,
        metadata=_meta("ENERGY_HPC_PRETEND_NODES", _int, _at_least(0, whole=True), "a whole number >= 0"),
    )
    """Split the ranks into this many pretend nodes instead of by shared memory (0: real nodes)."""
    keep_spills: bool = field(
        default=False, metadata=_meta("ENERGY_HPC_KEEP_SPILLS", _bool, _is_bool, _ON_OFF)
    )
    """Keep the per-rank spill files after the run file is written."""
    fallback_dir: Path | None = field(
        default=None,
        metadata=_meta("ENERGY_HPC_FALLBACK_DIR", _path, _is_optional_path, "a folder, or unset"),
    )
    """Where a rank writes its whole spill when the output folder is full at the end of the run
    (None: ``local_dir`` where the system has one, else the temporary folder, ``$TMPDIR`` or /tmp)."""
    sampler: str | None = field(
        default=None,
        metadata=_meta(
            "ENERGY_HPC_SAMPLER", _lower, _is_sampler, f"one of {', '.join(SAMPLER_MODES)}, or unset"
        ),
    )
    """Where the sampler runs, overriding the job file's ``[measure] sampler`` (None: the job file's)."""
    sensor_timeout_s: float = field(
        default=10.0, metadata=_meta("ENERGY_HPC_SENSOR_TIMEOUT_S", _float, _above(0.0), _SECONDS)
    )
    """A sensor read that has not returned after this long is taken for hung."""
    cache: Path = field(
        default_factory=lambda: _default_cache(os.environ),
        metadata=_meta("ENERGY_HPC_CACHE", _path, _is_path, "a folder"),
    )
    """Where random-weight models are built."""
    venv: str = field(default="", metadata=_meta("ENERGY_HPC_VENV", _text, _is_text, "a folder"))
    """The virtual environment a submitted job activates ("": the one energy-hpc runs in)."""
    account: str = field(default="", metadata=_meta("SBATCH_ACCOUNT", _text, _is_text, "an account name"))
    """The Slurm account ``energy-hpc submit`` and ``sweep`` charge when ``--account`` is not given."""
    system: str = field(default="", metadata=_meta("ENERGY_HPC_SYSTEM", _text, _is_text, "a profile name"))
    """The system profile a job script was rendered for (set by the script; "" outside jobs)."""
    local_dir: Path | None = field(
        default=None, metadata=_meta("ENERGY_HPC_LOCAL_DIR", _path, _is_optional_path, "a folder, or unset")
    )
    """Node-local storage of the job, where the system offers it (set by the script)."""
    scheduler_settings: str = field(
        default="",
        metadata=_meta(
            "ENERGY_HPC_SCHEDULER_SETTINGS",
            _json_object,
            _is_json_object,
            'a JSON object, e.g. {"gpu_freq": "1200", "gpu_power_W": 300}',
        ),
    )
    """The device settings Slurm applied for the job (``--gpu-freq``, ``--gpu-power``) as a JSON object
    (set by the script; "" outside such jobs); the run file keeps it as ``scheduler_settings``."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.metadata["ok"](value):
                raise SettingsError(
                    f"setting {f.name}={_show(value)} ({f.metadata['env']}) is not allowed: "
                    f"use {f.metadata['allowed']}"
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """The settings ``env`` holds; unset and empty variables take their defaults."""
        values: dict[str, Any] = {"cache": _default_cache(env)}
        for f in fields(cls):
            var = f.metadata["env"]
            raw = env.get(var, "")
            if not raw.strip():
                continue
            try:
                value = f.metadata["parse"](raw)
            except ValueError:
                value = ValueError
            if value is ValueError or not f.metadata["ok"](value):
                raise SettingsError(f"{var}={raw!r} is not allowed: use {f.metadata['allowed']}")
            values[f.name] = value
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (field names), validated like the environment's values."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown setting {unknown[0]!r}; settings are {', '.join(sorted(known))}")
        return replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The variables that give a child process these settings (unset ones left out)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == "":
                continue
            out[f.metadata["env"]] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return out

    @staticmethod
    def variables() -> dict[str, str]:
        """Field name -> the variable it is read from."""
        return {f.name: f.metadata["env"] for f in fields(Settings)}


def _show(value: Any) -> str:
    return repr(str(value)) if isinstance(value, Path) else repr(value)


# --------------------------------------------------------------------------- the current settings

_current: Settings | None = None


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: this process's environment) and make them current.
    Commands call it once at start, so that a bad value stops them before any work."""
    global _current
    _current = Settings.from_env(os.environ if env is None else env)
    return _current


def current() -> Settings:
    """The settings in force: the last :func:`load` or :func:`override`; read from the environment on
    first use where no command loaded them (a library caller, a test)."""
    return _current if _current is not None else load()


@contextmanager
def override(**changes: Any) -> Iterator[Settings]:
    """``with override(gather_ahead=2): ...``: the current settings with ``changes`` for the block,
    restored after it. For tests and embedding programs; a child process started inside the block
    gets the changed settings through its environment."""
    global _current
    before = _current
    _current = current().replace(**changes)
    try:
        yield _current
    finally:
        _current = before
