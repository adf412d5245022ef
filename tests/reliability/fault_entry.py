"""``energy-hpc`` with the test kit installed: ``python fault_entry.py run JOB -o OUT`` (under mpiexec too).

Where ENERGY_HPC_TEST_FAULT injects a fault on this rank, ``run`` gets the test kit's failing ``sleep``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import testkit

testkit.install()

from energy_hpc.cli import build_parser, main  # noqa: E402
from energy_hpc.commands import run as run_command  # noqa: E402
from energy_hpc.logs import setup_logging  # noqa: E402


def fault_main() -> int:
    sleep = testkit.fault_sleep()
    if sleep is None:
        return main()
    args = build_parser().parse_args()
    setup_logging(args.verbose, args.quiet)
    return run_command.run(args, sleep=sleep)


sys.exit(fault_main())
