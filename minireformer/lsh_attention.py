"""LSH attention: hash, sort, chunk and attend with look-around, unsort, combine the rounds.

Paper section 2 ("LSH attention", Figure 2, "Multi-round LSH attention") and Appendix A; the
released code is trax's ``LSHSelfAttention`` (``trax/layers/research/efficient_attention.py``),
also ported as Hugging Face's ``LSHSelfAttention`` (``modeling_reformer.py``).

Shared-QK: keys are the unit-norm queries k_j = qk_j / |qk_j| and the logit is qk_i . k_j, with no
further 1/sqrt(Dh) (trax / Hugging Face convention).

1. Hash every position in R rounds: h_r(i) = argmax([x_i R_r; -x_i R_r]) in [0, K) (lsh.py).
2. Sort: give round r the bucket offset r*(K+1) and sort all R*L (round, position) copies together
   by (bucket + offset, position). Internal padding (L up to a multiple of C) sorts after the real
   tokens of its round, as if in bucket K.
3. Chunk: cut the sorted sequence into chunks of C; each chunk attends to itself and to
   n_chunks_before / n_chunks_after neighbouring chunks, wrapping around (windows.py). Masks
   compare original positions: causal and padding keys NEG_MASK, the query's own position
   NEG_SELF; and what the semantics asks (below).
4. Attend: softmax over each query's window, block by block (windows.py), giving each copy an
   output o_r(i) and a log-sum-exp l_r(i).
5. Unsort and combine: each copy's output goes back to its position, and the rounds are mixed as
   out_i = sum_r softmax_r(l_r(i)) o_r(i).

Semantics (:data:`SEMANTICS`). The paper's (Appendix A, the default): keys in the window but of
another bucket (or round) are masked, and log N_ij is subtracted from logit ij, N_ij being how
often key j is among the keys query i attends to over all rounds; then the multi-round output is
exactly dense softmax attention over the union of the keys query i attends to in any round
(``reference.lsh_attention``). The released code's: keys of other buckets in the window are
attended, and a key met in several rounds counts several times. The two switches underneath, with
trax's older names, are ``attend_across_buckets`` and ``allow_duplicate_attention``; a
:class:`Semantics` with one of each is accepted too (then, with duplicates corrected, the count
includes copies of key j from other rounds met in a window, so the union identity still holds).

Backward: by hand, replaying the cached sort; see :func:`lsh_attention_backward`.

Shape letters: B batch, H heads, L length, Lp padded length (multiple of C), Dh head width,
R hash rounds, K buckets, C chunk length, n_c = R*Lp/C chunks, W window width.
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend, checks, lsh
from .attention import unit_norm_backward, unit_norm_forward
from .checks import check_array, check_bool, check_float_array, check_positive_int
from .chunks import gather, key_validity, pad_length_axis, padded_length
from .meetings import Copies
from .windows import Window, window_attention_backward, window_attention_forward


class Semantics(NamedTuple):
    """The two switches between the paper's LSH attention and the released code's."""

    attend_across_buckets: bool  # keys of other buckets in the window are attended
    allow_duplicate_attention: bool  # no log N_ij correction for keys met several times


SEMANTICS = {"paper": Semantics(False, False), "released": Semantics(True, True)}


def semantics_of(semantics) -> Semantics:
    """``"paper"``, ``"released"`` or a :class:`Semantics` -> the :class:`Semantics`."""
    if isinstance(semantics, Semantics):
        _check_switches(semantics)
        return semantics
    if isinstance(semantics, str) and semantics in SEMANTICS:
        return SEMANTICS[semantics]
    raise ValueError(
        f"semantics: expected 'paper', 'released' or a Semantics(attend_across_buckets, "
        f"allow_duplicate_attention), got {semantics!r}"
    )


@checks.door
def _check_switches(semantics: Semantics) -> None:
    for name, value in zip(Semantics._fields, semantics):
        check_bool(name, value)


class LSHAttentionCache(NamedTuple):
    buckets: object  # (B, H, R, L) int bucket ids in [0, K), per round: replay with these
    rotations: object  # (Dh, R, K/2) or (H, Dh, R, K/2): pass back to forward to replay
    inverse: object  # (B, H, R*Lp) int: copy index r*Lp + position -> its sorted slot
    top: object  # (B, H, n_c, C) each query slot's largest logit in its window
    scale: object  # (B, H, n_c, C) its round weight over its sum: weights exp(S - top) * scale
    lse: object  # (B, H, L) log-sum-exp of the (corrected) logits over all rounds
    qk: object  # (B, H, Lp, Dh) padded queries
    v: object  # (B, H, Lp, Dv) padded values
    out: object  # (B, H, Lp, Dv) padded output
    unit: object  # UnitNormCache of the padded keys
    window: Window  # sorted positions, masks, copies: the logits' recipe


@checks.door
def _check_lsh_inputs(qk, n_hashes, rotations, rng, n_buckets, buckets) -> None:
    """Rotations given (shaped for Dh, H, R and K) or an rng to draw them; given buckets integer
    ids of shape (B, H, R, L) in [0, K). This door needs the bucket factors (lsh.py)."""
    n_hashes = check_positive_int("n_hashes", n_hashes)
    batch, n_heads, length, d_head = qk.shape
    if n_buckets is not None:
        n_buckets = lsh.check_n_buckets(n_buckets)
    if rotations is None:
        if rng is None:
            raise ValueError("rng: expected a numpy.random.Generator when rotations is None")
    else:
        check_float_array("rotations", rotations)
        width = None if n_buckets is None else lsh.rotation_width(n_buckets)
        want = (d_head, n_hashes, width) if rotations.ndim == 3 else (n_heads, d_head, n_hashes)
        want = want if rotations.ndim == 3 else want + (width,)
        if rotations.ndim not in (3, 4) or any(
            w is not None and w != g for w, g in zip(want, rotations.shape)
        ):
            names = "(Dh, R, K/2) or (H, Dh, R, K/2)"
            shown = tuple("any" if w is None else w for w in want)
            raise ValueError(
                f"rotations: expected shape {names} = {shown} for Dh={d_head}, H={n_heads}, "
                f"n_hashes={n_hashes}, n_buckets={n_buckets}, got {tuple(rotations.shape)}"
            )
    if buckets is not None:
        check_array("buckets", buckets, shape=(batch, n_heads, n_hashes, length))
        if buckets.dtype.kind not in "iu":
            raise TypeError(f"buckets: expected an integer array, got dtype {buckets.dtype}")
        k = lsh.total_buckets(n_buckets or 2 * rotations.shape[-1])
        lo, hi = int(buckets.min()), int(buckets.max())
        if lo < 0 or hi >= k:
            raise ValueError(f"buckets: expected ids in [0, {k}), got values in [{lo}, {hi}]")


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
    semantics="paper",
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
        semantics: "paper" (the default), "released", or a :class:`Semantics` (module docstring).

    Returns:
        ``(out (B, H, L, Dv), cache)``; ``cache.buckets`` (B, H, R, L), ``cache.rotations``,
        ``cache.lse`` (B, H, L) the log-sum-exp over every attended slot of every round.
    """
    checks.windowed_attention(qk, v, mask, causal, chunk_len, n_chunks_before, n_chunks_after)
    _check_lsh_inputs(qk, n_hashes, rotations, rng, n_buckets, buckets)
    across, duplicates_allowed = semantics_of(semantics)
    xp = backend.array_module(qk, v)
    batch, n_heads, length, d_head = qk.shape
    padded = padded_length(length, chunk_len)
    n_chunks = n_hashes * padded // chunk_len
    if n_buckets is None:  # the paper's rule for drawn rotations, one factor for given ones
        drawn = rotations is None
        n_buckets = lsh.default_n_buckets(length, chunk_len) if drawn else 2 * rotations.shape[-1]
    factors, n_buckets = n_buckets, lsh.total_buckets(n_buckets)  # K: the product of the factors

    # 1. Hash every position in R rounds (or replay the given buckets).
    if rotations is None:
        rotations = lsh.random_rotations(rng, d_head, n_hashes, factors, n_heads=n_heads)
    if buckets is None:
        buckets = lsh.hash_vectors(qk, rotations, factors)  # (B, H, R, L)

    # 2. Sort the R*Lp copies by (round, bucket, position); padding as bucket K, after its round.
    pad_bucket = xp.full((batch, n_heads, n_hashes, padded - length), n_buckets, buckets.dtype)
    codes = xp.concatenate([buckets, pad_bucket], axis=-1)  # (B, H, R, Lp)
    codes = codes + (n_buckets + 1) * xp.arange(n_hashes).reshape(-1, 1)  # bucket + offset
    sort_key = (codes * padded + xp.arange(padded)).reshape(batch, n_heads, -1)  # (B, H, R*Lp)
    order = xp.argsort(sort_key, axis=-1)  # keys are distinct, so any sort is the stable one
    del sort_key
    inverse = xp.argsort(order, axis=-1)  # (B, H, R*Lp) copy index -> sorted slot
    tokens = order % padded  # (B, H, R*Lp) sorted slot -> the position it holds

    # 3. Chunk: the window of each chunk of sorted slots, its masks and its meeting counts.
    slots = (batch, n_heads, n_chunks, chunk_len)

    def sorted_slots(x, index):  # x (B, H, R*Lp) per copy (index order) or (B, H, Lp) per
        return gather(x, index).reshape(slots)  # position (index tokens) -> (B, H, n_c, C)

    q = pad_length_axis(qk, padded)  # (B, H, Lp, Dh)
    keys, unit = unit_norm_forward(q)  # (B, H, Lp, Dh); padding stays 0
    v_pad = pad_length_axis(v, padded)  # (B, H, Lp, Dv)
    valid = key_validity(mask, batch, n_heads, length, padded)  # (B, H, Lp) or None
    copies = None
    if not duplicates_allowed:  # counted block by block, in the forward and the backward
        chunk_of = (inverse // chunk_len).reshape(codes.shape)  # (B, H, R, Lp) chunk of each copy
        location = chunk_of if across else codes * n_chunks + chunk_of
        copies = Copies(chunk=chunk_of, location=location, rounds_meet=across)
    win = Window(
        pos=tokens.reshape(slots).astype(xp.int32),  # int32: the mask comparisons run faster
        n_before=n_chunks_before,
        n_after=n_chunks_after,
        causal=causal,
        key_valid=None if valid is None else sorted_slots(valid, tokens),
        group=None if across else sorted_slots(codes.reshape(batch, n_heads, -1), order),
        copies=copies,
        rows=tokens.reshape(slots),  # the sorted order, followed block by block: no sorted copies
    )

    # 4. Attend within each window: out_s (B, H, n_c, C, Dv); top_s, total_s (B, H, n_c, C).
    out_s, top_s, total_s = window_attention_forward(q, keys, v_pad, win)
    lse_s = top_s + xp.log(total_s)  # (B, H, n_c, C)

    # 5. Unsort each copy's output and log-sum-exp, then softmax over rounds of the lse.
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
    scale = sorted_slots(weights.reshape(batch, n_heads, -1), order) / total_s  # (B, H, n_c, C)
    del order, weights

    cache = LSHAttentionCache(
        buckets=buckets,
        rotations=rotations,
        inverse=inverse,
        top=top_s,
        scale=scale,
        lse=lse[:, :, :length],
        qk=q,
        v=v_pad,
        out=out,
        unit=unit,
        window=win,
    )
    return out[:, :, :length], cache


def lsh_attention_backward(dout, cache: LSHAttentionCache):
    """dout (B, H, L, Dv) -> (dqk (B, H, L, Dh), dv (B, H, L, Dv)).

    The rounds combined are one softmax per query over every slot it attends to in every round:
    with l_r = log sum_s exp(S_rs), out = sum_r softmax_r(l_r) o_r = sum_rs P_rs v_s where
    P_rs = exp(S_rs - logsumexp_r l_r). So the backward is a softmax backward over those slots
    (``windows.window_attention_backward``, which recomputes P block by block from the cached
    per-slot ``top`` and ``scale``), replayed on the cached sort: nothing is hashed again. Mask
    constants and the meeting counts N_ij are constants: they get no gradient. Each position's
    gradient is the sum over its R sorted copies; qk receives its gradient as the query and,
    through the unit-norm backward, as the key.
    """
    c = cache
    batch, n_heads, padded, _ = c.qk.shape
    length = c.buckets.shape[-1]
    checks.grad("dout", dout, (batch, n_heads, length, c.v.shape[-1]), c.qk.dtype)
    xp = backend.array_module(dout)

    def unsort_sum(dx):  # (B, H, n_c, C, D) per slot -> (B, H, Lp, D) summed over rounds
        dx = dx.reshape(batch, n_heads, -1, dx.shape[-1])  # (B, H, R*Lp, D)
        total = gather(dx, c.inverse[:, :, :padded])  # round by round: one (Lp, D) temporary
        for start in range(padded, c.inverse.shape[-1], padded):
            total += gather(dx, c.inverse[:, :, start : start + padded])
        return total

    dout = pad_length_axis(dout, padded)  # (B, H, Lp, Dv); padding queries get 0
    row = xp.sum(dout * c.out, axis=-1)  # (B, H, Lp)
    dq, dk, dv = window_attention_backward(
        dout, row, c.top, c.scale, c.qk, c.unit.unit, c.v, c.window
    )
    del dout, row
    dqk = unsort_sum(dq)  # (B, H, Lp, Dh); each slot array is released once summed
    del dq
    dqk += unit_norm_backward(unsort_sum(dk), c.unit)
    del dk
    return dqk[:, :, :length], unsort_sum(dv)[:, :, :length]
