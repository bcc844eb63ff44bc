"""Tests of full attention (minireformer/attention.py), float64.

Outputs and log-sum-exps are checked against ``reference.full_attention`` and
``reference.shared_qk_attention``: plain dense softmax with the masks as stated.
"""

import numpy as np
import pytest

from minireformer import attention as A
from minireformer import loss, reference
from minireformer import multihead_attention as MHA
from minireformer.measuring.gradcheck import check_op

B, H, L, DH = 2, 3, 6, 4


def _rng(seed=0):
    return np.random.default_rng(seed)


def _heads(rng, *shape):
    return rng.standard_normal(shape or (B, H, L, DH))


def _padding_mask():
    """Batch 0: all real; batch 1: tokens 0, 2, 4, 5 are padding.

    Under ``causal``, query 0 of batch 1 then sees no real key at all: plain attention spreads it
    uniformly over all L keys (constant logits: no gradient to q or k); shared-QK attends to self.
    """
    mask = np.ones((B, L), dtype=bool)
    mask[1, [0, 2, 4, 5]] = False
    return mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_attention_equals_the_reference(causal, padded):
    rng = _rng(1)
    q, k, v = _heads(rng), _heads(rng), _heads(rng, B, H, L, 5)
    mask = _padding_mask() if padded else None
    out, cache = A.attention_forward(q, k, v, causal=causal, mask=mask)
    ref = reference.full_attention(q, k, v, causal=causal, mask=mask)
    logits = reference.masked_logits(q @ k.swapaxes(-1, -2) / DH**0.5, causal=causal, mask=mask)
    assert out.shape == (B, H, L, 5)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cache.lse, loss.logsumexp(logits), rtol=1e-12, atol=0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_shared_qk_equals_the_reference(causal, padded):
    rng = _rng(2)
    qk, v = _heads(rng), _heads(rng)
    mask = _padding_mask() if padded else None
    out, cache = A.shared_qk_attention_forward(qk, v, causal=causal, mask=mask)
    ref = reference.shared_qk_attention(qk, v, causal=causal, mask=mask)
    logits = reference.masked_logits(
        qk @ reference.unit(qk).swapaxes(-1, -2), causal=causal, mask=mask, self_mask=True
    )
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cache.lse, loss.logsumexp(logits), rtol=1e-12, atol=0)


def test_mask_logits_values():
    """On zero logits the masked result is the mask itself: 0 kept, NEG_SELF, NEG_MASK."""
    pos = np.arange(4)
    valid = np.array([True, True, False, True])
    got, keep = A.mask_logits(
        np.zeros((4, 4)), pos, pos, causal=True, key_valid=valid, self_mask=True
    )
    m, s = A.NEG_MASK, A.NEG_SELF
    want = np.array([[s, m, m, m], [0, s, m, m], [0, 0, s, m], [0, 0, m, s]])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(keep, want == 0)
    logits = np.ones((4, 4))
    same, keep = A.mask_logits(logits, pos, pos)  # nothing to mask: returned as is
    assert same is logits and keep is None


GRAD_CASES = [(causal, padded) for causal in (False, True) for padded in (False, True)]


@pytest.mark.parametrize("causal,padded", GRAD_CASES)
def test_attention_gradcheck(causal, padded):
    rng = _rng(3)
    args = [_heads(rng), _heads(rng), _heads(rng, B, H, L, 5)]
    mask = _padding_mask() if padded else None
    errors = check_op(
        A.attention_forward, A.attention_backward, args, {"causal": causal, "mask": mask}, rng=rng
    )
    assert set(errors) == {0, 1, 2}
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("causal,padded", GRAD_CASES)
def test_shared_qk_gradcheck(causal, padded):
    rng = _rng(4)
    args = [_heads(rng), _heads(rng)]
    mask = _padding_mask() if padded else None
    errors = check_op(
        A.shared_qk_attention_forward,
        A.shared_qk_attention_backward,
        args,
        {"causal": causal, "mask": mask},
        rng=rng,
    )
    assert set(errors) == {0, 1}
    assert max(errors.values()) < 1e-7, errors


def _mha_op(names):
    """multihead attention as an op of (x, *weights) so that check_op differentiates each."""

    def forward(x, *weights, **kwargs):
        return MHA.multihead_attention_forward(x, dict(zip(names, weights)), **kwargs)

    def backward(dout, cache):
        dx, dp = MHA.multihead_attention_backward(dout, cache)
        assert list(dp) == list(names)
        return (dx, *(dp[n] for n in names))

    return forward, backward


@pytest.mark.parametrize("shared_qk", [False, True])
@pytest.mark.parametrize("causal,padded", GRAD_CASES)
def test_multihead_gradcheck(causal, padded, shared_qk):
    rng = _rng(5)
    d_model, n_heads, d_head = 5, 2, 3
    p = MHA.init_multihead_attention(rng, d_model, n_heads, d_head, np.float64, shared_qk=shared_qk)
    names = tuple(p)
    x = rng.standard_normal((B, L, d_model))
    mask = _padding_mask() if padded else None
    forward, backward = _mha_op(names)
    errors = check_op(
        forward,
        backward,
        [x, *p.values()],
        {"n_heads": n_heads, "causal": causal, "mask": mask},
        rng=rng,
    )
    assert len(errors) == 1 + len(names)
    assert max(errors.values()) < 1e-7, errors


def test_multihead_matches_heads():
    """The layer is projection -> split -> attention_forward -> merge -> projection."""
    rng = _rng(6)
    p = MHA.init_multihead_attention(rng, 8, 2, 4, np.float64)
    x = rng.standard_normal((B, L, 8))
    out, cache = MHA.multihead_attention_forward(x, p, n_heads=2, causal=True)
    q, k, v = (A.split_heads(x @ p[n], 2) for n in ("w_q", "w_k", "w_v"))
    ref = A.merge_heads(A.attention_forward(q, k, v, causal=True)[0]) @ p["w_o"]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
    assert cache.attn.lse.shape == (B, 2, L)


def test_init_multihead_attention():
    p = MHA.init_multihead_attention(_rng(7), 64, 4, 8, np.float32)
    assert {n: w.shape for n, w in p.items()} == {
        "w_q": (64, 32),
        "w_k": (64, 32),
        "w_v": (64, 32),
        "w_o": (32, 64),
    }
    assert all(w.dtype == np.float32 for w in p.values())
    assert abs(p["w_q"].std() - 1 / 8) < 0.01  # N(0, 1/fan_in)
    assert set(MHA.init_multihead_attention(_rng(7), 8, 2, 4, np.float32, shared_qk=True)) == {
        "w_qk",
        "w_v",
        "w_o",
    }
    with pytest.raises(TypeError, match="^dtype: expected a floating-point dtype"):
        MHA.init_multihead_attention(_rng(7), 8, 2, 4, "int32")


def _assert_causal(fn, inputs, t):
    """Changing every input after position t leaves outputs at positions <= t unchanged."""
    out = fn(*inputs)
    changed = []
    for x in inputs:
        x = x.copy()
        x[..., t + 1 :, :] = 10 * _rng(8).standard_normal(x[..., t + 1 :, :].shape)
        changed.append(x)
    out2 = fn(*changed)
    np.testing.assert_allclose(out2[..., : t + 1, :], out[..., : t + 1, :], rtol=0, atol=1e-12)
    assert np.abs(out2[..., t + 1 :, :] - out[..., t + 1 :, :]).max() > 1e-3  # the change is seen


@pytest.mark.parametrize("t", [0, 2, L - 2])
def test_causality(t):
    rng = _rng(9)
    q, k, v = _heads(rng), _heads(rng), _heads(rng)
    _assert_causal(lambda q, k, v: A.attention_forward(q, k, v, causal=True)[0], [q, k, v], t)
    _assert_causal(lambda qk, v: A.shared_qk_attention_forward(qk, v, causal=True)[0], [q, v], t)
    p = MHA.init_multihead_attention(rng, 6, 2, 3, np.float64)
    x = rng.standard_normal((B, L, 6))
    _assert_causal(
        lambda x: MHA.multihead_attention_forward(x, p, n_heads=2, causal=True)[0], [x], t
    )


def test_shared_qk_causal_token_zero_attends_to_itself():
    rng = _rng(10)
    qk, v = _heads(rng), _heads(rng)
    out, cache = A.shared_qk_attention_forward(qk, v, causal=True)
    np.testing.assert_allclose(out[:, :, 0], v[:, :, 0], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(cache.probs[:, :, 0, 0], 1.0)


def test_self_mask_only_when_nothing_else():
    """The own key gets weight 0 when any other key is available, weight 1 when none is."""
    rng = _rng(11)
    qk, v = _heads(rng), _heads(rng)
    _, cache = A.shared_qk_attention_forward(qk, v)
    assert np.all(np.diagonal(cache.probs, axis1=-2, axis2=-1) == 0)
    assert np.allclose(cache.probs.sum(-1), 1)
    # batch 1 has one real token (1): it attends to itself; the padding queries attend to it
    mask = np.ones((B, L), dtype=bool)
    mask[1] = False
    mask[1, 1] = True
    out, cache = A.shared_qk_attention_forward(qk, v, mask=mask)
    np.testing.assert_array_equal(cache.probs[1, :, 1, 1], 1.0)
    others = [i for i in range(L) if i != 1]
    np.testing.assert_array_equal(cache.probs[1][:, others][..., 1], 1.0)
    np.testing.assert_allclose(out[1], np.broadcast_to(v[1, :, 1:2], (H, L, DH)), atol=1e-15)
    # and the real query's gradient to qk is exactly zero (its only logit is a constant)
    dqk, _ = A.shared_qk_attention_backward(np.ones_like(out), cache)
    assert np.all(dqk[1, :, 1] == 0)


def test_padding_keys_get_no_weight():
    rng = _rng(12)
    q, k, v = _heads(rng), _heads(rng), _heads(rng)
    mask = _padding_mask()
    _, cache = A.attention_forward(q, k, v, mask=mask)
    assert np.all(cache.probs[1][..., ~mask[1]] == 0)
    assert np.allclose(cache.probs.sum(-1), 1)


def test_split_merge_round_trip():
    x = _rng(13).standard_normal((2, 5, 12))
    heads = A.split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    np.testing.assert_array_equal(heads[:, 1], x[:, :, 4:8])  # head h holds columns h*Dh:(h+1)*Dh
    np.testing.assert_array_equal(A.merge_heads(heads), x)


def _bad(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def test_bad_input_heads_ops():
    rng = _rng(14)
    q, v = _heads(rng), _heads(rng)
    _bad(
        ValueError,
        r"k: expected shape \(2, 3, 6, 4\), got \(2, 3, 5, 4\)",
        A.attention_forward,
        q,
        q[:, :, :5],
        v,
    )
    _bad(
        ValueError,
        r"v: expected shape \(2, 3, 6, 'any'\), got \(2, 3, 5, 4\)",
        A.attention_forward,
        q,
        q,
        v[:, :, :5],
    )
    _bad(
        ValueError,
        r"q: expected 4 dimensions, got shape \(3, 6, 4\)",
        A.attention_forward,
        q[0],
        q[0],
        v[0],
    )
    _bad(
        TypeError,
        "q: expected a floating-point array, got dtype int64",
        A.attention_forward,
        q.astype(np.int64),
        q,
        v,
    )
    _bad(
        TypeError,
        "v: expected dtype float64 \\(that of qk\\), got float32",
        A.shared_qk_attention_forward,
        q,
        v.astype(np.float32),
    )
    _bad(
        TypeError,
        "qk: expected a floating-point array, got dtype int64",
        A.shared_qk_attention_forward,
        q.astype(np.int64),
        v,
    )
    _bad(
        ValueError,
        r"v: expected shape \(2, 3, 6, 'any'\), got \(2, 2, 6, 4\)",
        A.shared_qk_attention_forward,
        q,
        v[:, :2],
    )
    _bad(
        ValueError,
        r"mask: expected shape \(2, 6\), got \(2, 5\)",
        A.attention_forward,
        q,
        q,
        v,
        mask=np.ones((B, L - 1), dtype=bool),
    )
    _bad(
        TypeError,
        "mask: expected a boolean array, got dtype int64",
        A.shared_qk_attention_forward,
        q,
        v,
        mask=np.ones((B, L), dtype=np.int64),
    )
    bad = q.copy()
    bad[0, 0, 0, 0] = np.nan
    _bad(ValueError, "qk: expected finite values", A.shared_qk_attention_forward, bad, v)


def test_bad_input_multihead_and_heads():
    rng = _rng(15)
    p = MHA.init_multihead_attention(rng, 6, 2, 3, np.float64)
    x = rng.standard_normal((B, L, 6))
    _bad(
        ValueError,
        "n_heads: expected a divisor of the projection width 6, got 4",
        MHA.multihead_attention_forward,
        x,
        p,
        n_heads=4,
    )
    _bad(
        ValueError,
        "n_heads: expected a positive integer, got 0",
        MHA.multihead_attention_forward,
        x,
        p,
        n_heads=0,
    )
    _bad(
        ValueError,
        r"w_q: expected shape \(5, 'any'\), got \(6, 6\)",
        MHA.multihead_attention_forward,
        x[..., :5],
        p,
        n_heads=2,
    )
    _bad(
        ValueError,
        r"w_o: expected shape \(6, 6\), got \(5, 6\)",
        MHA.multihead_attention_forward,
        x,
        {**p, "w_o": p["w_o"][:5]},
        n_heads=2,
    )
    _bad(
        ValueError,
        r"p: expected keys \['w_k', 'w_o', 'w_q', 'w_v'\], got \['w_k', 'w_o', 'w_q'\]",
        MHA.multihead_attention_forward,
        x,
        {n: w for n, w in p.items() if n != "w_v"},
        n_heads=2,
    )
    _bad(
        TypeError,
        "x: expected a floating-point array, got dtype int64",
        MHA.multihead_attention_forward,
        x.astype(np.int64),
        p,
        n_heads=2,
    )
    _bad(
        ValueError,
        r"mask: expected shape \(2, 6\)",
        MHA.multihead_attention_forward,
        x,
        p,
        n_heads=2,
        mask=np.ones(L, dtype=bool),
    )
    _bad(
        ValueError,
        "n_heads: expected a divisor of the width of x \\(12\\), got 5",
        A.split_heads,
        np.zeros((1, 2, 12)),
        5,
    )
    _bad(
        ValueError,
        r"x: expected 4 dimensions, got shape \(1, 2, 12\)",
        A.merge_heads,
        np.zeros((1, 2, 12)),
    )
    _bad(
        ValueError,
        "d_head: expected a positive integer, got -1",
        MHA.init_multihead_attention,
        rng,
        6,
        2,
        -1,
    )


def test_float32_stays_float32():
    rng = _rng(16)
    qk, v = _heads(rng).astype(np.float32), _heads(rng).astype(np.float32)
    out, cache = A.shared_qk_attention_forward(qk, v, causal=True, mask=_padding_mask())
    dqk, dv = A.shared_qk_attention_backward(np.ones_like(out), cache)
    assert {a.dtype for a in (out, cache.lse, cache.probs, dqk, dv)} == {np.dtype(np.float32)}
