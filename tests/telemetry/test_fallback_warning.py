"""The warning ``auto`` gives when nothing measurable is on a node: one short first line, then what
the fallback is, why each sensor is not there and what to do, indented (not one 600-character line)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from energy_hpc import logs
from energy_hpc.telemetry import registry
from energy_hpc.telemetry.base import SensorContext

MODULE = """
from energy_hpc.errors import SensorUnavailable


def open_sensor(ctx):
    raise SensorUnavailable(
        "{name}: " + "this node has no such sensor, and here is a long reason why, " * 3 + "the end"
    )
"""


def _gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[registry.Backend]:
    """Every device and node backend of ``auto`` as a row whose sensor is not there, on any machine."""
    rows = []
    for name in (*registry.device_backends(), *registry.node_backends()):
        (tmp_path / f"gone_{name}.py").write_text(MODULE.format(name=name))
        rows.append(dataclasses.replace(registry.backends()[name], module=f"gone_{name}"))
    monkeypatch.syspath_prepend(str(tmp_path))
    return rows


def test_no_measurable_sensor_is_a_short_line_with_the_details_indented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _gone(tmp_path, monkeypatch)
    logs.setup_logging()
    capsys.readouterr()
    with registry.registered(*rows):
        opened = registry.open_sensors(["auto"], SensorContext(hostname="node7", node_leader=True))
    for s in opened.sensors:
        s.close()
    assert [s.backend for s in opened.sensors] == ["estimate"]
    lines = capsys.readouterr().err.splitlines()
    assert (
        lines[0] == "energy-hpc WARNING: no measurable sensor on node7; falling back to the CPU-time ESTIMATE"
    )
    assert all(line.startswith("    ") and len(line) <= 100 for line in lines[1:]), lines
    text = " ".join(line.strip() for line in lines[1:])
    assert "a model, not a measurement" in text
    for row in rows:
        reason = (
            f"{row.name}: " + "this node has no such sensor, and here is a long reason why, " * 3 + "the end"
        )
        assert reason.replace("  ", " ") in text  # every reason in full
    assert "energy-hpc sensors" in text and 'sensors = ["estimate"]' in text


def test_a_rank_that_is_not_the_node_leader_does_not_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _gone(tmp_path, monkeypatch)
    logs.setup_logging()
    capsys.readouterr()
    with registry.registered(*rows):
        opened = registry.open_sensors(["auto"], SensorContext(hostname="node7", node_leader=False))
    for s in opened.sensors:
        s.close()
    assert "no measurable sensor" not in capsys.readouterr().err
