"""G, the feed-forward sub-layer of a Reformer block, chunked over positions (paper eq. 10).

    G(x) = FeedForward(LN(x)) = W2 act(W1 LN(x) + b1) + b2          x: (B, L, D)

computed ``chunk_len`` positions at a time (``chunking.py``), so that the (B, L, F) hidden layer
never exists whole. Its only random choice is a dropout seed (a :class:`FeedForwardRecord`); it
follows the sub-layer protocol that ``reversible.py`` describes.

Shape letters: B batch, L length, D model width, F feed-forward width.

References: https://arxiv.org/abs/2001.04451 (section 3, "Chunking").
"""

from __future__ import annotations

from typing import NamedTuple

from . import checks, layers
from .attention_sublayer import check_seed
from .checks import check_keys, check_positive_int, check_rate
from .chunking import (
    chunked_feedforward_backward,
    chunked_feedforward_forward,
    chunked_feedforward_forward_backward,
)

FF_KEYS = layers.FEEDFORWARD_KEYS


class FeedForwardRecord(NamedTuple):
    """What one run of G chose: its dropout seed (None without dropout)."""

    seed: object = None


class FeedForwardCache(NamedTuple):
    ln: layers.LayerNormCache
    ff: object  # feed-forward cache (chunked: only its input; unchunked: the hidden layer too)
    record: FeedForwardRecord


class FeedForwardSubLayer:
    """G(x) = FeedForward(LN(x)), x: (B, L, D), optionally chunked over positions (paper eq. 10).

    Parameters: {"ln_gamma", "ln_beta" (D,), "w1" (D, F), "b1" (F,), "w2" (F, D), "b2" (D,)}.
    With ``chunk_len`` None the whole (B, L, F) hidden layer is computed and, in stored mode, kept.
    """

    key = "ff"

    def __init__(self, *, chunk_len: int | None = None, activation: str = "gelu", dropout=0.0):
        self.chunk_len = None if chunk_len is None else check_positive_int("ff_chunk", chunk_len)
        self.activation = layers.check_activation(activation)
        self.dropout = check_rate("dropout", dropout)

    def draw(self, rng, shape) -> FeedForwardRecord:
        return FeedForwardRecord(layers.draw_seed(rng) if self.dropout > 0 else None)

    def check_record(self, record, shape) -> None:
        if not isinstance(record, FeedForwardRecord):
            raise ValueError(f"record: expected a feed-forward record, got {record!r}")
        check_seed(record.seed, self.dropout)

    def _settings(self, record):
        return dict(activation=self.activation, dropout=self.dropout, seed=record.seed)

    def forward(self, x, p, record: FeedForwardRecord, mask=None):
        """x (B, L, D) -> (out (B, L, D), cache). Chunked, the cache is only the input."""
        _check_ff_keys(p)
        h, ln = layers.layernorm_forward(x, p["ln_gamma"], p["ln_beta"])  # (B, L, D)
        ffp = {k: p[k] for k in FF_KEYS}
        if self.chunk_len is None:
            out, ff = layers.feedforward_forward(h, ffp, **self._settings(record))
        else:
            out, ff = chunked_feedforward_forward(
                h, ffp, chunk_len=self.chunk_len, **self._settings(record)
            )
        return out, FeedForwardCache(ln, ff, record)

    def backward(self, dout, cache: FeedForwardCache):
        """dout (B, L, D) -> (dx (B, L, D), dp with the keys of p)."""
        if self.chunk_len is None:
            dh, dp = layers.feedforward_backward(dout, cache.ff)
        else:
            dh, dp = chunked_feedforward_backward(dout, cache.ff)
        dx, dgamma, dbeta = layers.layernorm_backward(dh, cache.ln)
        return dx, {"ln_gamma": dgamma, "ln_beta": dbeta, **dp}

    def output(self, x, p, record: FeedForwardRecord, mask=None):
        """G(x): (out (B, L, D), record). Chunked, no (B, L, F) array is ever whole."""
        return self.forward(x, p, record, mask)[0], record

    def recompute_backward(self, x, p, record: FeedForwardRecord, mask, dout):
        """G(x) and its backward from ``dout``, chunk by chunk when chunked: (out, dx, dp)."""
        if self.chunk_len is None:
            out, cache = self.forward(x, p, record)
            return (out, *self.backward(dout, cache))
        h, ln = layers.layernorm_forward(x, p["ln_gamma"], p["ln_beta"])  # (B, L, D)
        ffp = {k: p[k] for k in FF_KEYS}
        out, dh, dp = chunked_feedforward_forward_backward(
            h, ffp, dout, chunk_len=self.chunk_len, **self._settings(record)
        )
        dx, dgamma, dbeta = layers.layernorm_backward(dh, ln)
        return out, dx, {"ln_gamma": dgamma, "ln_beta": dbeta, **dp}


@checks.door
def _check_ff_keys(p) -> None:
    check_keys("p", p, ("ln_gamma", "ln_beta", *FF_KEYS))


def init_feedforward_params(rng, d_model: int, d_ff: int, dtype="float32"):
    """{"ln_gamma" (ones), "ln_beta" (zeros) (D,), "w1" (D, F), "b1" (F,), "w2" (F, D), "b2"}."""
    p = layers.init_feedforward(rng, d_model, d_ff, dtype)
    p["ln_gamma"], p["ln_beta"] = layers.init_layernorm(d_model, dtype)
    return p
