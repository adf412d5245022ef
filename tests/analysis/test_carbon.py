"""CO2e as a stated conversion of measured energy: the numbers against energy x PUE x intensity computed
here from the known power of the built run, the columns only when asked for, and the label everywhere."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from _runs import build, channel, window
from helpers import run_cli

from energy_hpc.analysis.carbon import CARBON_COLUMNS, CarbonFactor, with_carbon
from energy_hpc.analysis.table import energy_table, format_rows
from energy_hpc.errors import UserError

POWER_W = 100.0
WINDOWS = [(2.0, 4.0), (5.0, 8.0), (9.0, 10.0)]  # 6 s of measured windows at 100 W: 600 J exactly
UNITS = 2.0  # per iteration: 6 units


@pytest.fixture
def run_file(tmp_path: Path) -> Path:
    wins = [window(0, 0, "measure", a, b, UNITS, iteration=i) for i, (a, b) in enumerate(WINDOWS)]
    return build(tmp_path / "r.h5", [channel(power=POWER_W, energy=lambda t: POWER_W * t)], wins)


def test_co2e_is_the_energy_times_the_stated_factor(run_file: Path) -> None:
    (row,) = with_carbon(energy_table([run_file]), CarbonFactor(400.0, pue=1.2))
    true_J = POWER_W * sum(b - a for a, b in WINDOWS)
    assert row["co2e_g"] == pytest.approx(true_J * 1.2 * 400.0 / 3.6e6, rel=1e-6)
    true_per_1000 = true_J / (UNITS * len(WINDOWS)) * 1000.0
    assert row["co2e_per_1000_units_g"] == pytest.approx(true_per_1000 * 1.2 * 400.0 / 3.6e6, rel=1e-6)
    # the uncertainty is the energy's, scaled by the same factor
    k = 1.2 * 400.0 / 3.6e6
    assert row["co2e_uncertainty_g"] == pytest.approx(row["energy_uncertainty_J"] * k, rel=1e-12)
    assert row["co2e_per_1000_units_uncertainty_g"] == pytest.approx(
        row["energy_per_unit_unc_J"] * 1000.0 * k, rel=1e-12
    )
    assert (row["carbon_intensity_g_per_kWh"], row["pue"]) == (400.0, 1.2)
    assert any(
        "a conversion of measured energy by a stated factor, not a measurement" in f for f in row["flags"]
    )


def test_without_a_factor_the_table_has_no_co2e_column(run_file: Path) -> None:
    (row,) = energy_table([run_file])
    assert not set(CARBON_COLUMNS) & set(row)
    assert "CO2e" not in format_rows([row], "markdown") and "co2e" not in format_rows([row], "csv")


def test_every_format_labels_co2e_as_a_conversion(run_file: Path) -> None:
    rows = with_carbon(energy_table([run_file]), CarbonFactor(250.0))
    said = "a conversion of measured energy by a stated factor, not a measurement"
    for fmt in ("markdown", "latex", "csv", "json"):
        assert said in format_rows(rows, fmt), fmt
    assert "gCO2e/1000 image*" in format_rows(rows, "markdown")


@pytest.mark.parametrize(
    ("intensity", "pue", "says"), [(-1.0, 1.0, "--carbon-intensity -1"), (400.0, 0.9, "--pue 0.9")]
)
def test_a_factor_out_of_range_is_refused(intensity: float, pue: float, says: str) -> None:
    with pytest.raises(UserError, match=says):
        CarbonFactor(intensity, pue)


def test_the_table_command_converts_when_asked(run_file: Path) -> None:
    out = run_cli("table", str(run_file), "--format", "csv", "--carbon-intensity", "300", "--pue", "1.1")
    assert out.returncode == 0, out.stderr
    (row,) = csv.DictReader(io.StringIO(out.stdout))
    energy_J = float(row["energy_J"])
    assert float(row["co2e_g"]) == pytest.approx(energy_J * 1.1 * 300.0 / 3.6e6, rel=1e-9)
    assert float(row["pue"]) == 1.1 and "not a measurement" in row["flags"]
    plain = run_cli("table", str(run_file), "--format", "json")
    assert "co2e_g" not in json.loads(plain.stdout)[0]


def test_pue_alone_is_refused_in_one_line(run_file: Path) -> None:
    out = run_cli("table", str(run_file), "--pue", "1.2")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().count("\n") == 0 and "--carbon-intensity" in out.stderr


def test_the_report_command_converts_when_asked_and_says_it_is_a_conversion(
    run_file: Path, tmp_path: Path
) -> None:
    out = run_cli(
        "report", str(run_file), "-o", str(tmp_path / "rep"), "--carbon-intensity", "400", "--pue", "1.2"
    )
    assert out.returncode == 0, out.stderr
    true_J = POWER_W * sum(b - a for a, b in WINDOWS)
    (row,) = csv.DictReader(io.StringIO((tmp_path / "rep" / "table.csv").read_text()))
    assert float(row["co2e_g"]) == pytest.approx(true_J * 1.2 * 400.0 / 3.6e6, rel=1e-6)
    said = "a conversion of measured energy by a stated factor, not a measurement"
    index = (tmp_path / "rep" / "index.md").read_text()
    assert "CO2e per 1000 units (g, conversion*)" in index and "PUE 1.2 x 400 gCO2e/kWh" in index
    assert said in index and said in (tmp_path / "rep" / "index.html").read_text()
    for ext in ("md", "tex", "json"):
        assert said in (tmp_path / "rep" / f"table.{ext}").read_text(), ext


def test_the_report_has_no_co2e_unless_asked(run_file: Path, tmp_path: Path) -> None:
    assert run_cli("report", str(run_file), "-o", str(tmp_path / "rep")).returncode == 0
    assert "CO2e" not in (tmp_path / "rep" / "index.md").read_text()
    assert "co2e" not in (tmp_path / "rep" / "table.csv").read_text()


def test_report_pue_alone_is_refused_in_one_line(run_file: Path, tmp_path: Path) -> None:
    out = run_cli("report", str(run_file), "-o", str(tmp_path / "rep"), "--pue", "1.2")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().count("\n") == 0 and "--carbon-intensity" in out.stderr
    assert not (tmp_path / "rep").exists()
