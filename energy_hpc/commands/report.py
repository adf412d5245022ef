"""energy-hpc report: tables, figures and an index page for run files or study folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from energy_hpc.commands._common import add_carbon_options

HELP = "write tables, figures and an index page (Markdown and HTML) for run files or study folders"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="run files (.h5) or folders searched for them (recursively)")
    p.add_argument("-o", "--out", required=True, help="folder to write the report into")
    p.add_argument("--by", help="comma-separated fields to group rows by (as for energy-hpc table)")
    add_carbon_options(p, " to the tables")


def run(args: argparse.Namespace) -> int:
    from energy_hpc.analysis.report import write_report
    from energy_hpc.commands._common import carbon_factor, find_files, parse_by

    index = write_report(
        find_files(args.paths), Path(args.out), by=parse_by(args.by), carbon=carbon_factor(args)
    )
    print(index)
    return 0
