"""The output of both language models: final layer norm, projection to the vocabulary, the loss.

    logits = LN(h) W_out + b_out                         h (B, L, Din) -> (B, L, V)
    loss   = mean cross-entropy of the logits against the next tokens, over unmasked targets

Din is D for the Transformer and 2D for the Reformer, whose head reads its two streams side by
side. With ``loss_chunk`` the projection and the loss run a slice of positions at a time
(``chunking.chunked_output_loss_forward``, paper section 3), so that the (B, L, V) logits never
exist whole.

Shape letters: B batch, L length, Din the head's input width, V vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple

from . import layers, loss
from .chunking import chunked_output_loss_backward, chunked_output_loss_forward


def init_head(rng, d_in: int, vocab_size: int, dtype="float32") -> dict:
    """``{"ln": {"gamma", "beta"} (Din,), "out": {"w": (Din, V), "b": (V,)}}``."""
    gamma, beta = layers.init_layernorm(d_in, dtype)
    w, b = layers.init_linear(rng, d_in, vocab_size, dtype)
    return {"ln": {"gamma": gamma, "beta": beta}, "out": {"w": w, "b": b}}


def head_logits(p: dict, h):
    """logits = LN(h) W_out + b_out. p: params["head"]; h: (B, L, Din) -> (B, L, V)."""
    hn, _ = layers.layernorm_forward(h, p["ln"]["gamma"], p["ln"]["beta"])
    return layers.linear_forward(hn, p["out"]["w"], p["out"]["b"])[0]


class HeadCache(NamedTuple):
    ln: layers.LayerNormCache
    out: object  # the projection's LinearCache (unchunked) or None (chunked)
    loss: object  # the CrossEntropyCache, or the ChunkedLossCache


def head_loss_forward(p: dict, h, targets, mask=None, *, loss_chunk: int | None = None):
    """Mean cross-entropy of LN(h) W_out + b_out against ``targets`` over unmasked positions.

    p: params["head"]; h: (B, L, Din); targets: (B, L) int in [0, V); mask: (B, L) bool, True =
    counted, or None; loss_chunk: positions per chunk, or None for all at once.
    Returns ``(loss (0-d), cache)``.
    """
    hn, c_ln = layers.layernorm_forward(h, p["ln"]["gamma"], p["ln"]["beta"])  # (B, L, Din)
    w, b = p["out"]["w"], p["out"]["b"]
    if loss_chunk is not None:
        value, c_loss = chunked_output_loss_forward(hn, w, b, targets, mask, chunk_len=loss_chunk)
        return value, HeadCache(c_ln, None, c_loss)
    logits, c_out = layers.linear_forward(hn, w, b)  # (B, L, V)
    value, c_loss = loss.softmax_cross_entropy_forward(logits, targets, mask)
    return value, HeadCache(c_ln, c_out, c_loss)


def head_loss_backward(dloss, cache: HeadCache):
    """-> (dh (B, L, Din), {"ln": {"gamma", "beta"}, "out": {"w", "b"}})."""
    if cache.out is None:
        dhn, dw, db = chunked_output_loss_backward(dloss, cache.loss)
    else:
        dlogits = loss.softmax_cross_entropy_backward(dloss, cache.loss)  # (B, L, V)
        dhn, dw, db = layers.linear_backward(dlogits, cache.out)
    dh, dgamma, dbeta = layers.layernorm_backward(dhn, cache.ln)
    return dh, {"ln": {"gamma": dgamma, "beta": dbeta}, "out": {"w": dw, "b": db}}
