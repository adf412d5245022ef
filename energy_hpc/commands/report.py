"""energy-hpc report: tables, figures and an index page for run files or study folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from energy_hpc.errors import UserError

HELP = "write tables, figures and an index page (Markdown and HTML) for run files or study folders"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="run files (.h5) or folders searched for them (recursively)")
    p.add_argument("-o", "--out", required=True, help="folder to write the report into")
    p.add_argument("--by", help="comma-separated fields to group rows by (as for energy-hpc table)")
    p.add_argument(
        "--carbon-intensity",
        type=float,
        metavar="G",
        help="add co2e_g and co2e_per_1000_units_g to the tables: energy converted at G gCO2e/kWh (a "
        "conversion by the factor you state, not a measurement)",
    )
    p.add_argument(
        "--pue",
        type=float,
        metavar="P",
        help="with --carbon-intensity: the facility's power usage effectiveness (default 1.0: the measured "
        "energy alone)",
    )


def run(args: argparse.Namespace) -> int:
    from energy_hpc.analysis.carbon import CarbonFactor
    from energy_hpc.analysis.report import write_report
    from energy_hpc.commands._common import find_files, parse_by

    if args.carbon_intensity is None and args.pue is not None:
        raise UserError("--pue scales the CO2e conversion: give --carbon-intensity G (gCO2e/kWh) with it")
    carbon = (
        None
        if args.carbon_intensity is None
        else CarbonFactor(args.carbon_intensity, 1.0 if args.pue is None else args.pue)
    )
    index = write_report(find_files(args.paths), Path(args.out), by=parse_by(args.by), carbon=carbon)
    print(index)
    return 0
