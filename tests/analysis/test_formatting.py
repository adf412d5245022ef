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

from energy_hpc.analysis.formatting import format_number, jsonable, latex_escape
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
