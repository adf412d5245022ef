"""Integration with a real one-node Slurm (tests/slurm_cluster.py): sbatch accepts the rendered
directives, the launcher starts 2 ranks, the warning signal reaches every rank, a sweep's status
comes from squeue and from run files.

Two kinds of test:
- "stub" tests put a stand-in for the interpreter in ENERGY_HPC_PYTHON (the modules file honours
  it): it records how each rank was started and writes a run-file-named file. They test the Slurm
  plumbing and do not depend on `energy-hpc run`.
- "run" tests run the real `energy-hpc run` inside the job and check its run file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from energy_hpc.slurm.systems import data_dir

from .conftest import cli, wait_for_job

pytestmark = pytest.mark.slurm

STUB = """\
#!{python}
# Stands in for `python -m energy_hpc run JOB -o OUT` in one rank.
import json, os, signal, sys, time
argv = sys.argv[1:]
out = argv[argv.index("-o") + 1]
rank = os.environ.get("PMI_RANK", os.environ.get("SLURM_PROCID", "?"))
keys = ("PMI_RANK", "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID", "ENERGY_HPC_SYSTEM",
        "HF_HUB_OFFLINE", "VIRTUAL_ENV", "CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS")
record = {{"argv": argv, "env": {{k: os.environ.get(k) for k in keys}}, "signals": []}}

def write():
    with open(os.path.join(out, f"rank-{{rank}}.json"), "w") as f:
        json.dump(record, f)

def on_signal(signum, frame):
    record["signals"].append(signum)
    write()
    sys.exit(0)

signal.signal(signal.SIGUSR1, on_signal)
signal.signal(signal.SIGTERM, on_signal)
write()
if os.environ.get("STUB_WAIT_FOR_SIGNAL") == "1":
    for _ in range(1200):
        time.sleep(0.1)
elif rank == "0":
    open(os.path.join(out, f"slurmtest-{{os.environ['SLURM_JOB_ID']}}.h5"), "wb").write(b"stub")
"""


@pytest.fixture
def stub(tmp_path: Path) -> dict[str, str]:
    p = tmp_path / "stub-python"
    p.write_text(STUB.format(python=sys.executable))
    p.chmod(0o755)
    return {"ENERGY_HPC_PYTHON": str(p)}


def ranks(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))}


def submit(job_file: Path, out: Path, *extra: str, env: dict | None = None) -> str:
    r = cli(
        "submit",
        str(job_file),
        "--system",
        "generic",
        "--nodes",
        "1",
        "--ranks-per-node",
        "2",
        "--time",
        "00:05:00",
        "-o",
        str(out),
        *extra,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert job_id.isdigit(), r.stdout  # stdout carries only the job id
    return job_id


def slurm_log(out: Path, job_id: str) -> str:
    logs = list(out.glob(f"slurm-*-{job_id}.out"))
    return logs[0].read_text() if logs else "(no Slurm log)"


def test_generic_mpiexec_job_starts_two_ranks_with_the_rendered_command(
    slurm, job_file, tmp_path, stub
) -> None:
    out = tmp_path / "results"
    job_id = submit(job_file, out, "--launcher", "mpiexec", env=stub)
    assert wait_for_job(job_id) == "COMPLETED", slurm_log(out, job_id)
    got = ranks(out)
    assert sorted(got) == ["rank-0", "rank-1"], slurm_log(out, job_id)
    for rec in got.values():
        assert rec["argv"] == ["-m", "energy_hpc", "run", str(job_file), "-o", str(out)]
        assert rec["env"]["PMI_SIZE"] == "2" and rec["env"]["SLURM_JOB_ID"] == job_id
        assert rec["env"]["ENERGY_HPC_SYSTEM"] == "generic" and rec["env"]["HF_HUB_OFFLINE"] == "1"
        assert rec["env"]["VIRTUAL_ENV"] == sys.prefix
    assert (out / f"slurmtest-{job_id}.h5").is_file()
    assert list(out.glob("slurmtest-*.sbatch"))  # the script sits next to the results


def test_generic_srun_pmi2_job_starts_two_ranks(slurm, job_file, tmp_path, stub) -> None:
    out = tmp_path / "results"
    job_id = submit(job_file, out, "--launcher", "srun", env=stub)
    assert wait_for_job(job_id) == "COMPLETED", slurm_log(out, job_id)
    got = ranks(out)
    assert sorted(got) == ["rank-0", "rank-1"], slurm_log(out, job_id)
    assert {r["env"]["SLURM_NTASKS"] for r in got.values()} == {"2"}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["mpiexec", "srun"])
def test_warning_signal_reaches_every_rank(launcher, slurm, job_file, tmp_path, stub) -> None:
    # A profile whose warning comes 30 s before a 1-minute limit, so the test takes about 30-60 s.
    text = (data_dir() / "generic.toml").read_text()
    profile = tmp_path / "quick.toml"
    profile.write_text(text.replace("seconds = 120", "seconds = 30"))
    out = tmp_path / "results"
    r = cli(
        "submit",
        str(job_file),
        "--system",
        str(profile),
        "--nodes",
        "1",
        "--ranks-per-node",
        "2",
        "--time",
        "1",
        "--launcher",
        launcher,
        "-o",
        str(out),
        env={**stub, "STUB_WAIT_FOR_SIGNAL": "1"},
    )
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    state = wait_for_job(job_id, timeout=150)
    got = ranks(out)
    assert sorted(got) == ["rank-0", "rank-1"], slurm_log(out, job_id)
    assert all(rec["signals"] == [10] for rec in got.values()), (got, slurm_log(out, job_id))
    assert state == "COMPLETED", slurm_log(out, job_id)  # the ranks exited 0 after flushing


def test_sweep_one_point_and_status_with_real_slurm(slurm, job_file, tmp_path, stub) -> None:
    study = tmp_path / "study"
    args = (
        "sweep",
        str(job_file),
        "--system",
        "generic",
        "--nodes",
        "1",
        "--ranks-per-node",
        "2",
        "--launcher",
        "mpiexec",
        "--time",
        "00:05:00",
        "--study",
        str(study),
    )
    r = cli(*args, env=stub)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((study / "manifest.json").read_text())
    job_id = manifest["points"][0]["attempts"][0]["job_id"]
    assert job_id in r.stdout
    assert wait_for_job(job_id) == "COMPLETED", slurm_log(study / "nodes-1", job_id)
    st = cli("status", str(study), "--json")
    assert st.returncode == 0, st.stderr
    point = json.loads(st.stdout)["points"][0]
    assert point["state"] == "done", point
    assert point["run_files"] == [f"nodes-1/slurmtest-{job_id}.h5"]
    assert point["attempts"][0]["state_source"] == "slurm"
    again = cli(*args, env=stub)  # re-running submits nothing: the point is done
    assert again.returncode == 0 and "kept" in again.stdout, again.stderr
    assert len(json.loads((study / "manifest.json").read_text())["points"][0]["attempts"]) == 1


def test_gpu_directives_meet_a_real_slurmctld_and_bind_one_gpu_per_rank(
    slurm, job_file, tmp_path, stub
) -> None:
    # generic as a 2-GPU system: #SBATCH --gpus-per-node=2 with srun --gpus-per-task=1
    # --gpu-bind=closest, as on Frontier; the test Slurm has 2 GRES GPUs (tests/slurm/cluster.py).
    text = (data_dir() / "generic.toml").read_text()
    for old, new in (
        ("gpus = 0", "gpus = 2"),
        ('gpu_vendor = "none"', 'gpu_vendor = "nvidia"'),
        ("gpus_per_rank = 0", "gpus_per_rank = 1"),
        ('visible_devices = ""', 'visible_devices = "CUDA_VISIBLE_DEVICES"'),
        ('"--mpi=pmi2"]', '"--gpus-per-task=1", "--gpu-bind=closest", "--mpi=pmi2"]'),
    ):
        assert old in text
        text = text.replace(old, new)
    profile = tmp_path / "gpus.toml"
    profile.write_text(text)
    out = tmp_path / "results"
    r = cli(
        "submit",
        str(job_file),
        "--system",
        str(profile),
        "--nodes",
        "1",
        "--ranks-per-node",
        "2",
        "--time",
        "00:05:00",
        "-o",
        str(out),
        env=stub,
    )
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    script = next(out.glob("slurmtest-*.sbatch")).read_text()
    assert "#SBATCH --gpus-per-node=2" in script and "--gpus-per-task=1" in script
    assert wait_for_job(job_id) == "COMPLETED", slurm_log(out, job_id)
    got = ranks(out)
    assert sorted(got) == ["rank-0", "rank-1"], slurm_log(out, job_id)
    seen = [rec["env"]["CUDA_VISIBLE_DEVICES"] for rec in got.values()]
    assert sorted(seen) == ["0", "1"], (got, slurm_log(out, job_id))  # one GPU each, not the same one
    assert [rec["env"]["SLURM_STEP_GPUS"] for rec in got.values()] == seen


def test_a_dry_run_script_submitted_by_hand_starts_and_makes_its_results_folder(
    slurm, job_file, tmp_path, stub
) -> None:
    out = tmp_path / "not-yet" / "results"
    r = cli(
        "submit",
        str(job_file),
        "--system",
        "generic",
        "--nodes",
        "1",
        "--ranks-per-node",
        "2",
        "--time",
        "00:05:00",
        "-o",
        str(out),
        "--dry-run",
    )
    assert r.returncode == 0, r.stderr
    assert not out.exists()
    here = tmp_path / "submit-from-here"
    here.mkdir()
    (here / "job.sbatch").write_text(r.stdout)
    sb = subprocess.run(
        ["sbatch", "--parsable", "job.sbatch"],
        cwd=here,
        capture_output=True,
        text=True,
        env={**os.environ, **stub},
    )
    assert sb.returncode == 0, sb.stderr
    job_id = sb.stdout.strip().split(";")[0]
    log = here / f"slurm-slurmtest-{job_id}.out"
    assert wait_for_job(job_id) == "COMPLETED", log.read_text() if log.exists() else "(no log)"
    assert log.is_file()  # Slurm opened its log where sbatch ran
    assert sorted(ranks(out)) == ["rank-0", "rank-1"]  # the script made the results folder
    assert (out / f"slurmtest-{job_id}.h5").is_file()


# -- with the real `energy-hpc run` -------------------------------------------------------------------


def test_submit_generic_runs_energy_hpc_run_and_writes_a_run_file(slurm, job_file, tmp_path, tiny_sd) -> None:
    out = tmp_path / "results"
    job_id = submit(job_file, out, "--launcher", "mpiexec")
    assert wait_for_job(job_id, timeout=600) == "COMPLETED", slurm_log(out, job_id)
    files = list(out.glob(f"slurmtest-{job_id}*.h5"))
    assert len(files) == 1, (list(out.iterdir()), slurm_log(out, job_id))
    import xarray as xr

    tree = xr.open_datatree(files[0], engine="h5netcdf")
    assert str(tree.attrs.get("slurm_job_id")) == job_id
    assert len(tree["ranks"].dataset["rank"]) == 2


def test_sweep_with_energy_hpc_run_then_status_shows_done(slurm, job_file, tmp_path, tiny_sd) -> None:
    study = tmp_path / "study"
    r = cli(
        "sweep",
        str(job_file),
        "--system",
        "generic",
        "--nodes",
        "1",
        "--ranks-per-node",
        "2",
        "--launcher",
        "mpiexec",
        "--time",
        "00:10:00",
        "--study",
        str(study),
    )
    assert r.returncode == 0, r.stderr
    job_id = json.loads((study / "manifest.json").read_text())["points"][0]["attempts"][0]["job_id"]
    assert wait_for_job(job_id, timeout=600) == "COMPLETED", slurm_log(study / "nodes-1", job_id)
    point = json.loads(cli("status", str(study), "--json").stdout)["points"][0]
    assert point["state"] == "done" and len(point["run_files"]) == 1, point
    table = cli("table", str(study))
    assert table.returncode == 0, table.stderr
