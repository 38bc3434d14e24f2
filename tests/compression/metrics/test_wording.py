"""Deltas and warnings that never say the opposite of the numbers."""
import pandas as pd
import pytest

from compression.metrics.summary import chance_note, distillation_note, int8_size_note, ranking_note, size_change


@pytest.mark.parametrize("before,after,text", [(200, 100, "2.0x smaller"), (100, 130, "1.3x larger"),
                                               (1000, 1002, "same size"), (311_016, 330_165, "1.1x larger")])
def test_size_change_names_the_direction(before, after, text):
    assert size_change(before, after) == text


def test_chance_note_only_when_a_good_model_falls_to_chance():
    assert "at chance (10% for 10 classes)" in chance_note(0.11, 10, 0.97)
    assert chance_note(0.5, 10, 0.97) is None
    assert chance_note(0.11, 10, 0.12) is None          # the baseline was already there: not this setting's doing


def test_ranking_note_when_a_stopped_sweep_has_one_layer_or_all_tie():
    assert "Only 1 of 4 layers measured" in ranking_note(pd.Series({"stem.0": 0.2}), 4)
    assert "same drop" in ranking_note(pd.Series({"a": 0.1, "b": 0.1}), 2)
    assert ranking_note(pd.Series({"a": 0.1, "b": 0.3}), 2) is None


def test_distillation_note_only_when_the_student_alone_wins():
    assert "after 2 epochs" in distillation_note(0.90, 0.93, 2) and "more epochs" in distillation_note(0.90, 0.93, 2)
    assert distillation_note(0.95, 0.93, 2) is None and distillation_note(0.95, None, 2) is None


def test_int8_size_note_says_why_the_file_is_not_smaller():
    note = int8_size_note(100_000, 120_000, 1, 7)
    assert "only 1 of 7 weight layers" in note and "1.2x larger" in note
    assert int8_size_note(100_000, 40_000, 3, 3) is None
