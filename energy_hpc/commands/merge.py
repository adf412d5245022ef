"""energy-hpc merge: rebuild a run file from the spill files of a run that never finished, or (``--single``)
make one file that stands alone from a run written per node."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = (
    "rebuild a run file (marked partial) from the spill folder(s) of a run that never finished; with "
    "--single, one self-contained file from a run written per node"
)

log = logging.getLogger(__name__)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "spills",
        nargs="+",
        type=Path,
        metavar="SPILLDIR",
        help="the run's spill folder(s): <output>/.<run>.spill (one per rank-NNNNN.h5 set); with "
        "--single, run files written per node",
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
    p.add_argument(
        "--single",
        action="store_true",
        help="copy each run file written per node (an index over <run>.nodes/) and its node files into "
        "one file that stands alone, to move or share the run as one file",
    )


def run(args: argparse.Namespace) -> int:
    import shutil

    from energy_hpc.errors import RunFileError
    from energy_hpc.spill import rebuild

    if args.single:
        return _single(args)
    for d in args.spills:
        if not d.is_dir():
            raise RunFileError(
                f"{str(d)!r} is not a folder; give the run's .<name>.spill folder (or --single for a run file "
                "written per node)"
            )
    path, reason = rebuild(args.spills, args.output, compression=args.compression)
    log.warning("%s: partial, %s", path.name, reason[:300])
    if args.remove:
        for d in args.spills:
            shutil.rmtree(d, ignore_errors=True)
    print(path)
    return 0


def _single(args: argparse.Namespace) -> int:
    from energy_hpc.errors import RunFileError
    from energy_hpc.store import check_output_dir, write_single

    if args.remove:
        raise RunFileError(
            "--remove goes with spill folders, not with --single; remove the node files by hand"
        )
    for p in args.spills:
        if not p.is_file():
            raise RunFileError(f"{str(p)!r} is not a file; with --single give run files written per node")
    out = check_output_dir(args.output)
    for p in args.spills:
        print(write_single(p, out, compression=args.compression))
    return 0
