"""What the pages share: caches of immutable shared things (cache), the per-session state (state),
the sidebar drawn once by app.py (sidebar), widgets (widgets) and background jobs (jobs).
Importing any of them ends Streamlit's pages-folder mode first (see _leave_pages_folder_mode)."""
from __future__ import annotations

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx


def _leave_pages_folder_mode() -> None:
    """Streamlit treats an app with a folder named pages/ as an old-style multipage app until
    st.navigation first runs. If a server's first request is a page's URL, that page then runs
    bare, without app.py (no sidebar, a navigation listing every file), and so does every later
    request until one opens the root URL. Every page imports this module, so it ends that mode
    on first import and reruns, this time through app.py. (Streamlit 1.67, pinned.)"""
    if PagesManager.uses_pages_directory and get_script_run_ctx() is not None:
        PagesManager.uses_pages_directory = False
        st.rerun()

_leave_pages_folder_mode()
