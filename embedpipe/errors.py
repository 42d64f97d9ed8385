"""One error hierarchy for embedpipe.

Every error a user can trigger is an :class:`EmbedpipeError` whose message is one
line that says what is wrong and how to fix it; the CLI prints it without a
traceback and exits with status 2.
"""

from __future__ import annotations


class EmbedpipeError(Exception):
    """Base class of every error embedpipe raises on purpose."""


class ConfigError(EmbedpipeError):
    """A configuration table, key or value is unknown, of the wrong type or out of range."""


class InputError(EmbedpipeError):
    """Input data is missing, empty or malformed (names the file and, where known, the line)."""


class SchemaError(EmbedpipeError):
    """A Parquet artifact does not have the columns and types its contract promises."""


class ArtifactVersionError(EmbedpipeError):
    """An artifact was written by an incompatible version of embedpipe."""


class StageNotFinishedError(EmbedpipeError):
    """A stage's input is missing or was never committed to the manifest."""


class TrainingDivergedError(EmbedpipeError):
    """Training produced NaN or infinite values."""


class ResourceError(EmbedpipeError):
    """The configured memory cannot hold what a task or the driver needs."""
