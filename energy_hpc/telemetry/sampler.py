"""Background sampling of sensors on a fixed clock.

The sampler reads every sensor once per tick on an absolute schedule (tick k at ``t0 + k*interval``,
so a late tick does not push the ones after it), timestamps each read with the monotonic clock at
the middle of the read, and keeps the values in preallocated numpy blocks (no per-sample objects).
A read that fails becomes a NaN row and is counted per channel; the run goes on.

:class:`SamplerLike` is what the runner needs of a sampler; :class:`Sampler` (a thread) and
:class:`~energy_hpc.telemetry.sampler_proc.ProcessSampler` (a child process) both have it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from energy_hpc import settings
from energy_hpc.errors import SensorReadError
from energy_hpc.telemetry.base import ChannelInfo, Sensor

log = logging.getLogger(__name__)

_BLOCK = 4096
# the longest a stop waits for the slowest sensor to refresh once more (see Sampler.stop)
MAX_TAIL_S = 0.5


@dataclass
class ChannelTrace:
    """Everything sampled on one channel. Times are monotonic seconds (the sampler's clock)."""

    info: ChannelInfo
    time: np.ndarray  # float64 s
    power: np.ndarray  # float64 W, NaN where unavailable
    energy: np.ndarray  # float64 J (cumulative counter), NaN where none
    sensor_time: np.ndarray  # float64 s, the sensor's own timestamp, NaN where none
    errors: int = 0  # reads that failed on this channel


class SamplerLike(Protocol):
    """What the runner uses of a sampler, in-process thread or child process alike."""

    @property
    def channels(self) -> list[ChannelInfo]:
        """The channels sampled, in the order :meth:`traces` returns them."""
        ...

    @property
    def hung_notes(self) -> list[str]:
        """Why sensors were given up as hung; empty when none was."""
        ...

    @property
    def lost(self) -> str:
        """Why the samples not yet handed over were lost (a sampling process that died), or ''."""
        ...

    def start(self) -> SamplerLike:
        """Take the first sample and go on sampling in the background."""
        ...

    def stop(self) -> None:
        """Take a last sample and stop."""
        ...

    def traces(self, start: int | None = None) -> list[ChannelTrace]:
        """What was sampled from sample ``start`` on, one trace per channel; safe while sampling."""
        ...

    def n_samples(self) -> list[int]:
        """Samples taken so far, per sensor."""
        ...

    def close_sensors(self) -> None:
        """Close the sensors (after :meth:`stop`)."""
        ...


class _SensorBuffer:
    """Growable column store for one sensor: a time column and three (sample, channel) columns."""

    def __init__(self, sensor: Sensor) -> None:
        self.sensor = sensor
        self.infos = list(sensor.channels())
        self.n_channels = len(self.infos)
        self.blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.fill = _BLOCK  # forces a new block on first append
        self.errors = np.zeros(self.n_channels, dtype=np.int64)
        self.failed_reads = 0
        self.drained = 0  # samples already handed out by drain()

    def _new_block(self) -> None:
        c = self.n_channels
        self.blocks.append(
            (
                np.empty(_BLOCK, dtype=np.float64),
                np.full((_BLOCK, c), np.nan),
                np.full((_BLOCK, c), np.nan),
                np.full((_BLOCK, c), np.nan),
            )
        )
        self.fill = 0

    def append(
        self,
        t: float,
        power: Sequence[float] | None,
        energy: Sequence[float] | None,
        sensor_time: Sequence[float] | None,
    ) -> None:
        if self.fill == _BLOCK:
            self._new_block()
        tb, pb, eb, sb = self.blocks[-1]
        i = self.fill
        tb[i] = t
        if power is not None:
            pb[i, :] = power
            eb[i, :] = energy
            if sensor_time is not None:
                sb[i, :] = sensor_time
        self.fill += 1

    def __len__(self) -> int:
        return 0 if not self.blocks else (len(self.blocks) - 1) * _BLOCK + self.fill

    def columns(self, start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Samples ``start`` to now, copied. Touches only the blocks from ``start`` on, so periodic
        spills cost what they add, not what the run has collected so far."""
        n = len(self)
        start = min(max(start, 0), n)
        if not self.blocks or start == n:
            c = self.n_channels
            return np.empty(0), np.empty((0, c)), np.empty((0, c)), np.empty((0, c))
        first = start // _BLOCK
        lo, hi = start - first * _BLOCK, n - first * _BLOCK
        blocks = self.blocks[first:]
        cols = [np.concatenate([b[k] for b in blocks])[lo:hi] for k in range(4)]
        return cols[0], cols[1], cols[2], cols[3]


class Sampler:
    """Samples a list of opened sensors every ``interval_s`` seconds in a background thread.

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``start`` takes the first sample
    before it returns and the thread takes a last one when told to stop, after the slowest sensor has
    refreshed once more (its ``update_period_s``, at most ``MAX_TAIL_S``), so a window opened after
    ``start`` and closed before ``stop`` is always bracketed by samples.

    A read that hangs (a driver call or a sysfs read that never returns) must not stop the others
    or the run: a watchdog thread notices a read older than ``read_timeout_s``, gives that sensor
    up (its channels end there; :attr:`hung` says why) and starts a fresh sampling thread for the
    rest on the same schedule. The stuck thread is left blocked (a daemon); should its read ever
    return, what it read is dropped. ``stop`` never waits longer than the timeout either.
    """

    def __init__(
        self,
        sensors: Sequence[Sensor],
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        read_timeout_s: float | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"sampling interval must be positive, got {interval_s}")
        self.interval_s = float(interval_s)
        self.clock = clock
        # a read that has not returned after this long is taken for hung (ENERGY_HPC_SENSOR_TIMEOUT_S)
        if read_timeout_s is None:
            read_timeout_s = settings.current().sensor_timeout_s
        self.read_timeout_s = float(read_timeout_s)
        self._buffers = [_SensorBuffer(s) for s in sensors]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._lock = threading.Lock()  # the buffers; never held during a sensor read
        self._read_lock = threading.Lock()  # one reader at a time; replaced when a read hangs
        self._gen = 0  # the sampling thread whose reads count; a replaced one's are dropped
        self._reading: tuple[int, int, float] | None = None  # (generation, buffer, monotonic start)
        self.hung: dict[int, str] = {}  # buffer index -> why that sensor was given up
        self._first = threading.Event()
        self.started_at = math.nan
        self.stopped_at = math.nan

    @property
    def channels(self) -> list[ChannelInfo]:
        return [info for b in self._buffers for info in b.infos]

    def sample_once(self, gen: int | None = None) -> None:
        """Read every sensor once, now (sensors given up as hung are skipped). Calls are serialised,
        so rows stay in read order; a hung read holds only its own generation's lock."""
        gen = self._gen if gen is None else gen
        with self._read_lock:
            self._sample(gen)

    def _sample(self, gen: int) -> None:
        for i, buf in enumerate(self._buffers):
            if i in self.hung:
                continue
            t0 = self.clock()
            self._reading = (gen, i, time.monotonic())
            try:
                r = buf.sensor.read()
            except (SensorReadError, OSError) as exc:
                self._failed(gen, buf, t0, exc, unexpected=False)
                continue
            except Exception as exc:  # a backend bug must not stop sampling: logged, counted, a gap
                self._failed(gen, buf, t0, exc, unexpected=True)
                continue
            finally:
                if self._reading is not None and self._reading[0] == gen:
                    self._reading = None
            t1 = self.clock()
            with self._lock:
                if gen != self._gen:  # this thread was replaced while it waited on a hung read
                    return
                if r.errors is not None:
                    buf.errors += np.asarray(r.errors, dtype=bool)
                buf.append((t0 + t1) / 2, r.power, r.energy, r.sensor_time)

    def _failed(self, gen: int, buf: _SensorBuffer, t0: float, exc: BaseException, unexpected: bool) -> None:
        with self._lock:
            if gen != self._gen:
                return
            buf.failed_reads += 1
            buf.errors += 1
            if buf.failed_reads == 1:
                log.warning(
                    "%s: read failed (%s%s); recording a gap and going on",
                    buf.sensor.backend,
                    f"{type(exc).__name__}: " if unexpected else "",
                    exc,
                    exc_info=unexpected,
                )
            buf.append((t0 + self.clock()) / 2, None, None, None)

    def _loop(self, gen: int) -> None:
        t0 = self.started_at
        self.sample_once(gen)  # the first sample (start() waits for it), or a replacement's catch-up
        self._first.set()
        k = max(int((self.clock() - t0) / self.interval_s) + 1, 1)
        while gen == self._gen:
            due = t0 + k * self.interval_s
            delay = due - self.clock()
            if (delay > 0 and self._stop.wait(delay)) or self._stop.is_set():
                if gen == self._gen:
                    self.sample_once(gen)  # the last sample, on this thread: stop() never reads
                return
            self.sample_once(gen)
            k += 1
            now = self.clock()
            if now > t0 + (k + 1) * self.interval_s:  # fell behind by more than a tick: skip, don't burst
                k = int((now - t0) / self.interval_s) + 1

    def _spawn(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, args=(self._gen,), name="energy-hpc-sampler", daemon=True
        )
        self._thread.start()

    def _watch(self) -> None:
        period = min(1.0, self.read_timeout_s / 4)
        while not self._stop.wait(period):
            reading = self._reading
            if (
                reading is not None
                and reading[0] == self._gen
                and time.monotonic() - reading[2] >= self.read_timeout_s
            ):
                self._give_up(reading[0], reading[1])

    def _give_up(self, gen: int, i: int | None) -> None:
        """Sensor ``i``'s read (on sampling thread ``gen``) hangs: note it, drop that thread, and
        (unless stopping) start a fresh one for the other sensors."""
        with self._lock:
            if gen != self._gen:
                return
            if i is None:
                self.hung[-1] = f"the sampling thread stopped answering for {self.read_timeout_s:.0f} s"
                log.error("%s", self.hung[-1])
            else:
                buf = self._buffers[i]
                names = ", ".join(c.name for c in buf.infos)
                self.hung[i] = (
                    f"sensor {buf.sensor.backend} ({names}): a read did not return within "
                    f"{self.read_timeout_s:.0f} s; its sampling ended there, the other sensors "
                    "went on"
                )
                log.error("%s", self.hung[i])
            self._gen += 1
            self._read_lock = threading.Lock()  # the stuck thread keeps the old one
            if not self._stop.is_set():
                self._spawn()

    def start(self) -> Sampler:
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        self.started_at = self.clock()
        self._watchdog = threading.Thread(target=self._watch, name="energy-hpc-sampler-watchdog", daemon=True)
        self._watchdog.start()
        self._spawn()
        # the first sample is taken before start returns (bounded: a hung first read is given up)
        self._first.wait(2 * self.read_timeout_s + 1.0)
        return self

    def tail_s(self) -> float:
        """How long sampling goes on after :meth:`stop` is called (s): the longest update period of
        the sensors still sampled, at most ``MAX_TAIL_S``, so that the last sample, taken then, shows
        a value refreshed after the end of a window closed just before ``stop``. A held counter (NVML
        refreshes every 100 ms) read only milliseconds after the last window would show no refresh,
        and that window no energy; until issue 15 the last case's garbage collection happened to fill
        that gap."""
        periods = [
            info.update_period_s
            for i, buf in enumerate(self._buffers)
            if i not in self.hung
            for info in buf.infos
            if math.isfinite(info.update_period_s) and info.update_period_s > 0
        ]
        return min(max(periods, default=0.0), MAX_TAIL_S)

    def stop(self) -> None:
        if self._thread is None or self._stop.is_set():
            return
        tail = self.tail_s()
        if tail > 0 and self._thread.is_alive():
            time.sleep(tail)  # the sampling thread goes on meanwhile
        self._stop.set()
        thread = self._thread
        thread.join(self.read_timeout_s + 1.0)
        if thread.is_alive():  # its last read hangs: that sensor is given up, the rest is kept
            reading = self._reading
            self._give_up(self._gen, reading[1] if reading and reading[0] == self._gen else None)
        if self._watchdog is not None:
            self._watchdog.join(2.0)
        self.stopped_at = self.clock()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def hung_notes(self) -> list[str]:
        """Why sensors were given up as hung (see the class docstring); empty when none was."""
        return list(self.hung.values())

    @property
    def lost(self) -> str:
        """Always '': the samples are in this process, none can be lost with another one."""
        return ""

    def n_samples(self) -> list[int]:
        return [len(b) for b in self._buffers]

    def traces(self, start: int | None = None) -> list[ChannelTrace]:
        """Copy out what was sampled, one :class:`ChannelTrace` per channel.

        Safe to call while sampling (for spills): it takes the lock for the copy only.
        """
        out: list[ChannelTrace] = []
        with self._lock:
            for buf in self._buffers:
                t, p, e, s = buf.columns(start or 0)
                for j, info in enumerate(self._current_infos(buf)):
                    out.append(
                        ChannelTrace(
                            info, t, p[:, j].copy(), e[:, j].copy(), s[:, j].copy(), int(buf.errors[j])
                        )
                    )
        return out

    @staticmethod
    def _current_infos(buf: _SensorBuffer) -> list[ChannelInfo]:
        """The sensor's channel metadata now: flags raised while running (a distrusted counter)
        reach the file. Falls back to what it said at start if it cannot answer any more."""
        try:
            infos = list(buf.sensor.channels())
        except Exception:
            return buf.infos
        return infos if len(infos) == buf.n_channels else buf.infos

    def close_sensors(self) -> None:
        for i, buf in enumerate(self._buffers):
            if i in self.hung:  # closing a device whose read hangs would hang too
                continue
            try:
                buf.sensor.close()
            except Exception as exc:  # closing must never lose the data already sampled
                log.warning("%s: close failed: %s", buf.sensor.backend, exc)
