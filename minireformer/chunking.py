"""Chunking: position-wise layers applied a slice of positions at a time (paper section 3, eq. 10).

A feed-forward layer acts on each position independently, so it can be computed over chunks of c
positions (paper equation 10):

    Y2 = [Y2^(1); ...; Y2^(L/c)] = [X2^(1) + FF(Y1^(1)); ...; X2^(L/c) + FF(Y1^(L/c))]

Only one chunk's (B, c, F) intermediate exists at a time instead of the whole (B, L, F). The same
trick applies to the output projection and the loss: the (B, L, V) logits of a large vocabulary are
computed, turned into log-probabilities and a cross-entropy, and freed, c positions at a time.

Both ops follow the op convention, but their caches hold only their *inputs*: the backward pass
recomputes each chunk's intermediate (the FF hidden layer, the logits) just before it needs it,
so the wide intermediate never exists whole in the forward or in the backward. For the reversible
block, which needs the output and the gradient of the feed-forward together,
:func:`chunked_feedforward_forward_backward` computes both with a single pass per chunk.

Dropout inside the feed-forward uses, for chunk i, the seed :func:`chunk_seed` (seed, i); with one
chunk this is the layer's seed itself, so a single chunk is exactly the unchunked layer.

Shape letters: B batch, L length, D model width (Din: input width of the output projection),
F feed-forward width, V vocabulary, c chunk length (``chunk_len``).

References: https://arxiv.org/abs/2001.04451 (section 3, "Chunking"); Hugging Face's
``apply_chunking_to_forward`` and trax's chunked feed-forward and loss layers.
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend, checks, layers, loss

_SEED_STRIDE = 0x9E3779B97F4A7C15  # an odd 64-bit constant: chunk seeds far apart from each other
_SEED_MOD = 2**63


def chunk_seed(seed, index: int):
    """The dropout seed of chunk ``index`` of a layer whose seed is ``seed`` (None stays None).

    Chunk 0 keeps ``seed`` itself, so that one chunk reproduces the unchunked layer exactly.
    """
    if seed is None or index == 0:
        return seed
    return (int(seed) + index * _SEED_STRIDE) % _SEED_MOD


def chunk_slices(length: int, chunk_len: int) -> list[slice]:
    """Slices [0, c), [c, 2c), ... covering 0..length-1 (the last one may be shorter)."""
    return [slice(s, min(s + chunk_len, length)) for s in range(0, length, chunk_len)]


# ---------------------------------------------------------------------------------------------
# Chunked feed-forward (paper eq. 10)
# ---------------------------------------------------------------------------------------------


class ChunkedFeedForwardCache(NamedTuple):
    x: object  # (..., L, D) the input; the (..., c, F) hidden layer is recomputed per chunk
    p: dict  # {"w1", "b1", "w2", "b2"}
    chunk_len: int
    activation: str
    dropout: float
    seed: object  # int or None: the layer's dropout seed


def chunked_feedforward_forward(
    x, p, *, chunk_len: int, activation: str = "gelu", dropout: float = 0.0, seed=None
):
    """The feed-forward layer of :func:`layers.feedforward_forward`, c positions at a time.

    Args:
        x: (..., L, D) float; chunks are cut along the position axis (the second last).
        p: {"w1" (D, F), "b1" (F,), "w2" (F, D), "b2" (D,)}.
        chunk_len: c, positions per chunk (>= 1; c >= L gives the unchunked layer).
        activation, dropout, seed: as in :func:`layers.feedforward_forward` (chunk i uses
            ``chunk_seed(seed, i)``).

    Returns:
        ``(out (..., L, D), cache)``; the cache holds only ``x`` and ``p``.
    """
    checks.chunked_positions(x, chunk_len)
    xp = backend.array_module(x)
    out = None
    for i, s in enumerate(chunk_slices(x.shape[-2], chunk_len)):
        y, _ = layers.feedforward_forward(
            x[..., s, :], p, activation=activation, dropout=dropout, seed=chunk_seed(seed, i)
        )  # (..., c, D); the chunk's cache, holding its (..., c, F) hidden layer, is dropped
        if out is None:
            out = xp.empty(x.shape[:-1] + y.shape[-1:], dtype=y.dtype)  # (..., L, D)
        out[..., s, :] = y
    return out, ChunkedFeedForwardCache(x, p, chunk_len, activation, dropout, seed)


def _ff_chunks_backward(x, dout, p, chunk_len, activation, dropout, seed, want_out):
    """Per chunk: recompute the forward, backpropagate ``dout``; optionally keep the output too."""
    xp = backend.array_module(x, dout)
    dx = xp.empty_like(x)  # (..., L, D)
    out = xp.empty(dout.shape, dtype=dout.dtype) if want_out else None  # (..., L, D)
    dp = None
    for i, s in enumerate(chunk_slices(x.shape[-2], chunk_len)):
        y, cache = layers.feedforward_forward(
            x[..., s, :], p, activation=activation, dropout=dropout, seed=chunk_seed(seed, i)
        )
        if want_out:
            out[..., s, :] = y
        dx[..., s, :], dp_i = layers.feedforward_backward(dout[..., s, :], cache)
        if dp is None:
            dp = dp_i
        else:  # in place: no third set of weight gradients beside the sum and the chunk's
            for k in dp:
                dp[k] += dp_i[k]
    return out, dx, dp


def chunked_feedforward_backward(dout, cache: ChunkedFeedForwardCache):
    """dout (..., L, D) -> (dx (..., L, D), dp with the keys of p), recomputing chunk by chunk."""
    c = cache
    checks.grad("dout", dout, c.x.shape[:-1] + c.p["w2"].shape[1:], c.x.dtype)
    _, dx, dp = _ff_chunks_backward(
        c.x, dout, c.p, c.chunk_len, c.activation, c.dropout, c.seed, False
    )
    return dx, dp


def chunked_feedforward_forward_backward(
    x, p, dout, *, chunk_len: int, activation: str = "gelu", dropout: float = 0.0, seed=None
):
    """Output and gradients together, one forward and one backward per chunk.

    This is what a reversible block needs when it walks down: the output FF(x) to subtract from
    the residual stream, and the gradients, from a single recomputation.

    Args:
        x: (..., L, D); p, chunk_len, activation, dropout, seed: as in
            :func:`chunked_feedforward_forward`.
        dout: (..., L, D) upstream gradient.

    Returns:
        ``(out (..., L, D), dx (..., L, D), dp)``.
    """
    checks.chunked_positions(x, chunk_len)
    checks.grad("dout", dout, x.shape[:-1] + p["w2"].shape[1:], x.dtype)
    return _ff_chunks_backward(x, dout, p, chunk_len, activation, dropout, seed, True)


# ---------------------------------------------------------------------------------------------
# Chunked output projection, log-softmax and cross-entropy
# ---------------------------------------------------------------------------------------------


class ChunkedLossCache(NamedTuple):
    h: object  # (B, L, Din) the input of the output projection
    w: object  # (Din, V)
    b: object  # (V,) or None
    targets: object  # (B, L) int
    mask: object  # (B, L) bool or None
    chunk_len: int
    counts: list  # unmasked targets per chunk
    total: int  # unmasked targets overall


def chunked_output_loss_forward(h, w, b, targets, mask=None, *, chunk_len: int):
    """Mean cross-entropy of softmax(h w + b) over unmasked targets, c positions at a time.

    Each chunk's (B, c, V) logits are made by :func:`layers.linear_forward` and scored by
    :func:`loss.softmax_cross_entropy_forward` (max-subtracted log-softmax) with the *total*
    count of unmasked targets as normaliser, so that the chunks' losses add up to the mean over all
    targets, as the unchunked loss. Chunks without a target to score are skipped.

    Args:
        h: (B, L, Din) float.
        w: (Din, V) float; b: (V,) float or None.
        targets: (B, L) int token ids in [0, V).
        mask: None or (B, L) bool, True where the target counts.
        chunk_len: c, positions per chunk (>= 1).

    Returns:
        ``(loss, cache)``: ``loss`` a scalar; the cache holds only the inputs.
    """
    checks.chunked_loss(h, w, b, targets, mask, chunk_len)
    slices = chunk_slices(h.shape[1], chunk_len)
    if mask is None:
        counts = [h.shape[0] * (s.stop - s.start) for s in slices]
    else:
        counts = [int(mask[:, s].sum()) for s in slices]
    total = sum(counts)
    value = 0.0
    for s, count in zip(slices, counts):
        if count == 0:
            continue  # no target to score in this chunk
        value = value + _chunk_loss(h, w, b, targets, mask, s, total)[0]
    return value, ChunkedLossCache(h, w, b, targets, mask, chunk_len, counts, total)


def _chunk_loss(h, w, b, targets, mask, s, total):
    """Cross-entropy of positions ``s`` summed and divided by ``total``: (loss, caches)."""
    logits, lin_cache = layers.linear_forward(h[:, s], w, b)  # (B, c, V)
    chunk_mask = None if mask is None else mask[:, s]
    value, ce_cache = loss.softmax_cross_entropy_forward(
        logits, targets[:, s], chunk_mask, normalizer=total
    )
    return value, (lin_cache, ce_cache)


def chunked_output_loss_backward(dloss, cache: ChunkedLossCache):
    """dloss (scalar) -> (dh (B, L, Din), dw (Din, V), db (V,)) or (dh, dw) when b is None.

    Each chunk's logits are recomputed, backpropagated and freed before the next chunk.
    """
    checks.scalar_grad("dloss", dloss)
    h, w, b, targets, mask = cache.h, cache.w, cache.b, cache.targets, cache.mask
    xp = backend.array_module(h, w)
    dh = xp.zeros_like(h)  # (B, L, Din): chunks without targets get zero gradient
    dw = xp.zeros_like(w)  # (Din, V)
    db = None if b is None else xp.zeros_like(b)  # (V,)
    for s, count in zip(chunk_slices(h.shape[1], cache.chunk_len), cache.counts):
        if count == 0:
            continue
        _, (lin_cache, ce_cache) = _chunk_loss(h, w, b, targets, mask, s, cache.total)
        dlogits = loss.softmax_cross_entropy_backward(dloss, ce_cache)  # (B, c, V)
        grads = layers.linear_backward(dlogits, lin_cache)
        dh[:, s] = grads[0]
        dw += grads[1]
        if b is not None:
            db += grads[2]
    return (dh, dw) if b is None else (dh, dw, db)
