"""One run of a job on every rank: sensors on, idle baseline, each case (load, warm-up, measured
iterations), sensors off, everything gathered to rank 0 and written to one run file.

Per rank, in order:

1. rank 0 checks the output folder (before anything expensive), and broadcasts the run's epoch;
2. the rank resolves its device, the node leader materialises the models (random weights), every
   rank opens its sensors — a failure of any of these on any rank stops all ranks with one message;
3. the sampler starts; an idle window measures the baseline; each case runs its windows;
4. the sampler stops; rank 0 gathers and writes; it prints the run file's path on stdout.

A case that raises is recorded as failed (window status, rank error) and the next case runs. A
signal (SIGTERM, SIGINT, or the SIGUSR1 that Slurm sends before the time limit when asked with
``--signal``) closes the open windows as interrupted and writes what was measured as a partial run.

:func:`run_job` runs three steps of a :class:`RankRun`: :meth:`RankRun.set_up` (1 and 2, then the
spill folder and this rank's spill file), :meth:`RankRun.measure` (3, and stopping the sampler) and
:meth:`RankRun.finish` (the rank's record closed, its last spill, the gather and write, the spill
folder removed or kept), the signal handlers installed around the last two.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from energy_hpc import settings
from energy_hpc.context import Comm, RankContext, SignalFacts, signal_cause, signal_facts
from energy_hpc.errors import OutputError, UserError
from energy_hpc.jobtypes import Case, Job, case_json, run_order
from energy_hpc.store import (
    RankRecord,
    RunHeader,
    check_output_dir,
    estimate_run_bytes,
    make_spill_dir,
    run_file_stem,
)
from energy_hpc.telemetry.base import SensorContext
from energy_hpc.windows import Phase, Window, WindowLog, to_array

if TYPE_CHECKING:
    from energy_hpc.gather import GatherOutcome
    from energy_hpc.spill import Spiller, SpillPlan
    from energy_hpc.telemetry.control import DeviceControl
    from energy_hpc.telemetry.sampler import ChannelTrace, SamplerLike
    from energy_hpc.telemetry.sampler_proc import ProcessSampler
    from energy_hpc.workloads.base import Workload
    from energy_hpc.workloads.components import Probe
    from energy_hpc.workloads.device import TorchDevice

log = logging.getLogger(__name__)

INTERRUPT_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


class RunInterrupted(BaseException):
    """Raised in the main thread by the signal handler; unwinds the case loop to the write."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


class CollectiveUserError(UserError):
    """A UserError raised on some rank, re-raised on every rank; only rank 0 prints it."""

    def __init__(self, message: str, quiet: bool) -> None:
        super().__init__(message)
        self.quiet = quiet


T = TypeVar("T")


def collective(comm: Comm, what: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on every rank; if it raised anywhere, raise it everywhere (only rank 0 prints it).

    Anything else than a UserError (a full quota while building a model, a CUDA error, a backend bug)
    is passed on too, with its type and its traceback logged where it happened: a rank that left
    alone would leave every other rank waiting in this gather until the job's time limit."""
    message = ""
    try:
        result = fn()
    except UserError as exc:
        message = str(exc)
    except Exception as exc:
        log.error("rank %d: %s failed:\n%s", comm.rank, what, traceback.format_exc())
        message = f"{what}: {type(exc).__name__}: {exc}"
    messages = comm.gather(message, root=0)
    first = ""
    if comm.rank == 0 and messages:
        bad = [(r, m) for r, m in enumerate(messages) if m]
        if bad:
            r, m = bad[0]
            first = (
                m
                if comm.size == 1
                else f"rank {r}: {m}" + (f" (and {len(bad) - 1} more ranks)" if len(bad) > 1 else "")
            )
    first = comm.bcast(first, root=0)
    if first:
        raise CollectiveUserError(first, quiet=comm.rank != 0)
    return result  # fn returned here: had it raised, every rank would have raised above


@dataclass
class RunResult:
    path: Path | None
    status: str
    failures: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "complete" else 1


class _Signals:
    """The run's handlers of SIGTERM, SIGINT and SIGUSR1. The first signal is noted with what it was
    taken for (:func:`~energy_hpc.context.signal_cause`: a SIGUSR1 is Slurm's time-limit warning or
    hydra's notice that a rank failed), decided from ``facts`` read at start-up and the signal's time."""

    def __init__(self, facts: SignalFacts | None = None) -> None:
        self.facts = facts or SignalFacts()
        self.received: str = ""
        self.received_at: float | None = None  # monotonic time of the first signal
        self.cause = ""  # what the first signal was taken for: context.CAUSE_*
        self.cause_text = ""  # the same in words, for the run file ("" when nothing more is known)
        self.armed = False
        self._old: dict[int, Any] = {}

    @property
    def described(self) -> str:
        """The first signal and what it was taken for: "SIGUSR1, taken for Slurm's warning ..."."""
        return f"{self.received}, taken for {self.cause_text}" if self.cause_text else self.received

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received:
            log.warning("%s received again; still writing what was measured", name)
            return
        self.received, self.received_at = name, time.monotonic()
        self.cause, self.cause_text = signal_cause(name, self.facts, time.time())
        log.warning("%s received: closing open windows and writing what was measured", self.described)
        if self.armed:
            raise RunInterrupted(name)

    def install(self) -> None:
        for name in INTERRUPT_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._old[sig] = signal.signal(sig, self._handler)
        self.armed = True

    def disarm(self) -> None:
        """From here on a signal is only noted (the gather and write must finish)."""
        self.armed = False

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _sleep(seconds: float) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


def run_job(
    job: Job,
    out: Path,
    ctx: RankContext,
    comm: Comm,
    *,
    sensors: tuple[str, ...] | None = None,
    interval_ms: float | None = None,
    keep_spills: bool | None = None,
    sleep: Callable[[float], None] | None = None,
    process_sampler: Callable[[], ProcessSampler] | None = None,
) -> RunResult:
    """Measure ``job`` on this rank; rank 0 writes the run file into ``out``.

    Spills go to ``<out>/.<stem>.spill/`` every ``[measure] spill_seconds`` and are removed once the run
    file is in place, unless ``keep_spills`` (default: the setting, ENERGY_HPC_KEEP_SPILLS=1).
    ``sleep`` waits through the idle and cool-down windows (default: a sleep in short steps);
    ``process_sampler`` starts the sampling child where the run samples in a process (default:
    :class:`~energy_hpc.telemetry.sampler_proc.ProcessSampler`). Tests pass their own."""
    interval_s = (interval_ms or job.measure.interval_ms) / 1000.0
    if keep_spills is None:
        keep_spills = settings.current().keep_spills
    run = RankRun.set_up(
        job, out, ctx, comm, sensors=sensors, interval_s=interval_s, process_sampler=process_sampler
    )
    run.signals.install()
    try:
        run.measure(sleep or _sleep)
        outcome = run.finish(keep_spills)
    finally:
        run.signals.restore()
        if run.frozen:  # the last case's model is collectable again (the command freezes at its exit)
            import gc

            gc.unfreeze()
    return run.result(outcome)


@dataclass
class RankRun:
    """One rank's run: what :meth:`set_up` made, and what :meth:`measure` adds for :meth:`finish`."""

    job: Job
    out: Path
    ctx: RankContext
    comm: Comm
    device: TorchDevice
    sampler: SamplerLike
    header: RunHeader  # every rank's copy: in its spill file; rank 0 writes it into the run file
    stem: str
    offset: float  # monotonic value at the run's epoch on this node: run time = monotonic - offset
    cases: list[dict[str, Any]]  # the /cases rows
    record: RankRecord
    windows: WindowLog
    plan: SpillPlan
    spiller: Spiller | None = None  # None when the spill file could not be made
    signals: _Signals = field(default_factory=_Signals)
    failures: list[str] = field(default_factory=list)
    interrupted: str = ""  # the signal that ended the measuring
    control: DeviceControl | None = None  # the device's power cap and clocks (telemetry.control)
    order: list[int] = field(default_factory=list)  # case indices in the order they run (jobtypes.run_order)
    frozen: bool = False  # the heap frozen before the last case's unload (_freeze_for_the_end)

    @classmethod
    def set_up(
        cls,
        job: Job,
        out: Path,
        ctx: RankContext,
        comm: Comm,
        *,
        sensors: tuple[str, ...] | None,
        interval_s: float,
        process_sampler: Callable[[], ProcessSampler] | None = None,
    ) -> RankRun:
        """Collective, before anything is measured: rank 0 checks the output folder; every rank learns
        the run's epoch and stem, resolves its device, builds the models (node leaders), opens its
        sensors and sampler; then the spill folder and this rank's spill file. A failure on any rank
        raises the same :class:`CollectiveUserError` on every rank."""
        from energy_hpc.spill import SpillPlan

        measure, root = job.measure, ctx.is_root
        collective(
            comm,
            "output",
            lambda: (
                check_output_dir(out, estimate_run_bytes(ctx.size, _expected_seconds(job), interval_s))
                if root
                else None
            ),
        )
        # every rank knows the run's epoch and file stem before anything is measured, and what tells
        # its signals apart (Slurm's end time, hydra's flags: rank 0 asks once for all)
        epoch_unix, stem, facts = comm.bcast(
            (time.time(), run_file_stem(job.name, ctx.slurm), signal_facts()) if root else None, root=0
        )
        offset = time.monotonic() - (time.time() - epoch_unix)
        order, trial_attrs = _trial_plan(job, epoch_unix)
        position = {index: k for k, index in enumerate(order)}  # a case's place in the run order

        device = collective(comm, "device", lambda: _resolve_device(measure.device, ctx))
        sampler, backends, skipped, control = _open_sampler(
            job, ctx, comm, device, sensors or measure.sensors, interval_s, process_sampler
        )
        for name, why in skipped.items():
            log.debug("sensor %s not used: %s", name, why)

        # the spill folder, made once the set-up can no longer fail, is known to every rank before sampling
        spill_folder = collective(comm, "spills", lambda: str(make_spill_dir(out, stem)) if root else None)
        plan = SpillPlan(Path(comm.bcast(spill_folder, root=0)), measure.spill_seconds)
        run = cls(
            job=job,
            out=out,
            ctx=ctx,
            comm=comm,
            device=device,
            sampler=sampler,
            header=RunHeader(
                job_name=job.name,
                job_text=job.text,
                job_path=job.path,
                epoch_unix=epoch_unix,
                n_ranks=ctx.size,
                n_nodes=ctx.n_nodes,
                launcher=ctx.launcher,
                slurm=ctx.slurm,
                interval_s=interval_s,
                extra=trial_attrs,
                scheduler_settings=settings.current().scheduler_settings,
            ),
            stem=stem,
            offset=offset,
            cases=[
                {**_case_row(c), "trial": c.trial, "order": position[c.index], **_warmup_rule(job, c)}
                for c in job.cases
            ],
            order=order,
            record=RankRecord(
                host=ctx.hostname,
                node=ctx.node_index,
                local_rank=ctx.local_rank,
                device_kind=device.kind,
                device_name=device.name,
                device_uuid=device.uuid,
                device_bus_id=device.bus_id,
                visible_devices=(
                    f"{ctx.visible_env}={','.join(ctx.visible_devices)}" if ctx.visible_env else ""
                ),
                status="running",
                sensors=",".join(backends),
                sensors_skipped=_json(skipped),
            ),
            windows=WindowLog(
                ctx.rank,
                clock=time.monotonic,
                sync=device.synchronize,
                state=(lambda: control.state().values()) if control is not None else None,
            ),
            control=control,
            plan=plan,
            signals=_Signals(facts),
        )
        run.spiller = run._spiller()
        return run

    def _spiller(self) -> Spiller | None:
        """This rank's spill file and the thread that fills it; None (and a warning) if the file
        cannot be made: the run goes on, only a crash would lose more."""
        from energy_hpc.spill import Spiller, SpillWriter

        rank, spill_seconds = self.ctx.rank, self.job.measure.spill_seconds
        try:
            writer = SpillWriter(
                self.plan.path(rank),
                self.header,
                self.record,
                rank=rank,
                stem=self.stem,
                spill_seconds=spill_seconds,
                cases=self.cases,
            )
        except OSError as exc:
            log.warning(
                "rank %d: cannot create spill file in %s (%s); a crash would lose this rank's data",
                rank,
                self.plan.folder,
                exc,
            )
            return None
        return Spiller(
            writer,
            spill_seconds,
            self.sampler.traces,
            lambda: to_array(list(self.windows.windows), self.offset),
            self.offset,
            time.monotonic,
        )

    def measure(self, sleep: Callable[[float], None]) -> None:
        """Sample through the idle window, every case and the cool-down, spilling as it goes.

        A failing case is recorded and the next one runs. A signal (:class:`RunInterrupted`) or a
        failure outside the cases ends the measuring: the open windows are closed as interrupted and
        it is recorded. Either way the sampler is stopped and what it holds goes on to :meth:`finish`."""
        m = self.job.measure
        try:
            # inside: a signal (or a failure) while sampling starts still reaches the gather
            self.sampler.start()
            if self.spiller:
                self.spiller.start()
            if m.idle_seconds > 0:
                log.info("idle baseline: %.1f s", m.idle_seconds)
                with self.windows.window(-1, Phase.IDLE):
                    sleep(m.idle_seconds)
            order = list(self.order or range(len(self.job.cases)))
            for position, index in enumerate(order):
                # nothing but the gather after the last case (a cool-down window wants the model freed)
                last = position == len(order) - 1 and m.cooldown_seconds <= 0
                self._case(self.job.cases[index], last=last)
                if m.cooldown_seconds > 0:  # after every case: the next one starts from the same state
                    with self.windows.window(-1, Phase.COOLDOWN, position):
                        sleep(m.cooldown_seconds)
        except RunInterrupted as exc:
            self.interrupted = exc.signame
            self.windows.interrupt_open()
            n = sum(w.status.value == "interrupted" for w in self.windows.windows)
            log.warning("interrupted by %s: %d open window(s) closed as interrupted", exc.signame, n)
        except Exception as exc:
            msg = f"outside the cases: {type(exc).__name__}: {exc}"
            log.error("rank %d: %s", self.ctx.rank, msg)
            log.debug("%s", traceback.format_exc())
            self.failures.append(msg)
            self.windows.interrupt_open()
        finally:
            self.signals.disarm()
            if self.control is not None:  # whatever ended the measuring, the device goes back as it was
                self.control.restore()
            self.sampler.stop()
            self.sampler.close_sensors()
            if self.control is not None:  # after the sampler's last reads: older amdsmi counts no inits
                self.control.close()

    def _case(self, case: Case, last: bool = False) -> None:
        """One case; its failure is recorded, never raised (one case failing must not lose the others)."""
        try:
            try:
                if self.control is not None:  # before the case's load and warm-up
                    self.control.apply(case.knobs())
                before_unload = self._freeze_for_the_end if last else None
                _run_case(self.job, case, self.device, self.windows, self.ctx.is_root, before_unload)
            finally:  # after the case, a failure or a signal (RunInterrupted unwinds through here)
                if self.control is not None:
                    self.control.restore()
        except RunInterrupted:
            raise
        except (Exception, UserError) as exc:
            msg = (
                f"case {case.index} ({case.task} {case.model} {case.dtype} bs={case.batch_size}): "
                f"{type(exc).__name__}: {exc}"
            )
            log.error("%s", msg)
            log.debug("%s", traceback.format_exc())
            self.failures.append(msg)

    def _freeze_for_the_end(self) -> None:
        """After the last case's measured windows, before its ``unload``: nothing but the gather
        follows, so the full collection ``unload`` makes (0.25 s of walking the ~400,000 objects the
        model libraries made, docs/performance.md) is spared by freezing the heap; :func:`run_job`
        lets go after the gather. A heap someone else froze is left as it is."""
        import gc

        if gc.get_freeze_count() == 0:
            gc.freeze()
            self.frozen = True

    def finish(self, keep_spills: bool) -> GatherOutcome:
        """Close this rank's record and its spill file, then the gather: rank 0 writes the run file
        and removes the spill folder, or keeps the spills that hold what the file lacks (all of them
        with ``keep_spills``)."""
        from energy_hpc.gather import RunFileNotWritten

        if self.signals.received and not self.interrupted:
            self.interrupted = self.signals.received
        traces = self.sampler.traces()
        self._close_record(traces)
        try:
            outcome = self._gather(traces)
        except RunFileNotWritten as exc:  # the spills stay: the message says how to rebuild the run
            raise OutputError(str(exc)) from None
        if self.ctx.is_root and outcome.path is not None:
            self._clean_up(outcome, keep_spills)
        return outcome

    def _gather(self, traces: Sequence[ChannelTrace]) -> GatherOutcome:
        from energy_hpc.gather import gather

        return gather(
            self.comm,
            traces=traces,
            time_offset=self.offset,
            windows=to_array(self.windows.windows, self.offset),
            rank_record=self.record,
            header=self.header,
            cases=self.cases,
            out=self.out,
            stem=self.stem,
            compression=self.job.measure.compression,
            spills=self.plan,
            interrupted=lambda: self.signals.received,
            layout=self.ctx.layout,
        )

    def _close_record(self, traces: Sequence[ChannelTrace]) -> None:
        """The rank's status and errors, into its record and its spill file's last spill."""
        lost = self.sampler.lost
        if lost:  # the sampling child died: its samples since the last spill exist only in the spill
            self.failures.append(
                f"{lost}; this rank's samples are in its spill file in {self.plan.folder}: rebuild "
                "the run with energy-hpc merge"
            )
            self.record.spill_only = True
        status = "interrupted" if self.interrupted else ("failed" if self.failures else "ok")
        if self.interrupted:
            self.record.interrupt_cause = self.signals.cause
        error = "; ".join(
            ([f"interrupted by {self.signals.described or self.interrupted}"] if self.interrupted else [])
            + self.failures
            + self.sampler.hung_notes
            + _sensor_notes(traces, self.offset)
        )
        self.record.status, self.record.error = status, error
        rows = self.windows.state_rows(self.offset)
        if rows:
            from energy_hpc.telemetry.control import STATE_FIELDS

            self.record.device_state = _json(
                {
                    "columns": ["case", "phase", "iteration", "start"]
                    + [f"{f}_start" for f in STATE_FIELDS]
                    + [f"{f}_end" for f in STATE_FIELDS],
                    "rows": rows,
                }
            )
        if self.spiller:
            self.spiller.stop(self.record)
            note = ""
            self.plan.fallback_folder = self.spiller.fallback
            if self.spiller.fallback is not None:
                note = f"its output folder was full: its spill is in {self.spiller.fallback}"
            elif self.spiller.failed:
                note = f"spilling failed: {self.spiller.failed}"
            if note:
                self.record.error = "; ".join(x for x in (error, note) if x)

    def _clean_up(self, outcome: GatherOutcome, keep_spills: bool) -> None:
        """Rank 0, once the run file is in place: the spill folder goes, but for what it must keep."""
        signals, folder = self.signals, self.plan.folder
        if signals.received_at is not None:
            log.warning(
                "run file written %.2f s after %s", time.monotonic() - signals.received_at, signals.received
            )
        if keep_spills:
            log.info("spill files kept in %s", folder)
        elif outcome.keep_spills:
            # what a missing rank, or one whose sampler died, measured is only in its spill: keep those
            for r in range(self.ctx.size):
                if r not in outcome.keep_spills:
                    self.plan.path(r).unlink(missing_ok=True)
            log.warning(
                "spill files of rank(s) %s kept in %s: they hold data the run file lacks "
                "(energy-hpc merge rebuilds the run from them)",
                ",".join(map(str, sorted(outcome.keep_spills))),
                folder,
            )
        else:
            shutil.rmtree(folder, ignore_errors=True)

    def result(self, outcome: GatherOutcome) -> RunResult:
        """What the run came to: on rank 0 the run's status, elsewhere this rank's."""
        if not self.ctx.is_root:
            status = self.record.status
            return RunResult(outcome.path, "complete" if status == "ok" else status, self.failures)
        status = "partial" if self.comm.abandoned else outcome.status
        return RunResult(outcome.path, status, self.failures)


def _open_sampler(
    job: Job,
    ctx: RankContext,
    comm: Comm,
    device: TorchDevice,
    names: tuple[str, ...],
    interval_s: float,
    process_sampler: Callable[[], ProcessSampler] | None,
) -> tuple[SamplerLike, list[str], dict[str, str], DeviceControl | None]:
    """Collective: the node leaders build the models while the sampling process starts, then every
    rank opens its sensors (in that process, or for a sampling thread here) and the control of its
    device's settings. Returns the sampler, the backends opened, those skipped (with why) and the
    control (None without one). On a failure anywhere the sampling process is ended."""
    from energy_hpc.telemetry.registry import open_sensors
    from energy_hpc.telemetry.sampler import Sampler

    measure = job.measure
    child = _spawn_sampler(measure.sampler, device.kind, process_sampler)  # starts while models prepare
    try:
        collective(comm, "models", lambda: _prepare_models(job.cases, ctx.node_leader))
        comm.barrier()  # the node leaders have built what the other ranks will load

        node_devices, owner, sharing = _node_binding(comm, ctx, device.bus_id, device.bus_id or device.uuid)
        sctx = SensorContext(
            hostname=ctx.hostname,
            local_rank=ctx.local_rank,
            node_leader=ctx.node_leader,
            visible_devices=_bound_entries(ctx, device),
            visible_env=ctx.visible_env,
            device_uuid=device.uuid,
            device_bus_id=device.bus_id,
            node_devices=node_devices,
            options=dict(measure.sensor_options),
        )
        if child is not None:
            opened_child = collective(comm, "sensors", partial(child.open, names, sctx, interval_s))
            backends = list(opened_child.backends)
            control = collective(
                comm, "device settings", lambda: _open_control(job, sctx, owner, backends, [], sharing)
            )
            return opened_child, backends, dict(opened_child.skipped), control
        opened = collective(comm, "sensors", lambda: open_sensors(names, sctx))
        backends = [s.backend for s in opened.sensors]
        control = collective(
            comm,
            "device settings",
            lambda: _open_control(job, sctx, owner, backends, opened.sensors, sharing),
        )
        sampler = Sampler(opened.sensors, interval_s)
        return sampler, backends, dict(opened.skipped), control
    except BaseException:
        if child is not None:
            child.abandon()
        raise


def _node_binding(
    comm: Comm, ctx: RankContext, bus_id: str, device_id: str
) -> tuple[tuple[str, ...], bool, int]:
    """Collective, one exchange: what the ranks of this node are bound to.

    Returns the bus ids of the node's devices (sorted; amdsmi needs them: the rank on an MI250X
    secondary GCD records the package itself only when no rank of the node holds the primary); whether
    this rank sets its device's power cap and clocks (of the ranks of a node bound to one device, the
    lowest; a rank without a known device owns what it sees); and how many ranks of the node are bound
    to that device (0 when its id is unknown). ``device_id``: the PCI bus id, else the UUID."""
    rows = comm.gather((ctx.node_index, bus_id, device_id, comm.rank), root=0)
    buses: dict[int, set[str]] = {}
    ranks: dict[tuple[int, str], list[int]] = {}
    for node, bus, dev, rank in rows or []:
        if bus:
            buses.setdefault(node, set()).add(bus)
        if dev:
            ranks.setdefault((node, dev), []).append(rank)
    buses, ranks = comm.bcast((buses, ranks) if comm.rank == 0 else None, root=0)
    mine = ranks.get((ctx.node_index, device_id), []) if device_id else []
    return tuple(sorted(buses.get(ctx.node_index, ()))), (not mine or min(mine) == comm.rank), len(mine)


def _owns_device(comm: Comm, ctx: RankContext, device_id: str) -> bool:
    """Collective: whether this rank sets its device's settings (:func:`_node_binding`)."""
    return _node_binding(comm, ctx, device_id, device_id)[1]


def _open_control(
    job: Job,
    sctx: SensorContext,
    owner: bool,
    backends: Sequence[str],
    sensors: Sequence[Any],
    sharing: int = 1,
) -> DeviceControl | None:
    """The control of the rank's device settings: an emulated part's stand-in when one was opened in
    this process, else NVML or amdsmi where that sensor opened. With cases that set a power cap or a
    clock it must exist and may change settings (checked here, before any work: ControlRefused);
    without, it only reads the device's state, and its absence is no error.

    A real device's settings are refused where ``sharing`` (the ranks of the node bound to it) is not 1:
    several ranks on one device would each measure their own case while one of them changes the
    device's setting for the next (no collective call may keep them in step while measuring), and a
    device torch gives no bus id or UUID for cannot be told apart from its neighbours'. An emulated
    part is each rank's own."""
    from energy_hpc.errors import SensorUnavailable
    from energy_hpc.telemetry.control import ControlRefused, emulated_control, open_control

    wanted = [c.knobs() for c in job.cases if c.knobs()]
    control = emulated_control(sensors)
    if control is None:
        for backend in ("nvml", "amdsmi"):
            if backend in backends:
                if wanted and sharing != 1:
                    raise ControlRefused(
                        "a case sets a power cap or clock, but this rank's device is shared with "
                        f"{sharing - 1} other rank(s) of the node; a setting applies to the whole device "
                        "while each rank measures its own case: run one rank per GPU (srun "
                        "--gpus-per-task=1) or remove the setting"
                        if sharing > 1
                        else "a case sets a power cap or clock, but torch gives no PCI bus id or UUID "
                        "for this rank's device, so the rank that owns it cannot be told; use torch "
                        ">= 2.2 or remove the setting"
                    )
                try:
                    control = open_control(backend, sctx, owner=owner)
                except SensorUnavailable as exc:
                    if wanted:
                        raise ControlRefused(f"cannot set the device's power cap or clocks: {exc}") from None
                break
    if control is None:
        if not wanted:
            return None
        what = ", ".join(f"{k} = {v}" for k, v in wanted[0].items())
        if "emulated" in backends:
            raise ControlRefused(
                f"a case sets {what}: an emulated device takes settings only when it is sampled in the "
                'rank\'s own process; set [measure] sampler = "thread"'
            )
        raise ControlRefused(
            f"a case sets {what}, but this rank has no device whose settings can be set (sensors: "
            f"{', '.join(backends) or 'none'}); run on a GPU measured through nvml or amdsmi, or remove it"
        )
    try:
        control.check(wanted)
    except BaseException:
        control.close()
        raise
    return control


def _sensor_notes(traces: Sequence[ChannelTrace], offset: float) -> list[str]:
    """One note per channel whose reads failed (the gaps stay in the trace as NaN); a channel whose
    last reads all failed is said to have stopped answering, from when."""
    import numpy as np

    notes: list[str] = []
    for t in traces:
        if not t.errors:
            continue
        note = f"sensor {t.info.name}: {t.errors} failed read(s), recorded as gaps"
        if t.info.has_power and len(t.power) and np.isnan(t.power[-1]):
            ok = np.flatnonzero(~np.isnan(t.power))
            first_bad = int(ok[-1]) + 1 if len(ok) else 0
            if len(t.power) - first_bad >= 3:
                note += f"; stopped answering at t={t.time[first_bad] - offset:.2f} s"
        notes.append(note)
    return notes


def _expected_seconds(job: Job) -> float:
    """A rough length of the run, for the disk-space check: the fixed windows plus 30 s per case load
    and 5 s per iteration (a guess: real iterations can be longer)."""
    m = job.measure
    per_case = [
        30.0
        + 5.0
        * (
            (c.warmup if c.warmup is not None else m.max_warmup if m.warmup_rule == "steady" else m.warmup)
            + (m.iterations if c.iterations is None else c.iterations)
        )
        for c in job.cases
    ]
    return m.idle_seconds + m.cooldown_seconds * len(job.cases) + sum(per_case)


def _trial_plan(job: Job, epoch_unix: float) -> tuple[list[int], dict[str, Any]]:
    """The order the cases run in, and what the run file records of it (root attributes). A random
    order without a seed in the job takes one from the run's epoch, the same on every rank."""
    m = job.measure
    seed = m.seed if m.seed is not None else int(epoch_unix * 1e6) % 2**32
    attrs: dict[str, Any] = {"trials": m.trials, "trial_order": m.trial_order}
    if m.trial_order == "random":
        attrs["trial_seed"] = seed
    return run_order(len(job.cases), m.trial_order, seed), attrs


def _warmup_rule(job: Job, c: Case) -> dict[str, Any]:
    """The /cases fields that say how the case warmed up (the warm-up windows say how many it took)."""
    m = job.measure
    if c.warmup is not None or m.warmup_rule == "fixed":
        return {"warmup_rule": f"fixed {m.warmup if c.warmup is None else c.warmup}"}
    return {"warmup_rule": f"steady {m.steady_tolerance:g} max {m.max_warmup}"}


def steady_state(seconds: Sequence[float], tolerance: float) -> bool:
    """Whether warm-up may stop: the last iteration's wall time is within ``tolerance`` (relative) of
    the one before it."""
    if len(seconds) < 2 or seconds[-2] <= 0:
        return False
    return abs(seconds[-1] - seconds[-2]) <= tolerance * seconds[-2]


def _spawn_sampler(
    mode: str, device_kind: str, process_sampler: Callable[[], ProcessSampler] | None = None
) -> ProcessSampler | None:
    """The sampling child process (started by ``process_sampler``, by default a
    :class:`~energy_hpc.telemetry.sampler_proc.ProcessSampler`), or None for an in-process thread.

    ``auto`` (the default) samples in a child process when the rank drives a GPU: the CPU has cores to
    spare and a thread would take the GIL from the inference loop 100 times a second (+2-3 %
    measured). When inference runs on the CPU and keeps every core busy, a separate process costs
    more than the thread (+6 % vs +1.2 % measured on 2 cores), so ``auto`` uses the thread there.
    The ``sampler`` setting (ENERGY_HPC_SAMPLER) overrides the job file."""
    mode = settings.current().sampler or mode
    if mode == "auto":
        mode = "process" if device_kind == "cuda" else "thread"
    if mode != "process":
        return None
    from energy_hpc.telemetry.sampler_proc import ProcessSampler

    try:
        return (process_sampler or ProcessSampler)()
    except OSError as exc:
        log.warning("cannot start the sampling process (%s); sampling in a thread instead", exc)
        return None


def _bound_entries(ctx: RankContext, device: TorchDevice) -> tuple[str, ...]:
    """The visible-devices entry of the device this rank runs on (what sensors must map to)."""
    if device.kind == "cuda" and device.index is not None and device.index < len(ctx.visible_devices):
        return (ctx.visible_devices[device.index],)
    return ctx.visible_devices


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def _case_row(c: Case) -> dict[str, Any]:
    from energy_hpc.workloads.registry import workload_class

    return {
        "task": c.task,
        "model": c.model,
        "source": c.source,
        "dtype": c.dtype,
        "batch_size": c.batch_size,
        "label": c.label,
        "unit": workload_class(c.task).unit,
        "params": case_json(c),
        "provenance": _provenance(c),
    }


def _provenance(c: Case) -> str:
    """Where the model was loaded from (folder, hub revision, random weights), as JSON."""
    from energy_hpc.errors import ModelSourceError
    from energy_hpc.workloads.models import provenance

    try:
        return _json({**provenance(c.source, c.model_path), **_n_parameters(c)})
    except (ModelSourceError, OSError) as exc:
        return _json({"source": c.source, "model": c.model_path, "error": str(exc)})


def _n_parameters(c: Case) -> dict[str, int]:
    """``{"n_parameters": N}`` of a built-in random-weight architecture; empty for other sources, whose
    weights the run does not count."""
    n = _random_parameters(c.model_path) if c.source == "random" else None
    return {} if n is None else {"n_parameters": n}


@cache
def _random_parameters(name: str) -> int | None:
    """Parameters of the built-in random architecture ``name``, counted on the meta device (no weights
    made, once per process); None for a config folder or an architecture meta tensors cannot build."""
    from energy_hpc.workloads.models import random_configs

    config = random_configs().get(name)
    if config is None:
        return None
    import torch

    try:
        with torch.device("meta"):
            modules = [make() for make in config.modules().values()]
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as exc:
        log.debug("parameters of %s not counted: %s", name, exc)
        return None
    return sum(p.numel() for m in modules for p in m.parameters())


def _resolve_device(want: str, ctx: RankContext) -> TorchDevice:
    from energy_hpc.workloads.device import resolve

    return resolve(want, ctx.bound_ordinal)


def _prepare_models(cases: tuple[Case, ...], leader: bool) -> None:
    if not leader:
        return
    from energy_hpc.workloads.registry import workload_class

    seen: set[tuple[Any, ...]] = set()
    for c in cases:
        key = (c.task, c.source, c.model_path, tuple(sorted((k, str(v)) for k, v in c.options.items())))
        if key not in seen:
            seen.add(key)
            workload_class(c.task).prepare(c)


def _run_case(
    job: Job,
    case: Case,
    device: TorchDevice,
    windows: WindowLog,
    root: bool,
    before_unload: Callable[[], None] | None = None,
) -> None:
    from energy_hpc.workloads.registry import workload_class

    warmup = job.measure.warmup if case.warmup is None else case.warmup
    steady = case.warmup is None and job.measure.warmup_rule == "steady"
    if steady:
        warmup = job.measure.max_warmup
    iterations = job.measure.iterations if case.iterations is None else case.iterations
    if root:
        log.info(
            "case %d/%d: %s %s %s batch %d: load, %d warm-up, %d measured",
            case.index + 1,
            len(job.cases),
            case.task,
            case.model,
            case.dtype,
            case.batch_size,
            warmup,
            iterations,
        )
    wl = workload_class(case.task)(case, device)
    probe = None
    try:
        with windows.window(case.index, Phase.LOAD):
            wl.load()
        if case.components != "off":
            from energy_hpc.workloads.components import Probe, find_components

            probe = Probe(find_components(wl.component_roots()), device, wl.component_steps())
        for phase, n in ((Phase.WARMUP, warmup), (Phase.MEASURE, iterations)):
            timing = probe is not None and phase is Phase.MEASURE
            seconds: list[float] = []
            for i in range(n):
                with (
                    windows.window(case.index, phase, i, unit=wl.unit) as w,
                    probe.timing() if timing and probe else nullcontext(),
                ):

                    def stage(
                        name: str, unit: str = "", _p: Phase = phase, _i: int = i
                    ) -> AbstractContextManager[Window]:
                        return windows.window(case.index, _p, _i, stage=name, unit=unit or wl.unit)

                    t0 = time.monotonic()
                    u = wl.run(i, stage)
                    w.units, w.aux_units, w.aux_unit = u.units, u.aux_units, wl.aux_unit
                if timing and probe:
                    _add_times(windows, w, probe.take_times())
                if root and phase is Phase.MEASURE:
                    log.info(
                        "  iteration %d/%d: %g %s in %.2f s",
                        i + 1,
                        n,
                        u.units,
                        wl.unit,
                        time.monotonic() - t0,
                    )
                seconds.append(w.end - w.start)
                if steady and phase is Phase.WARMUP and steady_state(seconds, job.measure.steady_tolerance):
                    if root:
                        log.info("  steady after %d warm-up iteration(s)", i + 1)
                    break
            else:
                if steady and phase is Phase.WARMUP and root:
                    log.warning(
                        "case %d: iteration time not within %g of the one before after %d warm-up "
                        "iterations (max_warmup); measuring anyway",
                        case.index,
                        job.measure.steady_tolerance,
                        n,
                    )
        if probe is not None:
            _replay_components(case, wl, probe, windows, iterations, root)
    finally:
        if probe is not None:
            probe.release()
        if before_unload is not None:
            before_unload()
        wl.unload()


def _add_times(windows: WindowLog, it: Window, times: dict[str, tuple[int, float]]) -> None:
    """The device time of each component in measured iteration ``it``: one ``timed`` row each."""
    for name, (calls, seconds) in times.items():
        windows.add(
            Window(
                rank=it.rank,
                case=it.case,
                phase=Phase.TIMED,
                iteration=it.iteration,
                start=it.start,
                end=it.end,
                stage=name,
                units=float(calls),
                unit="call",
                aux_units=seconds,
                aux_unit="s",
                status=it.status,
            )
        )


def _replay_components(
    case: Case, wl: Workload, probe: Probe, windows: WindowLog, iterations: int, root: bool
) -> None:
    """After the measured iterations: one more iteration with the components' inputs captured (its own
    ``component`` window, stage "(capture)"), then each component replayed alone in its own window of
    at least ``case.component_seconds``, the rounds counted from one timed round."""
    from energy_hpc.workloads.base import no_stages
    from energy_hpc.workloads.components import rounds_for

    timed = [w for w in windows.windows if w.case == case.index and w.phase is Phase.TIMED]
    per_iteration: dict[str, float] = {}
    for w in timed:
        per_iteration[w.stage] = per_iteration.get(w.stage, 0.0) + w.units / max(iterations, 1)
    with windows.window(case.index, Phase.COMPONENT, stage="(capture)"), probe.capture(per_iteration):
        wl.run(iterations, no_stages)
    for key in probe.replay_keys():  # a component's name, or name@tag where steps are replayed apart
        rounds = probe.replay(key)
        t0 = time.monotonic()
        try:  # one timed round, outside any window: a component that cannot run alone is left out
            rounds(1)
        except Exception as exc:
            log.warning("component %s cannot be replayed alone (%s): it stays in the residual", key, exc)
            continue
        windows.sync()
        n = rounds_for(time.monotonic() - t0, case.component_seconds)
        with windows.window(case.index, Phase.COMPONENT, stage=key, unit="call") as w:
            w.units = float(rounds(n))
            w.aux_units, w.aux_unit = probe.calls_per_iteration(key), "call/iteration"
        if root:
            log.debug("  component %s: %d calls in %.2f s", key, w.units, w.end - w.start)
