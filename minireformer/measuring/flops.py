"""Floating-point operations of attention, counted analytically (and checked by counting).

A matrix product of an (m, k) and a (k, n) matrix costs 2 m k n FLOPs (one multiply and one add
per term). Attention's cost is its products; the softmax, masks, sorts and gathers are O(L)
element-wise work per query, counted here as zero (that they are not free is what the measured
rate shows).

LSH attention (``minireformer.lsh_attention``) in round r sorts the L (padded to Lp, a multiple
of C) positions by bucket and cuts them into Lp/C chunks of C queries; each chunk attends to a
window of W = (n_before + 1 + n_after) C keys. Per chunk, with Dh the query/key width and Dv the
value width:

    forward    logits  Q K_w^T   (C, Dh) @ (Dh, W)     2 C W Dh
               output  P V_w     (C, W) @ (W, Dv)      2 C W Dv
    backward   dV_w    P^T dO    (W, C) @ (C, Dv)      2 C W Dv
               dP      dO V_w^T  (C, Dv) @ (Dv, W)     2 C W Dv
               dQ      dS K_w    (C, W) @ (W, Dh)      2 C W Dh
               dK_w    dS^T Q    (W, C) @ (C, Dh)      2 C W Dh

The forward keeps only each query's maximum logit and softmax sum, not the (C, W) weights
(``windows.window_attention_backward``, as FlashAttention does), so the backward first
recomputes the logits Q K_w^T (2 C W Dh) and then makes its four products: five in all. A
backward that cached the weights would make four (``recompute_logits=False``).
Hashing projects every position on R P random directions, (L, Dh) @ (Dh, R P) per (batch, head):
2 L Dh R P FLOPs. With K buckets P = K/2, which grows with L under the rule K = 2 ceil(L / C);
with factorised buckets K = K1 K2 (the library's default above 2C buckets, ``lsh.py``),
P = K1/2 + K2/2, about sqrt(K) (``lsh.rotation_width``).

Full (dense) attention per (batch, head) (``attention.shared_qk_attention_forward`` /
``_backward``, which cache the (L, L) weights): the same products with (L, L) in place of
(C, W), forward 2 L^2 (Dh + Dv), backward 4 L^2 (Dh + Dv).

:func:`count_matmul_flops` checks these counts: it runs a function on a stand-in array module
that forwards everything to NumPy and adds up 2 m k n for every ``matmul`` it sees.

Shape letters: B batch, H heads, L length, Lp padded length, Dh / Dv head widths, R rounds,
K buckets, C chunk length, W window width.
"""

from __future__ import annotations

import math

import numpy as np

from minireformer import backend, lsh


def window_products(
    n_slots: int, window: int, d_head: int, d_value: int, recompute_logits: bool = True
) -> dict:
    """FLOPs of window attention for ``n_slots`` queries, each over ``window`` keys.

    Returns:
        {"forward": 2 n W (Dh + Dv), "backward": 2 n W (2 Dv + 2 Dh), plus 2 n W Dh with
        ``recompute_logits``}: the two forward products (logits, output), the four backward ones
        (dV, dP, dQ, dK) and the recomputed logits; see the module docstring.
    """
    per_pair = 2 * n_slots * window
    return {
        "forward": per_pair * (d_head + d_value),
        "backward": per_pair * (2 * d_value + 2 * d_head + (d_head if recompute_logits else 0)),
    }


def lsh_attention_flops(
    *,
    batch: int,
    n_heads: int,
    length: int,
    d_head: int,
    n_hashes: int,
    chunk_len: int,
    n_buckets: int | None = None,
    n_chunks_before: int = 1,
    n_chunks_after: int = 0,
    d_value: int | None = None,
    recompute_logits: bool = True,
) -> dict:
    """FLOPs of one LSH attention forward + backward (``lsh_attention_forward`` / ``_backward``).

    Args:
        batch, n_heads, length, d_head: B, H, L, Dh of qk (B, H, L, Dh).
        n_hashes: R. chunk_len: C. n_buckets: K or its factors (default: the library's,
            ``lsh.default_n_buckets``).
        n_chunks_before, n_chunks_after: the window, W = (before + 1 + after) C.
        d_value: Dv (default Dh).
        recompute_logits: the backward recomputes the logits (the library's; module docstring).

    Returns:
        {"hash": 2 B H L Dh R P, "forward": window products of the forward, "backward": those
        of the backward, "total": their sum}; window products over B H R Lp slots.
    """
    d_value = d_head if d_value is None else d_value
    n_buckets = lsh.default_n_buckets(length, chunk_len) if n_buckets is None else n_buckets
    padded = chunk_len * math.ceil(length / chunk_len)
    window = (n_chunks_before + 1 + n_chunks_after) * chunk_len
    projections = n_hashes * lsh.rotation_width(n_buckets)  # R P
    terms = {"hash": 2 * batch * n_heads * length * d_head * projections}
    slots = batch * n_heads * n_hashes * padded
    terms.update(window_products(slots, window, d_head, d_value, recompute_logits))
    return {**terms, "total": sum(terms.values())}


def full_attention_flops(*, batch: int, n_heads: int, length: int, d_head: int, d_value=None):
    """FLOPs of one dense attention forward + backward: every query over all L keys.

    Returns:
        {"forward": 2 B H L^2 (Dh + Dv), "backward": 4 B H L^2 (Dh + Dv), "total"}.
    """
    d_value = d_head if d_value is None else d_value
    terms = window_products(batch * n_heads * length, length, d_head, d_value, False)
    return {**terms, "total": sum(terms.values())}


class _MatmulCounter:
    """NumPy with a counting ``matmul``: an array module stand-in for ``backend.set_backend``."""

    def __init__(self):
        self.flops = 0

    def __getattr__(self, name):
        return getattr(np, name)

    def matmul(self, a, b, *args, **kwargs):
        out = np.matmul(a, b, *args, **kwargs)
        inner = np.shape(a)[-1]
        self.flops += 2 * inner * int(np.prod(out.shape, dtype=np.int64))
        return out


def count_matmul_flops(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` with the library's ``xp.matmul`` counted: (result, FLOPs).

    Only products the library makes through its array module are seen (window attention's);
    a product written ``a @ b`` (the hashing projection) is not.
    """
    previous = backend.get_xp()
    counter = backend.set_backend(_MatmulCounter())
    try:
        result = fn(*args, **kwargs)
    finally:
        backend.set_backend(previous)
    return result, counter.flops
