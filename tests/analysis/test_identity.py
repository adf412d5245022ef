"""The same run counted twice (issue 11, finding 11): a run file and a merge of the same run's kept
spills, or the same spills merged twice, hold the same measurements. Tables count them once, keep the
most complete copy, and say which files; genuine repeats (different runs of one job) still merge."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import pytest
from _runs import build, channel, rank_row, window
from helpers import single_rank
from reliability import testkit

from energy_hpc.analysis.table import device_rows, energy_table, reduce_files
from energy_hpc.context import SingleComm
from energy_hpc.run import run_job
from energy_hpc.spec import parse_job
from energy_hpc.spill import rebuild

CTX = single_rank()


@pytest.fixture
def kit(monkeypatch: pytest.MonkeyPatch) -> None:
    testkit.install(monkeypatch)


def _run(folder: Path, keep_spills: bool = True):
    job = parse_job(testkit.sleep_job(name="ident", iterations=4, seconds=0.1), folder / "job.toml")
    r = run_job(job, folder / "out", CTX, SingleComm(), keep_spills=keep_spills)
    assert r.status == "complete" and r.path is not None
    return r


def _dup_flags(row: dict) -> list[str]:
    return [f for f in row["flags"] if "same run" in f]


def test_a_merge_of_kept_spills_beside_the_run_file_is_counted_once(
    tmp_path: Path, kit: None, caplog: pytest.LogCaptureFixture
) -> None:
    r = _run(tmp_path)
    [spills] = (tmp_path / "out").glob(".*.spill")
    merged, _ = rebuild([spills], tmp_path / "out")  # the user merges the kept spills into the same folder
    (alone,) = energy_table([r.path])
    files = sorted((tmp_path / "out").glob("*.h5"))  # the kept spill folder is beside them
    assert files == sorted([r.path, merged])
    with caplog.at_level(logging.WARNING):
        (row,) = energy_table(files)
    # one run, not two repeats: same units, same energy, same uncertainty
    assert row["units"] == pytest.approx(alone["units"])
    assert row["energy_J"] == pytest.approx(alone["energy_J"], rel=1e-12)
    assert row["energy_per_unit_uncertainty_J"] == pytest.approx(alone["energy_per_unit_uncertainty_J"])
    assert row["n_files"] == 1 and row["files"] == [str(r.path)]
    # the complete run file is the copy kept, and both files are named, in the log and in the row
    (flag,) = _dup_flags(row)
    assert merged.name in flag and r.path.name in flag
    lines = [rec.getMessage() for rec in caplog.records if "same run" in rec.getMessage()]
    assert len(lines) == 1 and merged.name in lines[0] and r.path.name in lines[0]
    assert not any("partial run" in f for f in row["flags"])  # the merged (partial) copy was left out


def test_the_same_spills_merged_twice_are_counted_once(tmp_path: Path, kit: None) -> None:
    r = _run(tmp_path)
    [spills] = (tmp_path / "out").glob(".*.spill")
    first, _ = rebuild([spills], tmp_path / "merged")
    second, _ = rebuild([spills], tmp_path / "merged")
    assert first != second
    (one,) = energy_table([first])
    (row,) = energy_table([first, second])
    assert row["units"] == pytest.approx(one["units"]) and row["energy_J"] == pytest.approx(one["energy_J"])
    assert row["n_files"] == 1 and _dup_flags(row)
    # the devices view counts it once too
    assert len(device_rows(reduce_files([first, second]))) == len(device_rows(reduce_files([first])))
    # and the same file given twice
    (twice,) = energy_table([r.path, r.path])
    assert twice["units"] == pytest.approx(energy_table([r.path])[0]["units"])


def test_two_runs_of_the_same_job_still_merge_as_repeats(tmp_path: Path, kit: None) -> None:
    a = _run(tmp_path / "a", keep_spills=False)
    b = _run(tmp_path / "b", keep_spills=False)
    (ra,), (rb,) = energy_table([a.path]), energy_table([b.path])
    (row,) = energy_table([a.path, b.path])
    assert row["n_files"] == 2 and not _dup_flags(row)
    assert row["units"] == pytest.approx(ra["units"] + rb["units"])
    assert row["energy_J"] == pytest.approx(ra["energy_J"] + rb["energy_J"], rel=1e-12)


# ------------------------------------------------------------------ files overlapping in ranks

EPOCH = 1.7e9 + 0.123456


def _two_rank_file(
    path: Path, ranks_measured: tuple[int, ...], status: str, reason: str = "", epoch: float = EPOCH
) -> Path:
    """A 2-rank run; only ``ranks_measured`` have windows and channels (the others are missing)."""
    chans, wins, ranks = [], [], []
    for r in (0, 1):
        ranks.append(
            rank_row(
                local_rank=r,
                bus=f"0000:{r}:00.0",
                status="ok" if r in ranks_measured else "missing",
                error="" if r in ranks_measured else "no spill file",
            )
        )
        if r in ranks_measured:
            chans.append(channel(r, power=100.0 + 50 * r, name=f"gpu{r}", device=f"dev{r}"))
            wins += [
                window(r, 0, "measure", 2.0 + 2 * i, 3.0 + 2 * i, units=1, iteration=i) for i in range(4)
            ]
    f = build(path, chans, wins, ranks=ranks, status=status, reason=reason)
    with h5py.File(f, "a") as h:  # one real run: a real epoch and job (build() writes 0 and "t")
        h.attrs["epoch_unix"] = epoch
        h.attrs["job_name"] = "ident"
    return f


def test_a_partial_run_file_and_a_fuller_merge_of_the_same_run_keep_the_fuller(tmp_path: Path) -> None:
    # rank 0 wrote a partial run file without rank 1; the spills of both ranks were merged later
    run = _two_rank_file(tmp_path / "run.h5", (0,), "partial", "rank 1 missing")
    merged = _two_rank_file(tmp_path / "merged.h5", (0, 1), "partial", "rebuilt from spills")
    (full,) = energy_table([merged])
    for order in ([run, merged], [merged, run]):
        (row,) = energy_table(order)
        assert row["units"] == pytest.approx(full["units"]) == 8
        assert row["energy_J"] == pytest.approx(full["energy_J"])
        assert row["files"] == [str(merged)]
        (flag,) = _dup_flags(row)
        assert "run.h5" in flag and "merged.h5" in flag


def test_a_complete_run_file_wins_over_a_merge_of_the_same_run(tmp_path: Path) -> None:
    run = _two_rank_file(tmp_path / "run.h5", (0, 1), "complete")
    merged = _two_rank_file(tmp_path / "merged.h5", (0, 1), "partial", "rebuilt from spills")
    (row,) = energy_table([merged, run])
    assert row["files"] == [str(run)] and row["units"] == 8
    assert not any(f.startswith("partial run") for f in row["flags"])


def test_files_of_one_job_with_different_epochs_are_repeats(tmp_path: Path) -> None:
    a = _two_rank_file(tmp_path / "a.h5", (0, 1), "complete")
    b = _two_rank_file(tmp_path / "b.h5", (0, 1), "complete", epoch=EPOCH + 3600)
    (row,) = energy_table([a, b])
    assert row["units"] == 16 and row["n_files"] == 2 and not _dup_flags(row)
