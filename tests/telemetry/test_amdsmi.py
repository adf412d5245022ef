"""amdsmi backend: GCD mapping, MI250X packages on an 8-GCD node, each ROCm release's dicts, errors."""

from __future__ import annotations

import math
import re
import sys

import pytest

from energy_hpc.context import visible_devices
from energy_hpc.errors import SensorReadError, SensorUnavailable
from energy_hpc.telemetry import amdsmi
from energy_hpc.telemetry.base import Scope, SensorContext
from tests.fakes.fake_amdsmi import (
    FRONTIER_BDFS,
    VERSIONS,
    FakeGcd,
    amdsmi_uuid,
    make_amdsmi,
    mi250x_node,
    rocr_uuid,
    torch_uuid,
)

NO_PROBE = {"amdsmi": {"probe_reads": 0}}


def open_(gcds=None, version="6.4", lib=None, **ctx):
    lib = lib or make_amdsmi(gcds if gcds is not None else mi250x_node(), version)
    opts = ctx.pop("options", {})
    ctx["options"] = {"amdsmi": {"probe_reads": 0, **opts}}
    return amdsmi.open_sensor(SensorContext(**ctx), library=lib)


def from_env(env: dict, local_rank: int = 0) -> dict:
    var, entries = visible_devices(env)
    return {"visible_env": var, "visible_devices": entries, "local_rank": local_rank}


@pytest.mark.parametrize(
    "env,local_rank,bdf",
    [
        ({"ROCR_VISIBLE_DEVICES": "4"}, 0, FRONTIER_BDFS[4]),  # Frontier --gpu-bind=closest: one GCD per rank
        ({"HIP_VISIBLE_DEVICES": "6"}, 0, FRONTIER_BDFS[6]),
        ({"ROCR_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, 5, FRONTIER_BDFS[5]),  # all visible: local rank picks
        (
            {"ROCR_VISIBLE_DEVICES": "2,3", "HIP_VISIBLE_DEVICES": "1"},
            0,
            FRONTIER_BDFS[3],
        ),  # HIP indexes ROCR's list
        ({"ROCR_VISIBLE_DEVICES": "6,7", "HIP_VISIBLE_DEVICES": "0,1"}, 1, FRONTIER_BDFS[7]),
        ({"CUDA_VISIBLE_DEVICES": "2"}, 0, FRONTIER_BDFS[2]),  # HIP honours CUDA_VISIBLE_DEVICES too
        ({"ROCR_VISIBLE_DEVICES": "GPU-CF1182F2988C0A43"}, 0, FRONTIER_BDFS[3]),  # ROCr UUID = ASIC serial
    ],
)
def test_visible_devices_forms_and_rocr_hip_layering_map_to_the_gcd(env, local_rank, bdf):
    ch = open_(**from_env(env, local_rank)).channels()[0]
    assert bdf in (ch.device, *ch.shared_with)
    assert ch.name.endswith(bdf) or ch.name == f"amdsmi:pkg:{ch.device}"


def test_bus_id_is_the_surest_key():
    ch = open_(device_bus_id="0000:D9:00.0").channels()[0]
    assert ch.device == "0000:d9:00.0"


def test_unknown_bus_id_lists_what_amdsmi_sees():
    with pytest.raises(SensorUnavailable, match=re.escape("0000:c1:00.0")):
        open_(device_bus_id="0000:01:00.0")


@pytest.mark.parametrize("silent_mode", ["zero", "na", "raise"])
def test_8_gcd_node_yields_4_packages_each_recorded_once_on_the_primary(silent_mode):
    gcds = mi250x_node(silent_mode)
    channels = [open_(gcds, device_bus_id=b).channels()[0] for b in FRONTIER_BDFS]
    packages = [c for c in channels if c.scope is Scope.PACKAGE]
    assert [c.device for c in packages] == list(FRONTIER_BDFS[0::2])
    assert len({c.name for c in packages}) == 4
    for c in packages:
        assert c.has_power and c.has_energy and len(c.shared_with) == 2
    placeholders = [c for c in channels if c.scope is Scope.GPU]
    assert [c.device for c in placeholders] == list(FRONTIER_BDFS[1::2])
    for ph in placeholders:  # the secondary's share is not lost: it points at its package
        assert not ph.has_power and not ph.has_energy
        assert ph.included_in == f"amdsmi:pkg:{ph.shared_with[0]}"
        assert ph.included_in in {c.name for c in packages}


def test_primary_with_the_higher_bus_id_is_found_from_power_not_position():
    gcds = mi250x_node(primaries_first=False)
    ch = open_(gcds, device_bus_id=FRONTIER_BDFS[0]).channels()[0]
    assert ch.included_in == f"amdsmi:pkg:{FRONTIER_BDFS[1]}"
    pkg = open_(gcds, device_bus_id=FRONTIER_BDFS[1]).channels()[0]
    assert pkg.scope is Scope.PACKAGE and pkg.shared_with == (FRONTIER_BDFS[1], FRONTIER_BDFS[0])


@pytest.mark.parametrize("version", VERSIONS)
def test_pairs_follow_xgmi_bandwidth_not_bus_order(version, caplog):
    # ROCm 5.7 spells the call amdsmi_get_minmax_bandwith_between_processors: it must be used too
    gcds = mi250x_node()
    # swap the roles of GCDs 1 and 2 in the topology: package (0,2) and (1,3)
    for g in gcds:
        g.link_bw = {}
    for a, b, bw in [
        (0, 2, 200000),
        (1, 3, 200000),
        (0, 1, 50000),
        (2, 3, 100000),
        (4, 5, 200000),
        (6, 7, 200000),
        (4, 6, 50000),
        (5, 7, 50000),
    ]:
        gcds[a].link_bw[gcds[b].bdf] = bw
        gcds[b].link_bw[gcds[a].bdf] = bw
    gcds[1].silent, gcds[2].silent = False, True
    ch = open_(gcds, version, device_bus_id=FRONTIER_BDFS[2]).channels()[0]
    assert ch.included_in == f"amdsmi:pkg:{FRONTIER_BDFS[0]}"
    assert "PCI bus order" not in caplog.text


def test_without_bandwidth_information_pairs_fall_back_to_bus_neighbours_with_a_warning(caplog):
    lib = make_amdsmi(mi250x_node(), bandwidth_supported=False)
    ch = open_(lib=lib, device_bus_id=FRONTIER_BDFS[3]).channels()[0]
    assert ch.included_in == f"amdsmi:pkg:{FRONTIER_BDFS[2]}"
    assert "PCI bus order" in caplog.text


def test_explicit_packages_option_wins():
    gcds = mi250x_node()
    for g in gcds:
        g.link_bw = {}
    ch = open_(
        gcds, device_bus_id=FRONTIER_BDFS[7], options={"packages": [[FRONTIER_BDFS[6], FRONTIER_BDFS[7]]]}
    ).channels()[0]
    assert ch.included_in == f"amdsmi:pkg:{FRONTIER_BDFS[6]}"


def test_secondary_records_the_package_when_no_rank_of_the_job_uses_the_primary():
    ch = open_(device_bus_id=FRONTIER_BDFS[1], node_devices=(FRONTIER_BDFS[1],)).channels()[0]
    assert ch.name == f"amdsmi:pkg:{FRONTIER_BDFS[0]}" and ch.scope is Scope.PACKAGE and ch.has_energy
    assert "no rank of this job uses the primary" in ch.note


def test_secondary_stays_a_placeholder_when_the_primary_is_in_the_job():
    ch = open_(device_bus_id=FRONTIER_BDFS[1], node_devices=FRONTIER_BDFS[:2]).channels()[0]
    assert ch.included_in and not ch.has_power


def test_placeholder_reads_nan_without_errors_and_without_library_calls():
    s = open_(device_bus_id=FRONTIER_BDFS[1])
    r = s.read()
    assert math.isnan(r.power[0]) and math.isnan(r.energy[0]) and not any(r.errors or [])


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rocm_release_gives_package_power_and_energy_in_si_units(version):
    gcds = mi250x_node()
    gcds[0].power_W, gcds[0].energy_ticks, gcds[0].counter_resolution = 123, 1_000_000, 15.259
    s = open_(gcds, version, device_bus_id=FRONTIER_BDFS[0])
    r = s.read()
    assert r.power == [123.0]
    assert r.energy[0] == pytest.approx(1_000_000 * 15.259e-6)
    assert s.channels()[0].power_kind == "average"  # MI200: the socket power is a running average


@pytest.mark.parametrize("version", ["6.0", "6.4", "7.0"])
def test_mi300_reads_current_socket_power_as_instant(version):
    gcds = [
        FakeGcd(
            bdf="0000:05:00.0", market_name="AMD Instinct MI300X", device_id=0x74A1, instant=True, power_W=650
        )
    ]
    s = open_(gcds, version)
    (ch,) = s.channels()
    assert (ch.scope, ch.power_kind, ch.shared_with) == (Scope.GPU, "instant", ())
    assert s.read().power == [650.0]


@pytest.mark.parametrize("version", VERSIONS)
def test_init_flag_is_the_releases_own_enum_member(version):
    lib = make_amdsmi(mi250x_node(), version)
    open_(lib=lib, device_bus_id=FRONTIER_BDFS[0])
    assert lib._state["flags"] is lib.AmdSmiInitFlags.INIT_AMD_GPUS  # 5.7 too (AMD_GPUS was 5.5/5.6)


@pytest.mark.parametrize("version", ["6.0", "6.2", "7.0"])
def test_mi200_power_is_average_even_where_current_socket_power_is_a_number(version):
    # ROCm 6.0 copies average_socket_power into current_socket_power on MI200 (gpu_metrics 1.3):
    # the key being numeric says nothing about what it measures; the part does.
    gcds = mi250x_node()
    lib = make_amdsmi(gcds, version)
    lib.amdsmi_init()
    info = lib.amdsmi_get_power_info(lib.amdsmi_get_processor_handles()[0])
    lib.amdsmi_shut_down()
    if version == "6.0":
        assert info["current_socket_power"] == info["average_socket_power"] == 90
    s = open_(lib=lib, device_bus_id=FRONTIER_BDFS[0])
    (ch,) = s.channels()
    assert ch.power_kind == "average" and "average" in ch.note
    assert s.read().power == [90.0]


@pytest.mark.parametrize("version", VERSIONS[1:])
def test_mi300_is_instant_by_part_whatever_the_release_sentinel(version):
    # 6.0 returns the raw 0xFFFF sentinel for average_socket_power, 6.2+ "N/A"; no `instant` flag here:
    # the device id says MI300X.
    gcds = [FakeGcd(bdf="0000:05:00.0", market_name="AMD Instinct MI300X", device_id=0x74A1, power_W=612.7)]
    s = open_(gcds, version)
    (ch,) = s.channels()
    assert ch.power_kind == "instant"
    assert s.read().power == [612.0]  # the library returns whole watts


@pytest.mark.parametrize("form", ["torch", "rocr", "amdsmi"])
def test_device_uuid_in_each_form_finds_the_gcd(form):
    gcds = mi250x_node()
    g = gcds[5]
    uuid = {
        "torch": torch_uuid(g.serial_int),
        "rocr": rocr_uuid(g.serial_int),
        "amdsmi": amdsmi_uuid(g.serial_int, g.device_id),
    }[form]
    ch = open_(gcds, device_uuid=uuid).channels()[0]
    assert ch.device == g.bdf and "uuid" in ch.note


def test_torch_uuid_on_rocm_is_what_amdsmi_never_prints():
    g = mi250x_node()[0]
    assert torch_uuid(g.serial_int) == "63663131-3832-6632-3938-386330613430"  # "cf1182f2988c0a40" in ASCII
    assert amdsmi_uuid(g.serial_int, g.device_id) == "cfff7408-0000-1000-8011-82f2988c0a40"


@pytest.mark.parametrize(
    "uuid",
    [
        "58580000-0000-0000-0000-000000000000",  # ROCr "GPU-XX": no unique id
        "00000000-1111-2222-3333-444444444444",
    ],
)
def test_unmatched_device_uuid_falls_through_to_the_visible_devices_entry(uuid, caplog):
    ch = open_(device_uuid=uuid, **from_env({"ROCR_VISIBLE_DEVICES": "4"})).channels()[0]
    assert ch.device == FRONTIER_BDFS[4]
    assert "ROCR_VISIBLE_DEVICES index 4" in ch.note and uuid in caplog.text


def test_unmatched_device_uuid_falls_through_to_the_local_rank():
    ch = open_(device_uuid="58580000-0000-0000-0000-000000000000", local_rank=2).channels()[0]
    assert ch.device == FRONTIER_BDFS[2] and "local rank 2" in ch.note


def test_stuck_counters_of_rocm_6_0_are_caught_by_hygiene(clock):
    gcds = mi250x_node()
    lib = make_amdsmi(gcds, "6.0", quirks=("stuck",))
    s = amdsmi.open_sensor(
        SensorContext(device_bus_id=FRONTIER_BDFS[0], options=NO_PROBE), library=lib, clock=clock
    )
    for _ in range(30):
        gcds[0].energy_ticks += 1_000_000  # the hardware moves, the library's cache does not
        s.read()
        clock.advance(0.1)
    assert s.channels()[0].counter_fault == "stuck"


def test_a_counter_running_backwards_now_and_then_is_distrusted(clock):
    gcds = mi250x_node()
    lib = make_amdsmi(gcds, "6.4", quirks=("backwards",), backwards_every=5)
    s = amdsmi.open_sensor(
        SensorContext(device_bus_id=FRONTIER_BDFS[0], options=NO_PROBE), library=lib, clock=clock
    )
    for _ in range(6):
        gcds[0].energy_ticks += 10_000
        s.read()
        clock.advance(0.01)
    assert s.channels()[0].counter_fault == "backwards"


def test_missing_driver_is_unavailable_with_the_reason():
    with pytest.raises(SensorUnavailable, match="amdgpu kernel driver is not loaded"):
        open_(lib=make_amdsmi(mi250x_node(), driver_loaded=False))


def test_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # import amdsmi -> ImportError
    with pytest.raises(SensorUnavailable, match="pip install /opt/rocm/share/amd_smi"):
        amdsmi.open_sensor(SensorContext())


def test_library_error_while_reading_is_a_read_error():
    gcds = mi250x_node()
    s = open_(gcds, device_bus_id=FRONTIER_BDFS[0])
    gcds[0].silent, gcds[0].silent_mode = True, "raise"
    with pytest.raises(SensorReadError, match="NOT_SUPPORTED"):
        s.read()


def test_package_counter_running_backwards_falls_back_to_the_power_integral(clock, caplog):
    gcds = mi250x_node()
    lib = make_amdsmi(gcds)
    s = amdsmi.open_sensor(
        SensorContext(device_bus_id=FRONTIER_BDFS[0], options=NO_PROBE), library=lib, clock=clock
    )
    s.read()
    clock.advance(0.01)
    gcds[0].energy_ticks -= 10_000
    assert math.isnan(s.read().energy[0])
    assert s.channels()[0].counter_fault == "backwards"
    assert "distrusted" in caplog.text
