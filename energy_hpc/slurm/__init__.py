"""Slurm: system profiles and the built-in system data (:mod:`.systems`), checks of the values that
land in a script (:mod:`.values`), sbatch scripts rendered from plain data (:mod:`.render`),
submission and job states (:mod:`.submit`), node-count sweeps in a study folder (:mod:`.sweep`).

Imports run one way: values <- systems <- render <- sweep, and submit <- sweep. Nothing here
imports torch or MPI; a login node needs only the Slurm client commands.
"""
