"""Angular LSH (paper section 2, Figure 1): bucket = argmax([xR; -xR])."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minireformer import lsh, reference
from minireformer.measuring import memory


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 3),
    length=st.integers(1, 40),
    dim=st.integers(1, 8),
    rounds=st.integers(1, 4),
    half=st.integers(1, 6),
    per_head=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_hash_equals_reference(b, h, length, dim, rounds, half, per_head, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, h, length, dim))
    rot = lsh.random_rotations(rng, dim, rounds, 2 * half, n_heads=h if per_head else None)
    buckets = lsh.hash_vectors(x, rot)
    assert buckets.shape == (b, h, rounds, length)
    np.testing.assert_array_equal(buckets, reference.angular_hash(x, rot))
    # the negation identity h(-x) = (h(x) + K/2) mod K
    np.testing.assert_array_equal(lsh.hash_vectors(-x, rot), (buckets + half) % (2 * half))


def test_blocked_hashing_equals_one_block(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 37, 8))
    rot = lsh.random_rotations(rng, 8, 3, 10, n_heads=2)
    whole = lsh.hash_vectors(x, rot)
    monkeypatch.setattr(lsh, "MAX_BLOCK_ELEMENTS", 50)  # forces blocks of one position
    np.testing.assert_array_equal(lsh.hash_vectors(x, rot), whole)


def test_close_vectors_share_buckets_far_ones_do_not():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(64)
    near = x + 0.01 * rng.standard_normal(64)
    rot = lsh.random_rotations(rng, 64, 50, 16)
    b = lsh.hash_vectors(np.stack([x, near, -x])[None, None], rot)[0, 0]  # (R, 3)
    assert np.mean(b[:, 0] == b[:, 1]) > 0.9
    assert np.all(b[:, 0] != b[:, 2])


def test_default_n_buckets_follows_the_paper_rule():
    assert lsh.default_n_buckets(1024, 64) == 32  # m = 2L/K with m = C
    assert lsh.default_n_buckets(100, 64) == 4  # ceil(100/64) = 2
    assert lsh.default_n_buckets(3, 64) == 2


@pytest.mark.parametrize("n_buckets", [0, 3, -2])
def test_bad_n_buckets(n_buckets):
    with pytest.raises(ValueError, match="n_buckets"):
        lsh.random_rotations(np.random.default_rng(0), 4, 1, n_buckets)


def test_bad_inputs_name_the_argument():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 4))
    with pytest.raises(ValueError, match="rotations: expected shape"):
        lsh.hash_vectors(x, lsh.random_rotations(rng, 3, 1, 4))
    with pytest.raises(ValueError, match="rotations: expected shape"):
        lsh.hash_vectors(x, lsh.random_rotations(rng, 4, 1, 4, n_heads=3))
    with pytest.raises(ValueError, match="x: expected 4 dimensions"):
        lsh.hash_vectors(x[0], lsh.random_rotations(rng, 4, 1, 4))
    with pytest.raises(TypeError, match="x: expected a floating-point array"):
        lsh.hash_vectors(x.astype(int), lsh.random_rotations(rng, 4, 1, 4))
    with pytest.raises(ValueError, match=r"rotations: expected shape \(Dh, R, K/2\) or"):
        lsh.hash_vectors(x, rng.standard_normal((4, 2)))
    with pytest.raises(ValueError, match="n_hashes"):
        lsh.random_rotations(rng, 4, 0, 4)
    with pytest.raises(TypeError, match="rng"):
        lsh.random_rotations(42, 4, 1, 4)


def test_float32_vectors_are_projected_in_float32():
    """Rotations are drawn in float64 but used in the dtype of x: hashing float32 vectors holds
    float32 projections (half the memory), with the same buckets as float32 rotations give."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 4096, 8)).astype(np.float32)
    rot = lsh.random_rotations(rng, 8, 2, 128)  # float64 as drawn; projections (1, 2, 4096, 2, 64)
    b64, peak64 = memory.measure_peak(lsh.hash_vectors, x, rot)
    b32, peak32 = memory.measure_peak(lsh.hash_vectors, x, rot.astype(np.float32))
    np.testing.assert_array_equal(b64, b32)
    projections_f32 = x.shape[2] * 2 * 2 * 64 * 4
    assert peak64 < peak32 + 0.25 * projections_f32, (peak64, peak32)


def test_default_n_buckets_factorises_long_sequences():
    assert lsh.default_n_buckets(4096, 64) == 128  # at the limit: one factor
    assert lsh.default_n_buckets(8192, 64) == (16, 16)  # K = 256
    k1, k2 = lsh.default_n_buckets(65536, 64)  # K = 2048
    assert k1 % 2 == 0 and k2 % 2 == 0 and k1 * k2 >= 2048 and max(k1, k2) <= 64


def test_factorised_hash_combines_the_factors_in_mixed_radix():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 50, 8))
    factors = (4, 6)
    rotations = lsh.random_rotations(rng, 8, 2, factors, n_heads=3)  # (H, Dh, R, 2 + 3)
    assert rotations.shape == (3, 8, 2, lsh.rotation_width(factors)) == (3, 8, 2, 5)
    h1 = lsh.hash_vectors(x, rotations[..., :2])  # into 4 buckets
    h2 = lsh.hash_vectors(x, rotations[..., 2:])  # into 6 buckets
    buckets = lsh.hash_vectors(x, rotations, factors)
    assert np.array_equal(buckets, h1 + 4 * h2)
    assert buckets.min() >= 0 and buckets.max() < lsh.total_buckets(factors) == 24
    with pytest.raises(ValueError, match="last axis"):
        lsh.hash_vectors(x, rotations, (4, 4))
    with pytest.raises(ValueError, match="n_buckets"):
        lsh.check_n_buckets((4, 3))
