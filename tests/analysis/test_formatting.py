"""One formatter for the energy and scaling tables: numbers, JSON values, and LaTeX that survives a model
name or label made of LaTeX's special characters."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _runs import build, case_row, channel, window

from energy_hpc.analysis.formatting import (
    count_cell,
    csv_cell,
    format_number,
    format_uncertainty,
    jsonable,
    latex_escape,
    plural,
    value_pm,
)
from energy_hpc.analysis.scaling import format_scaling, scaling_rows
from energy_hpc.analysis.table import energy_table, format_rows

# every character LaTeX treats specially in text
SPECIAL_NAME = "m%o&d#e$l{x}~y^z\\w_v"
ESCAPED_NAME = "m\\%o\\&d\\#e\\$l\\{x\\}\\textasciitilde{}y\\textasciicircum{}z\\textbackslash{}w\\_v"


def test_numbers_lists_and_missing_values() -> None:
    assert format_number(math.nan) == "-"
    assert format_number(0.0) == "0"
    assert format_number(1234.5678) == "1235"
    assert format_number(1234.5678, 8) == "1234.5678"
    assert format_number(["a", "b"]) == "a; b"
    assert format_number(3) == "3"
    assert jsonable({"a": (1, math.inf), "b": np.float64(2.5), "c": {math.nan}}) == {
        "a": [1, None],
        "b": 2.5,
        "c": [None],
    }


@pytest.mark.parametrize(
    "value, unc, cells",
    [
        (12.3456, 0.04712, ("12.346", "0.047")),
        (12345.6, 473.0, ("12350", "470")),
        (1.0, 0.0996, ("1.00", "0.10")),  # rounding carries into a new digit: still two figures
        (0.001234, 4.56e-5, ("0.001234", "0.000046")),
        (-0.001, 0.01, ("-0.001", "0.010")),
        (0.0004, 0.01, ("0.000", "0.010")),  # never "-0.000"
        (5.0, math.nan, ("5", "-")),  # no uncertainty: four significant figures
        (math.nan, 1.0, ("-", "-")),
    ],
)
def test_uncertainties_get_two_significant_figures_and_values_the_same_place(
    value: float, unc: float, cells: tuple[str, str]
) -> None:
    assert format_uncertainty(value, unc) == cells
    assert value_pm(value, unc) == (f"{cells[0]} ± {cells[1]}" if cells[1] != "-" else cells[0])


def test_counts_are_written_in_words() -> None:
    assert count_cell(6.0, "image") == "6 images"
    assert count_cell(1.0, "token") == "1 token"
    assert count_cell(2.5, "audio-second") == "2.5 audio-seconds"
    assert count_cell(math.nan, "image") == "-"
    assert [plural(w) for w in ("batch", "query", "day", "pass")] == ["batches", "queries", "days", "passes"]


def test_csv_cells_are_full_precision_and_missing_numbers_empty() -> None:
    assert csv_cell(math.nan) == "" and csv_cell(None) == "" and csv_cell(np.float64(math.inf)) == ""
    assert csv_cell(0.1 + 0.2) == "0.30000000000000004"
    assert csv_cell(["a", "b"]) == "a; b" and csv_cell(3) == 3 and csv_cell("x") == "x"


def test_latex_escape_escapes_every_special_once() -> None:
    assert latex_escape(SPECIAL_NAME) == ESCAPED_NAME
    assert latex_escape("±meas J/unit") == "$\\pm$meas J/unit"
    assert latex_escape("plain text, 1.5 W") == "plain text, 1.5 W"


def _unescaped(line: str, char: str) -> int:
    """How many times ``char`` stands in ``line`` without a backslash before it."""
    return len(re.findall(r"(?<!\\)" + re.escape(char), line))


def _assert_balanced(tex: str, n_columns: int) -> None:
    """Every table line has its columns and closes its groups and math: a special character in a cell
    would add a column (&), end the line (%), open math ($) or a group ({)."""
    rows = [line for line in tex.splitlines() if line.endswith(" \\\\")]
    assert rows
    for line in rows:
        assert _unescaped(line, "&") == n_columns - 1, line
        assert _unescaped(line, "%") == 0, line
        assert _unescaped(line, "$") % 2 == 0, line
        depth = 0
        for m in re.finditer(r"(?<!\\)[{}]", line):
            depth += 1 if m.group() == "{" else -1
            assert depth >= 0, line
        assert depth == 0, line
    for line in tex.splitlines():  # the comments above and below are one line each
        assert line.startswith(("%", "\\")) or line.endswith(" \\\\"), line


def _special_run(tmp_path: Path) -> Path:
    case = case_row(model=SPECIAL_NAME, label="lab&el_%1")
    windows = [window(0, 0, "measure", 2.0 + 2 * i, 3.0 + 2 * i, 1.0, iteration=i) for i in range(3)]
    return build(tmp_path / "r.h5", [channel(power=100.0)], windows, cases=[case])


def _latex(tmp_path: Path, table: str) -> str:
    rows = energy_table([_special_run(tmp_path)])
    assert rows[0]["model"] == SPECIAL_NAME  # the data keeps the name; only the LaTeX escapes it
    return format_rows(rows, "latex") if table == "energy" else format_scaling(scaling_rows(rows), "latex")


@pytest.mark.parametrize("table", ["energy", "scaling"])
def test_a_model_named_with_latex_specials_is_escaped_and_the_table_balanced(
    tmp_path: Path, table: str
) -> None:
    tex = _latex(tmp_path, table)
    assert ESCAPED_NAME in tex
    if table == "energy":
        assert "lab\\&el\\_\\%1" in tex  # the label column
    spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex)
    assert spec is not None
    _assert_balanced(tex, len(spec.group(1)))


@pytest.mark.parametrize("table", ["energy", "scaling"])
def test_a_model_named_with_latex_specials_gives_a_table_that_compiles(tmp_path: Path, table: str) -> None:
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("no pdflatex on this machine (the escaped, balanced form is checked without it)")
    doc = tmp_path / "table.tex"
    doc.write_text(
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\begin{document}\n"
        + _latex(tmp_path, table)
        + "\\end{document}\n"
    )
    r = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout[-3000:]
    assert (tmp_path / "table.pdf").exists()
