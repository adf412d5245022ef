"""energy-hpc trace: one run as a timeline for Perfetto / chrome://tracing (JSON) or Vampir (OTF2)."""

from __future__ import annotations

import argparse

HELP = "export a run as a timeline: Perfetto/Chrome JSON (.json, .json.gz) or OTF2 for Vampir"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="one run file (.h5)")
    p.add_argument(
        "-o",
        "--out",
        required=True,
        help="where to write: FILE.json or FILE.json.gz (Perfetto), or a new folder (OTF2: FOLDER/traces.otf2)",
    )
    p.add_argument(
        "--format",
        metavar="perfetto|otf2",
        help="perfetto or otf2 (otf2 needs pip install energy-hpc[trace]); default: from the name of -o",
    )
    p.add_argument(
        "--max-points",
        type=int,
        metavar="N",
        help="at most N points per power trace, keeping each bucket's lowest and highest sample "
        "(default: 50000 for JSON, every sample for OTF2; 0: every sample)",
    )


def run(args: argparse.Namespace) -> int:
    from energy_hpc import __version__
    from energy_hpc.analysis.trace import export

    written = export(args.run, args.out, args.format, args.max_points, creator=f"energy-hpc {__version__}")
    print(written)
    return 0
