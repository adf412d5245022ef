"""The model cache after a stopped build: a signal during a build leaves no temporary folder, and
the folders a killed build left (kill -9) are cleared by the next build. Real processes building a
tiny random-weight model into the test's own cache folder, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from energy_hpc import settings
from energy_hpc.workloads import build_folder
from energy_hpc.workloads.models import materialise_random, random_model_folder

BUILD = "from energy_hpc.workloads.models import materialise_random as m; print(m('tiny-sd'))"


def _build(cache: Path) -> subprocess.Popen:
    env = dict(os.environ, ENERGY_HPC_CACHE=str(cache))
    return subprocess.Popen(
        [sys.executable, "-c", BUILD], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "random").iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_signal_during_a_build_leaves_no_temporary_folder(tmp_path: Path, sig: signal.Signals) -> None:
    cache = tmp_path / "cache"
    p = _build(cache)
    try:
        end = time.monotonic() + 120
        # the build folder exists from before the model libraries are imported (seconds) to the rename
        while not ((cache / "random").is_dir() and _leftovers(cache)):
            assert p.poll() is None, p.communicate()[1][-2000:]
            assert time.monotonic() < end, "no build folder appeared"
            time.sleep(0.02)
        time.sleep(0.3)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    # ended by the signal as before (SIGINT: Python's KeyboardInterrupt, exit status 1 or -SIGINT)
    assert p.returncode in ((-sig,) if sig != signal.SIGINT else (1, -sig)), err[-2000:]
    assert _leftovers(cache) == []
    assert not (cache / "random" / random_model_folder("tiny-sd").name).exists()
    # and the next build works
    p = _build(cache)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    assert (Path(out.strip()) / ".complete").exists() and _leftovers(cache) == []


def test_folders_left_by_killed_builds_are_removed_by_the_next(tmp_path: Path) -> None:
    """kill -9 during a build leaves its folder; the next build removes it (its process is gone from
    this host), and a folder whose owner cannot be checked once it has been untouched a day."""
    cache = tmp_path / "cache"
    p = _build(cache)
    try:
        end = time.monotonic() + 120
        while not ((cache / "random").is_dir() and _leftovers(cache)):
            assert p.poll() is None and time.monotonic() < end
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    [killed] = _leftovers(cache)
    assert f".build.{socket.gethostname()}.{p.pid}." in killed
    random = cache / "random"
    old = random / ".tiny-vit-0123abcd.k3j4h5g6"  # an older version's name: no owner in it
    (old / "unet").mkdir(parents=True)
    (old / "unet" / "weights").write_bytes(b"x")
    fresh = random / ".tiny-vit-0123abcd.zz9y8x7w"
    fresh.mkdir()
    day_ago = time.time() - build_folder.STALE_AFTER_S - 60
    for f in (old, old / "unet", old / "unet" / "weights"):
        os.utime(f, (day_ago, day_ago))
    live = random / f".tiny-vit-0123abcd.build.{socket.gethostname()}.{os.getppid()}.abcdefgh"
    live.mkdir()  # a build by a process that is alive (this test's parent)

    with settings.override(cache=cache):
        folder = materialise_random("tiny-vit")
    assert (folder / ".complete").exists()
    assert _leftovers(cache) == sorted([fresh.name, live.name])
