"""orch: YAML experiment specs -> seeded runs -> local / Slurm / Ray backends -> MLflow."""

__version__ = "0.1.0"
