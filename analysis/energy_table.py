"""Energy table over run files or study folders, in every format, into one folder.

python analysis/energy_table.py results/ -o tables/ [--by model,dtype] [--stages]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from energy_hpc.analysis.table import energy_table, format_rows
from energy_hpc.store import find_run_files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("-o", "--out", default="tables")
    ap.add_argument("--by", default="")
    ap.add_argument("--stages", action="store_true")
    a = ap.parse_args()
    rows = energy_table(
        find_run_files(a.paths), by=[b for b in a.by.split(",") if b] or None, stages=a.stages
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("json", "json"), ("latex", "tex")):
        (out / f"energy.{ext}").write_text(format_rows(rows, fmt))
    print(format_rows(rows, "markdown"), end="")


if __name__ == "__main__":
    main()
