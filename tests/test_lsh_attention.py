"""LSH attention: exactness against the dense reference, gradients, masks, memory, bad input.

The reference (``reference.lsh_attention``) is written independently of the library's blocked,
sorted code: from the buckets the fast code reports (``cache.buckets``) it redoes the documented
sort (round, bucket, position; internal padding after the real tokens of its round), counts how
often each query meets each key, and computes one dense softmax over the keys met, each key once
(the paper's semantics: the union identity of Appendix A) or as often as met (the released code's).
"""

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minireformer import attention, lsh, reference
from minireformer.lsh_attention import Semantics, lsh_attention_backward, lsh_attention_forward
from minireformer.measuring import gradcheck

NEG_MASK, NEG_SELF = attention.NEG_MASK, attention.NEG_SELF
MODES = {
    "paper": Semantics(False, False),
    "released": Semantics(True, True),
    "across": Semantics(True, False),
    "dup": Semantics(False, True),
}


def make_inputs(rng, b, h, length, d, *, pad=False):
    qk = rng.standard_normal((b, h, length, d))
    v = rng.standard_normal((b, h, length, d))
    mask = None
    if pad:
        mask = rng.random((b, length)) > 0.25
        mask[:, 0] = True
    return qk, v, mask


def dense(qk, v, buckets, n_buckets, chunk_len, *, causal, mask, nb, na, across, dup):
    """reference.lsh_attention with the window and the two switches spelled as the tests do."""
    return reference.lsh_attention(
        qk, v, buckets, chunk_len=chunk_len, n_buckets=n_buckets, causal=causal, mask=mask,
        n_chunks_before=nb, n_chunks_after=na, semantics=(across, dup),
    )  # fmt: skip


def run(qk, v, mask, *, chunk_len, n_hashes, n_buckets, rng, causal, nb=1, na=0, mode="paper"):
    across, dup = MODES[mode]
    out, cache = lsh_attention_forward(
        qk, v, chunk_len=chunk_len, n_hashes=n_hashes, n_buckets=n_buckets, rng=rng,
        causal=causal, mask=mask, n_chunks_before=nb, n_chunks_after=na, semantics=MODES[mode],
    )  # fmt: skip
    return out, cache, across, dup


# ---------------------------------------------------------------------------------------------
# Exactness
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_hashes", [1, 3])
def test_one_bucket_equals_full_shared_qk_attention(causal, n_hashes):
    rng = np.random.default_rng(1)
    qk, v, mask = make_inputs(rng, 2, 3, 13, 5, pad=True)
    ref, _ = attention.shared_qk_attention_forward(qk, v, causal=causal, mask=mask)
    zero = np.zeros((5, n_hashes, 1))  # every projection 0: all tokens hash to bucket 0
    out, cache = lsh_attention_forward(
        qk, v, chunk_len=16, n_hashes=n_hashes, rotations=zero, causal=causal, mask=mask
    )
    assert np.all(cache.buckets == 0)
    assert np.max(np.abs(out - ref)) < 1e-10


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk_len", [13, 20])
def test_one_round_with_chunk_covering_the_sequence_equals_full(causal, chunk_len):
    rng = np.random.default_rng(2)
    qk, v, mask = make_inputs(rng, 2, 2, 13, 4, pad=True)
    ref, _ = attention.shared_qk_attention_forward(qk, v, causal=causal, mask=mask)
    for mode in ("released", "across"):
        out, *_ = run(qk, v, mask, chunk_len=chunk_len, n_hashes=1, n_buckets=4, rng=rng,
                      causal=causal, mode=mode)  # fmt: skip
        assert np.max(np.abs(out - ref)) < 1e-10, mode


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mode", ["paper", "across"])
def test_no_duplicates_equals_dense_softmax_over_union(causal, mode):
    rng = np.random.default_rng(3)
    for length, chunk_len, n_hashes, n_buckets, nb, na in [
        (24, 4, 3, 6, 1, 0),
        (19, 4, 4, 4, 1, 1),
        (10, 3, 2, 8, 2, 0),
        (5, 4, 1, 2, 1, 1),  # fewer chunks than the window is wide: a key seen twice
        (6, 3, 2, 2, 2, 2),
    ]:
        qk, v, mask = make_inputs(rng, 2, 2, length, 4, pad=True)
        out, cache, across, _ = run(qk, v, mask, chunk_len=chunk_len, n_hashes=n_hashes,
                                    n_buckets=n_buckets, rng=rng, causal=causal, nb=nb, na=na,
                                    mode=mode)  # fmt: skip
        ref = dense(qk, v, cache.buckets, n_buckets, chunk_len, causal=causal, mask=mask,
                              nb=nb, na=na, across=across, dup=False)  # fmt: skip
        assert np.max(np.abs(out - ref)) < 1e-10, (length, chunk_len, n_hashes)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mode", ["released", "paper", "dup", "across"])
def test_equals_dense(causal, mode):
    rng = np.random.default_rng(4)
    for length, chunk_len, n_hashes, n_buckets, nb, na in [
        (16, 4, 2, 4, 1, 0),
        (13, 3, 3, 6, 1, 1),
        (6, 4, 2, 2, 1, 0),
    ]:
        qk, v, mask = make_inputs(rng, 1, 2, length, 3, pad=True)
        out, cache, across, dup = run(qk, v, mask, chunk_len=chunk_len, n_hashes=n_hashes,
                                      n_buckets=n_buckets, rng=rng, causal=causal, nb=nb,
                                      na=na, mode=mode)  # fmt: skip
        ref = dense(qk, v, cache.buckets, n_buckets, chunk_len, causal=causal,
                             mask=mask, nb=nb, na=na, across=across, dup=dup)  # fmt: skip
        assert np.max(np.abs(out - ref)) < 1e-10, (length, chunk_len, n_hashes)


def test_replay_with_cached_rotations_and_per_head_or_shared_rotations():
    rng = np.random.default_rng(5)
    qk, v, mask = make_inputs(rng, 2, 3, 20, 6, pad=True)
    out, cache = lsh_attention_forward(qk, v, chunk_len=4, n_hashes=2, rng=rng, mask=mask)
    assert cache.rotations.shape == (3, 6, 2, lsh.default_n_buckets(20, 4) // 2)
    assert cache.buckets.shape == (2, 3, 2, 20)
    again, cache2 = lsh_attention_forward(
        qk, v, chunk_len=4, n_hashes=2, rotations=cache.rotations, mask=mask
    )
    assert np.array_equal(out, again) and np.array_equal(cache.buckets, cache2.buckets)
    shared = lsh.random_rotations(rng, 6, 2, 4)  # (Dh, R, K/2), one set for all heads
    _, cache3 = lsh_attention_forward(qk, v, chunk_len=4, n_hashes=2, rotations=shared, n_buckets=4)
    assert np.array_equal(cache3.buckets, lsh.hash_vectors(qk, shared))


def test_replay_with_given_buckets():
    rng = np.random.default_rng(14)
    qk, v, mask = make_inputs(rng, 2, 2, 18, 4, pad=True)
    out, cache = lsh_attention_forward(qk, v, chunk_len=4, n_hashes=2, rng=rng, mask=mask)
    nudged = qk + 1e-3 * rng.standard_normal(qk.shape)  # as a float32 recomputation might be
    again, cache2 = lsh_attention_forward(
        nudged, v, chunk_len=4, n_hashes=2, mask=mask, rotations=cache.rotations,
        buckets=cache.buckets,
    )  # fmt: skip
    assert cache2.buckets is cache.buckets and np.array_equal(cache2.inverse, cache.inverse)
    assert np.max(np.abs(out - again)) < 1e-2
    zero = np.zeros((2, 2, 2, 18), dtype=np.int64)  # all in bucket 0: as zero rotations
    by_buckets, _ = lsh_attention_forward(qk, v, chunk_len=4, n_hashes=2, rotations=cache.rotations,
                                          buckets=zero)  # fmt: skip
    by_rotations, _ = lsh_attention_forward(qk, v, chunk_len=4, n_hashes=2,
                                            rotations=np.zeros((4, 2, 5)))  # fmt: skip
    assert np.array_equal(by_buckets, by_rotations)
    for bad, match in (
        (zero[:, :, :1], "buckets: expected shape"),
        (zero + 10, "buckets: expected ids"),
        (zero.astype(float), "buckets: expected an integer"),
    ):
        with pytest.raises((ValueError, TypeError), match=match):
            lsh_attention_forward(qk, v, chunk_len=4, n_hashes=2, rotations=cache.rotations,
                                  buckets=bad)  # fmt: skip


def test_float32_runs_and_stays_float32():
    rng = np.random.default_rng(6)
    qk, v, _ = make_inputs(rng, 1, 2, 30, 8)
    qk, v = qk.astype(np.float32), v.astype(np.float32)
    out, cache = lsh_attention_forward(qk, v, chunk_len=8, n_hashes=2, rng=rng, causal=True)
    dqk, dv = lsh_attention_backward(np.ones_like(out), cache)
    assert out.dtype == dqk.dtype == dv.dtype == np.float32
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dqk))


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mode", ["paper", "released", "across", "dup"])
def test_gradient_check(causal, mode):
    rng = np.random.default_rng(7)
    length, d, n_hashes, n_buckets = 11, 4, 3, 4  # 11 is not a multiple of the chunk: padding
    qk, v, mask = make_inputs(rng, 1, 2, length, d, pad=True)
    rotations = lsh.random_rotations(rng, d, n_hashes, n_buckets, n_heads=2)
    kwargs = dict(chunk_len=3, n_hashes=n_hashes, rotations=rotations, causal=causal,
                  mask=mask, semantics=MODES[mode])  # fmt: skip
    errors = gradcheck.check_op(lsh_attention_forward, lsh_attention_backward, (qk, v), kwargs,
                                rng=rng)  # fmt: skip
    assert max(errors.values()) < 1e-7, errors


# ---------------------------------------------------------------------------------------------
# Masks and causality
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["paper", "released"])
def test_causality(mode):
    """Values after t cannot reach outputs <= t; nor can queries/keys, through the gradient.

    (Changing qk after t may change the hashing and so which earlier keys an early query sees:
    LSH attention's *pattern* depends on all tokens, only its weights are causal.)
    """
    rng = np.random.default_rng(8)
    qk, v, _ = make_inputs(rng, 2, 2, 20, 4)
    t = 9
    out, cache, *_ = run(qk, v, None, chunk_len=4, n_hashes=3, n_buckets=4, rng=rng,
                         causal=True, mode=mode)  # fmt: skip
    v2 = v.copy()
    v2[:, :, t + 1 :] = rng.standard_normal(v2[:, :, t + 1 :].shape)
    out2, _ = lsh_attention_forward(qk, v2, chunk_len=4, n_hashes=3, rotations=cache.rotations,
                                    causal=True, semantics=mode)  # fmt: skip
    assert np.array_equal(out[:, :, : t + 1], out2[:, :, : t + 1])
    dout = rng.standard_normal(out.shape)
    dout[:, :, t + 1 :] = 0
    dqk, dv = lsh_attention_backward(dout, cache)
    assert np.all(dqk[:, :, t + 1 :] == 0) and np.all(dv[:, :, t + 1 :] == 0)


@pytest.mark.parametrize("mode", ["paper", "released"])
def test_causal_pattern_still_depends_on_later_hashes(mode):
    """The documented limit of causal LSH attention, shown rather than hidden.

    Later tokens take places in the sorted order, so they move the chunk boundaries: which earlier
    keys a query at t sees depends on the buckets of tokens after t. With the rotations fixed,
    changing qk after t changes some outputs at positions <= t (true of the released code too).
    """
    rng = np.random.default_rng(11)
    qk, v, _ = make_inputs(rng, 2, 2, 32, 4)
    t = 15
    kwargs = dict(chunk_len=4, n_hashes=2, causal=True, semantics=mode)
    rotations = lsh.random_rotations(rng, 4, 2, 2)  # 2 buckets of ~16 tokens: wider than a window
    out, _ = lsh_attention_forward(qk, v, rotations=rotations, **kwargs)
    qk2 = qk.copy()
    qk2[:, :, t + 1 :] = rng.standard_normal(qk2[:, :, t + 1 :].shape)
    out2, _ = lsh_attention_forward(qk2, v, rotations=rotations, **kwargs)
    assert np.max(np.abs(out[:, :, : t + 1] - out2[:, :, : t + 1])) > 1e-3
    # ... yet what an early query attends to is never a later position (the weights are causal)
    np.testing.assert_array_equal(out[:, :, 0], v[:, :, 0])


@pytest.mark.parametrize("mode", ["paper", "released"])
def test_token_zero_causal_attends_to_itself(mode):
    rng = np.random.default_rng(9)
    qk, v, _ = make_inputs(rng, 2, 3, 17, 4)
    out, *_ = run(qk, v, None, chunk_len=4, n_hashes=2, n_buckets=4, rng=rng, causal=True,
                  mode=mode)  # fmt: skip
    assert np.max(np.abs(out[:, :, 0] - v[:, :, 0])) < 1e-12


def test_padding_keys_get_no_weight_and_no_gradient():
    rng = np.random.default_rng(10)
    qk, v, mask = make_inputs(rng, 2, 2, 15, 4, pad=True)
    out, cache = lsh_attention_forward(qk, v, chunk_len=4, n_hashes=2, rng=rng, mask=mask)
    v2 = v.copy()
    v2[~np.broadcast_to(mask[:, None, :], v.shape[:3])] = 1e3
    out2, _ = lsh_attention_forward(
        qk, v2, chunk_len=4, n_hashes=2, rotations=cache.rotations, mask=mask
    )
    real = mask[:, None, :, None]
    assert np.max(np.abs(np.where(real, out - out2, 0))) < 1e-12
    _, dv = lsh_attention_backward(rng.standard_normal(out.shape) * real, cache)
    assert np.all(dv[~np.broadcast_to(mask[:, None, :], v.shape[:3])] == 0)


# ---------------------------------------------------------------------------------------------
# Property test
# ---------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 2),
    length=st.integers(1, 14),
    d=st.integers(1, 4),
    n_hashes=st.integers(1, 3),
    half_buckets=st.integers(1, 4),
    chunk_len=st.integers(1, 6),
    nb=st.integers(0, 2),
    na=st.integers(0, 1),
    causal=st.booleans(),
    released=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_matches_references(
    b, h, length, d, n_hashes, half_buckets, chunk_len, nb, na, causal, released, seed
):
    rng = np.random.default_rng(seed)
    qk, v, mask = make_inputs(rng, b, h, length, d, pad=length > 1)
    n_buckets = 2 * half_buckets
    out, cache, across, dup = run(qk, v, mask, chunk_len=chunk_len, n_hashes=n_hashes,
                                  n_buckets=n_buckets, rng=rng, causal=causal, nb=nb, na=na,
                                  mode="released" if released else "paper")  # fmt: skip
    assert out.shape == v.shape and cache.buckets.shape == (b, h, n_hashes, length)
    assert cache.buckets.min() >= 0 and cache.buckets.max() < n_buckets
    if released:
        ref = dense(qk, v, cache.buckets, n_buckets, chunk_len, causal=causal,
                             mask=mask, nb=nb, na=na, across=True, dup=True)  # fmt: skip
    else:
        ref = dense(qk, v, cache.buckets, n_buckets, chunk_len, causal=causal, mask=mask,
                              nb=nb, na=na, across=False, dup=False)  # fmt: skip
    assert np.max(np.abs(out - ref)) < 1e-10


# ---------------------------------------------------------------------------------------------
# Memory: linear in L
# ---------------------------------------------------------------------------------------------


def _peak_bytes(length, rng):
    qk, v, _ = make_inputs(rng, 1, 1, length, 16)
    rotations = lsh.random_rotations(rng, 16, 2, lsh.default_n_buckets(length, 32))
    dout = rng.standard_normal(v.shape)
    tracemalloc.start()
    try:
        out, cache = lsh_attention_forward(
            qk, v, chunk_len=32, n_hashes=2, rotations=rotations, causal=True
        )
        lsh_attention_backward(dout, cache)
        del out, cache
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_grows_linearly():
    rng = np.random.default_rng(11)
    small, large = _peak_bytes(512, rng), _peak_bytes(2048, rng)
    ratio = large / small
    # 4x the length: about 4x the memory (an L x L array would make it about 16x)
    assert 3.0 < ratio < 5.5, (small, large, ratio)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(n_buckets=3), "n_buckets"),
        (dict(n_buckets=0), "n_buckets"),
        (dict(n_buckets=-2), "n_buckets"),
        (dict(chunk_len=0), "chunk_len"),
        (dict(chunk_len=-4), "chunk_len"),
        (dict(n_hashes=0), "n_hashes"),
        (dict(n_chunks_before=-1), "n_chunks_before"),
        (dict(rotations=np.zeros((5, 2, 2))), "rotations"),  # Dh 5 instead of 4
        (dict(rotations=np.zeros((4, 3, 2))), "rotations"),  # 3 rounds instead of 2
        (dict(rotations=np.zeros((4, 2, 3)), n_buckets=4), "rotations"),  # K 6 instead of 4
        (dict(rotations=np.zeros((3, 4, 2, 2))), "rotations"),  # 3 heads instead of 2
        (dict(rng=None), "rng"),
    ],
)
def test_bad_arguments(change, name):
    rng = np.random.default_rng(12)
    qk, v, _ = make_inputs(rng, 1, 2, 8, 4)
    kwargs = dict(chunk_len=4, n_hashes=2, rng=rng)
    kwargs.update(change)
    with pytest.raises((ValueError, TypeError), match=name) as err:
        lsh_attention_forward(qk, v, **kwargs)
    assert "expected" in str(err.value) and "got" in str(err.value) or name == "rng"


def test_bad_arrays():
    rng = np.random.default_rng(13)
    qk, v, _ = make_inputs(rng, 2, 2, 8, 4)
    kw = dict(chunk_len=4, rng=rng)
    for bad_v in (v[:1], v[:, :1], v[:, :, :7]):  # other B, H, L
        with pytest.raises(ValueError, match="v: expected shape"):
            lsh_attention_forward(qk, bad_v, **kw)
    with pytest.raises(ValueError, match="mask: expected shape"):
        lsh_attention_forward(qk, v, mask=np.ones((2, 7), bool), **kw)
    for bad in (np.nan, np.inf):
        broken = qk.copy()
        broken[0, 0, 3, 1] = bad
        with pytest.raises(ValueError, match="qk: expected finite"):
            lsh_attention_forward(broken, v, **kw)
        with pytest.raises(ValueError, match="v: expected finite"):
            broken_v = v.copy()
            broken_v[1, 0, 2, 0] = bad
            lsh_attention_forward(qk, broken_v, **kw)
    rot = np.full((4, 1, 1), np.nan)
    with pytest.raises(ValueError, match="rotations: expected finite"):
        lsh_attention_forward(qk, v, chunk_len=4, rotations=rot)


@pytest.mark.parametrize("chunks_per_block", [1, 3])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mode", ["released", "paper", "dup", "across"])
def test_blocks_of_chunks_change_nothing(monkeypatch, chunks_per_block, causal, mode):
    """The window attention runs a few chunks at a time (windows.BLOCK_ELEMENTS);
    with blocks of 1 or 3 chunks, windows that straddle blocks and wrap around, the output still
    equals the reference and the gradients equal those of a single block."""
    from minireformer import windows

    rng = np.random.default_rng(21)
    b, h, length, chunk_len, nb, na = 2, 2, 23, 4, 1, 1
    qk, v, mask = make_inputs(rng, b, h, length, 3, pad=True)
    dout = rng.standard_normal(v.shape)
    settings = dict(chunk_len=chunk_len, n_hashes=3, n_buckets=4, causal=causal, nb=nb, na=na,
                    mode=mode)  # fmt: skip
    out1, cache1, across, dup = run(qk, v, mask, rng=np.random.default_rng(0), **settings)
    grads1 = lsh_attention_backward(dout, cache1)
    width = (nb + 1 + na) * chunk_len
    monkeypatch.setattr(windows, "BLOCK_ELEMENTS", chunks_per_block * b * h * chunk_len * width)
    out, cache, _, _ = run(qk, v, mask, rng=np.random.default_rng(0), **settings)
    ref = dense(qk, v, cache.buckets, 4, chunk_len, causal=causal, mask=mask, nb=nb,
                         na=na, across=across, dup=dup)  # fmt: skip
    assert np.max(np.abs(out - ref)) < 1e-10
    assert np.max(np.abs(out - out1)) < 1e-12
    for g, g1 in zip(lsh_attention_backward(dout, cache), grads1):
        assert np.max(np.abs(g - g1)) < 1e-12


@pytest.mark.parametrize("mode", ["released", "paper"])
def test_factorised_buckets_equal_the_reference_and_replay(mode):
    rng = np.random.default_rng(22)
    qk, v, mask = make_inputs(rng, 1, 2, 19, 4, pad=True)
    settings = dict(chunk_len=3, n_hashes=2, causal=True, mode=mode)
    out, cache, across, dup = run(qk, v, mask, n_buckets=(2, 4), rng=rng, **settings)
    assert cache.buckets.max() < 8 and cache.rotations.shape[-1] == 1 + 2
    ref = dense(qk, v, cache.buckets, 8, 3, causal=True, mask=mask, nb=1, na=0,
                         across=across, dup=dup)  # fmt: skip
    assert np.max(np.abs(out - ref)) < 1e-10
    again, cache2 = lsh_attention_forward(qk, v, chunk_len=3, n_hashes=2, n_buckets=(2, 4),
                                          rotations=cache.rotations, causal=True, mask=mask,
                                          semantics=MODES[mode])  # fmt: skip
    assert np.array_equal(cache2.buckets, cache.buckets) and np.array_equal(again, out)
