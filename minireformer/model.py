"""The plain Transformer language model: the baseline the Reformer is compared against.

A decoder-only Transformer (Vaswani et al. 2017, "Attention Is All You Need", arXiv 1706.03762)
with pre-LayerNorm blocks (Xiong et al. 2020, arXiv 2002.04745; as in GPT-2) and standard
residuals, whose backward pass uses activations stored during the forward pass: the "Transformer"
row of the Reformer paper's Table 3 (arXiv 2001.04451), memory max(b l d_ff, b n_h l^2) n_l.

    x      = TokenEmbedding(tokens) + PositionalEmbedding(0..L-1)      (B, L, D)
    x      = x + Dropout(Attention(LN1(x)))                             each of the N blocks
    x      = x + Dropout(FeedForward(LN2(x)))
    logits = LN_f(x) W_out + b_out                                      (B, L, V)
    loss   = mean cross-entropy of logits at positions 0..L-2 against tokens 1..L-1

The embedding (:func:`embed_forward`) and the output head (:func:`head_forward`: final layer
norm, projection, loss) are separate forward/backward pairs so that other language models, such
as the Reformer LM, can reuse them. Every block's cache stays alive from the forward pass until the
backward pass reaches it: that is what makes memory grow linearly with depth (notebook 01).

Parameter tree::

    {"embed": {"tokens": (V, D), "positions": (max_len, D)},
     "blocks": [{"ln1": {"gamma", "beta"}, "attn": {"w_q", "w_k" (or "w_qk"), "w_v", "w_o"},
                 "ln2": {"gamma", "beta"}, "ff": {"w1", "b1", "w2", "b2"}}, ...],
     "head": {"ln": {"gamma", "beta"}, "out": {"w": (D, V), "b": (V,)}}}

Shape letters: B batch, L length, D model width, H heads, Dh head width, F feed-forward width,
V vocabulary, N layers.

References: https://arxiv.org/abs/2001.04451 (Reformer); nanoGPT ``model.py`` for the layout of a
small GPT; CS231n for the forward/backward-with-cache convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from . import attention, backend, layers
from .checks import (
    check_array,
    check_bool,
    check_mask,
    check_nonnegative_int,
    check_positive_int,
    check_rate,
    check_token_ids,
)
from .tree import check_params

DTYPES = ("float32", "float64")


@dataclass
class TransformerConfig:
    """Hyper-parameters of the baseline Transformer LM, validated on creation.

    Attributes:
        vocab_size: V.
        d_model: D, the width of the residual stream.
        n_heads: H.
        d_head: Dh; any positive width (H * Dh need not equal D: the attention projects D to
            H * Dh and back).
        d_ff: F, the feed-forward hidden width.
        n_layers: N blocks.
        max_len: the longest sequence (rows of the learned positional table).
        causal: language-model masking (a position attends to itself and earlier positions).
        dropout: rate on the embedding, each sub-layer's output and the feed-forward hidden layer.
        dtype: "float32" or "float64" (gradient checks).
        shared_qk: one projection for queries and keys, unit-norm keys (the Reformer's shared-QK,
            paper section 2, in a standard Transformer: the middle curve of the paper's Figure 3).
    """

    vocab_size: int
    d_model: int
    n_heads: int
    d_head: int
    d_ff: int
    n_layers: int
    max_len: int
    causal: bool = True
    dropout: float = 0.0
    dtype: str = "float32"
    shared_qk: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_heads", "d_head", "d_ff", "n_layers", "max_len"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        check_bool("causal", self.causal)
        check_bool("shared_qk", self.shared_qk)
        self.dropout = check_rate("dropout", self.dropout)  # a NumPy scalar becomes a float
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {self.dtype!r}")


# ---------------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------------


def init_embedding(rng, vocab_size: int, d_model: int, max_len: int, dtype="float32") -> dict:
    """``{"tokens": (V, D), "positions": (max_len, D)}``, entries N(0, 1/D).

    The 1/D variance gives the embedded vectors about unit length, like a layer norm's output.
    """
    backend.check_rng(rng)
    std = 1.0 / math.sqrt(check_positive_int("d_model", d_model))
    shapes = {"tokens": (vocab_size, d_model), "positions": (max_len, d_model)}
    return {
        name: backend.asarray(std * rng.standard_normal(shape), dtype=dtype)
        for name, shape in shapes.items()
    }


def init_head(rng, d_model: int, vocab_size: int, dtype="float32") -> dict:
    """``{"ln": {"gamma", "beta"} (D,), "out": {"w": (D, V), "b": (V,)}}``."""
    gamma, beta = layers.init_layernorm(d_model, dtype)
    w, b = layers.init_linear(rng, d_model, vocab_size, dtype)
    return {"ln": {"gamma": gamma, "beta": beta}, "out": {"w": w, "b": b}}


def init_transformer(config: TransformerConfig, rng) -> dict:
    """Parameters of the LM (see the module docstring for the tree), drawn from ``rng``."""
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"config: expected a TransformerConfig, got {type(config).__name__}")
    backend.check_rng(rng)
    c, dt = config, config.dtype
    blocks = []
    for _ in range(c.n_layers):
        g1, b1 = layers.init_layernorm(c.d_model, dt)
        g2, b2 = layers.init_layernorm(c.d_model, dt)
        blocks.append(
            {
                "ln1": {"gamma": g1, "beta": b1},
                "attn": attention.init_multihead_attention(
                    rng, c.d_model, c.n_heads, c.d_head, dt, shared_qk=c.shared_qk
                ),
                "ln2": {"gamma": g2, "beta": b2},
                "ff": layers.init_feedforward(rng, c.d_model, c.d_ff, dt),
            }
        )
    return {
        "embed": init_embedding(rng, c.vocab_size, c.d_model, c.max_len, dt),
        "blocks": blocks,
        "head": init_head(rng, c.d_model, c.vocab_size, dt),
    }


# ---------------------------------------------------------------------------------------------
# Embedding: token + learned position
# ---------------------------------------------------------------------------------------------


class EmbedCache(NamedTuple):
    tokens: layers.EmbeddingCache
    length: int  # L, the rows of the positional table that were used
    positions_shape: tuple  # (max_len, D)
    offset: int = 0  # the first row used


def embed_forward(p: dict, tokens, offset: int = 0):
    """x = tokens table[tokens] + positions table[offset..offset+L-1].

    p: {"tokens": (V, D), "positions": (max_len, D)}; tokens: (B, L) int with
    offset + L <= max_len; offset: the window's first position (default 0; the trainer may place
    a short window anywhere in the table). Returns ``(x (B, L, D), cache)``.
    """
    positions = p["positions"]
    check_array("tokens", tokens, ndim=2)
    offset = check_nonnegative_int("offset", offset)
    if offset + tokens.shape[1] > positions.shape[0]:
        raise ValueError(
            f"tokens: expected offset + length at most max_len={positions.shape[0]}, "
            f"got offset {offset} and shape {tuple(tokens.shape)}"
        )
    x, tok_cache = layers.embedding_forward(tokens, p["tokens"])  # (B, L, D)
    length = tokens.shape[1]
    pos = positions[offset : offset + length]  # (L, D)
    return x + pos, EmbedCache(tok_cache, length, positions.shape, offset)


def embed_backward(dx, cache: EmbedCache) -> dict:
    """dx (B, L, D) -> {"tokens": (V, D), "positions": (max_len, D)}."""
    xp = backend.array_module(dx)
    dpositions = xp.zeros(cache.positions_shape, dtype=dx.dtype)  # unused rows get zero
    rows = slice(cache.offset, cache.offset + cache.length)
    dpositions[rows] = dx.sum(axis=0)  # every sequence adds the same rows
    return {"tokens": layers.embedding_backward(dx, cache.tokens), "positions": dpositions}


# ---------------------------------------------------------------------------------------------
# One pre-LayerNorm block with standard residuals
# ---------------------------------------------------------------------------------------------


class BlockCache(NamedTuple):
    ln1: layers.LayerNormCache
    attn: attention.MultiheadAttentionCache
    drop1: layers.DropoutCache
    ln2: layers.LayerNormCache
    ff: layers.FeedForwardCache
    drop2: layers.DropoutCache


def block_forward(p: dict, x, *, n_heads: int, causal: bool, dropout: float = 0.0, seeds=None):
    """x + Attention(LN1(x)), then + FeedForward(LN2(.)), each branch followed by dropout.

    p: one entry of ``params["blocks"]``; x: (B, L, D); seeds: three ints (attention output, FF
    hidden, FF output), or None when ``dropout`` is 0. Returns ``(y (B, L, D), cache)``.
    """
    s_attn, s_hidden, s_ff = (None, None, None) if seeds is None else seeds
    h, ln1 = layers.layernorm_forward(x, p["ln1"]["gamma"], p["ln1"]["beta"])
    a, attn = attention.multihead_attention_forward(h, p["attn"], n_heads=n_heads, causal=causal)
    a, drop1 = layers.dropout_forward(a, dropout, s_attn)
    x = x + a  # (B, L, D) residual
    h, ln2 = layers.layernorm_forward(x, p["ln2"]["gamma"], p["ln2"]["beta"])
    f, ff = layers.feedforward_forward(h, p["ff"], dropout=dropout, seed=s_hidden)
    f, drop2 = layers.dropout_forward(f, dropout, s_ff)
    return x + f, BlockCache(ln1, attn, drop1, ln2, ff, drop2)


def block_backward(dy, cache: BlockCache):
    """dy (B, L, D) -> (dx (B, L, D), dp mirroring the block's parameters)."""
    # The residual passes dy straight through; each branch adds its own contribution.
    df = layers.dropout_backward(dy, cache.drop2)
    dh, dff = layers.feedforward_backward(df, cache.ff)
    dh, dg2, db2 = layers.layernorm_backward(dh, cache.ln2)
    dx = dy + dh  # gradient at the middle of the block
    da = layers.dropout_backward(dx, cache.drop1)
    dh, dattn = attention.multihead_attention_backward(da, cache.attn)
    dh, dg1, db1 = layers.layernorm_backward(dh, cache.ln1)
    grads = {
        "ln1": {"gamma": dg1, "beta": db1},
        "attn": dattn,
        "ln2": {"gamma": dg2, "beta": db2},
        "ff": dff,
    }
    return dx + dh, grads


# ---------------------------------------------------------------------------------------------
# Output head: final layer norm, projection to the vocabulary, cross-entropy
# ---------------------------------------------------------------------------------------------


def head_logits(p: dict, x):
    """logits = LN(x) W_out + b_out. p: params["head"]; x: (B, L, D) -> (B, L, V)."""
    h, _ = layers.layernorm_forward(x, p["ln"]["gamma"], p["ln"]["beta"])
    return layers.linear_forward(h, p["out"]["w"], p["out"]["b"])[0]


class HeadCache(NamedTuple):
    ln: layers.LayerNormCache
    out: layers.LinearCache
    loss: layers.CrossEntropyCache


def head_forward(p: dict, x, targets, mask=None):
    """Mean cross-entropy of LN(x) W_out + b_out against ``targets`` over unmasked positions.

    p: params["head"]; x: (B, T, D); targets: (B, T) int in [0, V); mask: (B, T) bool, True =
    counted, or None. Returns ``(loss (0-d), cache)``; ValueError if the loss is not finite.
    """
    h, ln = layers.layernorm_forward(x, p["ln"]["gamma"], p["ln"]["beta"])
    logits, out = layers.linear_forward(h, p["out"]["w"], p["out"]["b"])  # (B, T, V)
    loss, ce = layers.softmax_cross_entropy_forward(logits, targets, mask)
    return loss, HeadCache(ln, out, ce)


def head_backward(dloss, cache: HeadCache):
    """-> (dx (B, T, D), {"ln": {"gamma", "beta"}, "out": {"w", "b"}})."""
    dlogits = layers.softmax_cross_entropy_backward(dloss, cache.loss)  # (B, T, V)
    dh, dw, db = layers.linear_backward(dlogits, cache.out)
    dx, dgamma, dbeta = layers.layernorm_backward(dh, cache.ln)
    return dx, {"ln": {"gamma": dgamma, "beta": dbeta}, "out": {"w": dw, "b": db}}


# ---------------------------------------------------------------------------------------------
# The language model
# ---------------------------------------------------------------------------------------------


def _check_inputs(params, tokens, config, min_len: int = 1):
    """The entry checks of both entry points: the config's type, ``params`` against what
    :func:`init_transformer` makes for it (keys, block count, shapes, dtypes, finite values; see
    ``tree.check_params``) and tokens (B, L) non-empty ids with min_len <= L <= max_len."""
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"config: expected a TransformerConfig, got {type(config).__name__}")
    check_params(params, config, init_transformer)
    check_token_ids("tokens", tokens, config.vocab_size, ndim=2, nonempty=True)
    length = tokens.shape[1]
    if not min_len <= length <= config.max_len:
        raise ValueError(
            f"tokens: expected length in [{min_len}, max_len={config.max_len}], "
            f"got shape {tuple(tokens.shape)}"
        )


def _draw_seeds(config: TransformerConfig, rng):
    """One seed for the embedding dropout and three per block, or None without dropout."""
    if config.dropout == 0:
        return None, [None] * config.n_layers
    if rng is None:
        raise ValueError(
            f"rng: expected a numpy.random.Generator for dropout={config.dropout}, got None"
        )
    backend.check_rng(rng)
    embed_seed = layers.draw_seed(rng)
    return embed_seed, [
        tuple(layers.draw_seed(rng) for _ in range(3)) for _ in range(config.n_layers)
    ]


def forward_logits(params: dict, tokens, config: TransformerConfig):
    """Logits for every position, without dropout (evaluation and sampling).

    tokens: (B, L) int, L <= max_len. Returns (B, L, V); position t depends only on tokens 0..t
    when ``config.causal``.
    """
    _check_inputs(params, tokens, config)
    x, _ = embed_forward(params["embed"], tokens)
    for p in params["blocks"]:
        x, _ = block_forward(p, x, n_heads=config.n_heads, causal=config.causal)
    return head_logits(params["head"], x)


def loss_and_grads(
    params: dict, tokens, config: TransformerConfig, rng=None, loss_mask=None, *, offset: int = 0
):
    """Next-token loss of the LM and its gradient with respect to every parameter.

    Logits at positions 0..L-2 predict tokens 1..L-1; the loss is their mean cross-entropy over
    the positions where ``loss_mask`` is True. Every block's cache is kept until the backward pass
    reaches it (stored activations).

    Args:
        params: the tree from :func:`init_transformer`.
        tokens: (B, L) int in [0, V), 2 <= L <= max_len.
        config: the model's :class:`TransformerConfig`.
        rng: ``numpy.random.Generator`` for dropout seeds; needed only when config.dropout > 0.
        loss_mask: (B, L-1) bool, True for counted targets, or None for all.
        offset: the position of the window's first token (offset + L <= max_len; default 0).

    Returns:
        ``(loss, grads)``: a Python float and a tree mirroring ``params``.
    """
    _check_inputs(params, tokens, config, min_len=2)
    batch, length = tokens.shape
    if loss_mask is not None:
        check_mask("loss_mask", loss_mask, (batch, length - 1))
    seeds = _draw_seeds(config, rng)

    # Forward, keeping every cache.
    x, embed_cache = embed_forward(params["embed"], tokens, offset)  # (B, L, D)
    x, embed_drop = layers.dropout_forward(x, config.dropout, seeds[0])
    caches = []  # one per block, all alive until the backward pass
    for p, block_seeds in zip(params["blocks"], seeds[1]):
        x, cache = block_forward(
            p,
            x,
            n_heads=config.n_heads,
            causal=config.causal,
            dropout=config.dropout,
            seeds=block_seeds,
        )
        caches.append(cache)
    loss, head_cache = head_forward(params["head"], x[:, :-1], tokens[:, 1:], loss_mask)

    # Backward, block by block from the top.
    dx_head, dhead = head_backward(1.0, head_cache)  # (B, L-1, D)
    xp = backend.array_module(dx_head)
    dx = xp.zeros_like(x)  # the last position predicts nothing
    dx[:, :-1] = dx_head
    dblocks = [None] * len(caches)
    for i in reversed(range(len(caches))):
        dx, dblocks[i] = block_backward(dx, caches[i])
        caches[i] = None  # free this block's activations as soon as they are used
    dx = layers.dropout_backward(dx, embed_drop)
    grads = {"embed": embed_backward(dx, embed_cache), "blocks": dblocks, "head": dhead}
    return float(loss), grads
