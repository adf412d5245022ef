"""[measure] trials, trial_order and seed, cool-down between cases and the steady-state warm-up rule: a real
run (a paced test task, the synthetic sensor at constant power, so a window's true energy is power x its
length) read back from its HDF5 file, and the table's trial spread checked against that truth."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import pytest
from helpers import single_rank

from energy_hpc.analysis.table import energy_table, trial_spread
from energy_hpc.context import SingleComm
from energy_hpc.errors import SpecError
from energy_hpc.jobtypes import run_order
from energy_hpc.run import run_job, steady_state
from energy_hpc.spec import parse_job
from energy_hpc.workloads import registry
from energy_hpc.workloads.base import StageFn, Units, Workload
from energy_hpc.workloads.options import Option

CTX = single_rank()
POWER_W = 100.0  # the synthetic sensor's constant power (amp_W = 0)
WARMUP_S = (0.2, 0.1, 0.05)  # warm-up iteration lengths, then MEASURE_S from the fourth on
MEASURE_S = 0.05


class Paced(Workload):
    """A test task with known timing: its iterations sleep WARMUP_S then MEASURE_S; the k-th load of a
    batch size makes batch_size x (k + 1) units per iteration, so trials differ by a known factor."""

    unit = "tick"
    description = "paced iterations (test)"
    OPTIONS: ClassVar[dict[str, Option]] = {}
    loads: ClassVar[dict[int, int]] = defaultdict(int)

    @classmethod
    def prepare(cls, case) -> None:
        pass

    def load(self) -> None:
        self.per_iteration = self.case.batch_size * (Paced.loads[self.case.batch_size] + 1)
        Paced.loads[self.case.batch_size] += 1
        self.calls = 0

    def run(self, iteration: int, stage: StageFn) -> Units:
        time.sleep(WARMUP_S[self.calls] if self.calls < len(WARMUP_S) else MEASURE_S)
        self.calls += 1
        return Units(units=self.per_iteration)


@pytest.fixture
def paced() -> Iterator[None]:
    registry.register_task("paced", Paced)
    Paced.loads.clear()
    try:
        yield
    finally:
        registry.TASKS.pop("paced", None)


def _job(measure: str, cases: str = "batch_size = [1, 2]\n") -> str:
    return (
        '[job]\nname = "trials"\n[measure]\ndevice = "cpu"\nsensors = ["synthetic"]\nidle_seconds = 0.1\n'
        f"interval_ms = 5\n{measure}\n"
        "[measure.sensor_options.synthetic]\nbase_W = 100.0\namp_W = 0.0\n"
        f'[[case]]\ntask = "paced"\nmodel = "none"\nsource = "hub"\n{cases}'
    )


# ---------------------------------------------------------------- job file


def test_trials_repeat_every_case_with_a_trial_index_and_the_same_parameters(paced: None) -> None:
    job = parse_job(_job("trials = 3"))
    assert [(c.index, c.trial, c.batch_size) for c in job.cases] == [
        (0, 0, 1),
        (1, 0, 2),
        (2, 1, 1),
        (3, 1, 2),
        (4, 2, 1),
        (5, 2, 2),
    ]
    assert job.cases[0].params() == job.cases[2].params() == job.cases[4].params()
    assert job.measure.trial_order == "random"  # the default with more than one trial
    assert parse_job(_job("")).measure.trial_order == "sequential"  # one trial: the job file's order


@pytest.mark.parametrize(
    ("measure", "says"),
    [
        ('warmup = "stable"', 'use a number of iterations or "steady"'),
        ("steady_tolerance = 0.1", 'applies only with warmup = "steady"'),
        ("max_warmup = 5", 'applies only with warmup = "steady"'),
        ('warmup = "steady"\nsteady_tolerance = 0', "steady_tolerance = 0 is out of range"),
        ('warmup = "steady"\nmax_warmup = 1', "max_warmup = 1 is out of range"),
        ("trials = 0", "trials = 0 is out of range"),
        ("trials = 2.5", "trials must be an integer"),
        ('trial_order = "shuffled"', "trial_order = 'shuffled' is not one of random, sequential"),
        ('trials = 2\ntrial_order = "sequential"\nseed = 4', 'only with trial_order = "random"'),
        ("trials = 2\nseed = -1", "seed = -1 is out of range"),
    ],
)
def test_a_bad_trial_or_warmup_setting_is_refused_in_one_line(paced: None, measure: str, says: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_job(_job(measure))
    msg = str(err.value)
    assert says in msg and "\n" not in msg


def test_trials_count_against_the_most_cases_a_job_may_have(paced: None) -> None:
    with pytest.raises(SpecError, match="11 cases x 1000 trials = 11000 runs of a case, more than 10000"):
        parse_job(_job("trials = 1000", "batch_size = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n"))


def test_a_random_order_is_a_permutation_fixed_by_its_seed() -> None:
    assert run_order(6, "sequential", 123) == [0, 1, 2, 3, 4, 5]
    orders = {tuple(run_order(6, "random", seed)) for seed in range(20)}
    assert all(sorted(o) == list(range(6)) for o in orders)
    assert len(orders) > 10  # shuffled, not fixed
    assert run_order(6, "random", 7) == run_order(6, "random", 7)


def test_steady_state_needs_two_iterations_within_the_tolerance() -> None:
    assert not steady_state([0.2], 0.2)
    assert not steady_state([0.2, 0.1], 0.2)
    assert steady_state([0.2, 0.1, 0.11], 0.2)
    assert not steady_state([0.1, 0.13], 0.2)


def test_trial_spread_is_the_sample_deviation_of_trial_means_over_the_pooled_mean() -> None:
    trials = [(10.0, 1.0), (10.0, 2.0), (30.0, 3.0)]  # 10, 5, 10 J per unit
    pooled = 50.0 / 6.0
    spread, n = trial_spread(trials, pooled)
    assert n == 3
    assert spread == pytest.approx(100.0 * np.std([10.0, 5.0, 10.0], ddof=1) / pooled, rel=1e-12)
    assert np.isnan(trial_spread(trials[:1], pooled)[0])


# ---------------------------------------------------------------- a real run


@pytest.fixture
def trial_run(paced: None, tmp_path: Path) -> Path:
    job = parse_job(
        _job(
            'trials = 2\nseed = 11\niterations = 3\nwarmup = "steady"\nsteady_tolerance = 0.2\ncooldown_seconds = 0.1'
        ),
        tmp_path / "job.toml",
    )
    result = run_job(job, tmp_path / "out", CTX, SingleComm())
    assert result.status == "complete" and result.path is not None
    return result.path


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, object]]:
    with h5py.File(path) as f:
        windows = {k: f["windows"][k][()] for k in f["windows"] if k != "window"}
        cases = {k: f["cases"][k][()] for k in f["cases"] if k != "case"}
        attrs = dict(f.attrs)
    for table in (windows, cases):
        for k, v in table.items():
            if v.dtype.kind in "OS":
                table[k] = np.array([x.decode() if isinstance(x, bytes) else str(x) for x in v])
    return windows, cases, attrs


def test_the_run_file_records_trials_their_order_and_seed(trial_run: Path) -> None:
    windows, cases, attrs = _read(trial_run)
    assert list(cases["trial"]) == [0, 0, 1, 1]
    assert int(attrs["trials"]) == 2 and attrs["trial_order"] == "random" and int(attrs["trial_seed"]) == 11
    assert list(np.argsort(cases["order"])) == run_order(4, "random", 11)
    # the cases ran in that order: their load windows start in it
    load = windows["phase"] == "load"
    ran = windows["case"][load][np.argsort(windows["start"][load])]
    assert list(ran) == run_order(4, "random", 11)
    assert all(json.loads(p)["batch_size"] in (1, 2) for p in cases["params"])


def test_a_cooldown_window_follows_every_case(trial_run: Path) -> None:
    windows, _, _ = _read(trial_run)
    cool = windows["phase"] == "cooldown"
    assert list(windows["iteration"][cool]) == [0, 1, 2, 3] and set(windows["case"][cool]) == {-1}
    loads = np.sort(windows["start"][windows["phase"] == "load"])
    starts = np.sort(windows["start"][cool])
    assert np.all(starts[:-1] < loads[1:]) and np.all(starts > loads)
    assert np.all(windows["end"][cool] - windows["start"][cool] >= 0.1)


def test_steady_warmup_stops_once_the_iteration_time_settles(trial_run: Path) -> None:
    windows, cases, _ = _read(trial_run)
    assert set(cases["warmup_rule"]) == {"steady 0.2 max 20"}
    warm = windows["phase"] == "warmup"
    # 0.2, 0.1, 0.05 s then 0.05 s: the fourth is the first within 20 % of the one before
    assert [int((warm & (windows["case"] == c)).sum()) for c in range(4)] == [4, 4, 4, 4]


def test_trials_pool_into_one_row_whose_spread_matches_the_true_energy(trial_run: Path) -> None:
    windows, cases, _ = _read(trial_run)
    rows = energy_table([trial_run])
    assert len(rows) == 2
    measured = (windows["phase"] == "measure") & (windows["stage"] == "")
    for row in rows:
        mine = [c for c in range(4) if json.loads(cases["params"][c])["batch_size"] == row["batch_size"]]
        # truth: constant power x each window's length, and the units each trial made
        per_trial = []
        for c in mine:
            sel = measured & (windows["case"] == c)
            per_trial.append(
                (
                    POWER_W * float((windows["end"][sel] - windows["start"][sel]).sum()),
                    float(windows["units"][sel].sum()),
                )
            )
        pooled = sum(e for e, _ in per_trial) / sum(u for _, u in per_trial)
        means = [e / u for e, u in per_trial]
        assert row["n_trials"] == 2 and row["iterations"] == 6
        assert row["energy_per_unit_J"] == pytest.approx(pooled, rel=0.01)
        assert row["trial_spread_pct"] == pytest.approx(100.0 * np.std(means, ddof=1) / pooled, rel=0.02)
        # the second load of a batch size makes twice the units: the trials really differ by ~2x
        assert max(means) / min(means) == pytest.approx(2.0, rel=0.1)


def test_a_run_rebuilt_from_its_spills_keeps_the_trial_plan_and_the_slurm_settings(
    paced: None, tmp_path: Path
) -> None:
    """``energy-hpc merge`` of a run's kept spills writes the same trial attributes and the settings Slurm
    applied as the run file itself (they used to be lost: the spill carried only the fixed header)."""
    from energy_hpc import settings
    from energy_hpc.spill import rebuild

    job = parse_job(_job("trials = 2\nseed = 5\niterations = 2"), tmp_path / "job.toml")
    applied = '{"gpu_freq": "1200"}'
    with settings.override(scheduler_settings=applied):
        result = run_job(job, tmp_path / "out", CTX, SingleComm(), keep_spills=True)
    assert result.path is not None
    spill_dirs = sorted((tmp_path / "out").glob(".*.spill"))
    assert len(spill_dirs) == 1
    merged, _ = rebuild(spill_dirs, tmp_path / "merged")
    _, _, original = _read(result.path)
    _, _, rebuilt = _read(merged)
    for key in ("trials", "trial_order", "trial_seed", "scheduler_settings"):
        assert str(rebuilt[key]) == str(original[key]), key
    assert json.loads(str(rebuilt["scheduler_settings"])) == {"gpu_freq": "1200"}
    assert int(rebuilt["rebuilt_from_spills"]) == 1
