"""energy-hpc table: per-case energy table over run files or study folders."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from energy_hpc.commands._common import add_carbon_options, carbon_factor, find_files, parse_by
from energy_hpc.errors import UserError

if TYPE_CHECKING:
    from energy_hpc.analysis.carbon import CarbonFactor

HELP = "reduce run files (or folders of them) to a per-case energy table"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="run files (.h5) or folders searched for them (recursively)")
    p.add_argument("--format", "-f", choices=("markdown", "csv", "json", "latex"), default="markdown")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--wide",
        action="store_true",
        help="Markdown/LaTeX: every column (default: a compact set that fits 100 characters); "
        "CSV and JSON always hold every column",
    )
    shown.add_argument(
        "--columns",
        metavar="A,B,..",
        help="Markdown/LaTeX: these columns, named as in CSV/JSON (e.g. model,dtype,energy_per_unit_J,"
        "energy_per_unit_unc_J,mean_power_W)",
    )
    p.add_argument(
        "--by",
        help="comma-separated fields to group by (case fields such as model, dtype, "
        "batch_size, or n_ranks, n_nodes); default: one row per case and rank count",
    )
    add_carbon_options(p)
    view = p.add_mutually_exclusive_group()
    view.add_argument(
        "--stages", action="store_true", help="also one row per stage window (base/refiner, prefill/decode)"
    )
    view.add_argument(
        "--scaling",
        action="store_true",
        help="scaling over node counts: throughput, energy per unit, efficiency vs ideal",
    )
    view.add_argument(
        "--components",
        action="store_true",
        help='energy by model component (cases run with components = "blocks"): J per call, J per unit, '
        "share of the iteration, method, and the closure per case",
    )
    view.add_argument(
        "--devices",
        action="store_true",
        help="one row per device (MI250X packages split equally between their GCDs)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from energy_hpc.analysis.catalog import read_study
    from energy_hpc.analysis.formatting import csv_cell, jsonable
    from energy_hpc.analysis.scaling import format_scaling, scaling_rows
    from energy_hpc.analysis.table import WIDE, column_names, format_rows

    files = find_files(args.paths)
    by = parse_by(args.by)
    picked = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    if (args.wide or args.columns is not None) and (args.devices or args.scaling):
        raise UserError(
            "--wide and --columns choose the energy table's columns: not with --devices or --scaling"
        )
    if args.columns is not None and not picked:
        raise UserError(
            "--columns needs column names separated by commas, e.g. --columns model,energy_per_unit_J"
        )
    carbon = _carbon_factor(args)
    if args.components:
        from energy_hpc.analysis.components import format_components

        sys.stdout.write(format_components(files, args.format))
        return 0
    study = read_study(files)  # the catalogue when it is fresh for every file, else the files
    if args.devices:
        rows = study.device_rows()
        if args.format == "json":
            sys.stdout.write(json.dumps(jsonable(rows), indent=2) + "\n")
        else:
            import csv

            wr = csv.writer(sys.stdout) if args.format == "csv" else None
            keys = [
                "file",
                "rank",
                "host",
                "device",
                "stage",
                "units",
                "unit",
                "energy_J",
                "energy_uncertainty_J",
                "energy_per_unit_J",
                "attribution",
                "data",
            ]
            if wr:
                wr.writerow(["case", *keys])
            for r in rows:
                vals = [json.dumps(r["case"], sort_keys=True)] + [csv_cell(r[k]) for k in keys]
                if wr:
                    wr.writerow(vals)
                else:
                    sys.stdout.write("\t".join(map(str, vals)) + "\n")
        return 0
    rows = study.rows(by=by, stages=args.stages)
    if carbon is not None:
        from energy_hpc.analysis.carbon import with_carbon

        rows = with_carbon(rows, carbon)
    if args.scaling:
        sys.stdout.write(format_scaling(scaling_rows(rows, by), args.format))
    else:
        unknown = [c for c in picked or () if rows and c not in column_names(rows)]
        if unknown:
            raise UserError(
                f"--columns: no column {', '.join(map(repr, unknown))}; the table has: {', '.join(column_names(rows))}"
            )
        sys.stdout.write(format_rows(rows, args.format, columns=WIDE if args.wide else picked))
    return 0


def _carbon_factor(args: argparse.Namespace) -> CarbonFactor | None:
    """The stated conversion (commands._common.carbon_factor), for the energy table's rows only."""
    carbon = carbon_factor(args)
    if carbon is not None and (args.devices or args.scaling or args.components):
        raise UserError(
            "--carbon-intensity converts the energy table's rows: not with --devices, --scaling or --components"
        )
    return carbon
