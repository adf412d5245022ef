"""A report folder: the tables in every format, the figures, and an index page (Markdown and HTML)."""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from energy_hpc.analysis.formatting import data_banner, jsonable
from energy_hpc.analysis.plots import energy_figure, power_figure, save, scaling_figure
from energy_hpc.analysis.scaling import format_scaling, scaling_rows
from energy_hpc.analysis.table import device_rows, format_rows, reduce_files, rows_from_reductions

log = logging.getLogger(__name__)

MAX_POWER_FIGURES = 8


def write_report(
    files: Sequence[Path],
    out: Path,
    by: Sequence[str] | None = None,
    max_power_figures: int = MAX_POWER_FIGURES,
) -> Path:
    """Write the report into ``out``; returns the index page (index.md; index.html beside it)."""
    out.mkdir(parents=True, exist_ok=True)
    reds = reduce_files(files)
    rows = rows_from_reductions(reds, by=by)
    stage_rows = rows_from_reductions(reds, by=by, stages=True)
    has_stages = len(stage_rows) > len(rows)
    banner = data_banner(rows)
    sections: list[tuple[str, str, list[str]]] = []  # (title, markdown text, images)

    for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("json", "json"), ("latex", "tex")):
        (out / f"table.{ext}").write_text(format_rows(rows, fmt))
        if has_stages:
            (out / f"table_stages.{ext}").write_text(format_rows(stage_rows, fmt))
    (out / "devices.json").write_text(json.dumps(jsonable(device_rows(reds, stages=True)), indent=2) + "\n")
    save(energy_figure(rows), out / "energy_per_unit")
    sections.append(("Energy per case", format_rows(rows, "markdown"), ["energy_per_unit.png"]))
    if has_stages:
        save(energy_figure([r for r in stage_rows if r["stage"]]), out / "energy_per_unit_stages")
        sections.append(
            ("Energy per stage", format_rows(stage_rows, "markdown"), ["energy_per_unit_stages.png"])
        )
    if len({r["n_nodes"] for r in rows}) > 1:
        srows = scaling_rows(rows, by)
        for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("json", "json")):
            (out / f"scaling.{ext}").write_text(format_scaling(srows, fmt))
        save(scaling_figure(srows), out / "scaling")
        sections.append(("Scaling over node counts", format_scaling(srows, "markdown"), ["scaling.png"]))
    images = []
    for f in list(files)[:max_power_figures]:
        stem = f"power_{Path(f).stem}"
        save(power_figure(f), out / stem)
        images.append(f"{stem}.png")
    if len(files) > max_power_figures:
        log.info("power figures for the first %d of %d run files", max_power_figures, len(files))
    sections.append(("Power over time", "", images))

    md = [
        "# Energy report",
        "",
        f"**Data: {banner}**",
        "",
        f"{len(files)} run file(s): "
        + ", ".join(Path(f).name for f in files[:20])
        + (" ..." if len(files) > 20 else ""),
        "",
        "Tables: table.md/.csv/.json/.tex"
        + (", table_stages.*" if has_stages else "")
        + ", devices.json (per device, MI250X packages split equally between their GCDs). "
        "Uncertainties are one standard deviation (see docs/analysis.md).",
        "",
    ]
    for title, text, imgs in sections:
        md += [f"## {title}", "", text] + [f"![{title}]({i})" for i in imgs] + [""]
    index = out / "index.md"
    index.write_text("\n".join(md) + "\n")
    body = [f"<h1>Energy report</h1><p><b>Data: {html.escape(banner)}</b></p>"]
    for title, text, imgs in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        if text:
            body.append(f"<pre>{html.escape(text)}</pre>")
        body += [f'<p><img src="{html.escape(i)}" style="max-width:100%"></p>' for i in imgs]
    (out / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>energy-hpc report"
        "</title></head><body>" + "\n".join(body) + "</body></html>\n"
    )
    return index
