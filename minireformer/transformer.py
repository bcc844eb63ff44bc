"""The plain Transformer language model: the baseline the Reformer is compared against.

A decoder-only Transformer (Vaswani et al. 2017, "Attention Is All You Need", arXiv 1706.03762)
with pre-LayerNorm blocks (Xiong et al. 2020, arXiv 2002.04745; as in GPT-2) and standard
residuals, whose backward pass uses activations stored during the forward pass: the "Transformer"
row of the Reformer paper's Table 3 (arXiv 2001.04451), memory max(b l d_ff, b n_h l^2) n_l.

    x      = TokenEmbedding(tokens) + PositionalEmbedding(0..L-1)      (B, L, D)  embedding.py
    x      = x + Dropout(Attention(LN1(x)))                             each of the N blocks
    x      = x + Dropout(FeedForward(LN2(x)))
    logits = LN_f(x) W_out + b_out                                      (B, L, V)  head.py
    loss   = mean cross-entropy of the logits at positions 0..L-1 against tokens 1..L

Every block's cache stays alive from the forward pass until the backward pass reaches it: that is
what makes memory grow linearly with depth (notebook 01).

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

from dataclasses import dataclass
from typing import NamedTuple

from . import checks, embedding, head, layers, multihead_attention, tree
from .checks import check_bool, check_choice, check_positive_int, check_rate

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of the baseline Transformer LM, validated on creation (frozen).

    Attributes:
        vocab_size: V.
        d_model: D, the width of the residual stream.
        n_heads: H.
        d_head: Dh; any positive width (H * Dh need not equal D: the attention projects D to
            H * Dh and back).
        d_ff: F, the feed-forward hidden width.
        n_layers: N blocks.
        max_len: the longest sequence the model reads (rows of the learned positional table).
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
            object.__setattr__(self, name, check_positive_int(name, getattr(self, name)))
        check_bool("causal", self.causal)
        check_bool("shared_qk", self.shared_qk)
        object.__setattr__(self, "dropout", check_rate("dropout", self.dropout))
        check_choice("dtype", self.dtype, DTYPES)


def init_transformer(config: TransformerConfig, rng) -> dict:
    """Parameters of the LM (see the module docstring for the tree), drawn from ``rng``."""
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"config: expected a TransformerConfig, got {type(config).__name__}")
    checks.check_rng(rng)
    c, dt = config, config.dtype
    blocks = []
    for _ in range(c.n_layers):
        g1, b1 = layers.init_layernorm(c.d_model, dt)
        g2, b2 = layers.init_layernorm(c.d_model, dt)
        blocks.append(
            {
                "ln1": {"gamma": g1, "beta": b1},
                "attn": multihead_attention.init_multihead_attention(
                    rng, c.d_model, c.n_heads, c.d_head, dt, shared_qk=c.shared_qk
                ),
                "ln2": {"gamma": g2, "beta": b2},
                "ff": layers.init_feedforward(rng, c.d_model, c.d_ff, dt),
            }
        )
    return {
        "embed": embedding.init_embedding(
            rng, c.vocab_size, c.d_model, max_len=c.max_len, dtype=dt
        ),
        "blocks": blocks,
        "head": head.init_head(rng, c.d_model, c.vocab_size, dt),
    }


# ---------------------------------------------------------------------------------------------
# One pre-LayerNorm block with standard residuals
# ---------------------------------------------------------------------------------------------


class BlockCache(NamedTuple):
    ln1: layers.LayerNormCache
    attn: multihead_attention.MultiheadAttentionCache
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
    a, attn = multihead_attention.multihead_attention_forward(
        h, p["attn"], n_heads=n_heads, causal=causal
    )
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
    dh, dattn = multihead_attention.multihead_attention_backward(da, cache.attn)
    dh, dg1, db1 = layers.layernorm_backward(dh, cache.ln1)
    grads = {
        "ln1": {"gamma": dg1, "beta": db1},
        "attn": dattn,
        "ln2": {"gamma": dg2, "beta": db2},
        "ff": dff,
    }
    return dx + dh, grads


# ---------------------------------------------------------------------------------------------
# The language model
# ---------------------------------------------------------------------------------------------


def _check_call(params, tokens, config, *, targets: bool, loss_mask=None, offset=0):
    """The door of both entry points: the config's type, ``params`` against what
    :func:`init_transformer` makes for it, and the tokens (``checks.lm_tokens``)."""
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"config: expected a TransformerConfig, got {type(config).__name__}")
    tree.check_params(params, config, init_transformer)
    checks.lm_tokens(
        tokens, config.vocab_size, config.max_len, targets=targets, mask=loss_mask, offset=offset
    )


def _draw_seeds(config: TransformerConfig, rng):
    """One seed for the embedding dropout and three per block, or None without dropout."""
    if config.dropout == 0:
        return None, [None] * config.n_layers
    if rng is None:
        raise ValueError(
            f"rng: expected a numpy.random.Generator for dropout={config.dropout}, got None"
        )
    checks.check_rng(rng)
    embed_seed = layers.draw_seed(rng)
    return embed_seed, [
        tuple(layers.draw_seed(rng) for _ in range(3)) for _ in range(config.n_layers)
    ]


def forward_logits(params: dict, tokens, config: TransformerConfig):
    """Logits for every position, without dropout (evaluation and sampling).

    tokens: (B, L) int, 1 <= L <= max_len. Returns (B, L, V); logits[:, t] scores the token at
    position t + 1 and depends only on tokens 0..t when ``config.causal``.
    """
    _check_call(params, tokens, config, targets=False)
    with checks.trusted():
        x, _ = embedding.embed_forward(params["embed"], tokens)
        for p in params["blocks"]:
            x, _ = block_forward(p, x, n_heads=config.n_heads, causal=config.causal)
        return head.head_logits(params["head"], x)


def loss_and_grads(
    params: dict, tokens, config: TransformerConfig, rng=None, loss_mask=None, *, offset: int = 0
):
    """Next-token loss of the LM and its gradient with respect to every parameter.

    The model reads tokens 0..L-2 and its logits at those L-1 positions predict tokens 1..L-1;
    the loss is their mean cross-entropy over the targets where ``loss_mask`` is True. A window of
    max_len + 1 tokens therefore trains every position of the model. Every block's cache is kept
    until the backward pass reaches it (stored activations).

    Args:
        params: the tree from :func:`init_transformer`.
        tokens: (B, L) int in [0, V), 2 <= L <= max_len + 1.
        config: the model's :class:`TransformerConfig`.
        rng: ``numpy.random.Generator`` for dropout seeds; needed only when config.dropout > 0.
        loss_mask: (B, L-1) bool, True for counted targets, or None for all.
        offset: the position of the window's first token (offset + L - 1 <= max_len).

    Returns:
        ``(loss, grads)``: a Python float and a tree mirroring ``params``.
    """
    _check_call(params, tokens, config, targets=True, loss_mask=loss_mask, offset=offset)
    seeds = _draw_seeds(config, rng)
    with checks.trusted():
        # Forward, keeping every cache.
        x, embed_cache = embedding.embed_forward(params["embed"], tokens[:, :-1], offset=offset)
        x, embed_drop = layers.dropout_forward(x, config.dropout, seeds[0])  # (B, L-1, D)
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
        loss, head_cache = head.head_loss_forward(params["head"], x, tokens[:, 1:], loss_mask)
        checks.check_finite("loss", loss)

        # Backward, block by block from the top.
        dx, dhead = head.head_loss_backward(1.0, head_cache)  # (B, L-1, D)
        dblocks = [None] * len(caches)
        for i in reversed(range(len(caches))):
            dx, dblocks[i] = block_backward(dx, caches[i])
            caches[i] = None  # free this block's activations as soon as they are used
        dx = layers.dropout_backward(dx, embed_drop)
        dembed = embedding.embed_backward(dx, embed_cache)
    return float(loss), {"embed": dembed, "blocks": dblocks, "head": dhead}
