"""Slurm: system profiles (:mod:`.systems`), sbatch scripts rendered from plain data
(:mod:`.render`), submission and job states (:mod:`.submit`), node-count sweeps in a study folder
(:mod:`.sweep`).

Nothing here imports torch or MPI; a login node needs only the Slurm client commands.
"""
