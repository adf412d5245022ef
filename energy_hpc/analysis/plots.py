"""Figures (matplotlib, no pyplot, no display: safe on login nodes and in batch).

- :func:`power_figure`: power over time, one panel per channel, the windows shaded and labelled;
- :func:`energy_figure`: energy per unit by case (and stage) with uncertainty bars;
- :func:`scaling_figure`: energy per unit and throughput against node count, with the ideal line;
- :func:`component_figure`: where the energy goes, stacked bars of component groups per case and method;
- :func:`structures_figure`: model structures side by side, each case's iteration energy split by layer
  type (the same words for every architecture) in per cent.

Every title says what the data is (measured, ESTIMATE, SYNTHETIC, SYNTHETIC from an EMULATED sensor).
:func:`save` writes PNG and PDF.
Long channels are drawn from a min/max envelope built chunk by chunk, never from the whole trace.
"""

from __future__ import annotations

import json
import math
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from energy_hpc.analysis.attribution import NEVER_ADDED, channel_roles
from energy_hpc.analysis.reduce import GAP_INTERVALS, GAP_MIN_S, gap_threshold
from energy_hpc.analysis.runfile import RunFile
from energy_hpc.store import EMULATED_MARK, emulated_text, sensor_words

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from energy_hpc.analysis.components import Closure, ComponentRow

MAX_POINTS = 4000  # envelope bins per channel in a power figure
_CASE_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
)


def _figure(w: float, h: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def save(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(out[0], dpi=150)
    fig.savefig(out[1])
    return out


def data_label(synthetic: bool, estimate: bool, emulated: Sequence[str] = ()) -> str:
    if synthetic and emulated:
        return f"SYNTHETIC data ({emulated_text(emulated)}) - not a measurement"
    if synthetic:
        return "SYNTHETIC data - not a measurement"
    if estimate:
        return "ESTIMATE from CPU time - not a measurement"
    return "measured"


def _envelope(rf: RunFile, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t, mean, min, max) of channel i's power in at most MAX_POINTS bins (exact when shorter)."""
    n = int(rf.channel_meta[i]["n_samples"])
    if n <= MAX_POINTS:
        tr = rf.trace(i)
        return tr.time, tr.power, tr.power, tr.power
    per = math.ceil(n / MAX_POINTS)
    chunk = per * 1024
    ts, means, lows, highs = [], [], [], []
    for t, p in rf.chunks(i, chunk=chunk, columns=("time", "power")):
        k = len(t) // per * per
        for tt, pp in ((t[:k], p[:k]), (t[k:], p[k:])):
            if not len(tt):
                continue
            m = len(tt) // per if len(tt) >= per else 1
            tt, pp = tt.reshape(m, -1), pp.reshape(m, -1)
            with np.errstate(all="ignore"), _quiet():
                ts.append(np.nanmean(tt, axis=1))
                means.append(np.nanmean(pp, axis=1))
                lows.append(np.nanmin(pp, axis=1))
                highs.append(np.nanmax(pp, axis=1))
    return tuple(np.concatenate(x) for x in (ts, means, lows, highs))  # type: ignore[return-value]


@contextmanager
def _quiet() -> Iterator[None]:
    """No RuntimeWarning (an all-NaN bin) while the envelope is built."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# the span the CPU-time estimate averages its power over (telemetry.estimate.POWER_SPAN_S, which the
# analysis does not import; a test keeps the two equal). Its channels record no power_window.
ESTIMATE_SPAN_S = 0.1
GAP_WORDS = f"no reading for over {GAP_INTERVALS:g} intervals and {GAP_MIN_S * 1000:g} ms"
_SCOPE_WORDS = {
    "gpu": "GPU",
    "package": "GPU package",
    "cpu": "CPU",
    "memory": "memory",
    "node": "whole-node",
    "module": "module (GPU + CPU + memory)",
    "other": "other",
}
_LOAD_COLOUR, _WARMUP_COLOUR, _IDLE_COLOUR = "white", "0.7", "0.86"


def break_gaps(t: np.ndarray, *ys: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], int]:
    """``t`` and each of ``ys`` with a NaN point inserted inside every sampling gap (longer than
    :func:`~energy_hpc.analysis.reduce.gap_threshold` of the median step between drawn points: the rule
    the tables flag gaps by), so that a line is not drawn across it; and the number of gaps."""
    if len(t) < 3:
        return t, list(ys), 0
    dt = np.diff(t)
    gaps = np.flatnonzero(dt > gap_threshold(float(np.nanmedian(dt))))
    if not len(gaps):
        return t, list(ys), 0
    at = gaps + 1
    t_out = np.insert(t, at, 0.5 * (t[gaps] + t[gaps + 1]))
    return t_out, [np.insert(np.asarray(y, float), at, np.nan) for y in ys], len(gaps)


def mean_span(meta: dict[str, Any]) -> float:
    """The span (s) a channel's power reading is a trailing mean over; 0 for a point reading or unknown."""
    window = float(meta.get("power_window", 0.0) or 0.0)
    if str(meta.get("backend", "")) == "estimate" or str(meta.get("method", "")) == "estimate":
        return window or ESTIMATE_SPAN_S
    if str(meta.get("power_kind", "")) == "average":
        return window
    return 0.0


def series_words(meta: dict[str, Any]) -> str:
    """What the drawn power of a channel is: ``trailing mean over 0.1 s``, ``instant reading``."""
    span = mean_span(meta)
    if span > 0:
        return f"trailing mean over {span:g} s"
    if str(meta.get("power_kind", "")) == "average":
        return "trailing mean (span not recorded)"
    return "instant reading"


def channel_title(meta: dict[str, Any]) -> str:
    """A panel title a reader understands: who recorded it, which device, which sensor (no process
    ids: ``estimate:cpu:pid7868`` becomes ``rank 0 on h0: CPU - ESTIMATE: ... (sensor: estimate)``)."""
    scope = _SCOPE_WORDS.get(str(meta.get("scope", "")), str(meta.get("scope", "")))
    host = str(meta.get("host", "") or "")
    who = f"node {host}" if int(meta.get("node_level", 0) or 0) else f"rank {int(meta.get('rank', 0))}"
    if host and not int(meta.get("node_level", 0) or 0):
        who += f" on {host}"
    label = str(meta.get("label", "") or "")
    device = label or str(meta.get("device", "") or "")
    if ":pid" in device:  # a process, not a device: the scope says enough
        device = ""
    sensor = str(meta.get("backend", "") or "")
    method = str(meta.get("method", "") or "")
    how = ", ".join(x for x in (f"sensor: {sensor}" if sensor else "", method) if x and x != sensor)
    return f"{who}: {scope}" + (f" - {device}" if device else "") + (f" ({how})" if how else "")


def power_figure(path: str | Path, channels: Sequence[int] | None = None) -> Figure:
    """Power over time per channel, with the idle baseline (grey), model load (light, hatched), warm-up
    (dark grey) and measured iterations (one colour per case, shades alternating between iterations)
    shaded and named in each panel's legend.

    Node-level channels are shaded with their node's windows (all ranks of the node). One text label per
    case names it; windows are whole iterations (stages are not shaded separately). Lines break at
    sampling gaps; a trailing-mean channel says so, and its readings in the first span after sampling
    began (a mean that reaches back before the first sample: for the CPU-time estimate, the start-up of
    the sampler) are drawn faint, apart from the line, so that they do not pass for idle power.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    with RunFile(path) as rf:
        w = rf.window_table()
        phase = np.array([str(x) for x in w["phase"]])
        stage = np.array([str(x) for x in w["stage"]])
        status = np.array([str(x) for x in w["status"]])
        rank, case = w["rank"].astype(int), w["case"].astype(int)
        rank_node = {r: int(n) for r, n in enumerate(rf.ranks["node"].values)} if "node" in rf.ranks else {}
        metas = [
            m
            for m, role in zip(rf.channel_meta, channel_roles(rf.channel_meta), strict=True)
            if role not in NEVER_ADDED and int(m["n_samples"]) > 1
        ]
        if channels is not None:
            metas = [m for m in metas if int(m["index"]) in set(channels)]
        fig = _figure(12, 1.2 + 2.3 * max(len(metas), 1))
        axes = fig.subplots(max(len(metas), 1), 1, sharex=True, squeeze=False)[:, 0]
        labels = {c: _case_label(rf.case_params(c)) for c in range(rf.n_cases)}
        for ax, m in zip(axes, metas, strict=False):  # one empty panel when no channel
            t, mean, lo, hi = _envelope(rf, int(m["index"]))
            handles: list[Any] = []
            span = mean_span(m)
            if span > 0 and len(t):
                early = t < t[0] + span
                if early.any():
                    ax.plot(t[early], mean[early], lw=0.8, color="0.6", ls=":")
                    handles.append(
                        Line2D(
                            [],
                            [],
                            lw=0.8,
                            color="0.6",
                            ls=":",
                            label=f"first {span:g} s: mean reaches before sampling began",
                        )
                    )
                    mean, lo, hi = (np.where(early, np.nan, x) for x in (mean, lo, hi))
            t, (mean, lo, hi), n_gaps = break_gaps(t, mean, lo, hi)
            ax.plot(t, mean, lw=0.8, color="black")
            handles.insert(0, Line2D([], [], lw=0.8, color="black", label=f"power, {series_words(m)}"))
            if len(t) and not np.array_equal(lo, hi, equal_nan=True):
                ax.fill_between(t, lo, hi, color="0.6", alpha=0.4, lw=0)
                handles.append(Patch(color="0.6", alpha=0.4, label="min to max within each drawn point"))
            if n_gaps:
                handles.append(
                    Line2D(
                        [],
                        [],
                        lw=0,
                        label=f"line broken at {n_gaps} sampling gap(s): {GAP_WORDS}",
                    )
                )
            r = int(m["rank"])
            if int(m.get("node_level", 0)):
                mine = np.array([rank_node.get(int(x), 0) == int(m.get("node", 0)) for x in rank])
            else:
                mine = rank == r
            ok = mine & (status == "ok") & (stage == "")
            for name, colour, hatch, text in (
                ("idle", _IDLE_COLOUR, None, "idle baseline"),
                ("load", _LOAD_COLOUR, "//", "model load (not counted)"),
                ("warmup", _WARMUP_COLOUR, None, "warm-up (not counted)"),
            ):
                sel = np.flatnonzero(ok & (phase == name))
                style: dict[str, Any] = {"facecolor": colour, "hatch": hatch, "edgecolor": "0.75", "lw": 0}
                for i in sel:
                    ax.axvspan(w["start"][i], w["end"][i], zorder=0, **style)
                if len(sel):
                    handles.append(Patch(label=text, **style))
            shaded = ok & (phase == "measure")
            for n_case, c in enumerate(sorted(set(case[shaded]))):
                sel = np.flatnonzero(shaded & (case == c))
                colour = _CASE_COLOURS[c % len(_CASE_COLOURS)]
                for k, i in enumerate(sel):  # alternate shades so that adjacent iterations stay apart
                    ax.axvspan(
                        w["start"][i], w["end"][i], color=colour, alpha=0.3 if k % 2 else 0.18, lw=0, zorder=0
                    )
                x0 = float(w["start"][sel].min())
                ax.annotate(
                    labels[c],
                    (x0, 1.0 - 0.08 * (n_case % 2)),  # neighbours' labels on two lines
                    xycoords=("data", "axes fraction"),
                    va="top",
                    ha="left",
                    fontsize=7,
                    color=colour,
                )
                handles.append(
                    Patch(
                        color=colour,
                        alpha=0.3,
                        label=f"{labels[c]}: {len(sel)} measured iteration(s), shades alternate",
                    )
                )
            scope = _SCOPE_WORDS.get(str(m.get("scope", "")), "")
            ax.set_ylabel(f"{scope} power (W)" if scope else "Power (W)")
            ax.set_title(channel_title(m), fontsize=8, loc="left")
            ax.legend(
                handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False
            )
        axes[-1].set_xlabel("time since run start (s)")
        fig.suptitle(
            f"Power per channel - {rf.path.name} - {data_label(rf.synthetic, rf.estimate, rf.emulated)}",
            fontsize=9,
        )
    return fig


def _case_label(p: dict[str, Any], stage: str = "") -> str:
    parts = [
        str(p.get("label") or Path(str(p.get("model", "?"))).name),
        str(p.get("dtype", "")),
        f"b{p.get('batch_size')}" if p.get("batch_size") is not None else "",
    ]
    if stage:
        parts.append(stage)
    return " ".join(x for x in parts if x)


def _rows_label(rows: list[dict[str, Any]]) -> str:
    kinds = {r.get("data", "measured") for r in rows}
    parts = [
        t for k, t in (("SYNTHETIC", "SYNTHETIC data"), ("ESTIMATE", "ESTIMATE from CPU time")) if k in kinds
    ]
    parts[1:1] = [
        f"SYNTHETIC data ({sensor_words(k)})" for k in sorted(kinds) if str(k).startswith(EMULATED_MARK)
    ]
    if parts:
        return " + ".join(parts) + " - not a measurement"
    return "measured"


def _total_or_meas(r: dict[str, Any]) -> float:
    """The combined ± (measurement and spread between iterations); the measurement's alone where the
    spread is undefined (one iteration)."""
    total = r.get("energy_per_unit_unc_J", math.nan)
    return (
        total
        if isinstance(total, float) and math.isfinite(total)
        else r.get("energy_per_unit_uncertainty_J", math.nan)
    )


def energy_figure(rows: list[dict[str, Any]], net: bool = False) -> Figure:
    """Energy per unit by row (case, and stage where rows carry one) with 1-sigma bars."""
    fig = _figure(max(6.5, 0.8 * len(rows) + 2), 4.5)
    ax = fig.subplots()
    key = "net_energy_per_unit_J" if net else "energy_per_unit_J"
    ukey = "net_energy_per_unit_uncertainty_J" if net else "energy_per_unit_uncertainty_J"
    y = np.array([r.get(key, math.nan) for r in rows], float)
    err = np.array([r.get(ukey, math.nan) for r in rows], float)
    if not net:  # bars show the combined figure where iterations give one (measurement and spread)
        err = np.array([_total_or_meas(r) for r in rows], float)
    labels = [
        _case_label(r.get("case") or {}, r.get("stage", ""))
        + (f"\n{r['n_nodes']} node(s)" if len({x["n_nodes"] for x in rows}) > 1 else "")
        for r in rows
    ]
    if len({r.get("data") for r in rows}) > 1:  # mixed kinds: every bar says which it is
        labels = [f"{lab}\n[{r.get('data')}]" for lab, r in zip(labels, rows, strict=True)]
    dtypes = sorted({str(r.get("dtype")) for r in rows})
    colours = [_CASE_COLOURS[dtypes.index(str(r.get("dtype"))) % len(_CASE_COLOURS)] for r in rows]
    x = np.arange(len(rows))
    ax.bar(x, np.nan_to_num(y), yerr=np.nan_to_num(err), capsize=3, color=colours, alpha=0.85)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    for xi, top, r in zip(x, np.nan_to_num(y) + np.nan_to_num(err), rows, strict=True):
        n = r.get("n_iterations")
        if n is not None:  # how many iterations the bar and its spread come from
            ax.annotate(
                f"n={n}", (xi, top), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=7
            )
    ax.margins(y=0.08)
    ax.set_xlabel(case_key(rows), fontsize=8)
    units = sorted({r["unit"] for r in rows})
    ax.set_ylabel(f"{'net ' if net else ''}J per {'/'.join(units)}")
    methods = sorted({r["method"] for r in rows})
    bars = "1 sigma, measurement" if net else "1 sigma, measurement and spread between iterations"
    ax.set_title(
        f"Energy per unit - {_rows_label(rows)}\nmethod: {', '.join(methods)}; bars: {bars}", fontsize=9
    )
    for d, c in zip(dtypes, _CASE_COLOURS, strict=False):
        ax.bar([], [], color=c, label=d)
    if len(dtypes) > 1:
        ax.legend(title="dtype", fontsize=8)
    return fig


def case_key(rows: Sequence[dict[str, Any]]) -> str:
    """The key to the short case labels under a figure: what each part of ``tiny-sd fp32 b2`` is, and n."""
    parts = ["model (or the case's label)", "dtype", "b<batch size>"]
    if any(r.get("stage") for r in rows):
        parts.append("stage")
    return (
        "bar labels: "
        + ", ".join(parts)
        + "\nn = measured iterations behind each bar (ranks summed, runs pooled)"
    )


def has_stages(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether some case's iterations are split into two or more stages (a refiner after the base);
    a case whose one stage is the whole iteration has none worth a figure of its own."""
    names: dict[str, set[str]] = {}
    for r in rows:
        if r.get("stage"):
            key = json.dumps(r.get("case") or {}, sort_keys=True, default=str)
            names.setdefault(key, set()).add(str(r["stage"]))
    return any(len(v) > 1 for v in names.values())


def scaling_figure(srows: list[dict[str, Any]]) -> Figure:
    """Energy per unit and throughput against node count, one line per series, ideal dashed."""
    fig = _figure(10, 4)
    ax_e, ax_t = fig.subplots(1, 2)
    series: dict[str, list[dict[str, Any]]] = {}
    for r in srows:
        series.setdefault(_case_label(r.get("case") or {}, r.get("stage", "")), []).append(r)
    for (name, rs), colour in zip(sorted(series.items()), _CASE_COLOURS * 10, strict=False):
        rs = sorted(rs, key=lambda r: r["n_nodes"])
        n = np.array([r["n_nodes"] for r in rs], float)
        ax_e.errorbar(
            n,
            [r["energy_per_unit_J"] for r in rs],
            yerr=np.nan_to_num([_total_or_meas(r) for r in rs]),
            marker="o",
            color=colour,
            label=name,
            capsize=3,
        )
        ax_e.plot(n, [r["energy_per_unit_ideal_J"] for r in rs], ls="--", color=colour, alpha=0.6)
        ax_t.plot(n, [r["throughput_per_s"] for r in rs], marker="o", color=colour, label=name)
        ax_t.plot(n, [r["throughput_ideal_per_s"] for r in rs], ls="--", color=colour, alpha=0.6)
    from matplotlib.ticker import FormatStrFormatter, LogFormatter

    for ax in (ax_e, ax_t):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))  # 1, 2, 4 nodes, not 2^0, 2^1, 2^2
        ax.set_xlabel("nodes")
    ax_t.set_yscale("log")
    ax_t.yaxis.set_major_formatter(LogFormatter())  # plain numbers (2, 20), not 2 x 10^0
    ax_t.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    unit = "/".join(sorted({r["unit"] for r in srows}))
    ax_e.set_ylabel(f"J per {unit}")
    ax_t.set_ylabel(f"{unit}s per second")
    ax_e.set_title("energy per unit (dashed: ideal = smallest node count)", fontsize=8)
    ax_t.set_title("throughput (dashed: ideal linear scaling)", fontsize=8)
    ax_e.legend(fontsize=7)
    fig.suptitle(f"Scaling over node counts - {_rows_label(srows)}", fontsize=9)
    return fig


# ------------------------------------------------------------------ where the energy goes

GROUP_RULE = (
    "components grouped by kind: layer numbers and block indices dropped and the rest summed "
    "(L0.attn + L1.attn = attention, unet.down0 + unet.down1 = UNet down)"
)
_GROUP_WORDS = {
    "embed": "embeddings",
    "attn": "attention",
    "xattn": "cross-attention",
    "mlp": "MLP",
    "norm": "final norm",
    "head": "head",
    "encoder": "encoder",
    "text_encoder": "text encoder",
    "text_encoder_": "text encoder",
    "unet.down": "UNet down",
    "unet.mid": "UNet mid",
    "unet.up": "UNet up",
    "vae.decode": "VAE decode",
    "ff": "feed-forward",
    "resnet": "resnet",
    "conv": "down/up-sampling conv",
}
_PREFIX_WORDS = {"dec.": "decoder ", "enc.": "encoder ", "refiner.": "refiner "}
RESIDUAL = "residual"
# the steps of an iteration in the order they run ("" for the calls outside every step: an encoder before
# the first decoder step, a text encoder before the first denoising step, a VAE after the last)
STEP_ORDER = ("", "prefill", "decode", "first", "middle", "last")


def step_order(steps: Sequence[str]) -> list[str]:
    """``steps`` without repeats, in the order an iteration runs them (unknown tags last, as given)."""
    known = [s for s in STEP_ORDER if s in steps]
    return known + [s for s in dict.fromkeys(steps) if s not in STEP_ORDER]


def component_group(name: str) -> str:
    """The group a component's energy is summed into: its name without the layer number (``L3.``) and
    without the index of a repeated block (``down1``), in words: ``L0.attn`` -> ``attention``,
    ``dec.L1.xattn`` -> ``decoder cross-attention``, ``refiner.unet.up2`` -> ``refiner UNet up``."""
    words = ""
    rest = name
    changed = True
    while changed:
        changed = False
        for prefix, word in _PREFIX_WORDS.items():
            if rest.startswith(prefix):
                words, rest, changed = words + word, rest[len(prefix) :], True
    parts = [p for p in rest.split(".") if not (p[:1] == "L" and p[1:].isdigit())]
    key = ".".join(p.rstrip("0123456789") for p in parts)
    if len(parts) == 3 and parts[0] == "unet":  # a UNet block split by layer type: by type
        return words + "UNet " + _GROUP_WORDS.get(parts[2], parts[2])
    if len(parts) >= 2 and parts[0] == "transformer":  # a transformer denoiser's layers: by type
        kind = parts[-1].rstrip("0123456789")
        return words + "transformer " + _GROUP_WORDS.get(kind, kind)
    return words + _GROUP_WORDS.get(key, key or name)


@dataclass
class ComponentBar:
    """One stacked bar: a case of a run and one method, in J per unit (ranks averaged)."""

    label: str
    method: str
    unit: str
    segments: dict[str, float]  # group -> J per unit, in order of first appearance
    residual: float
    total: float  # the measured iteration's energy per unit
    total_unc: float
    n_ranks: int
    data: str
    # step -> group -> J per unit where the case told its calls by step (components = "detail"), with
    # "" for the components outside every step; empty where no row has a step. Summed over the steps,
    # each group gives ``segments``.
    steps: dict[str, dict[str, float]] = field(default_factory=dict)


def component_bars(rows: Sequence[ComponentRow], closures: Sequence[Closure]) -> list[ComponentBar]:
    """The bars of :func:`component_figure` from :func:`~energy_hpc.analysis.components.component_tables`'
    rows and closures: per run, case and method, each group's J per unit summed over its components, the
    closure's residual and the iteration's energy (± one sigma) per unit; the mean over ranks where
    several ranks ran the case."""
    runs = {c.run for c in closures}
    # units per iteration of each run, case and rank: a row's J per iteration / its J per unit
    units: dict[tuple[str, int, int], float] = {}
    for r in rows:
        k = (r.run, r.case, r.rank)
        if k not in units and r.J_per_unit and math.isfinite(r.J_per_unit) and r.J_per_iteration:
            units[k] = r.J_per_iteration / r.J_per_unit
    keyed: dict[tuple[str, int, str], list[Closure]] = {}
    for c in closures:
        keyed.setdefault((c.run, c.case, c.method), []).append(c)
    bars = []
    for (run, case, method), cs in keyed.items():
        n = len(cs)
        segments: dict[str, float] = {}
        steps: dict[str, dict[str, float]] = {}
        for r in rows:
            if (r.run, r.case, r.method) == (run, case, method):
                g = component_group(r.component)
                segments[g] = segments.get(g, 0.0) + r.J_per_unit / n
                mine = steps.setdefault(r.step, {})
                mine[g] = mine.get(g, 0.0) + r.J_per_unit / n
        if set(steps) <= {""}:
            steps = {}
        else:
            steps = {s: steps[s] for s in step_order(list(steps))}
        per = [units.get((c.run, c.case, c.rank), math.nan) for c in cs]
        residual = sum(c.residual_J / u for c, u in zip(cs, per, strict=True)) / n
        total = sum(c.iteration_J / u for c, u in zip(cs, per, strict=True)) / n
        unc = math.sqrt(sum((c.iteration_J_unc / u) ** 2 for c, u in zip(cs, per, strict=True))) / n
        first = next(r for r in rows if (r.run, r.case) == (run, case))
        label = _case_label(cs[0].params) + (f"\n{run}" if len(runs) > 1 else "")
        bars.append(
            ComponentBar(label, method, first.unit, segments, residual, total, unc, n, cs[0].data, steps)
        )
    return bars


def component_figure(rows: Sequence[ComponentRow], closures: Sequence[Closure]) -> Figure:
    """Where the energy goes: one panel per method (replay, time), one stacked bar per case with a
    segment per component group in J per unit, the residual hatched on top (downwards where the parts
    add to more than the whole) and the measured iteration's ± one sigma at the top. Where a case told
    its calls by step (prefill / decode, first / middle / last), its bar is stacked step by step in the
    order they run, the calls outside every step first, each step's block outlined and named beside it.
    Each segment's ``gid`` is ``"<method>|<case label>|<step>|<group>"`` (step "" outside the steps or
    where the case has none; group ``residual`` for the residual), so the drawn numbers can be read
    back."""
    from matplotlib import colormaps

    bars = component_bars(rows, closures)
    methods = [m for m in ("replay", "time") if any(b.method == m for b in bars)]
    groups: list[str] = []
    for b in bars:
        groups += [g for g in b.segments if g not in groups]
    cmap = colormaps["tab10" if len(groups) <= 10 else "tab20"]
    colour = {g: cmap(i % cmap.N) for i, g in enumerate(groups)}
    most = max(sum(b.method == m for b in bars) for m in methods)
    fig = _figure(max(7.5, (0.9 * most + 1.5) * len(methods) + 3), 5.5)
    axes = fig.subplots(1, len(methods), sharey=True, squeeze=False)[0]
    titles = {
        "replay": "replay: measured by isolation\nand repetition",
        "time": "time: attributed by time\n(a model)",
    }
    negative = False
    for ax, method in zip(axes, methods, strict=True):
        mine = [b for b in bars if b.method == method]
        x = np.arange(len(mine))
        for xi, b in zip(x, mine, strict=True):
            bottom = 0.0
            for step, segs in (b.steps or {"": b.segments}).items():
                below = bottom
                for g, v in segs.items():
                    v = float(np.nan_to_num(v))
                    gid = f"{method}|{b.label}|{step}|{g}"
                    ax.bar(xi, v, 0.6, bottom=bottom, color=colour[g], edgecolor="white", lw=0.5, gid=gid)
                    bottom += v
                if b.steps:
                    _step_block(ax, float(xi), below, bottom, step)
            res = float(np.nan_to_num(b.residual))
            negative |= res < 0
            ax.bar(
                xi,
                res,
                0.6,
                bottom=bottom,
                # below zero it lies over the parts it takes back: see-through, so they stay visible
                color="white" if res >= 0 else "none",
                edgecolor="0.3",
                hatch="//",
                lw=0.5,
                gid=f"{method}|{b.label}||{RESIDUAL}",
            )
            if math.isfinite(b.total):
                ax.errorbar(xi, b.total, yerr=np.nan_to_num(b.total_unc), color="black", capsize=3)
                if b.n_ranks > 1:
                    ax.annotate(
                        f"{b.n_ranks} ranks",
                        (xi, b.total),
                        xytext=(0, 6),
                        textcoords="offset points",
                        ha="center",
                        fontsize=7,
                    )
        ax.set_xticks(x, [b.label for b in mine], rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.75, len(mine) - 0.25 + (0.5 if any(b.steps for b in mine) else 0.0))
        ax.set_title(titles.get(method, method), fontsize=8)
        ax.axhline(0, color="0.5", lw=0.5)
    units = sorted({b.unit for b in bars})
    axes[0].set_ylabel(f"J per {'/'.join(units)}")
    from matplotlib.patches import Patch

    handles = [Patch(color=colour[g], label=g) for g in groups]
    handles.append(
        Patch(
            facecolor="white",
            edgecolor="0.3",
            hatch="//",
            label="residual (no component)" + (", below zero: parts exceed the whole" if negative else ""),
        )
    )
    fig.legend(
        handles=handles[::-1], title="component group", fontsize=7, loc="outside right center", frameon=False
    )
    caption = (
        f"{case_key([]).splitlines()[0]}. Bar top: the measured iteration, error bar 1 sigma"
        + ("; mean over ranks" if any(b.n_ranks > 1 for b in bars) else "")
        + (
            ". Outlined blocks: the steps of an iteration (prefill, decode; first, middle, last denoising "
            "step), in the order they run, the calls outside every step first"
            if any(b.steps for b in bars)
            else ""
        )
        + f". {GROUP_RULE[0].upper()}{GROUP_RULE[1:]}."
    )
    fig.supxlabel(textwrap.fill(caption, 100), fontsize=7)
    fig.suptitle(f"Where the energy goes - {_rows_label([{'data': b.data} for b in bars])}", fontsize=9)
    return fig


def _step_block(ax: Any, x: float, bottom: float, top: float, step: str) -> None:
    """Outline one step's block of a stacked bar and name the step beside it."""
    from matplotlib.patches import Rectangle

    if top <= bottom:
        return
    ax.add_patch(Rectangle((x - 0.32, bottom), 0.64, top - bottom, fill=False, edgecolor="black", lw=1.0))
    ax.annotate(
        step or "outside steps",
        (x + 0.32, (bottom + top) / 2),
        xytext=(2, 0),
        textcoords="offset points",
        va="center",
        fontsize=6,
    )


# ------------------------------------------------------------------ model structures side by side

# the layer types of :func:`structures_figure`, in drawing order: one word for every architecture
LAYER_TYPES = {
    "embed": "embeddings",
    "rotary_emb": "embeddings",  # a decoder's rotary position embedding
    "attn": "self-attention",
    "xattn": "cross-attention",
    "mlp": "MLP / feed-forward",
    "ff": "MLP / feed-forward",
    "resnet": "resnet / conv",
    "conv": "resnet / conv",
    "norm": "final norm",
    "head": "head",
    "encoder": "encoder (whole)",
    "text_encoder": "text encoder",
    "vae": "VAE decode",
    "unet": "UNet blocks (whole)",
}


def layer_type(name: str) -> str:
    """The layer type a component counts as in :func:`structures_figure`, whatever the architecture:
    ``L3.attn``, ``dec.L0.attn`` and ``unet.down1.attn`` -> ``self-attention``; ``unet.up0.ff`` and
    ``L1.mlp`` -> ``MLP / feed-forward``; ``text_encoder_2`` -> ``text encoder``."""
    parts = name.partition("@")[0].split(".")
    if parts[0] == "refiner":
        parts = parts[1:]
    head = parts[0].rstrip("0123456789_")
    if head in ("vae", "text_encoder") or (head == "unet" and len(parts) == 2):
        return LAYER_TYPES[head]
    last = parts[-1].rstrip("0123456789")
    return LAYER_TYPES.get(last, last)


@dataclass
class StructureBar:
    """One case of a run and one method: its iteration energy split by layer type, in shares (ranks
    averaged), and the iteration's energy per unit."""

    run: str
    case: int
    label: str
    method: str
    unit: str
    shares: dict[str, float]  # layer type -> share of the iteration's energy (0..1)
    residual: float  # share of the iteration no component covers (the closure's residual)
    J_per_unit: float  # the measured iteration's energy per unit
    data: str
    # step -> share of the iteration's energy (0..1) where the case told its calls by step, with "" for
    # the components outside every step; empty where no row has a step. Adds up to sum(shares).
    steps: dict[str, float] = field(default_factory=dict)


def structure_bars(rows: Sequence[ComponentRow], closures: Sequence[Closure]) -> list[StructureBar]:
    """The bars of :func:`structures_figure`: per run, case and method, each layer type's share of the
    iteration's energy (the component rows' ``share`` summed) and the closure's residual share, the mean
    over ranks where several ranks ran the case."""
    keyed: dict[tuple[str, int, str], list[Closure]] = {}
    for c in closures:
        keyed.setdefault((c.run, c.case, c.method), []).append(c)
    runs = {c.run for c in closures}
    out = []
    for (run, case, method), cs in keyed.items():
        n = len(cs)
        mine = [r for r in rows if (r.run, r.case, r.method) == (run, case, method)]
        shares: dict[str, float] = {}
        steps: dict[str, float] = {}
        if not all(c.iteration_J > 0 and math.isfinite(c.residual_J) for c in cs):
            mine = []  # the sensor resolved no energy over an iteration or a replay window: no shares
        for r in mine:
            g = layer_type(r.component)
            shares[g] = shares.get(g, 0.0) + float(np.nan_to_num(r.share)) / n
            steps[r.step] = steps.get(r.step, 0.0) + float(np.nan_to_num(r.share)) / n
        steps = {k: steps[k] for k in step_order(list(steps))} if set(steps) - {""} else {}
        residual = sum(c.residual_J / c.iteration_J for c in cs) / n if mine else math.nan
        per_unit = [r.J_per_iteration / r.J_per_unit for r in mine if r.J_per_unit and r.J_per_iteration]
        units = per_unit[0] if per_unit else math.nan
        total = sum(c.iteration_J for c in cs) / n / units if units else math.nan
        label = _case_label(cs[0].params) + (f"\n{run}" if len(runs) > 1 else "")
        unit = next((r.unit for r in rows if (r.run, r.case) == (run, case)), "?")
        out.append(StructureBar(run, case, label, method, unit, shares, residual, total, cs[0].data, steps))
    return out


_STEP_GREY = "0.7"


def _by_step_bar(ax: Any, y: float, b: StructureBar, gid: str) -> None:
    """The thin bar under a case told by step: its components' share per step, in grey shades."""
    left = 0.0
    shades = np.linspace(0.55, 0.85, max(len(b.steps), 2))
    for (step, share), shade in zip(b.steps.items(), shades, strict=False):
        width = 100 * share
        ax.barh(y, width, 0.35, left=left, color=str(shade), edgecolor="white", lw=0.5, gid=gid + step)
        if width > 4:
            ax.text(left + width / 2, y, step or "outside", ha="center", va="center", fontsize=6)
        left += width


def structures_figure(rows: Sequence[ComponentRow], closures: Sequence[Closure]) -> Figure:
    """Model structures side by side: one horizontal bar per case (model), its iteration energy split
    by layer type in per cent, the residual hatched, and the iteration's J per unit written beside it;
    one panel per method. A case that told its calls by step (prefill / decode, first / middle / last)
    gets a second, thinner bar under its own, labelled ``"<case label>, by step"``: the same components
    split by the step their calls fall in, in grey shades, each named inside. Each segment's ``gid`` is
    ``"<method>|<case label>|<layer type>"`` (``residual`` for the residual) and
    ``"<method>|<case label>, by step|<step>"`` (``""`` outside every step), so the drawn numbers can be
    read back."""
    bars = structure_bars(rows, closures)
    methods = [m for m in ("replay", "time") if any(b.method == m for b in bars)]
    order = list(dict.fromkeys(LAYER_TYPES.values()))
    groups = [g for g in order if any(g in b.shares for b in bars)]
    groups = list(dict.fromkeys(groups + [g for b in bars for g in b.shares]))
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    from energy_hpc.analysis.formatting import format_number

    cmap = colormaps["tab20"]
    colour = {g: cmap(i % cmap.N) for i, g in enumerate(groups)}
    # one row per case, and one more under a case that some method told by step; the panels share these
    # rows (and their y axis), so a case sits at the same height in every panel
    labels = list(dict.fromkeys(b.label for b in bars))
    stepped = {b.label for b in bars if b.steps}
    tick_labels = [t for lab in labels for t in ([lab, f"{lab}, by step"] if lab in stepped else [lab])]
    row_y = {t: float(len(tick_labels) - 1 - i) for i, t in enumerate(tick_labels)}
    fig = _figure(6.0 * len(methods) + 3.0, 0.5 * len(tick_labels) + 2.5)
    axes = fig.subplots(1, len(methods), sharey=True, squeeze=False)[0]
    for ax, method in zip(axes, methods, strict=True):
        mine = [b for b in bars if b.method == method]
        y = [row_y[b.label] for b in mine]
        for b in mine:
            if b.steps:
                _by_step_bar(ax, row_y[f"{b.label}, by step"], b, f"{method}|{b.label}, by step|")
        right = 100.0
        for yi, b in zip(y, mine, strict=True):
            if not b.shares:
                ax.annotate(
                    "not resolved: an iteration or a replay window too short for the sensor",
                    (0, yi),
                    xytext=(4, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=7,
                )
                continue
            left = 0.0
            for g in groups:
                if g in b.shares:
                    ax.barh(
                        yi, 100 * b.shares[g], 0.6, left=left, color=colour[g], gid=f"{method}|{b.label}|{g}"
                    )
                    left += 100 * b.shares[g]
            ax.barh(
                yi,
                100 * b.residual,
                0.6,
                left=left,
                color="white" if b.residual >= 0 else "none",  # below zero: over the parts, see-through
                edgecolor="0.3",
                hatch="//",
                lw=0.5,
                gid=f"{method}|{b.label}|residual",
            )
            right = max(right, left, left + 100 * b.residual)
            ax.annotate(
                f"{format_number(b.J_per_unit)} J/{b.unit}",
                (max(left + 100 * b.residual, left), yi),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        ax.set_yticks([row_y[t] for t in tick_labels], tick_labels, fontsize=8)
        ax.set_xlabel("share of the iteration's energy (%)", fontsize=8)
        ax.set_xlim(0, 1.25 * right)
        ax.axvline(100, color="0.5", lw=0.5)
        ax.set_title(
            "replay: measured by isolation and repetition"
            if method == "replay"
            else "time: attributed by time (a model)",
            fontsize=8,
        )
    handles = [Patch(color=colour[g], label=g) for g in groups]
    handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="//", label="residual (no component)"))
    if any(b.steps for b in bars):
        handles.append(Patch(color=_STEP_GREY, label="by step: the same components by the step they run in"))
    fig.legend(handles=handles, title="layer type", fontsize=7, loc="outside right upper", frameon=False)
    fig.suptitle(
        f"Model structures side by side - {_rows_label([{'data': b.data} for b in bars])}", fontsize=9
    )
    return fig
