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


def _decimals(unc: float) -> int:
    """The decimal place of ``unc``'s second significant figure (negative: tens, hundreds, ...)."""
    return 1 - math.floor(math.log10(abs(unc)))


def format_uncertainty(value: Any, unc: Any) -> tuple[str, str]:
    """``value`` and its one-sigma ``unc`` as cells: the uncertainty to two significant figures and the
    value to the same decimal place (``12.346``, ``0.047``). Without a finite, positive uncertainty the
    value keeps four significant figures and the uncertainty is ``-``."""
    if not isinstance(value, float) or not math.isfinite(value):
        return format_number(value), MISSING
    if not isinstance(unc, float) or not math.isfinite(unc) or unc <= 0:
        return format_number(value), format_number(unc if isinstance(unc, float) else math.nan)
    places = _decimals(unc)
    unc = round(unc, places)
    if unc and _decimals(unc) != places:  # rounding carried into a new digit (0.0996 -> 0.10)
        places = _decimals(unc)
        unc = round(unc, places)
    value = round(value, places) + 0.0  # + 0.0: no "-0.00"
    digits = max(places, 0)
    return f"{value:.{digits}f}", f"{unc:.{digits}f}"


def value_pm(value: Any, unc: Any) -> str:
    """One cell ``value ± unc`` rounded by :func:`format_uncertainty`; the value alone without an
    uncertainty, ``-`` without a value."""
    v, u = format_uncertainty(value, unc)
    return v if v == MISSING or u == MISSING else f"{v} ± {u}"


def plural(word: str, count: Any = 2.0) -> str:
    """``word`` for ``count`` of it: ``image`` for 1, ``images`` otherwise (``-es`` after s, x, ch,
    sh; ``-ies`` after a consonant and y)."""
    if not word or count == 1:
        return word
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def count_cell(count: Any, unit: str) -> str:
    """A count with its unit in words: ``6 images``, ``1 token`` (``-`` for a missing count)."""
    text = format_number(count)
    if text == MISSING or not unit:
        return text
    return f"{text} {plural(unit, count)}"


def csv_cell(value: Any) -> Any:
    """One CSV field: a number at full precision, an empty field for a missing number (NaN or None,
    so that pandas and spreadsheets read the column as numbers), a list joined with ``; ``."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if math.isfinite(value) else ""
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value))
    return value


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
    "Every ± is one standard deviation (1 sigma). ±meas: measurement uncertainty (sensor model, "
    "docs/analysis.md; for an ESTIMATE it includes the watts-per-core assumption); ±SEM: standard error of "
    "the mean from the spread between the n iter iterations (all repeats pooled; '-' when fewer than 2); "
    "±total: both in quadrature"
)


def compact_legend(unit: str) -> list[str]:
    """The lines under the compact energy table (each under 100 characters for a usual unit name): what
    its ± is and what its columns are, for rows counted in ``unit`` (``unit`` when they differ)."""
    return [
        f"± is one standard deviation (1 sigma) of the energy per {unit}: measurement uncertainty and",
        "spread between the n iterations in quadrature (measurement alone where n < 2; docs/analysis.md).",
        f"power: mean per rank; s/{unit}: time one rank spends per {unit}.",
    ]


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
