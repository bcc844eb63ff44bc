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
from .checks import check_float_array, check_positive_int

MAX_BLOCK_ELEMENTS = 1 << 23  # projections held at once while hashing (32 MiB in float32)


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

    The projections xR of all positions would take B*H*L*R*K/2 numbers, which grows as L^2 under
    the default K = 2L/C; positions are therefore hashed in blocks of at most
    ``MAX_BLOCK_ELEMENTS`` projections, so hashing memory stays linear in L.

    Args:
        x: (B, H, L, Dh) vectors to hash.
        rotations: (Dh, R, K/2) shared by all heads, or (H, Dh, R, K/2) one set per head; used in
            the dtype of ``x``.

    Returns:
        integer array (B, H, R, L) of bucket ids in [0, K).
    """
    check_float_array("x", x, ndim=4, nonempty=True)
    batch, n_heads, length, dim = x.shape
    if getattr(rotations, "ndim", None) not in (3, 4):
        raise ValueError(
            f"rotations: expected shape (Dh, R, K/2) or (H, Dh, R, K/2), "
            f"got {getattr(rotations, 'shape', type(rotations).__name__)}"
        )
    if rotations.ndim == 3:
        check_float_array("rotations", rotations, shape=(dim, None, None))
        flat = rotations.reshape(dim, -1)  # (Dh, R*K/2), broadcast over heads
    else:
        check_float_array("rotations", rotations, shape=(n_heads, dim, None, None))
        flat = rotations.reshape(n_heads, dim, -1)[None]  # (1, H, Dh, R*K/2)
    n_hashes, half = rotations.shape[-2:]
    xp = backend.array_module(x, rotations)
    flat = flat.astype(x.dtype, copy=False)  # float64 rotations would make float64 projections
    buckets = xp.empty((batch, n_heads, length, n_hashes), dtype=xp.int64)
    block = max(1, MAX_BLOCK_ELEMENTS // (batch * n_heads * n_hashes * half))
    for start in range(0, length, block):
        part = x[:, :, start : start + block]  # (B, H, l, Dh)
        rotated = (part @ flat).reshape(part.shape[:3] + (n_hashes, half))  # (B, H, l, R, K/2)
        buckets[:, :, start : start + block] = _argmax_signed(rotated, xp)
    return xp.ascontiguousarray(xp.moveaxis(buckets, -1, 2))  # (B, H, R, L)


def _argmax_signed(rotated, xp):
    """argmax([r; -r]) over the last axis without building the concatenation.

    The largest of -r is -min(r); ties go to the first half, as argmax of the concatenation does.
    """
    top, bottom = xp.max(rotated, axis=-1), -xp.min(rotated, axis=-1)
    half = rotated.shape[-1]
    return xp.where(top >= bottom, xp.argmax(rotated, axis=-1), half + xp.argmin(rotated, axis=-1))
