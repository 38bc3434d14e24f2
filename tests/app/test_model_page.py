"""AppTest: the app opens on the bundled demo with its numbers, and model choice works."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/model.py")  # the app opens on Start; these numbers are the Model & data page's
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_opens_ready_on_the_demo(app):
    app.run()
    assert not app.exception
    assert metric(app, "Test accuracy").endswith("%")
    assert metric(app, "Parameters") == "50,610"


def test_pick_a_builtin_model_shows_its_accuracy(app):
    app.run()
    app.session_state["model_source"] = "demo:resnet"
    app.run()
    assert not app.exception and not app.error
    assert metric(app, "Parameters") == "77,754"
    assert float(metric(app, "Test accuracy").rstrip("%")) >= 97.0


def test_device_picker_offers_what_the_machine_has(app):
    from compression.core.devices import available_devices

    app.run()
    picker = app.selectbox(key="device")
    assert list(picker.options) == available_devices() and picker.value == "cpu"
    assert picker.disabled == (len(available_devices()) == 1)
    assert not app.exception and metric(app, "Test accuracy").endswith("%")
