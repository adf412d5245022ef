"""``fault_entry.py`` with one rank that dies of an error: the rank named by ENERGY_HPC_TEST_EXIT_RANK
ends itself with ``os._exit(3)`` ENERGY_HPC_TEST_EXIT_AFTER seconds (default 2) into its case (once
its pid file is in ENERGY_HPC_TEST_PIDDIR). It exits with a status, not by a signal: hydra's mpiexec
run with -disable-auto-cleanup then sends the surviving ranks SIGUSR1 and lets them run on (a rank
killed by a signal makes hydra 5 kill every rank, with or without that flag)."""

import os
import runpy
import threading
import time
from pathlib import Path

rank = os.environ.get("PMI_RANK", "0")
if rank == os.environ.get("ENERGY_HPC_TEST_EXIT_RANK"):
    piddir = Path(os.environ["ENERGY_HPC_TEST_PIDDIR"])
    delay = float(os.environ.get("ENERGY_HPC_TEST_EXIT_AFTER", "2"))

    def _die() -> None:
        while not (piddir / f"rank-{rank}.pid").exists():
            time.sleep(0.05)
        time.sleep(delay)
        os._exit(3)

    threading.Thread(target=_die, daemon=True).start()

runpy.run_path(str(Path(__file__).with_name("fault_entry.py")), run_name="__main__")
