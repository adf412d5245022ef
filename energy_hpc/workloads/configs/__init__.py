"""Built-in architectures for random weights, one module per family; each registers its configs with
:func:`energy_hpc.workloads.random_registry.register_random` on import. ``tiny-*`` are real architectures at toy
sizes for tests, the demo and the smoke-test job; the others follow published models."""

from energy_hpc.workloads.configs import diffusion, ladder, language, speech, vision  # noqa: F401
