"""Device settings on the Slurm side: ``--gpu-freq`` (Slurm's own) and ``--gpu-power`` (Perlmutter's
plugin) rendered from the options and the system profile's data, refused where the profile lacks them,
and ``--gpu-freq`` accepted by a real slurmctld."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from energy_hpc.errors import SlurmError
from energy_hpc.slurm.render import gpu_freq_for, render
from energy_hpc.slurm.systems import data_dir, load_profile

from .test_render import bash_n, directives, req


def _gpu_profile(tmp_path: Path) -> Path:
    """generic as a 2-GPU system (the test Slurm has 2 GRES GPUs, tests/slurm/cluster.py)."""
    text = (data_dir() / "generic.toml").read_text()
    for old, new in (
        ("gpus = 0", "gpus = 2"),
        ('gpu_vendor = "none"', 'gpu_vendor = "nvidia"'),
        ("gpus_per_rank = 0", "gpus_per_rank = 1"),
        ('visible_devices = ""', 'visible_devices = "CUDA_VISIBLE_DEVICES"'),
    ):
        assert old in text
        text = text.replace(old, new)
    p = tmp_path / "gpus.toml"
    p.write_text(text)
    return p


def test_gpu_freq_is_rendered_from_a_case_clock(job_file: Path, tmp_path: Path) -> None:
    freq = gpu_freq_for({"gpu_clock_MHz": 1200, "memory_clock_MHz": 2619, "power_cap_W": 300.0})
    assert freq == "1200,memory=2619"
    r = render(load_profile(_gpu_profile(tmp_path)), req(job_file, tmp_path, nodes=1, gpu_freq=freq))
    assert "--gpu-freq=1200,memory=2619" in directives(r.script)
    assert bash_n(r.script, tmp_path).returncode == 0


def test_gpu_power_is_rendered_on_perlmutter_only(job_file: Path, tmp_path: Path) -> None:
    r = render(load_profile("perlmutter"), req(job_file, tmp_path, nodes=1, gpu_power_W=300))
    assert "--gpu-power=300" in directives(r.script)
    with pytest.raises(SlurmError, match="has no --gpu-power"):
        render(load_profile(_gpu_profile(tmp_path)), req(job_file, tmp_path, nodes=1, gpu_power_W=300))


@pytest.mark.parametrize("freq", ["1200;rm -rf /", "fast", "1200,memory=", "0"])
def test_a_bad_gpu_freq_is_refused_in_one_line(job_file: Path, tmp_path: Path, freq: str) -> None:
    with pytest.raises(SlurmError, match="not a Slurm GPU frequency"):
        render(load_profile(_gpu_profile(tmp_path)), req(job_file, tmp_path, nodes=1, gpu_freq=freq))


def test_a_system_without_gpus_refuses_gpu_freq(job_file: Path, tmp_path: Path) -> None:
    with pytest.raises(SlurmError, match="does not take --gpu-freq"):
        render(load_profile("generic"), req(job_file, tmp_path, nodes=1, gpu_freq="1200"))


@pytest.mark.slurm
def test_a_real_slurmctld_accepts_the_rendered_gpu_freq(slurm, job_file: Path, tmp_path: Path) -> None:
    """``sbatch --test-only`` asks the controller to place the job without starting it: the directive is
    parsed by sbatch and the job with its GPU request accepted. (``--gpu-power`` is an option of
    Perlmutter's SPANK plugin, which this Slurm lacks: sbatch would call it unrecognised.)"""
    r = render(
        load_profile(_gpu_profile(tmp_path)), req(job_file, tmp_path, nodes=1, gpu_freq="1200,memory=high")
    )
    script = tmp_path / "gpu-freq.sbatch"
    script.write_text(r.script)
    sb = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert sb.returncode == 0, sb.stderr
    assert "to start at" in sb.stderr  # sbatch: Job <id> to start at <time> using <n> processors ...
