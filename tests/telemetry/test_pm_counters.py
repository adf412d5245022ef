"""Cray EX pm_counters: real file formats in a tmp folder, sensor timestamps, scan consistency."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from energy_hpc.errors import SensorUnavailable
from energy_hpc.telemetry import pm_counters, registry
from energy_hpc.telemetry.base import Scope, SensorContext

STAMP = 1_700_000_000_123_456  # us


def frontier_node(root: Path, stamp: int = STAMP, energy: int = 5_000_000) -> Path:
    """The files of a Frontier (EX235a) node as HPE documents them, one line each."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "power": f"1830 W {stamp} us",
        "energy": f"{energy} J {stamp} us",
        "cpu_power": f"180 W {stamp} us",
        "cpu_energy": f"900000 J {stamp} us",
        "memory_power": f"60 W {stamp} us",
        "memory_energy": f"250000 J {stamp} us",
        "cpu_temp": f"45 C {stamp} us",
        "freshness": "1234",
        "generation": "7",
        "startup": "1699990000000000",
        "version": "3",
        "raw_scan_hz": "10",
        "power_cap": f"0 W {stamp} us",
        "accel_power_cap": f"0 W {stamp} us",
    }
    for k in range(4):
        files[f"accel{k}_power"] = f"{380 + k} W {stamp} us"
        files[f"accel{k}_energy"] = f"{1_000_000 * (k + 1)} J {stamp} us"
    for name, text in files.items():
        (root / name).write_text(text + "\n")
    return root


def open_(root, **kw):
    return pm_counters.open_sensor(
        SensorContext(
            hostname="frontier00042", options={"pm_counters": {"root": str(root), "probe_reads": 0}}
        ),
        **kw,
    )


def test_parses_value_unit_and_sensor_timestamp():
    v = pm_counters.parse_line("1830 W 1700000000123456 us\n")
    assert (v.value, v.unit) == (1830.0, "W") and v.timestamp_s == pytest.approx(1700000000.123456)
    old = pm_counters.parse_line("598732067 J\n")  # version 1: no timestamp
    assert old.value == 598732067 and math.isnan(old.timestamp_s)


def test_channels_are_node_cpu_memory_and_one_per_accel_package(tmp_path):
    s = open_(frontier_node(tmp_path / "pm"))
    names = [c.name for c in s.channels()]
    assert names == [
        "pm_counters:node",
        "pm_counters:accel0",
        "pm_counters:accel1",
        "pm_counters:accel2",
        "pm_counters:accel3",
        "pm_counters:cpu",
        "pm_counters:memory",
    ]
    by = {c.name: c for c in s.channels()}
    assert by["pm_counters:node"].scope is Scope.NODE and by["pm_counters:node"].included_in == ""
    assert by["pm_counters:accel2"].scope is Scope.PACKAGE
    for n in names[1:]:  # parts of the node: never added to it
        assert by[n].included_in == "pm_counters:node"
    assert all(c.node_level and c.has_energy and c.has_power for c in s.channels())
    assert by["pm_counters:node"].device == "frontier00042:node"
    assert by["pm_counters:node"].update_period_s == pytest.approx(0.1)  # 1 / raw_scan_hz


def test_reading_keeps_the_sensors_own_timestamps(tmp_path):
    s = open_(frontier_node(tmp_path / "pm"))
    r = s.read()
    assert r.power[0] == 1830.0 and r.energy[0] == 5_000_000.0
    assert r.power[1:5] == [380.0, 381.0, 382.0, 383.0]
    assert all(t == pytest.approx(STAMP * 1e-6) for t in r.sensor_time)


def test_per_socket_cpu_files_are_inside_the_cpu_channel(tmp_path):
    root = frontier_node(tmp_path / "pm")
    (root / "cpu0_power").write_text(f"90 W {STAMP} us\n")
    (root / "cpu0_energy").write_text(f"450000 J {STAMP} us\n")
    by = {c.name: c for c in open_(root).channels()}
    assert by["pm_counters:cpu0"].included_in == "pm_counters:cpu"


def test_a_scan_that_changes_under_the_reader_is_read_again(tmp_path):
    root = frontier_node(tmp_path / "pm")
    s = open_(root)
    real_scan = s._scan
    calls = {"n": 0}

    def scan_during_update():
        calls["n"] += 1
        out = real_scan()
        if calls["n"] == 1:  # the controller publishes a new scan while we read the first one
            frontier_node(root, stamp=STAMP + 100_000, energy=5_000_183)
            (root / "freshness").write_text("1235\n")
        return out

    s._scan = scan_during_update
    r = s.read()
    assert calls["n"] == 2 and r.energy[0] == 5_000_183


def test_counter_reset_by_a_controller_restart_is_flagged_and_integrated_from_power(tmp_path, clock):
    root = frontier_node(tmp_path / "pm")
    s = open_(root, clock=clock)
    s.read()
    clock.advance(0.1)
    frontier_node(root, stamp=STAMP + 100_000, energy=12)  # startup changed, energy restarted
    r = s.read()
    assert math.isnan(r.energy[0]) and r.power[0] == 1830.0
    assert s.channels()[0].counter_fault == "backwards"


def test_not_a_cray_node_is_unavailable(tmp_path):
    with pytest.raises(SensorUnavailable, match="not an HPE Cray EX node"):
        open_(tmp_path / "absent")


def test_only_the_node_leader_opens_pm_counters(tmp_path):
    root = frontier_node(tmp_path / "pm")
    opts = {"pm_counters": {"root": str(root), "probe_reads": 0}}
    leader = registry.open_sensors(["pm_counters"], SensorContext(node_leader=True, options=opts))
    other = registry.open_sensors(
        ["pm_counters"], SensorContext(node_leader=False, local_rank=3, options=opts)
    )
    assert [s.backend for s in leader.sensors] == ["pm_counters"]
    assert other.sensors == [] and "node leader" in other.skipped["pm_counters"]
