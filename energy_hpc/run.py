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
"""

from __future__ import annotations

import logging
import shutil
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energy_hpc import settings
from energy_hpc.context import Comm, RankContext
from energy_hpc.errors import UserError
from energy_hpc.jobtypes import Case, Job, case_json
from energy_hpc.store import RunHeader, check_output_dir, estimate_run_bytes, make_spill_dir, run_file_stem
from energy_hpc.telemetry.base import SensorContext
from energy_hpc.windows import Phase, WindowLog, to_array

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


def collective(comm: Comm, what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on every rank; if it raised anywhere, raise it everywhere (only rank 0 prints it).

    Anything else than a UserError (a full quota while building a model, a CUDA error, a backend bug)
    is passed on too, with its type and its traceback logged where it happened: a rank that left
    alone would leave every other rank waiting in this gather until the job's time limit."""
    result, message = None, ""
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
    return result


@dataclass
class RunResult:
    path: Path | None
    status: str
    failures: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "complete" else 1


class _Signals:
    def __init__(self) -> None:
        self.received: str = ""
        self.received_at: float | None = None  # monotonic time of the first signal
        self.armed = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received:
            log.warning("%s received again; still writing what was measured", name)
            return
        self.received, self.received_at = name, time.monotonic()
        log.warning("%s received: closing open windows and writing what was measured", name)
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
) -> RunResult:
    """Measure ``job`` on this rank; rank 0 writes the run file into ``out``.

    Spills go to ``<out>/.<stem>.spill/`` every ``[measure] spill_seconds`` and are removed once the run
    file is in place, unless ``keep_spills`` (default: the setting, ENERGY_HPC_KEEP_SPILLS=1)."""
    from energy_hpc.gather import gather
    from energy_hpc.spill import Spiller, SpillPlan, SpillWriter, rank_spill_path
    from energy_hpc.telemetry.registry import open_sensors
    from energy_hpc.telemetry.sampler import Sampler

    measure = job.measure
    interval_s = (interval_ms or measure.interval_ms) / 1000.0
    root = ctx.is_root
    if keep_spills is None:
        keep_spills = settings.current().keep_spills

    collective(
        comm,
        "output",
        lambda: (
            check_output_dir(out, estimate_run_bytes(ctx.size, _expected_seconds(job), interval_s))
            if root
            else None
        ),
    )
    # every rank knows the run's epoch and file stem before anything is measured
    epoch_unix, stem = comm.bcast((time.time(), run_file_stem(job.name, ctx.slurm)) if root else None, root=0)
    # monotonic value at the run's epoch on this node: run time = monotonic - offset
    offset = time.monotonic() - (time.time() - epoch_unix)

    device = collective(comm, "device", lambda: _resolve_device(measure.device, ctx))
    child = _spawn_sampler(measure.sampler, device.kind)  # its interpreter starts while models prepare
    try:
        collective(comm, "models", lambda: _prepare_models(job.cases, ctx.node_leader))
        comm.barrier()  # the node leaders have built what the other ranks will load

        sctx = SensorContext(
            hostname=ctx.hostname,
            local_rank=ctx.local_rank,
            node_leader=ctx.node_leader,
            visible_devices=_bound_entries(ctx, device),
            visible_env=ctx.visible_env,
            device_uuid=device.uuid,
            device_bus_id=device.bus_id,
            node_devices=_node_devices(comm, ctx.node_index, device.bus_id),
            options=dict(measure.sensor_options),
        )
        names = sensors or measure.sensors
        if child is not None:
            sampler: Any = collective(comm, "sensors", lambda: child.open(names, sctx, interval_s))
            backends, skipped = list(sampler.backends), dict(sampler.skipped)
        else:
            opened = collective(comm, "sensors", lambda: open_sensors(names, sctx))
            sampler = Sampler(opened.sensors, interval_s)
            backends, skipped = [s.backend for s in opened.sensors], dict(opened.skipped)
    except BaseException:
        if child is not None:
            child.abandon()
        raise
    for name, why in skipped.items():
        log.debug("sensor %s not used: %s", name, why)

    # the spill folder, made once the set-up can no longer fail, is known to every rank before sampling
    spill_folder = collective(comm, "spills", lambda: str(make_spill_dir(out, stem)) if root else None)
    plan = SpillPlan(Path(comm.bcast(spill_folder, root=0)), measure.spill_seconds)

    rank_record = {
        "host": ctx.hostname,
        "node": ctx.node_index,
        "local_rank": ctx.local_rank,
        "device_kind": device.kind,
        "device_name": device.name,
        "device_uuid": device.uuid,
        "device_bus_id": device.bus_id,
        "visible_devices": f"{ctx.visible_env}={','.join(ctx.visible_devices)}" if ctx.visible_env else "",
        "status": "running",
        "error": "",
        "sensors": ",".join(backends),
        "sensors_skipped": _json(skipped),
    }
    windows = WindowLog(ctx.rank, clock=time.monotonic, sync=device.synchronize)
    run_attrs = {
        "rank": ctx.rank,
        "n_ranks": ctx.size,
        "n_nodes": ctx.n_nodes,
        "stem": stem,
        "job_name": job.name,
        "job_text": job.text,
        "job_path": job.path,
        "epoch_unix": epoch_unix,
        "launcher": ctx.launcher,
        "slurm_json": _json(ctx.slurm),
        "interval_s": interval_s,
        "spill_seconds": measure.spill_seconds,
        "host": ctx.hostname,
        "node": ctx.node_index,
        "cases_json": _json([_case_row(c) for c in job.cases]),
    }
    spiller = None
    try:
        spill_writer = SpillWriter(rank_spill_path(plan.folder, ctx.rank), run_attrs, rank_record)
    except OSError as exc:  # the run goes on; only a crash would lose more
        log.warning(
            "rank %d: cannot create spill file in %s (%s); a crash would lose this rank's data",
            ctx.rank,
            plan.folder,
            exc,
        )
    else:
        spiller = Spiller(
            spill_writer,
            measure.spill_seconds,
            sampler.traces,
            lambda: to_array(list(windows.windows), offset),
            offset,
            time.monotonic,
            ctx.rank,
            ctx.hostname,
            ctx.node_index,
        )
    signals = _Signals()
    failures: list[str] = []
    interrupted = ""
    signals.install()
    try:
        try:
            # inside: a signal (or a failure) while sampling starts still reaches the gather
            sampler.start()
            if spiller:
                spiller.start()
            if measure.idle_seconds > 0:
                log.info("idle baseline: %.1f s", measure.idle_seconds)
                with windows.window(-1, Phase.IDLE):
                    _sleep(measure.idle_seconds)
            for case in job.cases:
                try:
                    _run_case(job, case, device, windows, root)
                except RunInterrupted:
                    raise
                except (Exception, UserError) as exc:  # one case failing must not lose the others
                    msg = (
                        f"case {case.index} ({case.task} {case.model} {case.dtype} bs={case.batch_size}): "
                        f"{type(exc).__name__}: {exc}"
                    )
                    log.error("%s", msg)
                    log.debug("%s", traceback.format_exc())
                    failures.append(msg)
            if measure.cooldown_seconds > 0:
                with windows.window(-1, Phase.COOLDOWN):
                    _sleep(measure.cooldown_seconds)
        except RunInterrupted as exc:
            interrupted = exc.signame
            windows.interrupt_open()
            n = sum(w.status.value == "interrupted" for w in windows.windows)
            log.warning("interrupted by %s: %d open window(s) closed as interrupted", exc.signame, n)
        except Exception as exc:
            msg = f"outside the cases: {type(exc).__name__}: {exc}"
            log.error("rank %d: %s", ctx.rank, msg)
            log.debug("%s", traceback.format_exc())
            failures.append(msg)
            windows.interrupt_open()
        finally:
            signals.disarm()
            sampler.stop()
            sampler.close_sensors()
        if signals.received and not interrupted:
            interrupted = signals.received
        traces = sampler.traces()
        lost = getattr(sampler, "lost", "")
        if lost:  # the sampling child died: its samples since the last spill exist only in the spill
            failures.append(
                f"{lost}; this rank's samples are in its spill file in {plan.folder}: rebuild "
                "the run with energy-hpc merge"
            )
            rank_record["spill_only"] = True
        status = "interrupted" if interrupted else ("failed" if failures else "ok")
        error = "; ".join(
            ([f"interrupted by {interrupted}"] if interrupted else [])
            + failures
            + list(getattr(sampler, "hung_notes", []))
            + _sensor_notes(traces, offset)
        )
        rank_record.update(status=status, error=error)
        if spiller:
            spiller.stop(rank_record)
            if spiller.failed:
                rank_record["error"] = "; ".join(
                    x for x in (error, f"spilling failed: {spiller.failed}") if x
                )
        header = cases = None
        if root:
            header = RunHeader(
                job_name=job.name,
                job_text=job.text,
                job_path=job.path,
                epoch_unix=epoch_unix,
                n_ranks=ctx.size,
                n_nodes=ctx.n_nodes,
                launcher=ctx.launcher,
                slurm=ctx.slurm,
                interval_s=interval_s,
            )
            cases = [_case_row(c) for c in job.cases]
        outcome = gather(
            comm,
            traces=traces,
            time_offset=offset,
            windows=to_array(windows.windows, offset),
            rank_record=rank_record,
            node=ctx.node_index,
            host=ctx.hostname,
            header=header,
            cases=cases,
            out=out,
            stem=stem,
            compression=measure.compression,
            spills=plan,
            interrupted=lambda: signals.received,
        )
        path, run_status = outcome.path, outcome.status
        if root and path is not None:
            if signals.received_at is not None:
                log.warning(
                    "run file written %.2f s after %s",
                    time.monotonic() - signals.received_at,
                    signals.received,
                )
            if keep_spills:
                log.info("spill files kept in %s", plan.folder)
            elif outcome.keep_spills:
                # what a missing rank, or one whose sampler died, measured is only in its spill: keep those
                for r in range(ctx.size):
                    if r not in outcome.keep_spills:
                        rank_spill_path(plan.folder, r).unlink(missing_ok=True)
                log.warning(
                    "spill files of rank(s) %s kept in %s: they hold data the run file lacks "
                    "(energy-hpc merge rebuilds the run from them)",
                    ",".join(map(str, sorted(outcome.keep_spills))),
                    plan.folder,
                )
            else:
                shutil.rmtree(plan.folder, ignore_errors=True)
    finally:
        signals.restore()
    if comm.abandoned and root:
        run_status = "partial"
    return RunResult(path, run_status if root else ("complete" if status == "ok" else status), failures)


def _sensor_notes(traces: list, offset: float) -> list[str]:
    """One note per channel whose reads failed (the gaps stay in the trace as NaN); a channel whose
    last reads all failed is said to have stopped answering, from when."""
    import numpy as np

    notes = []
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
            (m.warmup if c.warmup is None else c.warmup)
            + (m.iterations if c.iterations is None else c.iterations)
        )
        for c in job.cases
    ]
    return m.idle_seconds + m.cooldown_seconds + sum(per_case)


def _spawn_sampler(mode: str, device_kind: str) -> Any:
    """The sampling child process, or None for an in-process thread.

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
        return ProcessSampler()
    except OSError as exc:
        log.warning("cannot start the sampling process (%s); sampling in a thread instead", exc)
        return None


def _node_devices(comm: Comm, node: int, bus_id: str) -> tuple[str, ...]:
    """Bus ids of the devices every rank of this node is bound to (sorted; empty if none known).

    amdsmi needs them: the rank on an MI250X secondary GCD records the package itself only when no
    rank of the node holds the primary."""
    pairs = comm.gather((node, bus_id), root=0)
    by_node: dict[int, list[str]] = {}
    for n, b in pairs or []:
        if b:
            by_node.setdefault(n, []).append(b)
    by_node = comm.bcast(by_node if comm.rank == 0 else None, root=0)
    return tuple(sorted(set(by_node.get(node, ()))))


def _bound_entries(ctx: RankContext, device: Any) -> tuple[str, ...]:
    """The visible-devices entry of the device this rank runs on (what sensors must map to)."""
    if device.kind == "cuda" and device.index is not None and device.index < len(ctx.visible_devices):
        return (ctx.visible_devices[device.index],)
    return ctx.visible_devices


def _json(obj: Any) -> str:
    import json

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
        return _json(provenance(c.source, c.model_path))
    except (ModelSourceError, OSError) as exc:
        return _json({"source": c.source, "model": c.model_path, "error": str(exc)})


def _resolve_device(want: str, ctx: RankContext):
    from energy_hpc.workloads.device import resolve

    return resolve(want, ctx.bound_ordinal)


def _prepare_models(cases: tuple[Case, ...], leader: bool) -> None:
    if not leader:
        return
    from energy_hpc.workloads.registry import workload_class

    seen = set()
    for c in cases:
        key = (c.task, c.source, c.model_path, tuple(sorted((k, str(v)) for k, v in c.options.items())))
        if key not in seen:
            seen.add(key)
            workload_class(c.task).prepare(c)


def _run_case(job: Job, case: Case, device: Any, windows: WindowLog, root: bool) -> None:
    from energy_hpc.workloads.registry import workload_class

    warmup = job.measure.warmup if case.warmup is None else case.warmup
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
    try:
        with windows.window(case.index, Phase.LOAD):
            wl.load()
        for phase, n in ((Phase.WARMUP, warmup), (Phase.MEASURE, iterations)):
            for i in range(n):
                with windows.window(case.index, phase, i, unit=wl.unit) as w:

                    def stage(name: str, unit: str = "", _p=phase, _i=i):
                        return windows.window(case.index, _p, _i, stage=name, unit=unit or wl.unit)

                    t0 = time.monotonic()
                    u = wl.run(i, stage)
                    w.units, w.aux_units, w.aux_unit = u.units, u.aux_units, wl.aux_unit
                if root and phase is Phase.MEASURE:
                    log.info(
                        "  iteration %d/%d: %g %s in %.2f s",
                        i + 1,
                        n,
                        u.units,
                        wl.unit,
                        time.monotonic() - t0,
                    )
    finally:
        wl.unload()
