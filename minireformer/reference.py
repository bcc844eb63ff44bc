"""What the fast code computes, written plainly: read this file first.

Every clever piece of the package (blocked hashing, sorted and chunked LSH attention that never
makes an L x L array, chunked feed-forward and loss, reversible blocks that rebuild their inputs)
computes something simple. This module writes each of those things as its equation, forward only,
in NumPy, with no blocking, no caches and no care for memory: dense (L, L) arrays and loops where
they make the definition plain. The tests check every fast function against these (and the fast
backward passes against centred differences), and the notebooks and exercises show the math from
here, as CS231n keeps ``layers.py`` beside ``fast_layers.py``.

Conventions shared with the fast code: shared-QK keys are unit vectors k_j = qk_j / |qk_j| and the
logits are qk_i . k_j, unscaled (the released trax and Hugging Face code); a masked logit (a later
key under ``causal``, a padding key) is NEG_MASK = -1e9; a query's logit with its own key is
NEG_SELF = -1e5, so that a token attends to itself only when nothing else is left.

Shape letters: B batch, H heads, L length, Dh head width, Dv value width, R hash rounds, K buckets,
C chunk length, D model width, F feed-forward width, V vocabulary.

References: https://arxiv.org/abs/2001.04451 (Reformer: section 2 and Appendix A for LSH
attention, section 3 for reversible layers and chunking); Vaswani et al. 2017 (arXiv 1706.03762);
Andoni et al. 2015 (angular LSH).
"""

from __future__ import annotations

import math

import numpy as np

NEG_SELF = -1e5
NEG_MASK = -1e9


# --- Hashing (paper section 2, Figure 1) --------------------------------------------------------


def angular_hash(x, rotations, n_buckets=None):
    """h(x) = argmax([x R ; -x R]) in every round: x (B, H, L, Dh) -> buckets (B, H, R, L).

    rotations: (Dh, R, K/2) shared by the heads, or (H, Dh, R, K/2). With factors
    n_buckets = (K1, K2, ...), the last axis holds K1/2 columns, then K2/2, ..., and the bucket is
    h1 + K1 h2 + K1 K2 h3 + ... (two vectors collide iff every factor's hash collides).
    """
    if rotations.ndim == 3:
        rotated = np.einsum("bhld,drk->bhrlk", x, rotations)  # (B, H, R, L, K/2)
    else:
        rotated = np.einsum("bhld,hdrk->bhrlk", x, rotations)
    factors = (2 * rotated.shape[-1],) if n_buckets is None else tuple(np.atleast_1d(n_buckets))
    buckets, radix, column = 0, 1, 0
    for k in factors:
        part = rotated[..., column : column + k // 2]
        buckets = buckets + radix * np.argmax(np.concatenate([part, -part], axis=-1), axis=-1)
        radix, column = radix * k, column + k // 2
    return buckets


# --- Dense attention (paper equation 1) ---------------------------------------------------------


def softmax(z, axis: int = -1):
    """exp(z - max) / sum(exp(z - max)) along ``axis``."""
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def masked_logits(logits, *, causal=False, mask=None, self_mask=False):
    """(..., L, L) logits with later keys (causal) and padding keys (mask (B, L) False) set to
    NEG_MASK, then each query's own key set to NEG_SELF (shared-QK)."""
    length = logits.shape[-1]
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    logits = logits.copy()
    if causal:
        logits = np.where(j > i, NEG_MASK, logits)
    if mask is not None:
        logits = np.where(mask[:, None, None, :], logits, NEG_MASK)
    if self_mask:
        logits = np.where(i == j, NEG_SELF, logits)
    return logits


def full_attention(q, k, v, *, causal=False, mask=None):
    """softmax(Q K^T / sqrt(Dh)) V: q, k (B, H, L, Dh), v (B, H, L, Dv) -> (B, H, L, Dv)."""
    logits = masked_logits(
        q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1]), causal=causal, mask=mask
    )
    return softmax(logits) @ v


def unit(x):
    """x / |x| along the last axis (the shared-QK keys)."""
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + 1e-12)


def shared_qk_attention(qk, v, *, causal=False, mask=None, allowed=None, weight=None):
    """Shared-QK attention, optionally restricted to some keys per query.

    out_i = sum_j w_ij exp(s_ij) v_j / sum_j w_ij exp(s_ij), with s_ij = qk_i . unit(qk_j) masked
    as :func:`masked_logits` says, w_ij = ``weight`` (default 1) and only keys where ``allowed``
    (B, H, L, L) bool is True (default all). qk (B, H, L, Dh), v (B, H, L, Dv) -> (B, H, L, Dv).
    """
    logits = masked_logits(qk @ unit(qk).swapaxes(-1, -2), causal=causal, mask=mask, self_mask=True)
    if weight is not None:
        logits = logits + np.log(np.maximum(weight, 1e-300))
    if allowed is not None:
        logits = np.where(allowed, logits, -np.inf)
    return softmax(logits) @ v


# --- LSH attention (paper section 2, Figure 2, Appendix A) --------------------------------------


def lsh_meetings(buckets, *, chunk_len, n_buckets, n_chunks_before=1, n_chunks_after=0, across):
    """N (B, H, L, L): how often query i meets key j among the keys it attends to, all rounds.

    buckets (B, H, R, L) -> the sort of LSH attention redone: copy (r, i) of position i gets the
    code r (K + 1) + bucket (padding, up to Lp = C ceil(L / C), bucket K); all R Lp copies are
    sorted by (code, position) and cut into n_c = R Lp / C chunks. The query copy (r, i) in chunk
    c meets a key copy (r2, j) once for each window offset d in [-n_before, n_after] with
    chunk(r2, j) = (c + d) mod n_c; unless ``across``, only copies with the query's code count
    (the same bucket of the same round).
    """
    batch, n_heads, n_rounds, length = buckets.shape
    padded = chunk_len * math.ceil(length / chunk_len)
    n_chunks = n_rounds * padded // chunk_len
    counts = np.zeros((batch, n_heads, length, length))
    for b in range(batch):
        for h in range(n_heads):
            code = np.full((n_rounds, padded), n_buckets)  # padding sorts last in its round
            code[:, :length] = buckets[b, h]
            code = (code + (n_buckets + 1) * np.arange(n_rounds)[:, None]).reshape(-1)  # (R Lp,)
            position = np.tile(np.arange(padded), n_rounds)
            order = np.lexsort((position, code))  # sorted slot -> copy
            chunk = np.empty(n_rounds * padded, dtype=int)
            chunk[order] = np.arange(n_rounds * padded) // chunk_len  # copy -> its chunk
            offset = (chunk[None, :] - chunk[:, None]) % n_chunks  # query copy x key copy
            met = np.zeros_like(offset)
            for d in range(-n_chunks_before, n_chunks_after + 1):
                met += offset == d % n_chunks
            if not across:
                met *= code[:, None] == code[None, :]
            met = met.reshape(n_rounds, padded, n_rounds, padded).sum(axis=(0, 2))  # (Lp, Lp)
            counts[b, h] = met[:length, :length]
    return counts


def lsh_attention(
    qk, v, buckets, *, chunk_len, n_buckets, causal=False, mask=None, n_chunks_before=1,
    n_chunks_after=0, semantics="paper",
):  # fmt: skip
    """Multi-round LSH attention from its buckets, as dense attention over the keys it meets.

    With N from :func:`lsh_meetings`, each meeting of query i with key j contributes
    exp(s_ij - c_ij) v_j to one softmax over everything query i met in any round, where c_ij is
    the duplicate correction log N_ij (the paper's semantics: then key j counts once, and the
    result is dense softmax attention over the union of attended keys) or 0 (the released code's:
    key j counts N_ij times). The paper's semantics also masks the keys of another bucket in the
    window; the released code's attends to them. ``semantics`` may also be the pair
    (attend_across_buckets, allow_duplicate_attention).
    """
    across, duplicates = (False, False) if semantics == "paper" else (True, True)
    if not isinstance(semantics, str):
        across, duplicates = semantics
    counts = lsh_meetings(
        buckets, chunk_len=chunk_len, n_buckets=n_buckets, n_chunks_before=n_chunks_before,
        n_chunks_after=n_chunks_after, across=across,
    )  # fmt: skip
    weight = counts if duplicates else None
    return shared_qk_attention(qk, v, causal=causal, mask=mask, allowed=counts > 0, weight=weight)


def local_attention(
    qk, v, *, chunk_len, causal=False, mask=None, n_chunks_before=1, n_chunks_after=0
):
    """Shared-QK attention where query i sees key j iff j's chunk is in i's window.

    Chunks are counted on the sequence padded to a multiple of C, and the window wraps around:
    key chunk cj is visible from query chunk ci iff cj - ci = d (mod n_chunks) for some d in
    [-n_chunks_before, n_chunks_after]; a key seen several times counts once.
    """
    length = qk.shape[2]
    n_chunks = math.ceil(length / chunk_len)
    offsets = {d % n_chunks for d in range(-n_chunks_before, n_chunks_after + 1)}
    chunk = np.arange(length) // chunk_len
    band = np.isin((chunk[None, :] - chunk[:, None]) % n_chunks, list(offsets))  # (L, L)
    return shared_qk_attention(qk, v, causal=causal, mask=mask, allowed=band)


# --- Layers, the feed-forward and the loss (paper section 3, eq. 10) ----------------------------


def layer_norm(x, gamma, beta, eps=1e-5):
    """gamma (x - mean) / sqrt(var + eps) + beta over the last axis."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def gelu(x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the tanh form (Hendrycks & Gimpel)."""
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def feedforward(x, p, activation="gelu"):
    """act(x W1 + b1) W2 + b2 on every position at once: x (..., D) -> (..., D)."""
    h = x @ p["w1"] + p["b1"]  # (..., F)
    return (gelu(h) if activation == "gelu" else np.maximum(h, 0)) @ p["w2"] + p["b2"]


def cross_entropy(logits, targets, mask=None):
    """Mean over counted targets of -log softmax(logits)[target]: logits (..., V), targets (...)."""
    log_probs = np.log(softmax(logits))
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    counted = np.ones(targets.shape, bool) if mask is None else mask
    return -picked[counted].mean()


# --- Reversible layers (paper section 3, eqs. 7-9) ----------------------------------------------


def reversible_forward(x1, x2, F, G):  # noqa: N803 (the paper's names)
    """y1 = x1 + F(x2), y2 = x2 + G(y1)."""
    y1 = x1 + F(x2)
    return y1, x2 + G(y1)


def reversible_reverse(y1, y2, F, G):  # noqa: N803
    """The inputs from the outputs: x2 = y2 - G(y1), x1 = y1 - F(x2)."""
    x2 = y2 - G(y1)
    return y1 - F(x2), x2
