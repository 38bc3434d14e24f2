"""Deltas and warnings that never say the opposite of the numbers."""
import pytest

from compression.metrics.summary import chance_note, size_change


@pytest.mark.parametrize("before,after,text", [(200, 100, "2.0x smaller"), (100, 130, "1.3x larger"),
                                               (1000, 1002, "same size"), (311_016, 330_165, "1.1x larger")])
def test_size_change_names_the_direction(before, after, text):
    assert size_change(before, after) == text


def test_chance_note_only_when_a_good_model_falls_to_chance():
    assert "at chance (10% for 10 classes)" in chance_note(0.11, 10, 0.97)
    assert chance_note(0.5, 10, 0.97) is None
    assert chance_note(0.11, 10, 0.12) is None          # the baseline was already there: not this setting's doing
