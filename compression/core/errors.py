"""Typed exceptions. Every message says what is wrong and how to fix it."""
from __future__ import annotations


class CompressionError(Exception):
    """Base of every error this library raises on purpose; its message is safe to show a user."""


class DataError(CompressionError, ValueError):
    """A data file or data set is malformed, empty, or inconsistent."""


class ModelLoadError(CompressionError):
    """A model file cannot be read, is of an unknown format, or would need unsafe unpickling."""


class ModelDataMismatch(CompressionError):
    """A model does not run on the chosen data, or its outputs do not fit the labels."""


class ConfigError(CompressionError, ValueError):
    """A method config holds an out-of-range or inconsistent value."""


class UnsupportedLayerError(CompressionError):
    """A method cannot handle any layer of the model it was given."""


class StoppedError(CompressionError):
    """Long work was stopped by its stop flag before it produced anything usable."""
