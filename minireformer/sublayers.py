"""The two sub-layers of a Reformer block: F (attention) and G (feed-forward), layer norm inside.

A reversible block (:mod:`minireformer.reversible`, paper eqs. 7-9) computes y1 = x1 + F(x2) and
y2 = x2 + G(y1) with

    F(x) = Dropout(W_o Attention(LN(x)))        attention: "lsh", "local" or "full" (shared-QK)
    G(x) = FeedForward(LN(x))                   dropout on its hidden layer; chunked (eq. 10)

and must be able to run each of them again, later, exactly as it ran the first time. So a sub-layer
separates what it *chose* (LSH rotations and buckets, dropout seeds: a small record) from what it
*computed* (the activations, which a reversible block throws away), and follows this protocol:

    key                                   the name of its parameters in the block's dict
    draw(rng, shape) -> rec               the step's random choices for inputs of shape (B, L, D)
    check_record(rec, shape)              ValueError if rec is not one of its own for this shape
    forward(x, p, rec, mask, need_cache=True) -> (out, cache, rec)    rec completed (buckets)
                                          by the first run; without need_cache the cache may be
                                          left empty (only the output is wanted)
    backward(dout, cache) -> (dx, dp)
    forward_backward(x, p, rec, dout, mask) -> (out, dx, dp)   one recomputation for both

The LSH buckets are recorded, not recomputed, because in float32 a recomputed input differs from
the original in its last bits, which can move a vector across a bucket boundary (Hugging Face's
reversible backward likewise hands each layer's stored buckets back to its attention).

Shape letters: B batch, L length, D model width, H heads, Dh head width, F feed-forward width,
R hash rounds, K buckets, C chunk length.

References: https://arxiv.org/abs/2001.04451 (sections 2-3, eq. 10); trax
``trax/layers/research/efficient_attention.py`` (``n_parallel_heads``); Hugging Face
``modeling_reformer.py`` (``ReformerLayer.backward_pass``, buckets).
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend, layers, lsh
from .attention import (
    init_multihead_attention,
    merge_heads,
    shared_qk_attention_backward,
    shared_qk_attention_forward,
    split_heads,
)
from .checks import check_bool, check_float_array, check_keys, check_positive_int, check_rate
from .chunked_attention import local_attention_backward, local_attention_forward
from .chunking import (
    chunked_feedforward_backward,
    chunked_feedforward_forward,
    chunked_feedforward_forward_backward,
)
from .lsh_attention import lsh_attention_backward, lsh_attention_forward

ATTENTION_TYPES = ("lsh", "local", "full")
FF_KEYS = layers.FEEDFORWARD_KEYS
ATTENTION_KEYS = ("ln_gamma", "ln_beta", "w_qk", "w_v", "w_o")


def _check_seed(rec, rate) -> None:
    if (rec.get("seed") is None) != (rate == 0):
        raise ValueError(f"record: dropout seed {rec.get('seed')!r} does not match rate {rate}")


# ---------------------------------------------------------------------------------------------
# F: attention sub-layer
# ---------------------------------------------------------------------------------------------


class AttentionCache(NamedTuple):
    ln: object  # layer-norm cache
    qk: object  # linear cache of w_qk
    v: object  # linear cache of w_v
    attn: object  # cache of the attention on heads (its kind is the sub-layer's)
    out: object  # linear cache of w_o
    drop: object  # dropout cache, or None without dropout


class AttentionSubLayer:
    """F(x) = Dropout(merge(Attention(split(LN(x) W_qk), split(LN(x) W_v))) W_o), x: (B, L, D).

    ``kind`` chooses the attention on heads: "lsh" (:func:`lsh_attention_forward`), "local"
    (:func:`local_attention_forward`) or "full" (:func:`shared_qk_attention_forward`); all three are
    shared-QK (one projection W_qk, unit-norm keys). Parameters: {"ln_gamma", "ln_beta" (D,),
    "w_qk", "w_v" (D, H*Dh), "w_o" (H*Dh, D)}.

    ``attend_across_buckets`` and ``allow_duplicate_attention`` (LSH only) choose between the
    paper's semantics (both False) and the released code's (both True); see ``lsh_attention.py``.

    ``n_parallel_heads`` (trax's name) attends to that many heads at a time, one group after the
    other: heads are independent, so the result is the same, and only one group's attention
    activations (the (C, W) weights of every chunk, the largest arrays of the layer) exist at once.
    In the reversible recomputation each group is differentiated as soon as it is recomputed.
    """

    key = "attn"

    def __init__(
        self,
        kind: str,
        *,
        n_heads: int,
        d_head: int,
        chunk_len: int | None = None,
        n_hashes: int = 1,
        n_buckets: int | None = None,
        causal: bool = False,
        dropout: float = 0.0,
        n_chunks_before: int = 1,
        n_chunks_after: int = 0,
        n_parallel_heads: int | None = None,
        attend_across_buckets: bool = False,
        allow_duplicate_attention: bool = False,
    ):
        if kind not in ATTENTION_TYPES:
            raise ValueError(f"kind: expected one of {ATTENTION_TYPES}, got {kind!r}")
        self.kind = kind
        self.n_heads = check_positive_int("n_heads", n_heads)
        self.d_head = check_positive_int("d_head", d_head)
        if kind != "full":
            chunk_len = check_positive_int("chunk_len", chunk_len)
        self.chunk_len = chunk_len
        self.n_hashes = check_positive_int("n_hashes", n_hashes)
        self.n_buckets = None if n_buckets is None else lsh.check_n_buckets(n_buckets)
        self.causal = check_bool("causal", causal)
        self.attend_across_buckets = check_bool("attend_across_buckets", attend_across_buckets)
        self.allow_duplicate_attention = check_bool(
            "allow_duplicate_attention", allow_duplicate_attention
        )
        self.dropout = check_rate("dropout", dropout)
        self.n_chunks_before, self.n_chunks_after = n_chunks_before, n_chunks_after
        step = self.n_heads if n_parallel_heads is None else n_parallel_heads
        step = check_positive_int("n_parallel_heads", step)
        self.head_groups = [slice(h, h + step) for h in range(0, self.n_heads, step)]

    def _buckets_for(self, length: int) -> int:
        return self.n_buckets or lsh.default_n_buckets(length, self.chunk_len)

    def draw(self, rng, shape) -> dict:
        """Random choices of one step for inputs (B, L, D): LSH rotations, the dropout seed."""
        rec = {"kind": self.kind, "rotations": None, "buckets": None, "seed": None}
        if self.kind == "lsh":
            rec["rotations"] = lsh.random_rotations(
                rng, self.d_head, self.n_hashes, self._buckets_for(shape[1]), self.n_heads
            )  # (H, Dh, R, K/2)
        if self.dropout > 0:
            rec["seed"] = layers.draw_seed(rng)
        return rec

    def check_record(self, rec, shape) -> None:
        if not isinstance(rec, dict) or rec.get("kind") != self.kind:
            got = rec.get("kind") if isinstance(rec, dict) else type(rec).__name__
            raise ValueError(f"record: expected a record of {self.kind!r} attention, got {got!r}")
        if self.kind == "lsh":
            width = lsh.rotation_width(self._buckets_for(shape[1]))
            want = (self.n_heads, self.d_head, self.n_hashes, width)
            rot = rec["rotations"]
            if rot is None or tuple(rot.shape) != want:
                got = None if rot is None else tuple(rot.shape)
                raise ValueError(f"record: expected rotations of shape {want}, got {got}")
        _check_seed(rec, self.dropout)

    def forward(self, x, p, rec, mask=None, *, need_cache=True, dout=None):
        """x (B, L, D) -> (out (B, L, D), cache, rec); the first run adds the LSH buckets to rec.

        ``need_cache=False`` drops each group's attention cache as soon as it has run (only the
        output is wanted). With ``dout`` (B, L, D), the attention is differentiated group by
        group as it runs: ``cache.attn`` then holds ``(dqk, dv)`` (B, H, L, Dh) for
        :meth:`backward` (see :meth:`forward_backward`).
        """
        check_keys("p", p, ATTENTION_KEYS)
        width = self.n_heads * self.d_head  # H * Dh: a w_qk of another width is named here
        check_float_array("w_qk", p["w_qk"], shape=(x.shape[-1], width), finite=False)
        h, ln = layers.layernorm_forward(x, p["ln_gamma"], p["ln_beta"])  # (B, L, D)
        qk, c_qk = layers.linear_forward(h, p["w_qk"])  # (B, L, H*Dh)
        v, c_v = layers.linear_forward(h, p["w_v"])  # (B, L, H*Dh)
        qk, v = split_heads(qk, self.n_heads), split_heads(v, self.n_heads)  # (B, H, L, Dh)
        dctx = None
        if dout is not None:  # the output map is linear: dctx needs no forward activation
            dctx = split_heads(
                layers.linear_input_grad(self._dropout_backward(dout, rec), p["w_o"]), self.n_heads
            )  # (B, H, L, Dh)
        ctx, c_attn, rec = self._attend_groups(qk, v, rec, mask, dctx, need_cache)  # (B, H, L, Dh)
        out, c_out = layers.linear_forward(merge_heads(ctx), p["w_o"])  # (B, L, D)
        c_drop = None
        if self.dropout > 0:
            out, c_drop = layers.dropout_forward(out, self.dropout, rec["seed"])
        return out, AttentionCache(ln, c_qk, c_v, c_attn, c_out, c_drop), rec

    def _dropout_backward(self, dout, rec):
        """Dropout's backward from the recorded seed alone (the mask is regenerated from it)."""
        if self.dropout == 0:
            return dout
        cache = layers.DropoutCache(self.dropout, rec["seed"], dout.shape, dout.dtype)
        return layers.dropout_backward(dout, cache)

    def _attend_groups(self, qk, v, rec, mask, dctx=None, need_cache=True):
        """Attention of each group of heads in turn: (ctx (B, H, L, Dh), caches, rec).

        ``caches`` is one attention cache per group (none unless ``need_cache``) or, with
        ``dctx`` (B, H, L, Dh), the gradients ``(dqk, dv)`` computed from each group's cache
        before the next group runs.
        """
        xp = backend.array_module(qk)
        # each group writes its slice of preallocated arrays: no per-group pieces to concatenate
        ctx = xp.empty_like(v)  # (B, H, L, Dh)
        dqk, dv = (None, None) if dctx is None else (xp.empty_like(qk), xp.empty_like(v))
        caches, buckets = [], []
        for heads in self.head_groups:
            sub = rec
            if self.kind == "lsh":
                old = rec["buckets"]
                sub = {**rec, "rotations": rec["rotations"][heads]}
                sub["buckets"] = None if old is None else old[:, heads]
            ctx[:, heads], cache, sub = self.attend(qk[:, heads], v[:, heads], sub, mask)
            if self.kind == "lsh":
                buckets.append(sub["buckets"])
            if dctx is None:
                caches += [cache] if need_cache else []
            else:
                dqk[:, heads], dv[:, heads] = self._attend_backward(dctx[:, heads], cache)
            del cache

        if self.kind == "lsh" and rec["buckets"] is None:
            # (B, H, R, L) the pattern to replay
            rec = {**rec, "buckets": xp.concatenate(buckets, axis=1)}
        return ctx, (caches if dctx is None else (dqk, dv)), rec

    def attend(self, qk, v, rec, mask=None):
        """This sub-layer's attention on heads: qk (B, h, L, Dh), v (B, h, L, Dv) ->
        (out (B, h, L, Dv), cache, rec), with the rotations (and buckets, if any) of ``rec``."""
        if self.kind == "full":
            out, cache = shared_qk_attention_forward(qk, v, causal=self.causal, mask=mask)
            return out, cache, rec
        window = dict(n_chunks_before=self.n_chunks_before, n_chunks_after=self.n_chunks_after)
        if self.kind == "local":
            out, cache = local_attention_forward(
                qk, v, chunk_len=self.chunk_len, causal=self.causal, mask=mask, **window
            )
            return out, cache, rec
        out, cache = lsh_attention_forward(
            qk,
            v,
            chunk_len=self.chunk_len,
            n_hashes=self.n_hashes,
            n_buckets=self._buckets_for(qk.shape[2]),
            rotations=rec["rotations"],
            buckets=rec["buckets"],  # None on the first run; then replayed, never re-hashed
            causal=self.causal,
            mask=mask,
            attend_across_buckets=self.attend_across_buckets,
            allow_duplicate_attention=self.allow_duplicate_attention,
            **window,
        )
        if rec["buckets"] is None:
            rec = {**rec, "buckets": cache.buckets}  # (B, H, R, L) the pattern to replay
        return out, cache, rec

    def _attend_backward(self, dctx, cache):
        """dctx (B, h, L, Dh) for one group of heads -> (dqk, dv)."""
        if self.kind == "full":
            return shared_qk_attention_backward(dctx, cache)
        if self.kind == "local":
            return local_attention_backward(dctx, cache)
        return lsh_attention_backward(dctx, cache)

    def backward(self, dout, cache: AttentionCache):
        """dout (B, L, D) -> (dx (B, L, D), dp with the keys of p)."""
        dp = {}
        if cache.drop is not None:
            dout = layers.dropout_backward(dout, cache.drop)
        dctx, dp["w_o"] = layers.linear_backward(dout, cache.out)  # (B, L, H*Dh)
        if isinstance(cache.attn, tuple):  # differentiated group by group in forward(dout=...)
            dqk, dv = cache.attn
        else:
            dctx = split_heads(dctx, self.n_heads)  # (B, H, L, Dh)
            xp = backend.array_module(dctx)
            dqk, dv = xp.empty_like(dctx), xp.empty_like(dctx)
            for heads, c in zip(self.head_groups, cache.attn):
                dqk[:, heads], dv[:, heads] = self._attend_backward(dctx[:, heads], c)
        dh, dp["w_qk"] = layers.linear_backward(merge_heads(dqk), cache.qk)  # (B, L, D)
        dh_v, dp["w_v"] = layers.linear_backward(merge_heads(dv), cache.v)
        dx, dp["ln_gamma"], dp["ln_beta"] = layers.layernorm_backward(dh + dh_v, cache.ln)
        return dx, dp

    def forward_backward(self, x, p, rec, dout, mask=None):
        """Recompute F(x) and backpropagate ``dout`` through it: (out, dx, dp).

        Each group of heads is differentiated right after it is recomputed, so one group's
        attention activations exist at a time (see the class docstring).
        """
        out, cache, _ = self.forward(x, p, rec, mask, dout=dout)
        dx, dp = self.backward(dout, cache)
        return out, dx, dp


def init_attention_params(rng, d_model: int, n_heads: int, d_head: int, dtype="float32"):
    """{"ln_gamma" (ones), "ln_beta" (zeros) (D,), "w_qk", "w_v" (D, H*Dh), "w_o" (H*Dh, D)}."""
    p = init_multihead_attention(rng, d_model, n_heads, d_head, dtype, shared_qk=True)
    p["ln_gamma"], p["ln_beta"] = layers.init_layernorm(d_model, dtype)
    return p


# ---------------------------------------------------------------------------------------------
# G: feed-forward sub-layer
# ---------------------------------------------------------------------------------------------


class FeedForwardCache(NamedTuple):
    ln: object  # layer-norm cache
    ff: object  # feed-forward cache (chunked: only its input; unchunked: the hidden layer too)


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

    def draw(self, rng, shape) -> dict:
        return {"kind": "ff", "seed": layers.draw_seed(rng) if self.dropout > 0 else None}

    def check_record(self, rec, shape) -> None:
        if not isinstance(rec, dict) or rec.get("kind") != "ff":
            got = rec.get("kind") if isinstance(rec, dict) else type(rec).__name__
            raise ValueError(f"record: expected a feed-forward record, got {got!r}")
        _check_seed(rec, self.dropout)

    def _settings(self, rec):
        return dict(activation=self.activation, dropout=self.dropout, seed=rec["seed"])

    def forward(self, x, p, rec, mask=None, *, need_cache=True):
        """x (B, L, D) -> (out (B, L, D), cache, rec). The cache is made either way: chunked, it
        is only the input; unchunked, the hidden layer exists whole anyway."""
        check_keys("p", p, ("ln_gamma", "ln_beta", *FF_KEYS))
        h, ln = layers.layernorm_forward(x, p["ln_gamma"], p["ln_beta"])  # (B, L, D)
        ffp = {k: p[k] for k in FF_KEYS}
        if self.chunk_len is None:
            out, ff = layers.feedforward_forward(h, ffp, **self._settings(rec))
        else:
            out, ff = chunked_feedforward_forward(
                h, ffp, chunk_len=self.chunk_len, **self._settings(rec)
            )
        return out, FeedForwardCache(ln, ff), rec

    def backward(self, dout, cache: FeedForwardCache):
        """dout (B, L, D) -> (dx (B, L, D), dp with the keys of p)."""
        if self.chunk_len is None:
            dh, dp = layers.feedforward_backward(dout, cache.ff)
        else:
            dh, dp = chunked_feedforward_backward(dout, cache.ff)
        dx, dgamma, dbeta = layers.layernorm_backward(dh, cache.ln)
        return dx, {"ln_gamma": dgamma, "ln_beta": dbeta, **dp}

    def forward_backward(self, x, p, rec, dout, mask=None):
        """Recompute G(x) and backpropagate ``dout``; chunk by chunk when chunked: (out, dx, dp)."""
        if self.chunk_len is None:
            out, cache, _ = self.forward(x, p, rec)
            return (out, *self.backward(dout, cache))
        h, ln = layers.layernorm_forward(x, p["ln_gamma"], p["ln_beta"])  # (B, L, D)
        ffp = {k: p[k] for k in FF_KEYS}
        out, dh, dp = chunked_feedforward_forward_backward(
            h, ffp, dout, chunk_len=self.chunk_len, **self._settings(rec)
        )
        dx, dgamma, dbeta = layers.layernorm_backward(dh, ln)
        return out, dx, {"ln_gamma": dgamma, "ln_beta": dbeta, **dp}


def init_feedforward_params(rng, d_model: int, d_ff: int, dtype="float32"):
    """{"ln_gamma" (ones), "ln_beta" (zeros) (D,), "w1" (D, F), "b1" (F,), "w2" (F, D), "b2"}."""
    p = layers.init_feedforward(rng, d_model, d_ff, dtype)
    p["ln_gamma"], p["ln_beta"] = layers.init_layernorm(d_model, dtype)
    return p


# ---------------------------------------------------------------------------------------------
# The reversible block
# ---------------------------------------------------------------------------------------------


def init_block_params(
    rng, d_model: int, n_heads: int, d_head: int, d_ff: int, dtype="float32"
) -> dict:
    """Parameters of one block: {"attn": ..., "ff": ...} (see the two sub-layers)."""
    return {
        AttentionSubLayer.key: init_attention_params(rng, d_model, n_heads, d_head, dtype),
        FeedForwardSubLayer.key: init_feedforward_params(rng, d_model, d_ff, dtype),
    }
