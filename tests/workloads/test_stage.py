"""energy-hpc stage: argument handling and error messages, with huggingface_hub's download stood in
for at its boundary (tests never reach the network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from energy_hpc.cli import main


@pytest.fixture
def downloads(monkeypatch) -> list[dict]:
    """Record snapshot_download calls; each 'downloads' one safetensors file where it was asked to."""
    calls: list[dict] = []

    def fake(repo_id: str, **kw):
        calls.append({"repo_id": repo_id, **kw})
        folder = Path(kw["local_dir"]) if kw.get("local_dir") else Path(kw["cache_dir"]) / "snap" / repo_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"")
        return str(folder)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake)
    return calls


def test_to_puts_each_model_in_its_own_folder_and_prints_them(downloads, tmp_path: Path, capsys) -> None:
    assert main(["stage", "org/a", "org/b", "--to", str(tmp_path)]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(tmp_path / "org--a"), str(tmp_path / "org--b")]
    assert [c["repo_id"] for c in downloads] == ["org/a", "org/b"]
    skipped = downloads[0]["ignore_patterns"]
    assert "*.bin" in skipped and "*.onnx" in skipped and downloads[0]["revision"] is None


def test_bin_and_all_files_widen_what_is_downloaded(downloads, tmp_path: Path) -> None:
    main(["stage", "org/a", "--to", str(tmp_path), "--bin", "--revision", "v1"])
    main(["stage", "org/a", "--to", str(tmp_path), "--all-files"])
    assert "*.bin" not in downloads[0]["ignore_patterns"] and downloads[0]["revision"] == "v1"
    assert downloads[1]["ignore_patterns"] is None


def test_hub_cache_fills_a_cache_for_source_hub(downloads, tmp_path: Path) -> None:
    assert main(["stage", "org/a", "--hub-cache", str(tmp_path)]) == 0
    assert downloads[0]["cache_dir"] == str(tmp_path) and "local_dir" not in downloads[0]


def test_a_destination_is_required(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["stage", "org/a"])
    assert (
        e.value.code == 2 and "one of the arguments --to --hub-cache is required" in capsys.readouterr().err
    )


def test_a_path_is_not_a_hub_id(downloads, tmp_path: Path, capsys) -> None:
    assert main(["stage", "a/b/c", "--to", str(tmp_path)]) == 2
    assert "not a hub id; write ORG/NAME" in capsys.readouterr().err and not downloads


def test_no_connection_says_to_stage_on_a_login_node(monkeypatch, tmp_path: Path, capsys) -> None:
    from huggingface_hub.utils import LocalEntryNotFoundError

    def offline(repo_id: str, **kw):
        raise LocalEntryNotFoundError("Got: ConnectError\nAn error happened while trying to locate the files")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    assert main(["stage", "org/a", "--to", str(tmp_path)]) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("energy-hpc: error:")]
    assert len(errors) == 1  # one line, naming the cause and the fix
    assert "cannot reach the hub (Got: ConnectError)" in errors[0] and "on a login node" in errors[0]
