"""Settings from the environment: read once, validated, one line per bad value, overridable in tests,
handed to child processes through their environment, and documented in docs/settings.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, run_cli

from energy_hpc import settings
from energy_hpc.settings import Settings, SettingsError


def test_an_empty_environment_gives_the_defaults() -> None:
    s = Settings.from_env({"XDG_CACHE_HOME": "/x/cache"})
    assert s.mpi is None and s.sampler is None and s.keep_spills is False
    assert s.spin_s == 0.0005 and s.signal_grace_s == 10.0 and s.gather_timeout_s == 600.0
    assert s.gather_ahead == 4 and s.gather_piece_samples == 1 << 20 and s.sensor_timeout_s == 10.0
    assert s.cache == Path("/x/cache/energy-hpc") and s.venv == "" and s.local_dir is None
    assert Settings.from_env({"ENERGY_HPC_CACHE": "", "ENERGY_HPC_GATHER_AHEAD": " "}).gather_ahead == 4


def test_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            "ENERGY_HPC_MPI": "off",
            "ENERGY_HPC_KEEP_SPILLS": "Yes",
            "ENERGY_HPC_SAMPLER": "Process",
            "ENERGY_HPC_GATHER_AHEAD": "8",
            "ENERGY_HPC_SENSOR_TIMEOUT_S": "0.4",
            "ENERGY_HPC_CACHE": "/c",
            "SBATCH_ACCOUNT": "abc123",
        }
    )
    assert s.mpi is False and s.keep_spills is True and s.sampler == "process"
    assert s.gather_ahead == 8 and s.sensor_timeout_s == 0.4 and s.cache == Path("/c")
    assert s.account == "abc123"
    assert Settings.from_env({"ENERGY_HPC_MPI": "auto"}).mpi is None


@pytest.mark.parametrize(
    ("var", "raw", "allowed"),
    [
        ("ENERGY_HPC_GATHER_AHEAD", "many", "a whole number >= 1"),
        ("ENERGY_HPC_GATHER_AHEAD", "0", "a whole number >= 1"),
        ("ENERGY_HPC_SPIN_S", "-1", "a number of seconds >= 0"),
        ("ENERGY_HPC_SIGNAL_GRACE_S", "nan", "a number of seconds >= 0"),
        ("ENERGY_HPC_GATHER_TIMEOUT", "0", "a number of seconds > 0"),
        ("ENERGY_HPC_SENSOR_TIMEOUT_S", "10s", "a number of seconds > 0"),
        ("ENERGY_HPC_KEEP_SPILLS", "2", "1/yes/true/on or 0/no/false/off"),
        ("ENERGY_HPC_MPI", "maybe", "or auto/unset"),
        ("ENERGY_HPC_SAMPLER", "fork", "one of auto, process, thread"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_value_and_choices(
    var: str, raw: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as e:
        Settings.from_env({var: raw})
    msg = str(e.value)
    assert msg.startswith(f"{var}={raw!r} is not allowed") and allowed in msg and "\n" not in msg


def test_override_changes_the_current_settings_for_a_block_and_restores_them() -> None:
    before = settings.current()
    with settings.override(gather_ahead=2, keep_spills=True) as s:
        assert settings.current() is s and s.gather_ahead == 2 and s.keep_spills
        with settings.override(gather_ahead=3):
            assert settings.current().gather_ahead == 3 and settings.current().keep_spills
        assert settings.current().gather_ahead == 2
    assert settings.current() is before


def test_override_checks_names_and_values() -> None:
    with pytest.raises(TypeError, match="unknown setting 'gather_ahed'"):
        with settings.override(gather_ahed=2):
            pass
    with pytest.raises(SettingsError, match=r"gather_ahead=0 .*ENERGY_HPC_GATHER_AHEAD"):
        with settings.override(gather_ahead=0):
            pass
    with pytest.raises(SettingsError, match="sampler='fork'"):
        Settings(sampler="fork")


def test_a_child_gets_the_current_settings_through_its_environment() -> None:
    with settings.override(sensor_timeout_s=0.25, sampler="thread", keep_spills=True, local_dir=Path("/l")):
        here = settings.current()
        child = Settings.from_env({**os.environ, **here.to_env()})
    assert child == here


def test_the_session_uses_its_own_model_cache(model_cache: Path) -> None:
    assert settings.current().cache == model_cache and os.environ["ENERGY_HPC_CACHE"] == str(model_cache)


def test_nothing_reads_settings_or_changes_the_environment_on_import() -> None:
    """Importing the modules that use settings neither fails on a bad value nor sets variables."""
    code = (
        "import os; before = dict(os.environ); "
        "import energy_hpc.context, energy_hpc.gather, energy_hpc.spill, energy_hpc.run, "
        "energy_hpc.telemetry.sampler, energy_hpc.workloads, energy_hpc.workloads.models; "
        "assert dict(os.environ) == before, set(os.environ) ^ set(before)"
    )
    env = {
        **os.environ,
        "ENERGY_HPC_SPIN_S": "x",
        "ENERGY_HPC_SIGNAL_GRACE_S": "x",
        "ENERGY_HPC_GATHER_TIMEOUT": "x",
    }
    env.pop("TRANSFORMERS_VERBOSITY", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr


def test_quiet_library_defaults_are_set_before_models_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from energy_hpc.workloads import models

    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    monkeypatch.setenv("DIFFUSERS_VERBOSITY", "info")  # the user's own choice stays
    with pytest.raises(models.ModelSourceError):
        models.model_folder("local", "/nonexistent/model")
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error" and os.environ["DIFFUSERS_VERBOSITY"] == "info"


def test_the_run_command_stops_on_a_bad_setting_with_one_line(tmp_path: Path) -> None:
    r = run_cli("run", str(tmp_path / "job.toml"), env={"ENERGY_HPC_GATHER_AHEAD": "lots"})
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "energy-hpc: error: ENERGY_HPC_GATHER_AHEAD='lots' is not allowed: use a whole number >= 1"
    )


def test_every_setting_is_documented() -> None:
    doc = (REPO / "docs" / "settings.md").read_text()
    for var in Settings.variables().values():
        assert f"`{var}`" in doc, var
