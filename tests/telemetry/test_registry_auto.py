"""``auto`` on a Cray EX node where RAPL is readable too (issue 11, finding 3): pm_counters measures
the node's CPU and memory already, so RAPL is not opened beside it (it would count them twice), and
``skipped`` says why. Fake /sys trees in the real file formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from energy_hpc.telemetry import registry
from energy_hpc.telemetry.base import SensorContext

STAMP = 1_700_000_000_123_456  # us


def pm_tree(root: Path, cpu_and_memory: bool = True) -> Path:
    root.mkdir(parents=True)
    files = {
        "power": f"900 W {STAMP} us",
        "energy": f"5000000 J {STAMP} us",
        "freshness": "1",
        "raw_scan_hz": "10",
        "version": "3",
    }
    if cpu_and_memory:
        files.update(
            {
                "cpu_power": f"180 W {STAMP} us",
                "cpu_energy": f"900000 J {STAMP} us",
                "memory_power": f"60 W {STAMP} us",
                "memory_energy": f"250000 J {STAMP} us",
            }
        )
    for name, text in files.items():
        (root / name).write_text(text + "\n")
    return root


def rapl_tree(root: Path) -> Path:
    for name, label in (
        ("intel-rapl:0", "package-0"),
        ("intel-rapl:0:0", "dram"),
        ("intel-rapl:1", "package-1"),
    ):
        d = root / name
        d.mkdir(parents=True)
        (d / "name").write_text(label + "\n")
        (d / "energy_uj").write_text("1000000\n")
        (d / "max_energy_range_uj").write_text("262143328850\n")
    return root


@pytest.fixture(autouse=True)
def no_gpu_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """The device backends are not what these tests are about: none is tried."""
    monkeypatch.setattr(registry, "device_backends", tuple)


def ctx(tmp_path: Path, pm: bool = True, pm_cpu: bool = True, leader: bool = True) -> SensorContext:
    opts = {"rapl": {"root": str(rapl_tree(tmp_path / "powercap"))}}
    opts["pm_counters"] = {
        "root": str(pm_tree(tmp_path / "pm", pm_cpu) if pm else tmp_path / "absent"),
        "probe_reads": 0,
    }
    return SensorContext(hostname="nid001", node_leader=leader, local_rank=0 if leader else 1, options=opts)


def _close(opened: registry.Opened) -> list[str]:
    names = [s.backend for s in opened.sensors]
    for s in opened.sensors:
        s.close()
    return names


def test_auto_on_a_cray_ex_node_with_readable_rapl_opens_pm_counters_only(tmp_path: Path) -> None:
    opened = registry.open_sensors(["auto"], ctx(tmp_path))
    assert _close(opened) == ["pm_counters"]
    assert "pm_counters" in opened.skipped["rapl"] and "twice" in opened.skipped["rapl"]


def test_auto_skips_rapl_when_pm_counters_was_named_too(tmp_path: Path) -> None:
    opened = registry.open_sensors(["pm_counters", "auto"], ctx(tmp_path))
    assert _close(opened) == ["pm_counters"]
    assert "pm_counters" in opened.skipped["rapl"]


def test_auto_on_another_rank_of_the_node_opens_neither(tmp_path: Path) -> None:
    opened = registry.open_sensors(["auto"], ctx(tmp_path, leader=False))
    assert _close(opened) == []
    assert "node leader" in opened.skipped["pm_counters"]
    assert "pm_counters" in opened.skipped["rapl"]


def test_auto_without_pm_counters_opens_rapl(tmp_path: Path) -> None:
    opened = registry.open_sensors(["auto"], ctx(tmp_path, pm=False))
    assert _close(opened) == ["rapl"]
    assert "not an HPE Cray EX node" in opened.skipped["pm_counters"]


def test_auto_keeps_rapl_where_pm_counters_has_no_cpu_or_memory_files(tmp_path: Path) -> None:
    """Node power only: RAPL's CPU and memory channels duplicate nothing."""
    opened = registry.open_sensors(["auto"], ctx(tmp_path, pm_cpu=False))
    assert _close(opened) == ["pm_counters", "rapl"]
    assert "rapl" not in opened.skipped


def test_both_named_explicitly_are_both_opened(tmp_path: Path) -> None:
    """The user's choice is kept; the analysis adds one backend per scope and host."""
    opened = registry.open_sensors(["pm_counters", "rapl"], ctx(tmp_path))
    assert _close(opened) == ["pm_counters", "rapl"]
