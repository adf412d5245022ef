"""energy-hpc validate: check a job file and list the cases it expands into.

Each case is listed with what it will run with: its model and where it loads from, and the options
that take effect in it, one a line and in full (an option that another replaces or that needs one not
set is left out; an empty value is shown as what it means, e.g. "the model's default").
``--no-models`` checks everything but whether local model folders are staged.
"""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from typing import Any

from energy_hpc.jobtypes import Case, Job

HELP = "check a job file and print the cases it expands into (nothing runs)"

SOURCE_WORDS = {"local": "local folder", "hub": "hub id, from the hub cache", "random": "random weights"}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="job file (TOML)")
    p.add_argument("--json", action="store_true", help="print the cases as JSON")
    p.add_argument(
        "--no-models",
        action="store_true",
        help="do not check that local model folders are staged (everything else is checked)",
    )


def run(args: argparse.Namespace) -> int:
    from energy_hpc.spec import load_job

    job = load_job(args.job, check_models=not args.no_models)
    if args.json:
        rows = [{"case": c.index, **c.params(), "model_path": c.model_path} for c in job.cases]
        print(
            json.dumps(
                {
                    "job": job.name,
                    "measure": {k: v for k, v in vars(job.measure).items() if k != "sensor_options"},
                    "models_checked": not args.no_models,
                    "cases": rows,
                },
                indent=2,
                default=str,
            )
        )
    else:
        width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
        print("\n".join(listing(job, models_checked=not args.no_models, width=width)))
    return 0


def listing(job: Job, *, models_checked: bool = True, width: int = 100) -> list[str]:
    """The job as ``validate`` prints it: a header line, then per case a line and its options."""
    m = job.measure
    lines = [
        f"{job.name}: {len(job.cases)} case(s), sensors {', '.join(m.sensors)}, "
        f"{m.warmup} warm-up + {m.iterations} measured iterations each"
    ]
    if not models_checked and any(c.source == "local" for c in job.cases):
        lines.append("  (model folders not checked: --no-models)")
    for case in job.cases:
        lines += _case_lines(case, m.warmup, m.iterations, models_checked, width)
    return lines


def _case_lines(case: Case, warmup: int, iterations: int, models_checked: bool, width: int) -> list[str]:
    head = f"  {case.index:>3}  {case.task}  {case.model}  {case.dtype}  batch size {case.batch_size}"
    if case.label:
        head += f"  label {json.dumps(case.label, ensure_ascii=False)}"
    if case.warmup is not None or case.iterations is not None:
        w = warmup if case.warmup is None else case.warmup
        n = iterations if case.iterations is None else case.iterations
        head += f"  ({w} warm-up + {n} measured iterations)"
    rows: list[tuple[str, str]] = [("model", _model_text(case, models_checked))]
    rows += _option_rows(case)
    pad = max(len(k) for k, _ in rows) + 2
    lines = [head]
    for key, text in rows:
        first = f"       {key:<{pad}}"
        lines += textwrap.wrap(
            text,
            width=max(width, len(first) + 20),
            initial_indent=first,
            subsequent_indent=" " * len(first),
            break_on_hyphens=False,
        ) or [first.rstrip()]
    return lines


def _model_text(case: Case, models_checked: bool) -> str:
    words = SOURCE_WORDS.get(case.source, case.source)
    if case.source == "local":
        return f"{case.model_path} ({words}{'' if models_checked else ', not checked'})"
    return f"{case.model_path} ({words})"


def _option_rows(case: Case) -> list[tuple[str, str]]:
    """The options that take effect in the case, in the order the task declares them; a list one
    entry a line."""
    from energy_hpc.spec import options_in_effect

    rows: list[tuple[str, str]] = []
    for name, opt in options_in_effect(case):
        value: Any = case.options[name]
        if isinstance(value, list) and value:
            rows += [(name if i == 0 else "", text) for i, text in enumerate(_items(value))]
            continue
        text = opt.shown(value)
        if text is not None:
            rows.append((name, text))
    return rows


def _items(values: list[Any]) -> list[str]:
    """A list option of several entries, one entry a line."""
    return [json.dumps(v, ensure_ascii=False, default=str) for v in values]
