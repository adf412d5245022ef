"""The ``energy-hpc`` command: subcommands are the modules of :mod:`energy_hpc.commands`."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from energy_hpc import __version__, commands
from energy_hpc.errors import UserError
from energy_hpc.logs import setup_logging
from energy_hpc.settings import SettingsError

log = logging.getLogger("energy_hpc")


def _command_modules() -> dict[str, ModuleType]:
    mods = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mods[info.name.replace("_", "-")] = importlib.import_module(f"{commands.__name__}.{info.name}")
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="energy-hpc", description="Measure the energy of AI inference on HPC clusters."
    )
    parser.add_argument("--version", action="version", version=f"energy-hpc {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, mod in _command_modules().items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command on ``argv``; without ``argv`` (the ``energy-hpc`` script, ``python -m energy_hpc``)
    the process's own command line, and the process ends when this returns (see :func:`_ending`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return _main(args)
    finally:
        if argv is None:
            _ending()


def _ending() -> None:
    """The process is about to exit: move every object into the permanent generation, so the
    interpreter's last garbage collections do not walk the ~400,000 objects torch and the model
    libraries made (1.1-1.5 s of teardown on the 2-core VM, 0.15 s so; docs/performance.md).
    Everything that matters is done by then: files closed, run file in place; atexit handlers (MPI's
    finalisation among them) and the flushing of streams still run as usual."""
    gc.freeze()


def _main(args: argparse.Namespace) -> int:
    try:
        return int(args._run(args) or 0)
    except (UserError, SettingsError) as exc:
        if not getattr(exc, "quiet", False):  # under MPI only rank 0 reports a shared problem
            print(f"energy-hpc: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("energy-hpc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `energy-hpc table ... | head` is not an error
        return 0
