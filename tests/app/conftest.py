"""AppTest runs the app the way a Streamlit server does."""
from __future__ import annotations

import pytest
from streamlit.runtime.pages_manager import PagesManager


class _ServerPagesManager(PagesManager):
    """PagesManager as a server keeps it. Before every run AppTest sets
    `PagesManager.uses_pages_directory = None`, so with a folder named pages/ each run after
    the first takes Streamlit's old pages-folder path and runs the page script bare, without
    app.py and the sidebar it draws. A server decides that once per process, and st.navigation
    (or the ui package, on first import) turns it off for good. Here AppTest's reset lands on
    this subclass, not on the flag Streamlit reads."""


@pytest.fixture(autouse=True)
def _runs_through_app_py(monkeypatch):
    monkeypatch.setattr("streamlit.testing.v1.app_test.PagesManager", _ServerPagesManager)
