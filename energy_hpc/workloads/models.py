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
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from energy_hpc.errors import ModelSourceError

log = logging.getLogger(__name__)

# name -> (task, builder(folder)); builders import their libraries lazily
_BUILDERS: dict[str, tuple[str, Callable[[Path], None]]] = {}


def random_config(name: str, task: str):
    def deco(fn: Callable[[Path], None]) -> Callable[[Path], None]:
        _BUILDERS[name] = (task, fn)
        return fn
    return deco


def random_config_names() -> tuple[str, ...]:
    _load_builtin_configs()
    return tuple(sorted(_BUILDERS))


def random_config_task(name: str) -> str:
    _load_builtin_configs()
    return _BUILDERS[name][0]


def _load_builtin_configs() -> None:
    # the config modules register themselves on import; they import no heavy library at top level
    from energy_hpc.workloads import tiny_configs  # noqa: F401


def cache_dir() -> Path:
    root = os.environ.get("ENERGY_HPC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "energy-hpc")
    return Path(root)


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
    if name_or_folder not in _BUILDERS:
        raise ModelSourceError(f"no built-in config {name_or_folder!r}; choose from "
                               f"{', '.join(random_config_names())}")
    final = random_model_folder(name_or_folder)
    if (final / ".complete").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        log.info("building random-weight model %s in %s", name_or_folder, final)
        _BUILDERS[name_or_folder][1](tmp)
        (tmp / ".complete").write_text(json.dumps({"config": name_or_folder, "random_weights": True}))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / ".complete").exists():  # a broken leftover: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_hub(model_id: str) -> Path:
    """A hub id, resolved from the local cache only (compute nodes have no internet)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import LocalEntryNotFoundError
    except ImportError:
        raise ModelSourceError("source = \"hub\" needs huggingface_hub: pip install energy-hpc[stage]") from None
    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
        raise ModelSourceError(
            f"model {model_id!r} is not in the local hub cache ({type(exc).__name__}); on a login node run "
            f"`energy-hpc stage {model_id} --to DIR` and point the job at DIR/{model_id.replace('/', '--')} "
            f"with source = \"local\", or set HF_HOME to the cache that holds it") from None


def model_folder(source: str, model_path: str) -> Path:
    if source == "local":
        p = Path(model_path)
        if not p.is_dir():
            raise ModelSourceError(f"model folder {model_path!r} does not exist on this node; stage it "
                                   "on a file system the compute nodes mount")
        return p
    if source == "hub":
        return resolve_hub(model_path)
    if source == "random":
        return materialise_random(model_path)
    raise ModelSourceError(f"unknown model source {source!r}")
