"""energy-hpc catalog: reduce a study's run files once into a Parquet catalogue beside them."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

HELP = (
    "keep a study folder's catalogue (Parquet, in DIR/.energy-hpc-catalog) up to date, so that table, "
    "plot and report read it instead of every run file; under mpiexec or srun the ranks share the files"
)

log = logging.getLogger(__name__)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "folders", nargs="+", type=Path, metavar="DIR", help="study folder(s), searched recursively"
    )
    p.add_argument(
        "--all", action="store_true", help="catalogue every run file again, not only those new or changed"
    )


def _plan(folder: Path, again: bool) -> dict[str, Any]:
    """What rank 0 decides for every rank: the files, those to reduce, the name of this refresh's parts."""
    from energy_hpc.analysis import catalog
    from energy_hpc.errors import UserError

    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; give the study folder the runs were written to")
    files, stale = catalog.stale_files(folder)
    return {"files": files, "stale": files if again else stale, "part": catalog.new_part_name()}


def run(args: argparse.Namespace) -> int:
    from energy_hpc.analysis import catalog
    from energy_hpc.context import detect
    from energy_hpc.errors import UserError

    catalog.require_pyarrow()
    _, comm = detect()
    for folder in args.folders:
        started = time.perf_counter()
        plan: dict[str, Any] | str
        if comm.rank == 0:
            try:
                plan = _plan(folder, args.all)
            except UserError as e:
                plan = str(e)
        else:
            plan = ""
        plan = comm.bcast(plan)
        if isinstance(plan, str):  # rank 0 refused: it says why, the others stop with it
            if comm.rank == 0:
                raise UserError(plan)
            return 2
        mine = plan["stale"][comm.rank :: comm.size]
        part = f"{plan['part']}-r{comm.rank}"
        done: tuple[str, int, str] = (part, 0, "")
        if mine:
            try:
                done = (part, catalog.build_part(folder, mine, part), "")
            except Exception as e:  # reported by rank 0; the other ranks' parts still count
                done = (part, 0, f"rank {comm.rank}: {type(e).__name__}: {e}")
        results = comm.gather(done)
        if comm.rank != 0 or results is None:
            continue
        failed = [err for _, _, err in results if err]
        parts = [p for p, n, err in results if n and not err]
        for err in failed:
            log.error("catalogue %s: %s (its files are left for the next refresh)", folder, err)
        total = catalog.write_index(folder, plan["files"], parts)
        print(
            f"{folder / catalog.CATALOG_DIR}: {sum(n for _, n, _ in results)} new or changed run file(s) "
            f"catalogued of {len(plan['files'])} ({total} in the catalogue), {comm.size} rank(s), "
            f"{time.perf_counter() - started:.1f} s"
        )
        if failed:
            return 1
    return 0
