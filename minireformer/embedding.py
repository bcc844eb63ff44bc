"""The input of both language models: token embeddings plus position embeddings.

    x[b, t] = E_tok[tokens[b, t]] + P[offset + t]                          (B, L, D)

P is one of three kinds (``positional``):

- ``"learned"``: a (max_len, D) table whose rows are parameters (the Transformer's, GPT-2's);
- ``"axial"``: the table factorised into two small learned tables (``positional.py``; the released
  Reformer code's ``AxialPositionalEncoding``), for very long sequences;
- ``"sinusoidal"``: fixed sines and cosines, no parameters (``positional.py``).

``offset`` places a window of L tokens at positions offset .. offset + L - 1 of the model's
``max_len`` (a trainer may train short windows anywhere in a long context).

Backward: the token table's gradient is a scatter-add of dx over the ids (a repeated id adds up);
a learned table's rows get the sum of dx over the batch; axial tables as in ``positional.py``.

Shape letters: B batch, L length, D model width, V vocabulary.

References: Vaswani et al. 2017 (arXiv 1706.03762), section 3.4-3.5; Radford et al. 2019 (GPT-2);
https://arxiv.org/abs/2001.04451 and trax ``AxialPositionalEncoding`` for axial positions.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from . import backend, checks, positional
from .checks import check_nonnegative_int, check_positive_int, check_rng

POSITIONAL_TYPES = ("learned", "axial", "sinusoidal")


# --- Token lookup --------------------------------------------------------------------------------


class TokenCache(NamedTuple):
    ids: object  # (...) int
    table_shape: tuple  # (V, D)
    dtype: object


def embedding_forward(ids, table):
    """out[...] = table[ids[...]]. ids: (...) int in [0, V), table: (V, D) -> out (..., D)."""
    checks.embedding(ids, table)
    return table[ids], TokenCache(ids, table.shape, table.dtype)


def embedding_backward(dout, cache: TokenCache):
    """dtable[v] = sum of dout over the positions whose id is v (a scatter-add).

    ``xp.add.at`` accumulates repeated ids; ``dtable[ids] += dout`` would keep only one of them.
    """
    checks.grad("dout", dout, cache.ids.shape + cache.table_shape[1:], cache.dtype)
    xp = backend.array_module(dout)
    dtable = xp.zeros(cache.table_shape, dtype=cache.dtype)  # (V, D)
    xp.add.at(dtable, cache.ids.reshape(-1), dout.reshape(-1, cache.table_shape[1]))
    return dtable


# --- Tokens plus positions -----------------------------------------------------------------------


def init_embedding(
    rng,
    vocab_size: int,
    d_model: int,
    *,
    positional_type: str = "learned",
    max_len: int | None = None,
    axial_shape=None,
    axial_dims=None,
    dtype="float32",
) -> dict:
    """{"tokens": (V, D)} with N(0, 1/D) entries (embedded vectors of about unit length, like a
    layer norm's output), plus "positions" (max_len, D) N(0, 1/D) for learned positions or
    "axial_1" (L1, d1), "axial_2" (L2, d2) for axial ones; sinusoids have no parameters."""
    check_rng(rng)
    std = 1.0 / math.sqrt(check_positive_int("d_model", d_model))
    shapes = {"tokens": (check_positive_int("vocab_size", vocab_size), d_model)}
    if positional_type == "learned":
        shapes["positions"] = (check_positive_int("max_len", max_len), d_model)
    p = {k: backend.asarray(std * rng.standard_normal(s), dtype=dtype) for k, s in shapes.items()}
    if positional_type == "axial":
        p.update(positional.init_axial(rng, axial_shape, axial_dims, dtype))
    return p


class EmbedCache(NamedTuple):
    tokens: TokenCache
    positional_type: str
    offset: int  # the first position embedded
    length: int  # L
    positions: object  # learned: the table's shape; axial: the AxialCache; sinusoidal: None


def embed_forward(p: dict, tokens, *, positional_type: str = "learned", offset: int = 0):
    """x = E_tok[tokens] + P[offset .. offset + L - 1]: tokens (B, L) -> (x (B, L, D), cache).

    p: {"tokens", and "positions" or "axial_1", "axial_2"} (see :func:`init_embedding`);
    offset + L must not exceed the positions there are (max_len).
    """
    offset = check_nonnegative_int("offset", offset)
    length = tokens.shape[1]
    x, c_tok = embedding_forward(tokens, p["tokens"])  # (B, L, D)
    if positional_type == "learned":
        table = p["positions"]
        if offset + length > table.shape[0]:
            raise ValueError(
                f"tokens: expected offset + length at most max_len={table.shape[0]}, "
                f"got offset {offset} and shape {tuple(tokens.shape)}"
            )
        x += table[offset : offset + length]  # (L, D), the same rows for every sequence
        return x, EmbedCache(c_tok, positional_type, offset, length, table.shape)
    if positional_type == "sinusoidal":
        x += positional.sinusoidal(length, x.shape[-1], offset, x.dtype)  # (L, D)
        return x, EmbedCache(c_tok, positional_type, offset, length, None)
    pos, c_axial = positional.axial_forward(p, length, offset)  # (L, D)
    x += pos
    return x, EmbedCache(c_tok, positional_type, offset, length, c_axial)


def embed_backward(dx, cache: EmbedCache) -> dict:
    """dx (B, L, D) -> gradients of the tokens table and of the positional parameters."""
    grads = {"tokens": embedding_backward(dx, cache.tokens)}
    if cache.positional_type == "learned":
        xp = backend.array_module(dx)
        dtable = xp.zeros(cache.positions, dtype=dx.dtype)  # unused rows get zero
        dtable[cache.offset : cache.offset + cache.length] = dx.sum(axis=0)
        grads["positions"] = dtable
    elif cache.positional_type == "axial":
        grads.update(positional.axial_backward(dx.sum(axis=0), cache.positions))
    return grads
