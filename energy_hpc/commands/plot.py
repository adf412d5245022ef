"""energy-hpc plot: figures (PNG and PDF) for run files or study folders."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "draw power traces, energy per unit and scaling figures (PNG and PDF)"
KINDS = ("power", "energy", "scaling", "all")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="run files (.h5) or folders searched for them (recursively)")
    p.add_argument("-o", "--out", required=True, help="folder to write the figures into")
    p.add_argument("--kind", choices=KINDS, default="all")
    p.add_argument("--by", help="comma-separated fields to group rows by (as for energy-hpc table)")
    p.add_argument("--stages", action="store_true", help="energy figure per stage window")


def run(args: argparse.Namespace) -> int:
    from energy_hpc.analysis.plots import energy_figure, power_figure, save, scaling_figure
    from energy_hpc.analysis.scaling import scaling_rows
    from energy_hpc.analysis.table import energy_table
    from energy_hpc.commands._common import find_files, parse_by

    files = find_files(args.paths)
    out = Path(args.out)
    written: list[Path] = []
    if args.kind in ("power", "all"):
        for f in files:
            written += save(power_figure(f), out / f"power_{Path(f).stem}")
    if args.kind in ("energy", "scaling", "all"):
        rows = energy_table(files, by=parse_by(args.by), stages=args.stages)
        if args.kind in ("energy", "all"):
            written += save(energy_figure(rows), out / "energy_per_unit")
        if args.kind == "scaling" or (args.kind == "all" and len({r["n_nodes"] for r in rows}) > 1):
            written += save(scaling_figure(scaling_rows(rows, parse_by(args.by))), out / "scaling")
    for p in written:
        print(p)
    return 0
