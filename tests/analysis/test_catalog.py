"""The study catalogue (issue 15, section 2): tables, plots and reports read from a fresh catalogue are
the same, byte for byte, as those reduced from the run files; a changed file makes it stale until
``energy-hpc catalog`` refreshes it; ranks under mpiexec share a rebuild; DuckDB reads it as it is."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from _runs import build, case_row, channel, rank_row, window
from helpers import run_cli

from energy_hpc.analysis import catalog
from energy_hpc.cli import main
from energy_hpc.store import find_run_files

pytest.importorskip("pyarrow", reason="the catalogue is Parquet: pyarrow (energy-hpc[analysis])")


def _steps(levels: list[tuple[float, float]]):
    def f(t: np.ndarray) -> np.ndarray:
        p = np.zeros_like(t)
        for t0, w in levels:
            p[t >= t0] = w
        return p

    return f


def _epoch(path: Path, epoch: float) -> Path:
    """Give a built run its own identity (build() writes every run with epoch 0)."""
    with h5py.File(path, "r+") as f:
        f.attrs["epoch_unix"] = epoch
    return path


def _study(root: Path) -> Path:
    """Runs of several kinds in two folders: stages and repeats, two cases with node-level channels on
    two ranks, a counter that runs backwards, a partial run, and one file copied (the same run twice)."""
    (root / "a").mkdir(parents=True)
    (root / "b" / "deep").mkdir(parents=True)
    stage_windows = []
    for i, t0 in enumerate((2.0, 6.0, 10.0)):
        stage_windows += [
            window(0, 0, "measure", t0, t0 + 2.0, 1, iteration=i),
            window(0, 0, "measure", t0, t0 + 1.0, 1, iteration=i, stage="base"),
            window(0, 0, "measure", t0 + 1.0, t0 + 2.0, 1, iteration=i, stage="refiner"),
        ]
    for k, watts in enumerate((100.0, 130.0)):
        ch = channel(power=_steps([(0, watts), (3.0, 3 * watts), (7.0, watts)]))
        _epoch(build(root / "a" / f"stages{k}.h5", [ch], stage_windows), 1.0 + k)
    cases = [case_row(batch_size=1), case_row(batch_size=4, dtype="bf16")]
    chans = [
        channel(0, power=300.0),
        channel(1, power=310.0, name="ch1b", device="dev1"),
        channel(0, power=1000.0, scope="node", node_level=1, name="pm:node", device="node"),
        channel(0, power=200.0, scope="cpu", node_level=1, name="pm:cpu", device="cpu"),
    ]
    wins = []
    for rank, lag in ((0, 0.0), (1, 0.1)):
        for i in range(3):
            wins.append(window(rank, 0, "measure", 2.0 + 2 * i + lag, 3.0 + 2 * i + lag, 1, iteration=i))
            wins.append(window(rank, 1, "measure", 9.0 + 2 * i + lag, 10.5 + 2 * i + lag, 4, iteration=i))
    ranks = [rank_row(local_rank=0, bus="0000:01:00.0"), rank_row(local_rank=1, bus="0000:02:00.0")]
    two = _epoch(build(root / "b" / "two.h5", chans, wins, ranks=ranks, cases=cases), 3.0)
    back = channel(power=100.0, energy=lambda t: 100.0 * t - 150.0 * (t > 3.0))
    meas = [
        window(0, 0, "measure", a, b, 1, iteration=i) for i, (a, b) in enumerate([(2.0, 4.0), (10.0, 12.0)])
    ]
    _epoch(build(root / "b" / "deep" / "backwards.h5", [back], meas), 4.0)
    partial = [*meas, window(0, 0, "measure", 13.0, 14.0, 1, iteration=2, status="interrupted")]
    _epoch(
        build(root / "b" / "partial.h5", [channel(power=50.0)], partial, status="partial", reason="signal"),
        5.0,
    )
    shutil.copy2(two, root / "b" / "deep" / "two-copy.h5")  # the same run twice: counted once
    return root


VIEWS = [[], ["--stages"], ["--by", "dtype"], ["--devices"], ["--scaling"]]


def _tables(root: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    out = {}
    for view in VIEWS:
        for fmt in ("csv", "json", "markdown", "latex"):
            if view == ["--devices"] and fmt in ("markdown", "latex"):
                fmt = "tsv" if fmt == "markdown" else None
                if fmt is None:
                    continue
            args = ["table", str(root), *view] + (["-f", fmt] if fmt != "tsv" else [])
            assert main(args) == 0
            out[" ".join(args[2:])] = capsys.readouterr().out
    return out


def test_tables_from_a_fresh_catalogue_equal_the_tables_from_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _study(tmp_path / "study")
    files = find_run_files([root])
    without = _tables(root, capsys)
    assert not catalog.read_study(files).from_catalog
    assert main(["catalog", str(root)]) == 0
    assert "6 new or changed run file(s) catalogued of 6" in capsys.readouterr().out
    assert catalog.read_study(files).from_catalog
    with_catalog = _tables(root, capsys)
    assert with_catalog.keys() == without.keys()
    for view, text in without.items():
        assert with_catalog[view] == text, view
    # the copy is counted once either way, and the table says so
    assert "same run" in without["-f csv"]
    # a subfolder, or one file, reads the catalogue above it
    assert catalog.read_study(find_run_files([root / "b" / "deep"])).from_catalog
    assert catalog.read_study([root / "a" / "stages0.h5"]).from_catalog


def test_a_changed_file_makes_the_catalogue_stale_until_it_is_refreshed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _study(tmp_path / "study")
    assert main(["catalog", str(root)]) == 0
    capsys.readouterr()
    files = find_run_files([root])
    changed = root / "a" / "stages1.h5"
    _epoch(changed, 9.0)
    os.utime(changed, ns=(0, 10**18))
    assert not catalog.read_study(files).from_catalog
    assert "not up to date for 1 of 6" in capsys.readouterr().err
    expected = _tables(root, capsys)
    assert main(["catalog", str(root)]) == 0
    assert "1 new or changed run file(s) catalogued of 6 (6 in the catalogue)" in capsys.readouterr().out
    assert catalog.read_study(files).from_catalog
    assert _tables(root, capsys) == expected
    # a removed file leaves the index; its part goes once no entry names it
    (root / "b" / "partial.h5").unlink()
    assert main(["catalog", str(root)]) == 0
    assert "0 new or changed run file(s) catalogued of 5 (5 in the catalogue)" in capsys.readouterr().out
    assert catalog.read_study(find_run_files([root])).from_catalog


def test_report_and_plot_read_the_catalogue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _study(tmp_path / "study")
    assert main(["report", str(root), "-o", str(tmp_path / "before")]) == 0
    assert main(["catalog", str(root)]) == 0
    assert main(["report", str(root), "-o", str(tmp_path / "after")]) == 0
    for name in ("table.csv", "table.json", "table.md", "table_stages.csv", "devices.json"):
        assert (tmp_path / "after" / name).read_text() == (tmp_path / "before" / name).read_text(), name
    capsys.readouterr()
    assert main(["plot", str(root), "-o", str(tmp_path / "fig"), "--kind", "energy", "--stages"]) == 0
    assert (tmp_path / "fig" / "energy_per_unit_stages.png").is_file()


def test_ranks_under_mpiexec_share_the_rebuild(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _study(tmp_path / "study")
    expected = _tables(root, capsys)
    p = run_cli("catalog", str(root), mpi=2, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "6 new or changed run file(s) catalogued of 6 (6 in the catalogue), 2 rank(s)" in p.stdout
    pyarrow_parquet = pytest.importorskip("pyarrow.parquet")
    index = pyarrow_parquet.read_table(root / catalog.CATALOG_DIR / catalog.INDEX).to_pylist()
    parts = {e["part"] for e in index}
    assert len(index) == 6 and {part.rsplit("-", 1)[1] for part in parts} == {"r0", "r1"}
    # rank r took files r, r + 2, ...: each part holds three of the six
    assert sorted(sum(e["part"] == part for e in index) for part in parts) == [3, 3]
    assert catalog.read_study(find_run_files([root])).from_catalog
    assert _tables(root, capsys) == expected


def test_duckdb_reads_the_catalogue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    duckdb = pytest.importorskip("duckdb", reason="duckdb not installed (it is in the dev extra)")
    root = _study(tmp_path / "study")
    assert main(["catalog", str(root)]) == 0
    capsys.readouterr()
    parts = (root / ".energy-hpc-catalog" / "parts" / "*.cases.parquet").as_posix()
    index = (root / ".energy-hpc-catalog" / "index.parquet").as_posix()
    # the query of docs/analysis.md: energy per unit per case over the study, each run once
    rows = duckdb.sql(
        f"""
        SELECT c.model, c.dtype, c.batch_size, count(DISTINCT c.run_id) AS runs,
               sum(c.energy_J) / sum(c.units) AS energy_per_unit_J
        FROM read_parquet('{parts}', union_by_name = true) AS c
        JOIN read_parquet('{index}') AS i ON c.file = i.file AND c.part = i.part
        WHERE c.stage = '' AND c.iterations > 0
          AND c.file = (SELECT min(file) FROM read_parquet('{index}') AS j WHERE j.run_id = c.run_id)
        GROUP BY ALL ORDER BY c.dtype, c.batch_size
        """
    ).fetchall()
    assert [(r[1], r[2], r[3]) for r in rows] == [("bf16", 4, 1), ("fp16", 1, 5)]
    bf16 = rows[0]
    assert bf16[4] == pytest.approx((300.0 + 310.0) * 1.5 * 3 / (4 * 2 * 3), rel=1e-3)
    cases = json.loads(
        duckdb.sql(f"SELECT case_json FROM read_parquet('{parts}') WHERE dtype = 'bf16' LIMIT 1").fetchall()[
            0
        ][0]
    )
    assert cases["batch_size"] == 4


def test_stored_sums_read_back_with_the_same_values_and_types() -> None:
    """Fields at their default are left out of the stored sums; those that only look like the default
    (-0.0 for 0.0, an int 0 for 0.0, an empty dict for a Counter) are kept, so what is read back is the
    same value of the same type, bit for bit."""
    from energy_hpc.analysis import table

    s = table.RowSums(params={"batch_size": 1}, unit="image", n_nodes=1, stage="", data="SYNTHETIC")
    s.files.append("/x/run.h5")
    s.scopes.device.recorded = True
    s.scopes.device.energy_J = -0.0
    s.scopes.device.units = 0  # type: ignore[assignment]  # an int where the default is a float
    s.scopes.device.peak_W = float("inf")
    s.scopes.device.counter_faults["held"] += 2
    s.scopes.node.iterations[("/x/run.h5", 3)] = table.IterationCell(energy_J=1e-300, units=2.0)
    text = json.dumps(catalog._encode(s, "/x/run.h5"))
    assert '"module"' not in text  # an empty scope costs nothing but its class name
    back = catalog._loads(text, "/y/moved.h5")
    assert back.files == ["/y/moved.h5"]
    dev = back.scopes.device
    assert repr(dev.energy_J) == "-0.0" and type(dev.units) is int and dev.peak_W == float("inf")
    assert (
        type(dev.counter_faults) is type(s.scopes.device.counter_faults) and dev.counter_faults["held"] == 2
    )
    assert back.scopes.node.iterations == {
        ("/y/moved.h5", 3): table.IterationCell(energy_J=1e-300, units=2.0)
    }
    assert back.scopes.module == table.ScopeSums() and repr(back.scopes.module.peak_W) == "-inf"
