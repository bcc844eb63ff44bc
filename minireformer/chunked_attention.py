"""Chunked attention with a look-around window: the machinery shared by LSH and local attention.

Paper section 2, "Chunking" and Figure 2: a sequence (sorted by hash bucket for LSH attention,
left in its original order for local attention) is cut into chunks of C consecutive slots; the
queries of chunk c attend to the keys of chunks c - n_before, ..., c + n_after. Chunk indices
wrap around (chunk 0 looks back at the last chunk), as in the released trax code
(``look_adjacent`` in ``trax/layers/research/efficient_attention.py``) and Hugging Face's
``_look_adjacent``. Each chunk's window holds W = (n_before + 1 + n_after) * C keys, so attention
costs O(L W) instead of O(L^2) and no L x L array is ever made.

Within a window the logits are masked exactly as in dense attention (attention.mask_logits):
causal and padding keys set to NEG_MASK, the query's own position set to NEG_SELF (shared-QK).
Optionally keys whose ``group`` (LSH: bucket and round) differs from the query's are set to
NEG_MASK, and a constant ``log_count`` is subtracted from the logits (LSH's duplicate correction).

When a sequence has fewer chunks than the window is wide, the same chunk appears in the window
several times; :func:`window_multiplicity` counts how often, so that callers can correct for it.

Shape letters: B batch, H heads, N slots (L, or R*L for LSH), n_c = N / C chunks, C chunk length,
W = (n_before + 1 + n_after) * C window width, Dh head width, Dv value width.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from . import backend
from .attention import (
    NEG_MASK,
    check_heads,
    mask_logits,
    unit_norm_backward,
    unit_norm_forward,
)
from .checks import check_grad, check_nonnegative_int, check_positive_int


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


def gather(x, index):
    """x[b, h, index[b, h, m]]: x (B, H, N, ...), integer index (B, H, M) -> (B, H, M, ...)."""
    xp = backend.array_module(x, index)
    batch, n_heads, n = x.shape[:3]
    # one flat take (faster than take_along_axis): row b*H + h starts at (b*H + h) * N
    starts = (xp.arange(batch * n_heads) * n).reshape(batch, n_heads, 1)
    flat = x.reshape((batch * n_heads * n,) + x.shape[3:])
    return xp.take(flat, index + starts, axis=0)  # (B, H, M, ...)


def look_around(x, n_before: int, n_after: int):
    """Each chunk followed by its neighbours: (B, H, n_c, C, ...) -> (B, H, n_c, W, ...).

    Slot block i of chunk c holds chunk (c + d) mod n_c for d = -n_before + i, so the window of
    chunk c is chunks c - n_before, ..., c + n_after in that order, wrapping around the ends.
    """
    xp = backend.array_module(x)
    if n_before == 0 and n_after == 0:
        return x
    return xp.concatenate(
        [xp.roll(x, -d, axis=2) for d in range(-n_before, n_after + 1)], axis=3
    )  # (B, H, n_c, W, ...)


def look_around_backward(dwindow, n_before: int, n_after: int):
    """Adjoint of :func:`look_around`: (B, H, n_c, W, ...) -> (B, H, n_c, C, ...).

    Chunk c receives the gradient of every window slot that copied it: block d of chunk c - d.
    """
    xp = backend.array_module(dwindow)
    n_blocks = n_before + 1 + n_after
    blocks = xp.split(dwindow, n_blocks, axis=3)  # n_blocks x (B, H, n_c, C, ...)
    total = None
    for d, block in zip(range(-n_before, n_after + 1), blocks):
        moved = xp.roll(block, d, axis=2) if d else block
        total = moved if total is None else total + moved
    return total


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


def _matmul_t(a, b):
    """a @ b^T over the last two axes; the (small) transposed operand is made contiguous first,
    which NumPy's batched matmul handles faster than a transposed view of a gathered array."""
    xp = backend.array_module(a, b)
    return xp.matmul(a, xp.ascontiguousarray(b.swapaxes(-1, -2)))


def window_attention_forward(
    q, k, v, pos, *, n_before, n_after, causal, key_valid=None, group=None, log_count=None
):
    """Softmax attention of each chunk's queries over its look-around window.

    Every slot holds one query, and its key and value; chunk c's queries attend to the keys of
    chunks c - n_before .. c + n_after (wrapping). Logits q . k are masked as in dense attention
    (causal and padding -> NEG_MASK, the query's own position -> NEG_SELF), keys of another
    ``group`` -> NEG_MASK, then ``log_count`` is subtracted.

    Args:
        q: (B, H, n_c, C, Dh) queries; k: (B, H, n_c, C, Dh) keys; v: (B, H, n_c, C, Dv) values.
        pos: integer original positions of the slots, (B, H, n_c, C) or broadcastable.
        n_before, n_after: chunks looked back / ahead.
        causal: mask keys whose position is after the query's.
        key_valid: None or bool (B, H, n_c, C): False for padding keys.
        group: None or integer (B, H, n_c, C): a query only attends to keys of its own group.
        log_count: None or float broadcastable to (B, H, n_c, C, W), subtracted from the logits.

    Returns:
        ``(out (B, H, n_c, C, Dv), lse (B, H, n_c, C), probs (B, H, n_c, C, W), keep)`` where
        ``keep`` (bool, broadcastable to probs) is False where a logit was replaced by a constant.
    """
    xp = backend.array_module(q, k, v)
    # Memory: a window copy of k or v is as large as the (C, W) logits when Dh ~ W / 2, so each
    # is built just before its single use and released right after (del), as are the logits'
    # temporaries: this layer's peak is a few arrays of the logits' size, not a dozen.
    k_pos = look_around(pos, n_before, n_after)  # (B, H, n_c, W)
    valid = None if key_valid is None else look_around(key_valid, n_before, n_after)
    logits = _matmul_t(q, look_around(k, n_before, n_after))  # (B, H, n_c, C, W)
    logits, keep = mask_logits(logits, pos, k_pos, causal=causal, key_valid=valid, self_mask=True)
    if group is not None:
        same = group[..., :, None] == look_around(group, n_before, n_after)[..., None, :]
        xp.copyto(logits, xp.asarray(NEG_MASK, dtype=logits.dtype), where=~same)
        keep = same if keep is None else keep & same  # (B, H, n_c, C, W)
        del same
    # In place from here on: the (B, H, n_c, C, W) logits are the largest array of the layer.
    if log_count is not None:
        logits -= log_count
        del log_count
    top = xp.max(logits, axis=-1, keepdims=True)  # (B, H, n_c, C, 1) subtracted for stability
    logits -= top
    probs = xp.exp(logits, out=logits)  # (B, H, n_c, C, W)
    total = xp.sum(probs, axis=-1, keepdims=True)
    probs /= total
    lse = (top + xp.log(total))[..., 0]  # (B, H, n_c, C)
    out = xp.matmul(probs, look_around(v, n_before, n_after))  # (B, H, n_c, C, Dv)
    return out, lse, probs, keep


def window_attention_backward(dout, row, probs, keep, q, k, v, *, n_before, n_after):
    """Gradients of window attention, given the weights each query finally gave each window slot.

    With P the weights (one softmax per query over all the slots it attends to, possibly across
    several rounds), out_i = sum P_is v_s and S the logits:

        dv_s = sum_i P_is dout_i,   dS_is = P_is (dout_i . v_s - dout_i . out_i),

    then dq_i = sum_s dS_is k_s and dk_s = sum_i dS_is q_i. Logits replaced by a mask constant
    (``keep`` False) get no gradient. ``row`` is dout_i . out_i with out_i the query's final output.

    Args:
        dout: (B, H, n_c, C, Dv) upstream gradient of each query slot.
        row: (B, H, n_c, C) dout . out per query slot.
        probs: (B, H, n_c, C, W) the weights P; keep: bool broadcastable to probs.
        q, k, v: (B, H, n_c, C, .) as given to :func:`window_attention_forward`.

    Returns:
        ``(dq, dk, dv)`` shaped like q, k, v (per slot; keys and values summed over the windows
        that saw them).
    """
    xp = backend.array_module(dout, probs)
    # Each window-sized array lives only for its one product (see window_attention_forward), and
    # the (..., C, W) weights enter the products as transposed views, never as copies.
    dv = look_around_backward(xp.matmul(probs.swapaxes(-1, -2), dout), n_before, n_after)
    dlogits = _matmul_t(dout, look_around(v, n_before, n_after))  # (B, H, n_c, C, W); in place:
    dlogits -= row[..., None]
    dlogits *= probs
    if keep is not None:
        xp.copyto(dlogits, xp.asarray(0, dtype=dlogits.dtype), where=~keep)
    dq = xp.matmul(dlogits, look_around(k, n_before, n_after))  # (B, H, n_c, C, Dh)
    dk = look_around_backward(xp.matmul(dlogits.swapaxes(-1, -2), q), n_before, n_after)
    return dq, dk, dv


# ---------------------------------------------------------------------------------------------
# Validation shared by local and LSH attention
# ---------------------------------------------------------------------------------------------


def check_chunked_inputs(qk, v, mask, causal, chunk_len, n_chunks_before, n_chunks_after):
    """:func:`attention.check_heads` (qk, v, mask, causal), chunk_len >= 1 and
    n_chunks_before, n_chunks_after >= 0. Returns chunk_len as an int."""
    check_heads("qk", qk, "v", v, mask, causal)
    chunk_len = check_positive_int("chunk_len", chunk_len)
    check_nonnegative_int("n_chunks_before", n_chunks_before)
    check_nonnegative_int("n_chunks_after", n_chunks_after)
    return chunk_len


def key_validity(mask, batch: int, n_heads: int, length: int, padded_len: int):
    """(B, H, Lp) bool, False for internal padding and for masked tokens; None if all valid."""
    if mask is None and padded_len == length:
        return None
    xp = backend.get_xp() if mask is None else backend.array_module(mask)
    valid = xp.arange(padded_len) < length  # (Lp,)
    if mask is not None:
        valid = valid & pad_length_axis(mask[:, None, :], padded_len)  # (B, 1, Lp)
    return xp.broadcast_to(valid, (batch, n_heads, padded_len))


# ---------------------------------------------------------------------------------------------
# Local attention: chunks of the unsorted sequence
# ---------------------------------------------------------------------------------------------


class LocalAttentionCache(NamedTuple):
    q: object  # (B, H, n_c, C, Dh) queries (the padded qk) in chunks
    k: object  # (B, H, n_c, C, Dh) unit-norm keys in chunks
    v: object  # (B, H, n_c, C, Dv) values in chunks
    probs: object  # (B, H, n_c, C, W) attention weights over each chunk's window
    keep: object  # bool broadcastable to probs: False where a logit was a mask constant
    out: object  # (B, H, n_c, C, Dv) outputs in chunks
    unit: object  # UnitNormCache of the padded keys
    length: int  # L, before padding
    n_before: int
    n_after: int


def local_attention_forward(
    qk, v, *, chunk_len, causal=False, mask=None, n_chunks_before=1, n_chunks_after=0
):
    """Local (chunked) shared-QK attention over the sequence in its original order.

    The sequence is cut into chunks of C positions; chunk c attends to chunks c - n_chunks_before
    .. c + n_chunks_after, wrapping around the ends as the released code does (the causal mask
    removes the wrapped, later chunks). Shared-QK conventions as in
    attention.shared_qk_attention_forward: keys k_j = qk_j / |qk_j|, logits qk_i . k_j unscaled,
    self NEG_SELF, causal / padding NEG_MASK. A key that appears in a window several times (only
    when the sequence has fewer chunks than the window is wide) counts once, so the result equals
    dense attention restricted to the band of keys in the window.

    Args:
        qk: (B, H, L, Dh) float shared queries/keys; v: (B, H, L, Dv) float values; any L >= 1
            (padded internally to a multiple of C, the padding masked).
        chunk_len: C. causal: query i sees keys j <= i. mask: None or (B, L) bool, True = real.
        n_chunks_before, n_chunks_after: the look-around window, in chunks.

    Returns:
        ``(out (B, H, L, Dv), cache)``.
    """
    chunk_len = check_chunked_inputs(
        qk, v, mask, causal, chunk_len, n_chunks_before, n_chunks_after
    )
    xp = backend.array_module(qk, v)
    batch, n_heads, length, _ = qk.shape
    padded = padded_length(length, chunk_len)
    n_chunks = padded // chunk_len

    def chunks(x):  # (B, H, Lp, ...) -> (B, H, n_c, C, ...)
        return x.reshape((batch, n_heads, n_chunks, chunk_len) + x.shape[3:])

    q = pad_length_axis(qk, padded)  # (B, H, Lp, Dh)
    keys, unit = unit_norm_forward(q)  # (B, H, Lp, Dh); padding stays 0
    valid = key_validity(mask, batch, n_heads, length, padded)
    pos = xp.arange(padded).reshape(1, 1, n_chunks, chunk_len)
    # a chunk that appears several times in a window (short sequences) is counted once
    offsets = xp.arange(-n_chunks_before, n_chunks_after + 1)  # (n_blocks,)
    mult = window_multiplicity(offsets, n_chunks, n_chunks_before, n_chunks_after)
    log_count = None
    if bool(xp.any(mult > 1)):
        log_count = xp.repeat(xp.log(mult.astype(qk.dtype)), chunk_len)  # (W,)
    out, _, probs, keep = window_attention_forward(
        chunks(q),
        chunks(keys),
        chunks(pad_length_axis(v, padded)),
        pos,
        n_before=n_chunks_before,
        n_after=n_chunks_after,
        causal=causal,
        key_valid=None if valid is None else chunks(valid),
        log_count=log_count,
    )  # out (B, H, n_c, C, Dv)
    cache = LocalAttentionCache(
        chunks(q),
        chunks(keys),
        chunks(pad_length_axis(v, padded)),
        probs,
        keep,
        out,
        unit,
        length,
        n_chunks_before,
        n_chunks_after,
    )
    return out.reshape(batch, n_heads, padded, -1)[:, :, :length], cache


def local_attention_backward(dout, cache: LocalAttentionCache):
    """dout (B, H, L, Dv) -> (dqk (B, H, L, Dh), dv (B, H, L, Dv)).

    The window softmax backward (:func:`window_attention_backward`); qk receives its gradient as
    the query and, through the unit-norm backward, as the key.
    """
    xp = backend.array_module(dout)
    q, _, v, probs, keep, out, unit, length, n_before, n_after = cache
    batch, n_heads, n_chunks, chunk_len = q.shape[:4]
    check_grad("dout", dout, (batch, n_heads, length, v.shape[-1]), q.dtype)
    padded = n_chunks * chunk_len
    dout = pad_length_axis(dout, padded).reshape(out.shape)  # (B, H, n_c, C, Dv)
    row = xp.sum(dout * out, axis=-1)  # (B, H, n_c, C)
    dq, dk, dv = window_attention_backward(
        dout, row, probs, keep, q, cache.k, v, n_before=n_before, n_after=n_after
    )
    dqk = dq.reshape(batch, n_heads, padded, -1) + unit_norm_backward(
        dk.reshape(batch, n_heads, padded, -1), unit
    )
    return dqk[:, :, :length], dv.reshape(batch, n_heads, padded, -1)[:, :, :length]
