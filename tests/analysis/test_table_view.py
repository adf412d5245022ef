"""What the energy table shows: a compact Markdown table that fits a terminal, every column with
``--wide``, chosen ones with ``--columns``, uncertainties to two significant figures, and CSV that
pandas reads as numbers."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _runs import build, case_row, channel, rank_row, window

from energy_hpc.analysis.table import TERMINAL_WIDTH, WIDE, energy_table, format_rows
from energy_hpc.cli import main

LONG_MODEL = "../models/stabilityai--stable-diffusion-xl-base-1.0-and-a-name-longer-than-any-terminal"


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """Two ranks, two cases (one with a long model name and a label), 3 iterations each, idle windows."""
    chans = [channel(r, power=lambda t: 100 + 30 * np.sin(t), name=f"c{r}", device=f"d{r}") for r in (0, 1)]
    wins = []
    for r in (0, 1):
        wins.append(window(r, -1, "idle", 0.5, 1.5))
        for c in (0, 1):
            for i in range(3):
                a = 2.0 + 8 * c + 2.5 * i
                wins.append(window(r, c, "measure", a, a + 2.0, 1 + c, iteration=i))
    cases = [case_row(model=LONG_MODEL, label="refined", batch_size=1), case_row(batch_size=2)]
    return build(tmp_path / "run.h5", chans, wins, ranks=[rank_row(), rank_row(local_rank=1)], cases=cases)


def _table(md: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return split[0], split[2:]


def test_the_default_table_fits_a_terminal_with_plain_headers(study: Path) -> None:
    rows = energy_table([study])
    md = format_rows(rows, "markdown")
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    assert max(len(line) for line in table_lines) <= TERMINAL_WIDTH
    headers, body = _table(md)
    assert headers == ["model", "label", "precision", "batch", "ranks", "J/image", "power W", "s/image", "n"]
    assert body[0][0].startswith("stabilityai") and body[0][0].endswith("…")  # cut to fit, path dropped
    assert body[1][0] == "m"
    assert "± is one standard deviation" in md
    for row, cells in zip(rows, body, strict=True):
        value, unc = cells[headers.index("J/image")].split(" ± ")
        # the uncertainty to two significant figures, the value to the same decimal place
        assert len(unc.replace(".", "").lstrip("0")) == 2
        assert len(value.partition(".")[2]) == len(unc.partition(".")[2])
        assert float(value) == pytest.approx(row["energy_per_unit_J"], abs=float(unc))
        assert float(unc) == pytest.approx(row["energy_per_unit_unc_J"], rel=0.05)
        assert cells[headers.index("n")] == "3"
    assert max(len(line) for line in md.splitlines() if not line.startswith("- row")) <= TERMINAL_WIDTH


def test_wide_shows_every_column_and_counts_in_words(study: Path) -> None:
    rows = energy_table([study])
    md = format_rows(rows, "markdown", columns=WIDE)
    headers, body = _table(md)
    for h in ("task", "model", "label", "units", "seconds", "energy J", "±meas J/unit", "±SEM J/unit"):
        assert h in headers, h
    assert "integral vs counter %" in headers and "W per rank" in headers
    assert body[0][headers.index("model")] == LONG_MODEL
    assert body[0][headers.index("units")] == "6 images" and body[1][headers.index("units")] == "12 images"
    assert "Every ± is one standard deviation" in md


def test_columns_picks_the_named_ones_in_order(study: Path) -> None:
    rows = energy_table([study])
    headers, body = _table(
        format_rows(rows, "markdown", columns=["batch_size", "energy_per_unit_J", "gap_windows"])
    )
    assert headers == ["batch", "J/unit", "gap windows"]
    assert [cells[0] for cells in body] == ["1", "2"]
    with pytest.raises(ValueError, match="unknown column"):
        format_rows(rows, "markdown", columns=["no_such_column"])


def test_csv_and_json_keep_every_column_whatever_is_shown(study: Path) -> None:
    rows = energy_table([study])
    header = format_rows(rows, "csv").splitlines()[0].split(",")
    assert set(header) == {k for k in rows[0] if k not in ("case", "files")}
    assert format_rows(rows, "csv", columns=["model"]) == format_rows(rows, "csv")
    assert set(json.loads(format_rows(rows, "json"))[0]) == set(rows[0])


def test_csv_writes_missing_numbers_as_empty_fields_that_pandas_reads_as_numbers(study: Path) -> None:
    rows = energy_table([study])
    text = format_rows(rows, "csv")
    df = pd.read_csv(io.StringIO(text))
    assert math.isnan(rows[0]["node_energy_J"])  # no node channel: a missing number in every row
    for k in (
        "energy_J",
        "energy_per_unit_J",
        "node_energy_J",
        "energy_per_aux_unit_J",
        "longest_gap_s",
        "module_energy_J",
        "energy_per_unit_sem_J",
        "seconds_per_unit",
        "iterations_per_rank",
    ):
        assert pd.api.types.is_numeric_dtype(df[k]), (k, df[k].dtype)
    numeric = [k for k, v in rows[0].items() if isinstance(v, float)]
    assert all(pd.api.types.is_numeric_dtype(df[k]) for k in numeric)
    assert ",-," not in text
    assert df["energy_J"].iloc[0] == rows[0]["energy_J"]  # full precision


def test_cli_wide_and_columns(study: Path, capsys) -> None:
    assert main(["table", str(study), "--wide"]) == 0
    assert "±total J/unit" in capsys.readouterr().out
    assert main(["table", str(study), "--columns", "model,energy_per_unit_J"]) == 0
    headers, _ = _table(capsys.readouterr().out)
    assert headers == ["model", "J/unit"]
    assert main(["table", str(study), "--columns", "model,nope"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "'nope'" in line and "energy_per_unit_J" in line
    assert main(["table", str(study), "--scaling", "--wide"]) == 2


def test_scaling_csv_writes_missing_numbers_as_empty_fields(tmp_path: Path) -> None:
    from energy_hpc.analysis.scaling import format_scaling, scaling_rows

    files = []
    for n in (1, 2):
        chans = [
            channel(r, power=100.0, name=f"c{r}", device=f"d{r}", node=r, host=f"h{r}") for r in range(n)
        ]
        wins = [window(r, 0, "measure", 2.0, 3.0, 1) for r in range(n)]  # one iteration: no SEM
        ranks = [rank_row(host=f"h{r}", node=r) for r in range(n)]
        files.append(build(tmp_path / f"n{n}.h5", chans, wins, ranks=ranks, n_nodes=n))
    srows = scaling_rows(energy_table(files))
    text = format_scaling(srows, "csv")
    df = pd.read_csv(io.StringIO(text))
    assert ",-," not in text and not text.splitlines()[1].startswith("-,")
    for k, v in srows[0].items():
        if isinstance(v, float) and k in df:
            assert pd.api.types.is_numeric_dtype(df[k]), k
