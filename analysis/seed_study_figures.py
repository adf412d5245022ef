"""The seed poster study's figures: SDXL base vs base+refiner, precision vs consumption, batch size.

Energy per image by case with 1-sigma bars (gross and idle-subtracted), per stage (base vs refiner), and
the full report beside them.

    python analysis/seed_study_figures.py results/seed -o poster/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from energy_hpc.analysis.plots import energy_figure, save
from energy_hpc.analysis.report import write_report
from energy_hpc.analysis.table import energy_table
from energy_hpc.store import find_run_files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("-o", "--out", default="poster")
    a = ap.parse_args()
    files = find_run_files(a.paths)
    out = Path(a.out)
    rows = sorted(energy_table(files), key=lambda r: (str(r["model"]), str(r["dtype"]), r["batch_size"] or 0))
    save(energy_figure(rows), out / "energy_per_image")
    save(energy_figure(rows, net=True), out / "net_energy_per_image")
    stage_rows = [r for r in energy_table(files, stages=True) if r["stage"]]
    if stage_rows:
        save(energy_figure(stage_rows), out / "energy_per_image_by_stage")
    print(write_report(files, out / "report"))


if __name__ == "__main__":
    main()
