"""scripts/setup.sh decides which torch to install: TORCH_SPEC when set; on a machine with no GPU the
CPU-only build from the PyTorch index, or pip's configured index when that cannot be reached; on a GPU
machine the configured index. The decision runs for real (the GPU probe on a PATH and a device folder
made for the test, the index probe against a real HTTP server on this machine or a closed port) in
``--dry-run``, which prints the commands and installs nothing."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO

SCRIPT = REPO / "scripts" / "setup.sh"
TOOLS = ("dirname", "sed", "env")  # what the script runs besides bash builtins and python


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    """A PATH holding python3 and the few tools the script needs (no nvidia-smi, no rocminfo), and an
    empty device folder: a machine with no GPU."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "python3").symlink_to(sys.executable)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (bin_ / tool).symlink_to(found)
    (tmp_path / "dev").mkdir()
    return tmp_path


@pytest.fixture(scope="module")
def cpu_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real HTTP server on this machine standing in for the PyTorch CPU index (it has /torch/)."""
    root = tmp_path_factory.mktemp("index")
    (root / "torch").mkdir()
    (root / "torch" / "index.html").write_text("<html></html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setup(machine: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": str(machine / "bin"),
        "HOME": str(machine),
        "VENV": str(machine / "venv"),
        "SETUP_DEV_DIR": str(machine / "dev"),
        "SETUP_PROBE_TIMEOUT": "5",
    }
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def torch_commands(r: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in r.stdout.splitlines() if "pip install -q torch" in line]


def test_no_gpu_takes_the_cpu_index(machine: Path, cpu_index: str) -> None:
    r = setup(machine, "--dry-run", TORCH_CPU_INDEX=cpu_index)
    assert r.returncode == 0, r.stderr
    assert torch_commands(r) == [
        f"{machine}/venv/bin/python -m pip install -q torch==2.13.0 --index-url {cpu_index}"
    ]
    assert "CPU-only" in r.stderr and "no GPU here" in r.stderr
    assert not (machine / "venv").exists()  # a dry run makes nothing


def test_no_gpu_and_no_cpu_index_falls_back_to_the_configured_index(machine: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    r = setup(machine, "--dry-run", TORCH_CPU_INDEX=url)
    assert r.returncode == 0, r.stderr
    assert torch_commands(r) == [f"{machine}/venv/bin/python -m pip install -q torch==2.13.0"]
    assert f"{url} cannot be reached" in r.stderr and "configured index" in r.stderr


@pytest.mark.parametrize("gpu", ["nvidia-smi", "dev/nvidia0", "dev/kfd", "rocminfo"])
def test_a_gpu_takes_the_configured_index_and_says_why(machine: Path, cpu_index: str, gpu: str) -> None:
    if gpu.startswith("dev/"):
        (machine / gpu).touch()
    else:
        (machine / "bin" / gpu).write_text("#!/bin/sh\nexit 0\n")
        (machine / "bin" / gpu).chmod(0o755)
    r = setup(machine, "--dry-run", TORCH_CPU_INDEX=cpu_index)
    assert r.returncode == 0, r.stderr
    assert torch_commands(r) == [f"{machine}/venv/bin/python -m pip install -q torch==2.13.0"]
    assert ("NVIDIA" if "nvidia" in gpu else "AMD") in r.stderr and Path(gpu).name in r.stderr
    if gpu in ("dev/kfd", "rocminfo"):
        assert "TORCH_SPEC=" in r.stderr  # a CUDA build cannot use an AMD GPU: say how to get ROCm


def test_torch_spec_overrides_the_choice(machine: Path) -> None:
    spec = "torch==2.13.0 --index-url https://download.pytorch.org/whl/rocm6.2"
    r = setup(machine, "--dry-run", TORCH_SPEC=spec, TORCH_CPU_INDEX=f"http://127.0.0.1:{closed_port()}")
    assert r.returncode == 0, r.stderr
    assert torch_commands(r) == [f"{machine}/venv/bin/python -m pip install -q {spec}"]
    assert "TORCH_SPEC" in r.stderr and "cannot be reached" not in r.stderr


def test_analysis_only_installs_no_torch(machine: Path) -> None:
    r = setup(machine, EXTRAS="analysis", SETUP_DRY_RUN="1")
    assert r.returncode == 0, r.stderr
    assert torch_commands(r) == [] and "no torch" in r.stderr


def test_the_commands_in_order_quiet_and_the_editable_banner_silenced(machine: Path, cpu_index: str) -> None:
    r = setup(machine, "--dry-run", TORCH_CPU_INDEX=cpu_index)
    lines = r.stdout.splitlines()
    assert lines[0] == f"python3 -m venv {machine}/venv"
    assert [("pip install" in x) for x in lines[1:]] == [True, True, True]
    assert all(" -q " in x for x in lines[1:])
    assert lines[-1].startswith("env PYTHONWARNINGS=ignore:Editable\\ installation:UserWarning ")
    assert lines[-1].endswith("-m pip install -q -e .\\[all\\]")
    assert r.stderr.splitlines()[-1] == "setup: dry run: nothing was installed"


def test_the_editable_banner_filter_matches_the_setuptools_warning() -> None:
    """The filter setup.sh gives pip silences setuptools' editable-install banner and nothing else."""
    code = (
        "import warnings\n"
        "from setuptools.warnings import SetuptoolsWarning\n"
        "class InformationOnly(SetuptoolsWarning): pass\n"
        "warnings.warn('Editable installation.\\n!!\\n***\\nPlease be careful', InformationOnly)\n"
        "warnings.warn('something else', InformationOnly)\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore:Editable installation:UserWarning"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Editable installation" not in r.stderr and "something else" in r.stderr


def test_python_older_than_3_11_is_one_line(machine: Path) -> None:
    old = machine / "bin" / "python3.10"
    old.write_text(
        '#!/bin/sh\ncase "$*" in *version_info*) exit 1 ;; *python_version*) echo 3.10.12 ;; esac\n'
    )
    old.chmod(0o755)
    r = setup(machine, "--dry-run", PYTHON="python3.10")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "setup: energy-hpc needs Python >= 3.11; python3.10 is 3.10.12; set PYTHON to a newer one "
        "(e.g. PYTHON=python3.11)"
    ]


def test_an_unknown_argument_is_one_line_and_status_2(machine: Path) -> None:
    r = setup(machine, "--dryrun")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "--dry-run" in r.stderr


def test_the_python_floor_is_the_same_in_pyproject_readme_and_setup() -> None:
    import tomllib

    floor = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert floor == ">=3.11"
    assert "sys.version_info < (3, 11)" in SCRIPT.read_text()
    assert "Python ≥ 3.11" in (REPO / "README.md").read_text()
