"""energy-hpc: measure the energy of AI inference on HPC clusters, per rank and per device."""

__version__ = "0.1.0"
