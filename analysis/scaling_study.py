"""Scaling over node counts for a study folder (energy-hpc sweep output): table and figure.

python analysis/scaling_study.py studies/sd -o scaling/ [--by model,dtype]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from energy_hpc.analysis.plots import save, scaling_figure
from energy_hpc.analysis.scaling import format_scaling, scaling_rows
from energy_hpc.analysis.table import energy_table
from energy_hpc.store import find_run_files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("-o", "--out", default="scaling")
    ap.add_argument("--by", default="")
    a = ap.parse_args()
    by = [b for b in a.by.split(",") if b] or None
    srows = scaling_rows(energy_table(find_run_files(a.paths), by=by), by)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("json", "json")):
        (out / f"scaling.{ext}").write_text(format_scaling(srows, fmt))
    save(scaling_figure(srows), out / "scaling")
    print(format_scaling(srows, "markdown"), end="")


if __name__ == "__main__":
    main()
