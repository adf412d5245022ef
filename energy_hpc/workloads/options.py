"""Typed task options, declared by each workload and checked by the job-file parser."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast


@dataclass(frozen=True)
class Option:
    """One task option: its type, default, bounds and help. ``kind`` is int, float, str, bool or list."""

    kind: type
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    item_kind: type = str  # for lists
    # a file or folder: resolved against the job file's folder, like a local model (see docs/workloads.md)
    path: bool = False

    @property
    def is_list(self) -> bool:
        return self.kind is list

    def check(self, value: Any) -> Any:
        if self.kind is list:
            if not isinstance(value, list):
                raise TypeError(f"must be a list, got {value!r}")
            for x in value:
                self._scalar(x, self.item_kind)
            return list(value)
        return self._scalar(value, self.kind)

    def _scalar(self, value: Any, kind: type) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise TypeError(f"must be {kind.__name__}, got {type(value).__name__} {value!r}")
        if kind in (int, float):
            number = cast(float, value)  # an int or a float, checked above
            if kind is float and not math.isfinite(number):
                raise ValueError(f"must be finite, got {value!r}")
            if (self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi):
                raise ValueError(f"{value!r} is out of range {self.lo:g}..{self.hi:g}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(self.choices)}")
        return value
