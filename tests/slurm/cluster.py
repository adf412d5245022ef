"""A real one-node Slurm on loopback, for the integration tests.

Starts its own ``munged`` (own key and socket), ``slurmctld`` and ``slurmd`` with a ``slurm.conf``
in a temporary folder, on free ports, so that it disturbs nothing else on the machine (another
engineer's cluster, a system munged). Clients find it through ``SLURM_CONF`` (see :attr:`env`).

Follows /work/shared/slurm-local.md. Usable by hand::

    python tests/slurm/cluster.py      # starts, prints `export SLURM_CONF=...`, waits for Ctrl-C
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "srun", "scontrol")


class ClusterUnavailable(RuntimeError):
    """Slurm cannot be started here; the message says why."""


def find_binary(name: str) -> str | None:
    """A Slurm or munge program: on PATH, or in the sbin folders a non-root PATH lacks."""
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin", "/sbin") if (p := Path(d, name)).exists()), None
    )


def _which(name: str) -> str:
    path = find_binary(name)
    if path is None:
        raise ClusterUnavailable(f"{name} not found")
    return path


def why_unavailable(which: Callable[[str], str | None] = find_binary) -> str | None:
    """Why a cluster cannot be started on this machine, or None when it can be tried. ``which``
    finds a program (tests pass their own)."""
    missing = [n for n in DAEMONS + CLIENTS if which(n) is None]
    if missing:
        return (
            f"Slurm/munge binaries not found: {', '.join(missing)} "
            "(install with .ci/install-slurm.sh: apt-get install slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        return "starting slurmd needs root (it runs jobs as their owner); run the tests as root"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    """One node (this host) with ``cpus`` CPUs and ``gpus`` GRES GPUs in partition ``debug``.

    The GPUs are character devices with /dev/null's numbers under ``root/dev`` (slurmd refuses
    regular files: "is not a valid character or block device, fix your gres.conf"), named in a
    ``gres.conf`` with ``AutoDetect=off``, each near one core. slurmctld allocates them and slurmd
    sets ``CUDA_VISIBLE_DEVICES`` and ``SLURM_STEP_GPUS`` for each step as on a GPU node, so GPU
    directives (``--gpus-per-node``, ``srun --gpus-per-task --gpu-bind=closest``) meet a real
    Slurm. Nothing opens the devices, and there is no device cgroup.
    """

    root: Path
    cpus: int = 2
    real_memory_mb: int = 2000
    gpus: int = 2
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Variables a client needs (merge into os.environ for subprocesses)."""
        return {"SLURM_CONF": str(self.conf)}

    @property
    def node(self) -> str:
        return socket.gethostname().split(".")[0]

    # -- set-up -------------------------------------------------------------------------------
    def _write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "log", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        (r / "plugstack.conf").write_text("")
        host = self.node
        gres = ""
        if self.gpus:
            (r / "dev").mkdir(exist_ok=True)
            for i in range(self.gpus):
                dev = r / "dev" / f"nvidia{i}"
                if not dev.exists():  # slurmd takes only device files: /dev/null's numbers (1, 3)
                    os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
            # one line per GPU, each near one core, as a GPU node's gres.conf says (for --gpu-bind=closest)
            (r / "gres.conf").write_text(
                "AutoDetect=off\n"
                + "".join(
                    f"NodeName={host} Name=gpu File={r / 'dev' / f'nvidia{i}'} Cores={i % self.cpus}\n"
                    for i in range(self.gpus)
                )
            )
            gres = f" Gres=gpu:{self.gpus}"
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=energyhpctest",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={r / 'munge' / 'munge.socket'}",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'slurmd.pid'}",
                    f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
                    f"PlugStackConfig={r / 'plugstack.conf'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/affinity",  # binds tasks to cores, which --gpu-bind=closest needs
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "SchedulerType=sched/builtin",
                    "MpiDefault=none",
                    *(["GresTypes=gpu"] if self.gpus else []),
                    "ReturnToService=2",
                    "KillWait=5",
                    "MinJobAge=600",
                    "InactiveLimit=0",
                    f"NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                    f"RealMemory={self.real_memory_mb}{gres} State=UNKNOWN",
                    f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES",
                    "",
                ]
            )
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **self.env},
        )
        log.close()

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        subprocess.run(
            [_which("mungekey"), "--create", f"--keyfile={key}", "--force"], check=True, capture_output=True
        )
        os.chmod(key, 0o600)
        m = self.root / "munge"
        self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                "--force",
                f"--socket={m / 'munge.socket'}",
                f"--key-file={key}",
                f"--pid-file={m / 'munged.pid'}",
                f"--seed-file={m / 'munged.seed'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
            ],
        )
        deadline = time.monotonic() + 15
        while not (m / "munge.socket").exists():
            self._check_alive("munged")
            if time.monotonic() > deadline:
                raise ClusterUnavailable("munged did not create its socket within 15 s")
            time.sleep(0.1)

    def _check_alive(self, name: str) -> None:
        p = self.procs[name]
        if p.poll() is not None:
            raise ClusterUnavailable(f"{name} exited with status {p.returncode}: {self._log_tail(name)}")

    def _log_tail(self, name: str, n: int = 5) -> str:
        texts = []
        for f in (self.root / "log" / f"{name}.stdout", self.root / "log" / f"{name}.log"):
            if f.exists():
                texts += f.read_text(errors="replace").strip().splitlines()[-n:]
        return " | ".join(texts) or "(no log)"

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        """Start the daemons and wait until the node is idle; raise ClusterUnavailable if not."""
        reason = why_unavailable()
        if reason:
            raise ClusterUnavailable(reason)
        self._write_config()
        try:
            self._start_munge()
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            time.sleep(0.5)
            self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name in ("munged", "slurmctld", "slurmd"):
                self._check_alive(name)
            r = subprocess.run(
                [_which("sinfo"), "-h", "-N", "-o", "%T"],
                capture_output=True,
                text=True,
                env={**os.environ, **self.env},
            )
            last = (r.stdout + r.stderr).strip()
            if r.returncode == 0 and last.rstrip("*") in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise ClusterUnavailable(
            f"node not idle within {timeout:.0f} s (sinfo: {last!r}); "
            f"slurmctld: {self._log_tail('slurmctld')}; "
            f"slurmd: {self._log_tail('slurmd')}"
        )

    def stop(self) -> None:
        """Stop what this object started (by pid, newest first); cancel leftover jobs first."""
        scancel = find_binary("scancel")
        if scancel and "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(
                [scancel, "--user=root", "--full"],
                capture_output=True,
                env={**os.environ, **self.env},
                timeout=10,
            )
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


def main() -> None:  # pragma: no cover - manual use
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="slurm-"))
    cluster = SlurmCluster(root).start()
    print(f"export SLURM_CONF={cluster.conf}")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
