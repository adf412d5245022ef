"""energy-hpc table: per-case energy table over run files or study folders."""

from __future__ import annotations

import argparse
import sys

HELP = "reduce run files (or folders of them) to a per-case energy table"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="run files (.h5) or folders searched for them")
    p.add_argument("--format", "-f", choices=("markdown", "csv", "json", "latex"), default="markdown")
    p.add_argument("--by", help="comma-separated fields to group by (case fields such as model, dtype, "
                                "batch_size, or n_ranks, n_nodes); default: one row per case and rank count")


def run(args: argparse.Namespace) -> int:
    from energy_hpc.analysis.table import energy_table, format_rows
    from energy_hpc.errors import RunFileError
    from energy_hpc.store import find_run_files

    files = find_run_files(args.paths)
    if not files:
        raise RunFileError(f"no run files (*.h5) in {', '.join(args.paths)}; give the folder energy-hpc run "
                           "wrote to (-o)")
    by = [b.strip() for b in args.by.split(",") if b.strip()] if args.by else None
    rows = energy_table(files, by=by)
    sys.stdout.write(format_rows(rows, args.format))
    return 0
