"""energy-hpc stage: download models on a login node, for compute nodes that have no internet.

``energy-hpc stage ORG/NAME ... --to DIR`` puts each model in its own plain folder,
``DIR/ORG--NAME``, that a job names with ``source = "local"`` (the default). ``--hub-cache DIR`` fills
a Hugging Face hub cache instead, for jobs that name hub ids with ``source = "hub"`` (run them with
``HF_HUB_CACHE=DIR``). stdout lists the staged folders, one a line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from energy_hpc.errors import ModelSourceError, SpecError

HELP = "download models (hub ids) into folders the compute nodes can read; run it where there is internet"

log = logging.getLogger(__name__)

# Formats no workload loads (ONNX, OpenVINO, Flax, TensorFlow, Rust, single-file checkpoints): skipping
# them keeps SDXL at ~14 GB instead of ~70 GB. --all-files takes everything.
SKIP = (
    "*.onnx",
    "*.onnx_data",
    "*.pb",
    "openvino*",
    "*.msgpack",
    "flax_model*",
    "tf_model*",
    "*.h5",
    "*.ot",
    "rust_model*",
    "*.ckpt",
    "*.tflite",
    "coreml*",
    "*.mlmodel*",
)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "models", nargs="+", metavar="MODEL", help="hub ids, e.g. stabilityai/stable-diffusion-xl-base-1.0"
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--to", metavar="DIR", help='one plain folder per model: DIR/ORG--NAME (source = "local")'
    )
    where.add_argument(
        "--hub-cache",
        metavar="DIR",
        help='a hub cache for source = "hub" (set HF_HUB_CACHE=DIR on the compute nodes)',
    )
    p.add_argument("--revision", help="branch, tag or commit (default: main); the same for every model")
    p.add_argument(
        "--all-files",
        action="store_true",
        help=f"also download formats no workload loads ({', '.join(SKIP[:4])}, ...)",
    )
    p.add_argument(
        "--bin", action="store_true", help="also download PyTorch .bin weights next to .safetensors"
    )


def folder_name(model_id: str) -> str:
    """The folder ``--to`` stages a hub id into (``/`` cannot appear in one path component)."""
    return model_id.strip("/").replace("/", "--")


def _check_id(model_id: str) -> str:
    parts = model_id.strip("/").split("/")
    if not 1 <= len(parts) <= 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise SpecError(
            f"model {model_id!r} is not a hub id; write ORG/NAME, e.g. "
            "stabilityai/stable-diffusion-xl-base-1.0"
        )
    return model_id.strip("/")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def run(args: argparse.Namespace) -> int:
    ids = [_check_id(m) for m in args.models]
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise ModelSourceError("staging needs huggingface_hub: pip install energy-hpc[stage]") from None
    ignore = [] if args.all_files else list(SKIP)
    if not args.bin and not args.all_files:
        ignore.append("*.bin")
    for model_id in ids:
        kwargs: dict[str, Any] = {"revision": args.revision, "ignore_patterns": ignore or None}
        if args.to:
            kwargs["local_dir"] = Path(args.to) / folder_name(model_id)
        else:
            kwargs["cache_dir"] = args.hub_cache
        log.info("staging %s", model_id)
        try:
            folder = Path(snapshot_download(model_id, **kwargs))
        except LocalEntryNotFoundError as exc:  # no connection (or HF_HUB_OFFLINE set)
            raise ModelSourceError(
                f"cannot download {model_id!r}: this node cannot reach the hub "
                f"({_first_line(exc)}); run "
                "`energy-hpc stage` on a login node that has internet, and unset "
                "HF_HUB_OFFLINE there"
            ) from None
        except HfHubHTTPError as exc:  # unknown repo, gated model, bad revision, server error
            raise ModelSourceError(
                f"cannot download {model_id!r}: {_first_line(exc)}; check the id and revision, "
                "and for "
                "gated models accept the licence on the hub and log in "
                "(hf auth login)"
            ) from None
        if not any(folder.rglob("*.safetensors")) and not args.bin and not args.all_files:
            log.warning("%s has no .safetensors weights; stage it again with --bin", model_id)
        print(folder, flush=True)
    return 0
