"""energy-hpc validate: --no-models checks a job whose weights are not staged, and each case is listed
with what it will run with (every option in full, only those that take effect, empty values as what
they mean)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli, write_job

from energy_hpc.cli import main
from energy_hpc.errors import SpecError
from energy_hpc.spec import load_job
from energy_hpc.workloads.options import Option
from energy_hpc.workloads.registry import task_options, tasks

LOCAL = """
[job]
name = "t"
[[case]]
task = "text-to-image"
model = "../models/not-staged"
dtype = ["fp32", "fp16"]
"""

RANDOM = """
[job]
name = "t"
[[case]]
task = "text-to-image"
model = "tiny-sdxl"
source = "random"
"""


def _validate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["validate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_no_models_checks_a_job_whose_model_folder_is_not_staged(tmp_path: Path, capsys) -> None:
    job = write_job(tmp_path, LOCAL)
    with pytest.raises(SpecError, match="does not exist"):
        load_job(job)
    cases = load_job(job, check_models=False).cases
    assert [c.model_path for c in cases] == [str((tmp_path.parent / "models" / "not-staged").resolve())] * 2
    code, out, err = _validate(capsys, "--no-models", str(job))
    assert (code, err) == (0, "")
    assert "2 case(s)" in out and "not checked" in out and "not-staged" in out


def test_without_no_models_an_unstaged_folder_is_still_one_line_and_status_2(tmp_path: Path) -> None:
    r = run_cli("validate", str(write_job(tmp_path, LOCAL)))
    assert r.returncode == 2 and "does not exist" in r.stderr and not r.stdout
    assert len([x for x in r.stderr.splitlines() if x.strip()]) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (LOCAL + "batch_size = 0\n", "batch_size"),
        (LOCAL.replace('"fp16"', '"fp8"'), "dtype"),
        (RANDOM.replace("tiny-sdxl", "tiny-sdx"), "no built-in config"),
        (RANDOM.replace('"random"', '"hub"').replace("tiny-sdxl", "a--b/c"), "not a hub id"),
        (RANDOM + '[case.options]\nprompt_file = "missing.txt"\n', "prompt_file"),
    ],
)
def test_no_models_still_checks_everything_else(tmp_path: Path, body: str, says: str) -> None:
    with pytest.raises(SpecError, match=says):
        load_job(write_job(tmp_path, body), check_models=False)


def test_no_models_in_json_says_the_models_were_not_checked(tmp_path: Path, capsys) -> None:
    code, out, _ = _validate(capsys, "--no-models", "--json", str(write_job(tmp_path, LOCAL)))
    data = json.loads(out)
    assert code == 0 and data["models_checked"] is False and len(data["cases"]) == 2


def _options_of(out: str, case: int) -> dict[str, str]:
    """The option lines under case ``case`` of validate's listing, continuation lines joined."""
    rows: dict[str, str] = {}
    inside, key = False, ""
    for line in out.splitlines():
        if line.startswith("  ") and not line.startswith("       "):
            inside = line.split()[0] == str(case)
            continue
        if inside:
            head, _, rest = line.strip().partition(" ")
            if line[7] != " ":
                key = head
                rows[key] = rest.strip()
            else:
                rows[key] += " " + line.strip()
    return rows


def test_each_case_lists_the_options_it_runs_with_in_full(tmp_path: Path, capsys) -> None:
    long_prompt = "a prompt of many words " * 12 + "THE END"
    job = write_job(
        tmp_path,
        RANDOM
        + f'[case.options]\nprompts = ["{long_prompt}", "second"]\nheight = 512\n'
        + '[[case]]\ntask = "text-to-image"\nmodel = "tiny-sdxl"\nsource = "random"\n'
        + '[case.options]\nrefiner = "tiny-sdxl-refiner"\ndenoising_end = 0.7\n',
    )
    code, out, _ = _validate(capsys, str(job))
    assert code == 0
    plain, refined = _options_of(out, 0), _options_of(out, 1)
    assert plain["prompts"] == f'"{long_prompt}" "second"'  # whole, however long
    assert plain["height"] == "512" and plain["width"] == "the model's default"
    assert plain["seed"] == "0"  # a zero that is a value, not "the default", is shown as it is
    assert not {"refiner", "refiner_source", "denoising_end", "prompt_file"} & set(plain)
    assert refined["refiner"] == '"tiny-sdxl-refiner"' and refined["denoising_end"] == "0.7"
    assert refined["refiner_source"] == "the case's source"
    assert max(len(x) for x in out.splitlines()) <= 120


def test_an_option_replaced_by_another_is_not_listed(tmp_path: Path, capsys) -> None:
    (tmp_path / "prompts.txt").write_text("one\ntwo\n")
    code, out, _ = _validate(
        capsys, str(write_job(tmp_path, RANDOM + '[case.options]\nprompt_file = "prompts.txt"\n'))
    )
    options = _options_of(out, 0)
    assert code == 0 and "prompts" not in options
    assert options["prompt_file"] == json.dumps(str(tmp_path / "prompts.txt"))


def test_every_applicability_names_an_option_of_the_same_task() -> None:
    for task in tasks():
        schema = task_options(task)
        for name, opt in schema.items():
            for other in (opt.applies_if, opt.overridden_by):
                assert not other or (other in schema and other != name), (task, name, other)


def test_how_an_option_value_is_shown() -> None:
    blank = Option(int, 0, "h", blank="the model's default")
    assert blank.shown(0) == "the model's default" and blank.shown(64) == "64"
    assert Option(int, 0, "seed").shown(0) == "0"
    assert Option(str, "", "file").shown("") is None
    assert Option(str, "", "lang", blank="the model's default").shown("") == "the model's default"
    assert Option(bool, False, "b").shown(False) == "false"
    assert Option(str, "", "s").shown('say "hi"') == '"say \\"hi\\""'
    needs = Option(float, 0.8, "d", applies_if="refiner")
    assert not needs.applies({"refiner": ""}) and needs.applies({"refiner": "r"})
    replaced = Option(list, ["p"], "p", overridden_by="prompt_file")
    assert replaced.applies({"prompt_file": ""}) and not replaced.applies({"prompt_file": "f"})
