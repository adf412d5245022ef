"""A run written per node: several pretend nodes on this machine under real mpiexec, each node leader
writing its node's file, rank 0 the index over them; read back through the analysis, xarray and
every command as one run, and the same numbers as the one-file path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import REPO, mpiexec, run_cli

from energy_hpc.analysis.reduce import reduce_run
from energy_hpc.analysis.runfile import RunFile
from energy_hpc.errors import RunFileError
from energy_hpc.store import find_run_files

pytestmark = pytest.mark.mpi


def _gather(out: Path, layout: str, ranks: int = 6, nodes: int = 3) -> Path:
    launcher = mpiexec()
    assert launcher, "mpiexec not found"
    out.mkdir(parents=True, exist_ok=True)
    entry = [sys.executable, str(REPO / "tests" / "gather_entry.py"), str(out), "256", str(nodes)]
    r = subprocess.run(
        [launcher, "-n", str(ranks), *entry],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, ENERGY_HPC_GATHER_LAYOUT=layout),
    )
    assert r.returncode == 0, r.stderr
    path, status = r.stdout.split()
    assert status == "complete"
    return Path(path)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same fabricated input gathered per node and through rank 0 into one file."""
    base = tmp_path_factory.mktemp("nodes")
    return _gather(base / "nodes", "nodes"), _gather(base / "single", "single")


def _energies(path: Path) -> dict[tuple[int, str, float], float]:
    red = reduce_run(path)
    return {
        (int(c.meta["rank"]), str(c.meta["name"]), float(red.windows["start"][i])): float(c.own.energy_J[k])
        for c in red.channels
        for k, i in enumerate(c.own_idx)
    }


def test_each_node_leader_writes_its_node_and_the_index_holds_every_sample_exactly(
    both: tuple[Path, Path],
) -> None:
    import gather_entry

    index, _ = both
    assert sorted(p.name for p in (index.parent / "gather-test.nodes").iterdir()) == [
        "node-00000.h5",
        "node-00001.h5",
        "node-00002.h5",
    ]
    tree = xr.open_datatree(index, engine="h5netcdf")
    assert tree.attrs["layout"] == "nodes" and tree.attrs["n_nodes"] == 3
    assert tree["ranks"]["host"].values.tolist() == ["h+p0", "h+p0", "h+p1", "h+p1", "h+p2", "h+p2"]
    tr = tree["traces"].to_dataset()
    seen = set()
    for ch in range(tr.sizes["channel"]):
        rank, j = int(tr["rank"].values[ch]), int(str(tr["name"].values[ch]).split("c")[-1])
        seen.add((rank, j))
        e = gather_entry.expected(rank, j)
        n = len(e["time"])
        assert int(tr["n_samples"].values[ch]) == n
        for var in ("time", "power", "energy", "sensor_time"):
            got = tr[var].values[ch]
            np.testing.assert_allclose(got[:n], e[var], rtol=0, atol=1e-9, err_msg=f"rank {rank} {var}")
            assert np.isnan(got[n:]).all()  # beyond a node file's rows, the index reads fill
    assert seen == {(r, j) for r in range(6) for j in range(2)}
    assert sorted(tree["windows"]["rank"].values.tolist()) == [r for r in range(6) for _ in range(r + 1)]


def test_the_index_gives_the_one_file_path_s_numbers_and_the_true_energy(both: tuple[Path, Path]) -> None:
    import gather_entry

    index, single = both
    assert "layout" not in xr.open_datatree(single, engine="h5netcdf").attrs
    assert not list(single.parent.glob("*.nodes"))
    per_node, one_file = _energies(index), _energies(single)
    assert per_node == one_file  # exactly: the same samples and windows, read through the virtual datasets
    assert len(per_node) == sum(2 * (r + 1) for r in range(6))
    for (rank, name, start), joules in per_node.items():
        truth = gather_entry.window_power_integral(rank, int(name.split("c")[-1]), start, start + 2.0)
        assert joules == pytest.approx(truth, rel=1e-3)


def test_every_command_sees_one_run(both: tuple[Path, Path]) -> None:
    index, single = both
    assert find_run_files([index.parent]) == [index]  # the node files are not runs of their own
    a = run_cli("table", str(index), "--format", "csv")
    b = run_cli("table", str(single), "--format", "csv")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout.replace(str(index), "F") == b.stdout.replace(str(single), "F")


def test_a_node_file_opened_alone_names_its_run(both: tuple[Path, Path]) -> None:
    index, _ = both
    with pytest.raises(RunFileError, match="one node's file of the run 'gather-test'"):
        RunFile(index.parent / "gather-test.nodes" / "node-00001.h5")


def test_the_run_file_copied_alone_says_how_to_make_it_whole(both: tuple[Path, Path], tmp_path: Path) -> None:
    index, single = both
    alone = tmp_path / "alone" / index.name
    alone.parent.mkdir()
    shutil.copy(index, alone)
    with pytest.raises(RunFileError, match=r"not there .*energy-hpc merge --single"):
        RunFile(alone)
    r = run_cli("table", str(alone))
    assert r.returncode == 2 and "merge --single" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    r = run_cli("merge", "--single", str(index), "-o", str(tmp_path / "whole"))
    assert r.returncode == 0, r.stderr
    whole = Path(r.stdout.strip())
    moved = tmp_path / "moved" / whole.name
    moved.parent.mkdir()
    shutil.move(whole, moved)  # it stands alone
    with RunFile(moved) as f:
        assert "layout" not in f.attrs and f.n_nodes == 3
    assert _energies(moved) == _energies(single)


def _fault_run(tmp_path: Path, ranks: int, nodes: int, env: dict[str, str], flags: list[str]) -> tuple:
    from reliability.faults import HERE, finish
    from reliability.testkit import sleep_job

    exe = mpiexec()
    assert exe, "mpiexec not found"
    job = tmp_path / "job.toml"
    job.write_text(sleep_job(iterations=40, seconds=0.1))
    full = dict(
        os.environ,
        ENERGY_HPC_TEST_PIDDIR=str(tmp_path),
        ENERGY_HPC_SIGNAL_GRACE_S="4",
        ENERGY_HPC_PRETEND_NODES=str(nodes),
        ENERGY_HPC_GATHER_LAYOUT="nodes",
        **env,
    )
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parents[1]), full.get("PYTHONPATH", "")]))
    entry = "dying_entry.py" if "ENERGY_HPC_TEST_EXIT_RANK" in env else "fault_entry.py"
    cmd = [exe, *flags, "-n", str(ranks), sys.executable, str(HERE / entry), "run", str(job)]
    p = subprocess.Popen(
        [*cmd, "-o", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
    )
    try:
        return finish(p, 180)
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.slow
def test_a_real_run_on_pretend_nodes_is_written_per_node_and_merge_still_rebuilds_it(tmp_path: Path) -> None:
    rc, stdout, err = _fault_run(tmp_path, 4, 2, {"ENERGY_HPC_KEEP_SPILLS": "1"}, [])
    assert rc == 0, err[-3000:]
    index = Path(stdout.strip())
    tree = xr.open_datatree(index, engine="h5netcdf")
    assert tree.attrs["run_status"] == "complete" and tree.attrs["n_nodes"] == 2
    hosts = tree["ranks"]["host"].values.tolist()
    assert len(set(hosts)) == 2 and hosts[0].endswith("+p0") and hosts[3].endswith("+p1")
    assert tree["ranks"]["node"].values.tolist() == [0, 0, 1, 1]
    assert len(list((tmp_path / "out").glob("*.nodes/node-*.h5"))) == 2
    [spills] = (tmp_path / "out").glob(".*.spill")
    r = run_cli("merge", str(spills), "-o", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr
    merged = Path(r.stdout.strip())
    a, b = _energies(index), _energies(merged)
    assert a.keys() == b.keys() and len(a) > 0
    np.testing.assert_allclose(list(a.values()), [b[k] for k in a], rtol=1e-9)
    t = run_cli("table", str(tmp_path / "out"), str(tmp_path / "merged"), "--format", "json")
    assert t.returncode == 0, t.stderr  # the index and the merge of its spills: one run, counted once


@pytest.mark.slow
def test_a_node_leader_that_dies_is_read_from_its_node_s_spills(tmp_path: Path) -> None:
    """Rank 2 leads pretend node 1 (ranks 2, 3) and dies of an error mid-case; hydra
    (-disable-auto-cleanup) lets the others run on. Rank 0 writes node 1's file from the spills."""
    rc, stdout, err = _fault_run(
        tmp_path,
        4,
        2,
        {"ENERGY_HPC_TEST_EXIT_RANK": "2", "ENERGY_HPC_TEST_EXIT_AFTER": "1.5"},
        ["-disable-auto-cleanup"],
    )
    assert rc != 0
    out = tmp_path / "out"
    [index] = sorted(out.glob("*.h5"))
    assert stdout.strip() == str(index)
    tree = xr.open_datatree(index, engine="h5netcdf")
    assert tree.attrs["run_status"] == "partial"
    ranks = tree["ranks"].to_dataset()
    assert ranks["status"].values.tolist()[2:] == ["missing", "missing"], err[-3000:]
    assert "its node leader, rank 2, is gone" in ranks["error"].values[3]
    assert "recovered from its spill file" in ranks["error"].values[3]
    tr = tree["traces"].to_dataset()
    for r in (2, 3):
        row = int(np.flatnonzero(tr["rank"].values == r)[0])
        assert int(tr["n_samples"].values[row]) > 100  # what it measured is in the run
        assert np.isfinite(tr["power"].values[row, : int(tr["n_samples"].values[row])]).all()
    assert len(list(out.glob("*.nodes/node-*.h5"))) == 2
    [spills] = out.glob(".*.spill")
    assert sorted(p.name for p in spills.iterdir()) == ["rank-00002.h5", "rank-00003.h5"]
    assert run_cli("table", str(index)).returncode in (0, 1)
    r = run_cli("merge", str(spills), "-o", str(tmp_path / "merged"))
    assert r.returncode == 0, r.stderr
