"""The amdsmi stand-in must follow each ROCm release's real Python package.

The tables below are read from the amdsmi wheels 5.7.0, 6.0.0, 6.2.0, 6.3.0, 6.4.0 and 7.0.0
(``amdsmi_interface.py`` and ``amdsmi_wrapper.py``) and from ROCm/amdsmi's C sources (rocm-5.7.0 ...
rocm-6.2.0); the real package cannot be imported here (it loads libamd_smi.so).
"""

from __future__ import annotations

import inspect
import itertools

import pytest

from energy_hpc.telemetry.emulated import amdsmi_api as api

REAL_INIT_FLAGS = {
    "5.7": {
        "INIT_ALL_PROCESSORS": 0,
        "INIT_AMD_CPUS": 1,
        "INIT_AMD_GPUS": 2,
        "INIT_NON_AMD_CPUS": 4,
        "INIT_NON_AMD_GPUS": 8,
    },
    "6.0": {
        "INIT_ALL_PROCESSORS": 0,
        "INIT_AMD_CPUS": 1,
        "INIT_AMD_GPUS": 2,
        "INIT_NON_AMD_CPUS": 4,
        "INIT_NON_AMD_GPUS": 8,
    },
    **{
        v: {
            "INIT_ALL_PROCESSORS": 0xFFFFFFFF,
            "INIT_AMD_CPUS": 1,
            "INIT_AMD_GPUS": 2,
            "INIT_AMD_APUS": 3,
            "INIT_NON_AMD_CPUS": 4,
            "INIT_NON_AMD_GPUS": 8,
        }
        for v in ("6.2", "6.3", "6.4", "7.0")
    },
}
REAL_BANDWIDTH = {
    "5.7": "amdsmi_get_minmax_bandwith_between_processors",
    **dict.fromkeys(api.VERSIONS[1:], "amdsmi_get_minmax_bandwidth_between_processors"),
}
REAL_POWER_INFO_PARAMS = {v: ["processor_handle"] for v in api.VERSIONS} | {
    "6.4": ["processor_handle", "sensor_ind"]
}


def lib_and_handles(version, gcds=None, **kw):
    lib = api.make_amdsmi(gcds if gcds is not None else api.mi250x_node(), version, **kw)
    lib.amdsmi_init()
    return lib, lib.amdsmi_get_processor_handles()


@pytest.mark.parametrize("version", api.VERSIONS)
def test_init_flags_are_the_releases_own(version):
    lib = api.make_amdsmi([], version)
    assert {f.name: int(f) for f in lib.AmdSmiInitFlags} == REAL_INIT_FLAGS[version]
    assert inspect.signature(lib.amdsmi_init).parameters["flag"].default is lib.AmdSmiInitFlags.INIT_AMD_GPUS
    with pytest.raises(lib.AmdSmiParameterException):
        lib.amdsmi_init(2)  # a bare int is refused, as the real wrapper does


@pytest.mark.parametrize("version", api.VERSIONS)
def test_bandwidth_call_has_the_releases_spelling_only(version):
    lib = api.make_amdsmi([], version)
    other = set(REAL_BANDWIDTH.values()) - {REAL_BANDWIDTH[version]}
    assert hasattr(lib, REAL_BANDWIDTH[version])
    assert not any(hasattr(lib, n) for n in other)


@pytest.mark.parametrize("version", api.VERSIONS)
def test_power_info_signature_per_release(version):
    lib = api.make_amdsmi([], version)
    assert list(inspect.signature(lib.amdsmi_get_power_info).parameters) == REAL_POWER_INFO_PARAMS[version]


@pytest.mark.parametrize("version", api.VERSIONS)
def test_counter_resolution_is_the_c_float_15_3_the_library_reports(version):
    lib, h = lib_and_handles(version)
    assert lib.amdsmi_get_energy_count(h[0])["counter_resolution"] == 15.300000190734863


def test_timestamp_is_the_gcds_nanosecond_clock():
    gcds = api.mi250x_node()
    gcds[0].timestamp_ns = 1_712_024_507_665
    lib, h = lib_and_handles("6.4", gcds)
    assert lib.amdsmi_get_energy_count(h[0])["timestamp"] == 1_712_024_507_665


@pytest.mark.parametrize(
    "version,current", [("5.7", None), ("6.0", 90), ("6.2", "N/A"), ("6.4", "N/A"), ("7.0", "N/A")]
)
def test_mi200_current_socket_power_per_release(version, current):
    # 6.0: gpu_metrics 1.3 copies the average into current_socket_power; 6.1+ leaves the sentinel
    lib, h = lib_and_handles(version)
    d = lib.amdsmi_get_power_info(h[0])
    assert d["average_socket_power"] == 90
    assert d.get("current_socket_power") == current
    if version == "7.0":
        assert d["socket_power"] == 90


@pytest.mark.parametrize("version,unavailable", [("6.0", 0xFFFF), ("6.2", "N/A"), ("7.0", "N/A")])
def test_unavailable_power_is_the_raw_sentinel_before_6_2(version, unavailable):
    mi300 = api.FakeGcd(bdf="0000:05:00.0", market_name="AMD Instinct MI300X", device_id=0x74A1, power_W=650)
    lib, h = lib_and_handles(version, [mi300])
    d = lib.amdsmi_get_power_info(h[0])
    assert d["average_socket_power"] == unavailable and d["current_socket_power"] == 650
    lib, h = lib_and_handles(version, api.mi250x_node(silent_mode="na"))
    assert lib.amdsmi_get_power_info(h[1])["average_socket_power"] == unavailable


def test_power_is_whole_watts_even_when_set_to_a_float():
    gcds = api.mi250x_node()
    gcds[0].power_W = 431.9
    lib, h = lib_and_handles("6.4", gcds)
    assert lib.amdsmi_get_power_info(h[0])["average_socket_power"] == 431


@pytest.mark.parametrize(
    "version,device_id,serial",
    [
        ("5.7", 0x7408, "cf1182f2988c0a40"),
        ("6.0", 0x7408, "cf1182f2988c0a40"),
        ("6.2", "0x7408", "0xCF1182F2988C0A40"),
        ("7.0", "0x7408", "0xCF1182F2988C0A40"),
    ],
)
def test_asic_info_types_per_release(version, device_id, serial):
    lib, h = lib_and_handles(version)
    d = lib.amdsmi_get_gpu_asic_info(h[0])
    assert (d["device_id"], d["asic_serial"]) == (device_id, serial)
    assert ("target_graphics_version" in d) == (version >= "6.3")


def test_uuid_forms():
    serial = 0xCF1182F2988C0A40
    assert api.amdsmi_uuid(serial, 0x7408) == "cfff7408-0000-1000-8011-82f2988c0a40"  # amd_smi_uuid.cc layout
    assert api.rocr_uuid(serial) == "GPU-cf1182f2988c0a40"
    assert api.torch_uuid(serial) == "63663131-3832-6632-3938-386330613430"
    lib, h = lib_and_handles("6.4")
    assert lib.amdsmi_get_gpu_device_uuid(h[0]) == api.amdsmi_uuid(serial, 0x7408)


def test_missing_driver_status_per_release():
    for version, code in (("5.7", 18), ("6.0", 34), ("7.0", 34)):  # DRIVER_NOT_LOADED exists from 6.0
        lib = api.make_amdsmi([], version, driver_loaded=False)
        with pytest.raises(lib.AmdSmiLibraryException) as info:
            lib.amdsmi_init()
        assert info.value.get_error_code() == code


def test_stuck_quirk_freezes_power_and_energy_on_6_0_only():
    gcds = api.mi250x_node()
    lib, h = lib_and_handles("6.0", gcds, quirks=("stuck",))
    first = lib.amdsmi_get_energy_count(h[0]), lib.amdsmi_get_power_info(h[0])
    for _ in range(100):
        gcds[0].energy_ticks += 12345
        gcds[0].power_W += 1
        assert (lib.amdsmi_get_energy_count(h[0]), lib.amdsmi_get_power_info(h[0])) == first
    for version in ("5.7", "6.2", "7.0"):
        with pytest.raises(ValueError, match="documented"):
            api.make_amdsmi(gcds, version, quirks=("stuck",))


def test_backwards_quirk_drops_the_accumulator_now_and_then_before_7_0():
    gcds = api.mi250x_node()
    lib, h = lib_and_handles("6.4", gcds, quirks=("backwards",), backwards_every=4)
    seen = []
    for _ in range(8):
        gcds[0].energy_ticks += 1000
        seen.append(lib.amdsmi_get_energy_count(h[0])["energy_accumulator"])
    drops = [b < a for a, b in itertools.pairwise(seen)]
    assert drops.count(True) == 2
    with pytest.raises(ValueError, match="documented"):
        api.make_amdsmi(gcds, "7.0", quirks=("backwards",))


@pytest.mark.parametrize("version", api.VERSIONS)
@pytest.mark.parametrize("mode", ["zero", "na", "raise"])
def test_secondary_gcd_reads_nothing_in_each_mode(version, mode):
    lib, h = lib_and_handles(version, api.mi250x_node(silent_mode=mode))
    if mode == "raise":
        with pytest.raises(lib.AmdSmiLibraryException) as info:
            lib.amdsmi_get_energy_count(h[1])
        assert info.value.get_error_code() == 2
        return
    e = lib.amdsmi_get_energy_count(h[1])
    assert e.get("energy_accumulator", e.get("power")) == 0
    avg = lib.amdsmi_get_power_info(h[1])["average_socket_power"]
    assert avg == (0 if mode == "zero" else ("N/A" if version >= "6.2" else 0xFFFF))
