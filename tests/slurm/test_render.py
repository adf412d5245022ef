"""Rendering: the profiles' directives and launcher lines, and scripts bash accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from energy_hpc.errors import SlurmError, SystemProfileError
from energy_hpc.slurm.render import Request, SlurmOptions, render
from energy_hpc.slurm.systems import builtin_profiles, data_dir, load_profile
from energy_hpc.slurm.values import check_time, slurm_job_name

from .conftest import cli


def req(job_file: Path, tmp_path: Path, nodes: int = 2, **options) -> Request:
    return Request(
        job_file=job_file,
        job_name="slurmtest",
        results_dir=tmp_path / "results",
        nodes=nodes,
        options=SlurmOptions(command=("energy-hpc", "submit", str(job_file)), venv="/opt/venv", **options),
    )


def directives(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def launcher(script: str) -> str:
    line = next(ln for ln in script.splitlines() if ln.startswith("ENERGY_HPC_LAUNCHER=("))
    return line.removeprefix("ENERGY_HPC_LAUNCHER=(").removesuffix(")")


def bash_n(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    p = tmp_path / "check.sbatch"
    p.write_text(script)
    return subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)


def test_builtin_profiles_are_frontier_perlmutter_generic() -> None:
    assert builtin_profiles() == ["frontier", "generic", "perlmutter"]


@pytest.mark.parametrize("system", builtin_profiles())
def test_every_builtin_profile_renders_a_script_bash_accepts(system, job_file, tmp_path) -> None:
    script = render(load_profile(system), req(job_file, tmp_path, account="abc123_g")).script
    r = bash_n(script, tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("system", builtin_profiles())
def test_all_directives_come_before_the_first_command(system, job_file, tmp_path) -> None:
    # sbatch stops reading #SBATCH lines at the first line that is not a comment or blank.
    lines = render(load_profile(system), req(job_file, tmp_path, account="abc123_g")).script.splitlines()
    first_command = next(i for i, ln in enumerate(lines[1:], 1) if ln.strip() and not ln.startswith("#"))
    last_directive = max(i for i, ln in enumerate(lines) if ln.startswith("#SBATCH"))
    assert last_directive < first_command


def test_frontier_directives(job_file, tmp_path) -> None:
    d = directives(render(load_profile("frontier"), req(job_file, tmp_path, account="ABC123")).script)
    for want in (
        "--account=ABC123",
        "--partition=batch",
        "--nodes=2",
        "--ntasks-per-node=8",
        "--cpus-per-task=7",
        "--gpus-per-node=8",
        "--time=01:00:00",
        "--job-name=slurmtest",
    ):
        assert want in d
    assert not any(x.startswith(("--qos", "--constraint", "--core-spec")) for x in d)


def test_frontier_launcher_is_one_rank_per_gcd_bound_closest(job_file, tmp_path) -> None:
    script = render(load_profile("frontier"), req(job_file, tmp_path, nodes=3, account="ABC123")).script
    assert launcher(script) == ("srun -N 3 -n 24 -c 7 --gpus-per-task=1 --gpu-bind=closest --mpi=cray_shasta")


def test_frontier_signal_goes_to_the_job_steps_not_the_batch_shell(job_file, tmp_path) -> None:
    script = render(load_profile("frontier"), req(job_file, tmp_path, account="ABC123")).script
    assert "--signal=USR1@120" in directives(script)
    assert "ENERGY_HPC_FORWARD_SIGNALS=0" in script


def test_frontier_needs_an_account(job_file, tmp_path) -> None:
    with pytest.raises(SlurmError, match="--account"):
        render(load_profile("frontier"), req(job_file, tmp_path))


def test_frontier_optional_nvme_and_all_cores(job_file, tmp_path) -> None:
    script = render(
        load_profile("frontier"), req(job_file, tmp_path, account="ABC123", enable=("nvme", "all-cores"))
    ).script
    d = directives(script)
    assert "--constraint=nvme" in d and "--core-spec=0" in d
    assert 'export ENERGY_HPC_LOCAL_DIR="/mnt/bb/$USER"' in script


def test_frontier_unknown_optional_setting_is_refused(job_file, tmp_path) -> None:
    with pytest.raises(SlurmError, match="nvme"):
        render(load_profile("frontier"), req(job_file, tmp_path, account="A1", enable=("nvmee",)))


def test_frontier_script_makes_node_local_miopen_caches(job_file, tmp_path) -> None:
    script = render(load_profile("frontier"), req(job_file, tmp_path, account="ABC123")).script
    assert 'mkdir -p "$MIOPEN_USER_DB_PATH"' in script
    modules = Path(
        next(ln for ln in script.splitlines() if ln.startswith("ENERGY_HPC_MODULES=")).split("=", 1)[1]
    ).read_text()
    assert 'MIOPEN_USER_DB_PATH="/tmp/' in modules and "MIOPEN_CUSTOM_CACHE_DIR" in modules
    assert "HF_HUB_OFFLINE=1" in modules and "MPICH_GPU_SUPPORT_ENABLED" in modules


def test_perlmutter_directives_and_launcher(job_file, tmp_path) -> None:
    script = render(load_profile("perlmutter"), req(job_file, tmp_path, account="m1234_g")).script
    d = directives(script)
    for want in (
        "--constraint=gpu",
        "--qos=regular",
        "--ntasks-per-node=4",
        "--cpus-per-task=32",
        "--gpus-per-node=4",
        "--account=m1234_g",
        "--signal=USR1@120",
    ):
        assert want in d
    assert not any(x.startswith("--partition") for x in d)
    assert launcher(script) == "srun -N 2 -n 8 -c 32 --gpus-per-task=1 --gpu-bind=none --mpi=cray_shasta"


def test_perlmutter_qos_can_be_overridden(job_file, tmp_path) -> None:
    d = directives(render(load_profile("perlmutter"), req(job_file, tmp_path, qos="debug")).script)
    assert "--qos=debug" in d and "--qos=regular" not in d


def test_generic_mpiexec_signals_the_batch_shell_which_forwards(job_file, tmp_path) -> None:
    script = render(
        load_profile("generic"), req(job_file, tmp_path, nodes=1, launcher="mpiexec", ranks_per_node=2)
    ).script
    assert "--signal=B:USR1@120" in directives(script)
    assert "ENERGY_HPC_FORWARD_SIGNALS=1" in script
    assert launcher(script) == "mpiexec -n 2"
    assert "--gpus-per-node" not in script


def test_generic_srun_uses_pmi2(job_file, tmp_path) -> None:
    script = render(load_profile("generic"), req(job_file, tmp_path, ranks_per_node=2)).script
    assert launcher(script) == "srun -N 2 -n 4 -c 1 --mpi=pmi2"


def test_header_says_what_rendered_it_and_from_which_job_file(job_file, tmp_path) -> None:
    from energy_hpc import __version__

    script = render(load_profile("generic"), req(job_file, tmp_path)).script
    head = script.splitlines()[:6]
    assert head[0] == "#!/bin/bash"
    assert f"energy-hpc {__version__}" in head[1]
    assert any(ln.startswith("# command: energy-hpc submit") for ln in head)
    assert any(f"# job file: {job_file}" in ln for ln in head)


def test_too_many_ranks_for_the_gpus_is_refused(job_file, tmp_path) -> None:
    with pytest.raises(SlurmError, match="ranks-per-node"):
        render(load_profile("frontier"), req(job_file, tmp_path, account="A1", ranks_per_node=9))


@pytest.mark.parametrize(
    "text,seconds", [("30", 1800), ("01:30", 90), ("01:00:00", 3600), ("1-00", 86400), ("2-01:00:30", 176430)]
)
def test_time_limits_in_sbatch_forms(text, seconds) -> None:
    assert check_time(text) == seconds


@pytest.mark.parametrize("text", ["", "1h", "01:00:00;", "-1", "00:00:00", "1:2:3:4"])
def test_bad_time_limits_are_refused(text) -> None:
    with pytest.raises(SlurmError):
        check_time(text)


def test_job_names_become_safe_slurm_names() -> None:
    assert slurm_job_name("sdxl base+refiner") == "sdxl_base_refiner"
    assert slurm_job_name("$(rm -rf ~)") == "__rm_-rf___"


# -- custom profiles ------------------------------------------------------------------------------


def _custom(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mysite.toml"
    p.write_text(text)
    return p


def _generic_text() -> str:
    return (data_dir() / "generic.toml").read_text()


def test_a_profile_can_be_a_path_to_the_users_own_toml(job_file, tmp_path) -> None:
    text = (
        _generic_text()
        .replace('name = "generic"', 'name = "mysite"')
        .replace('partition = ""', 'partition = "gpu-a100"')
    )
    profile = load_profile(str(_custom(tmp_path, text)))
    assert profile.name == "mysite"
    assert "--partition=gpu-a100" in directives(render(profile, req(job_file, tmp_path)).script)


def test_unknown_profile_keys_are_errors(tmp_path) -> None:
    text = _generic_text().replace("[slurm]", '[slurm]\npartitoin = "x"')
    with pytest.raises(SystemProfileError, match="partitoin"):
        load_profile(str(_custom(tmp_path, text)))


def test_unknown_launcher_placeholder_is_an_error(tmp_path) -> None:
    text = _generic_text().replace('"-n", "{ntasks}"]', '"-n", "{ntasks_total}"]')
    with pytest.raises(SystemProfileError, match="placeholder"):
        load_profile(str(_custom(tmp_path, text)))


def test_unknown_system_name_lists_the_known_ones() -> None:
    with pytest.raises(SystemProfileError, match="frontier, generic, perlmutter"):
        load_profile("summit")


# -- the command -----------------------------------------------------------------------------------


def test_submit_dry_run_prints_the_script_and_writes_nothing(job_file, tmp_path) -> None:
    out = tmp_path / "out"
    r = cli(
        "submit",
        str(job_file),
        "--system",
        "frontier",
        "--nodes",
        "2",
        "--account",
        "ABC123",
        "-o",
        str(out),
        "--dry-run",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("#!/bin/bash") and "#SBATCH --nodes=2" in r.stdout
    assert not out.exists()


def test_submit_without_sbatch_says_so(job_file, tmp_path) -> None:
    env = {"PATH": str(Path(shutil.which("bash")).parent.parent / "nonexistent")}
    r = cli(
        "submit", str(job_file), "--system", "generic", "--nodes", "1", "-o", str(tmp_path / "o"), env=env
    )
    assert r.returncode == 2
    assert "sbatch" in r.stderr and "not on PATH" in r.stderr


def test_submit_with_a_bad_job_file_exits_2_before_writing(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[job]\n")
    r = cli("submit", str(bad), "--system", "generic", "--nodes", "1", "-o", str(tmp_path / "o"))
    assert r.returncode == 2 and "name" in r.stderr
    assert not (tmp_path / "o").exists()
