"""Nothing in a job file path, an argument or a profile can inject shell into the script."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from energy_hpc.errors import SlurmError, SystemProfileError
from energy_hpc.slurm.render import Request, SlurmOptions, render
from energy_hpc.slurm.systems import data_dir, load_profile

from .conftest import TINY_JOB, cli

HOSTILE = [
    "$(touch PWNED)",
    "`touch PWNED`",
    "x; touch PWNED",
    "x\ntouch PWNED",
    "x' ; touch PWNED; '",
    'x" ; touch PWNED; "',
    "x && touch PWNED",
    "x | touch PWNED",
    "${IFS}touch${IFS}PWNED",
]


@pytest.mark.parametrize("value", HOSTILE[:2] + HOSTILE[3:4])
@pytest.mark.parametrize(
    "option", ["--account", "--partition", "--qos", "--constraint", "--time", "--launcher", "--enable"]
)
def test_hostile_option_values_are_refused_with_exit_2(option, value, job_file, tmp_path) -> None:
    out = tmp_path / "out"
    r = cli(
        "submit",
        str(job_file),
        "--system",
        "generic",
        "--nodes",
        "1",
        "-o",
        str(out),
        option,
        value,
        "--dry-run",
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""  # no script printed
    assert not out.exists()
    assert len(r.stderr.strip().splitlines()) == 1  # one line naming the problem


@pytest.mark.parametrize("value", ["$(touch PWNED)", "a b", "x\n#SBATCH --wrap=touch", "50%"])
def test_results_folder_unfit_for_sbatch_lines_is_refused(value, job_file, tmp_path) -> None:
    r = cli(
        "submit",
        str(job_file),
        "--system",
        "generic",
        "--nodes",
        "1",
        "-o",
        str(tmp_path / value),
        "--dry-run",
    )
    assert r.returncode == 2 and "#SBATCH" in r.stderr


def _settings_values(script: str, tmp_path: Path) -> dict[str, str]:
    """Run the script's settings block (everything before `set -euo pipefail`) in bash, in an
    empty folder, and read the variables back."""
    head = script.split("\nset -euo pipefail", 1)[0]
    probe = tmp_path / "probe"
    probe.mkdir(exist_ok=True)
    (probe / "settings.sh").write_text(
        head + '\nprintf \'%s\\0\' "$ENERGY_HPC_JOB_FILE" "$ENERGY_HPC_VENV" "${ENERGY_HPC_LAUNCHER[@]}"\n'
    )
    r = subprocess.run(["bash", "settings.sh"], cwd=probe, capture_output=True, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert not list(probe.glob("PWNED*")) and not list(tmp_path.glob("**/PWNED"))
    job, venv, *launcher = r.stdout.decode().split("\0")[:-1]
    return {"job": job, "venv": venv, "launcher": launcher}


@pytest.mark.parametrize(
    "evil", ["$(touch PWNED)", "`touch PWNED`", "a;touch PWNED", "a b'c\"d", "new\nline; touch PWNED"]
)
def test_hostile_job_file_path_is_quoted_and_round_trips(evil, tmp_path) -> None:
    folder = tmp_path / f"jobs {evil}"
    folder.mkdir()
    job = folder / f"{evil}.toml"
    job.write_text(TINY_JOB)
    script = render(
        load_profile("generic"),
        Request(
            job_file=job,
            job_name="slurmtest",
            results_dir=tmp_path / "results",
            nodes=1,
            options=SlurmOptions(venv=f"/opt/{evil}", command=("energy-hpc", "submit", str(job))),
        ),
    ).script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    values = _settings_values(script, tmp_path)
    assert values["job"] == str(job)
    assert values["venv"] == f"/opt/{evil}"


def test_newlines_in_the_command_line_cannot_leave_the_header_comment(job_file, tmp_path) -> None:
    script = render(
        load_profile("generic"),
        Request(
            job_file=job_file,
            job_name="slurmtest",
            results_dir=tmp_path / "r",
            nodes=1,
            options=SlurmOptions(command=("energy-hpc", "x\n#SBATCH --wrap=touch PWNED\ntouch PWNED")),
        ),
    ).script
    lines = script.splitlines()
    assert not any(ln.startswith("#SBATCH --wrap") or ln.startswith("touch") for ln in lines)
    assert "x\\n#SBATCH --wrap=touch PWNED\\ntouch PWNED" in script


def test_submitting_a_hostile_job_path_through_the_cli_keeps_it_quoted(tmp_path) -> None:
    folder = tmp_path / "$(touch PWNED)"
    folder.mkdir()
    job = folder / "`touch PWNED`.toml"
    job.write_text(TINY_JOB)
    r = cli(
        "submit", str(job), "--system", "generic", "--nodes", "1", "-o", str(tmp_path / "out"), "--dry-run"
    )
    assert r.returncode == 0, r.stderr
    assert _settings_values(r.stdout, tmp_path)["job"] == str(job)


def _profile_with(tmp_path: Path, old: str, new: str) -> Path:
    text = (data_dir() / "generic.toml").read_text()
    assert old in text
    p = tmp_path / "evil.toml"
    p.write_text(text.replace(old, new))
    return p


@pytest.mark.parametrize(
    "value",
    ["$(touch PWNED)", "`touch PWNED`", 'a\\"; touch PWNED; \\"', "a\\ntouch PWNED", "${X:-$(touch PWNED)}"],
)
def test_hostile_profile_env_values_are_refused(value, tmp_path) -> None:
    p = _profile_with(tmp_path, 'ENERGY_HPC_SYSTEM = "generic"', f'ENERGY_HPC_SYSTEM = "{value}"')
    with pytest.raises(SystemProfileError):
        load_profile(str(p))


@pytest.mark.parametrize(
    "directive", ["--wrap=touch PWNED\\n", "touch PWNED", "--comment=$(x)", "--comment='a'", "--x=a#b"]
)
def test_hostile_profile_directives_are_refused(directive, tmp_path) -> None:
    p = _profile_with(tmp_path, "directives = []", f'directives = ["{directive}"]')
    with pytest.raises(SystemProfileError):
        load_profile(str(p))


def test_profile_launcher_arguments_are_quoted(job_file, tmp_path) -> None:
    p = _profile_with(tmp_path, '"--mpi=pmi2"]', '"--mpi=pmi2", "$(touch PWNED)", "a b"]')
    script = render(
        load_profile(str(p)), Request(job_file=job_file, job_name="t", results_dir=tmp_path / "r", nodes=1)
    ).script
    assert _settings_values(script, tmp_path)["launcher"][-2:] == ["$(touch PWNED)", "a b"]


@pytest.mark.parametrize("value", [*HOSTILE, "a\n#SBATCH --wrap=x"])
@pytest.mark.parametrize("field", ["account", "partition", "qos", "constraint", "time"])
def test_hostile_values_through_the_python_api_are_refused_too(field, value, job_file, tmp_path) -> None:
    with pytest.raises(SlurmError):
        render(
            load_profile("generic"),
            Request(
                job_file=job_file,
                job_name="t",
                results_dir=tmp_path / "r",
                nodes=1,
                options=SlurmOptions(**{field: value}),
            ),
        )


@pytest.mark.parametrize(
    "field,value",
    [
        ("account", "abc\n"),
        ("partition", "batch\n"),
        ("qos", "q\n"),
        ("time", "01:00:00\n"),
        ("constraint", "nvme\n"),
    ],
)
def test_a_trailing_newline_is_not_a_valid_value(field, value, job_file, tmp_path) -> None:
    with pytest.raises(SlurmError):
        render(
            load_profile("generic"),
            Request(
                job_file=job_file,
                job_name="t",
                results_dir=tmp_path / "r",
                nodes=1,
                options=SlurmOptions(**{field: value}),
            ),
        )
