"""Scaling over node counts: throughput, energy per unit, and efficiency against ideal (linear) scaling.

Rows of :func:`energy_hpc.analysis.table.energy_table` that differ only in node (and rank) count form
a series; the smallest node count is the reference ``n0``. For a row with ``n`` nodes:

- ``speedup`` = throughput / throughput(n0); ideal (linear) scaling gives ``n / n0``;
- ``parallel_efficiency`` = speedup / (n / n0) (1 = ideal);
- ``energy_efficiency`` = energy per unit(n0) / energy per unit (1 = ideal: linear scaling costs no
  extra energy per unit; below 1 the extra nodes cost energy);
- ``energy_per_unit_ideal_J`` = energy per unit(n0), the ideal line.

Cells and tables are written as the energy table's are (:mod:`energy_hpc.analysis.formatting`): in LaTeX
every special character of a model name or label is escaped.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from energy_hpc.analysis.formatting import (
    UNCERTAINTY_LEGEND,
    csv_cell,
    data_banner,
    format_number,
    jsonable,
    latex_table,
    markdown_table,
)

_SERIES_EXCLUDE = ("n_nodes", "n_ranks")


def _series_key(row: dict[str, Any], by: Sequence[str] | None) -> str:
    if by:
        fields = {k: row.get(k) for k in by if k not in _SERIES_EXCLUDE}
    else:
        fields = {k: v for k, v in (row.get("case") or {}).items() if k not in _SERIES_EXCLUDE}
    return json.dumps(
        {**fields, "stage": row.get("stage", ""), "unit": row.get("unit"), "data": row.get("data")},
        sort_keys=True,
        default=str,
    )


def scaling_rows(rows: list[dict[str, Any]], by: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per (series, node count), sorted by series then node count."""
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault(_series_key(r, by), []).append(r)
    out = []
    for key, rs in series.items():
        rs = sorted(rs, key=lambda r: (r["n_nodes"], r["n_ranks"]))
        base = rs[0]
        n0, thr0, e0 = base["n_nodes"], base["throughput_per_s"], base["energy_per_unit_J"]
        for r in rs:
            ideal = r["n_nodes"] / n0 if n0 else math.nan
            thr, e = r["throughput_per_s"], r["energy_per_unit_J"]
            speedup = thr / thr0 if thr0 and math.isfinite(thr0) and thr0 > 0 else math.nan
            out.append(
                {
                    "series": json.loads(key),
                    "case": r.get("case"),
                    "stage": r.get("stage", ""),
                    "model": r.get("model"),
                    "dtype": r.get("dtype"),
                    "batch_size": r.get("batch_size"),
                    "n_nodes": r["n_nodes"],
                    "n_ranks": r["n_ranks"],
                    "unit": r["unit"],
                    "units": r["units"],
                    "throughput_per_s": thr,
                    "throughput_ideal_per_s": thr0 * ideal if thr0 else math.nan,
                    "speedup": speedup,
                    "ideal_speedup": ideal,
                    "parallel_efficiency": speedup / ideal if ideal and math.isfinite(speedup) else math.nan,
                    "energy_per_unit_J": e,
                    "energy_per_unit_uncertainty_J": r["energy_per_unit_uncertainty_J"],
                    "energy_per_unit_meas_unc_J": r.get(
                        "energy_per_unit_meas_unc_J", r["energy_per_unit_uncertainty_J"]
                    ),
                    "energy_per_unit_sem_J": r.get("energy_per_unit_sem_J", math.nan),
                    "energy_per_unit_unc_J": r.get("energy_per_unit_unc_J", math.nan),
                    "n_iterations": r.get("n_iterations", 0),
                    "energy_per_unit_ideal_J": e0,
                    "energy_efficiency": e0 / e if e and math.isfinite(e) and e > 0 else math.nan,
                    "node_energy_per_unit_J": r.get("node_energy_per_unit_J", math.nan),
                    "method": r["method"],
                    "data": r.get("data", "measured"),
                    "reference_n_nodes": n0,
                    "flags": list(r.get("flags", [])),
                }
            )
    return out


_COLUMNS = [
    ("model", "model"),
    ("dtype", "dtype"),
    ("batch_size", "batch"),
    ("stage", "stage"),
    ("n_nodes", "nodes"),
    ("n_ranks", "ranks"),
    ("throughput_per_s", "units/s"),
    ("speedup", "speedup"),
    ("ideal_speedup", "ideal"),
    ("parallel_efficiency", "efficiency"),
    ("energy_per_unit_J", "J/unit"),
    ("energy_per_unit_meas_unc_J", "±meas J/unit"),
    ("energy_per_unit_sem_J", "±SEM J/unit"),
    ("energy_per_unit_unc_J", "±total J/unit"),
    ("energy_efficiency", "energy eff."),
    ("method", "method"),
]


def format_scaling(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([jsonable(r) for r in rows], indent=2) + "\n"
    cols = [c for c in _COLUMNS if c[0] != "stage" or any(r.get("stage") for r in rows)]
    body = [[format_number(r.get(k)) for k, _ in cols] for r in rows]
    headers = [h for _, h in cols]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow([*(k for k, _ in cols), "data"])
        for r in rows:
            writer.writerow([*(csv_cell(r.get(k)) for k, _ in cols), r["data"]])
        return buf.getvalue()
    if fmt == "latex":
        return latex_table(
            headers,
            body,
            "l" * 4 + "r" * (len(cols) - 5) + "l",
            comments_before=[data_banner(rows)],
            comments_after=[UNCERTAINTY_LEGEND],
        )
    out = [
        f"Data: {data_banner(rows)}",
        "",
        *markdown_table(headers, body),
        "",
        "Efficiency against ideal (linear) scaling from the smallest node count of each series.",
        "",
        UNCERTAINTY_LEGEND,
    ]
    return "\n".join(out) + "\n"
