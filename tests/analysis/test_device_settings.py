"""The device's settings in the table (issue 14): the power limit, clocks and temperature as read back
(``/ranks/device_state``) as columns at the end, the GPU settings Slurm applied (root attribute
``scheduler_settings``) keeping runs apart, both the same from the catalogue as from the files, and the
knobs figure sweeping either."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import h5py
import pytest
from _runs import build, channel, rank_row, window
from helpers import single_rank

from energy_hpc import cli
from energy_hpc.analysis import catalog, devstate
from energy_hpc.analysis.knobs import knob_rows, swept_knob
from energy_hpc.analysis.table import energy_table, format_rows
from energy_hpc.context import SingleComm
from energy_hpc.run import run_job
from energy_hpc.spec import parse_job

CTX = single_rank()

CAP_SWEEP = """
[job]
name = "caps"
[measure]
interval_ms = 5
idle_seconds = 0.2
warmup = 0
iterations = 2
device = "cpu"
sampler = "thread"
sensors = ["emulated:h100"]
[measure.sensor_options.emulated]
privileged = true
[[case]]
task = "image-classification"
model = "tiny-vit"
source = "random"
batch_size = 1
power_cap_W = [250, 400]
"""

NEW_COLUMNS = [*devstate.COLUMNS, "slurm_gpu_freq", "slurm_gpu_power_W"]


@pytest.fixture(scope="module")
def cap_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run (tiny random-weight ViT on the CPU) on an emulated H100 whose caps the run sets."""
    d = tmp_path_factory.mktemp("caps")
    job = parse_job(CAP_SWEEP, d / "job.toml")
    r = run_job(job, d / "out", CTX, SingleComm())
    assert r.status == "complete" and r.path is not None
    return r.path


def _csv(rows: list[dict]) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(format_rows(rows, "csv"))))


def test_the_enforced_limit_of_a_cap_sweep_is_the_cap_set(cap_sweep: Path) -> None:
    rows = {row["case"]["power_cap_W"]: row for row in energy_table([cap_sweep])}
    assert set(rows) == {250, 400}
    for cap, row in rows.items():
        assert row["power_limit_W"] == cap  # as the emulated part's stand-in enforces and reads it back
        assert row["sm_clock_MHz"] > 0 and row["mem_clock_MHz"] > 0
        assert math.isfinite(row["temperature_start_C"]) and math.isfinite(row["temperature_end_C"])
        assert row["slurm_gpu_freq"] == "" and math.isnan(row["slurm_gpu_power_W"])
    # at the end of the CSV, after the columns there were before
    header = format_rows(list(rows.values()), "csv").splitlines()[0].split(",")
    assert header[-len(NEW_COLUMNS) - 1 : -1] == NEW_COLUMNS and header[-1] == "flags"
    assert header.index("trial_spread_pct") < header.index("power_limit_W")


def test_the_compact_table_shows_the_limit_where_a_case_set_a_cap(cap_sweep: Path) -> None:
    rows = energy_table([cap_sweep])
    text = format_rows(rows, "markdown")
    head = next(line for line in text.splitlines() if line.startswith("| model"))
    assert "limit W" in head and "SM MHz" in head
    cells = [[c.strip() for c in line.split("|")] for line in text.splitlines() if "tiny-vit" in line]
    limit_at = [c.strip() for c in head.split("|")].index("limit W")
    assert sorted(c[limit_at] for c in cells) == ["250", "400"]
    assert max(len(line) for line in text.splitlines() if line.startswith("|")) <= 100


def test_the_device_state_is_the_same_from_the_catalogue(cap_sweep: Path) -> None:
    root = cap_sweep.parent
    files = [cap_sweep]
    from_files = format_rows(energy_table(files), "csv")
    assert cli.main(["catalog", str(root)]) == 0
    study = catalog.read_study(files)
    assert study.from_catalog
    assert format_rows(study.rows(), "csv") == from_files
    assert sorted(r["power_limit_W"] for r in study.rows()) == [250, 400]


def _state(rows: list[tuple[int, float, float, float, float]]) -> str:
    """A rank's device_state: per measured window (case, iteration, limit W, temperature start/end °C);
    clocks 1980/2619 MHz at both edges."""
    cols = ["case", "phase", "iteration", "start"]
    for name in ("power_limit_W", "sm_clock_MHz", "mem_clock_MHz", "temperature_C"):
        cols += [f"{name}_start", f"{name}_end"]
    out = [
        [case, "measure", it, 2.0 + 3 * it, limit, limit, 1980.0, 1980.0, 2619.0, 2619.0, t0, t1]
        for case, it, limit, t0, t1 in rows
    ]
    return json.dumps({"columns": cols, "rows": out})


def test_device_state_columns_are_means_over_the_measured_windows(tmp_path: Path) -> None:
    wins = [window(0, 0, "measure", 2.0 + 3 * i, 4.0 + 3 * i, 1.0, iteration=i) for i in range(3)]
    # the limit read back moves (another job's cap): the row shows the mean of what was enforced
    state = _state([(0, 0, 300.0, 40.0, 50.0), (0, 1, 300.0, 50.0, 60.0), (0, 2, 240.0, 60.0, math.nan)])
    path = build(
        tmp_path / "r.h5", [channel(power=100.0)], wins, ranks=[rank_row() | {"device_state": state}]
    )
    (row,) = energy_table([path])
    assert row["power_limit_W"] == pytest.approx(280.0)
    assert (row["sm_clock_MHz"], row["mem_clock_MHz"]) == (1980.0, 2619.0)
    assert row["temperature_start_C"] == pytest.approx(50.0)
    assert row["temperature_end_C"] == pytest.approx(55.0)  # the end cut by a signal (NaN) left out


def test_a_run_without_device_state_has_empty_columns_and_no_setting_columns(tmp_path: Path) -> None:
    path = build(tmp_path / "r.h5", [channel(power=100.0)], [window(0, 0, "measure", 2.0, 4.0, 1.0)])
    (row,) = energy_table([path])
    assert all(math.isnan(row[c]) for c in devstate.COLUMNS)
    (cells,) = _csv([row])
    assert all(cells[c] == "" for c in NEW_COLUMNS)
    assert "limit W" not in format_rows([row], "markdown")


# ---------------------------------------------------------------- settings Slurm applied

# (gpu_freq, gpu_power_W, true device power W); None: the run had no scheduler settings
SLURM_RUNS = [("1200", 300, 180.0), ("1500", 300, 240.0), ("1500", 300, 240.0), (None, None, 300.0)]
WINDOWS = [(2.0, 4.0), (5.0, 8.0)]  # 5 s measured, 2 units


def _slurm_study(root: Path) -> list[Path]:
    files = []
    for k, (freq, power_W, watts) in enumerate(SLURM_RUNS):
        wins = [window(0, 0, "measure", a, b, 1.0, iteration=i) for i, (a, b) in enumerate(WINDOWS)]
        path = build(root / f"run{k}.h5", [channel(power=watts)], wins)
        with h5py.File(path, "r+") as f:
            f.attrs["epoch_unix"] = 1.0 + k  # each its own run
            if freq is not None:
                f.attrs["scheduler_settings"] = json.dumps({"gpu_freq": freq, "gpu_power_W": power_W})
        files.append(path)
    return files


def test_runs_with_other_scheduler_settings_are_other_rows(tmp_path: Path) -> None:
    rows = energy_table(_slurm_study(tmp_path))
    by_freq = {r["slurm_gpu_freq"]: r for r in rows}
    assert len(rows) == 3 and set(by_freq) == {"1200", "1500", ""}
    seconds = sum(b - a for a, b in WINDOWS)
    for freq, watts, n_files in (("1200", 180.0, 1), ("1500", 240.0, 2), ("", 300.0, 1)):
        row = by_freq[freq]
        assert row["n_files"] == n_files
        assert row["energy_per_unit_J"] == pytest.approx(watts * seconds / len(WINDOWS), rel=1e-3)
    assert by_freq["1200"]["slurm_gpu_power_W"] == 300.0 and math.isnan(by_freq[""]["slurm_gpu_power_W"])
    text = format_rows(rows, "markdown")
    assert "slurm freq" in text and "slurm W" in text


def test_by_slurm_gpu_freq_groups_on_it(tmp_path: Path) -> None:
    rows = energy_table(_slurm_study(tmp_path), by=["slurm_gpu_freq"])
    assert sorted(r["slurm_gpu_freq"] for r in rows) == ["", "1200", "1500"]
    assert cli.main(["table", str(tmp_path), "--by", "slurm_gpu_freq", "--format", "json"]) == 0


def test_knobs_sweep_the_setting_slurm_applied(tmp_path: Path) -> None:
    rows = energy_table(_slurm_study(tmp_path))
    assert swept_knob(rows) == "slurm_gpu_freq"  # gpu_power_W is the same in every run
    krows = knob_rows(rows)
    assert [k["value"] for k in krows] == [1200.0, 1500.0]  # the run without settings left out
    assert krows[0]["pareto"]  # less energy per unit for the same time
    assert knob_rows(rows, "slurm_gpu_power_W")[0]["value"] == 300.0


def test_a_gpu_freq_level_is_no_knob_value(tmp_path: Path) -> None:
    rows = [{"case": {}, "slurm_gpu_freq": "high", "energy_per_unit_J": 1.0, "seconds_per_unit": 1.0}]
    assert knob_rows(rows, "slurm_gpu_freq") == []


def test_scheduler_settings_are_the_same_from_the_catalogue(tmp_path: Path) -> None:
    files = _slurm_study(tmp_path)
    expected = {by: format_rows(energy_table(files, by=by), "csv") for by in (None, ("slurm_gpu_freq",))}
    assert cli.main(["catalog", str(tmp_path)]) == 0
    study = catalog.read_study(files)
    assert study.from_catalog
    for by, text in expected.items():
        assert format_rows(study.rows(by=by), "csv") == text


def test_unreadable_scheduler_settings_warn_and_count_as_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = build(tmp_path / "r.h5", [channel(power=100.0)], [window(0, 0, "measure", 2.0, 4.0, 1.0)])
    with h5py.File(path, "r+") as f:
        f.attrs["scheduler_settings"] = "gpu_freq=1200"
    (row,) = energy_table([path])
    assert row["slurm_gpu_freq"] == "" and "not a JSON object" in caplog.text
