"""energy-hpc plot: figures (PNG and PDF) for run files or study folders."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "draw power traces, energy per unit, scaling and component figures (PNG and PDF)"
KINDS = ("power", "energy", "scaling", "components", "all")
log = logging.getLogger(__name__)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="run files (.h5) or folders searched for them (recursively)")
    p.add_argument("-o", "--out", required=True, help="folder to write the figures into")
    p.add_argument(
        "--kind",
        choices=KINDS,
        default="all",
        help="components: where the energy goes, for cases run with components (all: drawn where present)",
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
    if args.kind in ("components", "all"):
        written += _components(files, out, required=args.kind == "components")
    for p in written:
        print(p)
    return 0


def _components(files: list[Path], out: Path, required: bool) -> list[Path]:
    """The "where the energy goes" figure; a run set without component windows is an error only when
    the figure was asked for by name."""
    from energy_hpc.analysis.components import Closure, ComponentRow, component_tables
    from energy_hpc.analysis.plots import component_figure, save
    from energy_hpc.errors import UserError

    rows: list[ComponentRow] = []
    closures: list[Closure] = []
    for f in files:
        got_rows, got_closures = component_tables(f)
        rows += got_rows
        closures += got_closures
    if not rows:
        if required:
            raise UserError(
                'no component windows in these runs: set components = "blocks" in a [[case]] and run it again'
            )
        return []
    return save(component_figure(rows, closures), out / "components")
