"""Positional encodings beyond a learned table: axial (factorised, learned) and sinusoidal (fixed).

A learned positional embedding is a table (max_len, D) whose first L rows are added to the token
embeddings (``model.embed_forward``). For long sequences (the Reformer's 64K tokens) that table is
large, so the released Reformer code (trax ``AxialPositionalEncoding``, Hugging Face
``AxialPositionEmbeddings``) factorises it: position p in a grid of shape (L1, L2), p = i * L2 + j,
gets the concatenation of a row of each of two small tables,

    E[p] = [E1[i] ; E2[j]],     E1: (L1, d1),  E2: (L2, d2),  d1 + d2 = D,

so that L1 * L2 positions cost (L1 d1 + L2 d2) parameters instead of L1 L2 D. Any L <= L1 * L2
works: the first L positions of the grid are used.

Backward: the gradient of E1[i] sums the first d1 columns of dE over every position in row i of the
grid, and that of E2[j] the last d2 columns over every position in column j.

**Sinusoidal** encodings (Vaswani et al. 2017, "Attention Is All You Need", section 3.5) have no
parameters: PE[p, 2k] = sin(p / 10000^(2k/D)) and PE[p, 2k+1] = cos(p / 10000^(2k/D)). Each pair
of columns rotates with the position at its own frequency, so PE[p + t] is a fixed rotation of
PE[p] for every p: a linear map (the query and key projections) can learn "t positions back"
once for all positions. That is what a short-context curriculum needs: a model trained on
windows placed anywhere in the long context (``TrainConfig.random_offset``) learns relative
offsets without a table row per position to fill in. Here the table is scaled by 1/sqrt(D), so a
row has length 1/sqrt(2) like the token embeddings' about 1.

Shape letters: L length, D model width, L1/L2 axial shape, d1/d2 axial widths.

References: https://arxiv.org/abs/2001.04451 (Reformer; axial embeddings are in its released code),
Ho et al. 2019 "Axial Attention in Multidimensional Transformers" (https://arxiv.org/abs/1912.12180),
https://arxiv.org/abs/1706.03762 (sinusoids).
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend, checks
from .checks import check_float_array, check_nonnegative_int, check_positive_int

AXIAL_KEYS = ("axial_1", "axial_2")  # parameter names of the two factor tables


def check_axial(axial_shape, axial_dims, d_model: int, length: int | None = None):
    """Validate an axial configuration; ``ValueError`` naming the field at fault.

    Args:
        axial_shape: (L1, L2) positive ints.
        axial_dims: (d1, d2) positive ints with d1 + d2 == d_model.
        d_model: D.
        length: if given, the longest sequence to embed: L1 * L2 must be >= length.

    Returns:
        ``(axial_shape, axial_dims)`` as tuples of ints.
    """
    for name, value in (("axial_shape", axial_shape), ("axial_dims", axial_dims)):
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ValueError(f"{name}: expected a pair of positive integers, got {value!r}")
    shape = tuple(check_positive_int("axial_shape", v) for v in axial_shape)
    dims = tuple(check_positive_int("axial_dims", v) for v in axial_dims)
    if sum(dims) != d_model:
        raise ValueError(
            f"axial_dims: expected two widths summing to d_model={d_model}, got {dims}"
        )
    if length is not None and shape[0] * shape[1] < length:
        raise ValueError(
            f"axial_shape: expected a product >= the sequence length {length}, "
            f"got {shape} (product {shape[0] * shape[1]})"
        )
    return shape, dims


def init_axial(rng, axial_shape, axial_dims, dtype="float32", scale: float = 0.02):
    """The two factor tables {"axial_1": (L1, d1), "axial_2": (L2, d2)}, N(0, scale^2) entries."""
    checks.check_rng(rng)
    shape, dims = check_axial(axial_shape, axial_dims, sum(axial_dims))
    return {
        key: backend.asarray(scale * rng.standard_normal((n, d)), dtype=dtype)
        for key, n, d in zip(AXIAL_KEYS, shape, dims)
    }


class AxialCache(NamedTuple):
    length: int  # L, the number of positions embedded
    grid: tuple  # (L1, L2)
    d1: int  # width of the first table
    offset: int = 0  # the first position embedded


def _rows(offset: int, length: int, n2: int) -> tuple:
    """(first grid row, rows touched, start within them) for positions offset..offset+L-1."""
    first = offset // n2
    return first, -(-(offset + length) // n2) - first, offset - first * n2


def axial_forward(p, length: int, offset: int = 0):
    """Axial positional embeddings of positions offset..offset+L-1.

    Args:
        p: {"axial_1": (L1, d1), "axial_2": (L2, d2)} float.
        length: L, with offset + L <= L1 * L2.
        offset: the first position (a window placed later in a long context; default 0).

    Returns:
        ``(pos (L, d1 + d2), cache)`` with pos[t] = [E1[i]; E2[j]] for position
        offset + t = i * L2 + j.
    """
    missing = [key for key in AXIAL_KEYS if key not in p]
    if missing:
        raise ValueError(f"p: expected the tables {list(AXIAL_KEYS)}, missing {missing}")
    e1, e2 = p[AXIAL_KEYS[0]], p[AXIAL_KEYS[1]]
    check_float_array(AXIAL_KEYS[0], e1, ndim=2)
    check_float_array(AXIAL_KEYS[1], e2, ndim=2)
    length = check_positive_int("length", length)
    offset = check_nonnegative_int("offset", offset)
    (n1, d1), (n2, d2) = e1.shape, e2.shape
    check_axial((n1, n2), (d1, d2), d1 + d2, offset + length)
    xp = backend.array_module(e1, e2)
    first, rows, start = _rows(offset, length, n2)
    grid = xp.concatenate(
        [
            xp.broadcast_to(e1[first : first + rows, None, :], (rows, n2, d1)),  # (rows, L2, d1)
            xp.broadcast_to(e2[None, :, :], (rows, n2, d2)),  # (rows, L2, d2)
        ],
        axis=-1,
    )  # (rows, L2, D)
    pos = grid.reshape(rows * n2, d1 + d2)[start : start + length]  # (L, D)
    return pos, AxialCache(length, (n1, n2), d1, offset)


def axial_backward(dpos, cache: AxialCache):
    """dpos (L, D) -> {"axial_1": (L1, d1), "axial_2": (L2, d2)} gradients."""
    length, (n1, n2), d1, offset = cache
    check_float_array("dpos", dpos, ndim=2)
    if dpos.shape[0] != length:
        raise ValueError(f"dpos: expected {length} positions, got shape {tuple(dpos.shape)}")
    xp = backend.array_module(dpos)
    first, rows, start = _rows(offset, length, n2)
    padded = xp.zeros((rows * n2, dpos.shape[1]), dtype=dpos.dtype)  # (rows*L2, D)
    padded[start : start + length] = dpos  # positions outside the window contribute nothing
    padded = padded.reshape(rows, n2, -1)  # (rows, L2, D)
    d_e1 = xp.zeros((n1, d1), dtype=dpos.dtype)  # (L1, d1)
    d_e1[first : first + rows] = padded[..., :d1].sum(axis=1)
    d_e2 = padded[..., d1:].sum(axis=0)  # (L2, d2)
    return {AXIAL_KEYS[0]: d_e1, AXIAL_KEYS[1]: d_e2}


def sinusoidal(length: int, d_model: int, offset: int = 0, dtype="float32"):
    """(L, D) fixed encodings of positions offset..offset+L-1 (module docstring), no parameters."""
    length = check_positive_int("length", length)
    d_model = check_positive_int("d_model", d_model)
    offset = check_nonnegative_int("offset", offset)
    xp = backend.get_xp()
    pos = xp.arange(offset, offset + length, dtype=xp.float64)[:, None]  # (L, 1)
    rate = 10000.0 ** (-xp.arange(0, d_model, 2, dtype=xp.float64) / d_model)  # (ceil(D/2),)
    table = xp.zeros((length, d_model))
    table[:, 0::2] = xp.sin(pos * rate)
    table[:, 1::2] = xp.cos(pos * rate[: d_model // 2])
    return (table / d_model**0.5).astype(dtype)  # (L, D)
