"""Energy by component from real runs on the CPU: the synthetic sensor at a constant 50 W (its true
energy over any span is 50 W x the span) and an emulated H100 (real NVML backend on a stand-in)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import pytest
from helpers import run_cli, single_rank

from energy_hpc.analysis.components import REPLAY, TIME, component_tables
from energy_hpc.context import SingleComm
from energy_hpc.run import run_job
from energy_hpc.spec import parse_job

CTX = single_rank()
POWER_W = 50.0

JOB = """
[job]
name = "components"
[measure]
interval_ms = 5
idle_seconds = 0.2
warmup = 1
iterations = 2
device = "cpu"
sensors = {sensors}
[measure.sensor_options.synthetic]
amp_W = 0.0
base_W = {power}
[[case]]
task = "{task}"
model = "{model}"
source = "random"
components = "blocks"
component_seconds = {seconds}
[case.options]
{options}
"""


def _run(d: Path, sensors: str, task: str, model: str, options: str, seconds: float = 0.05) -> Path:
    text = JOB.format(
        sensors=sensors, power=POWER_W, task=task, model=model, options=options, seconds=seconds
    )
    r = run_job(parse_job(text, d / "job.toml"), d / "out", CTX, SingleComm())
    assert r.status == "complete" and r.path is not None, r.failures
    return r.path


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    d = tmp_path_factory.mktemp("components")
    return _run(d, '["synthetic"]', "text-generation", "tiny-llama", "max_new_tokens = 3")


def test_the_run_file_holds_component_windows_with_their_calls(synthetic_run: Path) -> None:
    with h5py.File(synthetic_run) as f:
        assert f.attrs["schema_version"] == "1.5"
        w = f["windows"]
        phase = [x.decode() for x in w["phase"][:]]
        stage = [x.decode() for x in w["stage"][:]]
        units, aux = w["units"][:], w["aux_units"][:]
    replays = [i for i, p in enumerate(phase) if p == "component" and stage[i] != "(capture)"]
    assert {stage[i] for i in replays} >= {"embed", "L0.attn", "L0.mlp", "L1.attn", "L1.mlp", "head"}
    # each replay window: whole rounds of the component's 3 calls per iteration (one per new token)
    for i in replays:
        assert units[i] >= aux[i] == 3 and units[i] % 3 == 0, stage[i]
    timed = [i for i, p in enumerate(phase) if p == "timed"]
    assert len(timed) == 2 * len(replays)  # every component in each of the 2 measured iterations
    assert stage.count("(capture)") == 1


def test_replayed_energy_matches_the_known_truth_and_the_parts_add_up(synthetic_run: Path) -> None:
    rows, closures = component_tables(synthetic_run)
    replay = [r for r in rows if r.method == REPLAY]
    assert replay and all(r.data == "SYNTHETIC" for r in rows)
    for r in replay:  # truth: 50 W x the window's duration, per call; within 3 of its sigmas
        truth = POWER_W * r.seconds_per_call
        assert abs(r.J_per_call - truth) <= 3 * r.J_per_call_unc, (r.component, r.J_per_call, truth)
        assert r.J_per_call == pytest.approx(truth, rel=0.02)
        assert r.J_per_call_unc >= 0 and r.J_per_iteration == pytest.approx(r.J_per_call * 3)
        assert r.J_per_unit == pytest.approx(r.J_per_iteration / 3)  # 3 tokens per iteration
    by = {c.method: c for c in closures}
    assert set(by) == {REPLAY, TIME}
    for c in by.values():
        assert c.components_J + c.residual_J == pytest.approx(c.iteration_J)
        assert math.isfinite(c.residual_J_unc) and c.residual_J_unc >= 0
        # at constant power an iteration's energy is 50 W x its duration
        assert c.iteration_J == pytest.approx(POWER_W * c.iteration_s, rel=1e-3)
    t = by[TIME]
    shares = sum(r.share for r in rows if r.method == TIME)
    assert 0 < t.components_s <= t.iteration_s and shares == pytest.approx(t.components_J / t.iteration_J)
    assert t.residual_J == pytest.approx(POWER_W * (t.iteration_s - t.components_s), rel=1e-3)


def test_the_table_command_shows_components_and_closure(synthetic_run: Path) -> None:
    r = run_cli("table", str(synthetic_run), "--components")
    assert r.returncode == 0, r.stderr
    assert "| L0.attn" in r.stdout and "replay" in r.stdout and "time" in r.stdout
    assert "residual" in r.stdout and "SYNTHETIC" in r.stdout
    j = run_cli("table", str(synthetic_run), "--components", "--format", "json")
    data = json.loads(j.stdout)
    assert {c["method"] for c in data["closure"]} == {"replay", "time"}
    assert all("J_per_call" in row for row in data["components"])


def test_a_run_without_components_says_how_to_get_them(tmp_path: Path, model_cache: Path) -> None:
    text = JOB.format(
        sensors='["synthetic"]',
        power=POWER_W,
        task="image-classification",
        model="tiny-vit",
        options="",
        seconds=1,
    ).replace('components = "blocks"\n', "")
    r = run_job(parse_job(text, tmp_path / "job.toml"), tmp_path / "out", CTX, SingleComm())
    assert r.path is not None and component_tables(r.path) == ([], [])
    cli = run_cli("table", str(r.path), "--components")
    assert cli.returncode == 2
    (line,) = cli.stderr.strip().splitlines()
    assert 'components = "blocks"' in line


def test_components_on_an_emulated_h100(tmp_path: Path, model_cache: Path) -> None:
    path = _run(tmp_path, '["emulated:h100"]', "image-classification", "tiny-vit", "", seconds=0.2)
    rows, closures = component_tables(path)
    assert {r.data for r in rows} == {"EMULATED h100"}
    assert {c.method for c in closures} == {REPLAY, TIME}
    for c in closures:
        assert math.isfinite(c.residual_J) and c.components_J + c.residual_J == pytest.approx(c.iteration_J)
    # a held 100 ms counter can show 0 J over a short replay: never below, and always with its sigma
    assert all(r.J_per_call >= 0 and math.isfinite(r.J_per_call_unc) for r in rows if r.method == REPLAY)
