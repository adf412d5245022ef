"""Typed task options, declared by each workload and checked by the job-file parser."""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

# A text file of prompts or sentences is read whole into memory on every rank and its lines taken in
# turn; 16 MiB is some 100,000 long prompts, far more than a measurement uses, and a limit keeps a
# wrong path (a data set, /dev/zero) from filling the memory of a compute node.
MAX_TEXT_FILE_BYTES = 16 * 2**20


def brief(value: Any, limit: int = 60) -> str:
    """A value as an error message shows it: its repr (control characters escaped), cut to ``limit``
    characters, so that a hostile value never makes the message long or multi-line."""
    try:
        text = repr(value)
    except RecursionError:  # a list nested deeper than repr goes
        text = f"<a {type(value).__name__} nested too deeply to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_lines(path: str, what: str) -> list[str]:
    """The non-empty lines (stripped) of a UTF-8 text file of at most :data:`MAX_TEXT_FILE_BYTES`.
    A folder, a device, a pipe, a file too large, unreadable or not UTF-8, or one with no non-empty
    line is a ValueError naming ``what``."""
    hint = "give a UTF-8 text file, one entry a line"
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ValueError(f"{what} {path!r} is {kind}; {hint}")
        if st.st_size > MAX_TEXT_FILE_BYTES:
            raise ValueError(
                f"{what} {path!r} holds {st.st_size} bytes, more than the {MAX_TEXT_FILE_BYTES // 2**20} MiB "
                "a prompt or sentence file may hold; give a smaller file"
            )
        with open(path, "rb") as f:
            raw = f.read(MAX_TEXT_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(
            f"{what} {path!r} does not exist (a relative path is taken from the job file's folder)"
        ) from None
    except OSError as exc:
        raise ValueError(f"{what} {path!r} cannot be read ({exc.strerror}); {hint}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path!r} is not UTF-8 text; {hint}") from None
    if "\x00" in text:
        raise ValueError(f"{what} {path!r} holds NUL characters, so it is not a text file; {hint}")
    lines = [x.strip() for x in text.splitlines()]
    lines = [x for x in lines if x]
    if not lines:
        raise ValueError(f"{what} {path!r} has no non-empty lines")
    return lines


@dataclass(frozen=True)
class Option:
    """One task option: its type, default, bounds and help. ``kind`` is int, float, str, bool or list.

    ``path`` says the option may name something on disk, resolved against the job file's folder like a
    local model (see docs/workloads.md): ``True`` for a value that may be a path or something else
    (a refiner: a folder, a hub id or a config name); ``"file"`` for a text file of entries, one a line,
    checked when the job is validated (a regular UTF-8 file of at most :data:`MAX_TEXT_FILE_BYTES`
    with at least one non-empty line); ``"folder"`` for a folder of inputs, which must exist then.
    A list option must have at least one entry unless ``allow_empty``.

    What a case runs with (``energy-hpc validate``) is read from three more fields: ``blank`` is what an
    empty value (0 or "") means, shown in its place ("the model's default"); an empty string or list
    with no ``blank`` means the option is not used and is not shown. ``applies_if`` names an option of
    the same task that must be set (non-empty) for this one to matter (``denoising_end`` only with a
    ``refiner``); ``overridden_by`` names one that replaces this one when set (``prompts`` when a
    ``prompt_file`` is given)."""

    kind: type
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    item_kind: type = str  # for lists
    path: bool | Literal["file", "folder"] = False
    allow_empty: bool = False  # for lists
    blank: str = ""
    applies_if: str = ""
    overridden_by: str = ""

    @property
    def is_list(self) -> bool:
        return self.kind is list

    def applies(self, options: Mapping[str, Any]) -> bool:
        """Whether this option changes what a case with these ``options`` runs."""
        if self.applies_if and not options.get(self.applies_if):
            return False
        return not (self.overridden_by and options.get(self.overridden_by))

    def shown(self, value: Any) -> str | None:
        """The value as a listing shows it: TOML-like (strings quoted), ``blank`` for an empty value that
        has one, None for an unused empty string or list."""
        empty = value == "" or value == [] or (value == 0 and not isinstance(value, bool))
        if empty and self.blank:
            return self.blank
        if value == "" or value == []:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, list)):
            return json.dumps(value, ensure_ascii=False)
        return str(value)

    def check(self, value: Any) -> Any:
        if self.kind is list:
            if not isinstance(value, list):
                raise TypeError(f"must be a list, got {brief(value)}")
            if not value and not self.allow_empty:
                raise ValueError(
                    "is an empty list; give at least one entry, or leave the option out for its default"
                )
            for x in value:
                self._scalar(x, self.item_kind)
            return list(value)
        return self._scalar(value, self.kind)

    def _range(self) -> str:
        lo = "" if self.lo is None else f"{self.lo:g}"
        hi = "" if self.hi is None else f"{self.hi:g}"
        return f"{lo}..{hi}"

    def _scalar(self, value: Any, kind: type) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # TOML integers have no size limit in the parser
                raise ValueError(f"{brief(value)} is out of range {self._range()}") from None
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise TypeError(f"must be {kind.__name__}, got {type(value).__name__} {brief(value)}")
        if kind in (int, float):
            number = cast(float, value)  # an int or a float, checked above
            if kind is float and not math.isfinite(number):
                raise ValueError(f"must be finite, got {value!r}")
            if (self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi):
                raise ValueError(f"{brief(value)} is out of range {self._range()}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{brief(value)} is not one of {', '.join(self.choices)}")
        return value
