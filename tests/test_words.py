"""The real-word share of a sample (training/words.py)."""

import pytest

from minireformer.training import words


def test_words_are_lowercased_letter_runs_with_inner_apostrophes():
    assert words.words("KING RICHARD III:\nO'er the sea, 'tis said -- ay!") == [
        "king", "richard", "iii", "o'er", "the", "sea", "tis", "said", "ay",
    ]  # fmt: skip


def test_known_word_share_counts_every_occurrence():
    vocabulary = set(words.words("the king is dead; long live the king"))
    assert words.known_word_share("The king sould live", vocabulary) == 0.75
    assert words.known_word_share("thoure sould", vocabulary) == 0.0
    assert words.known_word_share("the the the xyzzy", vocabulary) == 0.75  # repeats count


def test_a_sample_without_words_shares_nothing():
    assert words.known_word_share(" ,.;\n ", {"the"}) == 0.0


def test_text_must_be_a_string():
    with pytest.raises(TypeError, match="text: expected a str"):
        words.words(b"bytes")
