"""Energy against a device setting: energy per unit and time per unit of the table's rows against the
power cap or a clock the cases swept (``power_cap_W``, ``gpu_clock_MHz``, ``memory_clock_MHz``), with the
Pareto front of the two marked (the settings no other setting beats on both energy and time).

Rows are :func:`energy_hpc.analysis.table.energy_table` rows; a job-file setting is read from each row's
case parameters, a setting Slurm applied (``slurm_gpu_power_W``, ``slurm_gpu_freq`` where it is a number
of MHz) from the row's column of it, so rows without it are left out.
"""

from __future__ import annotations

import json
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


def series_key(row: dict[str, Any], knob: str) -> str:
    """What a row is a point of, apart from ``knob``: its case parameters without the knob (and without
    ``label``, which names the sweep rather than the model), plus the Slurm settings it does not sweep.
    Rows of one key make one line; a model, precision or batch size of its own is another line."""
    case = {k: v for k, v in (row.get("case") or {}).items() if k not in (knob, "label")}
    slurm = {k: row.get(k) for k in SLURM_KNOBS if k != knob and row.get(k) not in (None, "")}
    slurm = {k: v for k, v in slurm.items() if not (isinstance(v, float) and math.isnan(v))}
    return json.dumps({**case, **slurm}, sort_keys=True, default=str)


def series_label(row: dict[str, Any]) -> str:
    """``tiny-llama fp32 b8`` (model, precision, batch size) as the figure's legend names a line."""
    case = row.get("case") or {}
    return f"{case.get('model', '?')} {case.get('dtype', '')} b{case.get('batch_size', '?')}".replace(
        "  ", " "
    )


def knob_rows(rows: Sequence[dict[str, Any]], knob: str | None = None) -> list[dict[str, Any]]:
    """One row per table row that sets ``knob`` (default: the one swept), sorted by series and then by
    the value: the value, energy per unit (J) with its uncertainty, seconds per unit, ``series`` (the
    model configuration the point belongs to, :func:`series_key`) and ``pareto`` (on the front of its
    own series: settings are compared only within one model, precision and batch size)."""
    knob = knob or swept_knob(rows)
    if knob is None:
        return []
    if knob not in KNOB_NAMES:
        raise UserError(f"{knob!r} is not a device setting; the knobs are: {', '.join(KNOB_NAMES)}")
    picked = [r for r in rows if knob_value(r, knob) is not None]
    picked.sort(key=lambda r: (series_key(r, knob), knob_value(r, knob) or 0.0))
    out: list[dict[str, Any]] = []
    for key in dict.fromkeys(series_key(r, knob) for r in picked):
        members = [r for r in picked if series_key(r, knob) == key]
        pts = [
            (float(r.get("energy_per_unit_J", math.nan)), float(r.get("seconds_per_unit", math.nan)))
            for r in members
        ]
        front = pareto_front(pts)
        out += [
            {
                "knob": knob,
                "value": knob_value(r, knob),
                "series": key,
                "series_label": series_label(r),
                "energy_per_unit_J": e,
                "energy_per_unit_uncertainty_J": float(r.get("energy_per_unit_uncertainty_J", math.nan)),
                "seconds_per_unit": t,
                "unit": r.get("unit", ""),
                "data": r.get("data", "measured"),
                "pareto": on,
                # what the device enforced, as read back (NaN where the run could not read its device)
                "power_limit_W": float(r.get("power_limit_W", math.nan)),
            }
            for r, (e, t), on in zip(members, pts, front, strict=True)
        ]
    return out


def swept_knobs(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every setting that takes two or more values within one series (a case sweeping the cap and
    another sweeping the clock are two knobs, each drawn in its own row of panels)."""
    out = []
    for k in KNOB_NAMES:
        by_series: dict[str, set[float]] = {}
        for r in rows:
            v = knob_value(r, k)
            if v is not None:
                by_series.setdefault(series_key(r, k), set()).add(v)
        if any(len(v) > 1 for v in by_series.values()):
            out.append(k)
    return out


def knob_figure(rows: Sequence[dict[str, Any]], knob: str | None = None) -> Figure:
    """For each swept setting (or ``knob``) a row of three panels: energy per unit and time per unit
    against the setting, and energy against time with each series' Pareto front joined. One line per
    series (model, precision, batch size); the title says what the data is (measured, EMULATED, ...)."""
    from energy_hpc.analysis.plots import _figure, _rows_label

    knobs = [knob] if knob else swept_knobs(rows)
    blocks = [(k, knob_rows(rows, k)) for k in knobs]
    blocks = [(k, kr) for k, kr in blocks if kr]
    if not blocks:
        raise UserError(
            "no run of these sets a power cap or clock; the knobs figure needs cases with power_cap_W, "
            "gpu_clock_MHz or memory_clock_MHz, or runs Slurm gave --gpu-power or --gpu-freq in MHz"
        )
    fig = _figure(12.0, 3.6 * len(blocks) + 0.4)
    axes = fig.subplots(len(blocks), 3, squeeze=False)
    for (name, krows), (ax_e, ax_t, ax_p) in zip(blocks, axes, strict=True):
        t_all = [r["seconds_per_unit"] for r in krows if math.isfinite(r["seconds_per_unit"])]
        ms = bool(t_all) and max(t_all) < 0.1  # a per-token time reads better in ms
        scale, t_name = (1000.0, "ms") if ms else (1.0, "s")
        units = sorted({str(r["unit"]) for r in krows})
        unit = units[0] if len(units) == 1 else "unit (" + ", ".join(units) + ")"
        for i, key in enumerate(dict.fromkeys(r["series"] for r in krows)):
            sr = [r for r in krows if r["series"] == key]
            color = f"C{i % 10}"
            label = f"{sr[0]['series_label']} ({sr[0]['unit']})" if len(units) > 1 else sr[0]["series_label"]
            x = [r["value"] for r in sr]
            e = [r["energy_per_unit_J"] for r in sr]
            de = [
                0.0 if math.isnan(r["energy_per_unit_uncertainty_J"]) else r["energy_per_unit_uncertainty_J"]
                for r in sr
            ]
            t = [r["seconds_per_unit"] * scale for r in sr]
            ax_e.errorbar(x, e, yerr=de, marker="o", capsize=3, color=color, label=label)
            ax_t.plot(x, t, marker="o", color=color)
            ax_p.scatter(t, e, color=[color if r["pareto"] else "tab:gray" for r in sr], zorder=3)
            front = sorted((r["seconds_per_unit"] * scale, r["energy_per_unit_J"]) for r in sr if r["pareto"])
            if front:
                ax_p.plot([p[0] for p in front], [p[1] for p in front], color=color, alpha=0.7)
            for r, ti in zip(sr, t, strict=True):
                ax_p.annotate(f"{r['value']:g}", (ti, r["energy_per_unit_J"]), fontsize=7)
        ax_e.set_xlabel(name, fontsize=8)
        ax_e.set_ylabel(f"J per {unit}", fontsize=8)
        ax_e.legend(fontsize=7)
        ax_t.set_xlabel(name, fontsize=8)
        ax_t.set_ylabel(f"{t_name} per {unit}", fontsize=8)
        ax_p.set_xlabel(f"{t_name} per {unit}", fontsize=8)
        ax_p.set_ylabel(f"J per {unit}", fontsize=8)
        ax_p.set_title("Pareto front joined per line; grey: beaten on both", fontsize=7)
    fig.suptitle(
        f"Energy and time against {', '.join(k for k, _ in blocks)} - {_rows_label(list(rows))}", fontsize=9
    )
    return fig
