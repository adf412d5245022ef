"""What components cost a case, and how well they close, on the tiny model structures (run by hand).

Runs ``jobs/tiny-model-structures.toml`` three times through ``energy-hpc run`` (components off,
"blocks", "detail") and prints (stdout, Markdown), per case and mode:

- the median measured iteration (s): what the timing hooks add to an iteration (the median, because
  other work on a shared CPU stretches single iterations by up to 100x);
- the case's wall time from its load window to its last window (s): what the capture iteration and the
  replay windows add;
- per method, the closure residual as a share of the measured iteration's energy (± one sigma).

    .venv/bin/python benchmarks/component_cost.py                          # CPU-time ESTIMATE (auto)
    .venv/bin/python benchmarks/component_cost.py --sensors emulated:h100  # an emulated H100

The figures say which sensor produced them; on a CPU the machine's load moves every time, so run it
on an idle machine and compare modes within one run of this script. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

from energy_hpc.analysis.components import component_tables

REPO = Path(__file__).resolve().parent.parent
JOB = REPO / "jobs" / "tiny-model-structures.toml"
MODES = ("off", "blocks", "detail")


def _job(mode: str, folder: Path, iterations: int) -> Path:
    text = re.sub(r"^iterations = \d+$", f"iterations = {iterations}", JOB.read_text(), flags=re.M)
    if mode == "off":
        text = re.sub(r'^components = "detail"\n', "", text, flags=re.M)
    else:
        text = text.replace('components = "detail"', f'components = "{mode}"')
    path = folder / f"{mode}.toml"
    path.write_text(text)
    return path


def _run(job: Path, out: Path, sensors: str) -> Path:
    cmd = [sys.executable, "-m", "energy_hpc", "run", str(job), "-o", str(out), "--sensors", sensors]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"energy-hpc run failed:\n{r.stderr[-2000:]}")
    return Path(r.stdout.strip().splitlines()[-1])


def _times(path: Path) -> dict[int, tuple[float, float]]:
    """case -> (median measured iteration in s, wall time from load to the case's last window in s)."""
    with h5py.File(path) as f:
        w = f["windows"]
        phase = np.array([x.decode() for x in w["phase"][:]])
        stage = np.array([x.decode() for x in w["stage"][:]])
        case, start, end = w["case"][:], w["start"][:], w["end"][:]
    out = {}
    for c in sorted({int(x) for x in case if x >= 0}):
        mine = (case == c) & (phase != "timed")
        it = mine & (phase == "measure") & (stage == "")
        out[c] = (float(np.median(end[it] - start[it])), float(end[mine].max() - start[mine].min()))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sensors", default="auto", help="sensors for the runs (default auto: ESTIMATE on a CPU)")
    p.add_argument("--iterations", type=int, default=8, help="measured iterations per case (default 8)")
    args = p.parse_args()
    runs: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            print(f"components = {mode} ...", file=sys.stderr)
            runs[mode] = _run(_job(mode, Path(tmp), args.iterations), Path(tmp) / mode, args.sensors)
        times = {m: _times(path) for m, path in runs.items()}
        closures = {m: component_tables(path)[1] for m, path in runs.items() if m != "off"}
        data = {c.data for cs in closures.values() for c in cs}
    labels = re.findall(r'^label = "(.*)"$', JOB.read_text(), flags=re.M)
    print(f"Sensor: {args.sensors} (data: {', '.join(sorted(data))}); {args.iterations} iterations a case\n")
    print("| case | mode | iteration (s) | case wall (s) | residual replay | residual time |")
    print("|---|---|---|---|---|---|")
    for c, label in enumerate(labels):
        for m in MODES:
            it, wall = times[m][c]
            res = {}
            for cl in closures.get(m, []):
                if cl.case == c and cl.iteration_J:
                    share = 100 * cl.residual_J / cl.iteration_J
                    unc = 100 * cl.residual_J_unc / cl.iteration_J
                    res[cl.method] = f"{share:.0f} ± {unc:.0f} %"
            print(
                f"| {label} | {m} | {it:.3f} | {wall:.1f} | {res.get('replay', '-')} | {res.get('time', '-')} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
