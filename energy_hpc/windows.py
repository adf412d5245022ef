"""Windows: named spans of time on one rank (idle baseline, model load, warm-up and measured
iterations, and stages within an iteration such as a refiner or the decode phase).

Every window edge synchronises the device first, because GPU work is asynchronous: without it a
window would close before its kernels finish and their energy would land in the next window.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np


class Phase(str, Enum):
    IDLE = "idle"
    LOAD = "load"
    WARMUP = "warmup"
    MEASURE = "measure"
    COOLDOWN = "cooldown"
    # one model component replayed alone on inputs captured from an iteration (stage: its name; units:
    # calls; aux_units: its calls per measured iteration); stage "(capture)" is the capturing iteration
    COMPONENT = "component"
    # a component's device time inside measured iteration ``iteration`` (not a span of its own: start and
    # end are the iteration's; units: calls; aux_units: seconds of device time)
    TIMED = "timed"


class Status(str, Enum):
    OK = "ok"
    INTERRUPTED = "interrupted"  # closed by a signal or time limit before it finished
    FAILED = "failed"  # the work inside raised


@dataclass
class Window:
    rank: int
    case: int  # index into the job's cases; -1 for run-level windows (idle)
    phase: Phase
    iteration: int  # -1 where it does not apply
    start: float  # sampler clock (monotonic s)
    end: float = math.nan
    stage: str = ""  # "" for a whole iteration; "base", "refiner", "prefill", "decode", ...
    units: float = 0.0
    unit: str = ""
    aux_units: float = 0.0  # a second count where a task has one (prompt tokens, audio seconds)
    aux_unit: str = ""
    status: Status = Status.OK
    # the device as read back at the start and the end (telemetry.control.STATE_FIELDS: enforced power
    # limit W, SM and memory clock MHz, temperature °C); None where the rank has no device state to read
    state_start: tuple[float, ...] | None = None
    state_end: tuple[float, ...] | None = None


# Fixed-width record used to move windows between ranks as one numpy buffer.
WINDOW_DTYPE = np.dtype(
    [
        ("rank", "i4"),
        ("case", "i4"),
        ("phase", "S12"),
        ("iteration", "i4"),
        ("start", "f8"),
        ("end", "f8"),
        ("stage", "S32"),
        ("units", "f8"),
        ("unit", "S16"),
        ("aux_units", "f8"),
        ("aux_unit", "S16"),
        ("status", "S12"),
    ]
)


def to_array(windows: list[Window], offset: float = 0.0) -> np.ndarray:
    """Windows as a structured array, times shifted by ``-offset`` (to the run's time base)."""
    out = np.zeros(len(windows), dtype=WINDOW_DTYPE)
    for i, w in enumerate(windows):
        out[i] = (
            w.rank,
            w.case,
            w.phase.value.encode(),
            w.iteration,
            w.start - offset,
            w.end - offset,
            w.stage.encode()[:32],
            w.units,
            w.unit.encode()[:16],
            w.aux_units,
            w.aux_unit.encode()[:16],
            w.status.value.encode(),
        )
    return out


class WindowLog:
    """Records windows on one rank with the sampler's clock, synchronising the device at each edge."""

    def __init__(
        self,
        rank: int,
        clock: Callable[[], float] = time.monotonic,
        sync: Callable[[], None] = lambda: None,
        state: Callable[[], tuple[float, ...]] | None = None,
    ) -> None:
        """``state`` reads the device's state (a few cheap library calls) at both edges of every whole
        window (not of stages within an iteration)."""
        self.rank, self.clock, self.sync, self.state = rank, clock, sync, state
        self.windows: list[Window] = []
        self._open: list[Window] = []

    @contextlib.contextmanager
    def window(
        self, case: int, phase: Phase, iteration: int = -1, stage: str = "", unit: str = ""
    ) -> Iterator[Window]:
        self.sync()
        reads = self.state is not None and not stage and phase is not Phase.TIMED
        before = self.state() if reads and self.state is not None else None  # outside the window's time
        w = Window(
            rank=self.rank,
            case=case,
            phase=phase,
            iteration=iteration,
            start=self.clock(),
            stage=stage,
            unit=unit,
        )
        w.state_start = before
        self.windows.append(w)
        self._open.append(w)
        try:
            yield w
            self.sync()
            if reads and self.state is not None:
                w.end = self.clock()
                w.state_end = self.state()
        except Exception:
            w.status = Status.FAILED if w.status is Status.OK else w.status
            raise
        except (
            BaseException
        ):  # a signal (RunInterrupted), KeyboardInterrupt, SystemExit: not the work's fault
            w.status = Status.INTERRUPTED if w.status is Status.OK else w.status
            raise
        finally:
            if math.isnan(w.end):
                w.end = self.clock()
            if w in self._open:
                self._open.remove(w)

    def state_rows(self, offset: float = 0.0) -> list[list[Any]]:
        """One row per window whose device state was read: case, phase, iteration, start (run time, s),
        then the state at the start and at the end (NaN where not read, e.g. a window cut by a signal)."""
        rows: list[list[Any]] = []
        for w in self.windows:
            if w.state_start is None:
                continue
            end = w.state_end or (math.nan,) * len(w.state_start)
            rows.append(
                [w.case, w.phase.value, w.iteration, round(w.start - offset, 6), *w.state_start, *end]
            )
        return rows

    def add(self, window: Window) -> None:
        """Record a window that was not timed by :meth:`window` (a component's device time)."""
        self.windows.append(window)

    def interrupt_open(self) -> int:
        """Close every open window as interrupted (signal or time limit). Returns how many."""
        now = self.clock()
        n = 0
        for w in self._open:
            if math.isnan(w.end):
                w.end, w.status = now, Status.INTERRUPTED
                n += 1
        self._open.clear()
        return n
