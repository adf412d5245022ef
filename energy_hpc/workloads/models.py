"""Where models come from: a local folder, the hub cache (offline), or random weights from a config.

Random weights are for measuring compute where weights cannot be had (and for tests and the demo):
a built-in config is instantiated with a fixed seed, saved with ``save_pretrained`` into the cache,
and then loaded back through the same ``from_pretrained`` path as any local folder. The folder is
built under a temporary name and renamed into place, so ranks racing to build it never see half of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from energy_hpc import settings
from energy_hpc.errors import ModelSourceError
from energy_hpc.workloads.build_folder import build_folder
from energy_hpc.workloads.quiet import quiet_environment
from energy_hpc.workloads.random_registry import RANDOM_CONFIGS as _CONFIGS
from energy_hpc.workloads.random_registry import RandomConfig

log = logging.getLogger(__name__)


def random_configs() -> dict[str, RandomConfig]:
    _load_builtin_configs()
    return dict(_CONFIGS)


def random_config_names() -> tuple[str, ...]:
    return tuple(sorted(random_configs()))


def random_config_task(name: str) -> str:
    return random_configs()[name].task


def _load_builtin_configs() -> None:
    # the config modules register themselves on import; they import no heavy library at top level
    quiet_environment()
    from energy_hpc.workloads import configs  # noqa: F401


def cache_dir() -> Path:
    """Where random-weight models are built: the ``cache`` setting (ENERGY_HPC_CACHE, else
    ``$XDG_CACHE_HOME/energy-hpc``, else ``~/.cache/energy-hpc``)."""
    return settings.current().cache


def _version_key() -> str:
    from energy_hpc import __version__

    return hashlib.sha1(__version__.encode()).hexdigest()[:8]


def random_model_folder(name: str) -> Path:
    return cache_dir() / "random" / f"{name}-{_version_key()}"


def materialise_random(name_or_folder: str) -> Path:
    """Return a folder holding the model with random weights, building it once if needed."""
    p = Path(name_or_folder)
    if p.is_dir():
        return p  # a folder with configs only is loaded with random init by the workload
    _load_builtin_configs()
    if name_or_folder not in _CONFIGS:
        raise ModelSourceError(
            f"no built-in config {name_or_folder!r}; choose from {', '.join(random_config_names())}"
        )
    final = random_model_folder(name_or_folder)
    if (final / ".complete").exists():
        return final
    # built in a temporary folder that a signal or failure removes (build_folder.py), renamed into place
    with build_folder(final) as tmp:
        log.info("building random-weight model %s in %s", name_or_folder, final)
        _CONFIGS[name_or_folder].build(tmp)
        (tmp / ".complete").write_text(json.dumps({"config": name_or_folder, "random_weights": True}))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / ".complete").exists():  # a broken leftover: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    return final


def resolve_hub(model_id: str) -> Path:
    """A hub id, resolved from the local cache only (compute nodes have no internet)."""
    check_hub_id(model_id)
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import LocalEntryNotFoundError
    except ImportError:
        raise ModelSourceError(
            'source = "hub" needs huggingface_hub: pip install energy-hpc[stage]'
        ) from None
    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
        raise ModelSourceError(
            f"model {model_id!r} is not in the local hub cache ({type(exc).__name__}) and compute nodes do not "
            f"download; on a login node run `energy-hpc stage {model_id} --to DIR` and point the job at "
            f'DIR/{model_id.replace("/", "--")} with source = "local", or run `energy-hpc stage {model_id} '
            f"--hub-cache DIR` and set HF_HUB_CACHE=DIR for this run"
        ) from None


# a Hugging Face repo id, as the hub accepts it: [namespace/]name, each 1-96 of letters, digits, "_", "-"
# and ".", starting and ending with a letter, digit or "_"; no "--" or "..", no ".git" at the end
_HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
HUB_ID_RE = re.compile(rf"(?:{_HUB_PART}/)?{_HUB_PART}")


def check_hub_id(model_id: str) -> str:
    """``model_id`` when it is a valid hub repo id; else a ModelSourceError saying what is wrong."""
    if not HUB_ID_RE.fullmatch(model_id) or "--" in model_id or ".." in model_id or model_id.endswith(".git"):
        raise ModelSourceError(
            f"{model_id[:120]!r} is not a hub id: write namespace/name (e.g. stabilityai/sd-turbo), each "
            'part 1-96 letters, digits, "_", "-" or ".", with no "--" or ".."; or set source = "local" '
            "for a folder"
        )
    return model_id


def _json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (a model's config.json or model_index.json)."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise ModelSourceError(f"{str(path)!r} cannot be read ({exc.strerror})") from None
    except ValueError:  # not JSON, or not UTF-8
        raise ModelSourceError(f"{str(path)!r} is not valid JSON; copy the model folder again") from None
    if not isinstance(data, dict):
        raise ModelSourceError(
            f"{str(path)!r} holds a JSON {type(data).__name__}, not an object; copy the model folder again"
        )
    return data


def check_model_folder(folder: Path) -> None:
    """A model folder must hold what ``from_pretrained`` reads first: ``model_index.json`` (a diffusers
    pipeline) or ``config.json`` (a transformers model), each a JSON object. Checked when the job is
    validated, so an empty or broken folder stops the job before any measuring."""
    found = [folder / n for n in ("model_index.json", "config.json") if (folder / n).is_file()]
    if not found:
        raise ModelSourceError(
            f"model folder {str(folder)!r} holds neither model_index.json nor config.json, so it is not a "
            "saved model; stage the model there (energy-hpc stage MODEL --to DIR)"
        )
    for path in found:
        _json_object(path)


def model_folder(source: str, model_path: str) -> Path:
    """The local folder a case's model loads from; every workload asks for it just before loading."""
    quiet_environment()
    if source == "local":
        p = Path(model_path)
        if not p.is_dir():
            raise ModelSourceError(
                f"model folder {model_path!r} does not exist on this node; stage it "
                "on a file system the compute nodes mount"
            )
        return p
    if source == "hub":
        return resolve_hub(model_path)
    if source == "random":
        return materialise_random(model_path)
    raise ModelSourceError(f"unknown model source {source!r}")


def check_random_task(task: str, source: str, model_path: str) -> None:
    """A built-in random config belongs to one task: say so before building it for another."""
    if source != "random" or Path(model_path).is_dir():
        return
    configs = random_configs()
    if model_path in configs and configs[model_path].task != task:
        fits = sorted(n for n, c in configs.items() if c.task == task)
        raise ModelSourceError(
            f"built-in config {model_path!r} is a {configs[model_path].task} model, not "
            f"{task}; for {task} choose one of {', '.join(fits)}"
        )


def architecture(source: str, model_path: str) -> str:
    """The class a model becomes (``StableDiffusionXLPipeline``, ``LlamaForCausalLM``), read from the
    built-in config or the folder's ``model_index.json``/``config.json`` without loading weights;
    "" where the folder does not say."""
    if source == "random" and not Path(model_path).is_dir():
        configs = random_configs()
        return configs[model_path].architecture if model_path in configs else ""
    folder = model_folder(source, model_path)
    index = folder / "model_index.json"
    if index.is_file():
        return str(_json_object(index).get("_class_name", ""))
    config = folder / "config.json"
    if config.is_file():
        archs = _json_object(config).get("architectures") or [""]
        return str(archs[0]) if isinstance(archs, list) else ""
    return ""


def provenance(source: str, model_path: str) -> dict[str, str]:
    """What a run file could record about where a model came from: the folder it loaded from and,
    for hub snapshots, the commit (the snapshot folder's name)."""
    folder = model_folder(source, model_path)
    out = {"source": source, "folder": str(folder)}
    if source == "hub":
        out["revision"] = folder.name
    if source == "random":
        out["random_weights"] = "true"
    return out
