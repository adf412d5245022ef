"""The built-in system data (profiles, templates, modules files) is package data: found after a
non-editable install, one copy in the checkout, and replaceable by a site's own folder."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from energy_hpc.errors import SlurmError
from energy_hpc.slurm.render import Request, SlurmOptions, render
from energy_hpc.slurm.systems import builtin_profiles, data_dir, load_profile

from .conftest import cli

REPO = Path(__file__).resolve().parents[2]


def settings_value(script: str, name: str) -> str:
    return next(ln for ln in script.splitlines() if ln.startswith(f"{name}=")).split("=", 1)[1]


@pytest.mark.parametrize("system", builtin_profiles())
def test_every_builtin_profile_names_packaged_files(system) -> None:
    profile = load_profile(system)
    assert profile.file("template") == (data_dir("templates") / profile.template).resolve()
    assert profile.file("modules") == (data_dir("modules") / profile.modules).resolve()


@pytest.mark.parametrize("system", builtin_profiles())
def test_top_level_folders_link_to_the_packaged_files(system) -> None:
    # one source: slurm/ and modules/ of a checkout are what users read, the package holds the files
    profile = load_profile(system)
    for folder, what in (("slurm", "template"), ("modules", "modules")):
        entry = REPO / folder / (profile.template if what == "template" else profile.modules)
        assert entry.is_symlink(), f"{entry} should link to the packaged file, not be a copy"
        assert entry.resolve() == profile.file("template" if what == "template" else "modules")
    assert (REPO / "slurm" / "README.md").is_file() and (REPO / "modules" / "README.md").is_file()


def test_a_site_folder_replaces_builtin_files_by_name(job_file, tmp_path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    template = (data_dir("templates") / "generic.sbatch").read_text()
    (site / "generic.sbatch").write_text(template.replace("@@{settings}", "@@{settings}\n# SITE COPY"))
    req = Request(
        job_file=job_file,
        job_name="t",
        results_dir=tmp_path / "r",
        nodes=1,
        options=SlurmOptions(templates=site),
    )
    script = render(load_profile("generic"), req).script
    assert "# SITE COPY" in script and f"# template: {site / 'generic.sbatch'}" in script
    # no modules file in the site folder: the built-in one
    assert Path(settings_value(script, "ENERGY_HPC_MODULES")) == data_dir("modules") / "generic.sh"
    (site / "generic.sh").write_text("export SITE=1\n")
    script = render(load_profile("generic"), req).script
    assert Path(settings_value(script, "ENERGY_HPC_MODULES")) == site / "generic.sh"


def test_a_missing_site_folder_is_refused(job_file, tmp_path) -> None:
    req = Request(
        job_file=job_file,
        job_name="t",
        results_dir=tmp_path / "r",
        nodes=1,
        options=SlurmOptions(templates=tmp_path / "nowhere"),
    )
    with pytest.raises(SlurmError, match="--templates"):
        render(load_profile("generic"), req)


def test_submit_templates_option(job_file, tmp_path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    template = (data_dir("templates") / "generic.sbatch").read_text()
    (site / "generic.sbatch").write_text(template.replace("@@{settings}", "@@{settings}\n# SITE COPY"))
    args = ("submit", str(job_file), "--system", "generic", "--nodes", "1", "--dry-run")
    r = cli(*args, "--templates", str(site))
    assert r.returncode == 0, r.stderr
    assert "# SITE COPY" in r.stdout
    r = cli(*args, "--templates", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "--templates" in r.stderr and r.stdout == ""


@pytest.mark.slow
def test_a_wheel_carries_the_system_data_and_submit_finds_it(job_file, tmp_path) -> None:
    # Built from a copy of the sources, so nothing is written into the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "energy_hpc", src / "energy_hpc", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(src), "-w", str(wheels)]
    if importlib.util.find_spec("setuptools") is not None:
        argv.append("--no-build-isolation")  # offline; else pip fetches the build backend
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("energy_hpc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for system in builtin_profiles():
        profile = load_profile(system)
        for want in (
            f"energy_hpc/systems/{system}.toml",
            f"energy_hpc/systems/templates/{profile.template}",
            f"energy_hpc/systems/modules/{profile.modules}",
        ):
            assert want in names, f"{want} is not in {wheel.name}"

    # Installed plainly (unpacked on the path ahead of the editable install), submit finds its data.
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    r = cli(
        "submit",
        str(job_file),
        "--system",
        "frontier",
        "--nodes",
        "1",
        "--account",
        "ABC123",
        "--dry-run",
        cwd=tmp_path,
        env={"PYTHONPATH": str(site)},
    )
    assert r.returncode == 0, r.stderr
    assert f"# template: {site / 'energy_hpc/systems/templates/frontier.sbatch'}" in r.stdout
    modules = Path(settings_value(r.stdout, "ENERGY_HPC_MODULES"))
    assert modules == site / "energy_hpc/systems/modules/frontier.sh" and modules.is_file()
