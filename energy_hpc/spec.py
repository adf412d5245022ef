"""Job files: TOML in, a validated :class:`~energy_hpc.jobtypes.Job` with its expanded
:class:`~energy_hpc.jobtypes.Case` list out (the types live in :mod:`energy_hpc.jobtypes`).

Everything is checked before any work starts: an unknown key (with a did-you-mean), a wrong type,
an out-of-range value, an unknown task, a missing model folder. Each problem is one
:class:`~energy_hpc.errors.SpecError` line naming the key and the fix.

A list value in a case (``dtype = ["fp32", "fp16"]``, ``batch_size = [1, 4]``, or a scalar task option
such as ``steps = [20, 40]``) expands into a sweep: the cases are the cross product of all lists,
counted before any is built.

Hostile files get the same one line: tables and arrays nested more than
:data:`~energy_hpc.jobtypes.MAX_DEPTH` deep, and control characters in any key or string. Control
characters (C0, DEL, C1) are refused everywhere because they corrupt terminals and logs and a NUL cannot
be stored in a run file; tab and line breaks are allowed only in free text that may hold several lines:
``[job] description`` and the string values of ``[case.options]`` (prompts, sentences, a prefix).
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from energy_hpc.errors import ModelSourceError, SpecError
from energy_hpc.jobtypes import (
    COMPONENT_MODES,
    COMPRESSIONS,
    DEVICES,
    DTYPES,
    KNOBS,
    MAX_BATCH_SIZE,
    MAX_CASES,
    MAX_DEPTH,
    NAME_RE,
    SAMPLERS,
    SOURCES,
    TRIAL_ORDERS,
    Case,
    Job,
    Measure,
)
from energy_hpc.telemetry.registry import EMULATED, backends, check_emulated_part, sensor_choices
from energy_hpc.workloads.models import (
    check_hub_id,
    check_model_folder,
    check_random_task,
    random_config_names,
)
from energy_hpc.workloads.options import Option, brief, read_lines
from energy_hpc.workloads.registry import task_options, tasks

# ---------------------------------------------------------------- helpers


def _did_you_mean(key: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(sorted(known))})"


def _check_keys(table: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            raise SpecError(f"{where}: unknown key {brief(key)}{_did_you_mean(key, known)}")


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table"}.get(
        type(v), type(v).__name__
    )


def _number(v: Any, where: str, *, lo: float, hi: float, integer: bool = False) -> float | int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        want = "an integer" if integer else "a number"
        raise SpecError(f"{where} must be {want}, got {_type_name(v)} {brief(v)}")
    if isinstance(v, float) and not math.isfinite(v):
        raise SpecError(f"{where} must be finite, got {v!r}")
    if not lo <= v <= hi:
        raise SpecError(f"{where} = {brief(v)} is out of range: use a value from {lo:g} to {hi:g}")
    return v


def _string(v: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str):
        raise SpecError(f"{where} must be a string, got {_type_name(v)} {brief(v)}")
    if choices is not None and v not in choices:
        raise SpecError(f"{where} = {brief(v)} is not one of {', '.join(choices)}{_did_you_mean(v, choices)}")
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


# ---------------------------------------------------------------- the whole document

# control characters: C0, DEL and C1; free text may hold tab, line feed and carriage return
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _where(path: tuple[str | int, ...]) -> str:
    """A place in the document as messages name it: ``[[case]] #2 options.prompts[0]``."""
    parts: list[str | int] = list(path)
    if len(parts) >= 2 and parts[0] == "case" and isinstance(parts[1], int):
        section, parts = f"[[case]] #{parts[1] + 1}", parts[2:]
    elif parts and parts[0] in ("job", "measure"):
        section, parts = f"[{parts[0]}]", parts[1:]
    else:
        section = "job file"
    text = ""
    for p in parts:
        if isinstance(p, int):
            text += f"[{p}]"
        else:
            name = p if _PLAIN_KEY.fullmatch(p) else brief(p)
            text += f".{name}" if text else name
    return f"{section} {text}" if text else section


def _free_text(path: tuple[str | int, ...]) -> bool:
    """Whether a string value at ``path`` is free text, where tab and line breaks are allowed."""
    return path == ("job", "description") or (
        len(path) >= 4 and path[0] == "case" and isinstance(path[1], int) and path[2] == "options"
    )


def _check_document(data: dict[str, Any]) -> None:
    """Walk the decoded document once, without recursion: no tables or arrays nested more than
    MAX_DEPTH deep, no control characters in keys, none in strings except tab and line breaks in free
    text (a NUL would stop the run file from being written; the others corrupt terminals and logs)."""
    stack: list[tuple[tuple[str | int, ...], Any, int]] = [((), data, 1)]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise SpecError(
                    f"{_where(path)}: tables and arrays nested more than {MAX_DEPTH} levels deep; "
                    "a job file needs a few"
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                if isinstance(k, str) and (c := _CONTROL.search(k)):
                    raise SpecError(
                        f"{_where(path)}: the key {brief(k)} holds the control character "
                        f"U+{ord(c.group()):04X}; keys may hold none"
                    )
                stack.append(((*path, k), v, depth + 1))
        elif isinstance(value, str):
            c = (_CONTROL_IN_TEXT if _free_text(path) else _CONTROL).search(value)
            if c:
                raise SpecError(
                    f"{_where(path)}: {brief(value)} holds the control character U+{ord(c.group()):04X}; "
                    "job-file strings may hold none (tab and line breaks only in [job] description "
                    "and in the text of [case.options])"
                )


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
    "trials",
    "trial_order",
    "seed",
    "steady_tolerance",
    "max_warmup",
)
_CASE_KEYS = (
    "task",
    "model",
    "source",
    "dtype",
    "batch_size",
    "options",
    "label",
    "warmup",
    "iterations",
    "components",
    "component_seconds",
    *KNOBS,
)
# what a device setting may be: (lowest, highest, integer); a value outside is a typo (mW or kHz for W
# or MHz), not a setting any part has
_KNOB_RANGES = {
    "power_cap_W": (1.0, 5000.0, False),
    "gpu_clock_MHz": (1.0, 10_000.0, True),
    "memory_clock_MHz": (1.0, 50_000.0, True),
}
# sensors that see no device whose settings could be changed
_NO_DEVICE_SENSORS = ("estimate", "synthetic", "rapl", "pm_counters")
_BUILT_IN_REAL = ("auto", "nvml", "amdsmi", *_NO_DEVICE_SENSORS)
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
    rows = backends()
    for k, v in opts.items():
        _string(k, "[measure.sensor_options] key", tuple(c for c in sensor_choices() if c != "auto"))
        if not isinstance(v, dict):
            raise SpecError(f"[measure.sensor_options.{k}] must be a table")
        accepted = rows[k].options
        if accepted is not None:  # a backend that lists its options: any other key is a typo
            _check_keys(v, accepted, f"[measure.sensor_options.{k}]")
        if "hygiene" in v:
            _check_hygiene(v["hygiene"], f"[measure.sensor_options.{k}.hygiene]")
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
        **_trial_settings(t, d),
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


def _trial_settings(t: Mapping[str, Any], d: Measure) -> dict[str, Any]:
    """The [measure] settings of trials and warm-up: ``warmup`` (a count, or "steady"), ``trials``,
    ``trial_order``, ``seed``, ``steady_tolerance`` and ``max_warmup``, each checked in one line."""
    warmup = t.get("warmup", d.warmup)
    steady = warmup == "steady"
    if isinstance(warmup, str) and not steady:
        raise SpecError(
            f'[measure] warmup = {brief(warmup)}: use a number of iterations or "steady" (warm up until the '
            "iteration time is stable)"
        )
    for key in ("steady_tolerance", "max_warmup"):
        if key in t and not steady:
            raise SpecError(f'[measure] {key} applies only with warmup = "steady": remove it or set that')
    trials = int(_number(t.get("trials", d.trials), "[measure] trials", lo=1, hi=1000, integer=True))
    default_order = "random" if trials > 1 else "sequential"
    order = _string(t.get("trial_order", default_order), "[measure] trial_order", TRIAL_ORDERS)
    seed = t.get("seed")
    if seed is not None:
        if order != "random":
            raise SpecError('[measure] seed orders the cases only with trial_order = "random": remove it')
        seed = int(_number(seed, "[measure] seed", lo=0, hi=2**32 - 1, integer=True))
    return {
        "warmup": d.warmup
        if steady
        else int(_number(warmup, "[measure] warmup", lo=0, hi=10_000, integer=True)),
        "warmup_rule": "steady" if steady else "fixed",
        "steady_tolerance": float(
            _number(
                t.get("steady_tolerance", d.steady_tolerance), "[measure] steady_tolerance", lo=1e-4, hi=1.0
            )
        ),
        "max_warmup": int(
            _number(t.get("max_warmup", d.max_warmup), "[measure] max_warmup", lo=2, hi=10_000, integer=True)
        ),
        "trials": trials,
        "trial_order": order,
        "seed": seed,
    }


def _with_trials(cases: list[Case], trials: int, path: Path) -> list[Case]:
    """Every case ``trials`` times: trial 0 of every case, then trial 1, ... (indices in that order)."""
    if trials == 1:
        return cases
    if len(cases) * trials > MAX_CASES:
        raise SpecError(
            f"{path}: {len(cases)} cases x {trials} trials = {len(cases) * trials} runs of a case, more than "
            f"{MAX_CASES}; lower [measure] trials or split the job"
        )
    n = len(cases)
    return [replace(c, index=t * n + c.index, trial=t) for t in range(trials) for c in cases]


def _check_hygiene(table: Any, where: str) -> None:
    """The counter-hygiene thresholds a backend takes (telemetry/hygiene.py), checked here rather than
    when the sensor opens after the idle baseline."""
    import dataclasses

    from energy_hpc.telemetry.hygiene import HygieneConfig  # numpy: only when a job sets thresholds

    if not isinstance(table, dict):
        raise SpecError(f"{where} must be a table, e.g. stuck_after_s = 5")
    _check_keys(table, tuple(f.name for f in dataclasses.fields(HygieneConfig)), where)
    for key, value in table.items():
        _number(value, f"{where} {key}", lo=0, hi=1e12)


def _check_option(task: str, name: str, value: Any, opt: Option, where: str) -> Any:
    try:
        return opt.check(value)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: option {name!r} of task {task!r}: {exc}") from None


def _model_folder(p: Path, where: str) -> str:
    try:
        check_model_folder(p)
    except ModelSourceError as exc:
        raise SpecError(f"{where}: {exc}") from None
    return str(p.resolve())


def _resolve_model(model: str, source: str, base: Path, where: str, check_models: bool = True) -> str:
    """The case's ``model_path``; with ``check_models`` False a local folder is resolved but not looked
    at (it may not be staged yet)."""
    if not model.strip():
        raise SpecError(
            f'{where}: model is empty; give a local folder, a hub id with source = "hub", '
            f'or a config name with source = "random"'
        )
    if source == "local":
        p = Path(model).expanduser()
        p = p if p.is_absolute() else (base / p)
        if not check_models:
            return str(p.resolve())
        if not p.is_dir():
            raise SpecError(
                f"{where}: model folder {str(p)!r} does not exist; stage the model there "
                f'(energy-hpc stage MODEL --to DIR on a login node), or set source = "hub" '
                f'for a hub id or source = "random" for random weights'
            )
        return _model_folder(p, where)
    if source == "random":
        p = Path(model).expanduser()
        p = p if p.is_absolute() else (base / p)
        if p.is_dir():
            return _model_folder(p, where)
        names = random_config_names()
        if model not in names:
            raise SpecError(
                f"{where}: no built-in config {model!r} for random weights "
                f"{_did_you_mean(model, names).strip()}; or give a folder holding a config"
            )
        return model
    try:  # a hub id: resolved (offline) when the case loads
        return check_hub_id(model)
    except ModelSourceError as exc:
        raise SpecError(f"{where}: {exc}") from None


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


def _check_path_option(opt: Option, name: str, value: Any, where: str) -> None:
    """A file option must name a readable text file (not a folder, device or pipe; at most
    MAX_TEXT_FILE_BYTES) with a non-empty line, a folder option a folder: checked now, not after the
    idle baseline."""
    if not isinstance(value, str) or not value:
        return
    if opt.path == "file":
        try:
            read_lines(value, f"{where}: options.{name}")
        except ValueError as exc:
            raise SpecError(str(exc)) from None
    elif opt.path == "folder" and not Path(value).is_dir():
        raise SpecError(
            f"{where}: options.{name} {brief(value)} is not a folder "
            "(a relative path is taken from the job file's folder)"
        )


def _expand_case(
    raw: Mapping[str, Any], n: int, base: Path, start_index: int, check_models: bool = True
) -> list[Case]:
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
    components = _string(raw.get("components", "off"), f"{where} components", COMPONENT_MODES)
    component_seconds = float(
        _number(raw.get("component_seconds", 2.0), f"{where} component_seconds", lo=0.001, hi=3600)
    )

    axes: dict[str, list[Any]] = {}
    axes["model"] = [_string(m, f"{where} model") for m in _as_list(raw["model"])]
    axes["dtype"] = [_string(d, f"{where} dtype", DTYPES) for d in _as_list(raw.get("dtype", "fp32"))]
    axes["batch_size"] = [
        int(_number(b, f"{where} batch_size", lo=1, hi=MAX_BATCH_SIZE, integer=True))
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
    for k in KNOBS:
        if raw.get(k) is not None:
            lo, hi, integer = _KNOB_RANGES[k]
            axes[f"knob.{k}"] = [
                _number(x, f"{where} {k}", lo=lo, hi=hi, integer=integer) for x in _as_list(raw[k])
            ]
            if not axes[f"knob.{k}"]:
                raise SpecError(f"{where}: {k} is an empty list; give at least one value")
    for k in ("model", "dtype", "batch_size"):
        if not axes[k]:
            raise SpecError(f"{where}: {k} is an empty list; give at least one value")
    # counted, not built: three lists of 500 values would be 125 million cases
    total = start_index + math.prod(len(v) for v in axes.values())
    if total > MAX_CASES:
        raise SpecError(
            f"{where} expands to {total} cases in all, more than {MAX_CASES}; "
            "split the sweep into several jobs"
        )

    for k, v in list(fixed.items()):
        fixed[k] = _resolve_path_option(schema[k], v, base)
        _check_path_option(schema[k], k, fixed[k], where)
    for k in [a for a in axes if a.startswith("options.")]:
        name = k.split(".", 1)[1]
        axes[k] = [_resolve_path_option(schema[name], v, base) for v in axes[k]]
        for v in dict.fromkeys(axes[k]):
            _check_path_option(schema[name], name, v, where)
    resolved = {m: _resolve_model(m, source, base, where, check_models) for m in axes["model"]}
    for m in axes["model"]:
        try:
            check_random_task(task, source, resolved[m])
        except ModelSourceError as exc:
            raise SpecError(f"{where}: {exc}") from None
    names = list(axes)
    combos = itertools.product(*(axes[k] for k in names))
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
                components=components,
                component_seconds=component_seconds,
                **{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("knob.")},
            )
        )
    return cases


def _check_knobs(measure: Measure, cases: list[Case]) -> None:
    """A power cap or clock needs a device whose settings can be changed: refused on a CPU run (unless
    an emulated part or a site's backend stands for the device) or when the only sensors see no device
    (``estimate``, ``synthetic``, ``rapl``, ``pm_counters``)."""
    asking = next((c for c in cases if c.knobs()), None)
    if asking is None:
        return
    what = ", ".join(f"{k} = {v}" for k, v in asking.knobs().items())
    # on a CPU run only an emulated part or a site's own backend can stand for a device with settings
    stand_in = any(s.split(":", 1)[0] not in _BUILT_IN_REAL for s in measure.sensors)
    if measure.device == "cpu" and not stand_in:
        raise SpecError(
            f'case {asking.index + 1} sets {what}, but [measure] device = "cpu" has no power cap or clock '
            'to set; remove the setting or run on a GPU (device = "auto" or "cuda")'
        )
    if all(s.split(":", 1)[0] in _NO_DEVICE_SENSORS for s in measure.sensors):
        raise SpecError(
            f"case {asking.index + 1} sets {what}, but sensors {list(measure.sensors)} see no device to set "
            'it on; measure a GPU (sensors = ["auto"], ["nvml"], ["amdsmi"] or ["emulated:h100"])'
        )


def parse_job(text: str, path: str | Path = "<job>", *, check_models: bool = True) -> Job:
    """Parse and validate a job file's text; model paths resolve against the file's folder.

    ``check_models=False`` checks everything but whether local model folders are staged (exist and
    hold a saved model): a job can be checked before its weights are copied. Hub ids are checked for
    their form only either way; the hub cache is looked at when a case loads."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except RecursionError:  # the parser recurses once per level of nested arrays and inline tables
        raise SpecError(
            f"{path}: arrays or inline tables nested thousands of levels deep; a job file needs a few"
        ) from None
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise SpecError(f"{path}: not valid TOML: {exc}; fix the line it names") from None
    _check_document(data)
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
            f"[job] name {brief(name)} must be 1-64 letters, digits, '-', '_' or '.', "
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
        base = path.parent if path.name != "<job>" else Path.cwd()
        cases.extend(_expand_case(raw, n, base, len(cases), check_models))
    if not cases:
        raise SpecError(f"{path}: no cases; add at least one [[case]] table with task and model")
    _check_knobs(measure, cases)
    cases = _with_trials(cases, measure.trials, path)
    return Job(
        name=name, description=description, measure=measure, cases=tuple(cases), path=str(path), text=text
    )


def options_in_effect(case: Case) -> list[tuple[str, Option]]:
    """The options that change what ``case`` runs, with their declarations, in the order its task
    declares them: an option another replaces, or one that needs another that is not set, is left out
    (see :class:`~energy_hpc.workloads.options.Option`)."""
    return [
        (name, opt)
        for name, opt in task_options(case.task).items()
        if name in case.options and opt.applies(case.options)
    ]


def load_job(path: str | Path, *, check_models: bool = True) -> Job:
    """Read and validate a job file (see :func:`parse_job` for ``check_models``)."""
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
    return parse_job(text, path.resolve(), check_models=check_models)
