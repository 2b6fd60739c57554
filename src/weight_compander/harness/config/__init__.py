"""Settings, checked by name and type: one run's (`TrainConfig`), a comparison file's and a
robustness suite's."""

from weight_compander.harness.config.settings import TrainConfig, load_config

__all__ = ["TrainConfig", "load_config"]
