"""Tables against closed forms: counter vs integral, idle subtraction, MI250X split, node columns,
counter hygiene, stages, grouping, scaling, formats."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _runs import build, case_row, channel, rank_row, window

from energy_hpc.analysis.scaling import format_scaling, scaling_rows
from energy_hpc.analysis.table import device_rows, energy_table, format_rows, reduce_files


def _steps(levels: list[tuple[float, float]]):
    """Piecewise-constant power: [(t_from, W), ...]."""

    def f(t: np.ndarray) -> np.ndarray:
        p = np.zeros_like(t)
        for t0, w in levels:
            p[t >= t0] = w
        return p

    return f


def _measure(rank: int, windows: list[tuple[float, float]], case: int = 0, units: float = 1.0) -> list[tuple]:
    return [window(rank, case, "measure", a, b, units, iteration=i) for i, (a, b) in enumerate(windows)]


def test_counter_is_used_and_its_disagreement_with_the_integral_reported(tmp_path: Path) -> None:
    # counter integrates 100 W exactly; the power sensor reads 10 % high
    ch = channel(power=110.0, energy=lambda t: 100.0 * t)
    f = build(tmp_path / "r.h5", [ch], _measure(0, [(2.0, 4.0), (5.0, 8.0)], units=2))
    (row,) = energy_table([f])
    assert row["method"] == "counter"
    assert row["energy_J"] == pytest.approx(500.0, rel=1e-6)
    assert row["energy_per_unit_J"] == pytest.approx(125.0, rel=1e-6)
    assert row["counter_vs_integral_pct"] == pytest.approx(10.0, rel=1e-3)
    assert row["mean_power_W"] == pytest.approx(100.0, rel=1e-6)
    assert 0 < row["energy_per_unit_uncertainty_J"] < 1.0


def test_idle_power_is_subtracted_for_net_energy(tmp_path: Path) -> None:
    ch = channel(power=_steps([(0, 40.0), (5.0, 160.0)]))
    wins = [window(0, -1, "idle", 1.0, 4.0), *_measure(0, [(6.0, 8.0), (9.0, 12.0)])]
    (row,) = energy_table([build(tmp_path / "r.h5", [ch], wins)])
    assert row["idle_power_W"] == pytest.approx(40.0, rel=1e-6)
    assert row["energy_J"] == pytest.approx(160.0 * 5, rel=1e-6)
    assert row["net_energy_J"] == pytest.approx(120.0 * 5, rel=1e-6)
    assert row["net_energy_per_unit_J"] == pytest.approx(300.0, rel=1e-6)
    assert row["net_energy_uncertainty_J"] >= row["energy_uncertainty_J"]


def _mi250x(tmp_path: Path, both_used: bool = True) -> Path:
    pkg = channel(
        0,
        power=400.0,
        scope="package",
        name="amdsmi:pkg:0000:c1:00.0",
        device="0000:c1:00.0",
        shared_with="0000:c1:00.0,0000:c6:00.0",
        update_period=0.001,
    )
    chans, ranks = [pkg], [rank_row(bus="0000:c1:00.0")]
    wins = _measure(0, [(2.0, 4.0), (5.0, 7.0)], units=1)
    if both_used:
        # the secondary GCD's rank records a placeholder without power: never added
        chans.append(
            channel(
                1,
                power=np.nan,
                energy=None,
                has_energy=0,
                name="amdsmi:0000:c6:00.0",
                device="0000:c6:00.0",
                shared_with="0000:c1:00.0,0000:c6:00.0",
            )
        )
        ranks.append(rank_row(local_rank=1, bus="0000:c6:00.0"))
        wins += _measure(1, [(2.01, 4.01), (5.01, 7.01)], units=1)
    return build(tmp_path / "mi.h5", chans, wins, ranks=ranks)


def test_mi250x_package_counted_once_and_split_equally_between_its_gcds(tmp_path: Path) -> None:
    f = _mi250x(tmp_path)
    (row,) = energy_table([f])
    assert row["energy_J"] == pytest.approx(400.0 * 4, rel=1e-6)  # the package once, not twice
    assert row["units"] == 4 and row["energy_per_unit_J"] == pytest.approx(400.0, rel=1e-6)
    assert row["mean_power_W"] == pytest.approx(200.0, rel=1e-3)  # per GCD
    assert any("equal split" in fl for fl in row["flags"])
    devs = device_rows(reduce_files([f]))
    assert sorted(d["rank"] for d in devs) == [0, 1]
    for d in devs:
        assert d["energy_J"] == pytest.approx(800.0, rel=1e-6)
        assert d["energy_per_unit_J"] == pytest.approx(400.0, rel=1e-6)
    assert sum(d["energy_J"] for d in devs) == pytest.approx(row["energy_J"], rel=1e-9)


def test_mi250x_package_with_one_used_gcd_goes_whole_to_it_and_says_so(tmp_path: Path) -> None:
    f = _mi250x(tmp_path, both_used=False)
    (d,) = device_rows(reduce_files([f]))
    assert d["energy_J"] == pytest.approx(1600.0, rel=1e-6)
    assert d["attribution"] == ["includes idle partner GCD"]


def test_node_energy_sits_beside_the_devices_with_the_rest_in_its_own_column(tmp_path: Path) -> None:
    chans = [
        channel(0, power=300.0),
        channel(1, power=300.0, name="ch1b", device="dev1"),
        channel(0, power=1000.0, scope="node", node_level=1, name="pm:node", device="node"),
        channel(0, power=200.0, scope="cpu", node_level=1, name="pm:cpu", device="cpu"),
    ]
    ranks = [rank_row(local_rank=0), rank_row(local_rank=1)]
    # rank 1's windows run concurrently, a little later: node spans are [2, 4.1] and [5, 7.1]
    wins = _measure(0, [(2.0, 4.0), (5.0, 7.0)]) + _measure(1, [(2.1, 4.1), (5.1, 7.1)])
    (row,) = energy_table([build(tmp_path / "n.h5", chans, wins, ranks=ranks)])
    span = 2.1 * 2
    assert row["energy_J"] == pytest.approx(300.0 * 8, rel=1e-6)  # devices over their own windows
    assert row["node_energy_J"] == pytest.approx(1000.0 * span, rel=1e-6)
    assert row["node_devices_energy_J"] == pytest.approx(600.0 * span, rel=1e-6)
    assert row["node_rest_energy_J"] == pytest.approx(400.0 * span, rel=1e-6)
    assert row["node_cpu_energy_J"] == pytest.approx(200.0 * span, rel=1e-6)
    assert row["node_energy_per_unit_J"] == pytest.approx(1000.0 * span / 4, rel=1e-6)
    assert "node J/unit" in format_rows([row], "markdown", columns="wide")


def test_rapl_only_run_falls_back_to_node_cpu_and_memory(tmp_path: Path) -> None:
    chans = [
        channel(0, power=80.0, scope="cpu", node_level=1, name="rapl:pkg"),
        channel(0, power=20.0, scope="memory", node_level=1, name="rapl:dram"),
    ]
    (row,) = energy_table([build(tmp_path / "r.h5", chans, _measure(0, [(2.0, 4.0)]))])
    assert row["energy_scope"] == "cpu+memory (node-level)"
    assert row["energy_J"] == pytest.approx(200.0, rel=1e-6)


def test_channel_flagged_counter_fault_uses_the_integral(tmp_path: Path) -> None:
    ch = channel(power=100.0, energy=lambda t: 7.0 * t, note="counter-fault: stuck at t=1 s")
    (row,) = energy_table([build(tmp_path / "r.h5", [ch], _measure(0, [(2.0, 4.0)]))])
    assert row["method"] == "integral" and row["energy_J"] == pytest.approx(200.0, rel=1e-6)


@pytest.mark.parametrize(
    "energy, fault",
    [
        (lambda t: 100.0 * t - 150.0 * (t > 3.0), "backwards"),
        (lambda t: 100.0 * np.minimum(t, 1.0), "stuck"),
        (lambda t: 1000.0 * t, "disagrees"),
    ],
)
def test_misbehaving_counter_is_detected_and_replaced_by_the_integral(tmp_path: Path, energy, fault) -> None:
    ch = channel(power=100.0, energy=energy)
    wins = _measure(0, [(2.0, 4.0), (10.0, 12.0)])
    (row,) = energy_table([build(tmp_path / "r.h5", [ch], wins)])
    assert row["energy_J"] == pytest.approx(400.0, rel=1e-3)
    assert "integral" in row["method"]
    assert any(fault in fl for fl in row["flags"]), row["flags"]
    assert row["counter_fallback_windows"] >= 1


def test_short_windows_are_flagged_in_the_table(tmp_path: Path) -> None:
    ch = channel(power=100.0, update_period=0.1)
    (row,) = energy_table([build(tmp_path / "r.h5", [ch], _measure(0, [(2.0, 2.05), (3.0, 6.0)]))])
    assert row["short_windows"] == 1 and any("shorter than 3" in f for f in row["flags"])


def test_stage_rows_report_base_and_refiner_separately(tmp_path: Path) -> None:
    ch = channel(power=_steps([(0, 100.0), (3.0, 300.0)]))
    wins = [
        window(0, 0, "measure", 2.0, 4.0, 1),
        window(0, 0, "measure", 2.0, 3.0, 1, stage="base"),
        window(0, 0, "measure", 3.0, 4.0, 1, stage="refiner"),
    ]
    f = build(tmp_path / "r.h5", [ch], wins)
    assert [r["stage"] for r in energy_table([f])] == [""]
    rows = {r["stage"]: r for r in energy_table([f], stages=True)}
    assert rows["base"]["energy_J"] == pytest.approx(100.0, rel=1e-3)
    assert rows["refiner"]["energy_J"] == pytest.approx(300.0, rel=1e-3)
    assert rows[""]["energy_J"] == pytest.approx(400.0, rel=1e-3)


def test_group_by_merges_cases_and_files(tmp_path: Path) -> None:
    cases = [case_row(batch_size=1), case_row(batch_size=4)]
    files = []
    for k, watts in enumerate((100.0, 300.0)):
        wins = _measure(0, [(2.0, 4.0)], case=0, units=1) + _measure(0, [(5.0, 7.0)], case=1, units=4)
        files.append(build(tmp_path / f"r{k}.h5", [channel(power=watts)], wins, cases=cases))
    assert len(energy_table(files)) == 2  # same case in two files merges
    (row,) = energy_table(files, by=["dtype"])
    assert row["dtype"] == "fp16" and row["units"] == 10
    assert row["energy_J"] == pytest.approx((100 + 300) * 4, rel=1e-6)


def test_scaling_efficiency_against_ideal_linear_scaling(tmp_path: Path) -> None:
    files = []
    for n, length in ((1, 1.0), (2, 1.25), (4, 2.0)):
        chans, ranks, wins = [], [], []
        for r in range(n):  # one rank per node, 1 unit per window, 2 windows
            chans.append(channel(r, power=100.0, name=f"c{r}", device=f"d{r}", node=r, host=f"h{r}"))
            ranks.append(rank_row(host=f"h{r}", node=r))
            wins += _measure(r, [(2.0, 2.0 + length), (5.0, 5.0 + length)])
        files.append(build(tmp_path / f"n{n}.h5", chans, wins, ranks=ranks, n_nodes=n))
    rows = energy_table(files)
    s = {r["n_nodes"]: r for r in scaling_rows(rows)}
    assert set(s) == {1, 2, 4}
    assert s[1]["parallel_efficiency"] == pytest.approx(1.0)
    assert s[2]["speedup"] == pytest.approx(2 / 1.25) and s[2]["parallel_efficiency"] == pytest.approx(0.8)
    assert s[4]["parallel_efficiency"] == pytest.approx(0.5)
    assert s[4]["energy_per_unit_J"] == pytest.approx(200.0, rel=1e-6)
    assert s[4]["energy_efficiency"] == pytest.approx(0.5, rel=1e-6)
    assert "efficiency" in format_scaling(list(s.values()), "markdown")


@pytest.mark.parametrize("fmt", ["markdown", "csv", "latex", "json"])
def test_every_format_labels_synthetic_data(tmp_path: Path, fmt: str) -> None:
    ch = channel(power=100.0, method="synthetic")
    f = build(tmp_path / "r.h5", [ch], _measure(0, [(2.0, 4.0)]), synthetic=True)
    out = format_rows(energy_table([f]), fmt)
    assert "SYNTHETIC" in out
    if fmt == "json":
        (row,) = json.loads(out)
        for key in (
            "case",
            "n_ranks",
            "units",
            "unit",
            "energy_J",
            "energy_per_unit_J",
            "wh_per_1000_units",
            "mean_power_W",
            "method",
            "energy_per_unit_uncertainty_J",
            "net_energy_per_unit_J",
            "idle_power_W",
            "peak_power_W",
            "n_nodes",
            "node_energy_per_unit_J",
        ):
            assert key in row, key
        assert row["method"] == "synthetic"


def test_measured_and_synthetic_runs_never_merge(tmp_path: Path) -> None:
    a = build(
        tmp_path / "a.h5",
        [channel(power=100.0, method="synthetic")],
        _measure(0, [(2.0, 4.0)]),
        synthetic=True,
    )
    b = build(tmp_path / "b.h5", [channel(power=100.0)], _measure(0, [(2.0, 4.0)]))
    assert sorted(r["data"] for r in energy_table([a, b])) == ["SYNTHETIC", "measured"]


def test_uncertainty_covers_a_slow_counter(tmp_path: Path) -> None:
    # power ramps; the counter refreshes every 0.1 s (held in between)
    tau = 0.1
    ch = channel(
        power=lambda t: 50 + 20 * t,
        energy=lambda t: (lambda q: 50 * q + 10 * q**2)(np.floor(t / tau) * tau),
        update_period=tau,
    )
    wins = _measure(0, [(2.03, 4.07), (5.01, 9.55)])
    (row,) = energy_table([build(tmp_path / "r.h5", [ch], wins)])
    truth = sum(50 * (b - a) + 10 * (b * b - a * a) for a, b in [(2.03, 4.07), (5.01, 9.55)])
    assert abs(row["energy_J"] - truth) < 4 * row["energy_uncertainty_J"]
    assert not math.isnan(row["energy_uncertainty_J"])


def test_aux_units_and_labels_reach_the_table(tmp_path: Path) -> None:
    """Text generation: J per generated token and per prompt token; labelled cases stay apart."""
    wins = [window(0, 0, "idle", 0.0, 1.0)]
    wins += [
        window(
            0,
            c,
            "measure",
            2.0 + 4 * c,
            4.0 + 4 * c,
            units=50,
            unit="token",
            aux_units=200,
            aux_unit="prompt-token",
        )
        for c in (0, 1)
    ]
    cases = [case_row(task="text-generation", unit="token", label=lab) for lab in ("short", "long")]
    path = build(tmp_path / "r.h5", [channel(0, power=100.0)], wins, cases=cases)
    rows = energy_table([path])
    assert sorted(r["label"] for r in rows) == ["long", "short"]
    for r in rows:
        assert r["aux_unit"] == "prompt-token" and r["aux_units"] == 200
        assert r["energy_per_unit_J"] == pytest.approx(200.0 / 50, rel=1e-3)  # 100 W x 2 s / 50 tokens
        assert r["energy_per_aux_unit_J"] == pytest.approx(200.0 / 200, rel=1e-3)
    md = format_rows(rows, "markdown", columns="wide")
    assert "| label" in md and "per prompt-token" in md


def test_node_energy_is_not_counted_twice_when_ranks_drift_apart(tmp_path: Path) -> None:
    """Rank 1 is 10 % slower: its iteration i overlaps rank 0's iteration i+1. The node channel must
    be counted over the union of the node's work, once."""
    chans = [
        channel(0, power=300.0),
        channel(1, power=300.0, name="ch1b", device="dev1"),
        channel(0, power=1000.0, scope="node", node_level=1, name="pm:node", device="node", t_end=30.0),
    ]
    ranks = [rank_row(local_rank=0), rank_row(local_rank=1)]
    fast = [(2.0 + k, 3.0 + k) for k in range(10)]  # 2 .. 12 s
    slow = [(2.0 + 1.1 * k, 3.1 + 1.1 * k) for k in range(10)]  # 2 .. 13 s
    wins = _measure(0, fast) + _measure(1, slow)
    (row,) = energy_table([build(tmp_path / "drift.h5", chans, wins, ranks=ranks)])
    union = 13.0 - 2.0  # the node worked from 2 s to 13 s without a break
    assert row["node_energy_J"] == pytest.approx(1000.0 * union, rel=1e-6)
    assert row["node_energy_per_unit_J"] == pytest.approx(1000.0 * union / row["units"], rel=1e-6)


def test_device_rows_do_not_turn_missing_windows_into_zero_joules(tmp_path: Path) -> None:
    """A channel that has no samples in a window: the device row is NaN and says so, not 0 J."""
    chans = [channel(0, power=100.0, t_end=5.0)]  # samples stop at 5 s
    wins = _measure(0, [(2.0, 3.0), (6.0, 7.0)])  # the second window has no data
    (d,) = device_rows(reduce_files([build(tmp_path / "gap.h5", chans, wins)]))
    assert math.isnan(d["energy_J"]) and d["no_data_windows"] == 1
    (ok,) = device_rows(
        reduce_files([build(tmp_path / "ok.h5", [channel(0, power=100.0)], _measure(0, [(2.0, 3.0)]))])
    )
    assert ok["energy_J"] == pytest.approx(100.0, rel=1e-6) and ok["no_data_windows"] == 0


def _mig(tmp_path: Path, n_instances: int = 2) -> Path:
    """Ranks 0 and 1 on two MIG instances of one GPU (NVML reads the whole GPU: each records it),
    rank 2 on a whole GPU of its own."""
    migs = ",".join(f"MIG-{k:08d}-0000-0000-0000-000000000000" for k in range(n_instances))
    gpu = {
        "scope": "gpu",
        "name": "nvml:GPU-aaaa",
        "device": "GPU-aaaa",
        "backend": "nvml",
        "shared_with": migs,
    }
    chans = [
        channel(0, power=300.0, **gpu),
        channel(1, power=300.0, **gpu),
        channel(2, power=100.0, name="nvml:GPU-bbbb", device="GPU-bbbb", backend="nvml"),
    ]
    ranks = [
        rank_row(local_rank=0, bus="0000:17:00.0"),
        rank_row(local_rank=1, bus="0000:17:00.0"),
        rank_row(local_rank=2, bus="0000:65:00.0"),
    ]
    wins = (
        _measure(0, [(2.0, 4.0)], units=1)
        + _measure(1, [(2.01, 4.01)], units=1)
        + _measure(2, [(2.0, 4.0)], units=1)
    )
    return build(tmp_path / "mig.h5", chans, wins, ranks=ranks)


def test_mig_gpu_recorded_by_every_instance_is_counted_once_and_split(tmp_path: Path) -> None:
    f = _mig(tmp_path)
    (row,) = energy_table([f])
    # the MIG GPU once, not twice, over the union of its ranks' windows (2.00-4.01 s)
    assert row["energy_J"] == pytest.approx(300.0 * 2.01 + 100.0 * 2, rel=1e-6)
    devs = {d["rank"]: d for d in device_rows(reduce_files([f]))}
    assert sorted(devs) == [0, 1, 2]
    assert devs[0]["energy_J"] == pytest.approx(301.5, rel=1e-6)
    assert devs[1]["energy_J"] == pytest.approx(301.5, rel=1e-6)
    assert devs[2]["energy_J"] == pytest.approx(200.0, rel=1e-6)
    assert devs[0]["attribution"] == ["equal split of GPU among 2 MIG instances"]
    assert sum(d["energy_J"] for d in devs.values()) == pytest.approx(row["energy_J"], rel=1e-9)


def test_mig_gpu_with_instances_outside_the_run_says_its_figure_includes_them(tmp_path: Path) -> None:
    devs = {d["rank"]: d for d in device_rows(reduce_files([_mig(tmp_path, n_instances=3)]))}
    assert devs[0]["attribution"] == [
        "equal split of GPU among 2 MIG instances; includes 1 MIG instance(s) this run did not use"
    ]


def _cut(ch: dict, a: float, b: float) -> dict:
    """``ch`` without its readings between ``a`` and ``b`` s (the sampler missed them)."""
    keep = (ch["time"] <= a) | (ch["time"] >= b)
    for k in ("time", "power", "energy"):
        ch[k] = ch[k][keep]
    return ch


def test_sampling_gaps_are_counted_and_flagged(tmp_path: Path) -> None:
    # reads every 1 ms; 0.45 s missing inside the first window, 30 ms (30 intervals, under 50 ms) inside
    # the second, nothing missing in the third
    ch = _cut(_cut(channel(power=100.0), 3.0, 3.45), 6.0, 6.03)
    (row,) = energy_table(
        [build(tmp_path / "gap.h5", [ch], _measure(0, [(2.0, 4.0), (5.0, 7.0), (8.0, 9.0)]))]
    )
    assert row["gap_windows"] == 1
    assert row["longest_gap_s"] == pytest.approx(0.45, abs=0.002)
    assert any("1 window(s) with a sampling gap" in f and "0.45 s" in f for f in row["flags"]), row["flags"]
    assert row["energy_J"] == pytest.approx(500.0, rel=1e-6)  # constant power: interpolated exactly
    (clean,) = energy_table([build(tmp_path / "ok.h5", [channel(power=100.0)], _measure(0, [(2.0, 4.0)]))])
    assert clean["gap_windows"] == 0 and math.isnan(clean["longest_gap_s"])
    assert not any("sampling gap" in f for f in clean["flags"])


def test_a_gap_on_a_node_level_channel_is_counted_for_a_node_level_row(tmp_path: Path) -> None:
    chans = [_cut(channel(0, power=80.0, scope="cpu", node_level=1, name="rapl:pkg"), 2.5, 2.7)]
    (row,) = energy_table([build(tmp_path / "r.h5", chans, _measure(0, [(2.0, 4.0), (5.0, 6.0)]))])
    assert row["energy_scope"] == "cpu+memory (node-level)"
    assert row["gap_windows"] == 1 and row["longest_gap_s"] == pytest.approx(0.2, abs=0.002)


def test_iterations_are_named_for_what_they_count(tmp_path: Path) -> None:
    """3 iterations on 2 ranks: 6 rank iterations (the old `iterations`), 3 per rank."""
    chans = [channel(r, power=100.0, name=f"c{r}", device=f"d{r}") for r in (0, 1)]
    wins = _measure(0, [(2.0, 3.0), (4.0, 5.0), (6.0, 7.0)]) + _measure(
        1, [(2.0, 3.0), (4.0, 5.0), (6.0, 7.0)]
    )
    f = build(tmp_path / "r.h5", chans, wins, ranks=[rank_row(), rank_row(local_rank=1)])
    (row,) = energy_table([f])
    assert row["iterations"] == row["rank_iterations"] == 6
    assert row["iterations_per_rank"] == 3 and row["n_iterations"] == 3
    assert row["seconds_per_unit"] == pytest.approx(1.0)  # 6 rank-seconds for 6 units


def test_a_sole_stage_that_is_the_whole_iteration_is_not_repeated(tmp_path: Path) -> None:
    """Text-to-image without a refiner runs one "base" stage over the whole iteration: no second row."""
    wins = []
    for i, a in enumerate((2.0, 5.0)):
        wins += [
            window(0, 0, "measure", a, a + 2.0, 1, iteration=i),
            window(0, 0, "measure", a + 0.0001, a + 1.9999, 1, iteration=i, stage="base"),
        ]
    f = build(tmp_path / "r.h5", [channel(power=100.0)], wins)
    assert [r["stage"] for r in energy_table([f], stages=True)] == [""]
    # a sole stage over half of each iteration says something the whole row does not: kept
    half = [w for w in wins if not w[6]] + [
        window(0, 0, "measure", a, a + 1.0, 1, iteration=i, stage="generate")
        for i, a in enumerate((2.0, 5.0))
    ]
    g = build(tmp_path / "half.h5", [channel(power=100.0)], half)
    assert sorted(r["stage"] for r in energy_table([g], stages=True)) == ["", "generate"]
