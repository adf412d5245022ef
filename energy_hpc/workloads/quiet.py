"""Model libraries made quiet. Imports nothing of energy_hpc, so the random-weight configs
(:mod:`energy_hpc.workloads.configs`) and the workloads can both call it."""

from __future__ import annotations


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
