"""Sampling in a separate process, so that the sampler never competes with inference for the GIL.

A sampling thread in the inference process costs that process about 2 % at 10 ms (measured:
docs/performance.md, "Sampler fidelity") because every tick takes the GIL from the main thread. Here
the sensors are opened and sampled by a child process — started with fork+exec (``subprocess``),
never a bare ``fork``, which is unsafe after ``MPI_Init`` — whose main thread only waits on its
command pipe while the ordinary :class:`~energy_hpc.telemetry.sampler.Sampler` thread samples. The
parent asks for traces over the pipe (length-prefixed pickles; numpy arrays travel as buffers).

The child ignores SIGINT, SIGTERM and SIGUSR1: under Slurm those reach every process of the step,
and the parent must be able to stop the sampler and collect its samples after such a signal. It exits
when told to, or when its command pipe closes (the parent died).

:class:`ProcessSampler` is a :class:`~energy_hpc.telemetry.sampler.SamplerLike`, what the runner uses
of a sampler (start, stop, traces, n_samples, channels, close_sensors, hung_notes, lost), plus
``backends`` and ``skipped`` from opening the sensors.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

from energy_hpc import errors, settings
from energy_hpc.telemetry.base import ChannelInfo, SensorContext
from energy_hpc.telemetry.sampler import ChannelTrace

log = logging.getLogger(__name__)

_LEN = struct.Struct("<Q")


def _send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=5)
    stream.write(_LEN.pack(len(data)))
    stream.write(data)
    stream.flush()


def _recv(stream: IO[bytes]) -> Any:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError("sampler process closed its pipe")
    (n,) = _LEN.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError("sampler process closed its pipe mid-message")
    return pickle.loads(data)


class SamplerProcessError(RuntimeError):
    """The sampling process stopped answering (it crashed or was killed)."""


class ProcessSampler:
    """Samples sensors in a child process: ``ProcessSampler()`` starts it, ``open(names, ctx,
    interval_s)`` opens the sensors there — raising the child's
    :class:`~energy_hpc.errors.UserError` (e.g. SensorUnavailable) exactly as opening them in-process
    would — then the :class:`Sampler` API."""

    def __init__(self) -> None:
        """Start the child now (its interpreter starts while the caller does other set-up); the
        sensors are opened by :meth:`open`."""
        self._lock = threading.Lock()
        self._dead = ""
        self._infos: list[ChannelInfo] = []
        self._last: list[ChannelTrace] = []
        self.backends: list[str] = []
        self.skipped: dict[str, str] = {}
        self.hung_notes: list[str] = []  # sensors the child gave up as hung (see Sampler)
        # the child reads its settings from its environment: this process's current ones (a test's
        # override included), on top of the inherited environment
        env = {
            **os.environ,
            **settings.current().to_env(),
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "energy_hpc.telemetry.sampler_proc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are pipes
        self._to_child: IO[bytes] = self.proc.stdin
        self._from_child: IO[bytes] = self.proc.stdout

    def open(self, names: Sequence[str], ctx: SensorContext, interval_s: float) -> ProcessSampler:
        from energy_hpc.telemetry import registry

        self.interval_s = interval_s
        # what the parent registered (a site's extra backend, a test's) exists in the child too
        reply = self._ask(
            (
                "open",
                list(names),
                ctx,
                interval_s,
                registry.backends(),
                logging.getLogger("energy_hpc").level,
            )
        )
        if reply[0] == "error":
            self._finish()
            cls = getattr(errors, reply[1], None)
            if isinstance(cls, type) and issubclass(cls, errors.UserError):
                raise cls(reply[2])
            raise SamplerProcessError(f"sampler process could not open sensors: {reply[1]}: {reply[2]}")
        _, self.backends, self.skipped, self._infos = reply
        return self

    def abandon(self) -> None:
        """Stop a child that will not be used (set-up failed elsewhere)."""
        self._finish()

    # ------------------------------------------------------------------ protocol
    def _ask(self, msg: Any) -> Any:
        with self._lock:
            if self._dead:
                raise SamplerProcessError(self._dead)
            try:
                _send(self._to_child, msg)
                return _recv(self._from_child)
            except (EOFError, BrokenPipeError, OSError) as exc:
                code = self.proc.poll()
                self._dead = f"sampler process ended (exit status {code}): {exc}"
                raise SamplerProcessError(self._dead) from None

    def _finish(self) -> None:
        for stream in (self._to_child, self._from_child):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    # ------------------------------------------------------------------ Sampler API
    @property
    def channels(self) -> list[ChannelInfo]:
        return list(self._infos)

    def start(self) -> ProcessSampler:
        self._ask(("start",))
        return self

    def stop(self) -> None:
        if self.proc.poll() is not None and not self._dead:
            self._dead = f"sampler process ended (exit status {self.proc.returncode})"
        try:
            _, self._last, self.hung_notes = self._ask(("stop",))
        except SamplerProcessError as exc:
            log.error("%s; the samples it held are lost (the spill files keep what was spilled)", exc)
        self._finish()

    def traces(self, start: int | None = None) -> list[ChannelTrace]:
        """Samples from index ``start`` on, one ChannelTrace per channel (after stop: all of them)."""
        if self.proc.poll() is not None or self._dead:
            # after stop (or a crash): what the child handed over; with no samples, still every
            # channel (a spill must keep its channel records even when no samples come any more)
            k = start or 0
            return [
                ChannelTrace(t.info, t.time[k:], t.power[k:], t.energy[k:], t.sensor_time[k:], t.errors)
                for t in (self._last or self._empty())
            ]
        try:
            return self._ask(("traces", start or 0))
        except SamplerProcessError as exc:
            log.error("%s", exc)
            return self._empty()

    @property
    def lost(self) -> str:
        """Why the child's samples were lost (it died before handing them over), or ''."""
        return self._dead if not self._last else ""

    def _empty(self) -> list[ChannelTrace]:
        import numpy as np

        e = np.empty(0)
        return [ChannelTrace(i, e, e, e, e, 0) for i in self._infos]

    def n_samples(self) -> list[int]:
        return self._ask(("n_samples",))

    def close_sensors(self) -> None:
        """The child closes its sensors when it stops."""

    def __enter__(self) -> ProcessSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


IN_CHILD = False  # True in the sampling child (its parent is the rank whose devices it reads)


def _child() -> int:
    """The sampling process: open, sample, answer, until told to stop or the pipe closes."""
    global IN_CHILD
    IN_CHILD = True
    for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    # The replies go on a private copy of the pipe; fd 1 itself now points at stderr, so nothing a
    # library prints (Python or C: vendor libraries do print) can corrupt the protocol.
    stdin = sys.stdin.buffer
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    from energy_hpc.logs import setup_logging
    from energy_hpc.telemetry import registry
    from energy_hpc.telemetry.sampler import Sampler

    try:
        _, names, ctx, interval_s, backends, level = _recv(stdin)
    except EOFError:
        return 0
    setup_logging()
    logging.getLogger("energy_hpc").setLevel(level)
    registry.use_backends(backends)
    try:
        opened = registry.open_sensors(names, ctx)
    except errors.UserError as exc:
        _send(stdout, ("error", type(exc).__name__, str(exc)))
        return 0
    except Exception as exc:
        _send(stdout, ("error", type(exc).__name__, str(exc)))
        return 1
    sampler = Sampler(opened.sensors, interval_s)
    _send(stdout, ("ok", [s.backend for s in opened.sensors], dict(opened.skipped), sampler.channels))
    started = False
    while True:
        try:
            msg = _recv(stdin)
        except EOFError:  # the parent is gone
            break
        cmd = msg[0]
        if cmd == "start":
            sampler.start()
            started = True
            _send(stdout, ("started",))
        elif cmd == "traces":
            _send(stdout, sampler.traces(msg[1]))
        elif cmd == "n_samples":
            _send(stdout, sampler.n_samples())
        elif cmd == "stop":
            if started:
                sampler.stop()
            sampler.close_sensors()
            _send(stdout, ("stopped", sampler.traces(), sampler.hung_notes))
            return 0
    if started:
        sampler.stop()
    sampler.close_sensors()
    return 0


if __name__ == "__main__":
    raise SystemExit(_child())
