"""Angular locality-sensitive hashing (paper section 2, "Locality sensitive hashing", Figure 1).

To hash a vector x into one of K buckets, project it with a random matrix R of shape (Dh, K/2) and
take the index of the largest entry of the concatenation [xR; -xR] (Andoni et al., 2015):

    h(x) = argmax([x R ; -x R]),        bucket in {0, ..., K-1}.

Vectors at a small angle land in the same bucket with high probability. Because -x flips the sign
of every projection, h(-x) = (h(x) + K/2) mod K. Several independent rounds (n_hashes, R below)
use independent matrices; the rotations of all rounds are stored together.

Shape letters: B batch, H heads, L length, Dh head width, R hash rounds, K buckets.
"""

from __future__ import annotations

import math

from . import backend
from .checks import check_array, check_float_array, check_positive_int


def default_n_buckets(length: int, chunk_len: int) -> int:
    """The paper's rule m = 2L/K for chunk length m: K = 2 * ceil(L / C), at least 2 (even)."""
    length = check_positive_int("length", length)
    chunk_len = check_positive_int("chunk_len", chunk_len)
    return max(2, 2 * math.ceil(length / chunk_len))


def check_n_buckets(n_buckets) -> int:
    """``n_buckets`` must be an even integer >= 2."""
    n_buckets = check_positive_int("n_buckets", n_buckets)
    if n_buckets % 2:
        raise ValueError(f"n_buckets: expected an even number >= 2, got {n_buckets}")
    return n_buckets


def random_rotations(rng, dim: int, n_hashes: int, n_buckets: int, n_heads: int | None = None):
    """Draw Gaussian random projections for angular LSH.

    Args:
        rng: ``numpy.random.Generator``.
        dim: Dh, the width of the hashed vectors.
        n_hashes: R, the number of independent hash rounds.
        n_buckets: K, even.
        n_heads: if given, one independent set of rotations per head.

    Returns:
        float array (Dh, R, K/2), or (H, Dh, R, K/2) when ``n_heads`` is given, on the backend.
    """
    backend.check_rng(rng)
    dim = check_positive_int("dim", dim)
    n_hashes = check_positive_int("n_hashes", n_hashes)
    n_buckets = check_n_buckets(n_buckets)
    shape = (dim, n_hashes, n_buckets // 2)
    if n_heads is not None:
        shape = (check_positive_int("n_heads", n_heads),) + shape
    return backend.asarray(rng.standard_normal(shape))


def hash_vectors(x, rotations):
    """Bucket ids of ``x`` in every round: argmax([xR; -xR]).

    Args:
        x: (B, H, L, Dh) vectors to hash.
        rotations: (Dh, R, K/2) shared by all heads, or (H, Dh, R, K/2) one set per head.

    Returns:
        integer array (B, H, R, L) of bucket ids in [0, K).
    """
    check_float_array("x", x, ndim=4)
    dim = x.shape[-1]
    if rotations.ndim == 3:
        check_float_array("rotations", rotations, shape=(dim, None, None))
        rotated = (x @ rotations.reshape(dim, -1)).reshape(x.shape[:3] + rotations.shape[1:])
    else:
        check_array("rotations", rotations, shape=(x.shape[1], dim, None, None))
        check_float_array("rotations", rotations)
        n_heads, _, n_hashes, half = rotations.shape
        flat = rotations.reshape(n_heads, dim, n_hashes * half)  # (H, Dh, R*K/2)
        rotated = (x @ flat[None]).reshape(x.shape[:3] + (n_hashes, half))  # (B, H, L, R, K/2)
    xp = backend.array_module(x, rotations)
    both = xp.concatenate([rotated, -rotated], axis=-1)  # (B, H, L, R, K)
    return xp.moveaxis(xp.argmax(both, axis=-1), -1, 2)  # (B, H, R, L)
