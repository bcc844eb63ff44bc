"""LSH attention: hash, sort, chunk, attend with look-around, unsort, combine rounds.

Paper section 2 ("LSH attention", Figure 2, "Multi-round LSH attention") and Appendix A; the
released code is trax's ``LSHSelfAttention`` (``trax/layers/research/efficient_attention.py``),
also ported as Hugging Face's ``LSHSelfAttention`` (``modeling_reformer.py``).

Shared-QK: keys are the unit-norm queries k_j = qk_j / |qk_j| and the logit is qk_i . k_j, with no
further 1/sqrt(Dh) (trax / Hugging Face convention).

1. Hash every position in R rounds: h_r(i) = argmax([x_i R_r; -x_i R_r]) in [0, K) (lsh.py).
2. Give round r the bucket offset r*(K+1) and sort all R*L (round, position) copies together by
   (bucket + offset, position). Internal padding (L up to a multiple of C) sorts after the real
   tokens of its round, as if in bucket K.
3. Cut the sorted sequence into chunks of C; each chunk attends to itself and to n_chunks_before /
   n_chunks_after neighbouring chunks, wrapping around (chunked_attention.py). Masks compare
   original positions: causal and padding keys NEG_MASK, the query's own position NEG_SELF.
4. ``attend_across_buckets=False``: keys of another bucket (or round) are set to NEG_MASK.
   ``allow_duplicate_attention=False``: log N_ij is subtracted from logit ij, where N_ij counts
   how often key j is among the keys query i attends to, over all rounds (occurrences in
   windows: a key seen twice in one round, possible on very short sequences, counts twice).
5. Each round r gives an output o_r(i) and a log-sum-exp l_r(i); they are combined as
   out_i = sum_r softmax_r(l_r(i)) o_r(i).

With both switches False (the paper's Appendix A semantics, the default) the result is exactly
dense softmax attention over the union of the keys query i attends to in any round: every key
contributes exp(s_ij) / N_ij in each of its N_ij occurrences. With both True (the released code's
defaults) keys of other buckets in the window are used and duplicates count several times. The
mixed settings work as their names say; with ``allow_duplicate_attention=False`` the count then
includes copies of key j from other rounds met in a window, so the union identity still holds.

Backward: by hand, replaying the cached sort; see :func:`lsh_attention_backward`.

Shape letters: B batch, H heads, L length, Lp padded length (multiple of C), Dh head width,
R hash rounds, K buckets, C chunk length, n_c = R*Lp/C chunks, W window width.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from . import backend, lsh
from .attention import unit_norm_backward, unit_norm_forward
from .checks import check_array, check_bool, check_float_array, check_grad, check_positive_int
from .chunked_attention import (
    Window,
    check_chunked_inputs,
    gather,
    key_validity,
    pad_length_axis,
    padded_length,
    window_attention_backward,
    window_attention_forward,
    window_of,
    window_weights,
)

__all__ = [
    "LSHAttentionCache",
    "lsh_attention_forward",
    "lsh_attention_backward",
]


class LSHAttentionCache(NamedTuple):
    buckets: object  # (B, H, R, L) int bucket ids in [0, K), per round
    rotations: object  # (Dh, R, K/2) or (H, Dh, R, K/2): pass back to forward to replay
    order: object  # (B, H, R*Lp) int: sorted slot -> copy index r*Lp + position
    inverse: object  # (B, H, R*Lp) int: copy index -> sorted slot
    top: object  # (B, H, n_c, C) each query slot's largest logit in its window
    scale: object  # (B, H, n_c, C) its round weight over its sum: weights exp(S - top) * scale
    lse: object  # (B, H, L) log-sum-exp of the (corrected) logits over all rounds
    qk: object  # (B, H, Lp, Dh) padded queries
    v: object  # (B, H, Lp, Dv) padded values
    out: object  # (B, H, Lp, Dv) padded output
    unit: object  # UnitNormCache of the padded keys
    chunk_len: int
    window: Window  # sorted positions, masks, duplicate counts: the logits' recipe

    @property
    def n_before(self) -> int:
        return self.window.n_before

    @property
    def n_after(self) -> int:
        return self.window.n_after

    @property
    def probs(self):
        """(B, H, n_c, C, W) the final weight of every window slot (rounds combined), recomputed
        on demand for inspection: the forward and backward never hold it whole."""
        return self._weights()[0]

    @property
    def keep(self):
        """Bool broadcastable to :attr:`probs`: False where a logit was a mask constant."""
        return self._weights()[1]

    def _weights(self):
        return window_weights(self.qk, self.unit.unit, self.top, self.scale, self.window)


def _check_rotations(rotations, rng, qk, n_hashes, n_buckets, chunk_len):
    """Rotations as given (checked against Dh, H, R and K) or drawn per head.

    Returns ``(rotations, n_buckets)``, ``n_buckets`` the int K or its factors: as given; else
    for drawn rotations lsh.default_n_buckets(L, C), for given ones one factor, 2 x their last
    axis (so a factorised forward is replayed with its ``n_buckets`` passed again).
    """
    _, n_heads, length, d_head = qk.shape
    if rotations is None:
        if rng is None:
            raise ValueError("rng: expected a numpy.random.Generator when rotations is None")
        if n_buckets is None:
            n_buckets = lsh.default_n_buckets(length, chunk_len)
        n_buckets = lsh.check_n_buckets(n_buckets)
        return lsh.random_rotations(rng, d_head, n_hashes, n_buckets, n_heads=n_heads), n_buckets
    check_float_array("rotations", rotations)
    if n_buckets is not None:
        n_buckets = lsh.check_n_buckets(n_buckets)
    width = None if n_buckets is None else lsh.rotation_width(n_buckets)
    want = (d_head, n_hashes, width) if rotations.ndim == 3 else (n_heads, d_head, n_hashes, width)
    if rotations.ndim not in (3, 4) or any(
        w is not None and w != g for w, g in zip(want, rotations.shape)
    ):
        names = "(Dh, R, K/2) or (H, Dh, R, K/2)"
        shown = tuple("any" if w is None else w for w in want)
        raise ValueError(
            f"rotations: expected shape {names} = {shown} for Dh={d_head}, H={n_heads}, "
            f"n_hashes={n_hashes}, n_buckets={n_buckets}, got {tuple(rotations.shape)}"
        )
    return rotations, (2 * rotations.shape[-1] if n_buckets is None else n_buckets)


def _check_buckets(buckets, shape, n_buckets):
    """Given buckets must be integers of ``shape`` (B, H, R, L) in [0, n_buckets)."""
    check_array("buckets", buckets, shape=shape)
    if buckets.dtype.kind not in "iu":
        raise TypeError(f"buckets: expected an integer array, got dtype {buckets.dtype}")
    lo, hi = int(buckets.min()), int(buckets.max())
    if lo < 0 or hi >= n_buckets:
        raise ValueError(f"buckets: expected ids in [0, {n_buckets}), got values in [{lo}, {hi}]")


def _duplicate_counts(
    chunk_of, locations, tokens, dtype, chunks, index, *, n_before, n_after, across
):
    """N for the queries of some chunks and their windows: how often each key is attended.

    Counted without any L x L array, as trax does, by comparing "locations": in round r, key j
    is d chunks after query i (d in [-n_before, n_after]) iff chunk_r(j) = (chunk_r(i) + d) mod
    n_c. Without ``attend_across_buckets`` the key must also share i's bucket in that round: a
    location is then (bucket code) * n_c + chunk, so that one comparison tests both; with it a
    location is the chunk alone, and copies of j from every round r2 are compared with i's round-r
    window. Each match is one occurrence of j among the keys i attends to.

    Args:
        chunk_of: (B, H, R, Lp) sorted chunk of each copy.
        locations: (B, H, R, Lp) location of each copy (above); ``chunk_of`` itself with across.
        tokens: (B, H, n_c, C) position held by each sorted slot.
        dtype: the float dtype of the counts (the logits' dtype: they are subtracted as log N).
        chunks, index: a slice of m query chunks and their window_index (m, n_blocks).

    Returns:
        (B, H, m, C, W) array of ``dtype``.
    """
    xp = backend.array_module(chunk_of, locations)
    batch, n_heads, n_rounds, _ = chunk_of.shape
    n_chunks, m = tokens.shape[2], index.shape[0]
    q_tok = tokens[:, :, chunks].reshape(batch, n_heads, -1)  # (B, H, m*C)
    k_tok = window_of(tokens, index).reshape(batch, n_heads, -1)  # (B, H, m*W)
    q_shape, k_shape = (batch, n_heads, m, -1, 1), (batch, n_heads, m, 1, -1)
    # where the window's keys are in every round: R x (B, H, m, 1, W)
    k_loc = [gather(locations[:, :, r], k_tok).reshape(k_shape) for r in range(n_rounds)]
    # counted directly as floats: no conversion pass before the log
    counts = xp.zeros((batch, n_heads, m, tokens.shape[3], k_loc[0].shape[-1]), dtype=dtype)
    for r in range(n_rounds):
        q_chunk = gather(chunk_of[:, :, r], q_tok)  # (B, H, m*C)
        q_bucket = gather(locations[:, :, r], q_tok) - q_chunk  # bucket code * n_c, or 0
        for d in range(-n_before, n_after + 1):
            # the location a key d chunks from i in round r has: (B, H, m, C, 1)
            want = (q_bucket + (q_chunk + d) % n_chunks).reshape(q_shape)
            for r2 in range(n_rounds) if across else (r,):
                counts += k_loc[r2] == want  # (B, H, m, C, W)
    return counts


def _log_duplicate_counts(*args, **kwargs):
    """log N (B, H, m, C, W), with N = 0 (a key masked as another bucket's) counted as 1; see
    :func:`_duplicate_counts` for the arguments."""
    counts = _duplicate_counts(*args, **kwargs)
    xp = backend.array_module(counts)
    return xp.log(xp.maximum(counts, 1, out=counts), out=counts)  # in place


def lsh_attention_forward(
    qk,
    v,
    *,
    chunk_len,
    n_hashes=1,
    n_buckets=None,
    rotations=None,
    rng=None,
    causal=False,
    mask=None,
    n_chunks_before=1,
    n_chunks_after=0,
    attend_across_buckets=False,
    allow_duplicate_attention=False,
    buckets=None,
):
    """Multi-round LSH self-attention with shared QK (paper section 2 and Appendix A).

    Args:
        qk: (B, H, L, Dh) float shared queries/keys; v: (B, H, L, Dv) float values; any L >= 1.
        chunk_len: C, the chunk length.
        n_hashes: R, hash rounds.
        n_buckets: K, even, or its factors (K1, K2, ...) (lsh.py); default
            lsh.default_n_buckets (the paper's m = 2L/K, factorised above 128 buckets), or
            2 x the last axis of ``rotations`` when they are given alone.
        rotations: (Dh, R, K/2) or (H, Dh, R, K/2) to hash with (e.g. ``cache.rotations``, to
            replay a forward exactly); if None, drawn per head from ``rng``.
        rng: numpy.random.Generator, needed when ``rotations`` is None.
        buckets: optional (B, H, R, L) int bucket ids in [0, K) used instead of hashing (e.g.
            ``cache.buckets``): an exact replay even when a recomputed qk differs by round-off.
            ``rotations`` (or ``rng``) is then still checked and recorded, not used.
        causal: query i attends only to keys at positions j <= i.
        mask: None or (B, L) bool, True for real tokens; padding keys are masked.
        n_chunks_before, n_chunks_after: the look-around window, in chunks.
        attend_across_buckets, allow_duplicate_attention: trax's switches (module docstring);
            both False is the paper's semantics, both True the released code's.

    Returns:
        ``(out (B, H, L, Dv), cache)``; ``cache.buckets`` (B, H, R, L), ``cache.rotations``,
        ``cache.lse`` (B, H, L) the log-sum-exp over every attended slot of every round.
    """
    chunk_len = check_chunked_inputs(
        qk, v, mask, causal, chunk_len, n_chunks_before, n_chunks_after
    )
    n_hashes = check_positive_int("n_hashes", n_hashes)
    check_bool("attend_across_buckets", attend_across_buckets)
    check_bool("allow_duplicate_attention", allow_duplicate_attention)
    rotations, n_buckets = _check_rotations(rotations, rng, qk, n_hashes, n_buckets, chunk_len)
    factors, n_buckets = n_buckets, lsh.total_buckets(n_buckets)  # K, the product of the factors
    xp = backend.array_module(qk, v)
    batch, n_heads, length, _ = qk.shape
    padded = padded_length(length, chunk_len)
    n_chunks = n_hashes * padded // chunk_len

    if buckets is None:
        buckets = lsh.hash_vectors(qk, rotations, factors)  # (B, H, R, L)
    else:
        _check_buckets(buckets, (batch, n_heads, n_hashes, length), n_buckets)
    # sort key (round, bucket, position); padding as bucket K, after its round's real tokens
    pad_bucket = xp.full((batch, n_heads, n_hashes, padded - length), n_buckets, buckets.dtype)
    codes = xp.concatenate([buckets, pad_bucket], axis=-1)  # (B, H, R, Lp)
    codes = codes + (n_buckets + 1) * xp.arange(n_hashes).reshape(-1, 1)  # bucket + offset
    sort_key = (codes * padded + xp.arange(padded)).reshape(batch, n_heads, -1)  # (B, H, R*Lp)
    order = xp.argsort(sort_key, axis=-1)  # keys are distinct, so any sort is the stable one
    del sort_key
    inverse = xp.argsort(order, axis=-1)  # (B, H, R*Lp) copy index -> sorted slot
    tokens = order % padded  # (B, H, R*Lp) position held by each sorted slot

    def sorted_chunks(x):  # (B, H, Lp, ...) per position -> (B, H, n_c, C, ...) sorted
        y = gather(x, tokens)
        return y.reshape((batch, n_heads, n_chunks, chunk_len) + y.shape[3:])

    q = pad_length_axis(qk, padded)  # (B, H, Lp, Dh)
    keys, unit = unit_norm_forward(q)  # (B, H, Lp, Dh); padding stays 0
    v_pad = pad_length_axis(v, padded)  # (B, H, Lp, Dv)
    valid = key_validity(mask, batch, n_heads, length, padded)  # (B, H, Lp) or None
    slot_tokens = tokens.reshape(batch, n_heads, n_chunks, chunk_len)
    log_count = None
    if not allow_duplicate_attention:  # evaluated block by block, in forward and backward
        chunk_of = (inverse // chunk_len).reshape(codes.shape)  # (B, H, R, Lp) chunk of each copy
        log_count = functools.partial(
            _log_duplicate_counts,
            chunk_of,
            chunk_of if attend_across_buckets else codes * n_chunks + chunk_of,  # locations
            slot_tokens,
            qk.dtype,
            n_before=n_chunks_before,
            n_after=n_chunks_after,
            across=attend_across_buckets,
        )
    win = Window(
        pos=slot_tokens.astype(xp.int32),  # int32: the mask comparisons run twice as fast
        n_before=n_chunks_before,
        n_after=n_chunks_after,
        causal=causal,
        key_valid=None if valid is None else sorted_chunks(valid),
        group=None
        if attend_across_buckets
        else gather(codes.reshape(batch, n_heads, -1), order).reshape(slot_tokens.shape),
        log_count=log_count,
        rows=slot_tokens,  # the sorted order, followed block by block: no sorted copies
    )
    out_s, top_s, total_s = window_attention_forward(q, keys, v_pad, win)
    # out_s (B, H, n_c, C, Dv); top_s, total_s (B, H, n_c, C)
    lse_s = top_s + xp.log(total_s)  # (B, H, n_c, C)

    # unsort: each copy's output and log-sum-exp, then softmax over rounds of the lse
    out_r = gather(out_s.reshape(batch, n_heads, -1, out_s.shape[-1]), inverse)
    del out_s
    out_r = out_r.reshape(batch, n_heads, n_hashes, padded, -1)  # (B, H, R, Lp, Dv)
    lse_r = gather(lse_s.reshape(batch, n_heads, -1), inverse)
    lse_r = lse_r.reshape(batch, n_heads, n_hashes, padded)  # (B, H, R, Lp)
    top = xp.max(lse_r, axis=2, keepdims=True)  # (B, H, 1, Lp)
    weights = xp.exp(lse_r - top)  # (B, H, R, Lp)
    total = xp.sum(weights, axis=2, keepdims=True)
    # normalised by their sum (not exp(lse_r - lse)): lse near NEG_SELF has ulp 1e-11
    weights /= total  # softmax over rounds
    lse = (top + xp.log(total))[:, :, 0]  # (B, H, Lp)
    out = xp.sum(weights[..., None] * out_r, axis=2)  # (B, H, Lp, Dv)
    # the final weight of each slot is exp(S - top) / total times its round's weight
    scale = gather(weights.reshape(batch, n_heads, -1), order).reshape(lse_s.shape) / total_s

    cache = LSHAttentionCache(
        buckets,
        rotations,
        order,
        inverse,
        top_s,
        scale,
        lse[:, :, :length],
        q,
        v_pad,
        out,
        unit,
        chunk_len,
        win,
    )
    return out[:, :, :length], cache


def lsh_attention_backward(dout, cache: LSHAttentionCache):
    """dout (B, H, L, Dv) -> (dqk (B, H, L, Dh), dv (B, H, L, Dv)).

    The rounds combined are one softmax per query over every slot it attends to in every round:
    with l_r = log sum_s exp(S_rs), out = sum_r softmax_r(l_r) o_r = sum_rs P_rs v_s where
    P_rs = exp(S_rs - logsumexp_r l_r). So the backward is a softmax backward over those slots
    (chunked_attention.window_attention_backward, which recomputes P block by block from the
    cached per-slot ``top`` and ``scale``), replayed on the cached sort: nothing is hashed again.
    Mask constants and the duplicate counts N_ij are constants: they get no gradient. Each
    position's gradient is the sum over its R sorted copies; qk receives its gradient as the
    query and, through the unit-norm backward, as the key.
    """
    xp = backend.array_module(dout)
    _, _, order, inverse, top, scale, _, q, v, out, unit, chunk_len, win = cache
    batch, n_heads, padded, _ = q.shape
    length = cache.buckets.shape[-1]
    check_grad("dout", dout, (batch, n_heads, length, v.shape[-1]), q.dtype)

    def unsort_sum(dx):  # (B, H, n_c, C, D) per slot -> (B, H, Lp, D) summed over rounds
        dx = dx.reshape(batch, n_heads, -1, dx.shape[-1])  # (B, H, R*Lp, D)
        total = gather(dx, inverse[:, :, :padded])  # round by round: one (Lp, D) temporary
        for start in range(padded, inverse.shape[-1], padded):
            total += gather(dx, inverse[:, :, start : start + padded])
        return total

    dout = pad_length_axis(dout, padded)  # (B, H, Lp, Dv); padding queries get 0
    row = xp.sum(dout * out, axis=-1)  # (B, H, Lp)
    dq, dk, dv = window_attention_backward(dout, row, top, scale, q, unit.unit, v, win)
    del dout, row
    dqk = unsort_sum(dq)  # (B, H, Lp, Dh); each slot array is released once summed
    del dq
    dqk += unit_norm_backward(unsort_sum(dk), unit)
    del dk
    return dqk[:, :, :length], unsort_sum(dv)[:, :, :length]
