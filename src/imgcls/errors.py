"""Errors meant for users: each message says what is wrong and, where it can, what to do."""


class ImgclsError(ValueError):
    """Base class of every error imgcls raises on purpose (bad input, bad config, bad file)."""


class DataError(ImgclsError):
    """A data set, image file or manifest cannot be used."""


class ConfigError(ImgclsError):
    """A configuration value or file is invalid."""


class ModelError(ImgclsError):
    """An unknown model name, or weights that do not fit a model."""


class RunError(ImgclsError):
    """A run folder is missing, incomplete or cannot be written."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT) during a run whose folder exists: ``imgcls train --resume run``
    continues it from its last checkpoint. A KeyboardInterrupt still, so that whatever
    stops on Ctrl-C stops on it."""

    def __init__(self, run: object) -> None:
        super().__init__(str(run))
        self.run = run
