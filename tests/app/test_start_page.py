"""AppTest: the app opens on the Start page (a three-sentence pitch, a tour of page links, a button
that picks the tour's model), and the Glossary page lists and filters the terms."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from compression.core.glossary import GLOSSARY

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TOUR = ["model", "pruning", "quantization", "sensitivity", "export"]


@pytest.fixture
def at() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120).run()
    assert not app.exception, app.exception
    return app


def links(at: AppTest) -> list[tuple[str, str]]:
    """(url path, label) of every st.page_link on the page."""
    return [(p.proto.page, p.proto.label) for p in at.get("page_link")]


def test_app_opens_on_start_with_pitch_and_tour(at):
    assert [t.value for t in at.title] == ["Compression Studio"]
    pitch = at.markdown[0].value
    assert pitch.count(". ") == 2 and pitch.endswith(".")                      # three sentences
    assert "pruning, quantization" in pitch
    shown = links(at)
    assert [page for page, _ in shown[:5]] == TOUR                               # the steps, in order
    assert [label.split(".")[0] for _, label in shown[:5]] == ["1", "2", "3", "4", "5"]
    assert shown[-1][0] == "glossary"
    assert len(at.markdown) >= 1 + len(TOUR)                                     # one hint per step


def test_tour_button_picks_the_tour_model(at):
    at.button(key="start_tour_model").click().run()
    assert not at.exception
    assert at.selectbox(key="model_source").value == "demo:resnet"
    assert any("Model in use: **demo:resnet**" in c.value for c in at.caption)
    assert not [b for b in at.button if b.key == "start_tour_model"]             # done: the button goes


def test_glossary_lists_every_term_and_filters(at):
    at.switch_page("pages/glossary.py").run()
    assert not at.exception and at.title[0].value == "Glossary"
    entries = [m.value for m in at.markdown if m.value.startswith("**")]
    assert len(entries) == len(GLOSSARY)
    terms = [e[2:].split("**")[0] for e in entries]
    assert terms == sorted(terms, key=str.lower)
    at.text_input(key="glossary_filter").set_value("kurtosis").run()
    entries = [m.value for m in at.markdown if m.value.startswith("**")]
    assert entries and all("kurtosis" in e.lower() for e in entries) and len(entries) < len(GLOSSARY)
    assert f"of {len(GLOSSARY)} terms" in at.caption[0].value
    at.text_input(key="glossary_filter").set_value("xyzzy").run()
    assert not [m for m in at.markdown if m.value.startswith("**")] and "xyzzy" in at.info[0].value


def test_glossary_link_from_a_tooltip_opens_it_filtered():
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["term"] = "SQNR"                   # what help_for's link carries
    at.switch_page("pages/glossary.py").run()
    assert not at.exception
    assert at.text_input(key="glossary_filter").value == "SQNR"
    assert [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**")] == ["SQNR"]
