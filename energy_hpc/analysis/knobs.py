"""Energy against a device setting: energy per unit and time per unit of the table's rows against the
power cap or a clock the cases swept (``power_cap_W``, ``gpu_clock_MHz``, ``memory_clock_MHz``), with the
Pareto front of the two marked (the settings no other setting beats on both energy and time).

Rows are :func:`energy_hpc.analysis.table.energy_table` rows; a job-file setting is read from each row's
case parameters, a setting Slurm applied (``slurm_gpu_power_W``, ``slurm_gpu_freq`` where it is a number
of MHz) from the row's column of it, so rows without it are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from energy_hpc.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# set by the job file (case parameters), then by Slurm (table columns of the run's scheduler_settings)
CASE_KNOBS = ("power_cap_W", "gpu_clock_MHz", "memory_clock_MHz")
SLURM_KNOBS = ("slurm_gpu_power_W", "slurm_gpu_freq")
KNOB_NAMES = CASE_KNOBS + SLURM_KNOBS


def knob_value(row: dict[str, Any], knob: str) -> float | None:
    """The row's value of ``knob`` as a number, or None where the row does not set it (a Slurm
    ``--gpu-freq`` given as a level, ``high`` or ``low``, is no number and is left out too)."""
    value = row.get(knob) if knob in SLURM_KNOBS else (row.get("case") or {}).get(knob)
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def swept_knob(rows: Sequence[dict[str, Any]]) -> str | None:
    """The first setting that takes two or more values over ``rows`` (None if none does)."""
    for k in KNOB_NAMES:
        if len({knob_value(r, k) for r in rows} - {None}) > 1:
            return k
    return None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For each (energy, time) point, whether no other point is at least as good in both and better in
    one (both minimised). Points with a NaN are never on the front."""
    out = []
    for i, (e, t) in enumerate(points):
        if not (math.isfinite(e) and math.isfinite(t)):
            out.append(False)
            continue
        dominated = any(
            j != i and e2 <= e and t2 <= t and (e2 < e or t2 < t)
            for j, (e2, t2) in enumerate(points)
            if math.isfinite(e2) and math.isfinite(t2)
        )
        out.append(not dominated)
    return out


def knob_rows(rows: Sequence[dict[str, Any]], knob: str | None = None) -> list[dict[str, Any]]:
    """One row per table row that sets ``knob`` (default: the one swept), sorted by its value: the
    value, energy per unit (J) with its uncertainty, seconds per unit, and ``pareto`` (on the front)."""
    knob = knob or swept_knob(rows)
    if knob is None:
        return []
    if knob not in KNOB_NAMES:
        raise UserError(f"{knob!r} is not a device setting; the knobs are: {', '.join(KNOB_NAMES)}")
    picked = [r for r in rows if knob_value(r, knob) is not None]
    picked.sort(key=lambda r: knob_value(r, knob) or 0.0)
    pts = [
        (float(r.get("energy_per_unit_J", math.nan)), float(r.get("seconds_per_unit", math.nan)))
        for r in picked
    ]
    front = pareto_front(pts)
    return [
        {
            "knob": knob,
            "value": knob_value(r, knob),
            "energy_per_unit_J": e,
            "energy_per_unit_uncertainty_J": float(r.get("energy_per_unit_uncertainty_J", math.nan)),
            "seconds_per_unit": t,
            "unit": r.get("unit", ""),
            "data": r.get("data", "measured"),
            "pareto": on,
            # what the device enforced, as read back (NaN where the run could not read its device)
            "power_limit_W": float(r.get("power_limit_W", math.nan)),
        }
        for r, (e, t), on in zip(picked, pts, front, strict=True)
    ]


def knob_figure(rows: Sequence[dict[str, Any]], knob: str | None = None) -> Figure:
    """Energy per unit and seconds per unit against the setting, and energy against time with the
    Pareto front joined; the title says what the data is (measured, EMULATED, ...)."""
    from energy_hpc.analysis.plots import _figure, _rows_label

    krows = knob_rows(rows, knob)
    if not krows:
        raise UserError(
            "no run of these sets a power cap or clock; the knobs figure needs cases with power_cap_W, "
            "gpu_clock_MHz or memory_clock_MHz, or runs Slurm gave --gpu-power or --gpu-freq in MHz"
        )
    name, unit = krows[0]["knob"], krows[0]["unit"]
    x = [r["value"] for r in krows]
    e = [r["energy_per_unit_J"] for r in krows]
    de = [
        0.0 if math.isnan(r["energy_per_unit_uncertainty_J"]) else r["energy_per_unit_uncertainty_J"]
        for r in krows
    ]
    t = [r["seconds_per_unit"] for r in krows]
    fig = _figure(12.0, 4.0)
    ax_e, ax_t, ax_p = fig.subplots(1, 3)
    ax_e.errorbar(x, e, yerr=de, marker="o", capsize=3)
    ax_e.set_xlabel(name, fontsize=8)
    ax_e.set_ylabel(f"J per {unit}", fontsize=8)
    ax_t.plot(x, t, marker="o", color="tab:orange")
    ax_t.set_xlabel(name, fontsize=8)
    ax_t.set_ylabel(f"s per {unit}", fontsize=8)
    ax_p.scatter(t, e, color=["tab:red" if r["pareto"] else "tab:gray" for r in krows])
    front = sorted((r["seconds_per_unit"], r["energy_per_unit_J"]) for r in krows if r["pareto"])
    if front:
        ax_p.plot([p[0] for p in front], [p[1] for p in front], color="tab:red", label="Pareto front")
        ax_p.legend(fontsize=7)
    for r in krows:
        ax_p.annotate(f"{r['value']:g}", (r["seconds_per_unit"], r["energy_per_unit_J"]), fontsize=7)
    ax_p.set_xlabel(f"s per {unit}", fontsize=8)
    ax_p.set_ylabel(f"J per {unit}", fontsize=8)
    fig.suptitle(f"Energy and time against {name} - {_rows_label(list(rows))}", fontsize=9)
    return fig
