"""energy-hpc plot: figures (PNG and PDF) for run files or study folders."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "draw power traces, energy per unit, scaling and component figures (PNG and PDF)"
KINDS = ("power", "energy", "scaling", "components", "structures", "ladder", "knobs", "all")
log = logging.getLogger(__name__)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="run files (.h5) or folders searched for them (recursively)")
    p.add_argument("-o", "--out", required=True, help="folder to write the figures into")
    p.add_argument(
        "--kind",
        choices=KINDS,
        default="all",
        help="components: where the energy goes, for cases run with components (all: drawn where present); "
        "structures: the cases side by side, each one's energy split by layer type in per cent",
    )
    p.add_argument("--by", help="comma-separated fields to group rows by (as for energy-hpc table)")
    p.add_argument(
        "--stages",
        action="store_true",
        help="energy figure per stage window (for jobs whose iterations have two or more stages)",
    )


def run(args: argparse.Namespace) -> int:
    from energy_hpc.analysis.catalog import read_study
    from energy_hpc.analysis.plots import energy_figure, has_stages, power_figure, save, scaling_figure
    from energy_hpc.analysis.scaling import scaling_rows
    from energy_hpc.commands._common import find_files, parse_by

    files = find_files(args.paths)
    out = Path(args.out)
    written: list[Path] = []
    if args.kind in ("power", "all"):
        for f in files:
            written += save(power_figure(f), out / f"power_{Path(f).stem}")
    if args.kind in ("energy", "scaling", "all"):
        study = read_study(files)  # the catalogue when it is fresh for every file, else the files
        rows = study.rows(by=parse_by(args.by))
        if args.kind in ("energy", "all"):
            written += save(energy_figure(rows), out / "energy_per_unit")
            if args.stages:
                stage_rows = study.rows(by=parse_by(args.by), stages=True)
                if has_stages(stage_rows):
                    stage_rows = [r for r in stage_rows if r["stage"]]
                    written += save(energy_figure(stage_rows), out / "energy_per_unit_stages")
                else:
                    log.warning("--stages: no case of these runs has two or more stages; no stage figure")
        if args.kind == "scaling" or (args.kind == "all" and len({r["n_nodes"] for r in rows}) > 1):
            written += save(scaling_figure(scaling_rows(rows, parse_by(args.by))), out / "scaling")
    if args.kind in ("components", "structures", "all"):
        written += _components(files, out, args.kind)
    if args.kind == "ladder":
        written += _ladder(files, out, parse_by(args.by))
    if args.kind == "knobs":  # energy and time against a swept power cap or clock (analysis/knobs.py)
        from energy_hpc.analysis.knobs import knob_figure

        written += save(knob_figure(read_study(files).rows(by=parse_by(args.by))), out / "knobs")
    for p in written:
        print(p)
    return 0


def _components(files: list[Path], out: Path, kind: str) -> list[Path]:
    """The "where the energy goes" figure (``components``, ``all``) or the structures figure
    (``structures``); a run set without component windows is an error only when a figure was asked for
    by name."""
    from energy_hpc.analysis.components import NO_COMPONENTS, study_components
    from energy_hpc.analysis.plots import component_figure, save, structures_figure
    from energy_hpc.errors import UserError

    rows, closures = study_components(files)
    if not rows:
        if kind != "all":
            raise UserError(NO_COMPONENTS)
        return []
    if kind == "structures":
        return save(structures_figure(rows, closures), out / "structures")
    return save(component_figure(rows, closures), out / "components")


def _ladder(files: list[Path], out: Path, by: list[str] | None) -> list[Path]:
    """Energy per unit against parameter count with a power law per task, and the fits as JSON."""
    from energy_hpc.analysis.catalog import read_study
    from energy_hpc.analysis.formatting import data_banner
    from energy_hpc.analysis.ladder import (
        fits_by_task,
        fits_json,
        ladder_figure,
        ladder_points,
        parameter_counts,
    )
    from energy_hpc.analysis.plots import save
    from energy_hpc.errors import UserError

    rows = read_study(files).rows(by=by)
    points = ladder_points(rows, parameter_counts(files))
    if not points:
        raise UserError(
            "no case of these runs records its parameter count: the ladder needs built-in random-weight "
            'models (source = "random"), as in jobs/size-ladder.toml'
        )
    data = data_banner(rows)
    fits = fits_by_task(points)
    for f in fits:
        log.info(
            "ladder %s: J per %s = %.3g x N^(%.3f ± %.2g)",
            f.task,
            f.unit,
            f.prefactor_J,
            f.exponent,
            f.exponent_unc,
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "ladder_fit.json").write_text(fits_json(fits, data))
    return [*save(ladder_figure(points, fits, data), out / "ladder"), out / "ladder_fit.json"]
