"""Precision per case: a dtype the device cannot run stops the case before anything loads; the CPU
runs all three (torch >= 2.1 has fp16 and bf16 CPU kernels for these models)."""

from __future__ import annotations

import pytest

from energy_hpc.errors import DeviceError
from energy_hpc.jobtypes import Case
from energy_hpc.workloads.device import TorchDevice
from energy_hpc.workloads.registry import TASKS, workload_class

from .conftest import job, run_case


class NoBf16(TorchDevice):
    def check_dtype(self, name: str) -> None:
        if name == "bf16":
            raise DeviceError('test GPU cannot run bf16; use dtype = "fp16" or "fp32" for this case')


@pytest.mark.parametrize("task", sorted(TASKS))
def test_unsupported_dtype_fails_before_the_model_is_touched(task: str) -> None:
    case = Case(
        index=0,
        task=task,
        model="m",
        source="local",
        model_path="/nonexistent/model",
        dtype="bf16",
        batch_size=1,
        options={k: o.default for k, o in workload_class(task).OPTIONS.items()},
    )
    wl = workload_class(task)(case, NoBf16("cuda", 0, name="test GPU"))
    with pytest.raises(DeviceError, match="cannot run bf16"):
        wl.load()  # a missing folder would raise ModelSourceError: the dtype check came first


def test_cuda_without_bf16_support_is_refused(monkeypatch) -> None:
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(DeviceError, match="cannot run bf16"):
        TorchDevice("cuda", 0, name="old GPU").check_dtype("bf16")
    TorchDevice("cuda", 0, name="old GPU").check_dtype("fp16")


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_cpu_runs_half_precisions(tiny, dtype: str) -> None:
    ran = run_case(
        job(
            f'[[case]]\ntask = "text-generation"\nmodel = "tiny-llama"\nsource = "random"\n'
            f'dtype = "{dtype}"\n[case.options]\nmax_new_tokens = 3\nprompt_tokens = 4\n'
        )
    )
    assert ran.whole().units == 3
