"""Inference workloads, one module per task. Modules import torch and model libraries lazily."""

import os as _os

# Model libraries talk a lot on import and load (progress bars, advice about optional packages);
# energy-hpc's own log says what is happening. A user who wants their output sets these themselves.
for _k, _v in (
    ("TRANSFORMERS_VERBOSITY", "error"),
    ("DIFFUSERS_VERBOSITY", "error"),
    ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
    ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
):
    _os.environ.setdefault(_k, _v)
