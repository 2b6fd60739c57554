"""Experiment harness: measures what weight compander does. Its folders are the stages a run
goes through, and each imports only the stages listed before it (checked by the
import-linter contract in pyproject.toml):

- ``errors``: every error the harness raises on purpose, with its exit code.
- ``ingredients``: data sets, models, augmentation, label noise, peer reparameterizations,
  KURE, input corruptions and weight perturbations (each with its registry of names).
- ``config``: one run's settings (`TrainConfig`), a comparison file, a robustness suite.
- ``store``: the run folder on disk: atomic writes, checkpoints, locks, membership, scanning.
- ``run``: one training run (`run.train.run`) and rebuilding its model from a checkpoint.
- ``evaluate``: finished runs beyond clean accuracy (robustness.json).
- ``report``: statistics, Markdown tables and figures (report.md).
- ``compare``: variants x seeds in worker processes, summary.json, the demo, a study's status.
- ``cli``: every command-line parser and subcommand.
"""
