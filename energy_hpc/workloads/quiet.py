"""Model libraries made quiet. Imports nothing of energy_hpc, so the random-weight configs
(:mod:`energy_hpc.workloads.configs`) and the workloads can both call it."""

from __future__ import annotations

import os

# Model libraries talk a lot on import and load (progress bars, advice about optional packages);
# energy-hpc's own log says what is happening. A user who wants their output sets these themselves.
QUIET_LIBRARY_ENV = (
    ("TRANSFORMERS_VERBOSITY", "error"),
    ("DIFFUSERS_VERBOSITY", "error"),
    ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
    ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
)


def quiet_environment() -> None:
    """Set the libraries' quiet defaults in the environment where the user has not set them: before
    they are imported (model folders resolved, random weights built). Once imported,
    :func:`quiet_libraries` quiets them through their logging API."""
    for name, value in QUIET_LIBRARY_ENV:
        os.environ.setdefault(name, value)


def quiet_libraries() -> None:
    """Model libraries print progress bars and advice on stdout/stderr; energy-hpc's log says what is
    happening instead (stdout carries only what a command was asked to print)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import diffusers
    except ImportError:
        return
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
