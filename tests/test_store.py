"""Run files: names never clobber, output checks come first."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from energy_hpc.errors import OutputError
from energy_hpc.store import check_output_dir, find_run_files, place, run_file_stem, temp_path


def test_stem_uses_slurm_job_and_step() -> None:
    assert run_file_stem("demo", {"job_id": "123", "step_id": "0"}) == "demo-123.0"
    assert run_file_stem("demo", {"job_id": "123", "step_id": "batch"}) == "demo-123"
    assert run_file_stem("demo", {"job_id": "7", "array_task_id": "3"}) == "demo-7_3"


def test_stem_outside_slurm_has_time_and_pid() -> None:
    stem = run_file_stem("demo", {}, now=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    assert stem.startswith("demo-20260102T030405Z-")


def test_place_never_overwrites(tmp_path: Path) -> None:
    made = []
    for content in (b"first", b"second", b"third"):
        tmp = temp_path(tmp_path, "run")
        tmp.write_bytes(content)
        made.append(place(tmp, tmp_path, "run"))
    assert [p.name for p in made] == ["run.h5", "run-2.h5", "run-3.h5"]
    assert [p.read_bytes() for p in made] == [b"first", b"second", b"third"]
    assert not list(tmp_path.glob("*.partial"))


def test_find_run_files_skips_hidden_partials(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.h5").write_bytes(b"")
    (tmp_path / "a" / ".y.h5.partial").write_bytes(b"")
    (tmp_path / ".hidden.h5").write_bytes(b"")
    assert find_run_files([tmp_path]) == [tmp_path / "a" / "x.h5"]


def test_unusable_output_folder_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create output folder"):
        check_output_dir(blocker / "sub")


def test_output_folder_without_space_is_reported(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="MiB free"):
        check_output_dir(tmp_path, need_bytes=2**62)
