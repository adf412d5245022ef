"""The Pareto front of energy and time over a swept setting (analysis/knobs.py)."""

from __future__ import annotations

import math

import pytest

from energy_hpc.analysis.knobs import knob_rows, pareto_front, swept_knob
from energy_hpc.errors import UserError


def test_the_front_keeps_points_no_other_beats_on_both() -> None:
    pts = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0), (2.5, 2.5), (math.nan, 0.1)]
    assert pareto_front(pts) == [True, True, True, False, False]


def test_equal_points_are_both_on_the_front() -> None:
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [True, True]


def _row(cap: float | None, e: float, t: float) -> dict:
    case = {"task": "t"} | ({"power_cap_W": cap} if cap is not None else {})
    return {"case": case, "energy_per_unit_J": e, "seconds_per_unit": t, "unit": "image"}


def test_knob_rows_are_sorted_by_the_setting_and_skip_rows_without_it() -> None:
    rows = [_row(400, 10.0, 1.0), _row(200, 6.0, 1.3), _row(300, 7.0, 1.4), _row(None, 1.0, 1.0)]
    assert swept_knob(rows) == "power_cap_W"
    got = knob_rows(rows)
    assert [(k["value"], k["pareto"]) for k in got] == [(200.0, True), (300.0, False), (400.0, True)]


def test_the_figure_without_a_swept_setting_says_what_it_needs() -> None:
    from energy_hpc.analysis.knobs import knob_figure

    with pytest.raises(UserError, match="power_cap_W"):
        knob_figure([_row(None, 1.0, 1.0)])


def _model_row(model: str, unit: str, knob: str, value: float, e: float, t: float) -> dict:
    case = {"task": "t", "model": model, "dtype": "bf16", "batch_size": 8, "label": "sweep", knob: value}
    return {"case": case, "energy_per_unit_J": e, "seconds_per_unit": t, "unit": unit}


def test_each_model_is_its_own_line_with_its_own_front() -> None:
    """Two models sweep the same cap (the shipped jobs/power-caps.toml does): a cheap per-token point of
    one model must not push the other model's points off their front, and no line joins the two."""
    rows = [
        _model_row("llm", "token", "power_cap_W", 300, 0.02, 0.010),
        _model_row("llm", "token", "power_cap_W", 700, 0.03, 0.008),
        _model_row("sd", "image", "power_cap_W", 300, 900.0, 6.0),
        _model_row("sd", "image", "power_cap_W", 700, 1100.0, 5.0),
    ]
    got = knob_rows(rows, "power_cap_W")
    assert len({r["series"] for r in got}) == 2
    # every point is on its own model's front: each trades energy for time within its model
    assert all(r["pareto"] for r in got)
    # treated as one series, the LLM's points would beat the SD points on both axes
    assert pareto_front([(r["energy_per_unit_J"], r["seconds_per_unit"]) for r in got]) == [
        True, True, False, False,
    ]  # fmt: skip
    assert [r["series_label"] for r in got] == ["llm bf16 b8", "llm bf16 b8", "sd bf16 b8", "sd bf16 b8"]


def test_a_cap_sweep_and_a_clock_sweep_are_two_knobs_each_with_its_panels() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from energy_hpc.analysis.knobs import knob_figure, swept_knobs

    rows = [
        _model_row("llm", "token", "power_cap_W", 300, 0.02, 0.010),
        _model_row("llm", "token", "power_cap_W", 700, 0.03, 0.008),
        _model_row("llm", "token", "gpu_clock_MHz", 1000, 0.021, 0.012),
        _model_row("llm", "token", "gpu_clock_MHz", 1980, 0.028, 0.008),
    ]
    assert swept_knobs(rows) == ["power_cap_W", "gpu_clock_MHz"]
    fig = knob_figure(rows)
    assert len(fig.axes) == 6  # a row of three panels per knob
    # the energy panel of each row draws exactly that knob's two points
    assert [list(ax.lines[0].get_xdata()) for ax in (fig.axes[0], fig.axes[3])] == [[300, 700], [1000, 1980]]
