"""The temporary folder a random-weight model is built in, before it is renamed into the model cache.

A build that is stopped must not leave its folder behind: a signal whose default action would end the
process at once (SIGTERM from Slurm or ``kill``, SIGHUP, SIGUSR1/2) is turned into an exception while
the folder exists, the folder is removed on the way out, and the process then ends by the same signal,
as it would have (SIGINT raises KeyboardInterrupt anyway). What no handler can see (``kill -9``, a node
that dies) is cleared by the next build in the same cache: the folder's name says which host and
process own it, so a folder whose process is gone from this host is removed, and one whose owner
cannot be checked (another host, or a name from an older version) once nothing in it has changed for
:data:`STALE_AFTER_S`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

# a build folder whose owner cannot be checked is taken for abandoned once nothing in it changed this long
STALE_AFTER_S = 24 * 3600.0
# signals whose default action ends the process without unwinding: made to raise during a build
_ENDING_SIGNALS = ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
# .<final name>.build.<host>.<pid>.<random>, as made by build_folder
_NAME_RE = re.compile(r"\.(?P<final>.+)\.build\.(?P<host>.+)\.(?P<pid>\d+)\.[^.]+")


def _host() -> str:
    return socket.gethostname()


class _BuildStopped(BaseException):
    """A signal arrived during a build (raised by the temporary handler, so that the folder goes)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def build_folder(final: Path) -> Iterator[Path]:
    """A new temporary folder beside ``final``, named after its owner, removed when the block ends
    unless the block renamed it into place. Stale build folders beside it are removed first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final.parent)
    with _signals_raise():
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.build.{_host()}.{os.getpid()}.", dir=final.parent))
        try:
            yield tmp
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _signals_raise() -> Iterator[None]:
    """While the block runs, the ending signals that still have their default action raise
    :class:`_BuildStopped`; after the block has cleaned up, the process ends by that signal. Handlers
    installed by others are left alone. Only in the main thread (Python's handlers run there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _BuildStopped(signum)

    old: dict[int, signal.Handlers] = {}
    for name in _ENDING_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, handler)
            old[sig] = signal.SIG_DFL
    try:
        yield
    except _BuildStopped as stop:
        for sig, was in old.items():
            signal.signal(sig, was)
        old.clear()
        log.warning(
            "%s during a model build: its temporary folder was removed", signal.Signals(stop.signum).name
        )
        os.kill(os.getpid(), stop.signum)  # the default action: the process ends here, as it would have
        raise SystemExit(128 + stop.signum) from None
    finally:
        for sig, was in old.items():
            signal.signal(sig, was)


def remove_stale(folder: Path, now: float | None = None) -> list[Path]:
    """Remove the build folders in ``folder`` that no live build owns; returns them."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = [p for p in folder.iterdir() if p.name.startswith(".") and p.is_dir()]
    except OSError:
        return []
    for p in entries:
        why = _why_stale(p, now)
        if why:
            shutil.rmtree(p, ignore_errors=True)
            log.info("removed %s: %s", p, why)
            removed.append(p)
    return removed


def _why_stale(p: Path, now: float) -> str:
    """Why the build folder ``p`` is abandoned, or "" when a build may still be using it."""
    m = _NAME_RE.fullmatch(p.name)
    if m and m["host"] == _host():
        pid = int(m["pid"])
        if pid != os.getpid() and not _alive(pid):
            return f"left by process {pid}, which is gone"
    age = now - _newest_mtime(p)
    if age > STALE_AFTER_S:
        return f"a build folder unchanged for {age / 3600:.0f} h"
    return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _newest_mtime(p: Path) -> float:
    """The latest change in ``p`` or anything under it (a build writes its weights file by file)."""
    newest = 0.0
    for root, dirs, files in os.walk(p):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            try:
                newest = max(newest, os.lstat(name).st_mtime)
            except OSError:
                pass
    return newest
