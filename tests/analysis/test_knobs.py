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
