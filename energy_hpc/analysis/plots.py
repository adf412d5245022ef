"""Figures (matplotlib, no pyplot, no display: safe on login nodes and in batch).

- :func:`power_figure`: power over time, one panel per channel, the windows shaded and labelled;
- :func:`energy_figure`: energy per unit by case (and stage) with uncertainty bars;
- :func:`scaling_figure`: energy per unit and throughput against node count, with the ideal line.

Every title says what the data is (measured, ESTIMATE, SYNTHETIC, SYNTHETIC from an EMULATED sensor).
:func:`save` writes PNG and PDF.
Long channels are drawn from a min/max envelope built chunk by chunk, never from the whole trace.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from energy_hpc.analysis.attribution import NEVER_ADDED, channel_roles
from energy_hpc.analysis.runfile import RunFile
from energy_hpc.store import EMULATED_MARK, emulated_text, sensor_words

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def power_figure(path: str | Path, channels: Sequence[int] | None = None) -> Figure:
    """Power over time per channel with the idle (grey) and measured (per case colour) windows shaded.

    Node-level channels are shaded with their node's windows (all ranks of the node). One text label per
    case names it; windows are whole iterations (stages are not shaded separately).
    """
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
        fig = _figure(10, 1.0 + 2.0 * max(len(metas), 1))
        axes = fig.subplots(max(len(metas), 1), 1, sharex=True, squeeze=False)[:, 0]
        labels = {c: _case_label(rf.case_params(c)) for c in range(rf.n_cases)}
        for ax, m in zip(axes, metas, strict=False):  # one empty panel when no channel
            t, mean, lo, hi = _envelope(rf, int(m["index"]))
            ax.plot(t, mean, lw=0.8, color="black")
            if len(t) and not np.array_equal(lo, hi):
                ax.fill_between(t, lo, hi, color="0.6", alpha=0.4, lw=0)
            r = int(m["rank"])
            if int(m.get("node_level", 0)):
                mine = np.array([rank_node.get(int(x), 0) == int(m.get("node", 0)) for x in rank])
            else:
                mine = rank == r
            for i in np.flatnonzero(mine & (phase == "idle") & (status == "ok")):
                ax.axvspan(w["start"][i], w["end"][i], color="0.85", zorder=0)
            shaded = mine & (phase == "measure") & (stage == "") & (status == "ok")
            for c in sorted(set(case[shaded])):
                sel = np.flatnonzero(shaded & (case == c))
                colour = _CASE_COLOURS[c % len(_CASE_COLOURS)]
                for k, i in enumerate(sel):  # alternate shades so that adjacent iterations stay apart
                    ax.axvspan(
                        w["start"][i], w["end"][i], color=colour, alpha=0.3 if k % 2 else 0.18, lw=0, zorder=0
                    )
                x0 = float(w["start"][sel].min())
                ax.annotate(
                    labels[c],
                    (x0, 1.0),
                    xycoords=("data", "axes fraction"),
                    va="top",
                    ha="left",
                    fontsize=7,
                    color=colour,
                )
            ax.set_ylabel("W")
            where = "node" if int(m.get("node_level", 0)) else f"rank {r}"
            ax.set_title(
                f"{m.get('name', '')} ({m.get('scope', '')}, {where}; {m.get('method', '')})",
                fontsize=8,
                loc="left",
            )
        axes[-1].set_xlabel("time since run start (s)")
        fig.suptitle(
            f"Power per channel - {rf.path.name} - {data_label(rf.synthetic, rf.estimate, rf.emulated)}\n"
            "grey: idle baseline; coloured: measured iterations by case",
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
    for ax in (ax_e, ax_t):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("nodes")
    ax_t.set_yscale("log")
    unit = "/".join(sorted({r["unit"] for r in srows}))
    ax_e.set_ylabel(f"J per {unit}")
    ax_t.set_ylabel(f"{unit}s per second")
    ax_e.set_title("energy per unit (dashed: ideal = smallest node count)", fontsize=8)
    ax_t.set_title("throughput (dashed: ideal linear scaling)", fontsize=8)
    ax_e.legend(fontsize=7)
    fig.suptitle(f"Scaling over node counts - {_rows_label(srows)}", fontsize=9)
    return fig
