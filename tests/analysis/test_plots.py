"""What the figures tell a reader: axis names with units and scope, readable panel titles, the shaded
windows named in a legend, lines broken at sampling gaps, trailing means said and their start-up kept
apart from the idle baseline, n per bar and a key to the case labels, and a stage figure only for jobs
with stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _runs import build, case_row, channel, rank_row, window

from energy_hpc.analysis.plots import (
    ESTIMATE_SPAN_S,
    break_gaps,
    channel_title,
    energy_figure,
    has_stages,
    power_figure,
)
from energy_hpc.analysis.report import write_report
from energy_hpc.analysis.table import energy_table
from energy_hpc.cli import main


def _phases(rank: int = 0, stages: tuple[str, ...] = ()) -> list[tuple]:
    """idle 1-3 s, load 3-5 s, warm-up 5-6 s, three measured iterations 6-12 s (with stage windows)."""
    wins = [
        window(rank, -1, "idle", 1.0, 3.0),
        window(rank, 0, "load", 3.0, 5.0, iteration=-1),
        window(rank, 0, "warmup", 5.0, 6.0, 1),
    ]
    for i in range(3):
        a = 6.0 + 2 * i
        wins.append(window(rank, 0, "measure", a, a + 2.0, 1, iteration=i))
        for k, s in enumerate(stages):  # the iteration split evenly between its stages
            d = 2.0 / len(stages)
            wins.append(window(rank, 0, "measure", a + k * d, a + (k + 1) * d, 1, iteration=i, stage=s))
    return wins


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_estimate_constant_is_the_sensors() -> None:
    from energy_hpc.telemetry.estimate import POWER_SPAN_S

    assert ESTIMATE_SPAN_S == POWER_SPAN_S


def test_break_gaps_puts_a_nan_inside_each_gap_only() -> None:
    t = np.concatenate([np.arange(0, 1, 0.01), np.arange(1.5, 2, 0.01)])
    t2, (y,), n = break_gaps(t, np.ones_like(t))
    assert n == 1 and len(t2) == len(t) + 1
    (i,) = np.flatnonzero(np.isnan(y))
    assert t2[i - 1] < t2[i] < t2[i + 1] and t2[i + 1] == pytest.approx(1.5)
    _, (y,), n = break_gaps(np.arange(0, 1, 0.01), np.ones(100))
    assert n == 0 and not np.isnan(y).any()


def test_panel_title_names_rank_device_and_sensor_without_a_process_id() -> None:
    meta = {
        "rank": 1,
        "host": "n7",
        "name": "estimate:cpu:pid7868",
        "device": "n7:pid7868",
        "scope": "cpu",
        "backend": "estimate",
        "method": "estimate",
        "label": "ESTIMATE: process CPU time x 10 W/core",
    }
    title = channel_title(meta)
    assert "pid" not in title
    assert title.startswith("rank 1 on n7: CPU") and "ESTIMATE" in title and "sensor: estimate" in title
    gpu = {"rank": 0, "host": "n7", "scope": "gpu", "backend": "nvml", "method": "counter", "label": "H100"}
    assert channel_title(gpu) == "rank 0 on n7: GPU - H100 (sensor: nvml, counter)"
    node = {"node_level": 1, "host": "n7", "scope": "node", "backend": "pm_counters", "method": "counter"}
    assert channel_title(node).startswith("node n7: whole-node")


def test_power_figure_labels_power_windows_gaps_and_trailing_means(tmp_path: Path) -> None:
    # a GPU channel with a 0.4 s sampling gap inside the second iteration, and a trailing-mean channel
    def gpu_power(t: np.ndarray) -> np.ndarray:
        return 100 + 50 * (t > 6)

    gpu = channel(0, power=gpu_power, t_end=13.0, dt=0.01, name="nvml:gpu0", device="d0", label="H100")
    keep = ~((gpu["time"] > 8.3) & (gpu["time"] < 8.7))
    for k in ("time", "power", "energy"):
        gpu[k] = gpu[k][keep]
    mean = channel(
        0,
        power=80.0,
        t_end=13.0,
        dt=0.01,
        name="amdsmi:gpu0",
        device="d1",
        power_kind="average",
        power_window=1.0,
    )
    f = build(tmp_path / "r.h5", [gpu, mean], _phases())
    fig = power_figure(f)
    ax_gpu, ax_mean = fig.axes
    for ax in (ax_gpu, ax_mean):
        assert ax.get_ylabel() == "GPU power (W)"
        legend = _legend(ax)
        for name in ("idle baseline", "model load (not counted)", "warm-up (not counted)"):
            assert name in legend
        assert any("3 measured iteration(s)" in x for x in legend)
    # the gap breaks the line: a NaN between the samples on either side, and the legend says so
    (line,) = ax_gpu.lines
    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    (i,) = np.flatnonzero(np.isnan(y))
    assert 8.3 < x[i] < 8.7
    assert any(t.startswith("line broken at 1 sampling gap") for t in _legend(ax_gpu))
    assert "power, instant reading" in _legend(ax_gpu)
    # the trailing mean is said, and its first span is drawn apart (faint), not as the line
    assert "power, trailing mean over 1 s" in _legend(ax_mean)
    main_line, early = sorted(ax_mean.lines, key=lambda ln: -np.size(ln.get_xdata()))
    assert np.all(np.asarray(early.get_xdata()) < 1.0)
    main_y = np.asarray(main_line.get_ydata())
    assert np.isnan(main_y[np.asarray(main_line.get_xdata()) < 1.0]).all()
    assert any("mean reaches before sampling began" in t for t in _legend(ax_mean))


def test_estimate_start_up_spike_does_not_stand_for_idle_power(tmp_path: Path) -> None:
    """The CPU-time estimate's first readings average CPU time from before sampling began (a spike of
    ten times the idle power): the drawn line over the idle band stays near the table's idle power."""
    idle_w = 0.15
    est = channel(
        0,
        power=lambda t: np.where(t < ESTIMATE_SPAN_S, 10.0, np.where((t > 6) & (t < 12), 10.0, idle_w)),
        energy=lambda t: idle_w * t + (10.0 - idle_w) * np.clip(t - 6.0, 0, 6.0),  # the CPU-time counter
        t_end=13.0,
        dt=0.01,
        name="estimate:cpu:pid7868",
        device="h0:pid7868",
        scope="cpu",
        backend="estimate",
        method="estimate",
        power_kind="average",
        label="ESTIMATE: process CPU time x 10 W/core",
    )
    wins = [window(0, -1, "idle", 0.0, 3.0), *_phases()[1:]]
    f = build(tmp_path / "e.h5", [est], wins)
    (row,) = energy_table([f])
    assert row["idle_power_W"] < 1.0  # what the table says: well under the spike's 10 W
    (ax,) = power_figure(f).axes
    assert ax.get_ylabel() == "CPU power (W)"
    assert "pid" not in ax.get_title()
    assert f"power, trailing mean over {ESTIMATE_SPAN_S:g} s" in _legend(ax)
    line = max(ax.lines, key=lambda ln: np.size(ln.get_xdata()))
    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    in_idle = (x >= 0.0) & (x <= 3.0) & np.isfinite(y)
    assert in_idle.sum() > 250
    assert np.nanmax(y[in_idle]) <= 2 * idle_w <= 2 * row["idle_power_W"]


def test_energy_figure_shows_n_per_bar_and_a_key_to_the_labels(tmp_path: Path) -> None:
    f = build(tmp_path / "r.h5", [channel(0, t_end=13.0)], _phases())
    rows = energy_table([f])
    ax = energy_figure(rows).axes[0]
    assert [t.get_text() for t in ax.texts] == [f"n={rows[0]['n_iterations']}"] == ["n=3"]
    assert "b<batch size>" in ax.get_xlabel() and "n = measured iterations" in ax.get_xlabel()
    assert ax.get_xticklabels()[0].get_text() == "m fp16 b1"


@pytest.mark.parametrize(("stages", "drawn"), [((), False), (("base",), False), (("base", "refiner"), True)])
def test_stage_figure_only_for_jobs_with_stages(tmp_path: Path, stages: tuple[str, ...], drawn: bool) -> None:
    f = build(tmp_path / "r.h5", [channel(0, t_end=13.0)], _phases(stages=stages), cases=[case_row()])
    assert has_stages(energy_table([f], stages=True)) is drawn
    index = write_report([f], tmp_path / "rep")
    assert (index.parent / "energy_per_unit_stages.png").exists() is drawn
    assert ("Energy per stage" in index.read_text()) is drawn
    assert main(["plot", str(f), "-o", str(tmp_path / "fig"), "--kind", "energy", "--stages"]) == 0
    assert (tmp_path / "fig" / "energy_per_unit_stages.png").exists() is drawn


def test_plot_stages_without_stages_says_so(tmp_path: Path, capsys) -> None:
    f = build(tmp_path / "r.h5", [channel(0, t_end=13.0)], _phases(stages=("base",)), ranks=[rank_row()])
    assert main(["plot", str(f), "-o", str(tmp_path / "fig"), "--kind", "energy", "--stages"]) == 0
    out, err = capsys.readouterr()
    assert "no case of these runs has two or more stages" in err
    assert "energy_per_unit.png" in out and "energy_per_unit_stages" not in out
