"""Experiment harness: data, models, training, comparison and reports for weight compander."""
