"""Energy by model component, from a run whose cases asked for components (``[case] components``).

Two methods, both reported and labelled:

- ``replay`` (measured by isolation and repetition): a ``component`` window replays one component alone
  on inputs captured from an iteration; energy per call = window energy / calls, with the window's
  uncertainty divided the same way; per iteration = energy per call x the component's calls per
  measured iteration (the window's ``aux_units``).
- ``time`` (attributed by time, a model): a ``timed`` row holds a component's device time in one
  measured iteration; its energy = that time's share of the iteration's duration x the iteration's
  measured energy.

With ``components = "detail"`` a window's stage is ``name@step`` (``L0.attn@decode``,
``unet.up1.ff@middle``): each step is a row of its own (``ComponentRow.step``), so the closure still
counts every call once.

Closure, per case and rank: the replayed components' energies per iteration plus the residual equal the
mean measured energy of an iteration; the residual (what no component covers: Python, a scheduler step,
norms and activations between modules) and its uncertainty are reported; a residual below zero by more
than two standard deviations says the parts add to more than the whole. The energy is that of the rank's
own device channels (GPU, package or module); a rank without any uses its node's channels. Energies are
totals, idle power included, in the replay windows and the iterations alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from energy_hpc.analysis.attribution import NEVER_ADDED, channel_roles
from energy_hpc.analysis.energy import Scratch, reduce_channel
from energy_hpc.analysis.reduce import counter_ok
from energy_hpc.analysis.runfile import CHUNK_SAMPLES, RunFile
from energy_hpc.store import emulated_kind

REPLAY, TIME = "replay", "time"
# a component window's stage is "name@step" where the case told its calls by step (components = "detail":
# prefill / decode, first / middle / last denoising step); the same separator as the workloads' probe
STEP_SEP = "@"
METHOD_TEXT = {REPLAY: "measured by isolation and repetition", TIME: "attributed by time (a model)"}


@dataclass
class ComponentRow:
    run: str
    case: int
    rank: int
    params: dict[str, Any]
    unit: str
    component: str
    method: str  # REPLAY or TIME
    calls_per_iteration: float
    J_per_call: float
    J_per_call_unc: float
    J_per_iteration: float
    J_per_iteration_unc: float
    J_per_unit: float
    share: float  # of the iteration's energy
    seconds_per_call: float  # replay: window time / calls; time: device time / calls
    data: str = "measured"  # measured, ESTIMATE, SYNTHETIC or EMULATED <parts>
    step: str = ""  # the step its calls fall in (prefill, decode, first, middle, last); "" for all

    @property
    def label(self) -> str:
        """The component with its step: ``L0.attn (decode)``."""
        return f"{self.component} ({self.step})" if self.step else self.component

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Closure:
    run: str
    case: int
    rank: int
    params: dict[str, Any]
    method: str
    iteration_J: float
    iteration_J_unc: float
    components_J: float  # sum over the components, per iteration
    components_J_unc: float
    residual_J: float
    residual_J_unc: float
    iteration_s: float
    components_s: float  # device time (time) or replay time (replay) of the components per iteration
    data: str = "measured"
    notes: list[str] = field(default_factory=list)

    @property
    def adds_up(self) -> bool:
        """False where the components add to more than the iteration by over two standard deviations."""
        return not (self.residual_J < -2.0 * self.residual_J_unc)

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["adds_up"] = self.adds_up
        return d


def _s(a: np.ndarray) -> np.ndarray:
    return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in a], dtype=object)


def _data_kind(rf: RunFile) -> str:
    if rf.synthetic:
        return emulated_kind(rf.emulated) if rf.emulated else "SYNTHETIC"
    return "ESTIMATE" if rf.estimate else "measured"


def _mean_with_unc(energy: np.ndarray, unc: np.ndarray) -> tuple[float, float]:
    """The mean of per-iteration energies; its uncertainty the sensor's (in quadrature) and the spread
    between iterations (standard error) together."""
    n = len(energy)
    if not n:
        return math.nan, math.nan
    sensor = float(np.sqrt(np.sum(unc**2))) / n
    spread = float(np.std(energy, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return float(energy.mean()), math.hypot(sensor, spread)


NO_COMPONENTS = 'no component windows in these runs: set components = "blocks" (or "detail") in a [[case]] and run it again'


def study_components(paths: Sequence[str | Path]) -> tuple[list[ComponentRow], list[Closure]]:
    """The component rows and closure lines of every run file in ``paths``, in order."""
    rows: list[ComponentRow] = []
    closures: list[Closure] = []
    for p in paths:
        got_rows, got_closures = component_tables(p)
        rows += got_rows
        closures += got_closures
    return rows, closures


def component_tables(path: str | Path) -> tuple[list[ComponentRow], list[Closure]]:
    """The component rows and closure lines of one run file (empty where no case asked for components)."""
    with RunFile(path) as rf:
        w = rf.window_table()
        for k in ("phase", "stage", "status", "unit", "aux_unit"):
            w[k] = _s(w[k])
        comp = (w["phase"] == "component") | (w["phase"] == "timed")
        if not comp.any():
            return [], []
        ok = (w["status"] == "ok") & (w["end"] > w["start"])
        iters = ok & (w["phase"] == "measure") & (w["stage"] == "")
        replays = ok & (w["phase"] == "component") & (w["stage"] != "(capture)") & (w["units"] > 0)
        metas = rf.channel_meta
        roles = channel_roles(metas)
        ranks = rf.rank_table()
        nodes = [int(n) for n in ranks.get("node", [])]
        wanted = np.flatnonzero(iters | replays)
        energy = np.zeros(len(w["start"]))
        var = np.zeros(len(w["start"]))
        scratch = Scratch()
        for r in sorted({int(x) for x in w["rank"][wanted]}):
            own = [
                m
                for m, role in zip(metas, roles, strict=True)
                if role not in NEVER_ADDED and not role.node_level and int(m.get("rank", -1)) == r
            ]
            if not own and r < len(nodes):  # no device channel: the node's (one rank per node)
                own = [
                    m
                    for m, role in zip(metas, roles, strict=True)
                    if role not in NEVER_ADDED and role.node_level and int(m.get("node", -1)) == nodes[r]
                ]
            idx = wanted[w["rank"][wanted] == r]
            if not own:
                energy[idx] = math.nan
                continue
            for m in own:
                we = reduce_channel(
                    rf.chunks(int(m["index"]), CHUNK_SAMPLES, overlap=1),
                    w["start"][idx],
                    w["end"][idx],
                    update_period=float(m.get("update_period", 0.0) or 0.0),
                    resolution=float(m.get("energy_resolution", 0.0) or 0.0),
                    power_window=float(m.get("power_window", 0.0) or 0.0),
                    method_hint=str(m.get("method", "counter")),
                    counter_ok=counter_ok(m),
                    scratch=scratch,
                )
                energy[idx] += we.energy_J
                var[idx] += we.uncertainty_J**2
        params = [rf.case_params(c) for c in range(rf.n_cases)]
        units = [rf.case_unit(c) for c in range(rf.n_cases)]
        name = Path(path).name
        data = _data_kind(rf)
        rows: list[ComponentRow] = []
        closures: list[Closure] = []
        for case, rank in sorted(
            {(int(c), int(r)) for c, r in zip(w["case"][comp], w["rank"][comp], strict=True)}
        ):
            mine = (w["case"] == case) & (w["rank"] == rank)
            it = np.flatnonzero(iters & mine)
            if not len(it):
                continue
            it_J, it_unc = _mean_with_unc(energy[it], np.sqrt(var[it]))
            it_s = float((w["end"][it] - w["start"][it]).mean())
            it_units = float(w["units"][it].mean())
            base = _Base(name, case, rank, params[case], units[case], it_J, it_units, data)
            found = {
                REPLAY: _replay_rows(base, w, replays & mine, energy, var),
                TIME: _time_rows(base, w, ok & (w["phase"] == "timed") & mine, it, it_s),
            }
            for method, got in found.items():
                if not got:
                    continue
                rows += got
                total = sum(g.J_per_iteration for g in got)
                comp_s = sum(g.seconds_per_call * g.calls_per_iteration for g in got)
                if method == REPLAY:
                    total_unc = math.sqrt(sum(g.J_per_iteration_unc**2 for g in got))
                    residual_unc = math.hypot(it_unc, total_unc)
                else:  # the model's residual is the uncovered time's share of the iteration's energy
                    total_unc = it_unc * comp_s / it_s if it_s > 0 else math.nan
                    residual_unc = it_unc * max(it_s - comp_s, 0.0) / it_s if it_s > 0 else math.nan
                c = Closure(
                    name,
                    case,
                    rank,
                    params[case],
                    method,
                    it_J,
                    it_unc,
                    total,
                    total_unc,
                    it_J - total,
                    residual_unc,
                    it_s,
                    comp_s,
                    data,
                )
                if not c.adds_up:
                    c.notes.append("the components add to more than the iteration")
                closures.append(c)
        return rows, closures


@dataclass
class _Base:
    run: str
    case: int
    rank: int
    params: dict[str, Any]
    unit: str
    iteration_J: float
    iteration_units: float
    data: str

    def row(
        self, component: str, method: str, calls: float, jc: float, jc_unc: float, s_per_call: float
    ) -> ComponentRow:
        ji = jc * calls
        name, _, step = component.partition(STEP_SEP)
        return ComponentRow(
            self.run,
            self.case,
            self.rank,
            self.params,
            self.unit,
            name,
            method,
            calls,
            jc,
            jc_unc,
            ji,
            jc_unc * calls,
            ji / self.iteration_units if self.iteration_units else math.nan,
            ji / self.iteration_J if self.iteration_J else math.nan,
            s_per_call,
            self.data,
            step,
        )


def _replay_rows(
    base: _Base, w: dict[str, np.ndarray], sel: np.ndarray, energy: np.ndarray, var: np.ndarray
) -> list[ComponentRow]:
    """One row per replay window: energy per call = window energy / calls."""
    out = []
    for i in np.flatnonzero(sel):
        calls = float(w["units"][i])
        out.append(
            base.row(
                str(w["stage"][i]),
                REPLAY,
                float(w["aux_units"][i]),
                float(energy[i]) / calls,
                math.sqrt(float(var[i])) / calls,
                float(w["end"][i] - w["start"][i]) / calls,
            )
        )
    return out


def _time_rows(
    base: _Base, w: dict[str, np.ndarray], sel: np.ndarray, it: np.ndarray, it_s: float
) -> list[ComponentRow]:
    """Per component: mean calls and device time per counted iteration; its energy per iteration =
    that time's share of the iteration's duration x the iteration's energy (no uncertainty: a model)."""
    starts = {float(w["start"][i]) for i in it}
    by: dict[str, list[tuple[float, float]]] = {}
    for i in np.flatnonzero(sel):
        if float(w["start"][i]) in starts:
            by.setdefault(str(w["stage"][i]), []).append((float(w["units"][i]), float(w["aux_units"][i])))
    out = []
    for name, vals in by.items():
        calls = sum(c for c, _ in vals) / len(vals)
        secs = sum(s for _, s in vals) / len(vals)
        ji = secs / it_s * base.iteration_J if it_s > 0 else math.nan
        out.append(
            base.row(
                name,
                TIME,
                calls,
                ji / calls if calls else math.nan,
                math.nan,
                secs / calls if calls else math.nan,
            )
        )
    return out


def case_label(params: dict[str, Any]) -> str:
    return (
        " ".join(str(params[k]) for k in ("label", "task", "model", "dtype") if params.get(k))
        + f" bs={params.get('batch_size', '?')}"
    )


def format_components(paths: list[Path], fmt: str) -> str:
    """``energy-hpc table --components``: one row per component and method (J per call, J per unit,
    share of the iteration, ±), then one closure line per case, rank and method."""
    import csv
    import io
    import json

    from energy_hpc.analysis.formatting import (
        MISSING,
        csv_cell,
        format_number,
        jsonable,
        latex_table,
        markdown_table,
        value_pm,
    )
    from energy_hpc.errors import UserError

    rows, closures = study_components(paths)
    if not rows:
        raise UserError(NO_COMPONENTS)
    if fmt == "json":
        out = {"components": [r.as_dict() for r in rows], "closure": [c.as_dict() for c in closures]}
        return json.dumps(jsonable(out), indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        wr = csv.writer(buf)
        keys = [k for k in ComponentRow.__dataclass_fields__ if k != "params"]
        wr.writerow(["case_params", *keys])
        for r in rows:
            d = r.as_dict()
            wr.writerow([json.dumps(r.params, sort_keys=True)] + [csv_cell(d[k]) for k in keys])
        wr.writerow([])
        ckeys = [k for k in Closure.__dataclass_fields__ if k != "params"] + ["adds_up"]
        wr.writerow(["case_params", *ckeys])
        for c in closures:
            d = c.as_dict()
            wr.writerow([json.dumps(c.params, sort_keys=True)] + [csv_cell(d[k]) for k in ckeys])
        return buf.getvalue()
    headers = ["case", "rank", "component", "method", "calls/iter", "J/call", "J/unit", "share", "data"]
    body = [
        [
            case_label(r.params),
            str(r.rank),
            r.label,
            r.method,
            format_number(r.calls_per_iteration),
            value_pm(r.J_per_call, r.J_per_call_unc),
            f"{format_number(r.J_per_unit)} J/{r.unit}",
            f"{r.share * 100:.1f} %" if math.isfinite(r.share) else MISSING,
            r.data,
        ]
        for r in rows
    ]
    notes = ["Closure per case, rank and method (components per iteration + residual = measured iteration):"]
    for c in closures:
        notes.append(
            f"{case_label(c.params)} rank {c.rank} {c.method}: iteration {value_pm(c.iteration_J, c.iteration_J_unc)} J"
            f" = components {value_pm(c.components_J, c.components_J_unc)} J"
            f" + residual {value_pm(c.residual_J, c.residual_J_unc)} J"
            + ("" if c.adds_up else " (DOES NOT ADD UP: the components add to more than the iteration)")
        )
    notes.append(
        "Methods: replay = "
        + METHOD_TEXT[REPLAY]
        + "; time = "
        + METHOD_TEXT[TIME]
        + ". Every ± is one standard deviation."
    )
    if fmt == "latex":
        return latex_table(headers, body, "l" * len(headers), comments_after=notes)
    return "\n".join([*markdown_table(headers, body), "", *notes]) + "\n"
