"""GH200 at NVML module scope (issue 11, finding 5): a rank-level channel of scope ``module`` measures the
GPU with the Grace CPU and memory. It is never added to the GPU-only device total: the row carries it as
``module_energy_J`` with a flag, and takes it as the row's figure (saying so) only where no rank has a
GPU-scope channel."""

from __future__ import annotations

from pathlib import Path

import pytest
from _runs import build, channel, rank_row, window

from energy_hpc.analysis.table import MODULE_SCOPE, energy_table, format_rows

WINDOWS = [(2.0, 4.0), (5.0, 8.0)]  # 5 s measured per rank
LABEL = "NVIDIA GH200 480GB module (Grace CPU + memory + GPU)"


def _measure(rank: int, units: float = 1.0) -> list[tuple]:
    return [window(rank, 0, "measure", a, b, units, iteration=i) for i, (a, b) in enumerate(WINDOWS)]


def _module(rank: int = 0, watts: float = 600.0, host: str = "h0", bus: str = "0009:01:00.0") -> dict:
    return channel(
        rank,
        power=watts,
        energy=lambda t: watts * t,
        scope="module",
        backend="nvml",
        host=host,
        name=f"nvml:{bus}:module",
        device=bus,
        label=LABEL,
        update_period=0.1,
    )


def _gpu(rank: int = 0, watts: float = 400.0, bus: str = "0019:01:00.0") -> dict:
    return channel(
        rank,
        power=watts,
        energy=lambda t: watts * t,
        scope="gpu",
        backend="nvml",
        name=f"nvml:{bus}",
        device=bus,
        label="NVIDIA GH200 480GB",
        update_period=0.1,
    )


def test_a_module_next_to_gpu_channels_stays_out_of_the_gpu_total(tmp_path: Path) -> None:
    """Rank 0's GPU answers at GPU scope, rank 1's only at module scope."""
    f = build(
        tmp_path / "r.h5",
        [_gpu(0), _module(1)],
        _measure(0) + _measure(1),
        ranks=[rank_row(local_rank=0), rank_row(local_rank=1)],
    )
    (row,) = energy_table([f])
    assert row["energy_J"] == pytest.approx(400.0 * 5, rel=1e-6)  # GPU only, not 400 + 600 W
    assert row["energy_scope"] == "devices"
    assert row["module_energy_J"] == pytest.approx(600.0 * 5, rel=1e-6)
    assert 0 < row["module_energy_uncertainty_J"] < 0.05 * row["module_energy_J"]
    assert row["module_energy_per_unit_J"] == pytest.approx(3000.0 / 4)
    assert row["module_includes_cpu_memory"] is True
    flags = " | ".join(row["flags"])
    assert "Grace CPU + memory" in flags and "not in energy_J" in flags
    assert "leaves out 1 rank(s)" in flags
    assert "module J/unit" in format_rows([row], "markdown", columns="wide")


def test_a_module_on_the_same_rank_as_its_gpu_is_its_own_column(tmp_path: Path) -> None:
    f = build(tmp_path / "r.h5", [_gpu(0), _module(0)], _measure(0))
    (row,) = energy_table([f])
    assert row["energy_J"] == pytest.approx(2000.0, rel=1e-6)
    assert row["module_energy_J"] == pytest.approx(3000.0, rel=1e-6)
    assert not any("leaves out" in x for x in row["flags"])


def test_a_run_with_module_scope_only_reports_the_module_and_says_so(tmp_path: Path) -> None:
    f = build(tmp_path / "r.h5", [_module(0)], _measure(0))
    (row,) = energy_table([f])
    assert row["energy_J"] == pytest.approx(3000.0, rel=1e-6)
    assert row["energy_scope"] == MODULE_SCOPE
    assert row["module_energy_J"] == pytest.approx(3000.0, rel=1e-6)
    assert row["mean_power_W"] == pytest.approx(600.0, rel=1e-6)
    assert row["method"] == "counter"
    assert any("energy_J is GH200 module energy" in x for x in row["flags"])
    # the scope of energy_J says it already; no separate module column
    assert "module J/unit" not in format_rows([row], "markdown", columns="wide")


def test_a_gpu_only_run_has_no_module_figures(tmp_path: Path) -> None:
    (row,) = energy_table([build(tmp_path / "r.h5", [_gpu(0)], _measure(0))])
    assert row["module_includes_cpu_memory"] is False
    assert row["module_energy_J"] != row["module_energy_J"]  # NaN
    assert not any("module" in x for x in row["flags"])


def test_one_module_recorded_by_two_ranks_counts_once(tmp_path: Path) -> None:
    """Two ranks bound to one GH200 both record its module: one module, over the union of their windows."""
    f = build(
        tmp_path / "r.h5",
        [_module(0), _module(1)],
        _measure(0) + _measure(1),
        ranks=[rank_row(local_rank=0), rank_row(local_rank=1)],
    )
    (row,) = energy_table([f])
    assert row["module_energy_J"] == pytest.approx(3000.0, rel=1e-6)
    assert row["energy_J"] == pytest.approx(3000.0, rel=1e-6)
