"""Compression Studio's library: models, data, evaluation and compression methods. No UI here."""
__version__ = "0.1.0"
