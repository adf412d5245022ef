"""Power over time for each run file (PNG and PDF), windows shaded.

python analysis/power_traces.py results/ -o figures/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from energy_hpc.analysis.plots import power_figure, save
from energy_hpc.store import find_run_files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("-o", "--out", default="figures")
    a = ap.parse_args()
    for f in find_run_files(a.paths):
        for p in save(power_figure(f), Path(a.out) / f"power_{f.stem}"):
            print(p)


if __name__ == "__main__":
    main()
