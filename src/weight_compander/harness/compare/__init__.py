"""Variants x seeds: train the missing runs (in worker processes with ``--jobs``), write
summary.json and the report; the demo and a study's status build on it."""
