"""How much of a generated sample is made of real words: a check a reader can do by eye, counted.

Bits per character say how well a model predicts held-out text; a sample says what it learned in
a form one can read. The count here: split the sample into words (runs of letters, with an
apostrophe inside a word allowed: ``o'er``, ``'tis``), lower-case them, and take the share that
also occur as words of a reference text (the training split). A model that spells only from
the last few characters invents many non-words ("thoure", "sould"); one that has learned the
vocabulary rarely does. Grammar and sense are not counted.
"""

from __future__ import annotations

import re

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased, in order (``WORD``: letters, inner apostrophes)."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    return WORD.findall(text.lower())


def known_word_share(sample: str, vocabulary: set[str]) -> float:
    """The share of the words of ``sample`` that are in ``vocabulary`` (a set of lower-case words,
    e.g. ``set(words(training_text))``); 0.0 for a sample without words."""
    found = words(sample)
    if not found:
        return 0.0
    return sum(w in vocabulary for w in found) / len(found)
