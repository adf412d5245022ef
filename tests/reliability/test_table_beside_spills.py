"""`energy-hpc table <folder>` on an output folder where a run kept its spills (--keep-spills): the search
for run files leaves out hidden folders and spill folders, so the spills (rank-NNNNN.h5, not run files)
neither fail the table nor count as runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli, single_rank

from energy_hpc.context import SingleComm
from energy_hpc.run import run_job
from energy_hpc.spec import parse_job
from energy_hpc.store import find_run_files
from reliability import testkit

CTX = single_rank()


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A study folder: out/<run>.h5 beside out/.<run>.spill/rank-00000.h5."""
    d = tmp_path_factory.mktemp("kept")
    with pytest.MonkeyPatch.context() as mp:
        testkit.install(mp)
        job = parse_job(testkit.sleep_job(name="kept", iterations=2, seconds=0.05), d / "job.toml")
        r = run_job(job, d / "study" / "out", CTX, SingleComm(), keep_spills=True)
    assert r.status == "complete" and r.path is not None
    [spills] = (d / "study" / "out").glob(".*.spill")
    assert list(spills.glob("rank-*.h5"))
    return d / "study", r.path


def test_the_search_skips_kept_spills(kept: tuple[Path, Path], tmp_path: Path) -> None:
    study, run_file = kept
    assert find_run_files([study]) == [run_file]
    assert find_run_files([run_file.parent]) == [run_file]
    # a spill folder renamed so that it is not hidden is still no run file
    shutil.copytree(next(run_file.parent.glob(".*.spill")), tmp_path / "copy.spill")
    assert find_run_files([tmp_path]) == [] and find_run_files([tmp_path / "copy.spill"]) == []


def test_table_on_a_folder_with_kept_spills(kept: tuple[Path, Path]) -> None:
    study, run_file = kept
    r = run_cli("table", str(study), "--format", "json")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["files"] == [str(run_file)] and row["n_files"] == 1


def test_table_on_the_spill_folder_itself_says_to_merge(kept: tuple[Path, Path]) -> None:
    _, run_file = kept
    spills = next(run_file.parent.glob(".*.spill"))
    r = run_cli("table", str(spills))
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "energy-hpc merge" in line


def test_the_readme_flow_merge_into_the_folder_then_table_and_report(
    kept: tuple[Path, Path], tmp_path: Path
) -> None:
    """README: `merge results/.<run>.spill -o results/` then `table results/` (and `report`), with the
    spill folder still in results/ beside the rebuilt file."""
    _, run_file = kept
    results = tmp_path / "results"
    shutil.copytree(next(run_file.parent.glob(".*.spill")), results / ".kept.spill")
    r = run_cli("merge", str(results / ".kept.spill"), "-o", str(results))
    assert r.returncode == 0, r.stderr
    [rebuilt] = sorted(results.glob("*.h5"))
    r = run_cli("table", str(results), "--format", "json")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["files"] == [str(rebuilt)]
    r = run_cli("report", str(results), "-o", str(tmp_path / "report"))
    assert r.returncode == 0, r.stderr


def _half_written(run_file: Path, folder: Path, drop: str) -> Path:
    """A copy of ``run_file`` without ``drop`` (a group or a variable), named as a finished run file."""
    import h5py

    folder.mkdir(parents=True)
    path = folder / run_file.name
    shutil.copy(run_file, path)
    with h5py.File(path, "a") as f:
        del f[drop]
    return path


@pytest.mark.parametrize("drop", ["windows/case", "windows/status", "cases/params", "traces/rank", "ranks"])
@pytest.mark.parametrize("command", ["table", "report"])
def test_a_half_written_run_file_is_one_line_and_exit_2(
    kept: tuple[Path, Path], tmp_path: Path, drop: str, command: str
) -> None:
    _, run_file = kept
    bad = _half_written(run_file, tmp_path / "in", drop)
    args = [command, str(bad.parent)] + (["-o", str(tmp_path / "report")] if command == "report" else [])
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert str(bad) in line and "Traceback" not in r.stderr


@pytest.mark.parametrize("keep", [0.2, 0.6, 0.95])
def test_a_truncated_run_file_is_one_line_and_exit_2(
    kept: tuple[Path, Path], tmp_path: Path, keep: float
) -> None:
    _, run_file = kept
    data = run_file.read_bytes()
    bad = tmp_path / run_file.name
    bad.write_bytes(data[: int(len(data) * keep)])
    r = run_cli("table", str(bad))
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert str(bad) in line
