"""The project's exception types.

Every :class:`UserError` is a failure the user can act on: its message is one line that names the
problem and the fix, and the CLI turns it into that line on stderr and exit status 2. Anything else
that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, with a message saying how to fix it."""

    exit_code = 2


class SpecError(UserError):
    """The job file is malformed, has unknown keys, wrong types or impossible values."""


class ModelSourceError(UserError):
    """A model cannot be found or loaded from the source the job file names."""


class DeviceError(UserError):
    """The device a case asks for (or its dtype) is not available to this rank."""


class SensorUnavailable(UserError):
    """A sensor backend cannot be used on this node; the message says why."""


class OutputError(UserError):
    """The output folder cannot be written, or a run file cannot be placed there."""


class RunFileError(UserError):
    """A file given to the analysis side is not a readable energy-hpc run file."""


class LaunchError(UserError):
    """The process was launched in a way that cannot work (e.g. srun without an MPI plugin)."""


class SystemProfileError(UserError):
    """A system profile (energy_hpc/systems/*.toml or the user's own) is missing, malformed or
    inconsistent."""


class SlurmError(UserError):
    """Slurm refused or could not do what was asked (sbatch missing, submission rejected, bad
    directive value)."""


class SensorReadError(Exception):
    """One read of a sensor failed. The sampler records a gap and counts it; the run goes on."""
