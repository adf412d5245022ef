"""Malformed, truncated and hostile job files: one clear SpecError (exit status 2), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from helpers import run_cli, write_job
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energy_hpc.errors import SpecError
from energy_hpc.spec import parse_job

VALID = {
    "job": {"name": "t"},
    "measure": {"interval_ms": 10, "iterations": 2, "sensors": ["synthetic"], "spill_seconds": 30},
    "case": [
        {
            "task": "text-to-image",
            "model": "tiny-sd",
            "source": "random",
            "batch_size": [1, 2],
            "options": {"steps": 2},
        }
    ],
}

# values of every TOML type, including the awkward ones (huge, negative, NaN/inf, shell metacharacters)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "$(rm -rf /)",
            "`id`",
            "; reboot",
            "../../etc/passwd",
            "a\nb",
            "\x00",
            "*",
            "-rf",
            "fp16",
            "random",
            "auto",
            "cuda",
            "gzip",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
SECTION_KEYS = {
    "job": ["name", "description", "bogus"],
    "measure": [
        "interval_ms",
        "idle_seconds",
        "warmup",
        "iterations",
        "cooldown_seconds",
        "sensors",
        "sensor_options",
        "device",
        "spill_seconds",
        "compression",
        "intervall_ms",
    ],
    "case": [
        "task",
        "model",
        "source",
        "dtype",
        "batch_size",
        "options",
        "label",
        "warmup",
        "iterations",
        "modle",
    ],
}


@st.composite
def mutated_jobs(draw) -> dict:
    """A valid job with a few keys replaced, added or removed."""
    import copy

    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(list(SECTION_KEYS)))
        key = draw(st.sampled_from(SECTION_KEYS[section]))
        table = doc[section][0] if section == "case" else doc[section]
        if draw(st.booleans()) and key in table:
            del table[key]
        else:
            table[key] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.sampled_from(list(SECTION_KEYS)))] = draw(values)
    return doc


def _parses_or_says_why(text: str) -> None:
    try:
        parse_job(text)
    except SpecError as exc:
        msg = str(exc)
        assert (msg and "\n" not in msg.strip()) or "not valid TOML" in msg, msg
        assert len(msg) < 2000


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_jobs())
def test_mutated_job_files_parse_or_raise_one_spec_error(doc: dict) -> None:
    _parses_or_says_why(tomli_w.dumps(doc))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(tomli_w.dumps(VALID))))
def test_truncated_job_files_parse_or_raise_one_spec_error(cut: int) -> None:
    _parses_or_says_why(tomli_w.dumps(VALID)[:cut])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_one_spec_error(text: str) -> None:
    _parses_or_says_why(text)


BASE = '[job]\nname = "t"\n[measure]\nsensors = ["synthetic"]\n'
CASE = '[[case]]\ntask = "text-to-image"\nmodel = "tiny-sd"\nsource = "random"\n'


@pytest.mark.parametrize(
    "body, says",
    [
        (BASE + CASE + 'batch_size = "4"\n', "batch_size must be an integer"),
        (BASE.replace("[measure]", "[measure]\ninterval_ms = 1e300") + CASE, "out of range"),
        (BASE.replace("[measure]", "[measure]\niterations = 99999999999") + CASE, "out of range"),
        (BASE.replace("[measure]", "[measure]\nspill_seconds = 0") + CASE, "spill_seconds"),
        (BASE + CASE.replace("text-to-image", "mind-reading"), "is not one of"),
        (BASE + CASE.replace('"tiny-sd"\nsource = "random"', '"/no/such/folder"'), "does not exist"),
        ('[job]\nname = "$(rm -rf ~)"\n' + CASE, "must be 1-64 letters"),
        ('[job]\nname = "a; reboot"\n' + CASE, "must be 1-64 letters"),
        (BASE + CASE + "[case.options]\nsteps = -3\n", "steps"),
        (BASE + CASE + 'dtype = ["fp32", "fp8"]\n', "fp8"),
        (
            BASE
            + CASE
            + "batch_size = "
            + str(list(range(1, 200)))
            + "\n[case.options]\nsteps = "
            + str(list(range(1, 200)))
            + "\n",
            "cases",
        ),
        (BASE[:25], "not valid TOML"),
        ("\x00\x01\x02", "not valid TOML"),
    ],
)
def test_hand_written_bad_job_files_get_one_line_and_status_2(tmp_path: Path, body: str, says: str) -> None:
    job = write_job(tmp_path, body)
    r = run_cli("validate", str(job))
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines and lines[0].startswith("energy-hpc: error:") and says in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not r.stdout


def test_job_file_that_is_a_folder_or_missing_or_binary(tmp_path: Path) -> None:
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00garbage")
    for arg, says in (
        (str(tmp_path), "is a folder"),
        (str(tmp_path / "nope.toml"), "does not exist"),
        (str(tmp_path / "bin.toml"), "not UTF-8"),
    ):
        r = run_cli("validate", arg)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr
