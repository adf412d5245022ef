"""`energy-hpc sensors`: every backend listed, usable or with the reason; JSON on stdout only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from energy_hpc import cli
from energy_hpc.telemetry import pm_counters, rapl
from tests.fakes import fake_amdsmi, fake_pynvml


@pytest.fixture
def this_machine(monkeypatch, tmp_path):
    """This CI machine as it is: no NVIDIA driver, no ROCm, no Cray, no RAPL."""
    fake_pynvml.install(monkeypatch, [], library_found=False)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    monkeypatch.setattr(pm_counters, "DEFAULT_ROOT", str(tmp_path / "no-pm_counters"))
    monkeypatch.setattr(rapl, "DEFAULT_ROOT", str(tmp_path / "no-powercap"))
    for var in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)


def run_json(capsys) -> dict:
    assert cli.main(["sensors", "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # stdout is JSON and nothing else


def test_json_lists_every_backend_with_usability_and_reasons(this_machine, capsys):
    doc = run_json(capsys)
    rows = {r["backend"]: r for r in doc["backends"]}
    assert set(rows) == {"nvml", "amdsmi", "pm_counters", "rapl", "estimate", "synthetic", "emulated"}
    assert rows["emulated"]["usable"]  # a stand-in: usable anywhere, labelled EMULATED
    assert rows["estimate"]["usable"] and rows["estimate"]["channels"][0]["method"] == "estimate"
    assert not rows["nvml"]["usable"] and "libnvidia-ml.so.1 was not found" in rows["nvml"]["reason"]
    assert not rows["amdsmi"]["usable"] and "pip install /opt/rocm/share/amd_smi" in rows["amdsmi"]["reason"]
    assert not rows["pm_counters"]["usable"] and "not an HPE Cray EX node" in rows["pm_counters"]["reason"]
    assert not rows["rapl"]["usable"] and "no RAPL zones" in rows["rapl"]["reason"]


def test_json_shows_the_mi250x_package_a_rank_would_record(monkeypatch, this_machine, capsys):
    fake_amdsmi.install(monkeypatch, fake_amdsmi.mi250x_node(), "6.4")
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "2")
    rows = {r["backend"]: r for r in run_json(capsys)["backends"]}
    (ch,) = rows["amdsmi"]["channels"]
    assert ch["scope"] == "package" and ch["shared_with"] == ["0000:c9:00.0", "0000:ce:00.0"]
    assert ch["method"] == "counter"


def test_table_names_each_backend_and_why_not(this_machine, capsys):
    assert cli.main(["sensors"]) == 0
    out = capsys.readouterr().out
    for name in ("nvml", "amdsmi", "pm_counters", "rapl", "estimate", "synthetic"):
        assert name in out
    assert "why: nvml:" in out and "usable" in out


def test_real_command_on_this_machine_keeps_stdout_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "energy_hpc", "sensors", "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["backend"]: r for r in json.loads(proc.stdout)["backends"]}
    assert rows["estimate"]["usable"]
    for name in ("nvml", "amdsmi"):
        assert rows[name]["usable"] or rows[name]["reason"]  # a GPU node lists channels, others say why
