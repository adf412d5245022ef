"""``sensors = ["emulated:<part>"]`` in a job: the emulated parts run through the registry into a real run,
and every output says EMULATED (synthetic data, never a measurement)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
from helpers import REPO, run_cli, single_rank, write_job

from energy_hpc import cli
from energy_hpc.analysis.plots import energy_figure, power_figure
from energy_hpc.analysis.table import data_banner, energy_table, format_rows
from energy_hpc.context import SingleComm
from energy_hpc.errors import SpecError
from energy_hpc.run import run_job
from energy_hpc.spec import parse_job
from energy_hpc.telemetry import registry
from energy_hpc.telemetry.base import SensorContext

CTX = single_rank()

JOB = """
[job]
name = "emu"
[measure]
interval_ms = 5
idle_seconds = 0.3
warmup = 0
iterations = 2
device = "cpu"
sensors = {sensors}
[[case]]
task = "text-to-image"
model = "tiny-sd"
source = "random"
batch_size = 1
[case.options]
steps = 2
prompts = ["p1"]
"""


@pytest.fixture(scope="module")
def emulated_run(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> Path:
    d = tmp_path_factory.mktemp("emulated")
    job = parse_job(JOB.format(sensors='["emulated:h100"]'), d / "job.toml")
    r = run_job(job, d / "out", CTX, SingleComm())
    assert r.status == "complete" and r.path is not None
    return r.path


def test_a_run_on_an_emulated_h100_says_emulated_everywhere(emulated_run: Path) -> None:
    with h5py.File(emulated_run) as f:
        assert "EMULATED h100" in str(f.attrs["WARNING"]) and int(f.attrs["contains_synthetic"]) == 1
    (row,) = energy_table([emulated_run])
    assert row["data"] == "EMULATED h100" and row["synthetic"] and row["method"] == "synthetic"
    assert row["energy_J"] > 0 and row["units"] == 2
    assert any("EMULATED h100" in f for f in row["flags"])
    assert data_banner([row]) == "SYNTHETIC (EMULATED h100 sensor, not a measurement)"
    for fmt in ("markdown", "latex"):
        assert "EMULATED h100" in format_rows([row], fmt)
    assert "EMULATED h100" in power_figure(emulated_run)._suptitle.get_text()
    assert "EMULATED h100" in energy_figure([row]).axes[0].get_title()


def test_the_table_command_prints_the_emulated_banner(emulated_run: Path) -> None:
    r = run_cli("table", str(emulated_run.parent))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Data: SYNTHETIC (EMULATED h100 sensor, not a measurement)")


def test_an_unknown_part_fails_validation_with_one_line(tmp_path: Path) -> None:
    job = write_job(tmp_path, JOB.format(sensors='["emulated:nosuch"]'))
    r = run_cli("run", str(job), "-o", str(tmp_path / "out"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "emulated part 'nosuch'" in lines[0] and "h100" in lines[0] and "cray-ex" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_near_miss_part_gets_a_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"did you mean emulated:h100\?"):
        parse_job(JOB.format(sensors='["emulated:h10"]'), tmp_path / "job.toml")
    with_option = JOB.format(sensors='["emulated"]').replace(
        "[[case]]", '[measure.sensor_options.emulated]\npart = "x"\n[[case]]'
    )
    with pytest.raises(SpecError, match="unknown emulated part 'x'"):
        parse_job(with_option, tmp_path / "job.toml")
    for part in ("h100", "a100", "gh200", "mi250x", "mi300x", "cray-ex", "rapl"):
        assert parse_job(
            JOB.format(sensors=f'["emulated:{part}"]'), tmp_path / "job.toml"
        ).measure.sensors == (f"emulated:{part}",)


def test_the_shipped_emulated_job_validates() -> None:
    job = parse_job((REPO / "jobs" / "emulated-h100.toml").read_text(), REPO / "jobs" / "emulated-h100.toml")
    assert job.measure.sensors == ("emulated:h100",)


def _open(names: list[str], **kw) -> registry.Opened:
    return registry.open_sensors(names, SensorContext(hostname="n0", **kw))


def test_node_level_parts_are_opened_by_the_node_leader_only() -> None:
    for part in ("cray-ex", "rapl"):
        other = _open([f"emulated:{part}"], node_leader=False, local_rank=1)
        assert not other.sensors and "node leader" in other.skipped[f"emulated:{part}"]
        leader = _open([f"emulated:{part}"])
        try:
            (s,) = leader.sensors
            assert all(
                c.node_level and c.synthetic and c.label.startswith(f"EMULATED {part}") for c in s.channels()
            )
        finally:
            for s in leader.sensors:
                s.close()


def test_each_rank_records_its_own_emulated_gpu() -> None:
    """Ranks of one node each open an emulated H100 whose stand-in has the same bus id: the device ids
    differ by local rank, or the analysis would take them for one GPU recorded twice."""
    devices = []
    for local in (0, 1):
        (s,) = _open(["emulated:h100"], node_leader=local == 0, local_rank=local).sensors
        devices.append({c.device for c in s.channels()})
        assert not any(c.node_level for c in s.channels())
        s.close()
    assert not devices[0] & devices[1]


def test_the_sensors_command_lists_the_emulated_backend(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["sensors", "--json"]) == 0
    rows = {r["backend"]: r for r in json.loads(capsys.readouterr().out)["backends"]}
    em = rows["emulated"]
    assert em["usable"] and "not a measurement" in em["what"]
    assert {p["sensor"] for p in em["parts"]} >= {"emulated:h100", "emulated:cray-ex"}
    assert all(c["method"] == "synthetic" and c["label"].startswith("EMULATED h100") for c in em["channels"])
    assert cli.main(["sensors"]) == 0
    out = capsys.readouterr().out
    assert "emulated:cray-ex" in out and "EMULATED" in out
