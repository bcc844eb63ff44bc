"""The Reformer language model (paper sections 2-5): LSH attention, reversible layers, chunking.

    x      = TokenEmbedding(tokens) + PositionalEmbedding(0..L-1)        (B, L, D)  embedding.py
    x1, x2 = x, x                                                         two streams (B, L, D)
    (x1, x2) -> block_0 -> ... -> block_{N-1} -> (y1, y2)                 reversible (eqs. 7-8)
    logits = LN([y1 ; y2]) W_out + b_out                                  (B, L, V)  head.py
    loss   = mean cross-entropy of the logits at positions 0..L-1 against tokens 1..L

Block i's attention is ``attention_types[i % len(attention_types)]``: "lsh" (paper section 2),
"local" (chunked attention over the unsorted sequence) or "full" (dense shared-QK attention).

Training (:func:`loss_and_grads`) keeps only the top block's outputs and the blocks' small records
(rotations, buckets, dropout seeds); the backward pass walks down the stack with
:meth:`ReversibleBlock.reverse_and_grad`, rebuilding each block's inputs from its outputs (paper
section 3), so activation memory does not grow with depth. The feed-forward and the loss are
computed ``ff_chunk`` / ``loss_chunk`` positions at a time (paper eq. 10), so that the (B, L, F)
hidden layer and the (B, L, V) logits never exist whole. ``reversible=False`` runs the same blocks
with all activations stored (the baseline of the memory experiments); both give the same gradients.

Shape letters: B batch, L length, D model width, H heads, Dh head width, F feed-forward width,
V vocabulary, N layers.

References: https://arxiv.org/abs/2001.04451; trax ``trax/models/reformer/reformer.py``
(``ReformerLM``); Hugging Face ``modeling_reformer.py`` (``ReformerModelWithLMHead``).
"""

from __future__ import annotations

import functools

from . import backend, checks, embedding, head, tree
from .attention_sublayer import AttentionSubLayer, init_attention_params
from .feedforward_sublayer import FeedForwardSubLayer, init_feedforward_params
from .reformer_config import ReformerConfig
from .reversible import ReversibleBlock


@functools.lru_cache(maxsize=16)
def build_blocks(config: ReformerConfig, *, dropout: float | None = None) -> tuple:
    """The N :class:`ReversibleBlock` s of ``config``, built (and validated) once per config;
    ``dropout`` overrides the config's rate (0 for evaluation)."""
    rate = config.dropout if dropout is None else dropout
    blocks = []
    for i in range(config.n_layers):
        f = AttentionSubLayer(
            config.attention_type(i),
            n_heads=config.n_heads,
            d_head=config.d_head,
            chunk_len=config.chunk_len,
            n_hashes=config.n_hashes,
            n_buckets=config.n_buckets,
            causal=config.causal,
            dropout=rate,
            n_parallel_heads=config.n_parallel_heads,
            semantics=config.semantics,
        )
        g = FeedForwardSubLayer(
            chunk_len=config.ff_chunk, activation=config.activation, dropout=rate
        )
        blocks.append(ReversibleBlock(f, g, name=f"layer {i}"))
    return tuple(blocks)


def init_block_params(
    rng, d_model: int, n_heads: int, d_head: int, d_ff: int, dtype="float32"
) -> dict:
    """Parameters of one block: {"attn": F's, "ff": G's} (``attention_sublayer.py``,
    ``feedforward_sublayer.py``)."""
    return {
        AttentionSubLayer.key: init_attention_params(rng, d_model, n_heads, d_head, dtype),
        FeedForwardSubLayer.key: init_feedforward_params(rng, d_model, d_ff, dtype),
    }


def init_reformer(config: ReformerConfig, rng) -> dict:
    """Parameters of a Reformer LM.

    Returns:
        {"embed": {"tokens": (V, D), and "positions": (max_len, D) (learned) or "axial_1":
        (L1, d1), "axial_2": (L2, d2) (axial), nothing more for sinusoids}, "blocks": [N dicts
        {"attn": ..., "ff": ...} (:func:`init_block_params`)], "head": {"ln": {"gamma",
        "beta"} (2D,), "out": {"w": (2D, V), "b": (V,)}}}: the head acts on the two streams side
        by side.
    """
    if not isinstance(config, ReformerConfig):
        raise TypeError(f"config: expected a ReformerConfig, got {type(config).__name__}")
    checks.check_rng(rng)
    c = config
    embed = embedding.init_embedding(
        rng,
        c.vocab_size,
        c.d_model,
        positional_type=c.positional,
        max_len=c.max_len,
        axial_shape=c.axial_shape,
        axial_dims=c.axial_dims,
        dtype=c.dtype,
    )
    blocks = [
        init_block_params(rng, c.d_model, c.n_heads, c.d_head, c.d_ff, c.dtype)
        for _ in range(c.n_layers)
    ]
    out = head.init_head(rng, 2 * c.d_model, c.vocab_size, c.dtype)  # reads the two streams
    return {"embed": embed, "blocks": blocks, "head": out}


def _check_call(params, tokens, config, rng, *, targets, train, loss_mask=None, offset=0):
    """The door of both entry points: the config's type, ``params`` against what
    :func:`init_reformer` makes for it (``tree.check_params``), the tokens
    (``checks.lm_tokens``), and an rng when something is drawn (LSH rotations, dropout).
    Returns the dropout rate of the call (the config's when training, else 0)."""
    if not isinstance(config, ReformerConfig):
        raise TypeError(f"config: expected a ReformerConfig, got {type(config).__name__}")
    rate = config.dropout if checks.check_bool("train", train) else 0.0
    checks.lm_tokens(
        tokens, config.vocab_size, config.max_len, targets=targets, mask=loss_mask, offset=offset
    )
    if rate > 0 or config.uses_lsh or rng is not None:
        checks.check_rng(rng)
    tree.check_params(params, config, init_reformer)
    return rate


def loss_and_grads(params, tokens, config: ReformerConfig, rng=None, loss_mask=None, *, offset=0):
    """Next-token cross-entropy of a Reformer LM and its gradients, by hand.

    The model reads tokens 0..L-2; its logits at those L-1 positions predict tokens 1..L-1, so a
    window of max_len + 1 tokens trains every position.

    Args:
        params: from :func:`init_reformer`.
        tokens: (B, L) int in [0, V), 2 <= L <= max_len + 1.
        config: the :class:`ReformerConfig`.
        rng: ``numpy.random.Generator`` for this step's LSH rotations and dropout seeds (drawn per
            layer); may be None only if there is no LSH layer and no dropout.
        loss_mask: None or (B, L-1) bool, True where the target counts.
        offset: the position of the window's first token, offset + L - 1 <= max_len (default 0):
            a short training window can take the positions of any place in a long context.

    Returns:
        ``(loss, grads)``: a float and a tree mirroring ``params``.
    """
    _check_call(
        params, tokens, config, rng, targets=True, train=True, loss_mask=loss_mask, offset=offset
    )
    blocks = build_blocks(config)
    kind = config.positional
    with checks.trusted():
        x, embed_cache = embedding.embed_forward(
            params["embed"], tokens[:, :-1], positional_type=kind, offset=offset
        )  # (B, L-1, D)
        y1, y2 = x, x  # the input duplicated into two streams
        del x
        kept = []  # reversible: each block's small record; stored: each block's full cache
        for block, p in zip(blocks, params["blocks"]):
            if config.reversible:
                y1, y2, record = block.forward(y1, y2, p, rng)
            else:
                y1, y2, record = block.forward_stored(y1, y2, p, rng)
            kept.append(record)
        xp = backend.array_module(y1, y2)
        h = xp.concatenate([y1, y2], axis=-1)  # (B, L-1, 2D)
        loss, head_cache = head.head_loss_forward(
            params["head"], h, tokens[:, 1:], loss_mask, loss_chunk=config.loss_chunk
        )
        del h
        checks.check_finite("loss", loss)
        dh, head_grads = head.head_loss_backward(1.0, head_cache)  # (B, L-1, 2D)
        del head_cache
        dy1, dy2 = dh[..., : config.d_model], dh[..., config.d_model :]
        if not config.reversible:
            del y1, y2  # the stored caches hold what the backward pass needs
        block_grads = [None] * config.n_layers
        for i in reversed(range(config.n_layers)):
            if config.reversible:
                y1, y2, dy1, dy2, block_grads[i] = blocks[i].reverse_and_grad(
                    y1, y2, dy1, dy2, params["blocks"][i], kept[i]
                )
            else:
                dy1, dy2, block_grads[i] = blocks[i].backward_stored(dy1, dy2, kept[i])
            kept[i] = None  # this block's record or activations are no longer needed
        embed_grads = embedding.embed_backward(dy1 + dy2, embed_cache)  # both streams were x
    return float(loss), {"embed": embed_grads, "blocks": block_grads, "head": head_grads}


def forward_logits(params, tokens, config: ReformerConfig, rng=None, *, train: bool = False):
    """Logits of every position, for evaluation and sampling (no gradients, nothing kept).

    Args:
        params, config: as in :func:`loss_and_grads`; tokens (B, L) with 1 <= L <= max_len.
        rng: ``numpy.random.Generator`` for the LSH rotations (needed if there is an LSH layer).
        train: apply dropout (default False: evaluation).

    Returns:
        (B, L, V) logits; logits[:, t] scores the token at position t + 1.
    """
    rate = _check_call(params, tokens, config, rng, targets=False, train=train)
    blocks = build_blocks(config, dropout=rate)
    with checks.trusted():
        x, _ = embedding.embed_forward(params["embed"], tokens, positional_type=config.positional)
        y1, y2 = x, x
        for block, p in zip(blocks, params["blocks"]):
            y1, y2, _ = block.forward(y1, y2, p, rng)
        xp = backend.array_module(y1, y2)
        return head.head_logits(params["head"], xp.concatenate([y1, y2], axis=-1))  # (B, L, V)
