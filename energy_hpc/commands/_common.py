"""Helpers shared by several commands (not a command: cli.py skips modules whose name starts with _).

The analysis commands (``table``, ``plot``, ``report``) take run files and folders and a ``--by``
list alike.
"""

from __future__ import annotations

from pathlib import Path


def parse_by(text: str | None) -> list[str] | None:
    """``--by model,nodes`` as a list of names; None when not given."""
    return [b.strip() for b in text.split(",") if b.strip()] if text else None


def find_files(paths: list[str]) -> list[Path]:
    """The run files in the files and folders given; one RunFileError line when there are none (naming a
    spill folder given by mistake)."""
    from energy_hpc.errors import RunFileError
    from energy_hpc.store import find_run_files, is_spill_folder

    files = find_run_files(paths)
    if not files:
        spills = [p for p in paths if is_spill_folder(Path(p))]
        if spills:
            raise RunFileError(
                f"{', '.join(spills)}: a spill folder holds spills, not a run file; rebuild the "
                f"run from it with energy-hpc merge {' '.join(spills)} -o FOLDER"
            )
        raise RunFileError(
            f"no run files (*.h5) in {', '.join(paths)}; give the folder energy-hpc run wrote to (-o)"
        )
    return files
