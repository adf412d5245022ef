"""RAPL through powercap sysfs: zones, wraps, and the root-only counters of recent kernels."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from energy_hpc.errors import SensorUnavailable
from energy_hpc.telemetry import rapl
from energy_hpc.telemetry.base import Scope, SensorContext

RANGE_UJ = 262143328850  # a real max_energy_range_uj (Xeon)


def zone(root: Path, name: str, label: str, energy_uj: int) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
    return d


def two_socket(root: Path) -> Path:
    zone(root, "intel-rapl:0", "package-0", 1_000_000)
    zone(root, "intel-rapl:0:0", "core", 500_000)
    zone(root, "intel-rapl:0:1", "dram", 200_000)
    zone(root, "intel-rapl:1", "package-1", 3_000_000)
    return root


def open_(root, clock=None):
    return rapl.open_sensor(
        SensorContext(hostname="n1", options={"rapl": {"root": str(root)}}),
        **({"clock": clock} if clock else {}),
    )


def test_records_packages_and_dram_not_the_core_subzone(tmp_path):
    s = open_(two_socket(tmp_path))
    assert [(c.name, c.scope) for c in s.channels()] == [
        ("rapl:package-0", Scope.CPU),
        ("rapl:dram-0", Scope.MEMORY),
        ("rapl:package-1", Scope.CPU),
    ]
    assert all(c.node_level and c.has_energy for c in s.channels())


def test_energy_in_joules_and_power_from_the_counter_difference(tmp_path, clock):
    root = two_socket(tmp_path)
    s = open_(root, clock)
    r0 = s.read()
    assert r0.energy[0] == pytest.approx(1.0) and math.isnan(r0.power[0])
    clock.advance(0.5)
    (root / "intel-rapl:0" / "energy_uj").write_text("51000000\n")  # +50 J in 0.5 s
    assert s.read().power[0] == pytest.approx(100.0)


def test_a_wrap_is_unwrapped_and_not_flagged(tmp_path, clock):
    root = two_socket(tmp_path)
    (root / "intel-rapl:0" / "energy_uj").write_text(f"{RANGE_UJ - 10_000_000}\n")
    s = open_(root, clock)
    e0 = s.read().energy[0]
    clock.advance(1.0)
    (root / "intel-rapl:0" / "energy_uj").write_text("30000000\n")  # wrapped: 10 J + 30 J later
    r = s.read()
    assert r.energy[0] - e0 == pytest.approx(40.0)
    assert r.power[0] == pytest.approx(40.0)
    assert s.channels()[0].counter_fault == ""


def test_root_only_counters_are_reported_plainly_with_the_fix(tmp_path, monkeypatch):
    root = two_socket(tmp_path)
    real = Path.read_text

    def read_text(self, *a, **kw):  # what a non-root user meets on Linux >= 5.10
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(SensorUnavailable) as info:
        open_(root)
    msg = str(info.value)
    assert "readable by root only" in msg and "CVE-2020-8694" in msg and "chmod o+r" in msg


def test_no_powercap_tree_is_unavailable(tmp_path):
    with pytest.raises(SensorUnavailable, match="no RAPL zones"):
        open_(tmp_path)


def laptop_with_psys(root: Path) -> Path:
    # the usual Intel client layout: intel-rapl:1 is the platform (psys) domain, which contains package-0
    zone(root, "intel-rapl:0", "package-0", 1_000_000)
    zone(root, "intel-rapl:0:0", "core", 500_000)
    zone(root, "intel-rapl:0:1", "uncore", 100_000)
    zone(root, "intel-rapl:0:2", "dram", 200_000)
    zone(root, "intel-rapl:1", "psys", 9_000_000)
    return root


def test_psys_is_never_taken_for_a_cpu_package(tmp_path):
    s = open_(laptop_with_psys(tmp_path))
    assert [(c.name, c.scope) for c in s.channels()] == [
        ("rapl:package-0", Scope.CPU),
        ("rapl:dram-0", Scope.MEMORY),
    ]
    assert "psys" in s.channels()[0].note
    assert s.read().energy == [pytest.approx(1.0), pytest.approx(0.2)]


def test_packages_are_named_by_their_zone_name_not_their_position(tmp_path):
    # a server whose psys zone sits between the packages: intel-rapl:2 is package-1
    zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    zone(tmp_path, "intel-rapl:1", "psys", 9_000_000)
    zone(tmp_path, "intel-rapl:2", "package-1", 3_000_000)
    zone(tmp_path, "intel-rapl:2:0", "dram", 400_000)
    s = open_(tmp_path)
    assert [c.name for c in s.channels()] == ["rapl:package-0", "rapl:package-1", "rapl:dram-1"]
    assert s.read().energy == [pytest.approx(1.0), pytest.approx(3.0), pytest.approx(0.4)]


def test_subzones_are_found_inside_their_package_folder_once(tmp_path):
    # the kernel's device tree nests intel-rapl:0:0 inside intel-rapl:0; /sys/class/powercap also lists it
    pkg = zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    zone(pkg, "intel-rapl:0:0", "dram", 200_000)
    assert [c.name for c in open_(tmp_path).channels()] == ["rapl:package-0", "rapl:dram-0"]
    (tmp_path / "intel-rapl:0:0").symlink_to(pkg / "intel-rapl:0:0")
    assert [c.name for c in open_(tmp_path).channels()] == ["rapl:package-0", "rapl:dram-0"]
