"""Local (chunked) attention: equal to the banded dense reference; gradients, masks, memory."""

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minireformer import attention, reference
from minireformer.local_attention import local_attention_backward, local_attention_forward
from minireformer.lsh_attention import lsh_attention_forward
from minireformer.measuring import gradcheck


def make_inputs(rng, b, h, length, d, *, pad=False):
    qk = rng.standard_normal((b, h, length, d))
    v = rng.standard_normal((b, h, length, d))
    mask = None
    if pad:
        mask = rng.random((b, length)) > 0.25
        mask[:, 0] = True
    return qk, v, mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "length, chunk_len, nb, na",
    [(16, 4, 1, 0), (19, 4, 1, 1), (23, 5, 2, 0), (7, 4, 1, 1), (9, 2, 3, 2), (1, 3, 1, 0)],
)
def test_equals_the_banded_dense_reference(causal, length, chunk_len, nb, na):
    rng = np.random.default_rng(20)
    qk, v, mask = make_inputs(rng, 2, 3, length, 4, pad=length > 1)
    out, _ = local_attention_forward(
        qk, v, chunk_len=chunk_len, causal=causal, mask=mask, n_chunks_before=nb,
        n_chunks_after=na,
    )  # fmt: skip
    ref = reference.local_attention(
        qk, v, chunk_len=chunk_len, causal=causal, mask=mask, n_chunks_before=nb, n_chunks_after=na
    )
    assert out.shape == v.shape
    assert np.max(np.abs(out - ref)) < 1e-10


@pytest.mark.parametrize("causal", [False, True])
def test_chunk_covering_the_sequence_equals_full_attention(causal):
    rng = np.random.default_rng(21)
    qk, v, mask = make_inputs(rng, 2, 2, 13, 5, pad=True)
    ref, _ = attention.shared_qk_attention_forward(qk, v, causal=causal, mask=mask)
    for chunk_len in (13, 16):
        out, _ = local_attention_forward(qk, v, chunk_len=chunk_len, causal=causal, mask=mask)
        assert np.max(np.abs(out - ref)) < 1e-10


@pytest.mark.parametrize("causal", [False, True])
def test_lsh_with_one_bucket_and_one_round_is_local_attention(causal):
    """All tokens in one bucket: the sort is the identity, so LSH attention is local attention."""
    rng = np.random.default_rng(22)
    qk, v, mask = make_inputs(rng, 2, 2, 22, 4, pad=True)
    local, _ = local_attention_forward(qk, v, chunk_len=4, causal=causal, mask=mask)
    lsh_out, _ = lsh_attention_forward(
        qk, v, chunk_len=4, rotations=np.zeros((4, 1, 1)), causal=causal, mask=mask
    )
    assert np.max(np.abs(local - lsh_out)) < 1e-10


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("nb, na", [(1, 0), (1, 1)])
def test_gradient_check(causal, nb, na):
    rng = np.random.default_rng(23)
    qk, v, mask = make_inputs(rng, 2, 2, 10, 3, pad=True)  # 10 = 3 chunks of 3 + padding
    kwargs = dict(chunk_len=3, causal=causal, mask=mask, n_chunks_before=nb, n_chunks_after=na)
    errors = gradcheck.check_op(
        local_attention_forward, local_attention_backward, (qk, v), kwargs, rng=rng
    )
    assert max(errors.values()) < 1e-7, errors


def test_causality_and_token_zero():
    rng = np.random.default_rng(24)
    qk, v, _ = make_inputs(rng, 2, 2, 21, 4)
    out, _ = local_attention_forward(qk, v, chunk_len=4, causal=True)
    assert np.max(np.abs(out[:, :, 0] - v[:, :, 0])) < 1e-12
    t = 10
    qk2, v2 = qk.copy(), v.copy()
    qk2[:, :, t + 1 :] = rng.standard_normal(qk2[:, :, t + 1 :].shape)
    v2[:, :, t + 1 :] = rng.standard_normal(v2[:, :, t + 1 :].shape)
    out2, _ = local_attention_forward(qk2, v2, chunk_len=4, causal=True)
    assert np.array_equal(out[:, :, : t + 1], out2[:, :, : t + 1])
    assert not np.allclose(out[:, :, t + 1 :], out2[:, :, t + 1 :])


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 2),
    length=st.integers(1, 20),
    d=st.integers(1, 4),
    chunk_len=st.integers(1, 7),
    nb=st.integers(0, 2),
    na=st.integers(0, 2),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_matches_the_reference(b, h, length, d, chunk_len, nb, na, causal, seed):
    rng = np.random.default_rng(seed)
    qk, v, mask = make_inputs(rng, b, h, length, d, pad=length > 1)
    out, _ = local_attention_forward(
        qk, v, chunk_len=chunk_len, causal=causal, mask=mask, n_chunks_before=nb,
        n_chunks_after=na,
    )  # fmt: skip
    ref = reference.local_attention(
        qk, v, chunk_len=chunk_len, causal=causal, mask=mask, n_chunks_before=nb, n_chunks_after=na
    )
    assert np.max(np.abs(out - ref)) < 1e-10


def _peak_bytes(length, rng):
    qk, v, _ = make_inputs(rng, 1, 1, length, 16)
    dout = rng.standard_normal(v.shape)
    tracemalloc.start()
    try:
        out, cache = local_attention_forward(qk, v, chunk_len=32, causal=True)
        local_attention_backward(dout, cache)
        del out, cache
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_grows_linearly():
    rng = np.random.default_rng(25)
    ratio = _peak_bytes(2048, rng) / _peak_bytes(512, rng)
    assert 3.0 < ratio < 5.5, ratio  # quadratic growth would give about 16


def test_numpy_integer_window_is_accepted():
    qk, v, _ = make_inputs(np.random.default_rng(27), 1, 1, 8, 4)
    a, _ = local_attention_forward(qk, v, chunk_len=4, n_chunks_before=np.int64(1))
    b, _ = local_attention_forward(qk, v, chunk_len=4, n_chunks_before=1)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(chunk_len=0), "chunk_len"),
        (dict(chunk_len=2.5), "chunk_len"),
        (dict(n_chunks_before=-1), "n_chunks_before"),
        (dict(n_chunks_after=1.0), "n_chunks_after"),
        (dict(mask=np.ones((2, 7), bool)), "mask"),
        (dict(mask=np.ones((2, 8), int)), "mask"),
    ],
)
def test_bad_arguments(change, name):
    rng = np.random.default_rng(26)
    qk, v, _ = make_inputs(rng, 2, 2, 8, 4)
    kwargs = dict(chunk_len=4)
    kwargs.update(change)
    with pytest.raises((ValueError, TypeError), match=f"{name}: expected") as err:
        local_attention_forward(qk, v, **kwargs)
    assert "got" in str(err.value)


def test_bad_arrays():
    rng = np.random.default_rng(27)
    qk, v, _ = make_inputs(rng, 2, 2, 8, 4)
    for bad_v in (v[:1], v[:, :1], v[:, :, :5]):
        with pytest.raises(ValueError, match="v: expected shape"):
            local_attention_forward(qk, bad_v, chunk_len=4)
    with pytest.raises(ValueError, match="qk: expected 4 dimensions"):
        local_attention_forward(qk[0], v, chunk_len=4)
    with pytest.raises(TypeError, match="qk: expected a floating-point"):
        local_attention_forward(qk.astype(int), v, chunk_len=4)
    for bad in (np.nan, np.inf):
        broken = qk.copy()
        broken[1, 1, 5, 2] = bad
        with pytest.raises(ValueError, match="qk: expected finite"):
            local_attention_forward(broken, v, chunk_len=4)
