"""What keeps `energy-hpc run`'s own cost low (docs/performance.md, "Fixed overhead of a run"): the
command starts without the heavy libraries, and the process ends without the interpreter's last walk
over every object."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("h5py", "xarray", "numpy", "torch", "mpi4py", "pandas", "matplotlib", "scipy")


def _python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_the_command_starts_without_heavy_libraries() -> None:
    """Every subcommand is configured at start-up; none may import a heavy library to do so (each
    costs tenths of a second on every command, `energy-hpc run` on every rank included)."""
    out = _python(
        "import sys\n"
        "from energy_hpc.cli import build_parser\n"
        "build_parser()\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert out == ""


@pytest.mark.parametrize("own_command_line", [True, False])
def test_objects_are_frozen_only_when_the_process_ends(own_command_line: bool) -> None:
    """Called as the process's command (no argv: the `energy-hpc` script, `python -m energy_hpc`), main
    freezes the heap before returning, sparing the teardown's collections; called with an argv (tests,
    a program embedding the command), it leaves the collector alone."""
    call = "main()" if own_command_line else "main(['sensors', '--json'])"
    out = _python(
        "import gc, sys\n"
        "sys.argv = ['energy-hpc', 'sensors', '--json']\n"
        "from energy_hpc.cli import main\n"
        f"rc = {call}\n"
        "print('RESULT', rc, gc.get_freeze_count() > 0)\n"
    )
    assert out.splitlines()[-1] == f"RESULT 0 {own_command_line}"
