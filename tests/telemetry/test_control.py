"""Power caps and clocks: set through the NVML and amdsmi stand-ins (which refuse like the real libraries
without root), restored to what was read before, after a case, a failure and a signal; the device's state
recorded per window; an emulated device whose power follows its cap, checked against that truth."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np
import pytest
from helpers import single_rank

from energy_hpc import cli
from energy_hpc.analysis.devstate import case_state
from energy_hpc.analysis.knobs import knob_figure, knob_rows
from energy_hpc.analysis.table import energy_table
from energy_hpc.context import SingleComm
from energy_hpc.errors import SpecError, UserError
from energy_hpc.run import run_job
from energy_hpc.spec import parse_job
from energy_hpc.telemetry import registry as sensors
from energy_hpc.telemetry.base import Sensor, SensorContext
from energy_hpc.telemetry.control import ControlRefused, open_control
from energy_hpc.telemetry.emulated import amdsmi_api, hardware, parts, pynvml_api
from energy_hpc.telemetry.emulated.signals import ActivitySignal
from energy_hpc.workloads import registry as tasks
from energy_hpc.workloads.base import StageFn, Units, Workload
from energy_hpc.workloads.options import Option

CTX = single_rank()
BUS = "00000000:18:00.0"


def _nvml(privileged: bool, limit_W: float = 650.0) -> tuple[Any, pynvml_api.FakeGpu]:
    gpu = pynvml_api.h100_node(1)[0]
    gpu.privileged, gpu.power_limit_mW = privileged, int(limit_W * 1000)
    return pynvml_api.make_pynvml([gpu]), gpu


def _nvml_control(privileged: bool, limit_W: float = 650.0) -> tuple[Any, pynvml_api.FakeGpu]:
    lib, gpu = _nvml(privileged, limit_W)
    return open_control("nvml", SensorContext(hostname="h", device_bus_id=BUS), library=lib), gpu


# ---------------------------------------------------------------- NVML


def test_nvml_without_root_is_refused_before_any_change_with_the_other_ways_named() -> None:
    control, gpu = _nvml_control(privileged=False)
    with pytest.raises(ControlRefused) as e:
        control.check([{"power_cap_W": 300.0}])
    msg = str(e.value)
    assert "administrator" in msg and "--gpu-freq" in msg and "--gpu-power" in msg and "\n" not in msg
    assert gpu.power_limit_mW == 650_000


def test_nvml_cap_is_set_in_mW_read_back_as_enforced_and_restored_to_the_value_read_before() -> None:
    control, gpu = _nvml_control(privileged=True, limit_W=650.0)  # not the 700 W default
    control.check([{"power_cap_W": 300.0}])
    control.apply({"power_cap_W": 300.0})
    assert gpu.power_limit_mW == 300_000 and control.state().power_limit_W == 300.0
    control.restore()
    assert gpu.power_limit_mW == 650_000
    control.restore()  # twice: nothing more
    assert gpu.power_limit_mW == 650_000


def test_nvml_clock_lock_is_applied_and_reset() -> None:
    control, gpu = _nvml_control(privileged=True)
    control.apply({"gpu_clock_MHz": 1200, "memory_clock_MHz": 2619})
    assert gpu.locked_sm_MHz == (1200, 1200) and gpu.locked_mem_MHz == (2619, 2619)
    assert control.state().sm_clock_MHz == 1200
    control.restore()
    assert gpu.locked_sm_MHz is None and gpu.locked_mem_MHz is None


def test_a_clock_the_part_cannot_lock_is_refused_before_any_work_although_the_cap_could_be_set() -> None:
    """check() tries every setting asked, not only the power limit: a job asking only for a memory clock
    on a part that cannot lock it stops before its models load, with the device left as it was."""
    control, gpu = _nvml_control(privileged=True)
    gpu.memory_lock_supported = False
    control.check([{"power_cap_W": 300.0}])  # the cap alone passes
    with pytest.raises(ControlRefused, match="does not support setting memory_clock_MHz"):
        control.check([{"memory_clock_MHz": 2619}])
    assert gpu.locked_mem_MHz is None and gpu.power_limit_mW == 650_000


def test_the_check_of_a_clock_lock_leaves_the_clock_free() -> None:
    control, gpu = _nvml_control(privileged=True)
    control.check([{"gpu_clock_MHz": 1200}, {"gpu_clock_MHz": 900}])
    assert gpu.locked_sm_MHz is None


def test_a_restore_cut_by_a_signal_is_finished_by_the_final_restore() -> None:
    """The run's signal handler raises at any bytecode while armed: a restore interrupted inside the
    library call must leave the setting known, so the restore on the way out still puts it back."""
    control, gpu = _nvml_control(privileged=True, limit_W=650.0)
    control.apply({"power_cap_W": 300.0})
    real = control.nvml.nvmlDeviceSetPowerManagementLimit
    calls = []

    def cut_once(handle: Any, limit: int) -> None:
        calls.append(limit)
        if len(calls) == 1:
            raise KeyboardInterrupt  # a BaseException, as RunInterrupted is
        real(handle, limit)

    control.nvml.nvmlDeviceSetPowerManagementLimit = cut_once
    with pytest.raises(KeyboardInterrupt):
        control.restore()
    assert gpu.power_limit_mW == 300_000
    control.restore()
    assert gpu.power_limit_mW == 650_000


def test_a_cap_outside_the_device_range_is_refused_naming_the_range() -> None:
    control, _ = _nvml_control(privileged=True)
    with pytest.raises(ControlRefused, match=r"power_cap_W = 100 is outside .* \(200 to 700\)"):
        control.check([{"power_cap_W": 100.0}])


def test_the_nvml_stand_in_refuses_a_limit_out_of_range_with_invalid_argument_like_the_library() -> None:
    lib, _ = _nvml(privileged=True)
    lib.nvmlInit()
    h = lib.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(lib.NVMLError_InvalidArgument):
        lib.nvmlDeviceSetPowerManagementLimit(h, 50_000)
    assert lib.nvmlDeviceGetPowerManagementLimitConstraints(h) == [200_000, 700_000]


# ---------------------------------------------------------------- amdsmi


def _amd(privileged: bool, virtual: bool = False, version: str = "6.4") -> tuple[Any, amdsmi_api.FakeGcd]:
    gcd = amdsmi_api.FakeGcd(bdf="0000:05:00.0", market_name="AMD Instinct MI300X", device_id=0x74A1)
    gcd.privileged, gcd.virtual, gcd.power_cap_uW = privileged, virtual, 500_000_000
    return amdsmi_api.make_amdsmi([gcd], version), gcd


def _amd_control(**kw: Any) -> tuple[Any, amdsmi_api.FakeGcd]:
    lib, gcd = _amd(**kw)
    ctx = SensorContext(hostname="h", device_bus_id=gcd.bdf, node_devices=(gcd.bdf,))
    return open_control("amdsmi", ctx, library=lib), gcd


@pytest.mark.parametrize(("virtual", "says"), [(False, "administrator"), (True, "does not support")])
def test_amdsmi_refuses_without_root_and_in_a_vm(virtual: bool, says: str) -> None:
    control, gcd = _amd_control(privileged=False, virtual=virtual)
    with pytest.raises(ControlRefused, match=says):
        control.check([{"power_cap_W": 300.0}])
    assert gcd.power_cap_uW == 500_000_000


@pytest.mark.parametrize("version", ["6.0", "6.4"])
def test_amdsmi_cap_in_uW_and_clock_range_restored_to_what_was_read(version: str) -> None:
    control, gcd = _amd_control(privileged=True, version=version)
    gcd.gfx_clk_range_MHz = (600, 1600)  # an admin's range, not the part's limits
    control.check([{"power_cap_W": 300.0, "gpu_clock_MHz": 1000}])
    control.apply({"power_cap_W": 300.0, "gpu_clock_MHz": 1000})
    assert gcd.power_cap_uW == 300_000_000 and gcd.gfx_clk_range_MHz == (1000, 1000)
    state = control.state()
    assert state.power_limit_W == 300.0 and state.sm_clock_MHz == 1000 and state.temperature_C == 40
    control.restore()
    assert gcd.power_cap_uW == 500_000_000 and gcd.gfx_clk_range_MHz == (600, 1600)


def test_amdsmi_clock_info_keys_follow_the_release() -> None:
    for version, key in (("6.0", "cur_clk"), ("6.4", "clk")):
        lib, _ = _amd(privileged=False, version=version)
        lib.amdsmi_init(lib.AmdSmiInitFlags.INIT_AMD_GPUS)
        (h,) = lib.amdsmi_get_processor_handles()
        assert key in lib.amdsmi_get_clock_info(h, lib.AmdSmiClkType.GFX)
        with pytest.raises(amdsmi_api.AmdSmiParameterException):
            lib.amdsmi_set_power_cap(h, 0, 3.0e8)  # a float: refused like the real wrapper


# ---------------------------------------------------------------- the emulated device's truth


def test_emulated_power_is_held_at_the_cap_and_scaled_by_the_locked_clock() -> None:
    gpu = pynvml_api.h100_node(1)[0]
    respond = hardware.settings_response(gpu, idle_W=80.0)
    assert respond(450.0) == 450.0 and gpu.sm_clock_MHz == 1980
    gpu.power_limit_mW = 300_000
    assert respond(450.0) == 300.0
    assert gpu.sm_clock_MHz == round(1980 * 220 / 370)  # clocked down by the share of busy power cut
    gpu.power_limit_mW, gpu.locked_sm_MHz = 700_000, (990, 990)
    assert respond(450.0) == pytest.approx(80.0 + 370.0 * 0.5)


# ---------------------------------------------------------------- in a run


class Spin(Workload):
    """Keeps a core busy for SPIN_S per iteration (the emulated device draws busy power); batch size 2
    sleeps instead, batch size 3 raises, batch size 4 sends this process SIGTERM, in its first
    iteration."""

    unit = "spin"
    description = "busy loop (test)"
    OPTIONS: ClassVar[dict[str, Option]] = {}
    SPIN_S = 0.3

    @classmethod
    def prepare(cls, case: Any) -> None:
        pass

    def load(self) -> None:
        pass

    def run(self, iteration: int, stage: StageFn) -> Units:
        if self.case.batch_size == 3:
            raise RuntimeError("the case failed")
        if self.case.batch_size == 4:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        if self.case.batch_size == 2:  # for a device that is busy anyway: the sampler keeps its pace
            time.sleep(self.SPIN_S)
            return Units(units=1.0)
        end = time.monotonic() + self.SPIN_S
        while time.monotonic() < end:
            pass
        return Units(units=1.0)


OPENED: list[parts.EmulatedSensor] = []


class AlwaysBusy(ActivitySignal):
    """The device of a process that computes all the time: busy power at every update, whatever the
    machine's load, so the truth of a capped window is the cap."""

    def _run_time(self) -> float:
        return self.clock()


def open_sensor(ctx: SensorContext) -> Sensor:
    """The ``testgpu`` backend: an emulated, privileged H100 that always asks its busy power, whose
    stand-in the test can look at."""
    t0 = time.monotonic()
    h100 = parts.PARTS["h100"]
    s = parts.open_part(
        "h100",
        None,
        clock=time.monotonic,
        sleep=time.sleep,
        t0=t0,
        options={"probe_reads": 0},
        signals={"device": AlwaysBusy(os.getpid(), h100.idle_W, h100.busy_W, t0, time.monotonic)},
        privileged=True,
    )
    OPENED.append(s)
    return s


@pytest.fixture
def spin() -> Iterator[None]:
    tasks.register_task("spin", Spin)
    OPENED.clear()
    try:
        with sensors.registered(sensors.Backend("testgpu", __name__, False, "test")):
            yield
    finally:
        tasks.TASKS.pop("spin", None)


def _job(case: str, sensor: str = '"testgpu"', extra: str = "") -> str:
    return (
        '[job]\nname = "caps"\n[measure]\ndevice = "cpu"\nsampler = "thread"\n'
        f"sensors = [{sensor}]\nidle_seconds = 0.1\ninterval_ms = 5\nwarmup = 0\niterations = 2\n{extra}"
        f'[[case]]\ntask = "spin"\nmodel = "none"\nsource = "hub"\n{case}'
    )


def test_a_cap_sweep_on_an_emulated_h100_records_the_enforced_limit_and_stays_under_it(
    spin: None, tmp_path: Path
) -> None:
    extra = "[measure.sensor_options.emulated]\nprivileged = true\n"
    job = parse_job(_job("power_cap_W = [250, 700]\n", '"emulated:h100"', extra), tmp_path / "j.toml")
    assert [c.power_cap_W for c in job.cases] == [250, 700]
    r = run_job(job, tmp_path / "out", CTX, SingleComm())
    assert r.status == "complete" and r.path is not None
    state = case_state(r.path)
    assert state[0]["power_limit_W"] == 250 and state[1]["power_limit_W"] == 700
    # the device follows the process's CPU share (contended here), but never draws above its cap
    assert _power_in_measured_windows(r.path)[0].max() <= 250.0 + 1.0


def test_energy_of_a_cap_sweep_follows_the_emulated_truth(spin: None, tmp_path: Path) -> None:
    """The ``testgpu`` device always asks 450 W: capped at 250 W it draws 250 W, uncapped 450 W."""
    # one warm-up iteration after the cap is set: the device's counter (held 100 ms) settles on the new
    # power before the measured iterations, as the cap is set before the warm-up in a real study
    # and a cool-down after it, so that the last measured window is followed by counter refreshes
    case = "batch_size = 2\npower_cap_W = [250, 700]\nwarmup = 1\niterations = 4\n"
    job = parse_job(_job(case, extra="cooldown_seconds = 0.3\n"), tmp_path / "j.toml")
    r = run_job(job, tmp_path / "out", CTX, SingleComm())
    assert r.status == "complete" and r.path is not None
    rows = {row["case"]["power_cap_W"]: row for row in energy_table([r.path])}
    assert set(rows) == {250, 700}  # the cap is a parameter of the table's rows (`--by power_cap_W`)
    for cap, truth_W in ((250, 250.0), (700, 450.0)):
        row = rows[cap]
        truth_J = truth_W * row["seconds"]  # the measured windows' true energy
        assert abs(row["energy_J"] - truth_J) <= 3 * row["energy_uncertainty_J"] + 0.01 * truth_J, (cap, row)
    ratio = rows[250]["energy_per_unit_J"] / rows[700]["energy_per_unit_J"]
    assert ratio == pytest.approx(250.0 / 450.0, rel=0.1)  # the same work: energy in the ratio of powers
    # the knobs table and figure: the capped setting costs less energy for the same time: on the front
    krows = knob_rows(list(rows.values()))
    assert (krows[0]["value"], krows[0]["pareto"]) == (250.0, True)
    figures = tmp_path / "figures"
    assert cli.main(["plot", str(r.path), "-o", str(figures), "--kind", "knobs"]) == 0
    assert (figures / "knobs.png").is_file() and (figures / "knobs.pdf").is_file()
    assert "EMULATED h100" in knob_figure(list(rows.values()))._suptitle.get_text()


def _power_in_measured_windows(path: Path) -> dict[int, np.ndarray]:
    """The sampled power of each case's measured windows, past the first 150 ms of each (the device's
    refresh of its power reading)."""
    with h5py.File(path) as f:
        w = f["windows"]
        case, phase = w["case"][()], [p.decode() if isinstance(p, bytes) else p for p in w["phase"][()]]
        start, end = w["start"][()], w["end"][()]
        t, p = f["traces"]["time"][0], f["traces"]["power"][0]
        out = {}
        for c in sorted({int(x) for x in case if x >= 0}):
            mask = np.zeros(len(t), bool)
            for a, b, k, ph in zip(start, end, case, phase, strict=True):
                if k == c and ph == "measure":
                    mask |= (t >= a + 0.15) & (t <= b)
            out[c] = p[mask][np.isfinite(p[mask])]
    return out


def test_the_setting_is_restored_after_a_case_that_fails(spin: None, tmp_path: Path) -> None:
    job = parse_job(_job("batch_size = 3\npower_cap_W = 300\n"), tmp_path / "j.toml")
    r = run_job(job, tmp_path / "out", CTX, SingleComm())
    assert r.status == "partial" and "the case failed" in " ".join(r.failures)
    (s,) = OPENED
    assert isinstance(s.device, pynvml_api.FakeGpu) and s.device.power_limit_mW == 700_000


def test_the_setting_is_restored_after_a_signal(spin: None, tmp_path: Path) -> None:
    job = parse_job(_job("batch_size = 4\ngpu_clock_MHz = 1000\npower_cap_W = 300\n"), tmp_path / "j.toml")
    r = run_job(job, tmp_path / "out", CTX, SingleComm())
    assert r.status == "partial" and r.path is not None
    (s,) = OPENED
    assert isinstance(s.device, pynvml_api.FakeGpu)
    assert s.device.power_limit_mW == 700_000 and s.device.locked_sm_MHz is None


def test_without_permission_the_run_stops_before_measuring_in_one_line(spin: None, tmp_path: Path) -> None:
    job = parse_job(_job("power_cap_W = 300\n", '"emulated:h100"'), tmp_path / "j.toml")
    with pytest.raises(UserError, match="administrator rights") as e:
        run_job(job, tmp_path / "out", CTX, SingleComm())
    assert "\n" not in str(e.value) and "--gpu-power" in str(e.value)
    assert not list((tmp_path / "out").glob("*.h5"))


def test_the_device_state_is_recorded_at_every_window_edge(spin: None, tmp_path: Path) -> None:
    job = parse_job(_job("batch_size = 1\n"), tmp_path / "j.toml")
    r = run_job(job, tmp_path / "out", CTX, SingleComm())
    assert r.path is not None
    with h5py.File(r.path) as f:
        table = json.loads(f["ranks"]["device_state"][0])
    phases = [row[1] for row in table["rows"]]
    assert phases == ["idle", "load", "measure", "measure"]
    limit_start = table["columns"].index("power_limit_W_start")
    assert all(row[limit_start] == 700.0 for row in table["rows"])


# ---------------------------------------------------------------- job files


@pytest.mark.parametrize(
    ("measure", "case", "says"),
    [
        ('sensors = ["estimate"]', "power_cap_W = 300", "see no device"),
        ('device = "cpu"\nsensors = ["auto"]', "power_cap_W = 300", 'device = "cpu" has no power cap'),
        ('sensors = ["auto"]', "power_cap_W = 300000", "power_cap_W"),
        ('sensors = ["auto"]', "gpu_clock_MHz = 1200.5", "gpu_clock_MHz"),
    ],
)
def test_job_files_with_a_setting_nothing_can_take_are_refused(measure: str, case: str, says: str) -> None:
    text = (
        f'[job]\nname = "x"\n[measure]\n{measure}\n'
        f'[[case]]\ntask = "text-to-image"\nmodel = "tiny-sd"\nsource = "random"\n{case}\n'
    )
    with pytest.raises(SpecError, match=says):
        parse_job(text, check_models=False)


def test_caps_sweep_and_join_the_case_parameters_only_when_set() -> None:
    text = (
        '[job]\nname = "x"\n[measure]\nsensors = ["emulated:h100"]\n'
        '[[case]]\ntask = "text-to-image"\nmodel = "tiny-sd"\nsource = "random"\n'
        "power_cap_W = [200, 400]\ngpu_clock_MHz = [1000, 1500]\n"
        '[[case]]\ntask = "text-to-image"\nmodel = "tiny-sd"\nsource = "random"\n'
    )
    job = parse_job(text, check_models=False)
    assert [(c.power_cap_W, c.gpu_clock_MHz) for c in job.cases[:4]] == [
        (200, 1000),
        (200, 1500),
        (400, 1000),
        (400, 1500),
    ]
    assert job.cases[0].params()["power_cap_W"] == 200
    assert "power_cap_W" not in job.cases[4].params() and "gpu_clock_MHz" not in job.cases[4].params()
