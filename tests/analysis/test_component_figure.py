"""The "where the energy goes" figure and its section in the report, from a real run on the CPU with
components (the synthetic sensor at a constant 50 W) and one without."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from _runs import build, case_row, channel, rank_row, window
from helpers import REPO, run_cli, single_rank

from energy_hpc.analysis.components import REPLAY, TIME, component_tables
from energy_hpc.analysis.plots import (
    component_bars,
    component_figure,
    component_group,
    layer_type,
    save,
    structure_bars,
    structures_figure,
)
from energy_hpc.analysis.report import write_report
from energy_hpc.context import SingleComm
from energy_hpc.run import run_job
from energy_hpc.spec import parse_job

CTX = single_rank()

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


# ------------------------------------------------------------------ model structures side by side


@pytest.fixture(scope="module")
def structures_run(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """jobs/tiny-model-structures.toml end to end through the CLI (real inference on the CPU) on an
    emulated H100: a UNet, a transformer denoiser, a decoder-only LLM, an encoder-decoder and a ViT,
    components = "detail"."""
    out = tmp_path_factory.mktemp("structures")
    r = run_cli(
        "run",
        str(REPO / "jobs" / "tiny-model-structures.toml"),
        "-o",
        str(out),
        "--sensors",
        "emulated:h100",
        env={"ENERGY_HPC_CACHE": os.environ["ENERGY_HPC_CACHE"]},
    )
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip())


def test_layer_types_read_the_same_across_architectures() -> None:
    assert {layer_type(n) for n in ("L3.attn", "dec.L0.attn@decode", "unet.down1.attn", "enc.L1.attn")} == {
        "self-attention"
    }
    assert {layer_type(n) for n in ("L1.mlp@prefill", "unet.up0.ff", "refiner.unet.mid.ff")} == {
        "MLP / feed-forward"
    }
    assert layer_type("dec.L1.xattn") == layer_type("unet.mid.xattn") == "cross-attention"
    assert layer_type("unet.down0.resnet") == layer_type("unet.up0.conv") == "resnet / conv"
    assert layer_type("text_encoder_2") == "text encoder" and layer_type("vae.decode") == "VAE decode"
    assert layer_type("unet.down1") == "UNet blocks (whole)"  # components = "blocks"
    assert layer_type("embed") == layer_type("rotary_emb") == layer_type("transformer.embed") == "embeddings"


def test_the_structures_figure_draws_the_component_rows_and_the_residual_of_each_case(
    structures_run: Path,
) -> None:
    rows, closures = component_tables(structures_run)
    assert {r.data for r in rows} == {"EMULATED h100"}
    # the closure residual is reported per case and method, with its uncertainty
    assert {(c.case, c.method) for c in closures} == {(i, m) for i in range(5) for m in (REPLAY, TIME)}
    # the two denoisers' iterations (0.1 s and more) always resolve; the toy LLM, T5 and ViT iterations
    # last a few ms, which a 100 ms sensor can miss
    assert all(math.isfinite(c.residual_J) and c.residual_J_unc >= 0 for c in closures if c.case < 2)
    fig = structures_figure(rows, closures)
    drawn = {p.get_gid(): p.get_width() for ax in fig.axes for p in ax.patches if p.get_gid()}
    bars = structure_bars(rows, closures)
    assert len(bars) == 10
    for b in bars:
        (c,) = [c for c in closures if (c.case, c.method) == (b.case, b.method)]
        if not (c.iteration_J > 0 and math.isfinite(c.residual_J)):  # not resolved: said, not drawn
            assert b.case >= 2 and not b.shares
            assert not any(k.startswith(f"{b.method}|{b.label}|") for k in drawn)
            continue
        mine = [r for r in rows if (r.case, r.method) == (b.case, b.method)]
        want: dict[str, float] = {}
        for r in mine:
            want[layer_type(r.component)] = want.get(layer_type(r.component), 0.0) + r.share
        got = {k.split("|")[2]: v / 100 for k, v in drawn.items() if k.startswith(f"{b.method}|{b.label}|")}
        assert got.pop("residual") == pytest.approx(c.residual_J / c.iteration_J)
        assert got == pytest.approx(want)
        # parts + residual = the measured iteration
        assert sum(got.values()) + c.residual_J / c.iteration_J == pytest.approx(1.0)
    types = {k.split("|")[2] for k in drawn}
    assert {
        "self-attention",
        "cross-attention",
        "MLP / feed-forward",
        "resnet / conv",
        "text encoder",
    } <= types
    assert sum(bool(b.shares) for b in bars) >= 4


def test_every_panel_draws_a_case_at_its_own_row(structures_run: Path) -> None:
    """The panels share their rows: a denoiser told by step only in the time method (its steps are timed,
    not replayed) has a "by step" row in both panels, and its replay bar must sit at the case's row, not
    at the "by step" row below it (it did, when each panel counted its own rows over a shared y axis)."""
    rows, closures = component_tables(structures_run)
    fig = structures_figure(rows, closures)
    assert any(b.steps for b in structure_bars(rows, closures) if b.method == TIME)
    fig.canvas.draw()
    # the panels share their y axis: the first panel's tick labels name the rows of all
    first = fig.axes[0]
    at = {t.get_text(): y for t, y in zip(first.get_yticklabels(), first.get_yticks(), strict=True)}
    for ax in fig.axes:
        placed = 0
        for patch in ax.patches:
            gid = patch.get_gid() or ""
            if gid.count("|") != 2:
                continue
            label = gid.split("|")[1]
            assert patch.get_y() + patch.get_height() / 2 == pytest.approx(at[label]), gid
            placed += 1
        assert placed > 0


def test_plot_kind_structures_writes_the_figure_and_the_table_prints_each_closure(
    structures_run: Path, tmp_path: Path
) -> None:
    r = run_cli("plot", str(structures_run), "--kind", "structures", "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "structures.png").stat().st_size > 0 and (tmp_path / "structures.pdf").exists()
    t = run_cli("table", str(structures_run), "--components")
    lines = [x for x in t.stdout.splitlines() if " residual " in x and " = components " in x]
    assert len(lines) == 10  # 5 cases x 2 methods
    assert "L0.attn (prefill)" in t.stdout and "L0.attn (decode)" in t.stdout


# ------------------------------------------------------------------ steps: prefill and decode apart

DETAIL_JOB = (
    JOB.replace('components = "blocks"', 'components = "detail"')
    + """
[[case]]
task = "translation"
model = "tiny-t5"
source = "random"
components = "detail"
component_seconds = 0.05
[case.options]
max_new_tokens = 3
ignore_eos = true
"""
)


@pytest.fixture(scope="module")
def run_with_steps(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """A decoder-only LLM and an encoder-decoder with components = "detail": their decoders' calls told
    by generation step (real inference on the CPU, the synthetic sensor at a constant 50 W)."""
    d = tmp_path_factory.mktemp("steps")
    r = run_job(parse_job(DETAIL_JOB, d / "job.toml"), d / "out", CTX, SingleComm())
    assert r.status == "complete" and r.path is not None, r.failures
    return r.path


def test_a_case_told_by_step_is_stacked_step_by_step_and_adds_to_its_rows(run_with_steps: Path) -> None:
    rows, closures = component_tables(run_with_steps)
    # the translation case (1) has its decoder by step; its encoder runs outside every step
    assert {r.step for r in rows if r.case == 1} == {"", "prefill", "decode"}
    assert {r.component for r in rows if r.case == 1 and r.step == ""} >= {"enc.L0.attn", "enc.L0.mlp"}
    bars = component_bars(rows, closures)
    assert len(bars) == 4  # 2 cases x 2 methods
    for b in bars:
        case = 0 if "tiny-llama" in b.label else 1
        mine = [r for r in rows if (r.case, r.method) == (case, b.method)]
        assert list(b.steps) == (["prefill", "decode"] if case == 0 else ["", "prefill", "decode"])
        for step, segs in b.steps.items():
            assert sum(segs.values()) == pytest.approx(sum(r.J_per_unit for r in mine if r.step == step))
        # summed over the steps, each group is the segment of the bar without steps
        for g, v in b.segments.items():
            assert sum(s.get(g, 0.0) for s in b.steps.values()) == pytest.approx(v)
        assert b.steps["decode"]["head"] == pytest.approx(
            sum(r.J_per_unit for r in mine if r.component == "head" and r.step == "decode")
        )


def test_the_component_figure_draws_each_steps_block_as_the_rows_say(
    run_with_steps: Path, tmp_path: Path
) -> None:
    rows, closures = component_tables(run_with_steps)
    fig = component_figure(rows, closures)
    drawn: dict[str, float] = {}
    for ax in fig.axes:
        for p in ax.patches:
            if p.get_gid():
                drawn[p.get_gid()] = drawn.get(p.get_gid(), 0.0) + p.get_height()
    for b in component_bars(rows, closures):
        for step, segs in b.steps.items():
            for g, v in segs.items():
                assert drawn[f"{b.method}|{b.label}|{step}|{g}"] == pytest.approx(v)
        parts = sum(v for k, v in drawn.items() if k.startswith(f"{b.method}|{b.label}|"))
        assert parts == pytest.approx(b.total)  # the blocks and the residual make the measured iteration
    names = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"prefill", "decode", "outside steps"} <= names
    assert "prefill, decode" in fig.get_supxlabel()
    png, _ = save(fig, tmp_path / "steps")
    assert png.stat().st_size > 1000


def test_the_structures_figure_adds_a_by_step_bar_for_a_case_told_by_step(run_with_steps: Path) -> None:
    rows, closures = component_tables(run_with_steps)
    fig = structures_figure(rows, closures)
    drawn = {p.get_gid(): p.get_width() for ax in fig.axes for p in ax.patches if p.get_gid()}
    labels = {t.get_text() for ax in fig.axes for t in ax.get_yticklabels()}
    for b in structure_bars(rows, closures):
        assert f"{b.label}, by step" in labels
        (c,) = [c for c in closures if (c.case, c.method) == (b.case, b.method)]
        mine = [r for r in rows if (r.case, r.method) == (b.case, b.method)]
        prefix = f"{b.method}|{b.label}, by step|"
        got = {k[len(prefix) :]: v / 100 for k, v in drawn.items() if k.startswith(prefix)}
        want: dict[str, float] = {}
        for r in mine:
            want[r.step] = want.get(r.step, 0.0) + r.share
        assert got == pytest.approx(want)
        # the same components as the layer-type bar above it: both add up with the residual to 100 %
        assert sum(got.values()) == pytest.approx(sum(b.shares.values()))
        assert sum(got.values()) + c.residual_J / c.iteration_J == pytest.approx(1.0)
