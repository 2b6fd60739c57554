"""Finished runs beyond clean test accuracy: input corruptions, pruning, quantization and
weight noise, written to each run's robustness.json."""
