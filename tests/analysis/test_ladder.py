"""Model-size ladders: the power-law fit against rows made from a known law, and the shipped tiny ladder
run end to end, its figure's points checked against the table's rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import REPO, run_cli

from energy_hpc.analysis.ladder import (
    LadderPoint,
    fit_power_law,
    fits_by_task,
    ladder_figure,
    ladder_points,
    parameter_counts,
)
from energy_hpc.analysis.table import energy_table


def test_the_fit_recovers_a_known_power_law_exactly() -> None:
    n = np.array([1.2e9, 3.2e9, 8.0e9, 7.0e10])
    energy = 3.0e-9 * n**0.85
    fit = fit_power_law(n, energy, 0.02 * energy)
    assert fit.exponent == pytest.approx(0.85, rel=1e-12)
    assert fit.prefactor_J == pytest.approx(3.0e-9, rel=1e-9)
    # equal relative uncertainties s: sigma_b = s / sqrt(sum (ln n - mean ln n)^2)
    ln_n = np.log(n)
    assert fit.exponent_unc == pytest.approx(0.02 / math.sqrt(((ln_n - ln_n.mean()) ** 2).sum()), rel=1e-9)
    assert fit.weighted and fit.n_points == 4


def test_weights_follow_the_uncertainties() -> None:
    n = np.array([1e6, 1e7, 1e8])
    energy = 1e-3 * n**0.5
    energy[1] *= 1.5  # an outlier with a large uncertainty barely moves the line through the others
    fit = fit_power_law(n, energy, np.array([0.001, 100.0, 0.001]) * energy)
    assert fit.exponent == pytest.approx(0.5, abs=1e-6)


def test_without_uncertainties_the_fit_uses_the_scatter() -> None:
    n = np.array([1e6, 1e7, 1e8])
    fit = fit_power_law(n, 1e-3 * n**0.5, [math.nan] * 3)
    assert not fit.weighted and fit.exponent == pytest.approx(0.5, rel=1e-12) and fit.exponent_unc < 1e-9
    with pytest.raises(ValueError, match="two different parameter counts"):
        fit_power_law([1e6, 1e6], [1.0, 2.0], [0.1, 0.1])


def test_one_fit_per_task() -> None:
    pts = [
        LadderPoint(task, f"m{n}", n, k * n**b, 0.01 * k * n**b, "u", "measured")
        for task, k, b in (("a", 1.0, 1.0), ("b", 2.0, 0.5))
        for n in (10, 100, 1000)
    ]
    fits = {f.task: f for f in fits_by_task(pts)}
    assert fits["a"].exponent == pytest.approx(1.0, rel=1e-12)
    assert fits["b"].exponent == pytest.approx(0.5, rel=1e-12) and fits["b"].prefactor_J == pytest.approx(2.0)


@pytest.fixture(scope="module")
def tiny_ladder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ladder")
    ran = run_cli(
        "run", str(REPO / "jobs" / "tiny-size-ladder.toml"), "-o", str(out), "--sensors", "synthetic"
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    return Path(ran.stdout.strip().splitlines()[-1])


def test_the_tiny_ladder_records_each_models_parameter_count(tiny_ladder: Path) -> None:
    with h5py.File(tiny_ladder) as f:
        prov = [json.loads(p) for p in f["cases"]["provenance"].asstr()[()]]
        models = [json.loads(p)["model"] for p in f["cases"]["params"].asstr()[()]]
    counts = dict(zip(models, (p["n_parameters"] for p in prov), strict=True))
    # tiny-llama: 2 layers of width 64, GQA 4/2 heads, MLP 128, vocabulary 384, untied head
    h, layers, mlp, vocab, kv = 64, 2, 128, 384, 32
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * mlp + 2 * h
    assert counts["tiny-llama"] == 2 * vocab * h + layers * per_layer + h
    assert counts["tiny-llama"] < counts["tiny-llama-m"] < counts["tiny-llama-l"]


def test_the_ladder_figures_points_are_the_table_rows(tiny_ladder: Path) -> None:
    rows = energy_table([tiny_ladder])
    points = ladder_points(rows, parameter_counts([tiny_ladder]))
    assert len(points) == len(rows) == 3
    fig = ladder_figure(points, fits_by_task(points), "SYNTHETIC")
    (bars,) = fig.axes[0].containers
    x, y = bars.lines[0].get_xdata(), bars.lines[0].get_ydata()
    want = sorted(
        (parameter_counts([tiny_ladder])[json.dumps(r["case"], sort_keys=True)], r["energy_per_unit_J"])
        for r in rows
    )
    assert list(zip(x, y, strict=True)) == want
    assert "SYNTHETIC" in fig.axes[0].get_title()


def test_plot_kind_ladder_writes_the_figure_and_the_fit(tiny_ladder: Path, tmp_path: Path) -> None:
    ran = run_cli("plot", str(tiny_ladder), "--kind", "ladder", "-o", str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    written = {Path(p).name for p in ran.stdout.split()}
    assert written == {"ladder.png", "ladder.pdf", "ladder_fit.json"}
    fit = json.loads((tmp_path / "ladder_fit.json").read_text())
    assert fit["data"].startswith("SYNTHETIC") and fit["fits"][0]["task"] == "text-generation"
    assert fit["fits"][0]["n_points"] == 3 and math.isfinite(fit["fits"][0]["exponent"])
