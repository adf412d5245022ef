"""``energy-hpc`` with the test kit installed: ``python fault_entry.py run JOB -o OUT`` (under mpiexec too)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import testkit

testkit.install()

from energy_hpc.cli import main  # noqa: E402

sys.exit(main())
