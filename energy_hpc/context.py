"""Where this process stands in the job: rank, node, local rank, bound device, and how to talk to the
other ranks.

The same command runs as a single process, under ``mpiexec -n N`` and under ``srun``. mpi4py is
imported only when the environment says an MPI launcher started us (or the user forces it), and it
is imported before torch (Cray MPICH on Frontier requires that order).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from energy_hpc import settings
from energy_hpc.errors import LaunchError

if TYPE_CHECKING:
    from mpi4py import MPI

log = logging.getLogger(__name__)

# Variables that MPI launchers set in every rank they start.
_MPI_RANK_VARS = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "PALS_RANKID", "MPI_LOCALRANKID")
LOCAL_RANK_VARS = (
    "SLURM_LOCALID",
    "MPI_LOCALRANKID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "PALS_LOCAL_RANKID",
    "LOCAL_RANK",
)
# Lowest level first: ROCR_VISIBLE_DEVICES selects from the node, HIP/CUDA_VISIBLE_DEVICES from those.
VISIBLE_VARS = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")


def launched_by_mpi(env: Mapping[str, str]) -> bool:
    """True when an MPI launcher (or srun with more than one task) started this process."""
    if any(v in env for v in _MPI_RANK_VARS):
        return True
    return "SLURM_STEP_ID" in env and int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1"))) > 1


def want_mpi(env: Mapping[str, str], force: bool | None = None) -> bool:
    if force is not None:
        return force
    flag = settings.Settings.from_env(env).mpi  # ENERGY_HPC_MPI, read from the environment described
    return launched_by_mpi(env) if flag is None else flag


def visible_devices(env: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """The devices the runtime lets this process see, as (variable, entries).

    Entries are what the variable holds (indices, UUIDs, ``GPU-...``/``MIG-...``), resolved through
    the layering ROCR -> HIP -> CUDA: a HIP/CUDA list indexes into the ROCR list when both are set.
    An empty tuple means no variable restricts the view.
    """
    name = ""
    entries: tuple[str, ...] = ()
    for var in VISIBLE_VARS:
        raw = env.get(var)
        if raw is None:
            continue
        items = tuple(x.strip() for x in raw.split(",") if x.strip())
        if entries and all(x.isdigit() for x in items):
            try:
                items = tuple(entries[int(x)] for x in items)
            except IndexError:
                raise LaunchError(
                    f"{var}={raw} selects devices beyond the {len(entries)} that {name} "
                    f"leaves visible; fix the binding in the job script"
                ) from None
        name, entries = var, items
    return name, entries


class PeerTimeout(Exception):
    """A peer did not answer before its deadline (it died, hangs, or lost its liveness signal)."""


# How often a waiting rank looks for a message: short at first (the answer is usually already there),
# backing off so that a rank waiting on an oversubscribed node does not steal the CPU from the others.
_POLL_FIRST_S = 0.0002
_POLL_MAX_S = 0.02


class Comm:
    """The few operations the run needs. :class:`SingleComm` is the one-process case.

    Besides the collectives used while every rank is known to be alive (set-up), there are
    point-to-point operations that give up: ``wait_message`` polls with a caller-supplied
    ``give_up`` test, so a gather never blocks forever on a rank that died.
    """

    rank = 0
    size = 1
    abandoned = False

    def barrier(self) -> None: ...

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        return [obj]

    def allreduce_max(self, value: float) -> float:
        return value

    def split_shared(self) -> tuple[int, int, int, int]:
        """(local_rank, local_size, node_index, n_nodes)."""
        lay = self.split_nodes()
        return lay.local_rank, len(lay.members), lay.node_index, lay.n_nodes

    def split_nodes(self, pretend: int = 0) -> NodeLayout:
        """This rank's node: by shared memory, or (``pretend`` > 0) as one of ``pretend`` blocks of
        consecutive ranks, so that several nodes run on one machine for tests and benchmarks."""
        return NodeLayout(local_rank=0, node_index=0, n_nodes=1, members=(0,), nodes=((0,),))

    def isend_obj(self, obj: Any, dest: int, tag: int) -> MPI.Request:
        raise RuntimeError("isend_obj needs more than one rank")

    def wait_message(
        self, source: int, tag: int, give_up: Callable[[], str], max_pause: float = _POLL_MAX_S
    ) -> tuple[int, int]:
        """Wait for a message from ``source`` (or any rank: -1) with ``tag``; (source, tag) when one
        is there. ``give_up`` is called about once a second and returns a reason to stop waiting
        (or ''), which is raised as :class:`PeerTimeout`."""
        raise RuntimeError("wait_message needs more than one rank")

    def recv_obj(self, source: int, tag: int) -> Any:
        raise RuntimeError("recv_obj needs more than one rank")

    def send_arrays(
        self, arrays: Sequence[np.ndarray], dest: int, tag: int, give_up: Callable[[], str] = lambda: ""
    ) -> None:
        """Send several arrays (structured records too) as raw bytes, never pickled; gives up when
        ``give_up`` returns a reason (checked about once a second), raised as :class:`PeerTimeout`."""
        raise RuntimeError("send_arrays needs more than one rank")

    def recv_arrays_until(
        self,
        source: int,
        tag: int,
        give_up: Callable[[], str],
        alloc: Callable[[int], np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """Receive the arrays of one :meth:`send_arrays`. They land in one uint8 buffer from
        ``alloc(nbytes)`` (at least ``nbytes`` long: buffers are reused), else in a new one."""
        raise RuntimeError("recv_arrays_until needs more than one rank")

    def abandon(self) -> None:
        """A peer is gone: MPI_Finalize would wait for it forever, so end the job with MPI_Abort at
        exit instead (non-zero exit status; the launcher cleans up the other ranks)."""
        self.abandoned = True


class SingleComm(Comm):
    pass


class MpiComm(Comm):
    """mpi4py underneath. Arrays travel as raw buffers (upper-case Send/Recv), never pickled."""

    def __init__(self) -> None:
        try:
            import mpi4py

            if "mpi4py.MPI" not in __import__("sys").modules:
                # we finalise ourselves (see _at_exit): MPI_Finalize hangs when a peer has died
                mpi4py.rc.finalize = False
                self._own_finalize = True
            else:
                self._own_finalize = False
            from mpi4py import MPI
        except ImportError as exc:
            raise LaunchError(
                f"launched under MPI but mpi4py cannot be imported ({exc}); install it "
                "with `pip install energy-hpc[mpi]` (built against your MPI), or run "
                "a single process with ENERGY_HPC_MPI=0"
            ) from None
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.abandoned = False
        if self._own_finalize:
            atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        MPI = self.MPI
        if MPI.Is_finalized():
            return
        if self.abandoned:
            log.warning(
                "rank %d: a peer is gone; ending the job with MPI_Abort (MPI_Finalize would wait "
                "for it forever)",
                self.rank,
            )
            for h in logging.getLogger("energy_hpc").handlers:
                h.flush()
            __import__("sys").stdout.flush()
            self.comm.Abort(1)
        MPI.Finalize()

    def isend_obj(self, obj: Any, dest: int, tag: int) -> MPI.Request:
        return self.comm.isend(obj, dest=dest, tag=tag)

    def wait_message(
        self, source: int, tag: int, give_up: Callable[[], str], max_pause: float = _POLL_MAX_S
    ) -> tuple[int, int]:
        MPI = self.MPI
        status = MPI.Status()
        src = MPI.ANY_SOURCE if source < 0 else source
        pause, next_check = _POLL_FIRST_S, time.monotonic() + 1.0
        while not self.comm.Iprobe(source=src, tag=tag, status=status):
            if time.monotonic() >= next_check:
                why = give_up()
                if why:
                    raise PeerTimeout(why)
                next_check = time.monotonic() + 1.0
            time.sleep(pause)
            pause = min(pause * 2, max_pause)
        return status.Get_source(), status.Get_tag()

    def recv_obj(self, source: int, tag: int) -> Any:
        return self.comm.recv(source=source, tag=tag)

    def send_arrays(
        self, arrays: Sequence[np.ndarray], dest: int, tag: int, give_up: Callable[[], str] = lambda: ""
    ) -> None:
        """Several arrays in one exchange, each sent straight from its own memory (no packing copy):
        a header with every dtype and shape, then one raw-byte message per array. Not a blocking
        Send: MPICH's busy-polls until the receiver takes the payload, and a few senders spinning on
        an oversubscribed node starve the one rank that receives and writes."""
        arrays = [np.ascontiguousarray(a) for a in arrays]
        self.comm.send(
            [(a.dtype.descr if a.dtype.names else a.dtype.str, a.shape) for a in arrays], dest=dest, tag=tag
        )
        self._wait_all(
            [
                self.comm.Isend([a.reshape(-1).view(np.uint8), self.MPI.BYTE], dest=dest, tag=tag)
                for a in arrays
                if a.size
            ],
            give_up,
        )

    def recv_arrays_until(
        self,
        source: int,
        tag: int,
        give_up: Callable[[], str],
        alloc: Callable[[int], np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        self.wait_message(source, tag, give_up, max_pause=0.001)
        header = self.comm.recv(source=source, tag=tag)
        dtypes = [np.dtype(dt if isinstance(dt, str) else [tuple(f) for f in dt]) for dt, _ in header]
        sizes = [
            int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            for dt, (_, shape) in zip(dtypes, header, strict=True)
        ]
        starts = np.cumsum([0] + [-(-n // 8) * 8 for n in sizes])  # 8-byte aligned slots
        buf = alloc(int(starts[-1])) if alloc else np.empty(int(starts[-1]), np.uint8)
        # strict=False: starts holds one more offset than there are arrays (the end of the last)
        out = [
            buf[a : a + n].view(dt).reshape(shape)
            for dt, (_, shape), a, n in zip(dtypes, header, starts, sizes, strict=False)
        ]
        reqs = [
            self.comm.Irecv([buf[a : a + n], self.MPI.BYTE], source=source, tag=tag)
            for a, n in zip(starts, sizes, strict=False)
            if n
        ]
        self._wait_all(reqs, give_up)
        return out

    def _wait_all(self, reqs: list[MPI.Request], give_up: Callable[[], str]) -> None:
        """A transfer is under way: poll tightly (each Test drives it) but yield the CPU: pause
        ``spin_s`` between tests (ENERGY_HPC_SPIN_S), as the sender needs the CPU on an oversubscribed
        node."""
        spin_s = settings.current().spin_s
        next_check = time.monotonic() + 1.0
        while reqs and not self.MPI.Request.Testall(reqs):
            if time.monotonic() >= next_check:
                why = give_up()
                if why:
                    for r in reqs:
                        if r != self.MPI.REQUEST_NULL:
                            r.Cancel()
                    raise PeerTimeout(why)
                next_check = time.monotonic() + 1.0
            time.sleep(spin_s)

    def barrier(self) -> None:
        self.comm.Barrier()

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return self.comm.bcast(obj, root=root)

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        return self.comm.gather(obj, root=root)

    def allreduce_max(self, value: float) -> float:
        return float(self.comm.allreduce(value, op=self.MPI.MAX))

    def split_nodes(self, pretend: int = 0) -> NodeLayout:
        if pretend > 0:
            n = min(pretend, self.size)
            node = self.comm.Split(self.rank * n // self.size, key=self.rank)
        else:
            node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED, key=self.rank)
        local_rank = node.Get_rank()
        members = tuple(int(r) for r in node.allgather(self.rank))
        leaders = self.comm.Split(0 if local_rank == 0 else self.MPI.UNDEFINED, key=self.rank)
        nodes: tuple[tuple[int, ...], ...] = ()
        if local_rank == 0:
            node_index, n_nodes = leaders.Get_rank(), leaders.Get_size()
            # world rank 0 has the lowest key: it leads node 0 and is rank 0 among the leaders
            every = leaders.gather(members, root=0)
            nodes = tuple(every) if every is not None else ()
            leaders.Free()
        else:
            node_index, n_nodes = -1, -1
        node_index = node.bcast(node_index, root=0)
        n_nodes = node.bcast(n_nodes, root=0)
        node.Free()
        return NodeLayout(local_rank, node_index, n_nodes, members, nodes if self.rank == 0 else ())


@dataclass(frozen=True)
class NodeLayout:
    """Which ranks share this rank's node. ``members`` are world ranks in order, the node leader
    first; ``nodes`` (rank 0 only, else empty) holds every node's members, by node index."""

    local_rank: int
    node_index: int
    n_nodes: int
    members: tuple[int, ...]
    nodes: tuple[tuple[int, ...], ...] = ()

    @property
    def leader(self) -> int:
        return self.members[0]


@dataclass(frozen=True)
class RankContext:
    rank: int
    size: int
    local_rank: int
    local_size: int
    node_index: int
    n_nodes: int
    hostname: str
    launcher: str  # "single", "mpi", "srun"
    visible_env: str
    visible_devices: tuple[str, ...]
    slurm: dict[str, str] = field(default_factory=dict)  # job id, step id, job name, partition, nodelist
    layout: NodeLayout | None = None  # the node's ranks (None: one process)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def node_leader(self) -> bool:
        return self.local_rank == 0

    def bound_ordinal(self, n_runtime_devices: int) -> int | None:
        """Which of the runtime's devices this rank uses: its only one, or local rank modulo count."""
        if n_runtime_devices <= 0:
            return None
        return self.local_rank % n_runtime_devices

    def bound_visible_entry(self, n_runtime_devices: int) -> tuple[str, ...]:
        """The visible-devices entry (index or UUID) of the device this rank uses, if restricted."""
        k = self.bound_ordinal(n_runtime_devices)
        if k is None or not self.visible_devices or k >= len(self.visible_devices):
            return ()
        return (self.visible_devices[k],)


def slurm_info(env: Mapping[str, str]) -> dict[str, str]:
    keys = {
        "job_id": "SLURM_JOB_ID",
        "step_id": "SLURM_STEP_ID",
        "job_name": "SLURM_JOB_NAME",
        "partition": "SLURM_JOB_PARTITION",
        "nodelist": "SLURM_JOB_NODELIST",
        "array_task_id": "SLURM_ARRAY_TASK_ID",
        "cluster": "SLURM_CLUSTER_NAME",
    }
    return {k: env[v] for k, v in keys.items() if v in env}


def env_int(env: Mapping[str, str], names: tuple[str, ...], default: int) -> int:
    for n in names:
        if n in env:
            try:
                return int(env[n])
            except ValueError:
                pass
    return default


# Variables only hydra's mpiexec sets in the ranks it starts (srun's PMI plugins do not).
_HYDRA_VARS = ("HYDI_CONTROL_FD", "MPI_LOCALRANKID")


def launcher_name(env: Mapping[str, str]) -> str:
    """The launcher: "srun" when srun started this rank itself (with or without a PMI plugin: ``--mpi=pmi2`` sets
    PMI_RANK too), else "mpi" (an mpiexec, which under Slurm runs its proxies as an srun step: the
    ranks then see SLURM_STEP_ID, but also hydra's own variables, and SLURM_PROCID numbers the
    proxies, not the ranks)."""
    if "SLURM_STEP_ID" not in env or any(v in env for v in _HYDRA_VARS):
        return "mpi"
    rank = next((env[v] for v in ("PMI_RANK", "PMIX_RANK") if v in env), None)
    return "srun" if rank is None or rank == env.get("SLURM_PROCID") else "mpi"


def detect(env: Mapping[str, str] | None = None, force_mpi: bool | None = None) -> tuple[RankContext, Comm]:
    """Work out this rank's context, initialising MPI only when we were launched under it."""
    env = os.environ if env is None else env
    hostname = socket.gethostname().split(".")[0]
    vis_env, vis = visible_devices(env)
    if want_mpi(env, force_mpi):
        comm: Comm = MpiComm()
        launcher = launcher_name(env)
        expected = env_int(env, ("SLURM_STEP_NUM_TASKS", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"), comm.size)
        if comm.size == 1 and expected > 1:
            raise LaunchError(
                f"the launcher started {expected} tasks but MPI sees only 1 rank in each: srun needs an "
                "MPI plugin (srun --mpi=pmix or --mpi=pmi2; cray_shasta on HPE Cray), or use mpiexec"
            )
        pretend = settings.current().pretend_nodes
        lay = comm.split_nodes(pretend)
        local_rank, local_size, node_index, n_nodes = (
            lay.local_rank,
            len(lay.members),
            lay.node_index,
            lay.n_nodes,
        )
        if pretend:
            # a distinct host per pretend node, so per-node logic and tables see n_nodes nodes
            hostname = f"{hostname}+p{node_index}"
    else:
        comm = SingleComm()
        launcher = "single"
        lay = None
        local_rank, local_size, node_index, n_nodes = 0, 1, 0, 1
    ctx = RankContext(
        rank=comm.rank,
        size=comm.size,
        local_rank=local_rank,
        local_size=local_size,
        node_index=node_index,
        n_nodes=n_nodes,
        hostname=hostname,
        launcher=launcher,
        visible_env=vis_env,
        visible_devices=vis,
        slurm=slurm_info(env),
        layout=lay,
    )
    log.debug("rank context: %s", ctx)
    return ctx, comm


# What a signal that ends the measuring was sent for. The cause is decided in the signal handler, from
# facts gathered once at start-up (:func:`signal_facts`) and the time of the signal: a handler must not
# ask Slurm anything.
CAUSE_TIME_LIMIT = "time-limit"  # Slurm's warning before the time limit (--signal), or its SIGTERM at it
CAUSE_RANK_FAILED = "rank-failed"  # hydra's notice that a rank failed (mpiexec -disable-auto-cleanup)
CAUSE_REQUEST = "request"  # anything else: scancel, kill, Ctrl-C

# A SIGUSR1 this long before the job's end (or later) is taken for Slurm's warning. sbatch allows up to
# 65535 s, the profiles ask for 120 s and Slurm may send it up to a minute early; a SIGUSR1 earlier
# than this is not the time limit's.
TIME_LIMIT_WARNING_S = 900.0
# Slurm sends SIGTERM at the time limit itself; a little slack for clock differences between nodes.
TIME_LIMIT_SIGTERM_S = 60.0


@dataclass(frozen=True)
class SignalFacts:
    """What tells the signals apart, read once at start-up (by rank 0, for every rank).

    ``job_end_unix``: when Slurm ends the job (None outside Slurm, or with no time limit known);
    ``slurm``: the job runs under Slurm; ``hydra``: hydra's mpiexec started the ranks;
    ``hydra_notices``: that mpiexec was run with ``-disable-auto-cleanup``, so it sends SIGUSR1 to the
    surviving ranks when one fails (None: its command line could not be seen)."""

    job_end_unix: float | None = None
    slurm: bool = False
    hydra: bool = False
    hydra_notices: bool | None = None


def signal_cause(signame: str, facts: SignalFacts, now_unix: float) -> tuple[str, str]:
    """What a signal received at ``now_unix`` was sent for: (cause, text for the run file).

    A SIGUSR1 shortly before the job's end is Slurm's time-limit warning; a SIGUSR1 outside Slurm, or
    long before the end, under hydra's mpiexec is hydra's notice that a rank failed (unless mpiexec's
    command line shows it was run without ``-disable-auto-cleanup``: then it only forwards signals).
    Pure arithmetic: it runs in the signal handler."""
    end = facts.job_end_unix
    left = None if end is None else end - now_unix
    if signame == "SIGUSR1":
        if left is not None and left <= TIME_LIMIT_WARNING_S:
            return CAUSE_TIME_LIMIT, f"Slurm's warning before the time limit (the job ends in {left:.0f} s)"
        if facts.hydra and facts.hydra_notices is not False:
            return CAUSE_RANK_FAILED, "hydra's notice that a rank failed (mpiexec -disable-auto-cleanup)"
        if facts.slurm and end is None:
            return CAUSE_TIME_LIMIT, "Slurm's warning before the time limit (the job's end time is not known)"
        if left is not None:
            return CAUSE_REQUEST, f"a request to stop, {left:.0f} s before the time limit"
        return CAUSE_REQUEST, "a request to stop"
    if signame == "SIGTERM" and left is not None and left <= TIME_LIMIT_SIGTERM_S:
        return CAUSE_TIME_LIMIT, "Slurm ending the job at its time limit"
    return CAUSE_REQUEST, ""


def signal_facts(
    env: Mapping[str, str] | None = None,
    *,
    squeue: Callable[[str], str] | None = None,
    hydra_cmdline: Callable[[], list[str] | None] | None = None,
) -> SignalFacts:
    """The facts :func:`signal_cause` decides from. Slurm's end time is SLURM_JOB_END_TIME where
    Slurm sets it, else asked of ``squeue -h -j ID -o %e`` (``squeue`` runs it; tests pass their own);
    hydra's flags come from the mpiexec command line found above this process (``hydra_cmdline``)."""
    env = os.environ if env is None else env
    job_id = env.get("SLURM_JOB_ID", "")
    hydra = any(v in env for v in _HYDRA_VARS)
    end = None
    if job_id:
        end = _parse_unix(env.get("SLURM_JOB_END_TIME", ""))
        if end is None:
            end = _parse_squeue_end((squeue or _squeue_end)(job_id))
    notices = None
    if hydra:
        argv = (hydra_cmdline or mpiexec_cmdline)()
        if argv is not None:
            notices = any(a.lstrip("-") == "disable-auto-cleanup" for a in argv)
    return SignalFacts(job_end_unix=end, slurm=bool(job_id), hydra=hydra, hydra_notices=notices)


def _parse_unix(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None


def _parse_squeue_end(text: str) -> float | None:
    """squeue's %e: the end time in local time (2026-12-01T15:30:00); N/A, Unknown or NONE where
    there is none."""
    import datetime as dt

    text = text.strip()
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()  # naive: local time
    except ValueError:
        return None


def _squeue_end(job_id: str) -> str:
    """``squeue -h -j ID -o %e``'s answer, or "" if squeue is missing, fails or is slow."""
    import subprocess

    try:
        r = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%e"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("squeue for the job's end time: %s", exc)
        return ""
    return r.stdout if r.returncode == 0 else ""


def mpiexec_cmdline(pid: int | None = None, levels: int = 6) -> list[str] | None:
    """The command line of the mpiexec (or mpirun) above this process, from /proc; None where none is
    seen (not Linux, or this node's ranks were started by a remote hydra proxy)."""
    pid = os.getppid() if pid is None else pid
    for _ in range(levels):
        if pid <= 1:
            return None
        try:
            proc = Path("/proc", str(pid))
            argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0")]
            stat = (proc / "stat").read_bytes()
        except OSError:
            return None
        name = os.path.basename(argv[0]) if argv else ""
        if name.startswith(("mpiexec", "mpirun")):
            return [a for a in argv if a]
        pid = int(stat[stat.rindex(b")") + 2 :].split()[1])  # the field after the state: the parent
    return None
