"""Chunks and their look-around windows, by index arithmetic (paper section 2, "Chunking").

A sequence of N slots (positions, or LSH's sorted copies) is padded to a multiple of the chunk
length C and cut into n_c = N / C chunks; chunk c's window is chunks c - n_before, ..., c + n_after,
wrapping around (the released code's ``look_adjacent``). These helpers compute the indices of the
windows and move rows in and out of them, for the window attention (``windows.py``) and the count
of meetings (``meetings.py``); none of them makes a window array of more than a block of chunks.

Shape letters: B batch, H heads, N slots, L length, Lp padded length, n_c chunks, C chunk length,
m chunks in a block, W = (n_before + 1 + n_after) * C window width.
"""

from __future__ import annotations

import math

from . import backend


def padded_length(length: int, chunk_len: int) -> int:
    """The smallest multiple of ``chunk_len`` that is >= ``length``."""
    return chunk_len * math.ceil(length / chunk_len)


def pad_length_axis(x, padded_len: int):
    """Zero-pad axis 2 of x (B, H, L, ...) to ``padded_len``; no copy when nothing is added."""
    extra = padded_len - x.shape[2]
    if extra == 0:
        return x
    xp = backend.array_module(x)
    widths = [(0, 0)] * x.ndim
    widths[2] = (0, extra)
    return xp.pad(x, widths)


def key_validity(mask, batch: int, n_heads: int, length: int, padded_len: int):
    """(B, H, Lp) bool, False for internal padding and for masked tokens; None if all valid."""
    if mask is None and padded_len == length:
        return None
    xp = backend.get_xp() if mask is None else backend.array_module(mask)
    valid = xp.arange(padded_len) < length  # (Lp,)
    if mask is not None:
        valid = valid & pad_length_axis(mask[:, None, :], padded_len)  # (B, 1, Lp)
    return xp.broadcast_to(valid, (batch, n_heads, padded_len))


def gather(x, index):
    """x[b, h, index[b, h, m]]: x (B, H, N, ...), integer index (B, H, M) -> (B, H, M, ...)."""
    xp = backend.array_module(x, index)
    batch, n_heads, n = x.shape[:3]
    # one flat take (faster than take_along_axis): row b*H + h starts at (b*H + h) * N
    starts = (xp.arange(batch * n_heads) * n).reshape(batch, n_heads, 1)
    flat = x.reshape((batch * n_heads * n,) + x.shape[3:])
    return xp.take(flat, index + starts, axis=0)  # (B, H, M, ...)


def window_index(start: int, stop: int, n_chunks: int, n_before: int, n_after: int, xp):
    """(m, n_blocks) int: entry [c - start, i] is chunk (c + i - n_before) mod n_c, the i-th block
    of chunk c's window, for the m = stop - start chunks c in [start, stop)."""
    offsets = xp.arange(-n_before, n_after + 1)  # (n_blocks,)
    return (xp.arange(start, stop)[:, None] + offsets[None, :]) % n_chunks


def window_of(x, index):
    """The windows of some chunks, by index arithmetic: x (B, H, n_c, C, ...) and ``index``
    (m, n_blocks) from :func:`window_index` -> (B, H, m, W, ...), W = n_blocks * C."""
    xp = backend.array_module(x)
    y = xp.take(x, index, axis=2)  # (B, H, m, n_blocks, C, ...)
    return y.reshape(y.shape[:3] + (-1,) + y.shape[5:])


def add_window(acc, dwindow, index) -> None:
    """The adjoint of :func:`window_of`, in place: add dwindow (B, H, m, W, ...) into acc
    (B, H, n_c, C, ...), each block of C slots to the chunk it was copied from."""
    n_blocks = index.shape[1]
    parts = dwindow.reshape(dwindow.shape[:3] + (n_blocks, -1) + dwindow.shape[4:])
    for i in range(n_blocks):
        # the m chunks of one column of ``index`` are distinct (m <= n_c), so += is exact
        acc[:, :, index[:, i]] += parts[:, :, :, i]


def window_multiplicity(delta, n_chunks: int, n_before: int, n_after: int):
    """How many window offsets d in [-n_before, n_after] have d = delta (mod n_chunks).

    A key chunk at ``delta`` chunks from the query chunk appears that many times in the query's
    window: once when n_chunks >= n_before + 1 + n_after, possibly more on short sequences, and 0
    when it is outside the window. ``delta`` is any integer array; the result has its shape.
    """
    xp = backend.array_module(delta)
    delta = delta % n_chunks  # in [0, n_chunks)
    # #{d in [lo, hi]: d = delta mod n} = floor((hi - delta) / n) - floor((lo - 1 - delta) / n)
    return xp.floor_divide(n_after - delta, n_chunks) - xp.floor_divide(
        -n_before - 1 - delta, n_chunks
    )
