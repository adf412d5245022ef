"""Adding a sensor backend: one Backend row, registered through the API or named by an entry point of
the group ``energy_hpc.sensors`` (a real one: a dist-info folder on sys.path that importlib.metadata
reads). The row is then a sensor choice of job files, of ``energy-hpc sensors`` and of ``auto``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from energy_hpc import cli, logs
from energy_hpc.errors import SpecError
from energy_hpc.spec import parse_job
from energy_hpc.telemetry import registry
from energy_hpc.telemetry.base import SensorContext

JOB = """
[job]
name = "t"
[measure]
iterations = 2
sensors = [{sensors}]
[[case]]
task = "text-to-image"
model = "tiny-sd"
source = "random"
"""

# a backend module as a site would write it: open_sensor(ctx) -> Sensor
MODULE = """
from energy_hpc.telemetry.registry import Backend
from energy_hpc.telemetry.synthetic import SyntheticSensor

BACKEND = Backend("{name}", __name__, False, "site power meter (test)", auto="device", order=5)
NOT_A_BACKEND = 42


class SitePower(SyntheticSensor):
    backend = "{name}"


def open_sensor(ctx):
    return SitePower(device_prefix="{name}-")
"""


@pytest.fixture
def fresh() -> Iterator[None]:
    """The registry of a new process, put back afterwards."""
    with registry.fresh_registry():
        yield


def backend_module(folder: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    mod = f"{name}_backend"
    (folder / f"{mod}.py").write_text(MODULE.format(name=name))
    monkeypatch.syspath_prepend(str(folder))
    return mod


def test_a_registered_backend_is_a_choice_of_job_files_and_of_the_sensors_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fresh: None
) -> None:
    mod = backend_module(tmp_path, "sitepower", monkeypatch)
    row = registry.Backend("sitepower", mod, False, "site power meter (test)")
    with pytest.raises(SpecError, match="'sitepower' is not one of auto"):
        parse_job(JOB.format(sensors='"sitepower"'))
    with registry.registered(row):
        assert "sitepower" in registry.sensor_choices()
        job = parse_job(JOB.format(sensors='"sitepower"') + "[measure.sensor_options.sitepower]\n")
        assert job.measure.sensors == ("sitepower",)
        assert cli.main(["sensors", "--json"]) == 0
        rows = {r["backend"]: r for r in json.loads(capsys.readouterr().out)["backends"]}
        assert rows["sitepower"]["usable"] and rows["sitepower"]["what"] == "site power meter (test)"
        assert rows["sitepower"]["channels"][0]["name"] == "synthetic:sitepower-0"
    assert "sitepower" not in registry.sensor_choices()  # undone with the block


def test_auto_tries_a_device_backend_in_the_place_its_row_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: None
) -> None:
    mod = backend_module(tmp_path, "sitegpu", monkeypatch)
    with registry.registered(registry.Backend("sitegpu", mod, False, "test", auto="device", order=5)):
        assert registry.device_backends() == ("sitegpu", "nvml", "amdsmi")
        opened = registry.open_sensors(["auto"], SensorContext(node_leader=False))
        assert [s.backend for s in opened.sensors] == ["sitegpu"]
        for s in opened.sensors:
            s.close()
    assert registry.device_backends() == ("nvml", "amdsmi")


def test_the_rows_say_the_auto_order_and_the_probe() -> None:
    assert registry.device_backends() == ("nvml", "amdsmi")
    assert registry.node_backends() == ("pm_counters", "rapl")
    assert registry.fallback_backends() == ("estimate",)
    assert set(registry.probe_backends()) == {"nvml", "amdsmi", "pm_counters"}


@pytest.mark.parametrize(
    "kw",
    [{"name": "auto"}, {"name": "a:b"}, {"auto": "node"}, {"node_level": True, "auto": "device"}],
)
def test_a_row_that_contradicts_itself_is_refused(kw: dict) -> None:
    args = {"name": "x", "module": "m", "node_level": False, "what": "w", **kw}
    with pytest.raises(ValueError, match="sensor backend"):
        registry.Backend(**args)


def dist_info(folder: Path, entry_points: str) -> None:
    """An installed distribution as importlib.metadata finds it on sys.path."""
    info = folder / "energy_hpc_site-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: energy-hpc-site\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_entry_points_add_backends_and_a_broken_one_is_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fresh: None
) -> None:
    mod = backend_module(tmp_path, "sitepower", monkeypatch)
    dist_info(
        tmp_path,
        "[energy_hpc.sensors]\n"
        f"sitepower = {mod}:BACKEND\n"
        "gone = energy_hpc_no_such_module:BACKEND\n"
        f"odd = {mod}:NOT_A_BACKEND\n",
    )
    logs.setup_logging()
    capsys.readouterr()
    choices = registry.sensor_choices()
    assert "sitepower" in choices and "gone" not in choices and "odd" not in choices
    assert registry.device_backends() == ("sitepower", "nvml", "amdsmi")  # auto = "device", order 5
    job = parse_job(JOB.format(sensors='"sitepower", "synthetic"'))
    assert job.measure.sensors == ("sitepower", "synthetic")
    opened = registry.open_sensors(["sitepower"], SensorContext())
    assert [c.name for s in opened.sensors for c in s.channels()] == ["synthetic:sitepower-0"]
    registry.sensor_choices()  # loaded once: no second warning
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 2, err
    gone, odd = sorted(err)
    assert "sensor entry point 'gone'" in gone and "ModuleNotFoundError" in gone
    assert "sensor entry point 'odd'" in odd and "not an energy_hpc Backend" in odd
    assert all(line.startswith("energy-hpc WARNING: ") for line in err)


def test_an_entry_point_must_carry_its_backends_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fresh: None
) -> None:
    mod = backend_module(tmp_path, "sitepower", monkeypatch)
    dist_info(tmp_path, f"[energy_hpc.sensors]\nother = {mod}:BACKEND\nnvml = {mod}:BACKEND\n")
    logs.setup_logging()
    capsys.readouterr()
    assert "other" not in registry.sensor_choices() and "sitepower" not in registry.sensor_choices()
    assert registry.backends()["nvml"].module == "energy_hpc.telemetry.nvml"
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("must have its name" in line for line in err), err
