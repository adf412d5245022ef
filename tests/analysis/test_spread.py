"""Spread between iterations apart from measurement uncertainty (issue 11, section 4): the standard error
of the mean over iterations (pooled across repeats), the measurement uncertainty, and both in
quadrature, each in its own column; checked against the synthetic sensor's exact integral."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from _runs import build, channel, rank_row, window

from energy_hpc.analysis.table import energy_table, format_rows
from energy_hpc.telemetry.synthetic import SyntheticSensor, synthetic_energy

DT = 0.01
TAU = 0.0  # the counter read is the exact integral at each sample (a held counter's staleness bias is
#           the business of the sensor model and its calibration tests, not of the spread)
BASE, AMP, PERIOD, STEP = 50.0, 400.0, 3.7, 30.0
UNITS = 2.0  # per rank and iteration


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _sampled(t_end: float, n_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real SyntheticSensor read every DT s (its clock driven by the test): times, power and counter
    per channel."""
    clock = _Clock()
    sensor = SyntheticSensor(
        n_channels=n_channels,
        base_W=BASE,
        amp_W=AMP,
        period_s=PERIOD,
        step_W=STEP,
        update_period_s=TAU,
        clock=clock,
    )
    t = np.arange(0.0, t_end, DT)
    p, e = np.zeros((n_channels, len(t))), np.zeros((n_channels, len(t)))
    for k, tk in enumerate(t):
        clock.t = tk
        r = sensor.read()
        p[:, k], e[:, k] = r.power, r.energy
    return t, p, e


def true_J(j: int, a: float, b: float) -> float:
    """Channel j's exact energy over [a, b] (the sensor's closed form)."""
    return synthetic_energy(b, BASE + j * STEP, AMP, PERIOD) - synthetic_energy(
        a, BASE + j * STEP, AMP, PERIOD
    )


def _run(
    path: Path,
    spans: list[tuple[float, float]],
    n_ranks: int = 2,
    epoch: float = 1.7e9,
    units: list[float] | None = None,
) -> Path:
    """``n_ranks`` ranks, each with its own synthetic GPU, measuring the same iterations."""
    t_end = max(b for _, b in spans) + 1.0
    t, p, e = _sampled(t_end, n_ranks)
    chans, wins = [], []
    for r in range(n_ranks):
        ch = channel(
            r,
            t_end=t_end,
            dt=DT,
            name=f"synthetic:gpu{r}",
            device=f"gpu{r}",
            backend="synthetic",
            method="synthetic",
            update_period=TAU,
        )
        ch.update(time=t, power=p[r], energy=e[r])
        chans.append(ch)
        wins += [
            window(r, 0, "measure", a, b, (units or [UNITS] * len(spans))[i], iteration=i)
            for i, (a, b) in enumerate(spans)
        ]
    f = build(path, chans, wins, ranks=[rank_row(local_rank=r) for r in range(n_ranks)], synthetic=True)
    with h5py.File(f, "a") as h:
        h.attrs["epoch_unix"] = epoch
    return f


def _spans(n: int, first: float = 2.0) -> list[tuple[float, float]]:
    # iterations of unequal length and phase against the 3.7 s ripple: their energies differ a lot
    return [(first + 1.9 * i, first + 1.9 * i + 0.8 + 0.07 * (i % 3)) for i in range(n)]


def _true_per_unit(spans: list[tuple[float, float]], n_ranks: int = 2) -> np.ndarray:
    return np.array([sum(true_J(r, a, b) for r in range(n_ranks)) / (UNITS * n_ranks) for a, b in spans])


def test_sem_column_is_the_standard_error_of_the_true_per_iteration_energies(tmp_path: Path) -> None:
    spans = _spans(10)
    (row,) = energy_table([_run(tmp_path / "r.h5", spans)])
    x = _true_per_unit(spans)
    n = len(x)
    sem_true = x.std(ddof=1) / math.sqrt(n)
    meas = row["energy_per_unit_meas_unc_J"]
    assert row["n_iterations"] == n
    assert meas == row["energy_per_unit_uncertainty_J"]  # the kept name still means the measurement
    assert sem_true > 10 * meas  # the spread between iterations is what dominates here
    # per-iteration errors within the measurement uncertainty move the SEM by at most ~ meas*sqrt(n/(n-1))
    assert abs(row["energy_per_unit_sem_J"] - sem_true) < 3 * meas * math.sqrt(n / (n - 1))
    assert row["energy_per_unit_J"] == pytest.approx(x.mean(), abs=3 * meas)
    assert row["energy_per_unit_unc_J"] == pytest.approx(
        math.hypot(meas, row["energy_per_unit_sem_J"]), rel=1e-12
    )
    assert not any("iteration(s) with data" in f for f in row["flags"])


def test_unequal_units_use_the_standard_error_of_the_ratio(tmp_path: Path) -> None:
    spans = _spans(8)
    units = [1.0, 2.0, 3.0, 2.0, 1.0, 4.0, 2.0, 3.0]
    (row,) = energy_table([_run(tmp_path / "r.h5", spans, n_ranks=1, units=units)])
    E = np.array([true_J(0, a, b) for a, b in spans])
    u = np.array(units)
    R = E.sum() / u.sum()
    se = math.sqrt(((E - R * u) ** 2).sum() / (len(E) * (len(E) - 1))) / u.mean()
    assert row["energy_per_unit_J"] == pytest.approx(R, abs=3 * row["energy_per_unit_meas_unc_J"])
    assert abs(row["energy_per_unit_sem_J"] - se) < 3 * row["energy_per_unit_meas_unc_J"] * math.sqrt(8 / 7)


def test_one_iteration_has_no_sem_and_says_so(tmp_path: Path) -> None:
    (row,) = energy_table([_run(tmp_path / "one.h5", _spans(1))])
    assert row["n_iterations"] == 1
    assert math.isnan(row["energy_per_unit_sem_J"]) and math.isnan(row["energy_per_unit_unc_J"])
    assert row["energy_per_unit_meas_unc_J"] > 0
    assert any("SEM undefined" in f for f in row["flags"])
    md = format_rows([row], "markdown", columns="wide")
    header = next(line for line in md.splitlines() if line.startswith("| "))
    cells = [
        c.strip()
        for c in next(
            line for line in md.splitlines()[md.splitlines().index(header) + 2 :] if line.startswith("| ")
        )
        .strip("|")
        .split("|")
    ]
    names = [h.strip() for h in header.strip("|").split("|")]
    assert cells[names.index("±SEM J/unit")] == "-" and cells[names.index("±total J/unit")] == "-"  # never 0
    assert json.loads(format_rows([row], "json"))[0]["energy_per_unit_sem_J"] is None


def test_repeats_across_files_pool_their_iterations(tmp_path: Path) -> None:
    a_spans, b_spans = _spans(5), _spans(6, first=2.6)
    a = _run(tmp_path / "a.h5", a_spans, epoch=1.7e9)
    b = _run(tmp_path / "b.h5", b_spans, epoch=1.7e9 + 600)  # another run of the job: a repeat
    (row,) = energy_table([a, b])
    x = np.concatenate([_true_per_unit(a_spans), _true_per_unit(b_spans)])
    sem_true = x.std(ddof=1) / math.sqrt(len(x))
    assert row["n_files"] == 2 and row["n_iterations"] == 11
    assert abs(row["energy_per_unit_sem_J"] - sem_true) < 3 * row["energy_per_unit_meas_unc_J"] * math.sqrt(
        11 / 10
    )
    (ra,) = energy_table([a])
    assert ra["n_iterations"] == 5 and ra["energy_per_unit_sem_J"] != pytest.approx(
        row["energy_per_unit_sem_J"]
    )


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json", "latex"])
def test_every_format_names_each_uncertainty(tmp_path: Path, fmt: str) -> None:
    out = format_rows(energy_table([_run(tmp_path / "r.h5", _spans(4))]), fmt, columns="wide")
    if fmt == "json":
        (row,) = json.loads(out)
        for k in (
            "energy_per_unit_meas_unc_J",
            "energy_per_unit_sem_J",
            "energy_per_unit_unc_J",
            "n_iterations",
        ):
            assert row[k] is not None, k
    elif fmt == "csv":
        header = next(csv.reader(io.StringIO(out)))
        assert {
            "energy_per_unit_meas_unc_J",
            "energy_per_unit_sem_J",
            "energy_per_unit_unc_J",
            "n_iterations",
        } <= set(header)
    else:
        pm = "$\\pm$" if fmt == "latex" else "±"
        for h in (f"{pm}meas J/unit", f"{pm}SEM J/unit", f"{pm}total J/unit", "n iter"):
            assert h in out, h
        assert "standard error of the mean" in out and "in quadrature" in out


def test_the_cpu_time_estimate_carries_its_watts_per_core_assumption(tmp_path: Path) -> None:
    ch = channel(
        0,
        power=20.0,
        method="estimate",
        backend="estimate",
        update_period=0.01,
        energy_resolution=0.1,
        name="estimate:cpu",
        scope="cpu",
    )
    wins = [window(0, -1, "idle", 0.5, 1.5)] + [
        window(0, 0, "measure", 2.0 + 2 * i, 3.0 + 2 * i, 1, iteration=i) for i in range(4)
    ]
    (row,) = energy_table([build(tmp_path / "est.h5", [ch], wins)])
    assert row["energy_J"] == pytest.approx(80.0, rel=1e-6)
    # 1 sigma of half the figure, systematic: linear over the windows, not sqrt(4) smaller
    assert row["energy_uncertainty_J"] == pytest.approx(40.0, rel=1e-3)
    assert row["energy_per_unit_meas_unc_J"] == pytest.approx(10.0, rel=1e-3)
    assert any("watts-per-core" in f for f in row["flags"])


def test_node_level_rows_take_the_spread_from_the_node_windows(tmp_path: Path) -> None:
    """A RAPL-only run (node-level CPU + memory): one sample per node window; a window that spans two
    ranks' drifting iterations is one sample, not two."""
    levels = [
        (0.0, 40.0),
        (2.0, 80.0),
        (3.5, 40.0),
        (4.0, 120.0),
        (5.5, 40.0),
        (6.0, 95.0),
        (7.5, 40.0),
        (8.0, 60.0),
        (9.5, 40.0),
    ]

    def power(t: np.ndarray) -> np.ndarray:
        p = np.zeros_like(t)
        for t0, watts in levels:
            p[t >= t0] = watts
        return p

    chans = [
        channel(0, power=power, scope="cpu", node_level=1, name="rapl:pkg", device="pkg0", backend="rapl")
    ]
    spans = [(2.0, 3.0), (4.0, 5.0), (6.0, 7.0), (8.0, 9.0)]
    wins = [window(0, 0, "measure", a, b, 1, iteration=i) for i, (a, b) in enumerate(spans)]
    (row,) = energy_table([build(tmp_path / "rapl.h5", chans, wins)])
    x = np.array([80.0, 120.0, 95.0, 60.0])  # J per unit: 1 s at the level, 1 unit each
    assert row["energy_scope"] == "cpu+memory (node-level)" and row["n_iterations"] == 4
    assert row["energy_per_unit_sem_J"] == pytest.approx(x.std(ddof=1) / 2, rel=1e-3)
    # two nodes; on node 1 rank 2 drifts: its iteration 1 overlaps rank 1's iteration 2, so node 1's
    # window from 4 s to 7 s holds iterations 1 and 2 of node 1, and with them node 0's are one sample
    chans = [
        chans[0],
        channel(
            1,
            power=power,
            scope="cpu",
            node_level=1,
            name="rapl:pkg",
            device="pkg0",
            backend="rapl",
            node=1,
            host="h1",
        ),
    ]
    ranks = [rank_row(), rank_row(host="h1", node=1), rank_row(host="h1", node=1, local_rank=1)]
    drift = [(2.0, 3.0), (4.5, 6.5), (6.6, 7.0), (8.0, 9.0)]
    wins = [window(r, 0, "measure", a, b, 1, iteration=i) for r in (0, 1) for i, (a, b) in enumerate(spans)]
    wins += [window(2, 0, "measure", a, b, 1, iteration=i) for i, (a, b) in enumerate(drift)]
    (row,) = energy_table([build(tmp_path / "drift.h5", chans, wins, ranks=ranks, n_nodes=2)])
    assert row["units"] == 12 and row["n_iterations"] == 3
