"""Log output on stderr for every process of the tool: the ``energy-hpc`` command and the sampling
child (telemetry/sampler_proc.py). A leaf module: it imports nothing of the project."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LOGGER = "energy_hpc"
FORMAT = "energy-hpc %(levelname)s: %(message)s"


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is logged, not what it was at set-up (tests
    and embedding programs replace it; a handler holding the old one would write to a closed file)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """The ``energy_hpc`` logger writes one line per record on stderr: warnings and errors with
    ``quiet``, debug with ``verbose``, else info."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger(LOGGER)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
