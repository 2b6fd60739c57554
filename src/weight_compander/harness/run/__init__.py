"""One training run: `train.run` over the steps in loop.py, its state as one `session.Session`,
and `restore.load_model` to rebuild a run's model from its checkpoint."""
