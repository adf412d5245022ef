"""A report folder: the tables in every format, the figures, and an index page (Markdown and HTML).

The index is built once as a list of blocks (headings, paragraphs, tables made from the table rows,
lists, figures) and written twice from them: ``index.md`` and ``index.html``, so the two say the same
thing line for line. The HTML is plain (no script, no external file besides the figures beside it):
real tables, the figures inline, every text escaped.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from energy_hpc.analysis.catalog import read_study
from energy_hpc.analysis.components import METHOD_TEXT, Closure, ComponentRow, study_components
from energy_hpc.analysis.components import case_label as component_case_label
from energy_hpc.analysis.formatting import (
    MISSING,
    count_cell,
    data_banner,
    format_number,
    format_uncertainty,
    jsonable,
    markdown_table,
    value_pm,
)
from energy_hpc.analysis.plots import (
    GROUP_RULE,
    component_figure,
    energy_figure,
    has_stages,
    power_figure,
    save,
    scaling_figure,
)
from energy_hpc.analysis.scaling import format_scaling, scaling_rows
from energy_hpc.analysis.table import carbon_legend, format_rows

if TYPE_CHECKING:
    from energy_hpc.analysis.carbon import CarbonFactor

log = logging.getLogger(__name__)

MAX_POWER_FIGURES = 8

UNCERTAINTY_NOTE = (
    "± values are one standard deviation. ± total combines the measurement uncertainty (sensor model, "
    "docs/analysis.md; for an ESTIMATE it includes the watts-per-core assumption) and the spread between "
    "iterations (standard error of the mean, SEM) in quadrature; where fewer than 2 iterations have data "
    "the spread is unknown ('-') and ± total is the measurement's alone. Uncertainties are given to two "
    "significant figures and values to match."
)


# ------------------------------------------------------------------ blocks of the index page


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str
    strong: bool = False


@dataclass
class Table:
    headers: list[str]
    body: list[list[str]]
    numeric: set[int] = field(default_factory=set)  # columns aligned right


@dataclass
class Items:
    items: list[str]


@dataclass
class Image:
    src: str
    alt: str


Block = Heading | Para | Table | Items | Image


def to_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text]
        elif isinstance(b, Para):
            lines += [f"**{b.text}**" if b.strong else b.text]
        elif isinstance(b, Table):
            lines += markdown_table(b.headers, [[c.replace("|", "\\|") for c in r] for r in b.body])
        elif isinstance(b, Items):
            lines += [f"- {x}" for x in b.items]
        else:
            lines += [f"![{b.alt}]({b.src})"]
        lines.append("")
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1300px;
       padding: 0 1em; line-height: 1.45; color: #111; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
.banner { background: #fff4d6; border-left: 4px solid #d9a400; padding: .4em .8em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: .25em .5em; white-space: nowrap; }
th { background: #f2f2f2; text-align: left; white-space: normal; vertical-align: bottom; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #444; }
li { font-size: .9em; }
"""


def to_html(blocks: Sequence[Block], title: str) -> str:
    e = html.escape
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f'<p class="banner"><b>{e(b.text)}</b></p>' if b.strong else f"<p>{e(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f'<th scope="col">{e(h)}</th>' for h in b.headers)
            rows = [
                "<tr>"
                + "".join(
                    f'<td class="num">{e(c)}</td>' if i in b.numeric else f"<td>{e(c)}</td>"
                    for i, c in enumerate(r)
                )
                + "</tr>"
                for r in b.body
            ]
            body.append(
                f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>\n'
                + "\n".join(rows)
                + "\n</tbody></table></div>"
            )
        elif isinstance(b, Items):
            body.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b.items) + "</ul>")
        else:
            pdf = Path(b.src).with_suffix(".pdf").name
            body.append(
                f'<figure><a href="{e(b.src)}"><img src="{e(b.src)}" alt="{e(b.alt)}"></a>'
                f'<figcaption>{e(b.alt)} (<a href="{e(pdf)}">PDF</a>)</figcaption></figure>'
            )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# ------------------------------------------------------------------ tables from the rows


def _unc(r: dict[str, Any], key: str) -> str:
    """An uncertainty cell of the energy per unit, rounded as beside its value (two significant figures)."""
    return format_uncertainty(r.get("energy_per_unit_J", math.nan), r.get(key, math.nan))[1]


def _total(r: dict[str, Any]) -> float:
    total = r.get("energy_per_unit_unc_J", math.nan)
    if isinstance(total, float) and math.isfinite(total):
        return total
    return float(r.get("energy_per_unit_meas_unc_J", r.get("energy_per_unit_uncertainty_J", math.nan)))


def _finite(rows: Sequence[dict[str, Any]], key: str) -> bool:
    return any(isinstance(r.get(key), float) and math.isfinite(r[key]) for r in rows)


def energy_blocks(rows: list[dict[str, Any]]) -> list[Block]:
    """The energy table as the report shows it: plain column names with units, ± one standard deviation
    beside each energy per unit, the rows' flags as a list under it."""
    cols: list[tuple[str, Any]] = [("task", lambda r: r.get("task") or "")]
    if any(r.get("label") for r in rows):
        cols.append(("label", lambda r: r.get("label") or ""))
    cols += [
        ("model", lambda r: r.get("model") or ""),
        ("dtype", lambda r: r.get("dtype") or ""),
        ("batch size", lambda r: format_number(r.get("batch_size"))),
    ]
    if any(r.get("stage") for r in rows):
        cols.append(("stage", lambda r: r.get("stage") or "whole iteration"))
    cols += [
        ("ranks", lambda r: format_number(r.get("n_ranks"))),
        ("nodes", lambda r: format_number(r.get("n_nodes"))),
        ("iterations", lambda r: format_number(r.get("n_iterations"))),
        ("units", lambda r: count_cell(r.get("units"), str(r.get("unit", "")))),
        ("time (s)", lambda r: format_number(r.get("seconds"))),
        ("energy (J)", lambda r: value_pm(r.get("energy_J"), r.get("energy_uncertainty_J"))),
        ("energy per unit (J) ± total", lambda r: value_pm(r.get("energy_per_unit_J"), _total(r))),
        ("± measurement (J)", lambda r: _unc(r, "energy_per_unit_meas_unc_J")),
        ("± spread, SEM (J)", lambda r: _unc(r, "energy_per_unit_sem_J")),
        ("mean power per device (W)", lambda r: format_number(r.get("mean_power_W"))),
        ("idle power (W)", lambda r: format_number(r.get("idle_power_W"))),
        (
            "net energy per unit (J)",
            lambda r: value_pm(r.get("net_energy_per_unit_J"), r.get("net_energy_per_unit_uncertainty_J")),
        ),
    ]
    if _finite(rows, "node_energy_per_unit_J"):
        cols.append(("node energy per unit (J)", lambda r: format_number(r.get("node_energy_per_unit_J"))))
    cols.append(("method", lambda r: str(r.get("method", ""))))
    carbon = any("co2e_per_1000_units_g" in r for r in rows)  # analysis.carbon: only when asked for
    if carbon:
        cols += [
            ("CO2e (g, conversion*)", lambda r: value_pm(r.get("co2e_g"), r.get("co2e_uncertainty_g"))),
            (
                "CO2e per 1000 units (g, conversion*)",
                lambda r: value_pm(
                    r.get("co2e_per_1000_units_g"), r.get("co2e_per_1000_units_uncertainty_g")
                ),
            ),
        ]
    text = {"task", "label", "model", "dtype", "stage", "method"}
    table = Table(
        [h for h, _ in cols],
        [[str(f(r)) for _, f in cols] for r in rows],
        {i for i, (h, _) in enumerate(cols) if h not in text},
    )
    blocks: list[Block] = [Para(f"Data: {data_banner(rows)}"), table, Para(UNCERTAINTY_NOTE)]
    if carbon:
        # the legend without its leading '*', which Markdown would take for a list or emphasis
        blocks += [Para("CO2e columns: " + line.removeprefix("* ")) for line in carbon_legend(rows)]
    flags = [f"row {i + 1}: {flag}" for i, r in enumerate(rows) for flag in r.get("flags", [])]
    if flags:
        blocks.append(Items(flags))
    return blocks


def scaling_blocks(srows: list[dict[str, Any]]) -> list[Block]:
    cols: list[tuple[str, Any]] = [
        ("model", lambda r: r.get("model") or ""),
        ("dtype", lambda r: r.get("dtype") or ""),
        ("batch size", lambda r: format_number(r.get("batch_size"))),
    ]
    if any(r.get("stage") for r in srows):
        cols.append(("stage", lambda r: r.get("stage") or "whole iteration"))
    cols += [
        ("nodes", lambda r: format_number(r.get("n_nodes"))),
        ("ranks", lambda r: format_number(r.get("n_ranks"))),
        (
            "throughput (units/s)",
            lambda r: format_number(r.get("throughput_per_s")) + (f" {r['unit']}s" if r.get("unit") else ""),
        ),
        ("speedup", lambda r: format_number(r.get("speedup"))),
        ("ideal speedup", lambda r: format_number(r.get("ideal_speedup"))),
        ("parallel efficiency", lambda r: format_number(r.get("parallel_efficiency"))),
        ("energy per unit (J) ± total", lambda r: value_pm(r.get("energy_per_unit_J"), _total(r))),
        ("energy efficiency", lambda r: format_number(r.get("energy_efficiency"))),
        ("method", lambda r: str(r.get("method", ""))),
    ]
    text = {"model", "dtype", "stage", "method"}
    return [
        Para(f"Data: {data_banner(srows)}"),
        Table(
            [h for h, _ in cols],
            [[str(f(r)) for _, f in cols] for r in srows],
            {i for i, (h, _) in enumerate(cols) if h not in text},
        ),
        Para(
            "Efficiencies against ideal (linear) scaling from the smallest node count of each series. "
            + UNCERTAINTY_NOTE
        ),
    ]


def component_blocks(rows: list[ComponentRow], closures: list[Closure]) -> list[Block]:
    """The component table as ``table --components`` shows it (one row per component and method), the
    closure of each case, rank and method as a list under it."""
    cols: list[tuple[str, Any]] = [
        ("case", lambda r: component_case_label(r.params)),
        ("rank", lambda r: str(r.rank)),
        ("component", lambda r: r.label),
        ("method", lambda r: r.method),
        ("calls per iteration", lambda r: format_number(r.calls_per_iteration)),
        ("energy per call (J)", lambda r: value_pm(r.J_per_call, r.J_per_call_unc)),
        ("energy per unit (J)", lambda r: f"{format_number(r.J_per_unit)} J/{r.unit}"),
        ("share of the iteration", lambda r: f"{r.share * 100:.1f} %" if math.isfinite(r.share) else MISSING),
        ("data", lambda r: r.data),
    ]
    text = {"case", "component", "method", "data"}
    closure_lines = [
        f"{component_case_label(c.params)} rank {c.rank} {c.method}: iteration {value_pm(c.iteration_J, c.iteration_J_unc)} J"
        f" = components {value_pm(c.components_J, c.components_J_unc)} J"
        f" + residual {value_pm(c.residual_J, c.residual_J_unc)} J"
        + ("" if c.adds_up else " (DOES NOT ADD UP: the components add to more than the iteration)")
        for c in closures
    ]
    return [
        Para(f"Data: {data_banner([r.as_dict() for r in rows])}"),
        Table(
            [h for h, _ in cols],
            [[str(f(r)) for _, f in cols] for r in rows],
            {i for i, (h, _) in enumerate(cols) if h not in text},
        ),
        Para("Closure per case, rank and method (components per iteration + residual = measured iteration):"),
        Items(closure_lines),
        Para(
            f"Methods: replay = {METHOD_TEXT['replay']}; time = {METHOD_TEXT['time']}. "
            f"In the figure, {GROUP_RULE}. ± values are one standard deviation."
        ),
    ]


# ------------------------------------------------------------------ the report


def write_report(
    files: Sequence[Path],
    out: Path,
    by: Sequence[str] | None = None,
    max_power_figures: int = MAX_POWER_FIGURES,
    carbon: CarbonFactor | None = None,
) -> Path:
    """Write the report into ``out``; returns the index page (index.md; index.html beside it). With
    ``carbon``, the tables gain the CO2e columns, each labelled a conversion by the stated factor."""
    out.mkdir(parents=True, exist_ok=True)
    study = read_study(files)  # the catalogue when it is fresh for every file, else the files
    rows = study.rows(by=by)
    stage_rows = study.rows(by=by, stages=True)
    if carbon is not None:
        from energy_hpc.analysis.carbon import with_carbon

        rows, stage_rows = with_carbon(rows, carbon), with_carbon(stage_rows, carbon)
    stages = has_stages(stage_rows)
    banner = data_banner(rows)

    for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("json", "json"), ("latex", "tex")):
        (out / f"table.{ext}").write_text(format_rows(rows, fmt))
        if stages:
            (out / f"table_stages.{ext}").write_text(format_rows(stage_rows, fmt))
    (out / "devices.json").write_text(json.dumps(jsonable(study.device_rows(stages=True)), indent=2) + "\n")

    blocks: list[Block] = [
        Heading(1, "Energy report"),
        Para(f"Data: {banner}", strong=True),
        Para(
            f"{len(files)} run file(s): "
            + ", ".join(Path(f).name for f in files[:20])
            + (" ..." if len(files) > 20 else "")
        ),
        Para(
            "Tables: table.md/.csv/.json/.tex"
            + (", table_stages.*" if stages else "")
            + ", devices.json (per device, MI250X packages split equally between their GCDs). "
            "Uncertainties are one standard deviation (see docs/analysis.md)."
        ),
        Heading(2, "Energy per case"),
        *energy_blocks(rows),
    ]
    save(energy_figure(rows), out / "energy_per_unit")
    blocks.append(Image("energy_per_unit.png", "Energy per unit by case"))
    if stages:
        blocks += [Heading(2, "Energy per stage"), *energy_blocks(stage_rows)]
        save(energy_figure([r for r in stage_rows if r["stage"]]), out / "energy_per_unit_stages")
        blocks.append(Image("energy_per_unit_stages.png", "Energy per unit by stage"))
    if len({r["n_nodes"] for r in rows}) > 1:
        srows = scaling_rows(rows, by)
        for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("json", "json")):
            (out / f"scaling.{ext}").write_text(format_scaling(srows, fmt))
        save(scaling_figure(srows), out / "scaling")
        blocks += [Heading(2, "Scaling over node counts"), *scaling_blocks(srows)]
        blocks.append(Image("scaling.png", "Scaling over node counts"))
    comp_rows, closures = study_components(files)
    if comp_rows:
        save(component_figure(comp_rows, closures), out / "components")
        blocks += [Heading(2, "Where the energy goes"), *component_blocks(comp_rows, closures)]
        blocks.append(Image("components.png", "Energy per unit by model component"))
    blocks += [
        Heading(2, "Power over time"),
        Para(
            "One figure per run file, one panel per channel; the legend of each panel names the shaded "
            "windows and says what the line is (an instant reading or a trailing mean)."
        ),
    ]
    for f in list(files)[:max_power_figures]:
        stem = f"power_{Path(f).stem}"
        save(power_figure(f), out / stem)
        blocks.append(Image(f"{stem}.png", f"Power over time, {Path(f).name}"))
    if len(files) > max_power_figures:
        log.info("power figures for the first %d of %d run files", max_power_figures, len(files))
        blocks.append(Para(f"Power figures for the first {max_power_figures} of {len(files)} run files."))

    index = out / "index.md"
    index.write_text(to_markdown(blocks))
    (out / "index.html").write_text(to_html(blocks, "Energy report"))
    return index
