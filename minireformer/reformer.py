"""The Reformer language model (paper sections 2-5): LSH attention, reversible layers, chunking.

    x      = TokenEmbedding(tokens) + PositionalEmbedding(0..L-1)        (B, L, D)
    x1, x2 = x, x                                                         two streams (B, L, D)
    (x1, x2) -> block_0 -> ... -> block_{N-1} -> (y1, y2)                 reversible (eqs. 7-8)
    logits = LN([y1 ; y2]) W_out + b_out                                  (B, L, V), in chunks
    loss   = mean cross-entropy of logits at positions 0..L-2 against tokens 1..L-1

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

from dataclasses import dataclass

from . import backend, layers, model, positional
from .checks import (
    check_bool,
    check_mask,
    check_nonnegative_int,
    check_positive_int,
    check_rate,
    check_token_ids,
)
from .chunking import chunked_output_loss_backward, chunked_output_loss_forward
from .lsh import check_n_buckets
from .reversible import ReversibleBlock
from .sublayers import ATTENTION_TYPES, AttentionSubLayer, FeedForwardSubLayer, init_block_params
from .tree import check_params

POSITIONAL_TYPES = ("learned", "axial", "sinusoidal")
DTYPES = ("float32", "float64")


@dataclass
class ReformerConfig:
    """Hyper-parameters of a Reformer LM, validated on creation (``ValueError`` naming the field).

    Attributes:
        vocab_size: V.
        d_model: D, the width of each of the two residual streams.
        n_heads: H.
        d_head: Dh; None means d_model // n_heads, and then H must divide D.
        d_ff: F, the feed-forward hidden width.
        n_layers: N reversible blocks.
        attention_types: attention of each layer, cycled: "lsh", "local" or "full".
        n_hashes: R, LSH hash rounds.
        n_buckets: K (even) or its factors (K1, K2); None: lsh.default_n_buckets, the paper's
            rule K = 2 * ceil(L / chunk_len), factorised above lsh.MAX_UNFACTORED_BUCKETS.
        chunk_len: C, the chunk length of LSH and local attention.
        causal: language-model masking.
        ff_chunk: positions per feed-forward chunk (paper eq. 10); None: unchunked.
        loss_chunk: positions per output-projection / loss chunk; None: unchunked.
        n_parallel_heads: heads attended at a time (trax's name), bounding the attention's
            memory to that many heads' activations; None: all heads together.
        dropout: rate on the attention output and inside the feed-forward.
        positional: "learned" (a (max_len, D) table), "axial" (two factor tables) or
            "sinusoidal" (fixed, no parameters; ``positional.sinusoidal``).
        axial_shape: (L1, L2) with L1 * L2 >= max_len, for "axial".
        axial_dims: (d1, d2) with d1 + d2 = D; None: (D // 2, D - D // 2).
        max_len: the longest sequence; None with "axial": L1 * L2.
        dtype: "float32" or "float64".
        reversible: True: reversible backward (no stored activations); False: the same blocks
            with stored activations, for comparisons.
        activation: "gelu" or "relu" in the feed-forward.
        attend_across_buckets: LSH layers attend to keys of other buckets in their window
            (trax's switch; False, the paper's Appendix A semantics, masks them).
        allow_duplicate_attention: no log N_ij correction for keys attended in several rounds
            (trax's switch; False, the paper's semantics, subtracts it). Both True: the released
            trax / Hugging Face code.

    The parameters do not depend on ``n_hashes``, ``n_buckets``, ``chunk_len``, the two switches
    or which attention each layer uses, so a trained model is evaluated another way with one call:
    ``dataclasses.replace(config, n_hashes=8)`` or ``replace(config, attention_types=("full",))``.
    """

    vocab_size: int
    d_model: int
    n_heads: int
    d_ff: int
    n_layers: int
    d_head: int | None = None
    attention_types: tuple = ("lsh",)
    n_hashes: int = 1
    n_buckets: int | tuple | None = None
    chunk_len: int = 64
    causal: bool = True
    ff_chunk: int | None = None
    loss_chunk: int | None = None
    n_parallel_heads: int | None = None
    dropout: float = 0.0
    positional: str = "learned"
    axial_shape: tuple | None = None
    axial_dims: tuple | None = None
    max_len: int | None = None
    dtype: str = "float32"
    reversible: bool = True
    activation: str = "gelu"
    attend_across_buckets: bool = False
    allow_duplicate_attention: bool = False

    def __post_init__(self):
        for name in ("causal", "reversible", "attend_across_buckets", "allow_duplicate_attention"):
            check_bool(name, getattr(self, name))
        for name in ("vocab_size", "d_model", "n_heads", "d_ff", "n_layers", "n_hashes"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        self.chunk_len = check_positive_int("chunk_len", self.chunk_len)
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model: expected n_heads * d_head (d_head not given, so a multiple of "
                    f"n_heads={self.n_heads}), got {self.d_model}"
                )
            self.d_head = self.d_model // self.n_heads
        self.d_head = check_positive_int("d_head", self.d_head)
        types = self.attention_types
        if isinstance(types, str) or not isinstance(types, (list, tuple)) or not types:
            raise ValueError(
                f"attention_types: expected a non-empty list of {ATTENTION_TYPES}, got {types!r}"
            )
        bad = [t for t in types if t not in ATTENTION_TYPES]
        if bad:
            raise ValueError(
                f"attention_types: expected entries from {ATTENTION_TYPES}, got {bad[0]!r}"
            )
        self.attention_types = tuple(types)
        if self.n_buckets is not None:
            self.n_buckets = check_n_buckets(self.n_buckets)
        for name in ("ff_chunk", "loss_chunk", "n_parallel_heads"):
            if getattr(self, name) is not None:
                setattr(self, name, check_positive_int(name, getattr(self, name)))
        self.dropout = check_rate("dropout", self.dropout)  # a NumPy scalar becomes a float
        if self.positional not in POSITIONAL_TYPES:
            raise ValueError(
                f"positional: expected one of {POSITIONAL_TYPES}, got {self.positional!r}"
            )
        if self.positional == "axial":
            self._check_axial()
        elif self.max_len is None:
            raise ValueError(
                f"max_len: expected a positive integer for {self.positional} positions, got None"
            )
        else:
            self.max_len = check_positive_int("max_len", self.max_len)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {self.dtype!r}")
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"activation: expected 'gelu' or 'relu', got {self.activation!r}")

    def _check_axial(self):
        if self.axial_shape is None:
            raise ValueError("axial_shape: expected (L1, L2) for axial positions, got None")
        dims = self.axial_dims
        if dims is None:
            dims = (self.d_model // 2, self.d_model - self.d_model // 2)
        if self.max_len is not None:
            self.max_len = check_positive_int("max_len", self.max_len)
        shape, dims = positional.check_axial(self.axial_shape, dims, self.d_model, self.max_len)
        self.axial_shape, self.axial_dims = shape, dims
        if self.max_len is None:
            self.max_len = shape[0] * shape[1]

    def attention_type(self, layer: int) -> str:
        """The attention of layer ``layer``: the list cycled."""
        return self.attention_types[layer % len(self.attention_types)]


def build_blocks(config: ReformerConfig, *, dropout: float | None = None) -> list:
    """The N :class:`ReversibleBlock` s of ``config`` (``dropout`` overrides the config's rate)."""
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
            attend_across_buckets=config.attend_across_buckets,
            allow_duplicate_attention=config.allow_duplicate_attention,
        )
        g = FeedForwardSubLayer(
            chunk_len=config.ff_chunk, activation=config.activation, dropout=rate
        )
        blocks.append(ReversibleBlock(f, g, name=f"layer {i}"))
    return blocks


def init_reformer(config: ReformerConfig, rng) -> dict:
    """Parameters of a Reformer LM.

    Returns:
        {"embed": {"tokens": (V, D), "positions": (max_len, D)} (learned) or {"tokens": (V, D),
        "axial_1": (L1, d1), "axial_2": (L2, d2)} (axial) or {"tokens": (V, D)} (sinusoidal),
        "blocks": [N dicts {"attn": ...,
        "ff": ...} (see ``sublayers.init_block_params``)], "head": {"ln": {"gamma", "beta"}
        (2D,), "out": {"w": (2D, V), "b": (V,)}}}: embedding and head as in ``model.py``, the
        head acting on the two streams side by side.
    """
    if not isinstance(config, ReformerConfig):
        raise TypeError(f"config: expected a ReformerConfig, got {type(config).__name__}")
    backend.check_rng(rng)
    c = config
    if c.positional in ("axial", "sinusoidal"):
        tokens = rng.standard_normal((c.vocab_size, c.d_model)) / c.d_model**0.5
        embed = {"tokens": backend.asarray(tokens, dtype=c.dtype)}
        if c.positional == "axial":
            embed.update(positional.init_axial(rng, c.axial_shape, c.axial_dims, c.dtype))
    else:
        embed = model.init_embedding(rng, c.vocab_size, c.d_model, c.max_len, c.dtype)
    blocks = [
        init_block_params(rng, c.d_model, c.n_heads, c.d_head, c.d_ff, c.dtype)
        for _ in range(c.n_layers)
    ]
    head = model.init_head(rng, 2 * c.d_model, c.vocab_size, c.dtype)
    return {"embed": embed, "blocks": blocks, "head": head}


def _check_call(params, tokens, config, rng, dropout=None):
    """The entry checks of both entry points: the config's type, ``params`` against what
    :func:`init_reformer` makes for it (keys, block count, shapes, dtypes, finite values; see
    ``tree.check_params``), tokens (B, L) non-empty ids with L <= max_len, and the rng."""
    if not isinstance(config, ReformerConfig):
        raise TypeError(f"config: expected a ReformerConfig, got {type(config).__name__}")
    dropout = config.dropout if dropout is None else dropout
    needs_rng = dropout > 0 or "lsh" in config.attention_types[: config.n_layers]
    check_token_ids("tokens", tokens, config.vocab_size, ndim=2, nonempty=True)
    length = tokens.shape[1]
    if length > config.max_len:
        raise ValueError(
            f"tokens: expected at most max_len={config.max_len} positions, got length {length}"
        )
    if needs_rng or rng is not None:
        backend.check_rng(rng)
    check_params(params, config, init_reformer)


def embed(p, tokens, config, offset: int = 0):
    """Token plus positional embedding of positions offset..offset+L-1: (x (B, L, D), cache).

    p: params["embed"]; offset + L <= max_len."""
    offset = check_nonnegative_int("offset", offset)
    if offset + tokens.shape[1] > config.max_len:
        raise ValueError(
            f"offset: expected offset + length <= max_len={config.max_len}, got offset {offset} "
            f"and length {tokens.shape[1]}"
        )
    if config.positional == "learned":
        return model.embed_forward(p, tokens, offset)
    x, c_tok = layers.embedding_forward(tokens, p["tokens"])  # (B, L, D)
    if config.positional == "sinusoidal":
        pos = positional.sinusoidal(tokens.shape[1], config.d_model, offset, x.dtype)  # (L, D)
        return x + pos, (c_tok, None)
    pos, c_pos = positional.axial_forward(p, tokens.shape[1], offset)  # (L, D)
    return x + pos, (c_tok, c_pos)


def _embed_backward(dx, cache, config) -> dict:
    if config.positional == "learned":
        return model.embed_backward(dx, cache)
    c_tok, c_pos = cache
    grads = {"tokens": layers.embedding_backward(dx, c_tok)}
    if c_pos is not None:  # sinusoids have no parameters
        grads.update(positional.axial_backward(dx.sum(axis=0), c_pos))  # shared by the batch
    return grads


def _head_forward_backward(p, y1, y2, targets, loss_mask, config):
    """Loss of LN([y1; y2]) W_out + b_out at positions 0..L-2, and its gradients.

    p: params["head"]; y1, y2: (B, L, D); targets: (B, L-1). Returns (loss, dy1, dy2, dp).
    """
    xp = backend.array_module(y1, y2)
    h = xp.concatenate([y1[:, :-1], y2[:, :-1]], axis=-1)  # (B, L-1, 2D): the last predicts nothing
    if config.loss_chunk is None:
        loss, cache = model.head_forward(p, h, targets, loss_mask)  # the (B, L-1, V) logits kept
        del h
        dh, dp = model.head_backward(1.0, cache)
    else:
        hn, c_ln = layers.layernorm_forward(h, p["ln"]["gamma"], p["ln"]["beta"])
        del h
        loss, cache = chunked_output_loss_forward(
            hn, p["out"]["w"], p["out"]["b"], targets, loss_mask, chunk_len=config.loss_chunk
        )
        dhn, dw, db = chunked_output_loss_backward(1.0, cache)
        del cache, hn
        dh, dgamma, dbeta = layers.layernorm_backward(dhn, c_ln)
        dp = {"ln": {"gamma": dgamma, "beta": dbeta}, "out": {"w": dw, "b": db}}
    d = config.d_model
    dy1, dy2 = xp.zeros_like(y1), xp.zeros_like(y2)  # (B, L, D)
    dy1[:, :-1], dy2[:, :-1] = dh[..., :d], dh[..., d:]
    return loss, dy1, dy2, dp


def loss_and_grads(params, tokens, config: ReformerConfig, rng=None, loss_mask=None, *, offset=0):
    """Next-token cross-entropy of a Reformer LM and its gradients, by hand.

    Args:
        params: from :func:`init_reformer`.
        tokens: (B, L) int in [0, V), 2 <= L <= max_len; positions 0..L-2 predict tokens 1..L-1.
        config: the :class:`ReformerConfig`.
        rng: ``numpy.random.Generator`` for this step's LSH rotations and dropout seeds (drawn per
            layer); may be None only if there is no LSH layer and no dropout.
        loss_mask: None or (B, L-1) bool, True where the target counts.
        offset: the position of the window's first token, offset + L <= max_len (default 0): a
            short training window can take the positions of any place in a long context, so that
            every positional row is trained (the curriculum of notebook 08).

    Returns:
        ``(loss, grads)``: a float and a tree mirroring ``params``.
    """
    _check_call(params, tokens, config, rng)
    batch, length = tokens.shape
    if length < 2:
        raise ValueError(f"tokens: expected at least 2 positions to predict, got length {length}")
    if loss_mask is not None:
        check_mask("loss_mask", loss_mask, (batch, length - 1))
    blocks = build_blocks(config)
    x, embed_cache = embed(params["embed"], tokens, config, offset)  # (B, L, D)
    y1, y2 = x, x  # the input duplicated into two streams
    del x
    kept = []  # reversible: each block's small record; stored: each block's full cache
    for block, p in zip(blocks, params["blocks"]):
        if config.reversible:
            y1, y2, record = block.forward(y1, y2, p, rng)
        else:
            y1, y2, record = block.forward_stored(y1, y2, p, rng)
        kept.append(record)
    loss, dy1, dy2, head_grads = _head_forward_backward(
        params["head"], y1, y2, tokens[:, 1:], loss_mask, config
    )
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
    grads = {"embed": _embed_backward(dy1 + dy2, embed_cache, config)}  # both streams were x
    grads["blocks"] = block_grads
    grads["head"] = head_grads
    return float(loss), grads


def forward_logits(params, tokens, config: ReformerConfig, rng=None, *, train: bool = False):
    """Logits of every position, for evaluation and sampling (no gradients, nothing kept).

    Args:
        params, tokens (B, L), config: as in :func:`loss_and_grads`.
        rng: ``numpy.random.Generator`` for the LSH rotations (needed if there is an LSH layer).
        train: apply dropout (default False: evaluation).

    Returns:
        (B, L, V) logits; logits[:, t] scores the token at position t + 1.
    """
    train = check_bool("train", train)
    _check_call(params, tokens, config, rng, dropout=None if train else 0.0)
    rate = config.dropout if train else 0.0
    blocks = build_blocks(config, dropout=rate)
    x, _ = embed(params["embed"], tokens, config)  # (B, L, D)
    y1, y2 = x, x
    for block, p in zip(blocks, params["blocks"]):
        y1, y2, _ = block.forward(y1, y2, p, rng)
    xp = backend.array_module(y1, y2)
    return model.head_logits(params["head"], xp.concatenate([y1, y2], axis=-1))  # (B, L, V)
