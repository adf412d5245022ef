"""Model-size ladders: energy per unit against parameter count, log-log, with a power law fitted per task.

The parameter count of a case is what its run file records (``n_parameters`` in the ``/cases``
provenance, counted for built-in random-weight architectures); rows without one are left out and named.
The fit is ``E = a * N**b`` by weighted least squares of ``ln E`` on ``ln N``, each row weighted by
``1 / (sigma_E / E)**2`` with ``sigma_E`` its energy per unit's total 1-sigma uncertainty (measurement and
spread between iterations, else measurement alone); the uncertainties of ``a`` and ``b`` come from the
covariance of that fit taken at face value. Where a row has no usable uncertainty the fit is unweighted
and its uncertainties come from the scatter about the line (NaN with two points).
"""

from __future__ import annotations

import json
import logging
import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LadderPoint:
    task: str
    model: str
    n_parameters: int
    energy_per_unit_J: float
    uncertainty_J: float  # 1 sigma
    unit: str
    data: str


@dataclass(frozen=True)
class PowerLaw:
    """``energy_per_unit_J = prefactor_J * n_parameters ** exponent`` (1-sigma uncertainties)."""

    task: str
    unit: str
    exponent: float
    exponent_unc: float
    prefactor_J: float
    prefactor_unc_J: float
    n_points: int
    weighted: bool

    def at(self, n_parameters: float | np.ndarray) -> float | np.ndarray:
        return self.prefactor_J * np.asarray(n_parameters, float) ** self.exponent


def fit_power_law(
    n_parameters: Sequence[float],
    energy: Sequence[float],
    sigma: Sequence[float],
    task: str = "",
    unit: str = "",
) -> PowerLaw:
    """The weighted least-squares fit of ``ln energy = ln a + b ln n`` (see the module's docstring)."""
    x, y, s = (np.asarray(v, float) for v in (n_parameters, energy, sigma))
    if len(x) < 2 or len(set(x.tolist())) < 2:
        raise ValueError("a power law needs at least two different parameter counts")
    lx, ly = np.log(x), np.log(y)
    rel = s / y
    weighted = bool(np.all(np.isfinite(rel) & (rel > 0)))
    w = 1.0 / rel**2 if weighted else np.ones_like(lx)
    design = np.column_stack([np.ones_like(lx), lx])
    normal = design.T @ (design * w[:, None])
    coef = np.linalg.solve(normal, design.T @ (w * ly))
    cov = np.linalg.inv(normal)
    if not weighted:
        dof = len(x) - 2
        resid = ly - design @ coef
        cov = cov * (float(resid @ resid) / dof) if dof > 0 else np.full_like(cov, math.nan)
    ln_a, b = float(coef[0]), float(coef[1])
    a = math.exp(ln_a)
    return PowerLaw(
        task=task,
        unit=unit,
        exponent=b,
        exponent_unc=math.sqrt(cov[1, 1]) if math.isfinite(cov[1, 1]) else math.nan,
        prefactor_J=a,
        prefactor_unc_J=a * math.sqrt(cov[0, 0]) if math.isfinite(cov[0, 0]) else math.nan,
        n_points=len(x),
        weighted=weighted,
    )


def parameter_counts(files: Iterable[str | Path]) -> dict[str, int]:
    """Case parameters (sorted JSON) -> ``n_parameters`` as the run files record it."""
    import h5py

    out: dict[str, int] = {}
    for f in files:
        with h5py.File(f, "r") as h:
            cases = h.get("cases")
            if cases is None or "provenance" not in cases:
                continue
            for params, prov in zip(cases["params"][()], cases["provenance"][()], strict=True):
                n = json.loads(_text(prov)).get("n_parameters")
                if n:
                    out[json.dumps(json.loads(_text(params)), sort_keys=True)] = int(n)
    return out


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _sigma(row: dict[str, Any]) -> float:
    total = row.get("energy_per_unit_unc_J", math.nan)
    return float(total) if math.isfinite(total) else float(row.get("energy_per_unit_meas_unc_J", math.nan))


def ladder_points(rows: Sequence[dict[str, Any]], counts: dict[str, int]) -> list[LadderPoint]:
    """One point per table row whose case has a recorded parameter count and a positive energy per unit
    (the rows without are named in a warning)."""
    points, left_out = [], []
    for r in rows:
        n = counts.get(json.dumps(r["case"], sort_keys=True))
        e = r.get("energy_per_unit_J", math.nan)
        if not n or not (isinstance(e, float) and math.isfinite(e) and e > 0):
            left_out.append(str(r.get("model")))
            continue
        points.append(
            LadderPoint(
                str(r["task"]), str(r["model"]), n, e, _sigma(r), str(r["unit"]), str(r.get("data", ""))
            )
        )
    if left_out:
        log.warning(
            "ladder: %d row(s) without a parameter count or energy left out (%s); parameter counts are "
            "recorded for built-in random-weight models",
            len(left_out),
            ", ".join(sorted(set(left_out))),
        )
    return points


def fits_by_task(points: Sequence[LadderPoint]) -> list[PowerLaw]:
    """A power law per task with at least two sizes."""
    fits = []
    for task in sorted({p.task for p in points}):
        mine = [p for p in points if p.task == task]
        if len({p.n_parameters for p in mine}) < 2:
            log.warning("ladder: task %s has one model size; no power law fitted", task)
            continue
        fits.append(
            fit_power_law(
                [p.n_parameters for p in mine],
                [p.energy_per_unit_J for p in mine],
                [p.uncertainty_J for p in mine],
                task,
                mine[0].unit,
            )
        )
    return fits


def fits_json(fits: Sequence[PowerLaw], data: str) -> str:
    return json.dumps({"data": data, "fits": [asdict(f) for f in fits]}, indent=2) + "\n"


def ladder_figure(points: Sequence[LadderPoint], fits: Sequence[PowerLaw], data: str) -> Figure:
    """Energy per unit against parameter count (log-log), 1-sigma bars, a fitted line per task."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, task in enumerate(sorted({p.task for p in points})):
        mine = sorted((p for p in points if p.task == task), key=lambda p: p.n_parameters)
        colour = f"C{i}"
        x = np.array([p.n_parameters for p in mine], float)
        y = np.array([p.energy_per_unit_J for p in mine], float)
        err = np.nan_to_num(np.array([p.uncertainty_J for p in mine], float))
        ax.errorbar(x, y, yerr=err, fmt="o", color=colour, capsize=3, label=f"{task} (J per {mine[0].unit})")
        for p in mine:
            ax.annotate(
                p.model,
                (p.n_parameters, p.energy_per_unit_J),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
            )
        fit = next((f for f in fits if f.task == task), None)
        if fit is not None:
            xs = np.geomspace(x.min(), x.max(), 50)
            ax.plot(
                xs,
                fit.at(xs),
                "--",
                color=colour,
                label=f"fit: {fit.prefactor_J:.3g} J x N^({fit.exponent:.3f} ± {fit.exponent_unc:.2g})",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("J per unit")
    # minor-tick labels of a log axis spanning under two decades crowd each other: majors only
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    title = textwrap.fill(f"Energy per unit against model size - {data}", 80)
    ax.set_title(f"{title}\nbars: 1 sigma; lines: weighted power-law fits", fontsize=9)
    ax.legend(fontsize=7)
    return fig
