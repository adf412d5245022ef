"""energy-hpc run for real: tiny pipeline, real inference, real MPI ranks, file read back with xarray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import REPO, run_cli, write_job

JOB = """
[job]
name = "itest"
[measure]
interval_ms = 5
idle_seconds = 0.3
warmup = 1
iterations = 2
sensors = ["synthetic"]
[[case]]
task = "text-to-image"
model = "{model}"
source = "{source}"
batch_size = [1, 2]
[case.options]
steps = 2
prompts = ["p1", "p2", "p3"]
"""


def _one_file(out: Path) -> Path:
    files = list(out.glob("*.h5"))
    assert len(files) == 1, files
    assert not list(out.glob(".*partial"))
    return files[0]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, tiny_sd) -> Path:
    d = tmp_path_factory.mktemp("single")
    job = write_job(d, JOB.format(model="tiny-sd", source="random"))
    r = run_cli("run", str(job), "-o", str(d / "out"))
    assert r.returncode == 0, r.stderr
    path = _one_file(d / "out")
    assert r.stdout.strip() == str(path)  # stdout carries only the run file's path
    return path


def test_file_opens_as_a_datatree_with_units_everywhere(single_run: Path) -> None:
    tree = xr.open_datatree(single_run, engine="h5netcdf")
    assert {"ranks", "traces", "windows", "cases"} <= set(tree.children)
    for group in ("ranks", "traces", "windows", "cases"):
        ds = xr.open_dataset(single_run, group=group, engine="h5netcdf")
        for name, var in ds.variables.items():
            assert "units" in var.attrs, f"/{group}/{name} has no units"
            assert "long_name" in var.attrs
    attrs = tree.attrs
    assert attrs["schema_version"] == "1.5" and attrs["package_version"]
    assert 'name = "itest"' in attrs["job_text"]
    assert attrs["run_status"] == "complete" and int(attrs["contains_synthetic"]) == 1
    assert "SYNTHETIC" in attrs["WARNING"]


def test_windows_cover_idle_load_warmup_and_measure_with_units(single_run: Path) -> None:
    w = xr.open_dataset(single_run, group="windows", engine="h5netcdf")
    phases = list(w["phase"].values)
    assert phases[0] == "idle" and phases.count("load") == 2
    whole = (w["phase"] == "measure") & (w["stage"] == "")
    assert int(whole.sum()) == 4  # 2 cases x 2 iterations
    units = w["units"].values[whole.values]
    cases = w["case"].values[whole.values]
    assert list(units) == [1, 1, 2, 2] and list(cases) == [0, 0, 1, 1]
    assert set(w["unit"].values[whole.values]) == {"image"}
    assert (w["end"] > w["start"]).all()
    stages = w["stage"].values[(w["phase"] == "measure").values]
    assert "base" in stages  # the pipeline call runs in its own stage window


def test_sampling_brackets_every_window(single_run: Path) -> None:
    tr = xr.open_dataset(single_run, group="traces", engine="h5netcdf")
    w = xr.open_dataset(single_run, group="windows", engine="h5netcdf")
    n = int(tr["n_samples"].values[0])
    t = tr["time"].values[0, :n]
    assert np.all(np.diff(t) > 0)
    assert t[0] <= w["start"].min() and t[-1] >= w["end"].max()
    assert np.isnan(tr["time"].values[0, n:]).all()
    assert tr["method"].values[0] == "synthetic"


def test_table_json_rows_carry_the_contract_keys(single_run: Path) -> None:
    r = run_cli("table", str(single_run), "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 2
    for row in rows:
        for key in (
            "case",
            "n_ranks",
            "units",
            "unit",
            "energy_J",
            "energy_per_unit_J",
            "wh_per_1000_units",
            "mean_power_W",
            "method",
            "energy_per_unit_uncertainty_J",
            "net_energy_per_unit_J",
            "idle_power_W",
            "peak_power_W",
            "n_nodes",
        ):
            assert key in row, key
        assert row["method"] == "synthetic" and row["synthetic"] is True
        assert row["energy_per_unit_J"] == pytest.approx(row["energy_J"] / row["units"])
        assert row["wh_per_1000_units"] == pytest.approx(row["energy_per_unit_J"] / 3.6)
        # synthetic power lies between 50 and 150 W
        assert 50 <= row["mean_power_W"] <= 150
    assert sorted(r["case"]["batch_size"] for r in rows) == [1, 2]
    assert [r["units"] for r in sorted(rows, key=lambda r: r["case"]["batch_size"])] == [2, 4]


@pytest.mark.parametrize(
    "fmt, marker", [("markdown", "| task"), ("csv", "energy_per_unit_J"), ("latex", "\\begin{tabular}")]
)
def test_table_formats(single_run: Path, fmt: str, marker: str) -> None:
    r = run_cli("table", str(single_run.parent), "--format", fmt, "--wide")
    assert r.returncode == 0 and marker in r.stdout
    assert "SYNTHETIC" in r.stdout  # synthetic numbers never pass for measurements


def test_table_rejects_a_file_that_is_not_a_run(tmp_path: Path) -> None:
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5 at all")
    r = run_cli("table", str(bad))
    assert r.returncode == 2 and "not a readable HDF5 run file" in r.stderr


def test_local_model_folder_loads_through_from_pretrained(tmp_path: Path, tiny_sd: Path) -> None:
    shutil.copytree(tiny_sd, tmp_path / "models" / "sd")
    job = write_job(
        tmp_path,
        JOB.format(model="models/sd", source="local").replace("batch_size = [1, 2]", "batch_size = 1"),
    )
    r = run_cli("run", str(job), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    cases = xr.open_dataset(_one_file(tmp_path / "out"), group="cases", engine="h5netcdf")
    assert cases["source"].values[0] == "local" and cases["model"].values[0] == "models/sd"


@pytest.mark.mpi
def test_demo_job_under_mpiexec_two_ranks(tmp_path: Path, tiny_sd: Path) -> None:
    """The README's command: mpiexec -n 2 energy-hpc run jobs/demo.toml -o results/."""
    r = run_cli("run", str(REPO / "jobs" / "demo.toml"), "-o", str(tmp_path / "results"), mpi=2)
    assert r.returncode == 0, r.stderr
    path = _one_file(tmp_path / "results")
    ranks = xr.open_dataset(path, group="ranks", engine="h5netcdf")
    assert ranks.sizes["rank"] == 2 and list(ranks["status"].values) == ["ok", "ok"]
    traces = xr.open_dataset(path, group="traces", engine="h5netcdf")
    assert sorted(set(traces["rank"].values)) == [0, 1]
    assert (traces["n_samples"].values > 10).all()
    w = xr.open_dataset(path, group="windows", engine="h5netcdf")
    assert sorted(set(w["rank"].values)) == [0, 1]
    t = run_cli("table", str(tmp_path / "results"), "--format", "json")
    rows = json.loads(t.stdout)
    assert {r["n_ranks"] for r in rows} == {2}
    # each rank makes batch_size images per iteration, 3 iterations
    assert sorted(r["units"] for r in rows) == [6, 12]
    assert all(r["method"] in ("estimate", "counter", "integral", "counter+integral") for r in rows)
    # the warning about the estimate appears once per node, not once per rank
    assert r.stderr.count("falling back to the CPU-time ESTIMATE") <= 1


@pytest.mark.mpi
def test_two_ranks_bad_job_fails_once_with_status_2(tmp_path: Path) -> None:
    job = write_job(tmp_path, '[job]\nname = "t"\n[[case]]\ntask = "text-to-image"\nmodel = "gone"\n')
    r = run_cli("run", str(job), "-o", str(tmp_path / "o"), mpi=2)
    assert r.returncode == 2
    assert r.stderr.count("does not exist") == 1


@pytest.mark.mpi
def test_sampling_child_process_under_mpiexec(tmp_path: Path, tiny_sd: Path) -> None:
    """The sampler GPU ranks use (a child process per rank), forced here on CPU."""
    job = write_job(
        tmp_path,
        JOB.format(model="tiny-sd", source="random").replace("batch_size = [1, 2]", "batch_size = 1"),
    )
    r = run_cli("run", str(job), "-o", str(tmp_path / "out"), mpi=2, env={"ENERGY_HPC_SAMPLER": "process"})
    assert r.returncode == 0, r.stderr
    path = _one_file(tmp_path / "out")
    tr = xr.open_dataset(path, group="traces", engine="h5netcdf")
    w = xr.open_dataset(path, group="windows", engine="h5netcdf")
    assert sorted(tr["rank"].values) == [0, 1]
    for ch in range(tr.sizes["channel"]):
        n = int(tr["n_samples"].values[ch])
        t = tr["time"].values[ch, :n]
        mine = w["rank"].values == tr["rank"].values[ch]
        assert n > 50 and np.all(np.diff(t) > 0)
        assert t[0] <= w["start"].values[mine].min() and t[-1] >= w["end"].values[mine].max()
