"""What a system allows: node counts, time limits per job-size bin (refused, or warned under
--force), results folders the compute nodes should not write, and the cores each rank gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from energy_hpc.errors import SlurmError, SystemProfileError
from energy_hpc.slurm.policy import NODE_CEILING, storage_warning
from energy_hpc.slurm.render import Request, SlurmOptions, render
from energy_hpc.slurm.systems import data_dir, load_profile

from .conftest import cli
from .test_render import directives, launcher


def req(job_file: Path, tmp_path: Path, nodes: int = 2, **options) -> Request:
    return Request(
        job_file=job_file,
        job_name="slurmtest",
        results_dir=tmp_path / "results",
        nodes=nodes,
        options=SlurmOptions(venv="/opt/venv", **options),
    )


def frontier(job_file: Path, tmp_path: Path, nodes: int = 2, **options):
    return render(load_profile("frontier"), req(job_file, tmp_path, nodes, account="ABC123", **options))


# -- time limits per job-size bin -----------------------------------------------------------------


def test_frontier_profile_quotes_the_published_bins() -> None:
    p = load_profile("frontier")
    assert p.max_nodes == 9856
    batch = sorted((b.nodes_min, b.nodes_max, b.time) for b in p.limits if b.partition == "batch")
    assert batch == [
        (1, 91, "02:00:00"),
        (92, 183, "06:00:00"),
        (184, 1881, "12:00:00"),
        (1882, 5644, "12:00:00"),
        (5645, 9472, "12:00:00"),
    ]


def test_three_hours_on_two_frontier_nodes_is_refused(job_file, tmp_path) -> None:
    with pytest.raises(
        SlurmError, match=r"--time 03:00:00 is longer than the 02:00:00 .*1-91 nodes.*--force"
    ):
        frontier(job_file, tmp_path, time="03:00:00")


@pytest.mark.parametrize(
    "nodes,time",
    [(2, "02:00:00"), (91, "2:00:00"), (92, "06:00:00"), (184, "12:00:00"), (9472, "12:00:00")],
)
def test_requests_within_their_bin_are_accepted(nodes, time, job_file, tmp_path) -> None:
    r = frontier(job_file, tmp_path, nodes=nodes, time=time)
    assert f"--nodes={nodes}" in directives(r.script) and r.warnings == ()


@pytest.mark.parametrize(
    "nodes,time,options,match",
    [
        (92, "06:00:01", {}, "92-183 nodes in partition batch"),
        (9500, "01:00:00", {}, "jobs of 1-9,472 nodes in partition batch, not 9,500"),
        (64, "1-00:00:00", {"partition": "extended"}, None),
        (65, "01:00:00", {"partition": "extended"}, "1-64 nodes in partition extended, not 65"),
        (1, "02:30:00", {"qos": "debug"}, "QOS debug"),
    ],
)
def test_other_bins_partitions_and_qos(nodes, time, options, match, job_file, tmp_path) -> None:
    if match is None:
        frontier(job_file, tmp_path, nodes=nodes, time=time, **options)
        return
    with pytest.raises(SlurmError, match=match):
        frontier(job_file, tmp_path, nodes=nodes, time=time, **options)


def test_a_partition_the_profile_has_no_bins_for_is_not_checked(job_file, tmp_path) -> None:
    frontier(job_file, tmp_path, time="1-00:00:00", partition="mysite")


def test_force_turns_the_refusal_into_a_warning(job_file, tmp_path) -> None:
    r = frontier(job_file, tmp_path, time="03:00:00", force=True)
    assert "--time=03:00:00" in directives(r.script)
    assert len(r.warnings) == 1 and "bin 5" in r.warnings[0] and "--force" in r.warnings[0]


def test_submit_refuses_in_one_line_and_force_warns(job_file, tmp_path) -> None:
    args = ("submit", str(job_file), "--system", "frontier", "--nodes", "2", "-A", "ABC123")
    args += ("--time", "03:00:00", "-o", str(tmp_path / "o"), "--dry-run")
    r = cli(*args)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "02:00:00" in r.stderr
    forced = cli(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "#SBATCH --time=03:00:00" in forced.stdout
    assert "submitting anyway: --force" in forced.stderr


def test_bad_bins_in_a_profile_are_refused(tmp_path) -> None:
    text = (data_dir() / "generic.toml").read_text() + '\n[[limits.bins]]\nnodes = [0, 5]\ntime = "1"\n'
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(SystemProfileError, match=r"limits.bins\[0\].nodes"):
        load_profile(str(p))


# -- node and rank counts ---------------------------------------------------------------------------


def test_more_nodes_than_the_system_has_are_refused_even_with_force(job_file, tmp_path) -> None:
    with pytest.raises(SlurmError, match="frontier has 9,856 compute nodes"):
        frontier(job_file, tmp_path, nodes=9857, force=True)


@pytest.mark.parametrize("system", ["frontier", "generic"])
def test_absurd_node_counts_are_refused_in_one_line(system, job_file, tmp_path) -> None:
    r = cli(
        "submit",
        str(job_file),
        "--system",
        system,
        "--nodes",
        "99999999999999999999",
        "-A",
        "ABC123",
        "-o",
        str(tmp_path / "o"),
        "--dry-run",
    )
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "99,999,999,999,999,999,999" in r.stderr or "99999999999" in r.stderr


def test_generic_has_a_ceiling_where_the_profile_states_no_size(job_file, tmp_path) -> None:
    with pytest.raises(SlurmError, match="more nodes than any Slurm cluster"):
        render(load_profile("generic"), req(job_file, tmp_path, nodes=NODE_CEILING + 1))
    render(load_profile("generic"), req(job_file, tmp_path, nodes=NODE_CEILING))


def test_absurd_ranks_per_node_are_refused(job_file, tmp_path) -> None:
    with pytest.raises(SlurmError, match="--ranks-per-node"):
        render(load_profile("generic"), req(job_file, tmp_path, nodes=1, ranks_per_node=10**12))
    with pytest.raises(SlurmError, match="one per core"):
        render(load_profile("perlmutter"), req(job_file, tmp_path, nodes=1, ranks_per_node=129))


def test_sweep_refuses_an_absurd_node_count(job_file, tmp_path) -> None:
    r = cli(
        "sweep",
        str(job_file),
        "--system",
        "frontier",
        "--nodes",
        "1,99999999999999999999",
        "-A",
        "ABC123",
        "--study",
        str(tmp_path / "s"),
        "--dry-run",
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "s").exists()


# -- cores per rank ---------------------------------------------------------------------------------


def test_all_cores_gives_the_reclaimed_cores_to_the_ranks(job_file, tmp_path) -> None:
    default = frontier(job_file, tmp_path)
    assert "--cpus-per-task=7" in directives(default.script)
    allc = frontier(job_file, tmp_path, enable=("all-cores",))
    d = directives(allc.script)
    assert "--core-spec=0" in d and "--cpus-per-task=8" in d and "--cpus-per-task=7" not in d
    assert launcher(allc.script).startswith("srun -N 2 -n 16 -c 8 ")
    four = frontier(job_file, tmp_path, enable=("all-cores",), ranks_per_node=4)
    assert "--cpus-per-task=16" in directives(four.script)
    assert launcher(four.script).startswith("srun -N 2 -n 8 -c 16 ")


# -- where results go -------------------------------------------------------------------------------


def test_results_under_frontier_home_are_warned_about_with_where_to_write(job_file, tmp_path) -> None:
    p = load_profile("frontier")
    w = storage_warning(
        p, Path("/ccs/home/alice/results/demo"), "ABC123", {"MEMBERWORK": "/lustre/orion/scratch/alice"}
    )
    assert w is not None and "/ccs/home" in w
    assert "$MEMBERWORK/abc123 (/lustre/orion/scratch/alice/abc123)" in w
    assert "-o /lustre/orion/scratch/alice/abc123/demo" in w
    assert storage_warning(p, Path("/lustre/orion/abc123/scratch/alice/demo"), "ABC123", {}) is None
    assert storage_warning(p, Path("/ccs/homework/demo"), "ABC123", {}) is None  # a prefix, not a folder


def test_perlmutter_global_common_is_read_only(job_file, tmp_path) -> None:
    w = storage_warning(load_profile("perlmutter"), Path("/global/common/software/m1/out"), "", {})
    assert w is not None and "cannot write" in w and "$SCRATCH" in w


def test_a_link_to_a_listed_folder_is_recognised(tmp_path) -> None:
    real = tmp_path / "real-home"
    (real / "alice").mkdir(parents=True)
    link = tmp_path / "home"
    link.symlink_to(real)
    text = (data_dir() / "generic.toml").read_text() + f'\n[storage]\nread_only = ["{link}"]\n'
    p = tmp_path / "site.toml"
    p.write_text(text)
    w = storage_warning(load_profile(str(p)), real / "alice" / "out", "", {})
    assert w is not None and str(link) in w


def test_submit_warns_about_a_home_results_folder(job_file, tmp_path) -> None:
    r = cli(
        "submit",
        str(job_file),
        "--system",
        "frontier",
        "--nodes",
        "1",
        "-A",
        "ABC123",
        "-o",
        "/ccs/home/alice/results",
        "--dry-run",
        env={"MEMBERWORK": "/lustre/orion/scratch/alice"},
    )
    assert r.returncode == 0, r.stderr
    assert "/ccs/home" in r.stderr and "/lustre/orion/scratch/alice/abc123" in r.stderr


# -- the log folder of a --dry-run script -----------------------------------------------------------


@pytest.mark.parametrize("system", ["frontier", "generic", "perlmutter"])
def test_the_script_opens_its_log_where_sbatch_runs_and_makes_the_results_folder(
    system, job_file, tmp_path
) -> None:
    r = render(load_profile(system), req(job_file, tmp_path, account="abc123_g"))
    d = directives(r.script)
    assert "--output=slurm-%x-%j.out" in d
    assert not any(x.startswith("--chdir") for x in d)
    assert 'mkdir -p "$ENERGY_HPC_OUT"\ncd "$ENERGY_HPC_OUT"' in r.script
    assert r.log_pattern == f"{tmp_path / 'results'}/slurm-%x-%j.out"


def test_dry_run_says_the_script_makes_the_results_folder(job_file, tmp_path) -> None:
    out = tmp_path / "out"
    r = cli("submit", str(job_file), "--system", "generic", "--nodes", "1", "-o", str(out), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "makes" in r.stderr and str(out) in r.stderr and "sbatch" in r.stderr
    assert not out.exists()
