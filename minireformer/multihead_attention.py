"""Multi-head attention, the layer: project x to heads, attend in each, merge, project back.

Vaswani et al. 2017 ("Attention Is All You Need", arXiv 1706.03762), section 3.2.2:

    Q = x W_q, K = x W_k, V = x W_v  -> split into H heads -> attention -> merge -> out W_o

with the attention on heads of ``attention.py`` in each head (paper equation 1), or, with one
projection W_qk for queries and keys, the Reformer's shared-QK attention (paper section 2). The
baseline Transformer uses this layer; the Reformer's attention sub-layer
(``attention_sublayer.py``) projects head group by head group instead.

Shape letters: B batch, L length, D model width, H heads, Dh head width.
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend, checks, layers
from .attention import (
    AttentionCache,
    attention_backward,
    attention_forward,
    merge_heads,
    shared_qk_attention_backward,
    shared_qk_attention_forward,
    split_heads,
)
from .checks import check_bool, check_float_dtype, check_positive_int, check_rng


class MultiheadAttentionCache(NamedTuple):
    x: object  # (B, L, D) the layer's input
    names: tuple  # the input projections, in order: ("w_q", "w_k", "w_v") or ("w_qk", "w_v")
    w_in: object  # (D, n * H*Dh) those projections side by side
    attn: AttentionCache  # of the attention on heads; its .lse is (B, H, L)
    ctx: object  # (B, L, H*Dh) the merged heads, the input of W_o
    w_o: object  # (H*Dh, D)


def init_multihead_attention(
    rng, d_model: int, n_heads: int, d_head: int, dtype="float32", *, shared_qk: bool = False
):
    """Parameters of a multi-head attention layer, drawn from a scaled normal distribution.

    Each weight is N(0, 1/fan_in), so that projections keep the scale of their input.

    Args:
        rng: ``numpy.random.Generator``.
        d_model: D; n_heads: H; d_head: Dh.
        dtype: float dtype of the weights.
        shared_qk: one projection "w_qk" instead of "w_q" and "w_k" (Reformer's shared-QK).

    Returns:
        dict with "w_q", "w_k" (or "w_qk"), "w_v" of shape (D, H*Dh) and "w_o" (H*Dh, D).
    """
    check_rng(rng)
    d_model = check_positive_int("d_model", d_model)
    width = check_positive_int("n_heads", n_heads) * check_positive_int("d_head", d_head)
    names = ("w_qk", "w_v") if check_bool("shared_qk", shared_qk) else ("w_q", "w_k", "w_v")
    params = {name: rng.standard_normal((d_model, width)) / d_model**0.5 for name in names}
    params["w_o"] = rng.standard_normal((width, d_model)) / width**0.5
    dtype = check_float_dtype(dtype)
    return {name: backend.asarray(w, dtype=dtype) for name, w in params.items()}


def multihead_attention_forward(x, p, *, n_heads: int, causal: bool = False, mask=None):
    """Multi-head attention (Vaswani et al. 2017, section 3.2.2; paper eq. 1 in each head).

        Q = x W_q, K = x W_k, V = x W_v  -> split into H heads -> attention -> merge -> out W_o

    The input projections run as one product with the weights side by side, [W_q W_k W_v].

    With ``p["w_qk"]`` instead of ``w_q``/``w_k``, the heads use :func:`shared_qk_attention_forward`
    (unit-norm keys, self mask, no 1/sqrt(Dh)); otherwise :func:`attention_forward`.

    Args:
        x: (B, L, D) float.
        p: {"w_q", "w_k", "w_v": (D, H*Dh), "w_o": (H*Dh, D)}, or "w_qk" for the first two.
        n_heads: H, dividing the projection width H*Dh.
        causal, mask: as in :func:`attention_forward`; mask (B, L) bool, True for real tokens.

    Returns:
        ``(out (B, L, D), cache)``; ``cache.attn.lse`` (B, H, L).
    """
    checks.multihead(x, p, n_heads)
    xp = backend.array_module(x)
    names = ("w_qk", "w_v") if "w_qk" in p else ("w_q", "w_k", "w_v")
    w_in = xp.concatenate([p[name] for name in names], axis=1)  # (D, n W), one product for all
    batch, length, _ = x.shape
    y = layers.flat_matmul(x, w_in).reshape(batch, length, len(names), n_heads, -1)  # (B,L,n,H,Dh)
    heads = xp.ascontiguousarray(y.transpose(2, 0, 3, 1, 4))  # (n, B, H, L, Dh)
    attend = shared_qk_attention_forward if "w_qk" in p else attention_forward
    ctx, attn = attend(*heads, causal=causal, mask=mask)  # (B, H, L, Dh)
    ctx = merge_heads(ctx)  # (B, L, H*Dh)
    out = layers.flat_matmul(ctx, p["w_o"])  # (B, L, D)
    return out, MultiheadAttentionCache(x, names, w_in, attn, ctx, p["w_o"])


def multihead_attention_backward(dout, cache: MultiheadAttentionCache):
    """dout (B, L, D) -> (dx (B, L, D), dp with the keys of p)."""
    c = cache
    checks.grad("dout", dout, c.x.shape[:-1] + c.w_o.shape[1:], c.x.dtype)
    xp = backend.array_module(dout)
    batch, length, width = c.ctx.shape
    n_heads = c.attn.q.shape[1]
    dw_o = layers.linear_param_grads(dout, c.ctx)[0]
    dctx = split_heads(layers.linear_input_grad(dout, c.w_o), n_heads)  # (B, H, L, Dh)
    if c.attn.unit is not None:
        dheads = shared_qk_attention_backward(dctx, c.attn)
    else:
        dheads = attention_backward(dctx, c.attn)
    dy = xp.empty((batch, length, len(c.names), n_heads, width // n_heads), dtype=dout.dtype)
    for i, dhead in enumerate(dheads):  # (B, H, L, Dh) -> its slot of (B, L, n, H, Dh)
        dy[:, :, i] = dhead.transpose(0, 2, 1, 3)
    dy = dy.reshape(batch, length, -1)  # (B, L, n W)
    dx = layers.linear_input_grad(dy, c.w_in)
    dw_in = layers.linear_param_grads(dy, c.x)[0]  # (D, n W)
    dp = {name: xp.ascontiguousarray(dw_in[:, i * width : (i + 1) * width])
          for i, name in enumerate(c.names)}  # fmt: skip
    dp["w_o"] = dw_o
    return dx, dp
