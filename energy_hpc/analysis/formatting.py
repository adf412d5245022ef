"""How the analysis writes numbers and text: the cells of every table (energy, scaling), JSON values,
LaTeX and Markdown tables, and the lines every output carries (what kind of data, what each ± is). One
place, so the table and the scaling table write a number, a NaN, a list or a LaTeX special character the
same way."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from energy_hpc.store import EMULATED_MARK, sensor_words

# a cell with no value (NaN): never "nan", which reads like a number
MISSING = "-"

# every character LaTeX treats specially in text, and what stands for it; "±" is not special but is not
# in LaTeX's default input either, so it becomes the math symbol
LATEX_SPECIALS = {
    "\\": "\\textbackslash{}",
    "{": "\\{",
    "}": "\\}",
    "$": "\\$",
    "&": "\\&",
    "#": "\\#",
    "%": "\\%",
    "_": "\\_",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
    "±": "$\\pm$",
}
_LATEX_TRANSLATION = str.maketrans(LATEX_SPECIALS)


def format_number(value: Any, digits: int = 4) -> str:
    """One cell: a float to ``digits`` significant digits (NaN as ``-``, zero as ``0``), a list or tuple
    joined with ``; ``, anything else as ``str``."""
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        if value == 0:
            return "0"
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value))
    return str(value)


def jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot hold made plain: sets and tuples as lists, numpy scalars as Python
    numbers, NaN and infinities as None (null)."""
    if isinstance(value, dict):
        return {k: jsonable(x) for k, x in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(x) for x in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def latex_escape(text: str) -> str:
    """``text`` as LaTeX prints it: every special character escaped, in one pass (so the braces of
    ``\\textbackslash{}`` are not escaped again)."""
    return str(text).translate(_LATEX_TRANSLATION)


def latex_table(
    headers: Sequence[str],
    body: Sequence[Sequence[str]],
    column_spec: str,
    comments_before: Sequence[str] = (),
    comments_after: Sequence[str] = (),
) -> str:
    """A ``tabular`` with every header and cell escaped, and comment lines (``% ...``, escaped too)
    before and after it."""
    lines = [f"% {latex_escape(c)}" for c in comments_before]
    lines += [
        "\\begin{tabular}{" + column_spec + "}",
        "\\hline",
        " & ".join(latex_escape(h) for h in headers) + " \\\\",
        "\\hline",
    ]
    lines += [" & ".join(latex_escape(c) for c in cells) + " \\\\" for cells in body]
    lines += ["\\hline", "\\end{tabular}"]
    lines += [f"% {latex_escape(c)}" for c in comments_after]
    return "\n".join(lines) + "\n"


def markdown_table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table whose columns are padded to their widest cell."""
    widths = [
        max(len(h), *(len(cells[i]) for cells in body)) if body else len(h) for i, h in enumerate(headers)
    ]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |" for cells in body
    ]
    return lines


# what each ± is, under every table that shows them
UNCERTAINTY_LEGEND = (
    "±meas: measurement uncertainty, 1 sigma (sensor model, docs/analysis.md; for an ESTIMATE it includes "
    "the watts-per-core assumption); ±SEM: standard error of the mean from the spread between the n iter "
    "iterations (all repeats pooled; '-' when fewer than 2); ±total: both in quadrature"
)


def is_emulated(kind: str) -> bool:
    """Whether a row's ``data`` is synthetic data from emulated sensors (``EMULATED h100``)."""
    return str(kind).startswith(EMULATED_MARK)


def data_banner(rows: Sequence[dict[str, Any]]) -> str:
    """One line saying what kind of numbers these are (every output carries it)."""
    kinds = {r.get("data", "measured") for r in rows}
    parts = []
    if "SYNTHETIC" in kinds:
        parts.append("SYNTHETIC sensor data (not measurements)")
    for kind in sorted(k for k in kinds if is_emulated(k)):
        parts.append(f"SYNTHETIC ({sensor_words(kind)}, not a measurement)")
    if "ESTIMATE" in kinds:
        parts.append("ESTIMATE from CPU time x watts per core (a model, not measurements)")
    if "measured" in kinds or not kinds:
        parts.append("measured (counter = hardware energy counter, integral = sampled power)")
    return ("MIXED: " if len(parts) > 1 else "") + "; ".join(parts)
