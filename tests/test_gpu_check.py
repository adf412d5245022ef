"""benchmarks/gpu_check.py: its analysis, checked against the emulated H100 (whose sensor parameters
are known), and its refusal to run without a GPU."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from energy_hpc.telemetry.emulated import hardware
from energy_hpc.telemetry.emulated.parts import VirtualClock, open_part
from energy_hpc.telemetry.emulated.pynvml_api import FakeGpu, make_pynvml
from energy_hpc.telemetry.emulated.signals import Constant, Steps, Workload

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


gc = _load()
EPOCH_OFFSET = hardware.EPOCH_US * 1e-6  # the emulated field stamps' wall clock minus the virtual clock


def _emulated(part: str, signal=None, seed: int = 1, workload=None):
    """An emulated part on a virtual clock, and a reader through its pynvml stand-in (the script's own
    reader, on the same functions the real pynvml has)."""
    vc = VirtualClock()
    kw = {"signals": {"device": signal}} if signal is not None else {}
    wl = (
        workload
        if workload is not None or signal is not None
        else Workload.random(np.random.default_rng(3), 4, 2.0)
    )
    s = open_part(part, wl, clock=vc, rng=np.random.default_rng(seed), options={"probe_reads": 0}, **kw)
    rd = gc.make_reader(s.inner.nvml, s.inner.gpu.handle)

    def read():
        s.sync()  # the emulated hardware brought to the clock's time, as every real read would see it
        return rd()

    return s, vc, read


def _poll(part: str, seconds: float = 5.0, spacing: float = 0.001, **kw):
    s, vc, read = _emulated(part, **kw)
    t, rows = gc.poll(read, seconds, spacing, clock=vc, sleep=vc.sleep)
    return s, gc.series_from_rows(t, rows, EPOCH_OFFSET)


# ---- steps 1-2: refresh periods ------------------------------------------------------------------


@pytest.mark.parametrize("part,counter_period", [("h100", 0.1), ("a100", 0.02)])
def test_refresh_periods_of_the_emulated_part_are_found_from_1_ms_reads(
    part: str, counter_period: float
) -> None:
    s, ser = _poll(part)
    assert len(ser["t"]) == 5000 and np.allclose(np.diff(ser["t"]), 0.001)
    res = gc.analyse_poll(ser)
    m = s.model
    assert m.counter.period_s == pytest.approx(counter_period, rel=1e-3)
    c = res["counter"]
    assert c["fit"]["period_s"] == pytest.approx(m.counter.period_s, abs=0.3e-3)
    assert c["intervals"]["median"] == pytest.approx(counter_period, abs=2e-3)
    assert c["intervals"]["p95"] - c["intervals"]["p05"] <= 2.5e-3  # spread: the 1 ms read spacing
    assert c["fit"]["missed"] == 0 and c["fit"]["extra"] == 0 and c["fit"]["jitter_s"] < 1e-3
    assert c["n_refreshes"] == pytest.approx(5.0 / counter_period, abs=2)
    # instant power field: by value changes and by its own timestamps
    assert res["instant_values"]["fit"]["period_s"] == pytest.approx(m.power.period_s, abs=0.3e-3)
    assert res["instant_stamps"]["fit"]["period_s"] == pytest.approx(m.power.period_s, abs=1e-6)
    assert res["instant_stamps"]["intervals"]["median"] == pytest.approx(0.1, abs=1e-4)
    sb = res["instant_stamp_behaviour"]
    assert sb["value_changes_with_stamp"] == 1.0
    assert 0.0 <= sb["seen_lag"]["min"] and sb["seen_lag"]["max"] <= 0.001 + 1e-6  # stamp = refresh instant
    # the counter and the power field refresh on independent grids; for the H100 the offset is known
    if part == "h100":
        truth = (m.power.phase_s - m.counter.phase_s) % m.counter.period_s
        got = res["counter_to_instant_phase_s"]
        assert min(abs(got - truth), 0.1 - abs(got - truth)) < 2e-3
    else:
        assert math.isnan(res["counter_to_instant_phase_s"])


def test_refresh_period_survives_missed_and_repeated_values_and_irregular_reads() -> None:
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(0.0005, 0.0025, 6000))  # jittery reads, ~1.5 ms apart, ~9 s
    k = np.floor((t - 0.037) / 0.1)
    v = np.round(rng.normal(300.0, 5.0, int(k.max()) + 2))
    v[5::4] = v[4::4][: len(v[5::4])]  # one refresh in four repeats the value before it: no change seen
    series = v[(k + 1).astype(int)]
    r = gc.refresh_period(t, series)
    assert r["fit"]["period_s"] == pytest.approx(0.1, abs=0.5e-3)
    assert r["fit"]["missed"] >= 15
    assert r["period_guess_s"] == pytest.approx(0.1, abs=3e-3)
    assert r["intervals"]["median"] == pytest.approx(0.1, abs=3e-3)
    assert (r["fit"]["phase_s"] - 0.037) % 0.1 < 3e-3 or (r["fit"]["phase_s"] - 0.037) % 0.1 > 0.097
    # a counter that moves twice within a refresh: the second change is counted as extra, not a period
    t2 = np.arange(0, 3, 0.001)
    e = np.floor(t2 / 0.1) * 2 + (t2 % 0.1 > 0.0035)  # a second step 3 ms after each refresh
    r2 = gc.refresh_period(t2, e)
    assert r2["fit"]["period_s"] == pytest.approx(0.1, abs=1e-3) and r2["fit"]["extra"] > 20


def test_degenerate_series_give_nan_not_errors() -> None:
    assert math.isnan(gc.refresh_period(np.arange(10.0), np.ones(10))["fit"]["period_s"])
    assert gc.refresh_period(np.array([]), np.array([]))["n_refreshes"] == 0
    assert math.isnan(gc.fit_ramp(np.array([0.1]), np.array([0.5]))["window_s"])
    assert gc.summarize([math.nan])["n"] == 0
    sb = gc.stamp_behaviour(np.arange(3.0), np.full(3, math.nan), np.arange(3.0))
    assert math.isnan(sb["value_changes_with_stamp"])


# ---- step 5: the power fields' windows, from a square-wave load -------------------------------


def test_square_wave_step_response_gives_the_instant_and_average_windows() -> None:
    rng = np.random.default_rng(5)
    # the grid of the instant field's refreshes, as steps 1-2 find it on this emulated GPU
    s0, ser0 = _poll("h100", 2.0, signal=Constant(450.0))
    fit = gc.analyse_poll(ser0)["instant_seen"]["fit"]  # the grid the script places edges on
    assert fit["period_s"] == pytest.approx(0.1, abs=1e-4)
    fast = gc.plan_edges(2.5, 20, 0.5, 0.5, rng, (fit["period_s"], fit["phase_s"]))
    slow = gc.plan_edges(fast[-1][1] + 0.1, 4, 1.5, 1.5, rng)
    assert all(a < b for a, b in fast + slow) and all(
        fast[i][1] < fast[i + 1][0] for i in range(len(fast) - 1)
    )
    ups, downs = [a for a, _ in fast + slow], [b for _, b in fast + slow]
    s, vc, read = _emulated("h100", Steps.windows(ups, downs, 80.0, 450.0))
    assert s.model.power.phase_s == s0.model.power.phase_s  # same seed: the grid found is this GPU's
    t, rows = gc.poll(read, downs[-1] + 1.6, 0.001, clock=vc, sleep=vc.sleep)
    ser = gc.series_from_rows(t, rows, EPOCH_OFFSET)
    nf = len(fast)
    inst = gc.window_fits(t, ser["inst_mW"], ser["inst_stamp_s"], ups[:nf], downs[:nf], settle_s=0.25)
    for how, tol in (("seen", 2e-3), ("stamp", 1e-4)):
        up = inst[how]["up"]
        assert up["n_partial"] >= 5  # edges placed just before refreshes: most are caught part-way
        assert up["window_s"] == pytest.approx(s.model.power_window_s, abs=tol)
        assert abs(up["lag_s"]) < tol
        assert inst[how]["both"]["window_s"] == pytest.approx(0.025, abs=tol)
    avg = gc.window_fits(t, ser["avg_mW"], ser["avg_stamp_s"], ups[nf:], downs[nf:], settle_s=1.2)
    assert avg["seen"]["up"]["window_s"] == pytest.approx(s.model.average_window_s, abs=0.02)
    assert avg["stamp"]["both"]["window_s"] == pytest.approx(1.0, abs=1e-3)


def test_step_fractions_and_ramp_fit_on_a_known_ramp() -> None:
    # readings that average the last 40 ms, seen 3 ms late, refreshed every 10 ms
    ups, downs = [1.0, 3.0], [2.0, 4.0]
    sig = Steps.windows(ups, downs, 100.0, 300.0)
    r = np.arange(0.005, 5.0, 0.01)
    v = sig.mean_power(r - 0.04, r)
    sf = gc.step_fractions(r + 0.003, v, ups, downs, settle_s=0.2)
    assert 1.0 in set(np.round(sf["f"], 6)) and sf["up"].sum() == len(sf["up"]) / 2
    assert (
        np.sum((sf["f"] > 0.01) & (sf["f"] < 0.99)) == 4 * 4
    )  # 40 ms / 10 ms: four partial readings per edge
    fit = gc.fit_ramp(sf["d"], sf["f"])
    assert fit["window_s"] == pytest.approx(0.04, abs=1e-6) and fit["lag_s"] == pytest.approx(0.003, abs=1e-6)


# ---- step 3: counter vs integral through the project's reduction --------------------------------


def test_counter_vs_integral_on_the_emulated_h100_matches_the_truth() -> None:
    # a 10 s busy window with a 25 Hz ripple (what a matmul or diffusion loop draws), 10 ms sampling
    wl = Workload(np.array([2.0]), np.array([12.0]), np.array([25.0]), np.array([0.0]))
    s, vc, _ = _emulated("h100", workload=wl)
    ts, ps, es = [], [], []
    while vc() < 14.0:
        r = s.read()  # the project's nvml backend on the emulated hardware
        ts.append(vc())
        ps.append(r.power[0])
        es.append(r.energy[0])
        vc.sleep(0.01)
    rows = gc.counter_vs_integral(np.array(ts), np.array(ps), np.array(es), [2.0], [12.0])
    (w,) = rows
    truth = float(s.truth[s.channels()[0].name].energy(12.0) - s.truth[s.channels()[0].name].energy(2.0))
    assert truth == pytest.approx(4500.0, rel=0.01)
    assert w["counter_J"] == pytest.approx(truth, abs=max(3 * w["counter_unc_J"], 0.005 * truth))
    assert w["integral_J"] == pytest.approx(truth, rel=0.02)
    assert w["ratio_counter_over_integral"] == pytest.approx(1.0, abs=0.02)
    assert 0 < w["counter_unc_J"] < 0.02 * truth and w["integral_unc_J"] > 0
    assert w["method"] == "counter" and not w["short"] and w["mean_power_W"] == pytest.approx(450, rel=0.01)
    json.dumps(gc._clean(rows))


class _LiveNvml(types.ModuleType):
    """The pynvml stand-in whose emulated H100 follows the real clock (synced before every read)."""

    def __init__(self, inner, model, t0: float) -> None:
        super().__init__("pynvml")
        self._inner, self._model, self._t0 = inner, model, t0

    def __getattr__(self, name):
        fn = getattr(self._inner, name)
        if name in (
            "nvmlDeviceGetTotalEnergyConsumption",
            "nvmlDeviceGetFieldValues",
            "nvmlDeviceGetPowerUsage",
        ):

            def synced(*a, **k):
                self._model.sync(time.monotonic() - self._t0)
                return fn(*a, **k)

            return synced
        return fn


def test_sampled_windows_runs_the_projects_sensor_and_sampler_on_a_live_emulated_gpu() -> None:
    gpu_dev = FakeGpu(uuid="GPU-e0000000-0000-0000-0000-000000000001", bus_id="00000000:18:00.0")
    t0 = time.monotonic()
    model = hardware.NvmlModel(
        gpu_dev, Constant(300.0), counter=hardware.Refresh(0.1, 0.013), power=hardware.Refresh(0.1, 0.071)
    )
    nv = _LiveNvml(make_pynvml([gpu_dev]), model, t0)
    gpu = gc.Gpu(nv, None, None, None, 0, gpu_dev.name, "0000:18:00.0", gpu_dev.uuid)

    def work():
        a = time.monotonic()
        time.sleep(0.6)
        return [(a, time.monotonic())]

    raw: dict = {}
    res = gc.sampled_windows(gpu, work, raw, "x", idle_s=0.2)
    assert res["channel"] == "nvml:0000:18:00.0" and res["samples"] > 30
    (w,) = res["windows"]
    assert w["counter_J"] == pytest.approx(300.0 * w["duration_s"], rel=0.1)
    assert w["integral_J"] == pytest.approx(300.0 * w["duration_s"], rel=0.05)
    assert set(raw) == {"x_t", "x_power_W", "x_energy_J", "x_windows"}


# ---- step 5: the comparison table, and the report ----------------------------------------------


def test_emulated_parameters_come_from_the_emulated_h100() -> None:
    emu = gc.emulated_h100_parameters()
    assert emu["counter_period_s"] == 0.1 and emu["power_period_s"] == 0.1
    assert emu["power_window_s"] == 0.025 and emu["average_window_s"] == 1.0


def test_compare_says_where_measurements_agree() -> None:
    emu = gc.emulated_h100_parameters()
    same = dict(emu, counter_period_s=0.1012, power_window_s=0.027, stamp_lag_s=0.0004)
    rows = gc.compare(emu, same)
    assert [r["key"] for r in rows] == [k for k, _, _ in gc.COMPARED]
    assert all(r["agrees"] is True for r in rows)
    other = dict(emu, counter_period_s=0.02, power_window_s=0.1, average_window_s=math.nan)
    by = {r["key"]: r["agrees"] for r in gc.compare(emu, other)}
    assert (
        by["counter_period_s"] is False and by["power_window_s"] is False and by["average_window_s"] is None
    )


def test_the_whole_analysis_of_an_emulated_run_renders_as_markdown_and_json() -> None:
    _, ser = _poll("h100", 3.0)
    poll_res = gc.analyse_poll(ser)
    wl_rows = gc.counter_vs_integral(ser["t"], ser["inst_mW"] / 1e3, ser["energy_mJ"] / 1e3, [0.5], [2.5])
    sq = {
        "grid": None,
        "fast": {"cycles": 1, "busy_s": 0.5, "idle_s": 0.5, "edges": 2},
        "slow": {"cycles": 1, "busy_s": 1.5, "idle_s": 1.5, "edges": 2},
        "instant": gc.window_fits(ser["t"], ser["inst_mW"], ser["inst_stamp_s"], [1.0], [2.0], 0.25),
        "average": gc.window_fits(ser["t"], ser["avg_mW"], ser["avg_stamp_s"], [1.0], [2.0], 1.2),
    }
    emu = gc.emulated_h100_parameters()
    meas = gc.measured_parameters(poll_res, sq)
    assert meas["counter_period_s"] == pytest.approx(0.1, abs=1e-3)
    assert meas["power_period_s"] == pytest.approx(0.1, abs=1e-4)
    res = {
        "started": "now",
        "gpu": {"name": "NVIDIA H100 80GB HBM3 (EMULATED)", "bus_id": "0000:18:00.0"},
        "poll": poll_res,
        "matmul": {
            "channel": "nvml:x",
            "samples": 10,
            "sample_spacing": gc.summarize([0.01]),
            "read_errors": 0,
            "windows": wl_rows,
        },
        "diffusion": {"skipped": "diffusers is not importable"},
        "square": sq,
        "comparison": gc.compare(emu, meas),
    }
    md = gc.report(res)
    assert "| parameter | emulated | measured | agrees |" in md
    assert "energy counter refresh period (s) | 0.1000 | 0.1000 | yes" in md
    assert "Skipped: diffusers" in md and "counter/integral" in md
    json.loads(json.dumps(gc._clean(res)))


def test_diffusion_loop_builds_the_projects_unet_and_denoises() -> None:
    pytest.importorskip("diffusers")
    import torch

    loop = gc.DiffusionLoop(torch, torch.device("cpu"), size="tiny", batch=1, steps=2, dtype="fp32")
    assert loop.latent_shape == (1, 4, 16, 16) and loop.params > 0
    loop.image()


# ---- without a GPU ---------------------------------------------------------------------------


def _run(tmp_path: Path, stub: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if stub is not None:
        d = tmp_path / "stub"
        d.mkdir()
        (d / "pynvml.py").write_text(stub)
        env["PYTHONPATH"] = os.pathsep.join([str(d), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    "case,stub,says",
    [
        ("here", None, "no NVIDIA GPU"),
        ("no pynvml", "raise ImportError('No module named pynvml')\n", "nvidia-ml-py"),
        (
            "init fails",
            "class NVMLError(Exception):\n    pass\n"
            "def nvmlInit():\n    raise NVMLError('Driver Not Loaded')\n",
            "NVML did not start",
        ),
        (
            "no gpu",
            "class NVMLError(Exception):\n    pass\ndef nvmlInit():\n    pass\n"
            "def nvmlDeviceGetCount():\n    return 0\n",
            "reports no GPU",
        ),
    ],
)
def test_without_a_gpu_it_exits_2_with_one_line(
    tmp_path: Path, case: str, stub: str | None, says: str
) -> None:
    if case == "here":
        try:
            import pynvml

            pynvml.nvmlInit()
            pytest.skip("this machine has a working NVML")
        except ImportError:
            pass
        except Exception:
            pass
    p = _run(tmp_path, stub)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("gpu_check: no NVIDIA GPU usable here") and says in lines[0]
    assert p.stdout == "" and not (tmp_path / "out.json").exists()
