"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


class RnnappsError(Exception):
    """Base class for errors caused by input, data or configuration, not by a bug."""


class DataNotFoundError(RnnappsError, FileNotFoundError):
    """A dataset is neither in the local data directory nor downloadable."""


class ConfigError(RnnappsError, ValueError):
    """An unknown or ill-typed configuration key or value."""


class TrainingError(RnnappsError):
    """Training cannot go on (for example, the loss became NaN)."""


class ExportError(RnnappsError):
    """A model cannot be exported or an export cannot be found."""


class DataFormatError(RnnappsError, ValueError):
    """A data file is malformed; the message names the file and the line."""
