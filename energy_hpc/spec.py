"""Job files: TOML in, a validated :class:`~energy_hpc.jobtypes.Job` with its expanded
:class:`~energy_hpc.jobtypes.Case` list out (the types live in :mod:`energy_hpc.jobtypes`).

Everything is checked before any work starts: an unknown key (with a did-you-mean), a wrong type,
an out-of-range value, an unknown task, a missing model folder. Each problem is one
:class:`~energy_hpc.errors.SpecError` line naming the key and the fix.

A list value in a case (``dtype = ["fp32", "fp16"]``, ``batch_size = [1, 4]``, or a scalar task option
such as ``steps = [20, 40]``) expands into a sweep: the cases are the cross product of all lists.
"""

from __future__ import annotations

import difflib
import itertools
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from energy_hpc.errors import ModelSourceError, SpecError
from energy_hpc.jobtypes import (
    COMPRESSIONS,
    DEVICES,
    DTYPES,
    MAX_CASES,
    NAME_RE,
    SAMPLERS,
    SOURCES,
    Case,
    Job,
    Measure,
)
from energy_hpc.telemetry.registry import EMULATED, check_emulated_part, sensor_choices
from energy_hpc.workloads.models import check_random_task, random_config_names
from energy_hpc.workloads.options import Option
from energy_hpc.workloads.registry import task_options, tasks

# ---------------------------------------------------------------- helpers


def _did_you_mean(key: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(sorted(known))})"


def _check_keys(table: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            raise SpecError(f"{where}: unknown key {key!r}{_did_you_mean(key, known)}")


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table"}.get(
        type(v), type(v).__name__
    )


def _number(v: Any, where: str, *, lo: float, hi: float, integer: bool = False) -> float | int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        want = "an integer" if integer else "a number"
        raise SpecError(f"{where} must be {want}, got {_type_name(v)} {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise SpecError(f"{where} must be finite, got {v!r}")
    if not lo <= v <= hi:
        raise SpecError(f"{where} = {v!r} is out of range: use a value from {lo:g} to {hi:g}")
    return v


def _string(v: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str):
        raise SpecError(f"{where} must be a string, got {_type_name(v)} {v!r}")
    if choices is not None and v not in choices:
        raise SpecError(f"{where} = {v!r} is not one of {', '.join(choices)}{_did_you_mean(v, choices)}")
    return v


def _sensor(v: Any, where: str) -> str:
    """A sensor backend name, or ``emulated:<part>`` (an emulated part: EMULATED data, never a
    measurement)."""
    _string(v, where)
    head, sep, part = v.partition(":")
    if sep and head == EMULATED:
        check_emulated_part(part, f"{where} {v!r}")
        return v
    return _string(v, where, sensor_choices())


def _as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list) else [v]


# ---------------------------------------------------------------- sections

_JOB_KEYS = ("name", "description")
_MEASURE_KEYS = (
    "interval_ms",
    "idle_seconds",
    "warmup",
    "iterations",
    "cooldown_seconds",
    "sensors",
    "sensor_options",
    "device",
    "spill_seconds",
    "compression",
    "sampler",
)
_CASE_KEYS = ("task", "model", "source", "dtype", "batch_size", "options", "label", "warmup", "iterations")
_TOP_KEYS = ("job", "measure", "case")


def _parse_measure(t: Mapping[str, Any]) -> Measure:
    if not isinstance(t, dict):
        raise SpecError("[measure] must be a table")
    _check_keys(t, _MEASURE_KEYS, "[measure]")
    d = Measure()
    sensors = t.get("sensors", list(d.sensors))
    if isinstance(sensors, str):
        sensors = [sensors]
    if not isinstance(sensors, list) or not sensors:
        raise SpecError('[measure] sensors must be a non-empty list such as ["auto"]')
    for s in sensors:
        _sensor(s, "[measure] sensors entry")
    opts = t.get("sensor_options", {})
    if not isinstance(opts, dict):
        raise SpecError(
            "[measure] sensor_options must be a table of tables, e.g. "
            "[measure.sensor_options.estimate] watts_per_core = 10"
        )
    for k, v in opts.items():
        _string(k, "[measure.sensor_options] key", tuple(c for c in sensor_choices() if c != "auto"))
        if not isinstance(v, dict):
            raise SpecError(f"[measure.sensor_options.{k}] must be a table")
        if k == EMULATED and "part" in v:
            check_emulated_part(
                _string(v["part"], f"[measure.sensor_options.{EMULATED}] part"),
                f"[measure.sensor_options.{EMULATED}] part",
            )
    return Measure(
        interval_ms=float(
            _number(t.get("interval_ms", d.interval_ms), "[measure] interval_ms", lo=1, hi=60_000)
        ),
        idle_seconds=float(
            _number(t.get("idle_seconds", d.idle_seconds), "[measure] idle_seconds", lo=0, hi=3600)
        ),
        warmup=int(_number(t.get("warmup", d.warmup), "[measure] warmup", lo=0, hi=10_000, integer=True)),
        iterations=int(
            _number(
                t.get("iterations", d.iterations), "[measure] iterations", lo=1, hi=1_000_000, integer=True
            )
        ),
        cooldown_seconds=float(
            _number(
                t.get("cooldown_seconds", d.cooldown_seconds), "[measure] cooldown_seconds", lo=0, hi=3600
            )
        ),
        sensors=tuple(sensors),
        sensor_options=opts,
        device=_string(t.get("device", d.device), "[measure] device", DEVICES),
        spill_seconds=float(
            _number(t.get("spill_seconds", d.spill_seconds), "[measure] spill_seconds", lo=1, hi=86_400)
        ),
        compression=_string(t.get("compression", d.compression), "[measure] compression", COMPRESSIONS),
        sampler=_string(t.get("sampler", d.sampler), "[measure] sampler", SAMPLERS),
    )


def _check_option(task: str, name: str, value: Any, opt: Option, where: str) -> Any:
    try:
        return opt.check(value)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: option {name!r} of task {task!r}: {exc}") from None


def _resolve_model(model: str, source: str, base: Path, where: str) -> str:
    if source == "local":
        p = Path(model).expanduser()
        p = p if p.is_absolute() else (base / p)
        if not p.is_dir():
            raise SpecError(
                f"{where}: model folder {str(p)!r} does not exist; stage the model there "
                f'(energy-hpc stage MODEL --to DIR on a login node), or set source = "hub" '
                f'for a hub id or source = "random" for random weights'
            )
        return str(p.resolve())
    if source == "random":
        p = Path(model).expanduser()
        p = p if p.is_absolute() else (base / p)
        if p.is_dir():
            return str(p.resolve())
        names = random_config_names()
        if model not in names:
            raise SpecError(
                f"{where}: no built-in config {model!r} for random weights "
                f"{_did_you_mean(model, names).strip()}; or give a folder holding a config"
            )
        return model
    return model  # hub id: resolved (offline) when the case loads


def _resolve_path_option(opt: Option, value: Any, base: Path) -> Any:
    """A path-typed option (prompt file, refiner folder, input folder) that exists relative to the job
    file's folder is taken from there, as model folders are; anything else (a hub id, a config name,
    an absolute path) is left as written."""
    if not getattr(opt, "path", False) or not isinstance(value, str) or not value:
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return value
    candidate = base / p
    return str(candidate.resolve()) if candidate.exists() else value


def _expand_case(raw: Mapping[str, Any], n: int, base: Path, start_index: int) -> list[Case]:
    where = f"[[case]] #{n + 1}"
    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be a table")
    _check_keys(raw, _CASE_KEYS, where)
    known_tasks = tuple(tasks())
    if "task" not in raw:
        raise SpecError(f"{where}: missing key 'task' (one of {', '.join(known_tasks)})")
    task = _string(raw["task"], f"{where} task", known_tasks)
    if "model" not in raw:
        raise SpecError(
            f"{where}: missing key 'model' (a local folder, a hub id with source = \"hub\", "
            f'or a config name with source = "random")'
        )
    source = _string(raw.get("source", "local"), f"{where} source", SOURCES)
    label = _string(raw.get("label", ""), f"{where} label")
    warmup = raw.get("warmup")
    if warmup is not None:
        warmup = int(_number(warmup, f"{where} warmup", lo=0, hi=10_000, integer=True))
    iterations = raw.get("iterations")
    if iterations is not None:
        iterations = int(_number(iterations, f"{where} iterations", lo=1, hi=1_000_000, integer=True))

    axes: dict[str, list[Any]] = {}
    axes["model"] = [_string(m, f"{where} model") for m in _as_list(raw["model"])]
    axes["dtype"] = [_string(d, f"{where} dtype", DTYPES) for d in _as_list(raw.get("dtype", "fp32"))]
    axes["batch_size"] = [
        int(_number(b, f"{where} batch_size", lo=1, hi=65_536, integer=True))
        for b in _as_list(raw.get("batch_size", 1))
    ]
    schema = task_options(task)
    opts_raw = raw.get("options", {})
    if not isinstance(opts_raw, dict):
        raise SpecError(f"{where}: options must be a table ([case.options])")
    fixed: dict[str, Any] = {}
    for k, v in opts_raw.items():
        if k not in schema:
            raise SpecError(
                f"{where}: unknown option {k!r} for task {task!r}{_did_you_mean(k, tuple(schema))}"
            )
        opt = schema[k]
        if isinstance(v, list) and not opt.is_list:
            axes[f"options.{k}"] = [_check_option(task, k, x, opt, where) for x in v]
            if not axes[f"options.{k}"]:
                raise SpecError(f"{where}: option {k!r} is an empty list; give at least one value")
        else:
            fixed[k] = _check_option(task, k, v, opt, where)
    for k, opt in schema.items():
        if k not in fixed and f"options.{k}" not in axes:
            fixed[k] = opt.default
    for k in ("model", "dtype", "batch_size"):
        if not axes[k]:
            raise SpecError(f"{where}: {k} is an empty list; give at least one value")

    for k, v in list(fixed.items()):
        fixed[k] = _resolve_path_option(schema[k], v, base)
    for k in [a for a in axes if a.startswith("options.")]:
        axes[k] = [_resolve_path_option(schema[k.split(".", 1)[1]], v, base) for v in axes[k]]
    resolved = {m: _resolve_model(m, source, base, where) for m in axes["model"]}
    for m in axes["model"]:
        try:
            check_random_task(task, source, resolved[m])
        except ModelSourceError as exc:
            raise SpecError(f"{where}: {exc}") from None
    names = list(axes)
    combos = list(itertools.product(*(axes[k] for k in names)))
    if start_index + len(combos) > MAX_CASES:
        raise SpecError(
            f"{where} expands to {start_index + len(combos)} cases in all, more than {MAX_CASES}; "
            "split the sweep into several jobs"
        )
    cases = []
    for i, combo in enumerate(combos):
        values = dict(zip(names, combo, strict=True))
        options = dict(fixed)
        options.update({k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("options.")})
        cases.append(
            Case(
                index=start_index + i,
                task=task,
                model=values["model"],
                source=source,
                model_path=resolved[values["model"]],
                dtype=values["dtype"],
                batch_size=values["batch_size"],
                options=dict(sorted(options.items())),
                label=label,
                warmup=warmup,
                iterations=iterations,
            )
        )
    return cases


def parse_job(text: str, path: str | Path = "<job>") -> Job:
    """Parse and validate a job file's text; model paths resolve against the file's folder."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}; fix the line it names") from None
    _check_keys(data, _TOP_KEYS, str(path))
    job = data.get("job", {})
    if not isinstance(job, dict):
        raise SpecError('[job] must be a table with at least name = "..."')
    _check_keys(job, _JOB_KEYS, "[job]")
    if "name" not in job:
        raise SpecError(f'{path}: [job] needs a name, e.g. name = "my-study"')
    name = _string(job["name"], "[job] name")
    if not NAME_RE.match(name):
        raise SpecError(
            f"[job] name {name!r} must be 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (it becomes part of file names)"
        )
    description = _string(job.get("description", ""), "[job] description")
    measure = _parse_measure(data.get("measure", {}))
    raw_cases = data.get("case")
    if raw_cases is None:
        raise SpecError(f"{path}: no cases; add at least one [[case]] table with task and model")
    if not isinstance(raw_cases, list):
        raise SpecError(f"{path}: 'case' must be an array of tables: write [[case]], not [case]")
    cases: list[Case] = []
    for n, raw in enumerate(raw_cases):
        cases.extend(_expand_case(raw, n, path.parent if path.name != "<job>" else Path.cwd(), len(cases)))
    if not cases:
        raise SpecError(f"{path}: no cases; add at least one [[case]] table with task and model")
    return Job(
        name=name, description=description, measure=measure, cases=tuple(cases), path=str(path), text=text
    )


def load_job(path: str | Path) -> Job:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"job file {str(path)!r} does not exist; check the path") from None
    except IsADirectoryError:
        raise SpecError(f"job file {str(path)!r} is a folder; give the .toml file") from None
    except OSError as exc:
        raise SpecError(f"job file {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"job file {str(path)!r} is not UTF-8 text; save it as UTF-8 TOML") from None
    return parse_job(text, path.resolve())
