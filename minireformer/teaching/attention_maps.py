"""Attention maps of a trained Reformer: which positions each query reads, for pictures.

Every attention here (full, local, LSH with any number of rounds) is linear in the values once
the hashing is fixed: out = P v, where P (L x L per head) holds the weight with which query i
reads position j; for multi-round LSH it is the round-weighted combination of each round's softmax
(paper Appendix A). So feeding the identity matrix as the values, v = I, returns P itself. This
builds an L x L array on purpose and is meant for short sequences only.

Shape letters: B batch, H heads, L length, D model width, Dh head width.
"""

from __future__ import annotations

from .. import backend, layers
from ..attention import split_heads
from ..embedding import embed_forward
from ..reformer import build_blocks


def attention_map(params, tokens, config, *, layer: int = 0, rng=None):
    """(B, H, L, L) attention weights of layer ``layer`` of a Reformer LM (rows sum to 1).

    Args:
        params, tokens (B, L), config: as in ``reformer.forward_logits``.
        layer: which block's attention (the blocks below it run first).
        rng: ``numpy.random.Generator`` for LSH rotations (the map is that of one hashing).
    """
    if not 0 <= layer < config.n_layers:
        raise ValueError(f"layer: expected an index in [0, {config.n_layers}), got {layer}")
    blocks = build_blocks(config, dropout=0.0)
    x, _ = embed_forward(params["embed"], tokens, positional_type=config.positional)  # (B, L, D)
    y1, y2 = x, x
    for block, p in zip(blocks[:layer], params["blocks"][:layer]):
        y1, y2, _ = block.forward(y1, y2, p, rng)
    f, p = blocks[layer].f, params["blocks"][layer]["attn"]
    h, _ = layers.layernorm_forward(y2, p["ln_gamma"], p["ln_beta"])  # F reads the second stream
    qk = split_heads(layers.linear_forward(h, p["w_qk"])[0], config.n_heads)  # (B, H, L, Dh)
    xp = backend.array_module(qk)
    batch, n_heads, length, _ = qk.shape
    eye = xp.broadcast_to(xp.eye(length, dtype=qk.dtype), (batch, n_heads, length, length))
    record = f.draw(rng, y2.shape)
    out, _ = f.attend(qk, xp.ascontiguousarray(eye), record)
    return out  # (B, H, L, L): row i is query i's weights over positions j
