"""Job files: parsing, validation messages, sweep expansion."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli, write_job
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_hpc.errors import SpecError
from energy_hpc.spec import load_job, parse_job

BASE = """
[job]
name = "t"
[measure]
iterations = 2
[[case]]
task = "text-to-image"
model = "tiny-sd"
source = "random"
"""


def test_list_values_expand_into_the_cross_product() -> None:
    job = parse_job(
        BASE + 'dtype = ["fp32", "bf16"]\nbatch_size = [1, 2, 4]\n[case.options]\nsteps = [2, 3]\n'
    )
    assert len(job.cases) == 2 * 3 * 2
    combos = {(c.dtype, c.batch_size, c.options["steps"]) for c in job.cases}
    assert ("bf16", 4, 3) in combos and len(combos) == 12
    assert [c.index for c in job.cases] == list(range(12))


def test_list_typed_option_is_not_a_sweep() -> None:
    job = parse_job(BASE + '[case.options]\nprompts = ["a", "b", "c"]\n')
    assert len(job.cases) == 1
    assert job.cases[0].options["prompts"] == ["a", "b", "c"]


def test_defaults_fill_unspecified_options() -> None:
    job = parse_job(BASE)
    c = job.cases[0]
    assert c.dtype == "fp32" and c.batch_size == 1 and c.options["steps"] == 30
    assert job.measure.sensors == ("auto",) and job.measure.iterations == 2


@pytest.mark.parametrize(
    "snippet, expected",
    [
        ("[measure]\niteratons = 3\n", "did you mean 'iterations'"),
        (
            '[[case]]\ntask = "text-to-image"\nmodel = "tiny-sd"\nsource = "random"\nbatch_sise = 2\n',
            "did you mean 'batch_size'",
        ),
        ('[[case]]\ntask = "text-to-imag"\nmodel = "x"\n', "did you mean 'text-to-image'"),
        (
            '[[case]]\ntask = "text-to-image"\nmodel = "tiny-sd"\nsource = "random"\nbatch_size = "2"\n',
            "batch_size must be an integer",
        ),
        (
            '[[case]]\ntask = "text-to-image"\nmodel = "tiny-sd"\nsource = "random"\ndtype = "fp8"\n',
            "is not one of fp32, fp16, bf16",
        ),
        (
            '[[case]]\ntask = "text-to-image"\nmodel = "tiny-sd"\nsource = "random"\n[case.options]\nsteps = -1\n',
            "out of range",
        ),
        (
            '[[case]]\ntask = "text-to-image"\nmodel = "tiny-sd"\nsource = "random"\n[case.options]\nstep = 3\n',
            "did you mean 'steps'",
        ),
        ('[[case]]\ntask = "text-to-image"\nmodel = "no/such/folder"\n', "does not exist"),
        ('[[case]]\ntask = "text-to-image"\nmodel = "tny-sd"\nsource = "random"\n', "did you mean 'tiny-sd'"),
        ('[case]\ntask = "text-to-image"\nmodel = "x"\n', "write [[case]], not [case]"),
        (
            '[measure]\nsensors = ["nvmll"]\n[[case]]\ntask = "text-to-image"\nmodel = "tiny-sd"\nsource = "random"\n',
            "did you mean 'nvml'",
        ),
        ("[measure]\ninterval_ms = 0\n", "out of range"),
    ],
)
def test_bad_job_files_name_the_problem(snippet: str, expected: str) -> None:
    with pytest.raises(SpecError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        parse_job('[job]\nname = "t"\n' + snippet)


def test_job_name_must_be_file_name_safe() -> None:
    with pytest.raises(SpecError, match="job\\] name"):
        parse_job(BASE.replace('name = "t"', 'name = "a b/$(x)"'))


def test_invalid_toml_is_one_clear_error() -> None:
    with pytest.raises(SpecError, match="not valid TOML"):
        parse_job("[job\nname=")


def test_local_model_resolves_against_the_job_file_folder(tmp_path: Path) -> None:
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "config.json").write_text("{}")  # a saved model: validation checks it
    job = write_job(tmp_path, '[job]\nname = "t"\n[[case]]\ntask = "text-to-image"\nmodel = "models/m"\n')
    assert load_job(job).cases[0].model_path == str((tmp_path / "models" / "m").resolve())


def test_missing_job_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_job(tmp_path / "nope.toml")


def test_cli_reports_bad_job_in_one_line_with_status_2(tmp_path: Path) -> None:
    job = write_job(tmp_path, '[job]\nname = "t"\n[[case]]\ntask = "no-such-task"\nmodel = "x"\n')
    r = run_cli("validate", str(job))
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "no-such-task" in lines[0] and "text-to-image" in lines[0]
    assert r.stdout == ""


def test_cli_run_rejects_missing_model_folder_before_work(tmp_path: Path) -> None:
    job = write_job(tmp_path, '[job]\nname = "t"\n[[case]]\ntask = "text-to-image"\nmodel = "gone"\n')
    r = run_cli("run", str(job), "-o", str(tmp_path / "out"))
    assert r.returncode == 2
    assert "model folder" in r.stderr and "does not exist" in r.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.h5"))


_values = st.recursive(
    st.one_of(st.integers(-(10**12), 10**12), st.floats(allow_nan=True), st.text(max_size=20), st.booleans()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    measure=st.dictionaries(
        st.sampled_from(["interval_ms", "idle_seconds", "warmup", "iterations", "sensors", "device", "x"]),
        _values,
        max_size=4,
    ),
    case=st.dictionaries(
        st.sampled_from(["task", "model", "source", "dtype", "batch_size", "options", "y"]),
        _values,
        max_size=6,
    ),
)
def test_any_structure_gives_a_job_or_a_spec_error(measure: dict, case: dict) -> None:
    """Whatever the (decoded) TOML holds, parsing ends in a Job or a SpecError, never another exception."""
    import tomli_w

    try:
        text = tomli_w.dumps({"job": {"name": "h"}, "measure": measure, "case": [case]})
    except (TypeError, ValueError):
        return  # not representable as TOML
    try:
        parse_job(text)
    except SpecError:
        pass


def test_random_config_of_another_task_is_rejected_at_validation() -> None:
    with pytest.raises(SpecError, match="is a text-generation model"):
        parse_job(BASE.replace('model = "tiny-sd"', 'model = "tiny-llama"'))


def test_path_options_resolve_against_the_job_file_folder(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("a prompt\n")
    job = write_job(
        tmp_path, BASE + '[case.options]\nprompt_file = "prompts.txt"\nrefiner = "tiny-sdxl-refiner"\n'
    )
    opts = load_job(job).cases[0].options
    assert opts["prompt_file"] == str((tmp_path / "prompts.txt").resolve())
    assert opts["refiner"] == "tiny-sdxl-refiner"  # not a path here: left as written (a config name)


def test_sensor_options_are_those_the_backend_row_lists() -> None:
    """A backend's accepted options come from its registry row: another key is refused with a
    did-you-mean; a row that lists none accepts any key."""
    from energy_hpc.telemetry.registry import Backend, registered

    job = BASE.replace(
        "iterations = 2", 'iterations = 2\nsensors = ["site"]\n[measure.sensor_options.site]\nrate = 1'
    )
    with registered(Backend("site", "site.power", False, "a site's own meter", options=("rates",))):
        with pytest.raises(
            SpecError, match=r"\[measure.sensor_options.site\]: unknown key 'rate' \(did you mean 'rates'\?\)"
        ):
            parse_job(job)
    with registered(Backend("site", "site.power", False, "a site's own meter")):
        assert parse_job(job).measure.sensor_options == {"site": {"rate": 1}}


def test_line_breaks_only_in_free_text() -> None:
    """Tab and line breaks are allowed in the description and in task options' text (a prompt of
    several lines), nowhere else; other control characters nowhere."""
    job = parse_job(
        BASE.replace('name = "t"', 'name = "t"\ndescription = "a\\n\\tb"')
        + '[case.options]\nprompts = ["line one\\nline two"]\n'
    )
    assert job.description == "a\n\tb" and job.cases[0].options["prompts"] == ["line one\nline two"]
    with pytest.raises(
        SpecError, match=r"\[\[case\]\] #1 label: 'a\\tb' holds the control character U\+0009"
    ):
        parse_job(BASE + 'label = "a\\tb"\n')
    with pytest.raises(SpecError, match=r"options.prompts\[0\]: .* U\+0007"):
        parse_job(BASE + '[case.options]\nprompts = ["\\u0007"]\n')
