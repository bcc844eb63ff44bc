"""Angular locality-sensitive hashing (paper section 2, "Locality sensitive hashing", Figure 1).

To hash a vector x into one of K buckets, project it with a random matrix R of shape (Dh, K/2) and
take the index of the largest entry of the concatenation [xR; -xR] (Andoni et al., 2015):

    h(x) = argmax([x R ; -x R]),        bucket in {0, ..., K-1}.

Vectors at a small angle land in the same bucket with high probability. Because -x flips the sign
of every projection, h(-x) = (h(x) + K/2) mod K. Several independent rounds (n_hashes, R below)
use independent matrices; the rotations of all rounds are stored together.

Factorised buckets (the released code's ``n_buckets`` given as a list, trax and Hugging Face):
hashing costs K/2 projections per vector, which grows with L under the rule K = 2L/C. With
K = K1 * K2, two independent hashes into K1 and K2 buckets are combined as h = h1 + K1 h2, at
(K1 + K2) / 2 projections: two vectors collide iff both hashes collide, so the family is still
locality-sensitive. :func:`default_n_buckets` factorises K above :data:`MAX_UNFACTORED_BUCKETS`.

Shape letters: B batch, H heads, L length, Dh head width, R hash rounds, K buckets.
"""

from __future__ import annotations

import math

from . import backend, checks
from .checks import check_float_array, check_positive_int, check_rng

MAX_BLOCK_ELEMENTS = 1 << 23  # projections held at once while hashing (32 MiB in float32)
# Above this many buckets the default is two factors: K/2 = 64 projections per vector and round
# already cost as much as attending to a window of 2 x 64 keys.
MAX_UNFACTORED_BUCKETS = 128


def default_n_buckets(length: int, chunk_len: int):
    """The paper's rule m = 2L/K for chunk length m: K = 2 * ceil(L / C), at least 2 (even).

    Above :data:`MAX_UNFACTORED_BUCKETS`, two factors (K1, K2) of about sqrt(K) each, both even,
    K1 * K2 >= K: the hashing cost then grows as sqrt(L) instead of L (the released code
    factorises likewise).
    """
    _check_lengths(length, chunk_len)
    n_buckets = max(2, 2 * math.ceil(length / chunk_len))
    if n_buckets <= MAX_UNFACTORED_BUCKETS:
        return n_buckets
    first = 2 * math.ceil(math.sqrt(n_buckets) / 2)  # even, about sqrt(K)
    return first, 2 * math.ceil(n_buckets / (2 * first))


def check_n_buckets(n_buckets):
    """``n_buckets`` must be an even integer >= 2, or a tuple (or list) of such factors; returns
    the int, or the factors as a tuple."""
    if isinstance(n_buckets, (tuple, list)):
        if not n_buckets:
            raise ValueError("n_buckets: expected at least one factor, got an empty sequence")
        return tuple(check_n_buckets(k) for k in n_buckets)
    n_buckets = check_positive_int("n_buckets", n_buckets)
    if n_buckets % 2:
        raise ValueError(f"n_buckets: expected an even number >= 2, got {n_buckets}")
    return n_buckets


def bucket_factors(n_buckets) -> tuple:
    """(K,) for an int K, the factors for a sequence of them (checked by :func:`check_n_buckets`
    where they come in: the config, the sub-layer, the attention's door)."""
    return tuple(n_buckets) if isinstance(n_buckets, (tuple, list)) else (n_buckets,)


def total_buckets(n_buckets) -> int:
    """K, the number of buckets: the product of the factors."""
    return math.prod(bucket_factors(n_buckets))


def rotation_width(n_buckets) -> int:
    """Projections per vector and round, the last axis of the rotations: sum of K_i / 2."""
    return sum(k // 2 for k in bucket_factors(n_buckets))


def random_rotations(rng, dim: int, n_hashes: int, n_buckets: int, n_heads: int | None = None):
    """Draw Gaussian random projections for angular LSH.

    Args:
        rng: ``numpy.random.Generator``.
        dim: Dh, the width of the hashed vectors.
        n_hashes: R, the number of independent hash rounds.
        n_buckets: K, even, or its factors (K1, K2, ...).
        n_heads: if given, one independent set of rotations per head.

    Returns:
        float array (Dh, R, K/2), or (H, Dh, R, K/2) when ``n_heads`` is given, on the backend;
        with factors the last axis is K1/2 + K2/2 + ... (:func:`rotation_width`).
    """
    _check_rotation_args(rng, dim, n_hashes, n_buckets, n_heads)
    shape = (dim, n_hashes, rotation_width(n_buckets))
    if n_heads is not None:
        shape = (n_heads,) + shape
    return backend.asarray(rng.standard_normal(shape))


@checks.door
def _check_lengths(length, chunk_len) -> None:
    check_positive_int("length", length)
    check_positive_int("chunk_len", chunk_len)


@checks.door
def _check_rotation_args(rng, dim, n_hashes, n_buckets, n_heads) -> None:
    check_rng(rng)
    check_positive_int("dim", dim)
    check_positive_int("n_hashes", n_hashes)
    check_n_buckets(n_buckets)
    if n_heads is not None:
        check_positive_int("n_heads", n_heads)


def hash_vectors(x, rotations, n_buckets=None):
    """Bucket ids of ``x`` in every round: argmax([xR; -xR]), or h1 + K1 h2 + ... with factors.

    The projections xR of all positions would take B*H*L*R*K/2 numbers, which grows as L^2 under
    the default K = 2L/C; positions are therefore hashed in blocks of at most
    ``MAX_BLOCK_ELEMENTS`` projections, so hashing memory stays linear in L.

    Args:
        x: (B, H, L, Dh) vectors to hash.
        rotations: (Dh, R, K/2) shared by all heads, or (H, Dh, R, K/2) one set per head; used in
            the dtype of ``x``. With factors, the last axis holds K1/2, then K2/2, ... columns.
        n_buckets: None (one factor, K = 2 x the last axis), K, or the factors (K1, K2, ...).

    Returns:
        integer array (B, H, R, L) of bucket ids in [0, K).
    """
    _check_hash_inputs(x, rotations, n_buckets)
    batch, n_heads, length, dim = x.shape
    if rotations.ndim == 3:
        flat = rotations.reshape(dim, -1)  # (Dh, R*K/2), broadcast over heads
    else:
        flat = rotations.reshape(n_heads, dim, -1)[None]  # (1, H, Dh, R*K/2)
    n_hashes, width = rotations.shape[-2:]
    factors = (2 * width,) if n_buckets is None else bucket_factors(n_buckets)
    xp = backend.array_module(x, rotations)
    flat = flat.astype(x.dtype, copy=False)  # float64 rotations would make float64 projections
    buckets = xp.empty((batch, n_heads, length, n_hashes), dtype=xp.int64)
    block = max(1, MAX_BLOCK_ELEMENTS // (batch * n_heads * n_hashes * width))
    for start in range(0, length, block):
        part = x[:, :, start : start + block]  # (B, H, l, Dh)
        rotated = (part @ flat).reshape(part.shape[:3] + (n_hashes, width))  # (B, H, l, R, .)
        ids, radix, column = 0, 1, 0
        for k in factors:  # mixed radix: h1 + K1 h2 + K1 K2 h3 ...
            ids = ids + radix * _argmax_signed(rotated[..., column : column + k // 2], xp)
            radix, column = radix * k, column + k // 2
        buckets[:, :, start : start + block] = ids
    return xp.ascontiguousarray(xp.moveaxis(buckets, -1, 2))  # (B, H, R, L)


@checks.door
def _check_hash_inputs(x, rotations, n_buckets) -> None:
    """x (B, H, L, Dh) non-empty floats; rotations (Dh, R, K/2) or (H, Dh, R, K/2) whose last axis
    fits ``n_buckets`` (this door needs the bucket factors, so it lives beside them)."""
    check_float_array("x", x, ndim=4, nonempty=True)
    _, n_heads, _, dim = x.shape
    if getattr(rotations, "ndim", None) not in (3, 4):
        raise ValueError(
            f"rotations: expected shape (Dh, R, K/2) or (H, Dh, R, K/2), "
            f"got {getattr(rotations, 'shape', type(rotations).__name__)}"
        )
    lead = (dim,) if rotations.ndim == 3 else (n_heads, dim)
    check_float_array("rotations", rotations, shape=lead + (None, None))
    if 0 in rotations.shape:
        raise ValueError(f"rotations: expected no empty axis, got shape {rotations.shape}")
    width = rotations.shape[-1]
    factors = (2 * width,) if n_buckets is None else bucket_factors(n_buckets)
    if rotation_width(factors) != width:
        raise ValueError(
            f"rotations: expected a last axis of {rotation_width(factors)} for n_buckets="
            f"{n_buckets}, got {width}"
        )


def _argmax_signed(rotated, xp):
    """argmax([r; -r]) over the last axis without building the concatenation.

    The largest of -r is -min(r); ties go to the first half, as argmax of the concatenation does.
    """
    top, bottom = xp.max(rotated, axis=-1), -xp.min(rotated, axis=-1)
    half = rotated.shape[-1]
    return xp.where(top >= bottom, xp.argmax(rotated, axis=-1), half + xp.argmin(rotated, axis=-1))
