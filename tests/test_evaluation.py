"""The whole-text evaluation: strided windows score every token once, with the context the rule
says, and equal a direct computation one token at a time."""

import json
import math

import numpy as np
import pytest

from minireformer.reformer_config import ReformerConfig
from minireformer.training import cli, evaluation, lm
from minireformer.transformer import TransformerConfig

TINY = TransformerConfig(vocab_size=7, d_model=8, n_heads=2, d_head=4, d_ff=16, n_layers=1,
                         max_len=8, dtype="float64")  # fmt: skip


@pytest.mark.parametrize(("n", "window", "stride"), [(40, 8, 4), (41, 8, 3), (9, 8, 4), (30, 8, 8)])
def test_every_token_after_the_first_is_scored_exactly_once(n, window, stride):
    counts = np.zeros(n, dtype=int)
    for start, first in evaluation.strided_windows(n, window, stride):
        assert 0 <= start <= n - 1 - window and 0 <= first < window
        counts[start + first + 1 : start + window + 1] += 1
        if start > 0:  # past the first window: at least window - stride tokens of context
            assert first >= window - stride
    assert counts[0] == 0 and (counts[1:] == 1).all()


def _direct_bits(params, config, ids, window, stride):
    """Each token j >= 1 on its own: the window the rule assigns it, cut just before j, and the
    log-probability of ids[j] from the logits at the cut's last position."""
    total = 0.0
    for j in range(1, len(ids)):
        if j <= window:
            start = 0
        else:
            start = min(math.ceil((j - window) / stride) * stride, len(ids) - 1 - window)
        logits = lm.forward_logits(params, ids[None, start:j], config)[0, -1]  # (V,)
        top = logits.max()
        total += top + math.log(np.exp(logits - top).sum()) - logits[ids[j]]
    return total / (len(ids) - 1) / math.log(2)


@pytest.mark.parametrize("stride", [4, 3, 8])
def test_strided_evaluation_equals_a_direct_per_token_computation(stride):
    rng = np.random.default_rng(0)
    params = lm.init_params(TINY, rng)
    ids = rng.integers(0, 7, 43)
    got = evaluation.evaluate_text(params, TINY, ids, window=8, stride=stride, batch_size=3)
    want = _direct_bits(params, TINY, ids, 8, stride)
    assert abs(got["bits"] - want) < 1e-12 and got["targets"] == 42


def _window_bits(params, ids, start, width=8):
    """(W,) bits of the targets of the window of ``width`` tokens at ``start``, computed alone."""
    logits = lm.forward_logits(params, ids[None, start : start + width], TINY)[0]  # (W, V)
    top = logits.max(axis=-1)
    lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=-1))
    targets = ids[start + 1 : start + width + 1]
    return (lse - logits[np.arange(width), targets]) / math.log(2)


def test_position_bands_average_the_windows_at_multiples_of_the_stride():
    rng = np.random.default_rng(1)
    params = lm.init_params(TINY, rng)
    ids = rng.integers(0, 7, 35)  # windows of 8 (+1) tokens at 0, 4, ..., 24 (stride 4)
    got = evaluation.evaluate_text(params, TINY, ids, window=8, bands=((0, 2), (2, 8)))
    per_position = np.mean([_window_bits(params, ids, start) for start in range(0, 25, 4)], axis=0)
    np.testing.assert_allclose(got["position_bits"], per_position, rtol=1e-12)
    assert got["bands"] == pytest.approx(
        {"0-1": per_position[:2].mean(), "2-7": per_position[2:].mean()}
    )
    assert got["band_targets"] == {"0-1": 14, "2-7": 42}


def test_the_same_characters_are_compared_with_and_without_the_stride_s_extra_context():
    rng = np.random.default_rng(2)
    params = lm.init_params(TINY, rng)
    ids = rng.integers(0, 7, 30)  # aligned windows at 0, 4, ..., 20
    got = evaluation.evaluate_text(params, TINY, ids, window=8)
    assert got["same_characters"] == {}  # positions 64 on do not exist in a window of 8
    nats = {s: _window_bits(params, ids, s) for s in range(0, 21, 4)}
    pairs = [(a, a + 4) for a in range(0, 17, 4)]
    # the token at position p of window b is at p + 4 of window a: the same characters
    assert all(ids[b + p + 1] == ids[a + p + 4 + 1] for a, b in pairs for p in range(4))
    short = np.mean([nats[b][1:4] for _, b in pairs])
    long = np.mean([nats[a][5:8] for a, _ in pairs])
    same = evaluation._same_characters(
        {s: v * math.log(2) for s, v in nats.items()}, list(nats), 8, 4, low=1
    )
    assert same["short_bits"] == pytest.approx(short) and same["long_bits"] == pytest.approx(long)
    assert same["short_context"] == "1-3" and same["long_context"] == "5-7"
    assert same["targets"] == 5 * 3


def test_an_lsh_model_is_scored_the_same_for_the_same_seed():
    config = ReformerConfig(vocab_size=7, d_model=8, n_heads=2, d_ff=16, n_layers=1, chunk_len=4,
                            n_hashes=2, max_len=16)  # fmt: skip
    params = lm.init_params(config, np.random.default_rng(0))
    ids = np.random.default_rng(2).integers(0, 7, 60)
    a, b = (evaluation.evaluate_text(params, config, ids, window=16, seed=3) for _ in range(2))
    assert a["bits"] == b["bits"] and np.array_equal(a["position_bits"], b["position_bits"])
    other_batches = evaluation.evaluate_text(params, config, ids, window=16, seed=3, batch_size=1)
    assert abs(other_batches["bits"] - a["bits"]) < 1e-6  # the same rotations for every window
    other_seed = evaluation.evaluate_text(params, config, ids, window=16, seed=4)
    assert other_seed["bits"] != a["bits"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(window=9), ValueError, "longer than the model's max_len 8"),
        (dict(window=8, stride=9), ValueError, "stride: expected at most the window 8"),
        (dict(window=8, stride=0), ValueError, "stride: expected a positive integer"),
        (dict(window=8, ids=np.arange(5)), ValueError, "do not fit a sequence of 5"),
        (dict(window=8, ids=np.ones(20)), TypeError, "ids: expected a 1-D array of integer"),
    ],
)
def test_evaluate_text_names_a_bad_argument(kwargs, error, message):
    params = lm.init_params(TINY, np.random.default_rng(0))
    ids = kwargs.pop("ids", np.arange(20) % 7)
    with pytest.raises(error, match=message):
        evaluation.evaluate_text(params, TINY, ids, **kwargs)


def test_the_command_line_scores_the_whole_split_strided(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 30, encoding="utf-8")
    out = tmp_path / "lm.npz"
    argv = ["train", "--task", "text", "--data", str(text), "--model", "transformer",
            "--d-model", "8", "--n-heads", "2", "--d-ff", "16", "--n-layers", "1",
            "--seq-len", "16", "--steps", "1", "--batch-size", "2", "--out", str(out),
            "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--stride", "4"]) == 0
    got = json.loads(capsys.readouterr().out)
    n_valid = round(len(text.read_text()) * 0.1)
    assert (got["window"], got["stride"], got["targets"]) == (16, 4, n_valid - 1)
    assert set(got["bands"]) == {"0-7", "8-15"}
