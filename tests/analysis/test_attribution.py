"""What is added to what (issue 11, findings 1-3), checked on run files against the exact energy of
the synthetic signal:

1. a device recorded by several ranks (ranks bound to one GPU, MIG instances with or without
   ``shared_with``) counts once, over the union of its ranks' windows, split equally among them;
2. a node-level channel ``included_in`` another of the same kind (pm_counters ``cpu0`` in ``cpu``) is
   not added beside it;
3. node-level channels of one scope from two backends on one host (pm_counters and RAPL) are added
   from one backend only, and the table says which.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from _runs import build, channel, rank_row, window

from energy_hpc.analysis.attribution import channel_roles
from energy_hpc.analysis.table import device_rows, energy_table, reduce_files
from energy_hpc.telemetry.synthetic import synthetic_energy, synthetic_power

BASE_W, AMP_W, PERIOD_S = (
    120.0,
    200.0,
    1.7,
)  # the GPU's true power: a known signal with a closed-form integral
BUS = "0000:17:00.0"
MIGS = ",".join(f"MIG-{k:08d}-0000-0000-0000-000000000000" for k in range(3))


def P(t):
    return np.array([synthetic_power(x, BASE_W, AMP_W, PERIOD_S) for x in np.atleast_1d(t)])


def E(t):
    return np.array([synthetic_energy(x, BASE_W, AMP_W, PERIOD_S) for x in np.atleast_1d(t)])


def true_J(spans) -> float:
    """Exact energy of the signal over the union of the spans."""
    total, cur = 0.0, None
    for a, b in sorted(spans):
        if cur is not None and a <= cur[1]:
            cur[1] = max(cur[1], b)
            continue
        if cur is not None:
            total += float(E(cur[1])[0] - E(cur[0])[0])
        cur = [a, b]
    if cur is not None:
        total += float(E(cur[1])[0] - E(cur[0])[0])
    return total


def gpu_copy(rank: int, *, phase: float = 0.0, t_end: float = 12.0, **meta):
    """Rank ``rank``'s record of the one shared GPU: the same signal, sampled every 2 ms at the
    rank's own times (samplers of different ranks are not in step), counter = exact integral."""
    c = channel(
        rank,
        t_end=t_end,
        dt=0.002,
        name=f"nvml:{BUS}",
        device=BUS,
        backend="nvml",
        scope="gpu",
        update_period=0.0,
        energy_resolution=0.0,
        **meta,
    )
    t = c["time"] + phase
    c.update(time=t, power=P(t), energy=E(t))
    return c


def measure(rank: int, spans, units: float = 1.0, case: int = 0) -> list[tuple]:
    return [window(rank, case, "measure", a, b, units, iteration=i) for i, (a, b) in enumerate(spans)]


def two_ranks(bus0: str = BUS, bus1: str = BUS) -> list[dict]:
    return [rank_row(local_rank=0, bus=bus0), rank_row(local_rank=1, bus=bus1)]


# ------------------------------------------------------------------ 1. one device, several ranks


def test_two_ranks_on_one_gpu_without_mig_count_it_once_over_the_union_of_their_windows(
    tmp_path: Path,
) -> None:
    """CUDA_VISIBLE_DEVICES=0 on two ranks: each records the same GPU (no shared_with). Their windows
    overlap in part; the GPU counts once over the union, in the device total, the node's device
    figure and the net energy, and each rank gets half."""
    w0, w1 = [(2.0, 4.0), (6.0, 8.0)], [(2.5, 4.5), (6.2, 8.3)]
    idle = [(0.5, 1.5)]
    chans = [
        gpu_copy(0),
        gpu_copy(1, phase=0.0007),
        channel(
            0,
            power=900.0,
            scope="node",
            node_level=1,
            name="pm_counters:node",
            device="h0:node",
            backend="pm_counters",
            t_end=12.0,
        ),
    ]
    wins = [window(r, -1, "idle", *idle[0]) for r in (0, 1)] + measure(0, w0) + measure(1, w1)
    f = build(tmp_path / "shared.h5", chans, wins, ranks=two_ranks())
    (row,) = energy_table([f])
    truth = true_J(w0 + w1)
    assert truth < true_J(w0) + true_J(w1) - 100.0  # the overlap is worth counting right
    assert row["energy_J"] == pytest.approx(truth, rel=1e-5)
    assert abs(row["energy_J"] - truth) <= 2 * row["energy_uncertainty_J"] + 1e-6
    assert row["node_devices_energy_J"] == pytest.approx(truth, rel=1e-5)  # node windows = the same union
    idle_W = true_J(idle)
    union_s = (4.5 - 2.0) + (8.3 - 6.0)
    # net is a difference of two large figures: held to the gross figure's precision
    assert row["net_energy_J"] == pytest.approx(truth - idle_W * union_s, abs=1e-5 * truth)
    assert row["units"] == 4 and row["energy_per_unit_J"] == pytest.approx(truth / 4, rel=1e-5)
    devs = {d["rank"]: d for d in device_rows(reduce_files([f]))}
    assert sorted(devs) == [0, 1]
    for d in devs.values():
        assert d["energy_J"] == pytest.approx(truth / 2, rel=1e-5)
        assert d["attribution"] == ["equal split of GPU among 2 ranks"]
    assert sum(d["energy_J"] for d in devs.values()) == pytest.approx(row["energy_J"], rel=1e-9)


@pytest.mark.parametrize("shared_with", [MIGS, ""], ids=["mig", "same-gpu"])
def test_ranks_taking_turns_on_one_gpu_each_add_their_own_windows(tmp_path: Path, shared_with: str) -> None:
    """Two ranks on one GPU (two MIG instances, or plain sharing) that work at different times: the
    energy of both ranks' windows is in the total, once (the lowest rank's copy over its own windows
    alone would lose rank 1's)."""
    w0, w1 = [(2.0, 3.5), (7.0, 8.0)], [(4.0, 6.0), (9.0, 10.5)]
    chans = [gpu_copy(0, shared_with=shared_with), gpu_copy(1, phase=0.0011, shared_with=shared_with)]
    f = build(tmp_path / "turns.h5", chans, measure(0, w0) + measure(1, w1), ranks=two_ranks())
    (row,) = energy_table([f])
    truth = true_J(w0 + w1)
    assert row["energy_J"] == pytest.approx(truth, rel=1e-5)
    assert abs(row["energy_J"] - truth) <= 2 * row["energy_uncertainty_J"] + 1e-6
    devs = device_rows(reduce_files([f]))
    assert sum(d["energy_J"] for d in devs) == pytest.approx(truth, rel=1e-5)


def test_mig_ranks_whose_channel_lacks_shared_with_count_the_gpu_once(tmp_path: Path) -> None:
    """Three ranks on MIG instances of one GPU, named by the parent's bus id with no shared_with (what
    NVML's bus-id lookup gives), and a fourth rank on a GPU of its own."""
    spans = [(2.0, 4.0), (5.0, 7.5)]
    chans = [gpu_copy(r, phase=0.0003 * r) for r in range(3)]
    chans.append(
        channel(3, power=100.0, t_end=12.0, name="nvml:0000:65:00.0", device="0000:65:00.0", backend="nvml")
    )
    ranks = [rank_row(local_rank=r, bus=BUS) for r in range(3)] + [rank_row(local_rank=3, bus="0000:65:00.0")]
    wins = [w for r in range(4) for w in measure(r, spans)]
    f = build(tmp_path / "mig.h5", chans, wins, ranks=ranks)
    (row,) = energy_table([f])
    truth = true_J(spans)
    assert row["energy_J"] == pytest.approx(truth + 100.0 * 4.5, rel=1e-5)
    devs = {d["rank"]: d for d in device_rows(reduce_files([f]))}
    for r in range(3):
        assert devs[r]["energy_J"] == pytest.approx(truth / 3, rel=1e-5)
    assert devs[3]["energy_J"] == pytest.approx(450.0, rel=1e-6) and devs[3]["attribution"] == ["own channel"]


def test_a_copy_without_samples_in_a_window_is_stood_in_for_by_another_rank_s_copy(tmp_path: Path) -> None:
    """Rank 0's sampler stopped at 5 s (its process died); rank 1 worked on the same GPU until 9 s:
    the span after 5 s is read from rank 1's copy, not lost."""
    w0, w1 = [(2.0, 4.0)], [(2.0, 4.0), (6.0, 9.0)]
    chans = [gpu_copy(0, t_end=5.0), gpu_copy(1, phase=0.0005)]
    f = build(tmp_path / "gap.h5", chans, measure(0, w0) + measure(1, w1), ranks=two_ranks())
    (row,) = energy_table([f])
    assert row["energy_J"] == pytest.approx(true_J(w0 + w1), rel=1e-5)
    assert not any("no samples" in fl for fl in row["flags"])


def test_channels_of_different_devices_hosts_or_scopes_are_not_merged() -> None:
    base = {
        "scope": "gpu",
        "backend": "nvml",
        "node_level": 0,
        "included_in": "",
        "view_of": "",
        "shared_with": "",
    }
    metas = [
        dict(base, rank=0, host="h0", node=0, device="0000:17:00.0", name="a"),
        dict(base, rank=1, host="h1", node=1, device="0000:17:00.0", name="a"),  # same bus, other host
        dict(base, rank=2, host="h0", node=0, device="0000:65:00.0", name="b"),
        dict(
            base, rank=3, host="h0", node=0, device="h0:pid12", name="est:3", scope="cpu", backend="estimate"
        ),
        dict(
            base, rank=4, host="h0", node=0, device="h0:pid13", name="est:4", scope="cpu", backend="estimate"
        ),
    ]
    assert channel_roles(metas) == ["device"] * 5


def test_roles_are_the_same_when_worked_out_twice() -> None:
    base = {
        "scope": "gpu",
        "backend": "nvml",
        "node_level": 0,
        "included_in": "",
        "view_of": "",
        "shared_with": "",
        "host": "h0",
        "node": 0,
        "device": BUS,
        "name": f"nvml:{BUS}",
    }
    metas = [dict(base, rank=r, index=10 + k) for k, r in enumerate((2, 0, 1))]
    first = channel_roles(metas)
    assert first == ["placeholder", "package", "placeholder"] and metas[1]["sharers"] == "0,1,2"
    assert metas[1]["copies"] == [11, 12, 10]  # the channels' indices, lowest rank first
    assert channel_roles(metas) == first and metas[1]["sharers"] == "0,1,2"


# ------------------------------------------------------------------ 2. included_in at node level


def _node_run(tmp_path: Path, chans: list[dict], name: str = "node.h5") -> Path:
    dev = channel(0, power=300.0, name="nvml:gpu0", device="0000:17:00.0", backend="nvml", t_end=12.0)
    return build(
        tmp_path / name,
        [dev, *chans],
        measure(0, [(2.0, 4.0), (6.0, 7.0)]),
        ranks=[rank_row(bus="0000:17:00.0")],
    )


def pm(key: str, watts: float, included_in: str = "", scope: str = "cpu") -> dict:
    return channel(
        0,
        power=watts,
        t_end=12.0,
        scope=scope,
        node_level=1,
        name=f"pm_counters:{key}",
        device=f"h0:{key}",
        backend="pm_counters",
        included_in=included_in,
    )


def test_per_socket_pm_counters_included_in_the_cpu_channel_are_not_added_to_it(tmp_path: Path) -> None:
    chans = [
        pm("node", 1500.0, scope="node"),
        pm("cpu", 200.0, "pm_counters:node"),
        pm("cpu0", 110.0, "pm_counters:cpu"),
        pm("cpu1", 90.0, "pm_counters:cpu"),
        pm("memory", 50.0, "pm_counters:node", scope="memory"),
    ]
    (row,) = energy_table([_node_run(tmp_path, chans)])
    assert row["node_cpu_energy_J"] == pytest.approx(200.0 * 3, rel=1e-6)  # cpu's, not cpu + cpu0 + cpu1
    assert row["node_memory_energy_J"] == pytest.approx(50.0 * 3, rel=1e-6)
    assert row["node_energy_J"] == pytest.approx(1500.0 * 3, rel=1e-6)
    assert row["host_cpu_memory_energy_J"] == pytest.approx(250.0 * 3, rel=1e-6)


def test_per_socket_channels_count_when_the_channel_they_are_included_in_is_absent(tmp_path: Path) -> None:
    chans = [pm("cpu0", 110.0, "pm_counters:cpu"), pm("cpu1", 90.0, "pm_counters:cpu")]
    (row,) = energy_table([_node_run(tmp_path, chans)])
    assert row["node_cpu_energy_J"] == pytest.approx(200.0 * 3, rel=1e-6)


# ------------------------------------------------------------------ 3. two backends, one scope, one host


def rapl(key: str, watts: float, scope: str, host: str = "h0", rank: int = 0, node: int = 0) -> dict:
    return channel(
        rank,
        power=watts,
        t_end=12.0,
        scope=scope,
        node_level=1,
        name=f"rapl:{key}",
        device=f"{host}:{key}",
        backend="rapl",
        host=host,
        node=node,
    )


def test_pm_counters_and_rapl_on_one_host_are_not_both_added(tmp_path: Path) -> None:
    """sensors = ["pm_counters", "rapl"] on a Cray EX node: CPU and memory come from pm_counters
    alone, and the table says RAPL's were left out."""
    chans = [
        pm("node", 1500.0, scope="node"),
        pm("cpu", 200.0, "pm_counters:node"),
        pm("memory", 50.0, "pm_counters:node", scope="memory"),
        rapl("package-0", 95.0, "cpu"),
        rapl("package-1", 85.0, "cpu"),
        rapl("dram-0", 30.0, "memory"),
    ]
    (row,) = energy_table([_node_run(tmp_path, chans)])
    assert row["node_cpu_energy_J"] == pytest.approx(200.0 * 3, rel=1e-6)
    assert row["node_memory_energy_J"] == pytest.approx(50.0 * 3, rel=1e-6)
    notes = [fl for fl in row["flags"] if "rapl" in fl]
    assert notes and "pm_counters" in notes[0], row["flags"]


def test_cpu_and_memory_only_run_with_two_backends_counts_one(tmp_path: Path) -> None:
    """No device channel: the row falls back to node CPU + memory, from one backend."""
    chans = [
        pm("cpu", 200.0),
        pm("memory", 50.0, scope="memory"),
        rapl("package-0", 180.0, "cpu"),
        rapl("dram-0", 30.0, "memory"),
    ]
    (row,) = energy_table([build(tmp_path / "cpu.h5", chans, measure(0, [(2.0, 4.0)]))])
    assert row["energy_scope"] == "cpu+memory (node-level)"
    assert row["energy_J"] == pytest.approx(250.0 * 2, rel=1e-6)


def test_backends_on_different_hosts_are_both_counted(tmp_path: Path) -> None:
    chans = [pm("cpu", 200.0), rapl("package-0", 180.0, "cpu", host="h1", rank=1, node=1)]
    ranks = [rank_row(host="h0", node=0), rank_row(host="h1", node=1)]
    wins = measure(0, [(2.0, 4.0)]) + measure(1, [(2.0, 4.0)])
    (row,) = energy_table([build(tmp_path / "two.h5", chans, wins, ranks=ranks, n_nodes=2)])
    assert row["node_cpu_energy_J"] == pytest.approx((200.0 + 180.0) * 2, rel=1e-6)
    assert not any("rapl" in fl for fl in row["flags"])
    assert not math.isnan(row["energy_J"])
