"""Data sources: the duplication task's layout and masks, character text's split and windows."""

import numpy as np
import pytest

from minireformer.training import data


def test_duplication_sequences_are_0_w_0_w_with_the_second_copy_masked():
    task = data.DuplicationTask(n_symbols=9, word_len=5)
    tokens, mask = task.batch(np.random.default_rng(0), 64)
    assert tokens.shape == (64, 12) and mask.shape == (64, 11) and task.vocab_size == 10
    assert task.length == 11  # a model reads 11 tokens and predicts the next of each
    w = tokens[:, 1:6]
    assert (tokens[:, 0] == 0).all() and (tokens[:, 6] == 0).all()
    assert np.array_equal(tokens[:, 7:], w)
    assert w.min() >= 1 and w.max() <= 9
    # the masked targets (tokens 1..L-1 where mask) are exactly the second copy of w
    assert np.array_equal(tokens[:, 1:][mask].reshape(64, 5), w)


def test_duplication_eval_set_is_fixed_by_its_seed_and_length_is_checked():
    task = data.DuplicationTask(n_symbols=9, word_len=5, eval_seed=3)
    a, b = task.eval_batches(10, None, 2), task.eval_batches(10, None, 2)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    other = data.DuplicationTask(n_symbols=9, word_len=5, eval_seed=4).eval_batches(10, None, 1)
    assert not np.array_equal(a[0][0], other[0][0])
    with pytest.raises(ValueError, match="seq_len: the duplication task"):
        task.batch(np.random.default_rng(0), 4, 20)


def test_char_text_split_vocabulary_and_round_trip(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcabcabcd" * 20, encoding="utf-8")
    src = data.CharText(path, valid_fraction=0.1)
    assert src.chars == ["a", "b", "c", "d"] and src.vocab_size == 4
    assert len(src.train_ids) == 180 and len(src.valid_ids) == 20
    assert src.decode(src.encode("dab")) == "dab"
    tokens, mask = src.batch(np.random.default_rng(0), 3, 7)
    assert tokens.shape == (3, 8) and mask is None  # the model reads 7 and predicts 7
    with pytest.raises(ValueError, match="not in the vocabulary"):
        src.encode("xyz")


def test_char_text_eval_windows_predict_each_validation_character_once(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("".join(chr(97 + i % 26) for i in range(1000)), encoding="utf-8")
    src = data.CharText(path, valid_fraction=0.1)  # 100 validation characters
    batches = src.eval_batches(2, 11)  # windows of 12 overlap by one: 11 new targets each
    windows = np.concatenate([b[0] for b in batches])
    assert windows.shape == (9, 12)  # (100 - 1) // 11 = 9 windows, 99 targets
    assert np.array_equal(windows[1:, 0], windows[:-1, -1])
    assert np.array_equal(np.concatenate([windows[:, 1:].reshape(-1)]), src.valid_ids[1:100])


def test_bad_specs_and_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no text file"):
        data.CharText(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="task: expected one of"):
        data.from_spec({"task": "translation"})
    with pytest.raises(ValueError, match="unknown field"):
        data.from_spec({"task": "duplication", "colour": 3})
    assert isinstance(data.from_spec({"task": "text"}), data.CharText)  # the shipped corpus
