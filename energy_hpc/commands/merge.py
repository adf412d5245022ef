"""energy-hpc merge: rebuild a run file from the spill files of a run that never finished."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "rebuild a run file (marked partial) from the spill folder(s) of a run that never finished"

log = logging.getLogger(__name__)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "spills",
        nargs="+",
        type=Path,
        metavar="SPILLDIR",
        help="the run's spill folder(s): <output>/.<run>.spill (one per rank-NNNNN.h5 set)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the rebuilt run file")
    p.add_argument(
        "--compression",
        choices=("none", "gzip", "lzf"),
        default="none",
        help="compression of the traces in the rebuilt file (default: none)",
    )
    p.add_argument(
        "--remove", action="store_true", help="remove the spill folder(s) once the run file is written"
    )


def run(args: argparse.Namespace) -> int:
    import shutil

    from energy_hpc.errors import RunFileError
    from energy_hpc.spill import rebuild

    for d in args.spills:
        if not d.is_dir():
            raise RunFileError(f"{str(d)!r} is not a folder; give the run's .<name>.spill folder")
    path, reason = rebuild(args.spills, args.output, compression=args.compression)
    log.warning("%s: partial, %s", path.name, reason[:300])
    if args.remove:
        for d in args.spills:
            shutil.rmtree(d, ignore_errors=True)
    print(path)
    return 0
