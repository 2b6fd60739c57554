"""Every error the harness raises on purpose, with the exit code the command line returns.

Each message names the setting, file or folder and says what to do; the command line
(cli/main.py) prints it as one line and exits with the error's ``exit_code``: 2 for a bad
setting, folder, data file or harness file, 1 for a run that failed, 128 + the signal
number for a run stopped by SIGTERM / SIGINT. ``ValueError`` / ``RuntimeError`` stay
base classes, so code that caught those before still catches them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CheckpointError", "CompareError", "ConfigError", "CorruptionError", "DataError",
    "HarnessError", "LabelNoiseError", "NonFiniteLossError", "PerturbationError",
    "RobustnessError", "RunBusyError", "RunFileError", "RunFolderError", "RunInterrupted",
]


class HarnessError(Exception):
    """Base of the harness's errors: the command line prints the message and exits `exit_code`."""

    exit_code = 2
    # True: every process under torchrun raises it alike (a setting), so rank 0 alone prints it
    same_on_every_rank = False


# ---------------------------------------------------------------- settings (exit 2)


class ConfigError(HarnessError, ValueError):
    """A setting is unknown, has the wrong type or is out of range; the message names it."""

    same_on_every_rank = True


class CorruptionError(ConfigError):
    """Unknown corruption, severity out of range, or data of the wrong shape."""


class LabelNoiseError(ConfigError):
    """A label-noise setting cannot be applied; the message names the value."""


class PerturbationError(ConfigError):
    """A perturbation setting is out of range; the message names the value."""


class RobustnessError(ConfigError):
    """A bad suite setting, or nothing to evaluate; the message names the value."""


class CompareError(HarnessError, ValueError):
    """The comparison TOML (or an existing run folder) does not fit; the message says why."""


# ---------------------------------------------------------------- files and folders (exit 2)


class DataError(HarnessError, ValueError):
    """A data file is missing, unreadable or corrupt; the message says how to get it."""


class RunFileError(HarnessError, ValueError):
    """A harness file cannot be read or makes no sense; the message names it and says what to do."""


class CheckpointError(HarnessError, RuntimeError):
    """A checkpoint is missing, truncated, or holds more than tensors and plain data."""


class RunFolderError(ConfigError):
    """The run folder holds another run, or none to resume; the message says what to do."""


class RunBusyError(ConfigError):
    """Another process is training this run folder; the message names it and what to do."""

    holder = "another process"


# ---------------------------------------------------------------- the run itself


class NonFiniteLossError(HarnessError, RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1

    def __init__(self, epoch: int, step: int, value: float) -> None:
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(
            f"non-finite training loss ({value}) at epoch {epoch}, step {step}; the checkpoint "
            "of the last completed epoch is kept. Lower the learning rate (lr) or check the "
            "data and reparameterization settings."
        )

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries (compare --jobs)
        return (type(self), (self.epoch, self.step, self.value))


class RunInterrupted(KeyboardInterrupt):
    """A stop signal ended the work after the last checkpoint was written.

    A KeyboardInterrupt, so ``except Exception`` (e.g. around one run of a comparison)
    does not swallow it.
    """

    def __init__(self, signum: int, message: str) -> None:
        self.signum, self.message = signum, message
        super().__init__(message)

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM (the shell convention)."""
        return 128 + self.signum

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries (compare --jobs)
        return (type(self), (self.signum, self.message))

