"""The emulated parts as data: each part's name, the real backend it runs on, what its sensor does,
and its power levels. A leaf module (it imports nothing of the project), so the sensor registry can
list the parts without importing the emulation itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    name: str
    backend: str
    what: str
    idle_W: float
    busy_W: float
    ripple_W: float
    drift_W: float = 5.0
    # the power limit range of the part's device (W): what its stand-in allows a cap between
    min_cap_W: float = 100.0
    max_cap_W: float = 700.0


PARTS: dict[str, Part] = {
    p.name: p
    for p in (
        Part(
            "h100",
            "nvml",
            "NVIDIA H100 SXM through NVML: counter 100 ms, instant power 25 ms of every 100 ms",
            80.0,
            450.0,
            40.0,
            min_cap_W=200.0,
            max_cap_W=700.0,
        ),
        Part(
            "a100",
            "nvml",
            "NVIDIA A100 through NVML: counter refreshed every 20 ms, instant power 25 ms of every 100 ms",
            55.0,
            300.0,
            30.0,
            min_cap_W=100.0,
            max_cap_W=400.0,
        ),
        Part(
            "gh200",
            "nvml",
            "NVIDIA GH200 through NVML: module scope (Grace CPU + memory + GPU) unless GPU scope answers",
            90.0,
            600.0,
            50.0,
            min_cap_W=200.0,
            max_cap_W=900.0,
        ),
        Part(
            "mi250x",
            "amdsmi",
            "AMD MI250X package (two GCDs, one sensor) through amdsmi: 15.3 uJ ticks every 1 ms, "
            "average_socket_power a 1 s trailing mean",
            180.0,
            500.0,
            40.0,
            min_cap_W=0.0,
            max_cap_W=560.0,
        ),
        Part(
            "mi300x",
            "amdsmi",
            "AMD MI300X through amdsmi: 15.3 uJ ticks every 1 ms, current_socket_power per 1 ms",
            150.0,
            700.0,
            50.0,
            min_cap_W=0.0,
            max_cap_W=750.0,
        ),
        Part(
            "cray-ex",
            "pm_counters",
            "HPE Cray EX node (4 MI250X) through /sys/cray/pm_counters: 10 Hz scans, integer W and J",
            1100.0,
            2700.0,
            120.0,
        ),
        Part(
            "rapl",
            "rapl",
            "Intel/AMD CPU package and DRAM through powercap RAPL: uJ counter every 1 ms, wrapping",
            60.0,
            190.0,
            15.0,
        ),
    )
}
