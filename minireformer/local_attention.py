"""Local attention: each chunk of the sequence, in its original order, attends to its neighbours.

The sequence is cut into chunks of C positions; chunk c attends to chunks c - n_chunks_before ..
c + n_chunks_after, wrapping around the ends as the released code does (the causal mask removes
the wrapped, later chunks). This is LSH attention with one bucket and one round (nothing is
sorted), and it is the other attention of the released trax enwik8 configuration, which
alternates local and LSH layers. Shared-QK conventions as in
``attention.shared_qk_attention_forward``: keys k_j = qk_j / |qk_j|, logits qk_i . k_j unscaled,
self NEG_SELF, causal and padding NEG_MASK.

A key that appears in a window several times (only when the sequence has fewer chunks than the
window is wide) counts once (``meetings.Copies``), so the result equals dense attention restricted
to the band of keys in the window (``reference.local_attention``).

Shape letters: B batch, H heads, L length, Lp padded length (multiple of C), n_c = Lp / C chunks,
C chunk length, Dh head width, Dv value width.

References: https://arxiv.org/abs/2001.04451 (section 2, chunking); trax
``trax/layers/research/efficient_attention.py`` (``SelfAttention`` with ``chunk_len``).
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend, checks
from .attention import unit_norm_backward, unit_norm_forward
from .chunks import key_validity, pad_length_axis, padded_length, window_multiplicity
from .meetings import Copies
from .windows import Window, window_attention_backward, window_attention_forward


class LocalAttentionCache(NamedTuple):
    q: object  # (B, H, n_c, C, Dh) queries (the padded qk) in chunks
    k: object  # (B, H, n_c, C, Dh) unit-norm keys in chunks
    v: object  # (B, H, n_c, C, Dv) values in chunks
    top: object  # (B, H, n_c, C) each query's largest logit
    total: object  # (B, H, n_c, C) its sum of exp(logit - top): the weights are recomputable
    out: object  # (B, H, n_c, C, Dv) outputs in chunks
    unit: object  # UnitNormCache of the padded keys
    length: int  # L, before padding
    window: Window  # positions, masks and window of the logits


def local_attention_forward(
    qk, v, *, chunk_len, causal=False, mask=None, n_chunks_before=1, n_chunks_after=0
):
    """Local (chunked) shared-QK attention over the sequence in its original order.

    Args:
        qk: (B, H, L, Dh) float shared queries/keys; v: (B, H, L, Dv) float values; any L >= 1
            (padded internally to a multiple of C, the padding masked).
        chunk_len: C. causal: query i sees keys j <= i. mask: None or (B, L) bool, True = real.
        n_chunks_before, n_chunks_after: the look-around window, in chunks.

    Returns:
        ``(out (B, H, L, Dv), cache)``.
    """
    checks.windowed_attention(qk, v, mask, causal, chunk_len, n_chunks_before, n_chunks_after)
    xp = backend.array_module(qk, v)
    batch, n_heads, length, _ = qk.shape
    padded = padded_length(length, chunk_len)
    n_chunks = padded // chunk_len

    def chunks(x):  # (B, H, Lp, ...) -> (B, H, n_c, C, ...)
        return x.reshape((batch, n_heads, n_chunks, chunk_len) + x.shape[3:])

    q = pad_length_axis(qk, padded)  # (B, H, Lp, Dh)
    keys, unit = unit_norm_forward(q)  # (B, H, Lp, Dh); padding stays 0
    valid = key_validity(mask, batch, n_heads, length, padded)
    pos = xp.arange(padded, dtype=xp.int32).reshape(1, 1, n_chunks, chunk_len)
    copies = None
    offsets = xp.arange(-n_chunks_before, n_chunks_after + 1)
    if bool(xp.any(window_multiplicity(offsets, n_chunks, n_chunks_before, n_chunks_after) > 1)):
        # a short sequence: a chunk recurs in its own window, and is counted once
        chunk_of = xp.broadcast_to(xp.arange(padded) // chunk_len, (batch, n_heads, 1, padded))
        copies = Copies(chunk=chunk_of, location=chunk_of, rounds_meet=True)
    win = Window(
        pos=pos,
        n_before=n_chunks_before,
        n_after=n_chunks_after,
        causal=causal,
        key_valid=None if valid is None else chunks(valid),
        copies=copies,
    )
    q, keys, v = chunks(q), chunks(keys), chunks(pad_length_axis(v, padded))
    out, top, total = window_attention_forward(q, keys, v, win)  # out (B, H, n_c, C, Dv)
    cache = LocalAttentionCache(q, keys, v, top, total, out, unit, length, win)
    return out.reshape(batch, n_heads, padded, -1)[:, :, :length], cache


def local_attention_backward(dout, cache: LocalAttentionCache):
    """dout (B, H, L, Dv) -> (dqk (B, H, L, Dh), dv (B, H, L, Dv)).

    The window softmax backward (``windows.window_attention_backward``); qk receives its gradient
    as the query and, through the unit-norm backward, as the key.
    """
    c = cache
    batch, n_heads, n_chunks, chunk_len = c.q.shape[:4]
    checks.grad("dout", dout, (batch, n_heads, c.length, c.v.shape[-1]), c.q.dtype)
    xp = backend.array_module(dout)
    padded = n_chunks * chunk_len
    dout = pad_length_axis(dout, padded).reshape(c.out.shape)  # (B, H, n_c, C, Dv)
    row = xp.sum(dout * c.out, axis=-1)  # (B, H, n_c, C)
    dq, dk, dv = window_attention_backward(dout, row, c.top, 1 / c.total, c.q, c.k, c.v, c.window)
    dqk = dq.reshape(batch, n_heads, padded, -1) + unit_norm_backward(
        dk.reshape(batch, n_heads, padded, -1), c.unit
    )
    return dqk[:, :, : c.length], dv.reshape(batch, n_heads, padded, -1)[:, :, : c.length]
