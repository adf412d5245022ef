"""Model sources without a network: a local folder, a hub id from the local cache only, random weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from energy_hpc.errors import ModelSourceError
from energy_hpc.workloads.models import (
    architecture,
    check_random_task,
    materialise_random,
    model_folder,
    provenance,
    random_config_names,
    random_model_folder,
)


def test_missing_local_folder_names_the_staging_step(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="does not exist on this node; stage it"):
        model_folder("local", str(tmp_path / "gone"))


def test_hub_id_not_in_the_cache_names_the_stage_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache; local_files_only never connects
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelSourceError) as e:
        model_folder("hub", "org/some-model")
    msg = str(e.value)
    assert "energy-hpc stage org/some-model --to DIR" in msg and "DIR/org--some-model" in msg
    assert "--hub-cache DIR" in msg and "\n" not in msg


def _fake_hub_cache(root: Path, repo: str, commit: str) -> Path:
    """The layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/COMMIT/...}."""
    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    return snap


def test_hub_id_in_the_cache_resolves_offline_and_records_its_revision(tmp_path: Path, monkeypatch) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = _fake_hub_cache(tmp_path, "org/cached", commit)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    assert model_folder("hub", "org/cached") == snap
    assert architecture("hub", "org/cached") == "LlamaForCausalLM"
    assert provenance("hub", "org/cached") == {"source": "hub", "folder": str(snap), "revision": commit}


def test_random_model_is_built_once_and_reused(model_cache: Path) -> None:
    folder = materialise_random("tiny-vit")
    assert folder == random_model_folder("tiny-vit") and (folder / ".complete").exists()
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert materialise_random("tiny-vit") == folder
    assert (folder / "config.json").stat().st_mtime_ns == stamp
    assert provenance("random", "tiny-vit")["random_weights"] == "true"


def test_unknown_random_config_lists_the_known_ones() -> None:
    with pytest.raises(ModelSourceError, match="tiny-llama"):
        materialise_random("no-such-config")


def test_random_config_must_match_the_task() -> None:
    check_random_task("translation", "random", "tiny-t5")
    check_random_task("translation", "local", "tiny-llama")  # a folder name, not a config: not checked here
    with pytest.raises(ModelSourceError, match="'tiny-t5' is a translation model, not text-generation"):
        check_random_task("text-generation", "random", "tiny-t5")


def test_architecture_is_read_without_loading(tmp_path: Path) -> None:
    assert architecture("random", "sdxl-base") == "StableDiffusionXLPipeline"
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert architecture("local", str(tmp_path)) == "StableDiffusionPipeline"
    (tmp_path / "model_index.json").unlink()
    assert architecture("local", str(tmp_path)) == ""


def test_every_task_has_a_tiny_config() -> None:
    from energy_hpc.workloads.models import random_config_task
    from energy_hpc.workloads.registry import TASKS

    tiny_tasks = {random_config_task(n) for n in random_config_names() if n.startswith("tiny-")}
    assert tiny_tasks == set(TASKS)
