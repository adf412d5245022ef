"""The "where the energy goes" figure and its section in the report, from a real run on the CPU with
components (the synthetic sensor at a constant 50 W) and one without."""

from __future__ import annotations

from pathlib import Path

import pytest
from _runs import build, case_row, channel, rank_row, window
from helpers import run_cli

from energy_hpc.analysis.components import REPLAY, TIME, component_tables
from energy_hpc.analysis.plots import component_bars, component_figure, component_group, save
from energy_hpc.analysis.report import write_report
from energy_hpc.context import RankContext, SingleComm
from energy_hpc.run import run_job
from energy_hpc.spec import parse_job

CTX = RankContext(
    rank=0,
    size=1,
    local_rank=0,
    local_size=1,
    node_index=0,
    n_nodes=1,
    hostname="h",
    launcher="single",
    visible_env="",
    visible_devices=(),
)

JOB = """
[job]
name = "figure"
[measure]
interval_ms = 5
idle_seconds = 0.2
warmup = 1
iterations = 2
device = "cpu"
sensors = ["synthetic"]
[measure.sensor_options.synthetic]
amp_W = 0.0
base_W = 50.0
[[case]]
task = "text-generation"
model = "tiny-llama"
source = "random"
components = "blocks"
component_seconds = 0.05
[case.options]
max_new_tokens = 3
"""


@pytest.fixture(scope="module")
def run_with_components(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    d = tmp_path_factory.mktemp("figure")
    r = run_job(parse_job(JOB, d / "job.toml"), d / "out", CTX, SingleComm())
    assert r.status == "complete" and r.path is not None, r.failures
    return r.path


@pytest.fixture(scope="module")
def run_without(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("plain")
    wins = [window(0, -1, "idle", 0.5, 1.5)] + [
        window(0, 0, "measure", 2.0 + 3 * i, 4.0 + 3 * i, 2, iteration=i) for i in range(3)
    ]
    return build(
        tmp / "plain.h5",
        [channel(0, power=100.0, t_end=12.0, name="c0")],
        wins,
        ranks=[rank_row()],
        cases=[case_row()],
        synthetic=True,
    )


def test_components_are_grouped_by_kind_without_layer_numbers() -> None:
    assert component_group("L0.attn") == component_group("L11.attn") == "attention"
    assert component_group("L3.mlp") == "MLP"
    assert component_group("dec.L1.xattn") == "decoder cross-attention"
    assert component_group("embed") == "embeddings"
    assert component_group("unet.down0") == component_group("unet.down2") == "UNet down"
    assert component_group("refiner.unet.up1") == "refiner UNet up"
    assert component_group("text_encoder_2") == component_group("text_encoder") == "text encoder"
    assert component_group("vae.decode") == "VAE decode"


def test_grouped_segments_add_to_the_component_rows(run_with_components: Path) -> None:
    rows, closures = component_tables(run_with_components)
    bars = component_bars(rows, closures)
    assert {b.method for b in bars} == {REPLAY, TIME}
    for b in bars:
        mine = [r for r in rows if r.method == b.method]
        (c,) = [c for c in closures if c.method == b.method]
        units = 3  # tokens per iteration
        assert sum(b.segments.values()) == pytest.approx(sum(r.J_per_unit for r in mine))
        assert sum(b.segments.values()) == pytest.approx(c.components_J / units)
        assert b.residual == pytest.approx(c.residual_J / units)
        assert b.total == pytest.approx(c.iteration_J / units)
        assert b.total_unc == pytest.approx(c.iteration_J_unc / units)
        assert sum(b.segments.values()) + b.residual == pytest.approx(b.total)
        assert b.segments["attention"] == pytest.approx(
            sum(r.J_per_unit for r in mine if r.component in ("L0.attn", "L1.attn"))
        )
        assert {"embeddings", "attention", "MLP", "head"} <= set(b.segments)
        assert not any(g.startswith("L") for g in b.segments)


def test_the_figure_is_written_for_a_run_with_components(run_with_components: Path, tmp_path: Path) -> None:
    rows, closures = component_tables(run_with_components)
    fig = component_figure(rows, closures)
    assert "SYNTHETIC" in fig.get_suptitle() and "grouped" in fig.get_supxlabel()
    png, pdf = save(fig, tmp_path / "components")
    assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000
    r = run_cli("plot", str(run_with_components), "-o", str(tmp_path / "cli"), "--kind", "components")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cli" / "components.png").stat().st_size > 1000


def test_no_figure_without_components(run_without: Path, tmp_path: Path) -> None:
    r = run_cli("plot", str(run_without), "-o", str(tmp_path / "all"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "all" / "energy_per_unit.png").exists()
    assert not (tmp_path / "all" / "components.png").exists()
    r = run_cli("plot", str(run_without), "-o", str(tmp_path / "c"), "--kind", "components")
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert 'components = "blocks"' in line


def test_the_report_has_the_section_only_with_components(
    run_with_components: Path, run_without: Path, tmp_path: Path
) -> None:
    with_index = write_report([run_with_components], tmp_path / "with")
    md = with_index.read_text()
    page = (tmp_path / "with" / "index.html").read_text()
    assert "## Where the energy goes" in md and "<h2>Where the energy goes</h2>" in page
    assert "![Energy per unit by model component](components.png)" in md
    assert (tmp_path / "with" / "components.png").stat().st_size > 1000
    assert "| L0.attn" in md and "residual" in md and "<td>L0.attn</td>" in page
    without_index = write_report([run_without], tmp_path / "without")
    assert "Where the energy goes" not in without_index.read_text()
    assert "Where the energy goes" not in (tmp_path / "without" / "index.html").read_text()
    assert not (tmp_path / "without" / "components.png").exists()
