"""Device settings on the Slurm side: ``--gpu-freq`` (Slurm's own) and ``--gpu-power`` (Perlmutter's
plugin) rendered from the options and the system profile's data, refused where the profile lacks them,
and ``--gpu-freq`` accepted by a real slurmctld; ``submit``/``sweep`` take them (a sweep one job per
value), the script exports what Slurm applies (ENERGY_HPC_SCHEDULER_SETTINGS) and the run file keeps it
(root attribute ``scheduler_settings``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from energy_hpc.errors import SlurmError
from energy_hpc.settings import Settings, SettingsError
from energy_hpc.slurm.render import SlurmOptions, gpu_freq_for, render
from energy_hpc.slurm.sweep import Study, parse_gpu_freqs, parse_gpu_powers, run_sweep, settings_grid
from energy_hpc.slurm.systems import data_dir, load_profile

from .conftest import cli, wait_for_job
from .test_render import bash_n, directives, req
from .test_sweep import FakeSlurm

TESTS = Path(__file__).resolve().parents[1]


def _gpu_profile(tmp_path: Path) -> Path:
    """generic as a 2-GPU system (the test Slurm has 2 GRES GPUs, tests/slurm/cluster.py)."""
    text = (data_dir() / "generic.toml").read_text()
    for old, new in (
        ("gpus = 0", "gpus = 2"),
        ('gpu_vendor = "none"', 'gpu_vendor = "nvidia"'),
        ("gpus_per_rank = 0", "gpus_per_rank = 1"),
        ('visible_devices = ""', 'visible_devices = "CUDA_VISIBLE_DEVICES"'),
    ):
        assert old in text
        text = text.replace(old, new)
    p = tmp_path / "gpus.toml"
    p.write_text(text)
    return p


def test_gpu_freq_is_rendered_from_a_case_clock(job_file: Path, tmp_path: Path) -> None:
    freq = gpu_freq_for({"gpu_clock_MHz": 1200, "memory_clock_MHz": 2619, "power_cap_W": 300.0})
    assert freq == "1200,memory=2619"
    r = render(load_profile(_gpu_profile(tmp_path)), req(job_file, tmp_path, nodes=1, gpu_freq=freq))
    assert "--gpu-freq=1200,memory=2619" in directives(r.script)
    assert bash_n(r.script, tmp_path).returncode == 0


def test_gpu_power_is_rendered_on_perlmutter_only(job_file: Path, tmp_path: Path) -> None:
    r = render(load_profile("perlmutter"), req(job_file, tmp_path, nodes=1, gpu_power_W=300))
    assert "--gpu-power=300" in directives(r.script)
    with pytest.raises(SlurmError, match="has no --gpu-power"):
        render(load_profile(_gpu_profile(tmp_path)), req(job_file, tmp_path, nodes=1, gpu_power_W=300))


@pytest.mark.parametrize("freq", ["1200;rm -rf /", "fast", "1200,memory=", "0"])
def test_a_bad_gpu_freq_is_refused_in_one_line(job_file: Path, tmp_path: Path, freq: str) -> None:
    with pytest.raises(SlurmError, match="not a Slurm GPU frequency"):
        render(load_profile(_gpu_profile(tmp_path)), req(job_file, tmp_path, nodes=1, gpu_freq=freq))


def test_a_system_without_gpus_refuses_gpu_freq(job_file: Path, tmp_path: Path) -> None:
    with pytest.raises(SlurmError, match="does not take --gpu-freq"):
        render(load_profile("generic"), req(job_file, tmp_path, nodes=1, gpu_freq="1200"))


@pytest.mark.slurm
def test_a_real_slurmctld_accepts_the_rendered_gpu_freq(slurm, job_file: Path, tmp_path: Path) -> None:
    """``sbatch --test-only`` asks the controller to place the job without starting it: the directive is
    parsed by sbatch and the job with its GPU request accepted. (``--gpu-power`` is an option of
    Perlmutter's SPANK plugin, which this Slurm lacks: sbatch would call it unrecognised.)"""
    r = render(
        load_profile(_gpu_profile(tmp_path)), req(job_file, tmp_path, nodes=1, gpu_freq="1200,memory=high")
    )
    script = tmp_path / "gpu-freq.sbatch"
    script.write_text(r.script)
    sb = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert sb.returncode == 0, sb.stderr
    assert "to start at" in sb.stderr  # sbatch: Job <id> to start at <time> using <n> processors ...


# --------------------------------------------------------------------------- what the script exports


def _exported(script: str, tmp_path: Path) -> str | None:
    """ENERGY_HPC_SCHEDULER_SETTINGS as bash sets it from the script's settings block (None: unset)."""
    block = "#" + script.split("# Values rendered by energy-hpc", 1)[1].split("\nset -euo pipefail", 1)[0]
    probe = tmp_path / "probe.sh"
    probe.write_text(
        block
        + '\nif [[ -v ENERGY_HPC_SCHEDULER_SETTINGS ]]; then printf %s "$ENERGY_HPC_SCHEDULER_SETTINGS"; '
        "else printf UNSET; fi\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ENERGY_HPC_SCHEDULER_SETTINGS"}
    out = subprocess.run(["bash", str(probe)], capture_output=True, text=True, env=env, check=True).stdout
    return None if out == "UNSET" else out


def test_the_script_exports_what_slurm_applies_as_a_json_object(job_file: Path, tmp_path: Path) -> None:
    r = render(load_profile("perlmutter"), req(job_file, tmp_path, nodes=1, gpu_freq="1200", gpu_power_W=300))
    text = _exported(r.script, tmp_path)
    assert text is not None and json.loads(text) == {"gpu_freq": "1200", "gpu_power_W": 300}
    # the run reads it back as a setting, unchanged
    assert json.loads(Settings.from_env({"ENERGY_HPC_SCHEDULER_SETTINGS": text}).scheduler_settings) == {
        "gpu_freq": "1200",
        "gpu_power_W": 300,
    }


def test_a_script_without_device_settings_exports_none(job_file: Path, tmp_path: Path) -> None:
    r = render(load_profile("perlmutter"), req(job_file, tmp_path, nodes=1))
    assert _exported(r.script, tmp_path) is None


@pytest.mark.parametrize("raw", ["[1, 2]", "1200", "{gpu_freq: 1200}"])
def test_a_scheduler_setting_that_is_not_a_json_object_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"ENERGY_HPC_SCHEDULER_SETTINGS.*JSON object"):
        Settings.from_env({"ENERGY_HPC_SCHEDULER_SETTINGS": raw})


# --------------------------------------------------------------------------- sweep values


def test_gpu_freq_values_keep_their_memory_part() -> None:
    assert parse_gpu_freqs("900,1200,1980") == ["900", "1200", "1980"]
    assert parse_gpu_freqs("1200,memory=2619,900") == ["1200,memory=2619", "900"]
    assert parse_gpu_freqs("high,verbose") == ["high,verbose"]


@pytest.mark.parametrize("text", ["", "250,,300", "250W", "-5", "0"])
def test_bad_gpu_power_values_are_refused(text: str) -> None:
    with pytest.raises(SlurmError, match=r"--gpu-power .* is not a power in W"):
        parse_gpu_powers(text)


def test_a_sweep_makes_one_job_per_node_count_and_setting(job_file: Path, tmp_path: Path) -> None:
    fake = FakeSlurm()
    study = tmp_path / "study"
    actions = run_sweep(
        Study(study),
        job_file,
        "slurmtest",
        load_profile(_gpu_profile(tmp_path)),
        [1, 2],
        SlurmOptions(),
        submit=fake.submit,
        query=fake.query,
        settings=settings_grid(["900", "1200,memory=high"]),
    )
    assert [(a.nodes, a.setting) for a in actions] == [
        (1, "gpu_freq=900"),
        (1, "gpu_freq=1200,memory=high"),
        (2, "gpu_freq=900"),
        (2, "gpu_freq=1200,memory=high"),
    ]
    points = json.loads((study / "manifest.json").read_text())["points"]
    assert [(p["nodes"], p["gpu_freq"], p["dir"]) for p in points] == [
        (1, "1200,memory=high", "nodes-1-gpu-freq-1200-memory-high"),
        (1, "900", "nodes-1-gpu-freq-900"),
        (2, "1200,memory=high", "nodes-2-gpu-freq-1200-memory-high"),
        (2, "900", "nodes-2-gpu-freq-900"),
    ]
    for p in points:  # each point's script asks Slurm for its own setting and runs in its own folder
        script = (study / p["attempts"][0]["script"]).read_text()
        assert f"#SBATCH --gpu-freq={p['gpu_freq']}\n" in script
        assert f"ENERGY_HPC_OUT={study / p['dir']}\n" in script
    assert len({cwd for _, cwd in fake.submitted}) == 4


def test_a_sweep_rerun_keeps_points_of_each_setting(job_file: Path, tmp_path: Path) -> None:
    fake = FakeSlurm()
    kw = {"submit": fake.submit, "query": fake.query}
    profile = load_profile("perlmutter")
    grid = settings_grid(gpu_powers=[250, 300])
    run_sweep(Study(tmp_path / "s"), job_file, "slurmtest", profile, [1], SlurmOptions(), **kw, settings=grid)
    again = run_sweep(
        Study(tmp_path / "s"),
        job_file,
        "slurmtest",
        profile,
        [1],
        SlurmOptions(),
        **kw,
        settings=settings_grid(gpu_powers=[250, 300, 400]),
    )
    assert [(a.action, a.setting) for a in again] == [
        ("kept", "gpu_power_W=250"),
        ("kept", "gpu_power_W=300"),
        ("submitted", "gpu_power_W=400"),
    ]
    assert (tmp_path / "s" / "nodes-1-gpu-power-400W" / "attempt-1.sbatch").is_file()


def test_submit_refuses_gpu_power_on_a_system_without_it_in_one_line(job_file: Path, tmp_path: Path) -> None:
    r = cli("submit", str(job_file), "--system", "generic", "--nodes", "1", "--gpu-power", "300", "--dry-run")
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "has no --gpu-power" in r.stderr


def test_submit_takes_one_value_and_points_to_sweep_for_several(job_file: Path) -> None:
    r = cli("submit", str(job_file), "--system", "perlmutter", "-A", "m1234", "--nodes", "1",
            "--gpu-power", "250,300", "--dry-run")  # fmt: skip
    assert r.returncode == 2 and "energy-hpc sweep" in r.stderr, r.stderr


def test_sweep_dry_run_shows_one_script_per_setting(job_file: Path, tmp_path: Path) -> None:
    r = cli("sweep", str(job_file), "--system", "perlmutter", "-A", "m1234", "--nodes", "1,2",
            "--gpu-power", "250,300", "--study", str(tmp_path / "s"), "--dry-run")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (
        r.stdout.count("#SBATCH --gpu-power=250\n") == 2 and r.stdout.count("#SBATCH --gpu-power=300\n") == 2
    )
    assert r.stdout.count("ENERGY_HPC_SCHEDULER_SETTINGS='{\"gpu_power_W\":300}'") == 2


# --------------------------------------------------------------------------- the run file keeps it


def _run_sleep_job(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``energy-hpc run`` of the test kit's sleep job under real mpiexec (2 ranks)."""
    from helpers import mpiexec
    from reliability.testkit import sleep_job

    job = tmp_path / "job.toml"
    job.write_text(sleep_job(iterations=1, seconds=0.05))
    launcher = mpiexec()
    assert launcher is not None, "mpiexec not found"
    return subprocess.run(
        [launcher, "-n", "2", sys.executable, str(TESTS / "reliability" / "fault_entry.py"), "run", str(job),
         "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if k != "ENERGY_HPC_SCHEDULER_SETTINGS"}, **env},
    )  # fmt: skip


@pytest.mark.mpi
def test_the_run_file_records_what_the_scheduler_applied(tmp_path: Path) -> None:
    r = _run_sleep_job(
        tmp_path, {"ENERGY_HPC_SCHEDULER_SETTINGS": '{"gpu_power_W": 300, "gpu_freq": "1200"}'}
    )
    assert r.returncode == 0, r.stderr
    (run_file,) = (tmp_path / "out").glob("*.h5")
    with h5py.File(run_file) as f:
        assert json.loads(f.attrs["scheduler_settings"]) == {"gpu_freq": "1200", "gpu_power_W": 300}


@pytest.mark.mpi
def test_a_run_without_scheduler_settings_has_no_such_attribute(tmp_path: Path) -> None:
    r = _run_sleep_job(tmp_path, {})
    assert r.returncode == 0, r.stderr
    (run_file,) = (tmp_path / "out").glob("*.h5")
    with h5py.File(run_file) as f:
        assert "scheduler_settings" not in f.attrs


def test_a_bad_scheduler_setting_stops_the_run_before_any_work(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text("[job]\nname = 'x'\n")
    r = subprocess.run(
        [sys.executable, "-m", "energy_hpc", "run", str(job), "-o", str(tmp_path / "out")],
        capture_output=True, text=True,
        env={**os.environ, "ENERGY_HPC_SCHEDULER_SETTINGS": "1200"},
    )  # fmt: skip
    assert r.returncode == 2 and r.stdout == "" and not (tmp_path / "out").exists()
    assert len(r.stderr.strip().splitlines()) == 1 and "ENERGY_HPC_SCHEDULER_SETTINGS" in r.stderr


# --------------------------------------------------------------------------- a real Slurm

SETTINGS_STUB = """\
#!{python}
# Stands in for `python -m energy_hpc run JOB -o OUT` in one rank: records the scheduler settings it got.
import json, os, sys
out = sys.argv[sys.argv.index("-o") + 1]
keys = ("ENERGY_HPC_SCHEDULER_SETTINGS", "SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")
with open(os.path.join(out, "env.json"), "w") as f:
    json.dump({{k: os.environ.get(k) for k in keys}}, f)
open(os.path.join(out, f"slurmtest-{{os.environ['SLURM_JOB_ID']}}.h5"), "wb").write(b"stub")
"""


@pytest.fixture
def settings_stub(tmp_path: Path) -> dict[str, str]:
    p = tmp_path / "stub-python"
    p.write_text(SETTINGS_STUB.format(python=sys.executable))
    p.chmod(0o755)
    return {"ENERGY_HPC_PYTHON": str(p)}


def _log(folder: Path, job_id: str) -> str:
    logs = list(folder.glob(f"slurm-*-{job_id}.out"))
    return logs[0].read_text() if logs else "(no Slurm log)"


@pytest.mark.slurm
def test_submit_with_gpu_freq_runs_on_real_slurm_and_the_job_carries_the_setting(
    slurm, job_file: Path, tmp_path: Path, settings_stub: dict[str, str]
) -> None:
    out = tmp_path / "results"
    r = cli("submit", str(job_file), "--system", str(_gpu_profile(tmp_path)), "--nodes", "1",
            "--ranks-per-node", "1", "--time", "00:05:00", "--gpu-freq", "1200", "-o", str(out),
            env=settings_stub)  # fmt: skip
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert job_id.isdigit(), r.stdout
    assert "#SBATCH --gpu-freq=1200\n" in next(out.glob("slurmtest-*.sbatch")).read_text()
    assert wait_for_job(job_id) == "COMPLETED", _log(out, job_id)
    env = json.loads((out / "env.json").read_text())
    assert env["SLURM_JOB_ID"] == job_id
    assert json.loads(env["ENERGY_HPC_SCHEDULER_SETTINGS"]) == {"gpu_freq": "1200"}


@pytest.mark.slurm
def test_a_sweep_over_two_gpu_freqs_runs_two_jobs_in_their_own_folders_on_real_slurm(
    slurm, job_file: Path, tmp_path: Path, settings_stub: dict[str, str]
) -> None:
    study = tmp_path / "study"
    r = cli("sweep", str(job_file), "--system", str(_gpu_profile(tmp_path)), "--nodes", "1",
            "--ranks-per-node", "1", "--time", "00:05:00", "--gpu-freq", "900,1200", "--study", str(study),
            env=settings_stub)  # fmt: skip
    assert r.returncode == 0, r.stderr
    points = json.loads((study / "manifest.json").read_text())["points"]
    assert sorted((p["gpu_freq"], p["dir"]) for p in points) == [
        ("1200", "nodes-1-gpu-freq-1200"),
        ("900", "nodes-1-gpu-freq-900"),
    ]
    ids = [p["attempts"][0]["job_id"] for p in points]
    assert len(set(ids)) == 2
    for p, job_id in zip(points, ids, strict=True):
        folder = study / p["dir"]
        assert wait_for_job(job_id) == "COMPLETED", _log(folder, job_id)
        env = json.loads((folder / "env.json").read_text())
        assert env["SLURM_JOB_ID"] == job_id
        assert json.loads(env["ENERGY_HPC_SCHEDULER_SETTINGS"]) == {"gpu_freq": p["gpu_freq"]}
    st = cli("status", str(study), "--json")
    assert st.returncode == 0, st.stderr
    assert [p["state"] for p in json.loads(st.stdout)["points"]] == ["done", "done"]
    # the text view names each point's setting: two points at one node count are told apart
    text = cli("status", str(study))
    assert text.returncode == 0, text.stderr
    rows = [line.split() for line in text.stdout.splitlines()[2:]]
    assert sorted((r[1], r[2]) for r in rows) == [("gpu-freq=1200", "done"), ("gpu-freq=900", "done")]


@pytest.mark.parametrize("text", ["900,,1200", "../x", "memory=2619", "1200;rm"])
def test_bad_gpu_freq_values_are_refused_before_they_name_a_folder(text: str, tmp_path: Path) -> None:
    with pytest.raises(SlurmError, match="--gpu-freq"):
        parse_gpu_freqs(text)
