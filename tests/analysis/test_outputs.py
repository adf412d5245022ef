"""Figures, reports, bad input, chunked reduction, and the analysis without torch or MPI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _runs import build, channel, rank_row, window

from energy_hpc.analysis.energy import channel_window_energy, reduce_channel
from energy_hpc.analysis.plots import energy_figure, power_figure, save, scaling_figure
from energy_hpc.analysis.report import write_report
from energy_hpc.analysis.runfile import RunFile
from energy_hpc.analysis.scaling import scaling_rows
from energy_hpc.analysis.table import energy_table
from energy_hpc.cli import main
from energy_hpc.errors import RunFileError


@pytest.fixture
def run2(tmp_path: Path) -> Path:
    """Two ranks, two cases, 3 iterations each, an idle window per rank; synthetic."""
    chans = [
        channel(r, power=lambda t: 100 + 50 * np.sin(t), name=f"c{r}", device=f"d{r}", method="synthetic")
        for r in (0, 1)
    ]
    wins = []
    for r in (0, 1):
        wins.append(window(r, -1, "idle", 0.5, 1.5))
        for c in (0, 1):
            for i in range(3):
                a = 2.0 + 8 * c + 2.5 * i
                wins.append(window(r, c, "measure", a, a + 2.0, 1 + c, iteration=i))
    from _runs import case_row

    return build(
        tmp_path / "run.h5",
        chans,
        wins,
        ranks=[rank_row(), rank_row(local_rank=1)],
        cases=[case_row(batch_size=1), case_row(batch_size=2)],
        synthetic=True,
    )


def test_power_figure_shades_every_window_and_draws_one_line_per_channel(run2: Path, tmp_path: Path) -> None:
    fig = power_figure(run2)
    axes = fig.axes
    assert len(axes) == 2
    for ax in axes:
        assert len(ax.lines) == 1
        assert len(ax.patches) == 1 + 6  # idle + 2 cases x 3 iterations
        assert len(ax.texts) == 2  # one label per case
    assert "SYNTHETIC" in fig._suptitle.get_text()
    paths = save(fig, tmp_path / "fig" / "power")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 5000 for p in paths)


def test_energy_figure_has_a_bar_with_an_error_bar_per_row(run2: Path) -> None:
    rows = energy_table([run2])
    ax = energy_figure(rows).axes[0]
    assert len(ax.patches) == len(rows) == 2
    from matplotlib.container import BarContainer

    bars = [c for c in ax.containers if isinstance(c, BarContainer) and len(c)]
    assert len(bars) == 1 and bars[0].errorbar is not None
    assert "SYNTHETIC" in ax.get_title()


def test_scaling_figure_draws_measured_and_ideal_lines(tmp_path: Path) -> None:
    files = []
    for n in (1, 2):
        chans = [channel(r, power=100.0, name=f"c{r}", node=r) for r in range(n)]
        wins = [window(r, 0, "measure", 2.0, 3.0, 1) for r in range(n)]
        files.append(
            build(tmp_path / f"n{n}.h5", chans, wins, ranks=[rank_row(node=r) for r in range(n)], n_nodes=n)
        )
    fig = scaling_figure(scaling_rows(energy_table(files)))
    ax_e, ax_t = fig.axes
    assert len(ax_t.lines) == 2  # measured + ideal
    assert len(ax_e.lines) >= 2


def test_report_writes_tables_figures_and_an_index(run2: Path, tmp_path: Path) -> None:
    index = write_report([run2], tmp_path / "rep")
    out = index.parent
    for name in (
        "table.md",
        "table.csv",
        "table.json",
        "table.tex",
        "energy_per_unit.png",
        "energy_per_unit.pdf",
        "index.html",
        f"power_{run2.stem}.png",
    ):
        assert (out / name).exists(), name
    text = index.read_text()
    assert "SYNTHETIC" in text and "energy_per_unit.png" in text
    assert "SYNTHETIC" in (out / "index.html").read_text()


def test_cli_table_over_a_study_folder_with_scaling(run2: Path, capsys) -> None:
    assert main(["table", str(run2.parent), "--scaling"]) == 0
    assert "efficiency" in capsys.readouterr().out
    assert main(["table", str(run2.parent), "--stages", "-f", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


# ------------------------------------------------------------------ bad input


def test_not_a_run_file_exits_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert main(["table", str(bad)]) == 2
    assert "not a readable HDF5 run file" in capsys.readouterr().err


def test_hdf5_that_is_not_a_run_file_is_named(tmp_path: Path) -> None:
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(RunFileError, match="not an energy-hpc run file"):
        RunFile(tmp_path / "other.h5")


def test_truncated_run_file_exits_2_with_a_clear_message(run2: Path, tmp_path: Path, capsys) -> None:
    data = run2.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    assert main(["table", str(cut)]) == 2
    err = capsys.readouterr().err
    assert "cut.h5" in err and ("damaged" in err or "not a readable" in err)


def test_partial_run_is_analysed_with_a_warning_naming_what_is_missing(tmp_path: Path, caplog) -> None:
    chans = [channel(0, power=100.0)]
    f = build(
        tmp_path / "p.h5",
        chans,
        [window(0, 0, "measure", 2.0, 4.0, 1)],
        ranks=[rank_row(), rank_row(local_rank=1, status="missing", error="rank died")],
        status="partial",
        reason="rank 1: missing: rank died",
    )
    (row,) = energy_table([f])
    assert row["energy_J"] == pytest.approx(200.0, rel=1e-6)
    assert any("partial run" in fl and "rank 1" in fl for fl in row["flags"])
    assert "no windows from rank(s) 1" in caplog.text


# ------------------------------------------------------------------ scale


def test_chunked_reduction_equals_the_one_shot_reduction() -> None:
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.uniform(0.005, 0.015, 20000))
    p = 100 + 30 * np.sin(t) + rng.normal(0, 2, len(t))
    p[5000:5100] = np.nan  # a gap
    e = np.concatenate([[0], np.cumsum(np.diff(t) * (p[1:] + p[:-1]) / 2)])
    e = np.where(np.isnan(e), np.nan, e)
    starts = np.sort(rng.uniform(t[0], t[-1] - 5, 40))
    ends = starts + rng.uniform(0.01, 5, 40)
    one = channel_window_energy(t, p, e, starts, ends, update_period=0.02)
    chunks = [(t[i : i + 777], p[i : i + 777], e[i : i + 777]) for i in range(0, len(t), 777)]
    many = reduce_channel(chunks, starts, ends, update_period=0.02)
    for k in ("counter_J", "integral_J", "energy_J", "uncertainty_J", "peak_W", "max_gap_s"):
        np.testing.assert_allclose(getattr(many, k), getattr(one, k), rtol=1e-9, err_msg=k)


def test_run_file_reduced_in_small_overlapping_chunks_equals_one_chunk(run2: Path) -> None:
    """The reader's chunk path (one-sample overlap, reused buffers, float32 power converted by the
    reduction) against the whole channel in one piece, on a real run file."""
    from energy_hpc.analysis.reduce import reduce_run

    whole = reduce_run(run2, chunk=1 << 24)
    small = reduce_run(run2, chunk=97)
    with RunFile(run2) as rf:
        assert max(int(m["n_samples"]) for m in rf.channel_meta) > 5 * 97  # really several chunks
    assert len(whole.channels) == len(small.channels) > 0
    for a, b in zip(whole.channels, small.channels, strict=True):
        for k in ("counter_J", "integral_J", "energy_J", "uncertainty_J", "peak_W", "max_gap_s"):
            np.testing.assert_allclose(
                getattr(b.own, k), getattr(a.own, k), rtol=1e-9, equal_nan=True, err_msg=k
            )
        assert b.idle_W == pytest.approx(a.idle_W, rel=1e-9)


def test_reused_chunk_buffers_hold_each_block_until_the_one_after_next(run2: Path) -> None:
    with RunFile(run2) as rf:
        fresh = [tuple(c.copy() for c in block) for block in rf.chunks(0, 50, overlap=1)]
        seen = []
        for block in rf.chunks(0, 50, overlap=1, reuse=True):
            seen.append(block)
            for col, want in zip(block, fresh[len(seen) - 1], strict=True):
                np.testing.assert_array_equal(col, want)
            if len(seen) >= 2:  # the block before is still intact
                for col, want in zip(seen[-2], fresh[len(seen) - 2], strict=True):
                    np.testing.assert_array_equal(col, want)
        assert len(seen) == len(fresh) > 3


def test_analysis_needs_neither_torch_nor_mpi(run2: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "mpi4py", "diffusers", "transformers"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from energy_hpc.analysis.table import energy_table
        from energy_hpc.analysis.plots import power_figure
        rows = energy_table([{str(run2)!r}])
        power_figure({str(run2)!r})
        assert len(rows) == 2 and rows[0]["energy_J"] > 0
        assert not any(m.split(".")[0] in ("torch", "mpi4py") for m in sys.modules)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
