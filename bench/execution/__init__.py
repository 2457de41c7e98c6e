"""Execution: local worker pools, SLURM through submitit, and worker lifelines."""
