"""Inference workloads, one module per task. Modules import torch and model libraries lazily."""
