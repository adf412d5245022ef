"""What a validated job file becomes: a :class:`Job` with its :class:`Measure` settings and its expanded
:class:`Case` list, and the fixed choices a job file can make (dtypes, model sources, devices).

These are plain frozen records. This module imports nothing of energy_hpc, so the workloads, the runner
and the stores can all use the types; reading and checking job files is :mod:`energy_hpc.spec`, which
asks the task and sensor registries what is allowed.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DTYPES = ("fp32", "fp16", "bf16")
SOURCES = ("local", "hub", "random")
DEVICES = ("auto", "cpu", "cuda")
SAMPLERS = ("auto", "process", "thread")
COMPRESSIONS = ("none", "gzip", "lzf")
TRIAL_ORDERS = ("random", "sequential")
WARMUP_RULES = ("fixed", "steady")
# [case] components: "off"; "blocks": each model part (embeddings, each layer's attention and MLP, heads,
# text encoders, UNet blocks, VAE decoder) timed in the measured iterations and replayed alone; "detail":
# the same, with a UNet's blocks split by layer type and each call told by its step (prefill / decode,
# first / middle / last denoising step)
COMPONENT_MODES = ("off", "blocks", "detail")
# the device settings a case can sweep (Case fields of the same names): power limit in W, SM and memory
# clocks in MHz
KNOBS = ("power_cap_W", "gpu_clock_MHz", "memory_clock_MHz")
# a job name becomes part of file names
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# the most cases one job file may expand into
MAX_CASES = 10_000
# the largest batch a case may ask for. The built-in tasks stop gaining throughput well below it on
# current accelerators, and their inputs and activations for a larger batch at default sizes do not
# fit one device's memory; a value beyond it is a typo that would otherwise be found only after the
# idle baseline, when the inputs are allocated (65,536 text-to-image latents are 4 GiB before the model)
MAX_BATCH_SIZE = 4096
# the most levels of tables and arrays a job file may nest (the deepest a job needs is six:
# [measure.sensor_options.amdsmi] packages = [["...", "..."]])
MAX_DEPTH = 16


@dataclass(frozen=True)
class Measure:
    interval_ms: float = 10.0
    idle_seconds: float = 2.0
    warmup: int = 1
    iterations: int = 3
    cooldown_seconds: float = 0.0
    sensors: tuple[str, ...] = ("auto",)
    sensor_options: Mapping[str, Any] = field(default_factory=dict)
    device: str = "auto"
    spill_seconds: float = 60.0
    compression: str = "none"
    # "process": a sampling child process (no GIL contention; best when inference runs on a GPU);
    # "thread": in this process (best when inference keeps every CPU core busy); "auto": by device
    sampler: str = "auto"
    # every case runs ``trials`` times; TRIAL_ORDERS: "random" shuffles all (case, trial) runs with
    # ``seed`` (None: drawn from the run's epoch and recorded), "sequential" runs trial 0 of every case,
    # then trial 1, ...
    trials: int = 1
    trial_order: str = "sequential"
    seed: int | None = None
    # WARMUP_RULES: "fixed" runs ``warmup`` warm-up iterations; "steady" runs them until the wall time of
    # one iteration is within ``steady_tolerance`` (relative) of the one before, at most ``max_warmup``
    warmup_rule: str = "fixed"
    steady_tolerance: float = 0.05
    max_warmup: int = 20


@dataclass(frozen=True)
class Case:
    """One measured configuration. The unit of its task is the workload class's
    (:func:`energy_hpc.workloads.registry.task_unit`)."""

    index: int
    task: str
    model: str  # as written in the job file
    source: str  # local | hub | random
    model_path: str  # resolved local folder (local), hub id (hub) or config name/folder (random)
    dtype: str
    batch_size: int
    options: Mapping[str, Any]
    label: str = ""
    warmup: int | None = None
    iterations: int | None = None
    components: str = "off"  # COMPONENT_MODES
    component_seconds: float = 2.0  # shortest replay window of one component (s)
    trial: int = 0  # which repeat of its configuration ([measure] trials); not a parameter: trials pool
    # device settings applied for the case and restored after it (None: left as the device has it)
    power_cap_W: float | None = None  # power limit (W)
    gpu_clock_MHz: int | None = None  # SM/graphics clock locked to this value (MHz)
    memory_clock_MHz: int | None = None  # memory clock locked to this value (MHz)

    def knobs(self) -> dict[str, float | int]:
        """The device settings the case asks for (``power_cap_W``, ``gpu_clock_MHz``,
        ``memory_clock_MHz``), only those set."""
        values = {n: getattr(self, n) for n in KNOBS}
        return {n: v for n, v in values.items() if v is not None}

    def params(self) -> dict[str, Any]:
        """The parameters that identify the case in tables (JSON-serialisable)."""
        label = {"label": self.label} if self.label else {}
        if self.components != "off":  # hooks in the measured iterations: not the same measurement
            label["components"] = self.components
        return {
            "task": self.task,
            "model": self.model,
            "source": self.source,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            **label,
            **dict(self.options),
            **self.knobs(),  # only when set: rows and file identities of other cases stay as they were
        }


@dataclass(frozen=True)
class Job:
    name: str
    description: str
    measure: Measure
    cases: tuple[Case, ...]
    path: str
    text: str


def case_json(case: Case) -> str:
    """The case's parameters as JSON with sorted keys (what run files store)."""
    return json.dumps(case.params(), sort_keys=True)


def run_order(cases: int, trial_order: str, seed: int) -> list[int]:
    """The case indices in the order they run: as written (``sequential``), or shuffled by ``seed``
    (``random``) so that drift over the run is not confounded with the sweep."""
    order = list(range(cases))
    if trial_order == "random":
        random.Random(seed).shuffle(order)
    return order
