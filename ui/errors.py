"""Errors shown in the app: a library error's own message, anything else as one line (never a traceback)."""
from __future__ import annotations

import streamlit as st

from compression.core.errors import CompressionError


def error_message(exc: Exception, what: str = "That did not work") -> str:
    """A short message, never a traceback. Unexpected errors are named, not dumped."""
    if isinstance(exc, CompressionError):
        return f"{what}: {exc}"
    if isinstance(exc, MemoryError):
        return f"{what}: out of memory. Try a smaller model, data file or batch."
    return f"{what}: unexpected {type(exc).__name__}: {str(exc)[:300]}"


def show_error(exc: Exception, what: str = "That did not work") -> None:
    """error_message(exc, what) as an error box."""
    st.error(error_message(exc, what))
