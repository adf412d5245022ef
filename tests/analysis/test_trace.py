"""``energy-hpc trace``: a run as Chrome trace-event / Perfetto JSON and as OTF2, read back.

The main run is real: two MPI ranks (the test kit's ``sleep`` task) sampling the synthetic sensor, and the
node leader an EMULATED Cray EX node (pm_counters), so there are rank tracks, a node track, device and
node-level counters, and emulated data to label. Closed-form runs built with the RunWriter add stage
windows, a window that overlaps the next, and a long trace with one spike.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _runs import build, case_row, channel, window
from helpers import REPO, mpiexec

from energy_hpc.analysis.reduce import reduce_run
from energy_hpc.analysis.runfile import RunFile
from energy_hpc.analysis.trace import NS, export
from energy_hpc.cli import main

JOB = """
[job]
name = "trace"
[measure]
interval_ms = 5
idle_seconds = 0.3
cooldown_seconds = 0.1
warmup = 1
iterations = 3
spill_seconds = 5
sensors = ["synthetic", "emulated:cray-ex"]
[[case]]
task = "sleep"
model = "none"
source = "hub"
[case.options]
seconds = 0.2
"""


@pytest.fixture(scope="module")
def mpi_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-rank run (about 3 s)."""
    launcher = mpiexec()
    if launcher is None:
        pytest.fail("mpiexec not found: install the mpich wheel (pip install energy-hpc[mpich])")
    d = tmp_path_factory.mktemp("trace-run")
    (d / "job.toml").write_text(JOB)
    entry = REPO / "tests" / "reliability" / "fault_entry.py"
    r = subprocess.run(
        [
            launcher,
            "-n",
            "2",
            sys.executable,
            str(entry),
            "-q",
            "run",
            str(d / "job.toml"),
            "-o",
            str(d / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    (path,) = (d / "out").glob("*.h5")
    return path


def _load(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _check_well_formed(events: list[dict[str, Any]]) -> None:
    """Every event has what the trace-event format requires for its phase."""
    for ev in events:
        assert isinstance(ev["name"], str) and ev["name"], ev
        assert isinstance(ev["pid"], int) and not isinstance(ev["pid"], bool), ev
        ph = ev["ph"]
        assert ph in ("M", "X", "C"), ev
        if ph == "M":
            assert isinstance(ev["tid"], int)
            key = {
                "process_name": "name",
                "thread_name": "name",
                "process_sort_index": "sort_index",
                "thread_sort_index": "sort_index",
                "process_labels": "labels",
            }[ev["name"]]
            assert set(ev["args"]) == {key}
        elif ph == "X":
            assert isinstance(ev["tid"], int)
            assert _is_num(ev["ts"]) and _is_num(ev["dur"]) and ev["dur"] >= 0, ev
            assert isinstance(ev["args"], dict)
        else:
            assert _is_num(ev["ts"]) and set(ev["args"]) == {"W"} and _is_num(ev["args"]["W"]), ev


def _check_nested(events: list[dict[str, Any]]) -> None:
    """On each thread, two spans are either apart or one inside the other."""
    by_thread: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for ev in events:
        if ev["ph"] == "X":
            by_thread[ev["pid"], ev["tid"]].append((ev["ts"], ev["ts"] + ev["dur"]))
    for spans in by_thread.values():
        stack: list[float] = []
        for a, b in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= a + 1e-6:
                stack.pop()
            assert not stack or b <= stack[-1] + 1e-6, (a, b, stack)
            stack.append(b)


def _samples(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each counter's samples from the run file: (time, power, energy), by track name."""
    from energy_hpc.analysis.trace import channel_name

    with RunFile(path) as rf:
        return {
            channel_name(m): (tr.time, tr.power, tr.energy)
            for m, tr in zip(rf.channel_meta, rf.iter_traces(), strict=True)
        }


def _counters(events: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for ev in events:
        if ev["ph"] == "C":
            out[ev["name"]].append((ev["ts"], ev["args"]["W"]))
    return {k: (np.array([t for t, _ in v]), np.array([w for _, w in v])) for k, v in out.items()}


# ------------------------------------------------------------------ Perfetto JSON


@pytest.mark.mpi
def test_json_has_a_process_per_node_a_track_per_rank_and_every_window_with_its_energy(
    mpi_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run.json"
    assert main(["trace", str(mpi_run), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    doc = _load(out)
    events = doc["traceEvents"]
    _check_well_formed(events)
    _check_nested(events)

    meta = {(e["name"], e["pid"], e["tid"]): e["args"] for e in events if e["ph"] == "M"}
    with RunFile(mpi_run) as rf:
        host = str(rf.ranks["host"].values[0])
    procs = [a["name"] for (n, _, _), a in meta.items() if n == "process_name"]
    assert procs == [f"node 0 ({host}) [EMULATED cray-ex]"]
    threads = sorted(a["name"] for (n, _, _), a in meta.items() if n == "thread_name")
    assert threads[:2] == [f"node sensors ({host})", "rank 0"]
    assert threads[2:] == ["rank 1"]
    assert doc["otherData"]["data_kind"] == "EMULATED cray-ex"
    assert "SYNTHETIC" in doc["otherData"]["data"] and doc["otherData"]["decimated"] is False

    # every window of the file, on its rank's thread, at its time, with the reduction's energy
    red = reduce_run(mpi_run)
    w = red.windows
    spans = [e for e in events if e["ph"] == "X" and e["tid"] in (1, 2)]
    n_file = int(np.sum(w["phase"] != "shared"))
    assert len(spans) == n_file == 14
    by_edge = {(e["tid"] - 1, e["ts"]): e for e in spans}
    for i in range(n_file):
        ev = by_edge[int(w["rank"][i]), round(float(w["start"][i]) * 1e6, 3)]
        assert ev["ts"] + ev["dur"] == pytest.approx(float(w["end"][i]) * 1e6, abs=2e-3)
        assert ev["args"]["phase"] == w["phase"][i] and ev["args"]["iteration"] == int(w["iteration"][i])
        assert ev["args"]["case"] == int(w["case"][i]) and ev["args"]["units"] == float(w["units"][i])
    measured = 0
    for ch in red.channels:
        if ch.role.node_level:
            continue
        name = str(ch.meta["name"])
        for j, i in enumerate(ch.own_idx):
            ev = by_edge[int(w["rank"][i]), round(float(w["start"][i]) * 1e6, 3)]
            assert ev["args"]["energy_J"][name] == pytest.approx(float(ch.own.energy_J[j]), rel=1e-12)
            assert ev["args"]["uncertainty_J"][name] == pytest.approx(
                float(ch.own.uncertainty_J[j]), rel=1e-12
            )
            assert ev["args"]["method"][name] == "synthetic"
            measured += 1
        idle = [e for e in spans if e["name"] == "idle baseline" and e["tid"] - 1 == int(ch.meta["rank"])]
        assert len(idle) == 1 and idle[0]["args"]["idle_W"][name] == pytest.approx(ch.idle_W)
    assert measured == 6  # 3 iterations on each of 2 ranks

    # the node track: node windows with the node-level channels' energies
    node_spans = [e for e in events if e["ph"] == "X" and e["tid"] == 3]
    assert [e["name"] for e in node_spans] == ["idle baseline", "node: measured [none fp32 b1]"]
    node_ch = next(c for c in red.channels if c.meta["name"] == "pm_counters:node")
    assert node_spans[1]["args"]["energy_J"]["pm_counters:node"] == pytest.approx(
        float(node_ch.node.energy_J[0])
    )


@pytest.mark.mpi
def test_json_counters_equal_the_run_files_samples(mpi_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    export(mpi_run, out)
    events = _load(out)["traceEvents"]
    counters = _counters(events)
    samples = _samples(mpi_run)
    assert set(counters) == set(samples) and len(samples) == 9
    pid_of = {e["name"]: e["pid"] for e in events if e["ph"] == "C"}
    assert set(pid_of.values()) == {1}  # every channel under its node's process
    for name, (t, p, _) in samples.items():
        ok = np.isfinite(p)
        ts, vals = counters[name]
        np.testing.assert_array_equal(vals, p[ok].astype(float))
        np.testing.assert_array_equal(ts, (t[ok] * 1e6).round(3))
        assert len(vals) > 100


@pytest.mark.mpi
def test_decimated_json_keeps_each_buckets_lowest_and_highest_sample(
    mpi_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run.json.gz"
    assert main(["trace", str(mpi_run), "-o", str(out), "--max-points", "40"]) == 0
    err = capsys.readouterr().err
    assert "decimated" in err and "x fewer" in err and len(err.strip().splitlines()) == 1
    doc = _load(out)
    events = doc["traceEvents"]
    _check_well_formed(events)
    other = doc["otherData"]
    assert other["decimated"] is True and "decimated for display" in other["decimation_note"]
    counters = _counters(events)
    for name, (t, p, _) in _samples(mpi_run).items():
        dec = other["decimation"][name]
        k = dec["bucket_samples"]
        assert k > 1 and dec["samples"] == len(p) and dec["points"] == len(counters[name][0]) <= 40
        ts, vals = counters[name]
        idx = np.searchsorted((t * 1e6).round(3), ts)
        np.testing.assert_array_equal((t[idx] * 1e6).round(3), ts)  # every point is a sample
        np.testing.assert_array_equal(p[idx], vals)
        for b in range(-(-len(p) // k)):
            part = p[b * k : (b + 1) * k]
            shown = vals[idx // k == b]
            if not np.isfinite(part).any():
                assert len(shown) == 0
                continue
            assert shown.min() == np.nanmin(part) and shown.max() == np.nanmax(part)


def test_a_spike_survives_decimation_and_the_points_stay_within_the_limit(tmp_path: Path) -> None:
    def power(t: np.ndarray) -> np.ndarray:
        p = 100.0 + 10.0 * np.sin(t)
        p[123_457] = 900.0  # one sample
        return p

    run = build(
        tmp_path / "long.h5",
        [channel(0, power=power, t_end=200.0, name="g0", device="d0")],
        [window(0, -1, "idle", 1.0, 5.0), window(0, 0, "measure", 10.0, 190.0, 1)],
    )
    out = tmp_path / "long.json"
    export(run, out)  # 200,000 samples, 50,000 points by default
    doc = _load(out)
    (ts, vals) = _counters(doc["traceEvents"])["rank 0: g0"]
    assert len(vals) <= 50_000 and vals.max() == 900.0
    assert ts[vals.argmax()] == pytest.approx(123.457e6, abs=1.0)
    assert doc["otherData"]["decimation"]["rank 0: g0"]["samples"] == 200_000
    export(run, tmp_path / "all.json", max_points=0)
    assert len(_counters(_load(tmp_path / "all.json")["traceEvents"])["rank 0: g0"][1]) == 200_000


def test_stages_nest_under_their_iteration_and_an_overlapping_window_is_cut(tmp_path: Path) -> None:
    wins = [window(0, -1, "idle", 0.5, 1.5)]
    for i in range(2):
        a = 2.0 + 3 * i
        wins += [
            window(0, 0, "measure", a, a + 2.0, 1, iteration=i),
            window(0, 0, "measure", a, a + 1.2, 0, iteration=i, stage="prefill"),
            window(0, 0, "measure", a + 1.2, a + 2.0, 1, iteration=i, stage="decode"),
        ]
    wins.append(window(0, -1, "cooldown", 6.5, 8.0))  # starts inside iteration 1, ends after it
    run = build(
        tmp_path / "st.h5",
        [channel(0, power=100.0, t_end=10.0, name="g0", method="synthetic")],
        wins,
        cases=[case_row(task="text-generation", model="tiny-gpt2", label="gpt2")],
        synthetic=True,
    )
    out = tmp_path / "st.json"
    export(run, out)
    events = _load(out)["traceEvents"]
    _check_well_formed(events)
    _check_nested(events)
    names = [e["name"] for e in events if e["ph"] == "X"]
    assert names == ["idle baseline"] + ["iteration [gpt2]", "prefill [gpt2]", "decode [gpt2]"] * 2 + [
        "cool-down"
    ]
    stage = next(e for e in events if e["name"] == "prefill [gpt2]")
    assert stage["args"]["energy_J"]["g0"] == pytest.approx(120.0, rel=1e-6)
    cut = next(e for e in events if e["name"] == "cool-down")
    assert cut["ts"] + cut["dur"] == pytest.approx(7e6) and cut["args"]["true_end_s"] == 8.0
    procs = [e["args"]["name"] for e in events if e["name"] == "process_name"]
    assert procs == ["node 0 (h0) [SYNTHETIC]"]


def test_measured_data_carries_no_label(tmp_path: Path) -> None:
    run = build(
        tmp_path / "m.h5", [channel(0, power=50.0, t_end=3.0)], [window(0, 0, "measure", 1.0, 2.0, 1)]
    )
    doc = _load(Path(export(run, tmp_path / "m.json")))
    assert [e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"] == ["node 0 (h0)"]
    assert not any(e["name"] == "process_labels" for e in doc["traceEvents"])
    assert doc["otherData"]["data_kind"] == "measured"


# ------------------------------------------------------------------ OTF2


@pytest.mark.mpi
def test_otf2_reads_back_with_the_run_files_windows_and_samples(mpi_run: Path, tmp_path: Path) -> None:
    otf2 = pytest.importorskip("otf2")
    anchor = export(mpi_run, tmp_path / "run.otf2")
    assert anchor == tmp_path / "run.otf2" / "traces.otf2"
    red = reduce_run(mpi_run)
    w = red.windows
    with RunFile(mpi_run) as rf:
        base = round(float(rf.attrs["epoch_unix"]) * NS)
        metas = rf.channel_meta
        traces = {int(m["index"]): rf.trace(int(m["index"])) for m in metas}
    with otf2.reader.open(str(anchor)) as tr:
        assert tr.timer_resolution == NS
        locs = {loc.name for loc in tr.definitions.locations}
        assert {"rank 0", "rank 1"} <= locs and len(locs) == 2 + 1 + 9  # ranks, node track, channels
        regions = {r.name for r in tr.definitions.regions}
        assert "idle baseline" in regions and "iteration [none fp32 b1]" in regions
        enters: dict[str, list[tuple[int, str]]] = defaultdict(list)
        leaves: dict[str, int] = defaultdict(int)
        metrics: dict[str, list[tuple[int, list[float]]]] = defaultdict(list)
        last: dict[str, int] = {}
        for loc, ev in tr.events:
            assert ev.time >= last.get(loc.name, 0)  # each location in time order
            last[loc.name] = ev.time
            if isinstance(ev, otf2.events.Enter):
                enters[loc.name].append((ev.time, ev.region.name))
            elif isinstance(ev, otf2.events.Leave):
                leaves[loc.name] += 1
            elif isinstance(ev, otf2.events.Metric):
                units = [m.unit for m in ev.metric.members]
                assert units == ["W", "J"]
                metrics[loc.name].append((ev.time, list(ev.values)))
    for r in (0, 1):
        mine = np.flatnonzero((w["rank"] == r) & (w["phase"] != "shared"))
        assert len(enters[f"rank {r}"]) == leaves[f"rank {r}"] == len(mine) == 7
        want = sorted(base + round(float(w["start"][i]) * NS) for i in mine)
        assert [t for t, _ in enters[f"rank {r}"]] == want
    from energy_hpc.analysis.trace import channel_name

    for m in metas:
        tr_ = traces[int(m["index"])]
        got = metrics[channel_name(m)]
        assert len(got) == len(tr_.time) > 100
        assert [t for t, _ in got] == (base + np.rint(tr_.time * NS)).astype(np.int64).tolist()
        np.testing.assert_array_equal([v[0] for _, v in got], tr_.power.astype(float))
        np.testing.assert_array_equal([v[1] for _, v in got], tr_.energy)


# ------------------------------------------------------------------ the command's errors


def _one_line_error(capsys: pytest.CaptureFixture, *needles: str) -> None:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = build(
        tmp_path / "m.h5", [channel(0, power=50.0, t_end=3.0)], [window(0, 0, "measure", 1.0, 2.0, 1)]
    )
    assert main(["trace", str(tmp_path / "nope.h5"), "-o", str(tmp_path / "x.json")]) == 2
    _one_line_error(capsys, "nope.h5", "no such file")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert main(["trace", str(bad), "-o", str(tmp_path / "x.json")]) == 2
    _one_line_error(capsys, "not a readable HDF5 run file")
    assert main(["trace", str(run), "-o", str(tmp_path / "x.json"), "--format", "svg"]) == 2
    _one_line_error(capsys, "unknown trace format 'svg'", "perfetto", "otf2")
    assert main(["trace", str(run), "-o", str(tmp_path / "x.txt")]) == 2
    _one_line_error(capsys, "x.txt", "--format")
    assert main(["trace", str(run), "-o", str(tmp_path / "x.json"), "--max-points", "-3"]) == 2
    _one_line_error(capsys, "--max-points")
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".x*"))
    if importlib.util.find_spec("otf2") is not None:  # the folder check comes after the import
        taken = tmp_path / "taken.otf2"
        taken.mkdir()
        (taken / "keep").write_text("mine")
        assert main(["trace", str(run), "-o", str(taken)]) == 2
        _one_line_error(capsys, "taken.otf2", "exists")
        assert (taken / "keep").read_text() == "mine"


def test_otf2_without_the_package_names_the_extra(tmp_path: Path) -> None:
    run = build(
        tmp_path / "m.h5", [channel(0, power=50.0, t_end=3.0)], [window(0, 0, "measure", 1.0, 2.0, 1)]
    )
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("otf2", "_otf2"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from energy_hpc.cli import main
        sys.exit(main(["trace", {str(run)!r}, "-o", {str(tmp_path / "out")!r}, "--format", "otf2"]))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "energy-hpc: error: OTF2 export needs the otf2 package: pip install energy-hpc[trace]"
    ]
    assert not (tmp_path / "out").exists()
