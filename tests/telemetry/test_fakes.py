"""The stand-ins must not drift from the libraries they replace."""

from __future__ import annotations

import inspect

import pytest

from tests.fakes import fake_amdsmi, fake_pynvml


@pytest.fixture(scope="module")
def real_pynvml():
    return pytest.importorskip("pynvml")


def test_fake_pynvml_return_codes_and_field_ids_equal_the_real_ones(real_pynvml):
    fake = fake_pynvml.make_pynvml([])
    for name in (*fake_pynvml.CODES, *fake_pynvml.FIELDS, *fake_pynvml.VALUE_TYPES):
        assert getattr(fake, name) == getattr(real_pynvml, name), name


def test_fake_pynvml_functions_have_the_real_parameter_names(real_pynvml):
    fake = fake_pynvml.make_pynvml([])
    names = [n for n in dir(fake) if n.startswith("nvml") and callable(getattr(fake, n))]
    assert len(names) >= 15
    for n in names:
        real = inspect.signature(getattr(real_pynvml, n))
        assert list(inspect.signature(getattr(fake, n)).parameters) == list(real.parameters), n


def test_fake_nvml_errors_are_per_code_subclasses_carrying_value_like_pynvml(real_pynvml):
    fake = fake_pynvml.make_pynvml([])
    for cls_name in (
        "NVMLError_NotSupported",
        "NVMLError_GpuIsLost",
        "NVMLError_LibraryNotFound",
        "NVMLError_NoPermission",
        "NVMLError_DriverNotLoaded",
    ):
        assert hasattr(real_pynvml, cls_name)
        exc = fake.NVMLError(getattr(real_pynvml, cls_name)().value)
        assert type(exc).__name__ == cls_name and isinstance(exc, fake.NVMLError)
        assert exc.value == getattr(real_pynvml, cls_name)().value


def test_fake_field_value_struct_has_the_real_layout(real_pynvml):
    assert fake_pynvml.c_nvmlFieldValue_t._fields_[:4] == real_pynvml.c_nvmlFieldValue_t._fields_[:4]
    assert [f[0] for f in fake_pynvml.c_nvmlFieldValue_t._fields_] == [
        f[0] for f in real_pynvml.c_nvmlFieldValue_t._fields_
    ]
    assert [f[0] for f in fake_pynvml.c_nvmlValue_t._fields_] == [
        f[0] for f in real_pynvml.c_nvmlValue_t._fields_
    ]


@pytest.mark.parametrize(
    "version,keys",
    [
        ("5.7", {"power", "counter_resolution", "timestamp"}),
        ("6.2", {"power", "counter_resolution", "timestamp"}),
        ("6.3", {"power", "energy_accumulator", "counter_resolution", "timestamp"}),
        ("6.4", {"energy_accumulator", "counter_resolution", "timestamp"}),
        ("7.0", {"energy_accumulator", "counter_resolution", "timestamp"}),
    ],
)
def test_fake_amdsmi_energy_dict_has_each_releases_keys(version, keys):
    lib = fake_amdsmi.make_amdsmi(fake_amdsmi.mi250x_node(), version)
    lib.amdsmi_init()
    assert set(lib.amdsmi_get_energy_count(lib.amdsmi_get_processor_handles()[0])) == keys


@pytest.mark.parametrize(
    "version,keys",
    [
        ("5.7", {"average_socket_power", "gfx_voltage", "soc_voltage", "mem_voltage", "power_limit"}),
        (
            "6.0",
            {
                "current_socket_power",
                "average_socket_power",
                "gfx_voltage",
                "soc_voltage",
                "mem_voltage",
                "power_limit",
            },
        ),
        (
            "7.0",
            {
                "socket_power",
                "current_socket_power",
                "average_socket_power",
                "gfx_voltage",
                "soc_voltage",
                "mem_voltage",
                "power_limit",
            },
        ),
    ],
)
def test_fake_amdsmi_power_dict_has_each_releases_keys(version, keys):
    lib = fake_amdsmi.make_amdsmi(fake_amdsmi.mi250x_node(), version)
    lib.amdsmi_init()
    assert set(lib.amdsmi_get_power_info(lib.amdsmi_get_processor_handles()[0])) == keys


def test_fake_amdsmi_raises_library_exception_with_not_supported_code_2():
    lib = fake_amdsmi.make_amdsmi(fake_amdsmi.mi250x_node(silent_mode="raise"))
    lib.amdsmi_init()
    with pytest.raises(lib.AmdSmiLibraryException) as info:
        lib.amdsmi_get_power_info(lib.amdsmi_get_processor_handles()[1])
    assert info.value.get_error_code() == 2


def test_fake_pynvml_scope_and_mig_constants_equal_the_real_ones(real_pynvml):
    fake = fake_pynvml.make_pynvml([])
    for name in (*fake_pynvml.SCOPES, *fake_pynvml.MIG_MODES):
        assert getattr(fake, name) == getattr(real_pynvml, name), name


def test_fake_pynvml_has_the_lookup_and_mig_functions_the_backend_uses(real_pynvml):
    fake = fake_pynvml.make_pynvml([])
    for n in (
        "nvmlDeviceGetHandleByPciBusId",
        "nvmlDeviceGetHandleByUUID",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetMaxMigDeviceCount",
        "nvmlDeviceGetGpuInstanceId",
        "nvmlDeviceGetComputeInstanceId",
    ):
        assert callable(getattr(fake, n)) and callable(getattr(real_pynvml, n)), n
    # nvmlDeviceGetHandleByPciBusId_v2 is a C symbol the Python function calls, not a pynvml name
    assert hasattr(fake, "nvmlDeviceGetHandleByPciBusId_v2") == hasattr(
        real_pynvml, "nvmlDeviceGetHandleByPciBusId_v2"
    )


def test_fake_nvml_errors_are_unhashable_like_pynvml(real_pynvml):
    fake = fake_pynvml.make_pynvml([])
    with pytest.raises(TypeError):
        hash(real_pynvml.NVMLError(real_pynvml.NVML_ERROR_NOT_SUPPORTED))
    with pytest.raises(TypeError):
        hash(fake.NVMLError(fake.NVML_ERROR_NOT_SUPPORTED))
    assert fake.NVMLError(3) == fake.NVMLError_NotSupported()


def test_fake_max_mig_device_count_is_0_when_mig_is_off_not_an_error():
    gpus = fake_pynvml.h100_node(2)
    gpus[1].mig = ["MIG-1"]
    lib = fake_pynvml.make_pynvml(gpus)
    lib.nvmlInit()
    h0, h1 = lib.nvmlDeviceGetHandleByIndex(0), lib.nvmlDeviceGetHandleByIndex(1)
    assert lib.nvmlDeviceGetMaxMigDeviceCount(h0) == 0
    assert lib.nvmlDeviceGetMigMode(h0) == [lib.NVML_DEVICE_MIG_DISABLE] * 2
    assert lib.nvmlDeviceGetMaxMigDeviceCount(h1) == 7
    assert lib.nvmlDeviceGetMigMode(h1) == [lib.NVML_DEVICE_MIG_ENABLE] * 2
    with pytest.raises(lib.NVMLError_NotFound):
        lib.nvmlDeviceGetMigDeviceHandleByIndex(h1, 3)  # empty slot


def test_fake_hidden_gpus_are_counted_but_answer_no_permission_like_a_cgroup_constrained_job():
    gpus = fake_pynvml.h100_node(3)
    lib = fake_pynvml.make_pynvml(gpus, hidden={0, gpus[2].uuid})
    lib.nvmlInit()
    assert lib.nvmlDeviceGetCount() == 3
    for lookup in (
        lambda: lib.nvmlDeviceGetHandleByIndex(0),
        lambda: lib.nvmlDeviceGetHandleByUUID(gpus[2].uuid),
        lambda: lib.nvmlDeviceGetHandleByPciBusId("0000:18:00.0"),
    ):
        with pytest.raises(lib.NVMLError_NoPermission):
            lookup()
    h = lib.nvmlDeviceGetHandleByPciBusId("2a:00.0")
    assert lib.nvmlDeviceGetUUID(h) == gpus[1].uuid


def test_fake_gh200_answers_by_scope():
    g = fake_pynvml.FakeGpu(
        uuid="GPU-9",
        bus_id="00000009:01:00.0",
        name="NVIDIA GH200 480GB",
        energy_mJ=2_000,
        power_instant_mW=400_000,
        module_energy_mJ=7_000,
        module_power_instant_mW=650_000,
        module_power_average_mW=640_000,
    )
    lib = fake_pynvml.make_pynvml([g])
    lib.nvmlInit()
    h = lib.nvmlDeviceGetHandleByIndex(0)
    gpu, mod = lib.NVML_POWER_SCOPE_GPU, lib.NVML_POWER_SCOPE_MODULE
    inst, energy = lib.NVML_FI_DEV_POWER_INSTANT, lib.NVML_FI_DEV_ENERGY
    vals = lib.nvmlDeviceGetFieldValues(h, [(inst, gpu), (inst, mod), (energy, gpu), (energy, mod)])
    assert [v.nvmlReturn for v in vals] == [lib.NVML_SUCCESS] * 4
    assert (vals[0].value.uiVal, vals[1].value.uiVal, vals[2].value.ullVal, vals[3].value.ullVal) == (
        400_000,
        650_000,
        2_000,
        7_000,
    )
    assert lib.nvmlDeviceGetTotalEnergyConsumption(h) == 7_000  # the plain counter is the module's
    assert lib.nvmlDeviceGetPowerUsage(h) == 640_000
    g.gpu_scope_supported = False
    vals = lib.nvmlDeviceGetFieldValues(h, [(inst, gpu), inst, (inst, mod)])
    assert [v.nvmlReturn for v in vals] == [lib.NVML_ERROR_NOT_SUPPORTED] * 2 + [lib.NVML_SUCCESS]
    h100 = fake_pynvml.make_pynvml(fake_pynvml.h100_node(1))
    h100.nvmlInit()
    (v,) = h100.nvmlDeviceGetFieldValues(h100.nvmlDeviceGetHandleByIndex(0), [(inst, mod)])
    assert v.nvmlReturn == h100.NVML_ERROR_NOT_SUPPORTED
