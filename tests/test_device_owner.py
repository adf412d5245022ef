"""Which rank applies a device's power cap and clocks, under real mpiexec: of the ranks of a node bound to
one device only the lowest applies and restores; ranks with their own devices each apply their own; the
same bus id on another node is another device. (Each rank's emulated GPU is its own, so the ranks are
bound to chosen bus ids on the NVML stand-in: tests/device_owner_entry.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import mpiexec

pytestmark = pytest.mark.mpi

ENTRY = Path(__file__).resolve().parent / "device_owner_entry.py"
BUS_A = "00000000:3B:00.0"
BUS_B = "00000000:5E:00.0"


def _run(tmp_path: Path, buses: list[str], pretend_nodes: int = 0) -> list[dict]:
    launcher = mpiexec()
    if launcher is None:
        pytest.fail("mpiexec not found: install the mpich wheel (pip install energy-hpc[mpich])")
    env = {**os.environ, "ENERGY_HPC_PRETEND_NODES": str(pretend_nodes)}
    r = subprocess.run(
        [launcher, "-n", str(len(buses)), sys.executable, str(ENTRY), str(tmp_path), *buses],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return [json.loads((tmp_path / f"rank-{k}.json").read_text()) for k in range(len(buses))]


def test_two_ranks_on_one_device_only_the_lowest_applies_and_restores(tmp_path: Path) -> None:
    got = _run(tmp_path, [BUS_A, BUS_A])
    assert [g["owner"] for g in got] == [True, False]
    assert [g["during_W"] for g in got] == [300.0, 700.0]  # rank 1 set nothing on its device
    assert [g["after_W"] for g in got] == [700.0, 700.0]


def test_two_ranks_with_their_own_devices_each_apply_their_own(tmp_path: Path) -> None:
    got = _run(tmp_path, [BUS_A, BUS_B])
    assert [g["owner"] for g in got] == [True, True]
    assert [g["during_W"] for g in got] == [300.0, 300.0]
    assert [g["after_W"] for g in got] == [700.0, 700.0]


def test_the_same_bus_id_on_another_node_is_another_device(tmp_path: Path) -> None:
    # ranks 0, 1 on pretend node 0 and ranks 2, 3 on node 1, all at one bus id: one owner per node
    got = _run(tmp_path, [BUS_A, BUS_A, BUS_A, BUS_A], pretend_nodes=2)
    assert [g["node"] for g in got] == [0, 0, 1, 1]
    assert [g["owner"] for g in got] == [True, False, True, False]
    assert [g["during_W"] for g in got] == [300.0, 700.0, 300.0, 700.0]


def test_a_rank_whose_device_is_unknown_owns_what_it_sees(tmp_path: Path) -> None:
    got = _run(tmp_path, [BUS_A, "-"])
    assert [g["owner"] for g in got] == [True, True]


def _cap_job(tmp_path: Path):
    from energy_hpc.spec import parse_job

    text = (
        '[job]\nname = "caps"\n[measure]\nsensors = ["nvml"]\n'
        '[[case]]\ntask = "image-classification"\nmodel = "tiny-vit"\nsource = "random"\n'
        "power_cap_W = [300]\n"
    )
    return parse_job(text, tmp_path / "job.toml")


@pytest.mark.parametrize(("sharing", "says"), [(2, "shared with 1 other rank"), (0, "no PCI bus id or UUID")])
def test_a_setting_on_a_shared_or_unknown_device_is_refused_before_any_work(
    tmp_path: Path, sharing: int, says: str
) -> None:
    """Two ranks on one GPU would each measure their own case while the owner changes the device for the
    next; a device torch cannot name cannot be given one owner. Both stop in one line, before the
    library is even opened."""
    from energy_hpc.run import _open_control
    from energy_hpc.telemetry.base import SensorContext
    from energy_hpc.telemetry.control import ControlRefused

    with pytest.raises(ControlRefused, match=says) as e:
        _open_control(_cap_job(tmp_path), SensorContext(), True, ["nvml"], [], sharing)
    assert "\n" not in str(e.value)
