"""Full (dense) multi-head attention: the exact O(L^2) reference (paper section 2, equation 1).

Scaled dot-product attention (Vaswani et al. 2017, "Attention Is All You Need", section 3.2.1;
Reformer paper equation 1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(Dh)) V

computed per head on Q, K, V of shape (B, H, L, Dh). Multi-head attention (Vaswani et al. 2017,
section 3.2.2) projects x (B, L, D) to H heads of width Dh, attends in each head, concatenates the
heads and projects back to D.

Shared-QK variant (paper section 2, "Shared-QK Transformer"): queries and keys come from the same
projection; keys are the queries normalised to unit length, k_j = q_j / |q_j|, and the logit is
q_i . k_j with no further 1/sqrt(Dh), as in the released trax and Hugging Face code. Since q_i . k_i
would usually be the largest logit, a token may attend to itself only when nothing else is
available: its self logit is set to NEG_SELF.

Masks (the same semantics as LSH attention's, so that the two compare exactly): a masked
logit is *replaced* (not shifted) by a constant. Keys after the query (causal) and padding keys are
set to NEG_MASK; then, for shared-QK, the query's own key is set to NEG_SELF, whatever the other
masks said (the order of trax's and Hugging Face's LSH code). Because NEG_MASK < NEG_SELF, a token
attends to itself only when every other key is masked, and with the self mask no row is ever fully
masked. Without it (plain attention) a row whose keys are all masked is uniform over all L keys.

Shape letters: B batch, H heads, L length, D model width, Dh head width.

References: https://arxiv.org/abs/2001.04451 (Reformer), https://arxiv.org/abs/1706.03762
(Transformer), trax ``trax/layers/research/efficient_attention.py``.
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend, checks

NEG_SELF = -1e5  # logit of a token attending to itself under shared-QK (paper section 2)
NEG_MASK = -1e9  # logit of a masked key (causal or padding); exp underflows to exactly 0


class UnitNormCache(NamedTuple):
    unit: object  # (..., Dh) the normalised vectors
    norm: object  # (..., 1) their original lengths


def unit_norm_forward(x, eps: float = 1e-12):
    """k = x / |x| along the last axis, |x| = sqrt(sum x^2 + eps). x: (..., Dh) -> (..., Dh).

    The vector is divided by its largest entry m before squaring, |x| = hypot(m |x / m|,
    sqrt(eps)), so that a finite float32 vector of size 1e20 does not overflow to inf.
    """
    xp = backend.array_module(x)
    top = xp.max(xp.abs(x), axis=-1, keepdims=True)  # (..., 1)
    top = xp.where(top > 0, top, xp.asarray(1, dtype=x.dtype))  # a zero vector stays zero
    scaled = x / top
    norm = xp.hypot(top * xp.sqrt(xp.sum(scaled * scaled, axis=-1, keepdims=True)), eps**0.5)
    unit = x / norm
    return unit, UnitNormCache(unit, norm)


def unit_norm_backward(dout, cache: UnitNormCache):
    """dx = (dk - k (k . dk)) / |x|: the Jacobian of x/|x| projects out the radial direction."""
    xp = backend.array_module(dout)
    unit = cache.unit
    return (dout - unit * xp.sum(unit * dout, axis=-1, keepdims=True)) / cache.norm


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------


def split_heads(x, n_heads: int):
    """(B, L, H*Dh) -> (B, H, L, Dh): the last axis is cut into H heads of width Dh.

    Its backward is :func:`merge_heads` (and the other way round): both only move entries.
    """
    checks.split(x, n_heads)
    batch, length, width = x.shape
    xp = backend.array_module(x)
    x = x.reshape(batch, length, n_heads, width // n_heads)  # (B, L, H, Dh)
    return xp.ascontiguousarray(x.transpose(0, 2, 1, 3))  # (B, H, L, Dh)


def merge_heads(x):
    """(B, H, L, Dh) -> (B, L, H*Dh): the heads side by side again; the inverse of split_heads."""
    checks.merge(x)
    batch, n_heads, length, d_head = x.shape
    xp = backend.array_module(x)
    x = xp.ascontiguousarray(x.transpose(0, 2, 1, 3))  # (B, L, H, Dh)
    return x.reshape(batch, length, n_heads * d_head)


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------


def mask_logits(logits, q_pos, k_pos, *, causal=False, key_valid=None, self_mask=False):
    """Set masked attention logits to constants (the same constants as LSH attention).

    A masked logit is replaced, not shifted: its value no longer depends on q or k, so its gradient
    is zero. In this order:

    - causal: key positions after the query position are set to NEG_MASK;
    - key_valid: padding keys (False) are set to NEG_MASK;
    - self_mask: the query's own position is set to NEG_SELF, overriding the two above, so that a
      token attends to itself only when every other key is masked (and no row is fully masked).

    Positions are *original* sequence positions, so that the same function serves the dense
    (L x L) layout and a sorted, chunked one. ``logits`` is overwritten in place (callers pass
    a freshly computed array), so that masking costs no second copy of the largest array.

    Args:
        logits: (..., Lq, Lk) float.
        q_pos: (..., Lq) integer positions of the queries, broadcastable against ``logits``.
        k_pos: (..., Lk) integer positions of the keys.
        causal: mask keys whose position is greater than the query's.
        key_valid: None, or (..., Lk) bool, True for a real key, False for padding.
        self_mask: set the logit of each query with its own position to NEG_SELF (shared-QK).

    Returns:
        ``(masked_logits, keep)``: ``masked_logits`` (..., Lq, Lk), the same array as
        ``logits``; ``keep`` a bool array
        broadcastable to it, True where the logit was kept, or None when nothing is masked. Call
        it on zeros to see the mask itself: 0 kept, NEG_SELF, NEG_MASK.
    """
    checks.mask_flags(logits, causal, self_mask)
    if not causal and key_valid is None and not self_mask:
        return logits, None
    xp = backend.array_module(logits)
    q_pos, k_pos = q_pos[..., :, None], k_pos[..., None, :]  # (..., Lq, 1), (..., 1, Lk)
    # ``dropped`` marks the logits replaced by a constant; keep is its negation, made last, so
    # that every mask is one comparison and one copy over the (Lq, Lk) logits
    dropped = None
    if causal:
        dropped = k_pos > q_pos  # (..., Lq, Lk)
    if key_valid is not None:
        padding = ~key_valid[..., None, :]  # (..., 1, Lk)
        dropped = padding if dropped is None else dropped | padding
    if dropped is not None:
        xp.copyto(logits, xp.asarray(NEG_MASK, dtype=logits.dtype), where=dropped)
    if self_mask:
        is_self = q_pos == k_pos  # (..., Lq, Lk)
        xp.copyto(logits, xp.asarray(NEG_SELF, dtype=logits.dtype), where=is_self)
        dropped = is_self if dropped is None else dropped | is_self
    keep = ~dropped
    return logits, keep


# ---------------------------------------------------------------------------------------------
# Attention on heads: (B, H, L, Dh)
# ---------------------------------------------------------------------------------------------


class AttentionCache(NamedTuple):
    q: object  # (B, H, L, Dh) queries (the raw qk under shared-QK)
    k: object  # (B, H, L, Dh) keys (unit-norm under shared-QK)
    v: object  # (B, H, L, Dv) values
    probs: object  # (B, H, L, L) attention weights P = softmax(masked logits)
    keep: object  # bool, broadcastable to (B, H, L, L): logits not replaced by a mask; or None
    scale: float  # logits = scale * q k^T
    lse: object  # (B, H, L) log-sum-exp over keys of the masked logits, per query
    unit: object  # UnitNormCache of the keys under shared-QK, else None


def _attend(q, k, v, scale, causal, mask, self_mask, unit=None):
    """softmax(mask(scale * q k^T)) v with max-subtraction; returns (out, cache).

    The (B, H, L, L) logits become the weights in place. A masked logit's weight is exactly 0
    unless its whole row is masked, which only padding can cause (a causal row keeps its
    diagonal, a shared-QK row its own key): only then does the cache keep the mask, so that the
    backward can zero those rows' gradients.
    """
    xp = backend.array_module(q, k, v)
    length = q.shape[2]
    logits = xp.matmul(q, k.swapaxes(-1, -2))  # (B, H, L, L)
    if scale != 1.0:
        logits *= scale
    pos = xp.arange(length)  # (L,)
    key_valid = None if mask is None else mask[:, None, :]  # (B, 1, L): padding is per key
    logits, keep = mask_logits(
        logits, pos, pos, causal=causal, key_valid=key_valid, self_mask=self_mask
    )
    top = xp.max(logits, axis=-1, keepdims=True)  # (B, H, L, 1) subtracted for stability
    logits -= top
    probs = xp.exp(logits, out=logits)  # (B, H, L, L), unnormalised
    total = xp.sum(probs, axis=-1, keepdims=True)  # (B, H, L, 1)
    probs /= total
    lse = (top + xp.log(total))[..., 0]  # (B, H, L)
    out = xp.matmul(probs, v)  # (B, H, L, Dv)
    keep = None if mask is None else keep
    return out, AttentionCache(q, k, v, probs, keep, scale, lse, unit)


def _attend_backward(dout, cache: AttentionCache):
    """Gradients of _attend with respect to q, k (as used in the logits) and v.

    With S the logits, P = softmax(S) row-wise and out = P V:

        dV = P^T dout,   dP = dout V^T,   dS = P * (dP - sum_j(dP * P)),

    where sum_j(dP_ij P_ij) = dout_i . out_i. Masked logits were constants: their dS is zeroed
    (it is exactly 0 already wherever their weight is; see _attend). Then dq = scale * dS k and
    dk = scale * dS^T q.
    """
    checks.grad("dout", dout, cache.q.shape[:3] + cache.v.shape[3:], cache.q.dtype)
    xp = backend.array_module(dout)
    q, k, v, probs, keep, scale = cache.q, cache.k, cache.v, cache.probs, cache.keep, cache.scale
    dv = xp.matmul(probs.swapaxes(-1, -2), dout)  # (B, H, L, Dv)
    dlogits = xp.matmul(dout, v.swapaxes(-1, -2))  # dP, (B, H, L, L)
    row = xp.sum(dlogits * probs, axis=-1, keepdims=True)  # (B, H, L, 1)
    dlogits -= row
    dlogits *= probs  # dS, in place
    if keep is not None:
        xp.copyto(dlogits, xp.asarray(0, dtype=dlogits.dtype), where=~keep)
    if scale != 1.0:
        dlogits *= scale
    dq = xp.matmul(dlogits, k)  # (B, H, L, Dh)
    dk = xp.matmul(dlogits.swapaxes(-1, -2), q)  # (B, H, L, Dh)
    return dq, dk, dv


def attention_forward(q, k, v, *, causal: bool = False, mask=None):
    """Scaled dot-product attention (paper eq. 1; Vaswani et al. 2017, eq. 1), per head.

        out = softmax(mask(Q K^T / sqrt(Dh))) V

    Args:
        q, k: (B, H, L, Dh) float queries and keys.
        v: (B, H, L, Dv) float values.
        causal: query i sees only keys j <= i (others set to NEG_MASK).
        mask: None or (B, L) bool, True for a real token; padding keys are set to NEG_MASK. A query
            whose keys are all masked attends uniformly to all L keys.

    Returns:
        ``(out (B, H, L, Dv), cache)``; ``cache.lse`` (B, H, L) is the per-query log-sum-exp of the
        masked logits and ``cache.probs`` (B, H, L, L) the attention weights.
    """
    checks.attention(q, k, v, mask, causal)
    return _attend(q, k, v, 1.0 / q.shape[-1] ** 0.5, causal, mask, self_mask=False)


def attention_backward(dout, cache: AttentionCache):
    """dout (B, H, L, Dv) -> (dq, dk, dv), shaped like q, k, v.

    Softmax backward: dS = P * (dP - sum_j(dP * P)) with dP = dout V^T (see _attend_backward).
    """
    return _attend_backward(dout, cache)


def shared_qk_attention_forward(qk, v, *, causal: bool = False, mask=None):
    """Shared-QK attention (paper section 2): keys are the unit-norm queries, self masked.

        k_j = qk_j / |qk_j|,   out_i = sum_j softmax_j(mask(qk_i . k_j)) v_j

    The logits are not scaled by 1/sqrt(Dh) (trax / Hugging Face convention). Each query's own logit
    is set to NEG_SELF, so a token attends to itself only when every other key is masked: token 0
    under ``causal`` returns v_0.

    Args:
        qk: (B, H, L, Dh) float shared queries/keys.
        v: (B, H, L, Dv) float values.
        causal, mask: as in :func:`attention_forward`.

    Returns:
        ``(out (B, H, L, Dv), cache)`` with ``cache.lse`` (B, H, L) and ``cache.probs``.
    """
    checks.heads("qk", qk, "v", v, mask, causal)
    keys, unit = unit_norm_forward(qk)  # (B, H, L, Dh)
    return _attend(qk, keys, v, 1.0, causal, mask, self_mask=True, unit=unit)


def shared_qk_attention_backward(dout, cache: AttentionCache):
    """dout (B, H, L, Dv) -> (dqk, dv): qk receives its gradient as the query and, through the
    unit-norm backward, as the key."""
    dq, dkeys, dv = _attend_backward(dout, cache)
    return dq + unit_norm_backward(dkeys, cache.unit), dv
