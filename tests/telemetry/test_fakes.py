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
    for cls_name in ("NVMLError_NotSupported", "NVMLError_GpuIsLost", "NVMLError_LibraryNotFound",
                     "NVMLError_NoPermission", "NVMLError_DriverNotLoaded"):
        assert hasattr(real_pynvml, cls_name)
        exc = fake.NVMLError(getattr(getattr(real_pynvml, cls_name)(), "value"))
        assert type(exc).__name__ == cls_name and isinstance(exc, fake.NVMLError)
        assert exc.value == getattr(real_pynvml, cls_name)().value


def test_fake_field_value_struct_has_the_real_layout(real_pynvml):
    assert fake_pynvml.c_nvmlFieldValue_t._fields_[:4] == real_pynvml.c_nvmlFieldValue_t._fields_[:4]
    assert [f[0] for f in fake_pynvml.c_nvmlFieldValue_t._fields_] == \
        [f[0] for f in real_pynvml.c_nvmlFieldValue_t._fields_]
    assert [f[0] for f in fake_pynvml.c_nvmlValue_t._fields_] == [f[0] for f in real_pynvml.c_nvmlValue_t._fields_]


@pytest.mark.parametrize("version,keys", [
    ("5.7", {"power", "counter_resolution", "timestamp"}),
    ("6.2", {"power", "counter_resolution", "timestamp"}),
    ("6.3", {"power", "energy_accumulator", "counter_resolution", "timestamp"}),
    ("6.4", {"energy_accumulator", "counter_resolution", "timestamp"}),
    ("7.0", {"energy_accumulator", "counter_resolution", "timestamp"}),
])
def test_fake_amdsmi_energy_dict_has_each_releases_keys(version, keys):
    lib = fake_amdsmi.make_amdsmi(fake_amdsmi.mi250x_node(), version)
    lib.amdsmi_init()
    assert set(lib.amdsmi_get_energy_count(lib.amdsmi_get_processor_handles()[0])) == keys


@pytest.mark.parametrize("version,keys", [
    ("5.7", {"average_socket_power", "gfx_voltage", "soc_voltage", "mem_voltage", "power_limit"}),
    ("6.0", {"current_socket_power", "average_socket_power", "gfx_voltage", "soc_voltage", "mem_voltage",
             "power_limit"}),
    ("7.0", {"socket_power", "current_socket_power", "average_socket_power", "gfx_voltage", "soc_voltage",
             "mem_voltage", "power_limit"}),
])
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
