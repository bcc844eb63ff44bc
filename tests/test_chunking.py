"""Chunked feed-forward and chunked loss (paper eq. 10) equal the unchunked layers exactly."""

import numpy as np
import pytest

from minireformer import layers, loss, reference
from minireformer.chunking import (
    chunk_seed,
    chunk_slices,
    chunked_feedforward_backward,
    chunked_feedforward_forward,
    chunked_feedforward_forward_backward,
    chunked_output_loss_backward,
    chunked_output_loss_forward,
)
from minireformer.measuring.gradcheck import check_op

B, L, D, F, V = 2, 11, 6, 24, 13


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _ff_params(rng):
    return layers.init_feedforward(rng, D, F, dtype="float64")


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def test_chunk_slices_cover_every_position_once():
    slices = chunk_slices(11, 4)
    assert [(s.start, s.stop) for s in slices] == [(0, 4), (4, 8), (8, 11)]
    assert chunk_slices(3, 8) == [slice(0, 3)]


def test_chunk_seed_keeps_the_layer_seed_for_the_first_chunk():
    assert chunk_seed(None, 3) is None
    assert chunk_seed(17, 0) == 17
    seeds = {chunk_seed(17, i) for i in range(50)}
    assert len(seeds) == 50 and all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize("chunk_len", [1, 3, 4, 11, 100])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_chunked_feedforward_equals_unchunked(rng, chunk_len, activation):
    x = rng.standard_normal((B, L, D))
    p = _ff_params(rng)
    dout = rng.standard_normal((B, L, D))
    ref, cache = layers.feedforward_forward(x, p, activation=activation)
    ref_dx, ref_dp = layers.feedforward_backward(dout, cache)

    out, ccache = chunked_feedforward_forward(x, p, chunk_len=chunk_len, activation=activation)
    dx, dp = chunked_feedforward_backward(dout, ccache)
    assert _max_diff(ref, reference.feedforward(x, p, activation)) < 1e-12
    assert _max_diff(out, ref) < 1e-12
    assert _max_diff(dx, ref_dx) < 1e-12
    for k in ref_dp:
        assert _max_diff(dp[k], ref_dp[k]) < 1e-12, k

    out2, dx2, dp2 = chunked_feedforward_forward_backward(
        x, p, dout, chunk_len=chunk_len, activation=activation
    )
    assert _max_diff(out2, ref) < 1e-12 and _max_diff(dx2, ref_dx) < 1e-12
    for k in ref_dp:
        assert _max_diff(dp2[k], ref_dp[k]) < 1e-12, k


def test_one_chunk_with_dropout_is_the_unchunked_layer(rng):
    x, p = rng.standard_normal((B, L, D)), _ff_params(rng)
    ref, _ = layers.feedforward_forward(x, p, dropout=0.3, seed=5)
    out, _ = chunked_feedforward_forward(x, p, chunk_len=L, dropout=0.3, seed=5)
    assert _max_diff(out, ref) == 0.0


def test_chunked_feedforward_with_dropout_replays_its_masks(rng):
    """Forward, backward and forward_backward all use the same per-chunk masks."""
    x, p = rng.standard_normal((B, L, D)), _ff_params(rng)
    kwargs = dict(chunk_len=4, dropout=0.5, seed=123)
    errors = check_op(
        lambda x_: chunked_feedforward_forward(x_, p, **kwargs),
        lambda d, c: chunked_feedforward_backward(d, c)[0],
        [x],
        rng=rng,
    )
    assert errors[0] < 1e-7
    dout = rng.standard_normal((B, L, D))
    out, cache = chunked_feedforward_forward(x, p, **kwargs)
    dx, dp = chunked_feedforward_backward(dout, cache)
    out2, dx2, dp2 = chunked_feedforward_forward_backward(x, p, dout, **kwargs)
    assert _max_diff(out, out2) == 0.0 and _max_diff(dx, dx2) == 0.0
    assert all(_max_diff(dp[k], dp2[k]) == 0.0 for k in dp)
    assert _max_diff(out, chunked_feedforward_forward(x, p, chunk_len=4)[0]) > 0.1  # dropout acts


@pytest.mark.parametrize("chunk_len", [1, 3, 4, 11, 50])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_loss_equals_unchunked(rng, chunk_len, masked, bias):
    h = rng.standard_normal((B, L, D))
    w = rng.standard_normal((D, V))
    b = rng.standard_normal(V) if bias else None
    targets = rng.integers(0, V, size=(B, L))
    mask = None
    if masked:
        mask = rng.random((B, L)) < 0.6
        mask[:, 4:8] = False  # a whole chunk without targets (chunk_len 4)
        mask[0, 0] = True
    logits, lin = layers.linear_forward(h, w, b)
    ref, ce = loss.softmax_cross_entropy_forward(logits, targets, mask)
    ref_grads = layers.linear_backward(loss.softmax_cross_entropy_backward(0.7, ce), lin)

    value, cache = chunked_output_loss_forward(h, w, b, targets, mask, chunk_len=chunk_len)
    grads = chunked_output_loss_backward(0.7, cache)
    plain = reference.cross_entropy(h @ w + (0 if b is None else b), targets, mask)
    assert abs(float(ref) - plain) < 1e-12
    assert abs(float(value) - float(ref)) < 1e-12
    assert len(grads) == len(ref_grads) == (3 if bias else 2)
    for g, r in zip(grads, ref_grads):
        assert _max_diff(g, r) < 1e-12


def test_chunked_loss_gradient_check(rng):
    h, w, b = rng.standard_normal((B, L, D)), rng.standard_normal((D, V)), rng.standard_normal(V)
    targets = rng.integers(0, V, size=(B, L))
    mask = rng.random((B, L)) < 0.7
    errors = check_op(
        lambda h_, w_, b_: chunked_output_loss_forward(h_, w_, b_, targets, mask, chunk_len=3),
        chunked_output_loss_backward,
        [h, w, b],
        rng=rng,
    )
    assert max(errors.values()) < 1e-7, errors


def test_chunked_loss_never_builds_the_whole_logits(rng, monkeypatch):
    """Every linear call inside the chunked loss sees at most chunk_len positions."""
    seen = []
    original = layers.linear_forward

    def spy(x, w, b=None):
        seen.append(x.shape)
        return original(x, w, b)

    monkeypatch.setattr(layers, "linear_forward", spy)
    h, w = rng.standard_normal((B, L, D)), rng.standard_normal((D, V))
    targets = rng.integers(0, V, size=(B, L))
    _, cache = chunked_output_loss_forward(h, w, None, targets, chunk_len=4)
    chunked_output_loss_backward(1.0, cache)
    assert len(seen) == 6 and all(s[1] <= 4 for s in seen)  # 3 chunks, forward and backward


def test_bad_input(rng):
    x, p = rng.standard_normal((B, L, D)), _ff_params(rng)
    with pytest.raises(ValueError, match="chunk_len"):
        chunked_feedforward_forward(x, p, chunk_len=0)
    with pytest.raises(TypeError, match="chunk_len"):
        chunked_feedforward_forward(x, p, chunk_len=2.5)
    with pytest.raises(ValueError, match="x"):
        chunked_feedforward_forward(x[0, 0], p, chunk_len=2)
    h, w = rng.standard_normal((B, L, D)), rng.standard_normal((D, V))
    targets = rng.integers(0, V, size=(B, L))
    with pytest.raises(ValueError, match="chunk_len"):
        chunked_output_loss_forward(h, w, None, targets, chunk_len=0)
    with pytest.raises(ValueError, match="targets"):
        chunked_output_loss_forward(h, w, None, targets[:, 1:], chunk_len=2)
    with pytest.raises(ValueError, match="targets"):
        chunked_output_loss_forward(h, w, None, targets + V, chunk_len=2)
    with pytest.raises(ValueError, match="mask"):
        chunked_output_loss_forward(h, w, None, targets, np.zeros((B, L), bool), chunk_len=2)
    with pytest.raises(ValueError, match="w"):
        chunked_output_loss_forward(h, w[1:], None, targets, chunk_len=2)
