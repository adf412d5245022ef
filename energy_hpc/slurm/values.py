"""Values that land in an sbatch script: checked against what sbatch accepts, or made safe.

``#SBATCH`` lines are parsed by sbatch, not by the shell, so a value there cannot be shell-quoted:
it must match a strict pattern. Used by :mod:`.systems` (a profile's defaults) and :mod:`.render`
(a request's values); imports nothing else of the project.
"""

from __future__ import annotations

import re
from pathlib import Path

from energy_hpc.errors import SlurmError

# What sbatch accepts in the few places a user's value lands in a directive.
_SLURM_VALUE = {
    "account": re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$"),
    "partition": re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,+-]*$"),
    "qos": re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,+-]*$"),
    "constraint": re.compile(r"^[A-Za-z0-9_\[(][A-Za-z0-9_.,:+&|*\[\]()-]*$"),
}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?$")
# Paths inside #SBATCH lines: no whitespace, quotes, '%' (Slurm's filename patterns) or '#'.
_DIRECTIVE_PATH = re.compile(r"^[A-Za-z0-9_./+,:@=~-]+$")


def check_slurm_value(kind: str, value: str) -> str:
    """``value`` if it is a valid Slurm ``kind`` (account, partition, qos, constraint) name."""
    if not _SLURM_VALUE[kind].fullmatch(value):
        raise SlurmError(
            f"{kind} {value!r} is not a valid Slurm {kind} name (letters, digits and "
            f"{'_.,:+&|*[]()-' if kind == 'constraint' else '_.+-'} only); check the spelling"
        )
    return value


def check_time(value: str) -> int:
    """Validate a Slurm time limit; return it in seconds.

    Accepted: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (sbatch's forms).
    """
    m = _TIME.fullmatch(value)
    if not m:
        raise SlurmError(f"time limit {value!r} is not HH:MM:SS (or D-HH:MM:SS, or minutes)")
    days, a, b, c = m.groups()
    if days is not None:
        h, mi, s = int(a), int(b or 0), int(c or 0)
        total = int(days) * 86400 + h * 3600 + mi * 60 + s
    elif c is not None:
        total = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:
        total = int(a) * 60 + int(b)
    else:
        total = int(a) * 60
    if total <= 0:
        raise SlurmError(f"time limit {value!r} must be longer than zero")
    return total


def slurm_job_name(name: str) -> str:
    """The job name as a Slurm job name: letters, digits, '_', '.', '-' (others become '_')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "energy-hpc"


def directive_path(path: Path, what: str) -> str:
    """``path`` as text for an ``#SBATCH`` line; refused if sbatch would misread it."""
    text = str(path)
    if not _DIRECTIVE_PATH.fullmatch(text):
        raise SlurmError(
            f"{what} {text!r} cannot go into an #SBATCH line (it has spaces, quotes, '%' or "
            "other special characters); choose a folder whose path has only letters, "
            "digits and ._-/+,:@=~"
        )
    return text


def comment(text: str) -> str:
    """Text safe inside a '#' comment line: control characters (newlines too) are escaped."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
