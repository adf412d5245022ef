"""Sweeps: the manifest, and what a re-run does and does not resubmit (Slurm stood in for by a
table of job states; the real Slurm is in test_integration.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from energy_hpc.errors import OutputError, SlurmError
from energy_hpc.slurm.render import SlurmOptions
from energy_hpc.slurm.submit import JobState, job_states, map_state, parse_parsable, parse_states
from energy_hpc.slurm.sweep import MANIFEST, PointState, Study, parse_node_counts, run_sweep, status
from energy_hpc.slurm.systems import load_profile

from .conftest import cli


class FakeSlurm:
    """Hands out job ids and answers state queries from a table the test controls."""

    def __init__(self) -> None:
        self.next_id = 100
        self.submitted: list[tuple[Path, Path]] = []
        self.states: dict[str, JobState] = {}

    def submit(self, script: Path, cwd: Path) -> str:
        self.next_id += 1
        self.submitted.append((script, cwd))
        self.states[str(self.next_id)] = JobState.QUEUED
        return str(self.next_id)

    def query(self, ids):
        return {i: self.states[i] for i in ids if i in self.states}

    def forget(self, job_id: str) -> None:  # aged out of the controller, no accounting
        del self.states[job_id]


@pytest.fixture
def fake() -> FakeSlurm:
    return FakeSlurm()


def sweep(study: Path, job_file: Path, fake: FakeSlurm, nodes=(1, 2, 4), **kw):
    return run_sweep(
        Study(study),
        job_file,
        "slurmtest",
        load_profile("generic"),
        list(nodes),
        SlurmOptions(**kw),
        submit=fake.submit,
        query=fake.query,
    )


def manifest(study: Path) -> dict:
    return json.loads((study / MANIFEST).read_text())


def write_run_file(study: Path, nodes: int, job_id: str) -> Path:
    p = study / f"nodes-{nodes}" / f"slurmtest-{job_id}.0.h5"
    p.write_bytes(b"\x89HDF")
    return p


def test_first_sweep_submits_one_job_per_node_count(tmp_path, job_file, fake) -> None:
    actions = sweep(tmp_path / "s", job_file, fake)
    assert [(a.nodes, a.action, a.job_id) for a in actions] == [
        (1, "submitted", "101"),
        (2, "submitted", "102"),
        (4, "submitted", "103"),
    ]
    m = manifest(tmp_path / "s")
    assert [p["nodes"] for p in m["points"]] == [1, 2, 4]
    assert m["job_file"] == str(job_file) and m["system"] == "generic"
    p4 = m["points"][2]
    assert p4["attempts"][0]["job_id"] == "103" and p4["state"] == "queued"
    script = tmp_path / "s" / p4["attempts"][0]["script"]
    assert script.is_file() and "#SBATCH --nodes=4" in script.read_text()
    assert fake.submitted[2][1] == tmp_path / "s" / "nodes-4"


def test_rerun_does_not_resubmit_queued_or_running_points(tmp_path, job_file, fake) -> None:
    sweep(tmp_path / "s", job_file, fake)
    fake.states["102"] = JobState.RUNNING
    actions = sweep(tmp_path / "s", job_file, fake)
    assert [a.action for a in actions] == ["kept", "kept", "kept"]
    assert [a.state for a in actions] == ["queued", "running", "queued"]
    assert len(fake.submitted) == 3


def test_rerun_does_not_resubmit_finished_points(tmp_path, job_file, fake) -> None:
    sweep(tmp_path / "s", job_file, fake, nodes=[1])
    fake.states["101"] = JobState.COMPLETED
    write_run_file(tmp_path / "s", 1, "101")
    actions = sweep(tmp_path / "s", job_file, fake, nodes=[1])
    assert actions[0].action == "kept" and actions[0].state == "done"
    assert len(fake.submitted) == 1


def test_finished_point_stays_done_after_slurm_forgets_the_job(tmp_path, job_file, fake) -> None:
    sweep(tmp_path / "s", job_file, fake, nodes=[1])
    write_run_file(tmp_path / "s", 1, "101")
    fake.forget("101")  # no accounting: only the run file tells
    actions = sweep(tmp_path / "s", job_file, fake, nodes=[1])
    assert actions[0].state == "done" and len(fake.submitted) == 1
    attempt = manifest(tmp_path / "s")["points"][0]["attempts"][0]
    assert attempt["state"] == "completed" and attempt["state_source"] == "run-file"


def test_failed_point_is_resubmitted_as_a_new_attempt(tmp_path, job_file, fake) -> None:
    sweep(tmp_path / "s", job_file, fake, nodes=[1, 2])
    fake.states["101"] = JobState.FAILED
    fake.states["102"] = JobState.RUNNING
    actions = sweep(tmp_path / "s", job_file, fake, nodes=[1, 2])
    assert [(a.action, a.job_id) for a in actions] == [("submitted", "103"), ("kept", "102")]
    p1 = manifest(tmp_path / "s")["points"][0]
    assert [a["job_id"] for a in p1["attempts"]] == ["101", "103"]
    assert [a["state"] for a in p1["attempts"]] == ["failed", "queued"]
    assert p1["attempts"][1]["script"] == "nodes-1/attempt-2.sbatch"


def test_job_gone_without_run_file_is_lost_and_resubmitted(tmp_path, job_file, fake) -> None:
    sweep(tmp_path / "s", job_file, fake, nodes=[1])
    fake.forget("101")
    m = status(Study(tmp_path / "s"), query=fake.query)
    assert m.points[0].state == PointState.LOST.value
    actions = sweep(tmp_path / "s", job_file, fake, nodes=[1])
    assert actions[0].action == "submitted"


def test_completed_without_run_file_counts_as_failed(tmp_path, job_file, fake) -> None:
    sweep(tmp_path / "s", job_file, fake, nodes=[1])
    fake.states["101"] = JobState.COMPLETED
    m = status(Study(tmp_path / "s"), query=fake.query)
    assert m.points[0].state == "failed" and "no run file" in m.points[0].note


def test_adding_node_counts_submits_only_the_new_ones(tmp_path, job_file, fake) -> None:
    sweep(tmp_path / "s", job_file, fake, nodes=[1, 2])
    actions = sweep(tmp_path / "s", job_file, fake, nodes=[1, 2, 8])
    assert [a.action for a in actions] == ["kept", "kept", "submitted"]
    assert [p["nodes"] for p in manifest(tmp_path / "s")["points"]] == [1, 2, 8]


def test_a_changed_job_file_is_refused(tmp_path, job_file, fake) -> None:
    sweep(tmp_path / "s", job_file, fake, nodes=[1])
    job_file.write_text(job_file.read_text().replace("iterations = 1", "iterations = 2"))
    with pytest.raises(OutputError, match="new --study"):
        sweep(tmp_path / "s", job_file, fake, nodes=[1])


def test_another_launcher_in_the_same_study_is_refused(tmp_path, job_file, fake) -> None:
    sweep(tmp_path / "s", job_file, fake, nodes=[1])
    with pytest.raises(OutputError, match="launcher"):
        sweep(tmp_path / "s", job_file, fake, nodes=[1], launcher="mpiexec")


def test_dry_run_writes_and_submits_nothing(tmp_path, job_file, fake) -> None:
    shown = []
    actions = run_sweep(
        Study(tmp_path / "s"),
        job_file,
        "slurmtest",
        load_profile("generic"),
        [1, 2],
        SlurmOptions(),
        submit=fake.submit,
        query=fake.query,
        dry_run=True,
        show=lambda n, s: shown.append((n, s)),
    )
    assert [a.action for a in actions] == ["would-submit", "would-submit"]
    assert [n for n, _ in shown] == [1, 2] and "#SBATCH --nodes=2" in shown[1][1]
    assert not (tmp_path / "s").exists() and fake.submitted == []


def test_a_failed_sbatch_keeps_what_was_already_submitted(tmp_path, job_file, fake) -> None:
    def submit(script, cwd):
        if "nodes-2" in str(cwd):
            raise SlurmError("sbatch refused: QOSMaxNodePerJobLimit")
        return fake.submit(script, cwd)

    with pytest.raises(SlurmError):
        run_sweep(
            Study(tmp_path / "s"),
            job_file,
            "slurmtest",
            load_profile("generic"),
            [1, 2],
            SlurmOptions(),
            submit=submit,
            query=fake.query,
        )
    points = manifest(tmp_path / "s")["points"]
    assert points[0]["attempts"][0]["job_id"] == "101"
    assert points[1]["attempts"] == [] and points[1]["state"] == "new"


@pytest.mark.parametrize("text,counts", [("1,2,4,8", [1, 2, 4, 8]), ("8, 1,2,2", [1, 2, 8])])
def test_node_counts_are_parsed_sorted_and_unique(text, counts) -> None:
    assert parse_node_counts(text) == counts


@pytest.mark.parametrize("text", ["", "0", "1,x", "-2", "1;2"])
def test_bad_node_counts_are_refused(text) -> None:
    with pytest.raises(SlurmError):
        parse_node_counts(text)


@pytest.mark.parametrize(
    "word,state",
    [
        ("PENDING", JobState.QUEUED),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETED", JobState.COMPLETED),
        ("TIMEOUT", JobState.FAILED),
        ("CANCELLED by 0", JobState.CANCELLED),
        ("OUT_OF_MEMORY", JobState.FAILED),
        ("WEIRD", JobState.UNKNOWN),
    ],
)
def test_slurm_states_are_reduced_to_what_a_sweep_decides_on(word, state) -> None:
    assert map_state(word) is state


def test_sbatch_parsable_output_with_and_without_cluster() -> None:
    assert parse_parsable("1234\n") == "1234"
    assert parse_parsable("1234;frontier\n") == "1234"
    with pytest.raises(SlurmError):
        parse_parsable("Submitted batch job 1234")


@pytest.mark.parametrize(
    "stdout",
    [
        "101|PENDING\n102|RUNNING\n103|CANCELLED by 0\n",  # squeue -h -o %i|%T
        "101|PENDING\n102|RUNNING\n103|CANCELLED by 0\n\n",  # sacct -n -X -P -o JobID,State
    ],
)
def test_squeue_and_sacct_lines_are_read_by_one_parser(stdout) -> None:
    assert parse_states(stdout) == {
        "101": JobState.QUEUED,
        "102": JobState.RUNNING,
        "103": JobState.CANCELLED,
    }
    assert parse_states("slurm_load_jobs error\n") == {}


def test_job_states_asks_squeue_then_sacct_for_the_rest(tmp_path, monkeypatch) -> None:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    calls = tmp_path / "calls"
    for name, answer in (("squeue", "1|RUNNING"), ("sacct", "2|COMPLETED")):
        (bin_ / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\necho "{answer}"\n')
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:/usr/bin:/bin")
    assert job_states(["1", "2", "3"]) == {"1": JobState.RUNNING, "2": JobState.COMPLETED}
    asked = calls.read_text().splitlines()
    assert asked[0].startswith("squeue") and asked[0].endswith("-j 1,2,3")
    assert asked[1].startswith("sacct") and asked[1].endswith("-j 2,3")


def no_accounting_path(tmp_path: Path) -> dict:
    """PATH with squeue/sacct that answer as on a cluster that forgot the jobs and keeps no
    accounting."""
    import os

    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, msg in (
        ("squeue", "slurm_load_jobs error: Invalid job id specified"),
        ("sacct", "Slurm accounting storage is disabled"),
    ):
        (bin_ / name).write_text(f"#!/bin/sh\necho '{msg}' >&2\nexit 1\n")
        (bin_ / name).chmod(0o755)
    return {"PATH": f"{bin_}:{os.environ['PATH']}"}


def test_status_command_without_accounting_falls_back_to_run_files(tmp_path, job_file, fake) -> None:
    sweep(tmp_path / "s", job_file, fake, nodes=[1, 2])
    write_run_file(tmp_path / "s", 2, "102")
    env = no_accounting_path(tmp_path)
    r = cli("status", str(tmp_path / "s"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    points = {p["nodes"]: p for p in json.loads(r.stdout)["points"]}
    assert points[1]["state"] == "lost"
    assert points[2]["state"] == "done" and points[2]["run_files"] == ["nodes-2/slurmtest-102.0.h5"]
    table = cli("status", str(tmp_path / "s"), env=env).stdout
    assert "done" in table and "nodes-2/slurmtest-102.0.h5" in table


def test_status_of_a_folder_that_is_not_a_study_exits_2(tmp_path) -> None:
    r = cli("status", str(tmp_path))
    assert r.returncode == 2 and "not a study folder" in r.stderr
