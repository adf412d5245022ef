"""NVML backend: device mapping under every visible-devices form, readings, errors, hygiene."""

from __future__ import annotations

import math

import pytest

from energy_hpc.context import visible_devices
from energy_hpc.errors import SensorReadError, SensorUnavailable
from energy_hpc.telemetry import nvml
from energy_hpc.telemetry.base import Method, Scope, SensorContext, normalize_bus_id
from tests.fakes.fake_pynvml import FakeGpu, h100_node, make_pynvml

NO_PROBE = {"nvml": {"probe_reads": 0}}


def open_(gpus, clock=None, **ctx):
    lib = make_pynvml(gpus)
    ctx.setdefault("options", NO_PROBE)
    kw = {"clock": clock} if clock else {}
    return nvml.open_sensor(SensorContext(**ctx), library=lib, **kw), lib


def ctx_from_env(env: dict, local_rank: int = 0) -> dict:
    var, entries = visible_devices(env)
    return {"visible_env": var, "visible_devices": entries, "local_rank": local_rank, "options": NO_PROBE}


def test_bus_ids_are_normalised_to_one_lower_case_form():
    assert normalize_bus_id("00000000:3B:00.0") == "0000:3b:00.0"
    assert normalize_bus_id("0000:3b:00.0") == "0000:3b:00.0"
    assert normalize_bus_id("3B:00.0") == "0000:3b:00.0"


def test_without_any_binding_the_local_rank_picks_the_gpu():
    s, _ = open_(h100_node(4), local_rank=2)
    assert s.channels()[0].device == "0000:3a:00.0"


@pytest.mark.parametrize(
    "env,local_rank,device",
    [
        ({"CUDA_VISIBLE_DEVICES": "3"}, 0, "0000:5d:00.0"),  # one index: NVML ignores the variable
        ({"CUDA_VISIBLE_DEVICES": "2,3"}, 1, "0000:5d:00.0"),  # list: local rank picks the entry
        ({"CUDA_VISIBLE_DEVICES": "GPU-00000001-aaaa-bbbb-cccc-000000000001"}, 0, "0000:2a:00.0"),
        ({"CUDA_VISIBLE_DEVICES": "GPU-00000002"}, 0, "0000:3a:00.0"),  # unique UUID prefix, as CUDA accepts
    ],
)
def test_cuda_visible_devices_forms_map_to_the_physical_gpu(env, local_rank, device):
    s, _ = open_(h100_node(4), **ctx_from_env(env, local_rank))
    assert s.channels()[0].device == device


def test_bus_id_wins_over_visible_devices_and_uuid():
    s, _ = open_(
        h100_node(4),
        device_bus_id="0000:5D:00.0",
        device_uuid="GPU-00000000",
        visible_devices=("0",),
        visible_env="CUDA_VISIBLE_DEVICES",
    )
    assert s.channels()[0].device == "0000:5d:00.0"


def test_torch_style_uuid_without_prefix_is_accepted():
    s, _ = open_(h100_node(4), device_uuid="00000003-aaaa-bbbb-cccc-000000000003")
    assert s.channels()[0].device == "0000:5d:00.0"


def test_mig_instance_maps_to_its_parent_gpu_and_lists_the_instances_sharing_it():
    gpus = h100_node(2)
    gpus[1].mig = ["MIG-11111111-2222-3333-4444-555555555555", "MIG-66666666-7777-8888-9999-000000000000"]
    s, _ = open_(gpus, **ctx_from_env({"CUDA_VISIBLE_DEVICES": "MIG-66666666-7777-8888-9999-000000000000"}))
    main = s.channels()[0]
    assert main.device == "0000:2a:00.0"
    assert set(main.shared_with) == set(gpus[1].mig)
    assert "whole GPU" in main.note


def test_legacy_mig_gpu_form_maps_to_the_parent():
    gpus = h100_node(2)
    s, _ = open_(gpus, **ctx_from_env({"CUDA_VISIBLE_DEVICES": f"MIG-{gpus[1].uuid}/1/0"}))
    assert s.channels()[0].device == "0000:2a:00.0"


def test_ambiguous_or_unknown_uuid_is_refused_with_the_known_ones():
    with pytest.raises(SensorUnavailable, match="matches 0 GPUs"):
        open_(h100_node(2), device_uuid="GPU-deadbeef")


def test_index_beyond_the_node_is_refused():
    with pytest.raises(SensorUnavailable, match="has 2 GPUs"):
        open_(h100_node(2), **ctx_from_env({"CUDA_VISIBLE_DEVICES": "5"}))


def test_reads_instant_power_energy_and_the_1s_average_as_a_view(clock):
    gpus = h100_node(1)
    gpus[0].energy_mJ, gpus[0].power_instant_mW, gpus[0].power_average_mW = 123_456, 412_000, 350_000
    s, _ = open_(gpus, clock)
    main, avg = s.channels()
    assert (main.name, main.scope, main.power_kind, main.has_energy) == (
        "nvml:0000:18:00.0",
        Scope.GPU,
        "instant",
        True,
    )
    assert main.method is Method.COUNTER
    assert avg.view_of == main.name and not avg.has_energy and avg.power_kind == "average"
    r = s.read()
    assert r.power == [412.0, 350.0]
    assert r.energy[0] == pytest.approx(123.456) and math.isnan(r.energy[1])
    assert r.sensor_time[0] == pytest.approx(gpus[0].timestamp_us * 1e-6)


def test_old_driver_without_power_fields_falls_back_to_power_usage_and_says_so():
    gpus = h100_node(1)
    gpus[0].fields_supported = False
    s, _ = open_(gpus)
    (main,) = s.channels()
    assert main.power_kind == "average" and "nvmlDeviceGetPowerUsage" in main.note
    assert s.read().power == [280.0]


def test_pre_volta_gpu_without_energy_counter_is_integrated_from_power():
    gpus = [FakeGpu(uuid="GPU-1", bus_id="00000000:04:00.0", name="Tesla P100", energy_supported=False)]
    s, _ = open_(gpus)
    assert s.channels()[0].method is Method.INTEGRAL
    assert math.isnan(s.read().energy[0])


def test_no_driver_makes_nvml_unavailable_with_a_clear_reason():
    with pytest.raises(SensorUnavailable, match=r"kernel driver is not loaded.*DRIVER_NOT_LOADED"):
        nvml.open_sensor(SensorContext(options=NO_PROBE), library=make_pynvml([], driver_loaded=False))
    with pytest.raises(SensorUnavailable, match=r"libnvidia-ml\.so\.1 was not found"):
        nvml.open_sensor(SensorContext(options=NO_PROBE), library=make_pynvml([], library_found=False))


def test_no_permission_for_the_energy_counter_is_reported_not_hidden():
    with pytest.raises(SensorUnavailable, match="lack of permission"):
        nvml.open_sensor(
            SensorContext(options=NO_PROBE), library=make_pynvml(h100_node(1), no_permission=True)
        )


def test_a_lost_gpu_during_the_run_is_a_read_error_not_a_zero():
    s, lib = open_(h100_node(1))
    lib._gpus[0].lost = True
    with pytest.raises(SensorReadError, match="fallen off the bus"):
        s.read()


def test_failed_open_releases_nvml():
    lib = make_pynvml(h100_node(1))
    with pytest.raises(SensorUnavailable):
        nvml.open_sensor(SensorContext(device_bus_id="0000:99:00.0", options=NO_PROBE), library=lib)
    assert lib._state["refcount"] == 0


def test_close_shuts_nvml_down():
    s, lib = open_(h100_node(1))
    s.close()
    assert lib._state["refcount"] == 0


def test_counter_running_backwards_during_the_startup_probe_is_flagged_before_the_run(clock):
    gpus = h100_node(1)
    lib = make_pynvml(gpus)
    values = iter([5_000_000, 4_000_000, 4_100_000])

    def sleep(dt):
        clock.advance(dt)
        gpus[0].energy_mJ = next(values)

    gpus[0].energy_mJ = 5_000_000
    s = nvml.open_sensor(SensorContext(), library=lib, clock=clock, sleep=sleep)
    main = s.channels()[0]
    assert main.counter_fault == "backwards" and main.method is Method.INTEGRAL
    assert "power integral" in main.note
    assert math.isnan(s.read().energy[0]) and s.read().power[0] == 300.0


# --- MIG known whatever way the rank's device is given (issue 11, finding 1) ---

MIG_A, MIG_B = "MIG-11111111-2222-3333-4444-555555555555", "MIG-66666666-7777-8888-9999-000000000000"


def _mig_node():
    gpus = h100_node(2)
    gpus[1].mig = [MIG_A, MIG_B]
    return gpus


def test_mig_rank_given_by_bus_id_and_mig_uuid_records_its_instance_and_the_sharers():
    s, _ = open_(
        _mig_node(),
        device_bus_id="0000:2A:00.0",
        visible_devices=(MIG_B,),
        visible_env="CUDA_VISIBLE_DEVICES",
    )
    main = s.channels()[0]
    assert main.device == "0000:2a:00.0" and main.scope is Scope.GPU
    assert set(main.shared_with) == {MIG_A, MIG_B}
    assert MIG_B in main.note and "whole GPU" in main.note


def test_mig_gpu_given_only_by_bus_id_is_still_marked_shared_by_its_instances():
    s, _ = open_(_mig_node(), device_bus_id="0000:2a:00.0")
    main = s.channels()[0]
    assert set(main.shared_with) == {MIG_A, MIG_B}
    assert "MIG" in main.note
    assert all(c.shared_with == main.shared_with for c in s.channels())  # the :avg view too


def test_gpu_without_mig_given_by_bus_id_is_not_shared():
    s, _ = open_(_mig_node(), device_bus_id="0000:18:00.0")
    assert s.channels()[0].shared_with == ()


def test_legacy_mig_gpu_form_keeps_the_mig_flag_and_finds_the_instance_by_gi_ci():
    gpus = _mig_node()
    gpus[1].mig_ids = [(3, 0), (5, 0)]
    s, _ = open_(gpus, **ctx_from_env({"CUDA_VISIBLE_DEVICES": f"MIG-{gpus[1].uuid}/5/0"}))
    main = s.channels()[0]
    assert main.device == "0000:2a:00.0"
    assert set(main.shared_with) == {MIG_A, MIG_B}
    assert MIG_B in main.note


# --- GPUs hidden by the job's device cgroup (finding 4) ---


def test_bus_id_lookup_works_when_the_job_cgroup_hides_the_other_gpus():
    lib = make_pynvml(h100_node(4), hidden={0, 1, 3})
    s = nvml.open_sensor(SensorContext(device_bus_id="0000:3a:00.0", options=NO_PROBE), library=lib)
    assert s.channels()[0].device == "0000:3a:00.0"


def test_uuid_lookup_works_when_the_job_cgroup_hides_the_other_gpus():
    gpus = h100_node(4)
    lib = make_pynvml(gpus, hidden={0, 1, 2})
    s = nvml.open_sensor(SensorContext(device_uuid=gpus[3].uuid[4:], options=NO_PROBE), library=lib)
    assert s.channels()[0].device == "0000:5d:00.0"


def test_listing_skips_hidden_gpus_and_indices_count_the_gpus_the_job_can_see():
    # Slurm with ConstrainDevices numbers the job's GPUs from 0, as CUDA sees them
    lib = make_pynvml(h100_node(4), hidden={0, 1})
    s = nvml.open_sensor(
        SensorContext(**ctx_from_env({"CUDA_VISIBLE_DEVICES": "0,1"}, local_rank=1)), library=lib
    )
    assert s.channels()[0].device == "0000:5d:00.0"
    lib = make_pynvml(h100_node(4), hidden={0})
    s = nvml.open_sensor(SensorContext(local_rank=0, options=NO_PROBE), library=lib)
    assert s.channels()[0].device == "0000:2a:00.0"


def test_all_gpus_hidden_is_unavailable_with_the_reason():
    lib = make_pynvml(h100_node(2), hidden={0, 1})
    with pytest.raises(SensorUnavailable, match="permission"):
        nvml.open_sensor(SensorContext(options=NO_PROBE), library=lib)
    assert lib._state["refcount"] == 0


# --- GH200: module scope (finding 5) ---


def _gh200(gpu_scope: bool):
    return [
        FakeGpu(
            uuid="GPU-9",
            bus_id="00000009:01:00.0",
            name="NVIDIA GH200 480GB",
            energy_mJ=2_000_000,
            power_instant_mW=400_000,
            power_average_mW=390_000,
            module_energy_mJ=7_000_000,
            module_power_instant_mW=650_000,
            module_power_average_mW=640_000,
            gpu_scope_supported=gpu_scope,
        )
    ]


def test_gh200_records_the_gpu_scope_not_the_module():
    s, _ = open_(_gh200(True))
    main = s.channels()[0]
    assert main.scope is Scope.GPU and main.method is Method.COUNTER
    r = s.read()
    assert r.energy[0] == pytest.approx(2000.0)  # GPU scope, not the module's 7000 J
    assert r.power[0] == 400.0
    assert "module" in main.note  # says the module reading exists and is not the figure


def test_gh200_without_gpu_scope_labels_the_channel_as_the_module_and_keeps_it_out_of_gpu_totals():
    s, _ = open_(_gh200(False))
    chans = s.channels()
    main = chans[0]
    assert main.scope is not Scope.GPU and all(c.scope is not Scope.GPU for c in chans)
    assert "Grace" in main.label and "module" in main.label
    assert "not GPU" in main.note or "out of GPU" in main.note
    r = s.read()
    assert r.energy[0] == pytest.approx(7000.0) and r.power[0] == 650.0


# --- counter without power (finding 6) ---


def test_gpu_with_energy_counter_but_no_power_is_measured_by_counter(clock):
    gpus = [FakeGpu(uuid="GPU-1", bus_id="00000000:04:00.0", power_supported=False)]
    lib = make_pynvml(gpus)

    def sleep(dt):
        clock.advance(dt)
        gpus[0].energy_mJ += 30_000

    s = nvml.open_sensor(SensorContext(), library=lib, clock=clock, sleep=sleep)  # with the start-up probe
    (main,) = s.channels()
    assert main.method is Method.COUNTER and not main.has_power and not main.counter_fault
    r = s.read()
    assert math.isnan(r.power[0]) and r.energy[0] == pytest.approx(gpus[0].energy_mJ / 1000)
    assert not (r.errors and any(r.errors))


def test_gpu_with_neither_power_nor_energy_is_refused():
    gpus = [FakeGpu(uuid="GPU-1", bus_id="00000000:04:00.0", power_supported=False, energy_supported=False)]
    with pytest.raises(SensorUnavailable, match="neither power nor energy"):
        open_(gpus)


def test_driver_without_the_bus_id_lookup_falls_back_to_listing():
    lib = make_pynvml(h100_node(4))

    def missing(pciBusId):
        raise lib.NVMLError(lib.NVML_ERROR_FUNCTION_NOT_FOUND)

    lib.nvmlDeviceGetHandleByPciBusId = missing
    s = nvml.open_sensor(SensorContext(device_bus_id="0000:5d:00.0", options=NO_PROBE), library=lib)
    assert s.channels()[0].device == "0000:5d:00.0"


def test_bound_gpu_hidden_from_the_job_is_refused_with_the_reason():
    lib = make_pynvml(h100_node(2), hidden={1})
    with pytest.raises(SensorUnavailable, match="device cgroup"):
        nvml.open_sensor(SensorContext(device_bus_id="0000:2a:00.0", options=NO_PROBE), library=lib)
