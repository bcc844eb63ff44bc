"""F, the attention sub-layer of a Reformer block: layer norm, shared-QK attention, projection.

    F(x) = Dropout(W_o Attention(LN(x) W_qk, LN(x) W_v))        x: (B, L, D)

with the attention "lsh" (paper section 2), "local" or "full" (all three shared-QK). A reversible
block (``reversible.py``, paper eqs. 7-9) must be able to run F again, later, exactly as it
ran the first time, so F separates what it *chose* (LSH rotations and buckets, a dropout seed:
an :class:`AttentionRecord`) from what it *computed* (the activations, which the block throws
away), and follows the sub-layer protocol that ``reversible.py`` describes.

The LSH buckets are recorded, not recomputed, because in float32 a recomputed input differs from
the original in its last bits, which can move a vector across a bucket boundary (Hugging Face's
reversible backward likewise hands each layer's stored buckets back to its attention).

Heads are attended ``n_parallel_heads`` at a time (trax's name), one group after the other, each
group with its own slices of W_qk, W_v and W_o: heads are independent, so the result is the same,
and only one group's queries, values and attention activations exist at once.

Shape letters: B batch, L length, D model width, H heads (h in a group), Dh head width, R hash
rounds, K buckets, C chunk length.

References: https://arxiv.org/abs/2001.04451 (sections 2-3); trax
``trax/layers/research/efficient_attention.py`` (``n_parallel_heads``); Hugging Face
``modeling_reformer.py`` (``ReformerLayer.backward_pass``, buckets).
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend, checks, layers, lsh
from .attention import (
    merge_heads,
    shared_qk_attention_backward,
    shared_qk_attention_forward,
    split_heads,
)
from .checks import check_bool, check_float_array, check_keys, check_positive_int, check_rate
from .local_attention import local_attention_backward, local_attention_forward
from .lsh_attention import lsh_attention_backward, lsh_attention_forward, semantics_of
from .multihead_attention import init_multihead_attention

ATTENTION_TYPES = ("lsh", "local", "full")
ATTENTION_KEYS = ("ln_gamma", "ln_beta", "w_qk", "w_v", "w_o")


def check_seed(seed, rate) -> None:
    """A record's dropout seed must be an int exactly when the rate is not 0."""
    if (seed is None) != (rate == 0):
        raise ValueError(f"record: dropout seed {seed!r} does not match rate {rate}")


class AttentionRecord(NamedTuple):
    """What one run of F chose: its LSH rotations and the buckets they gave, its dropout seed."""

    kind: str  # "lsh", "local" or "full"
    rotations: object = None  # (H, Dh, R, K/2) for LSH, else None
    buckets: object = None  # (B, H, R, L) after the first LSH run, else None
    seed: object = None  # int dropout seed, or None without dropout


class GroupCache(NamedTuple):
    ctx: object  # (B, L, h*Dh) the group's attention output, before W_o
    attn: object  # the cache of the attention on the group's heads


class AttentionCache(NamedTuple):
    h: object  # (B, L, D) LN(x), the projections' input
    ln: layers.LayerNormCache
    p: dict  # the parameters
    groups: list  # one GroupCache per group of heads
    drop: object  # dropout cache, or None without dropout
    record: AttentionRecord  # completed: the buckets hashed


class AttentionSubLayer:
    """F(x) = Dropout(merge(Attention(split(LN(x) W_qk), split(LN(x) W_v))) W_o), x: (B, L, D).

    ``kind`` chooses the attention on heads: "lsh" (``lsh_attention.lsh_attention_forward``),
    "local" (``local_attention.local_attention_forward``) or "full"
    (``attention.shared_qk_attention_forward``); all three are shared-QK (one projection W_qk,
    unit-norm keys). Parameters: {"ln_gamma", "ln_beta" (D,), "w_qk", "w_v" (D, H*Dh),
    "w_o" (H*Dh, D)}. ``semantics`` ("paper" or "released", LSH only): see ``lsh_attention.py``.
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
        semantics="paper",
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
        self.semantics = semantics_of(semantics)
        self.dropout = check_rate("dropout", dropout)
        self.n_chunks_before, self.n_chunks_after = n_chunks_before, n_chunks_after
        step = self.n_heads if n_parallel_heads is None else n_parallel_heads
        step = check_positive_int("n_parallel_heads", step)
        self.head_groups = [slice(h, min(h + step, self.n_heads)) for h in range(0, n_heads, step)]

    # --- records --------------------------------------------------------------------------------

    def _buckets_for(self, length: int):
        return self.n_buckets or lsh.default_n_buckets(length, self.chunk_len)

    def draw(self, rng, shape) -> AttentionRecord:
        """Random choices of one step for inputs (B, L, D): LSH rotations, the dropout seed."""
        rotations = seed = None
        if self.kind == "lsh":
            rotations = lsh.random_rotations(
                rng, self.d_head, self.n_hashes, self._buckets_for(shape[1]), self.n_heads
            )  # (H, Dh, R, K/2)
        if self.dropout > 0:
            seed = layers.draw_seed(rng)
        return AttentionRecord(self.kind, rotations, None, seed)

    def check_record(self, record, shape) -> None:
        if not isinstance(record, AttentionRecord) or record.kind != self.kind:
            got = getattr(record, "kind", type(record).__name__)
            raise ValueError(f"record: expected a record of {self.kind!r} attention, got {got!r}")
        if self.kind == "lsh":
            width = lsh.rotation_width(self._buckets_for(shape[1]))
            want = (self.n_heads, self.d_head, self.n_hashes, width)
            rot = record.rotations
            if rot is None or tuple(rot.shape) != want:
                got = None if rot is None else tuple(rot.shape)
                raise ValueError(f"record: expected rotations of shape {want}, got {got}")
        check_seed(record.seed, self.dropout)

    # --- the protocol ---------------------------------------------------------------------------

    def forward(self, x, p, record: AttentionRecord, mask=None):
        """x (B, L, D) -> (out (B, L, D), cache); ``cache.record`` holds the LSH buckets."""
        return self._run(x, p, record, mask, keep=True)

    def backward(self, dout, cache: AttentionCache):
        """dout (B, L, D) -> (dx (B, L, D), dp with the keys of p)."""
        if cache.drop is not None:
            dout = layers.dropout_backward(dout, cache.drop)
        xp = backend.array_module(dout)
        p = cache.p
        dp = {name: xp.empty_like(p[name]) for name in ("w_qk", "w_v", "w_o")}
        dh = xp.zeros_like(cache.h)  # (B, L, D)
        for heads, group in zip(self.head_groups, cache.groups):
            self._group_backward(heads, cache.h, p, dout, group, dh, dp)
        dx, dp["ln_gamma"], dp["ln_beta"] = layers.layernorm_backward(dh, cache.ln)
        return dx, dp

    def output(self, x, p, record: AttentionRecord, mask=None):
        """F(x) without a cache: (out (B, L, D), the completed record)."""
        out, cache = self._run(x, p, record, mask, keep=False)
        return out, cache.record

    def recompute_backward(self, x, p, record: AttentionRecord, mask, dout):
        """F(x) and its backward from ``dout`` (B, L, D), each group of heads differentiated
        right after it is recomputed: ``(out, dx, dp)``, as ``forward`` then ``backward``."""
        self.check_record(record, x.shape)
        xp = backend.array_module(x)
        h, ln = layers.layernorm_forward(x, p["ln_gamma"], p["ln_beta"])  # (B, L, D)
        d_drop = self._dropout_backward(dout, record)  # the dropout mask, from its seed
        out = xp.zeros_like(x)
        dp = {name: xp.empty_like(p[name]) for name in ("w_qk", "w_v", "w_o")}
        dh = xp.zeros_like(h)
        for heads in self.head_groups:
            group, _ = self._group_forward(heads, h, p, record, mask, out)
            self._group_backward(heads, h, p, d_drop, group, dh, dp)
            del group
        if self.dropout > 0:
            out = layers.dropout_forward(out, self.dropout, record.seed)[0]
        dx, dp["ln_gamma"], dp["ln_beta"] = layers.layernorm_backward(dh, ln)
        return out, dx, dp

    # --- one group of heads ---------------------------------------------------------------------

    def _run(self, x, p, record, mask, *, keep):
        _check_params(p, x, self.n_heads * self.d_head)
        xp = backend.array_module(x)
        h, ln = layers.layernorm_forward(x, p["ln_gamma"], p["ln_beta"])  # (B, L, D)
        out = xp.zeros_like(x)
        groups, buckets = [], []
        for heads in self.head_groups:
            group, group_buckets = self._group_forward(heads, h, p, record, mask, out)
            groups += [group] if keep else []
            buckets.append(group_buckets)
            del group
        if self.kind == "lsh" and record.buckets is None:
            record = record._replace(buckets=xp.concatenate(buckets, axis=1))  # (B, H, R, L)
        drop = None
        if self.dropout > 0:
            out, drop = layers.dropout_forward(out, self.dropout, record.seed)
        return out, AttentionCache(h, ln, p, groups, drop, record)

    def _columns(self, heads: slice) -> slice:
        """The columns of W_qk and W_v (rows of W_o) of a group of heads."""
        return slice(heads.start * self.d_head, heads.stop * self.d_head)

    def _group_forward(self, heads, h, p, record, mask, out):
        """Attend with the heads ``heads`` and add their share of W_o into ``out`` (B, L, D).

        Returns ``(GroupCache, buckets (B, h, R, L) or None)``."""
        cols, n = self._columns(heads), heads.stop - heads.start
        qk = split_heads(layers.flat_matmul(h, p["w_qk"][:, cols]), n)  # (B, h, L, Dh)
        v = split_heads(layers.flat_matmul(h, p["w_v"][:, cols]), n)
        ctx, attn = self.attend(qk, v, record, heads, mask)
        ctx = merge_heads(ctx)  # (B, L, h*Dh)
        out += layers.flat_matmul(ctx, p["w_o"][cols])
        buckets = attn.buckets if self.kind == "lsh" else None
        return GroupCache(ctx, attn), buckets

    def _group_backward(self, heads, h, p, dout, group: GroupCache, dh, dp) -> None:
        """Add the group's gradients into dh (B, L, D) and its columns of dp."""
        cols, n = self._columns(heads), heads.stop - heads.start
        dp["w_o"][cols] = layers.linear_param_grads(dout, group.ctx)[0]
        dctx = split_heads(layers.flat_matmul(dout, p["w_o"][cols].T), n)  # (B, h, L, Dh)
        dqk, dv = self._attend_backward(dctx, group.attn)
        dqk, dv = merge_heads(dqk), merge_heads(dv)  # (B, L, h*Dh)
        dp["w_qk"][:, cols] = layers.linear_param_grads(dqk, h)[0]
        dp["w_v"][:, cols] = layers.linear_param_grads(dv, h)[0]
        dh += layers.flat_matmul(dqk, p["w_qk"][:, cols].T)
        dh += layers.flat_matmul(dv, p["w_v"][:, cols].T)

    def attend(self, qk, v, record, heads: slice | None = None, mask=None):
        """This sub-layer's attention on the heads ``heads`` (default all): qk (B, h, L, Dh),
        v (B, h, L, Dv) -> (out (B, h, L, Dv), cache), replaying the record's rotations and
        buckets, if any (an attention map feeds it the identity as values)."""
        heads = slice(0, self.n_heads) if heads is None else heads
        if self.kind == "full":
            return shared_qk_attention_forward(qk, v, causal=self.causal, mask=mask)
        window = dict(n_chunks_before=self.n_chunks_before, n_chunks_after=self.n_chunks_after)
        if self.kind == "local":
            return local_attention_forward(
                qk, v, chunk_len=self.chunk_len, causal=self.causal, mask=mask, **window
            )
        return lsh_attention_forward(
            qk,
            v,
            chunk_len=self.chunk_len,
            n_hashes=self.n_hashes,
            n_buckets=self._buckets_for(qk.shape[2]),
            rotations=record.rotations[heads],
            buckets=None if record.buckets is None else record.buckets[:, heads],
            causal=self.causal,
            mask=mask,
            semantics=self.semantics,
            **window,
        )

    def _attend_backward(self, dctx, cache):
        """dctx (B, h, L, Dh) for one group of heads -> (dqk, dv)."""
        if self.kind == "full":
            return shared_qk_attention_backward(dctx, cache)
        if self.kind == "local":
            return local_attention_backward(dctx, cache)
        return lsh_attention_backward(dctx, cache)

    def _dropout_backward(self, dout, record):
        """Dropout's backward from the recorded seed alone (the mask is regenerated from it)."""
        if self.dropout == 0:
            return dout
        cache = layers.DropoutCache(self.dropout, record.seed, dout.shape, dout.dtype)
        return layers.dropout_backward(dout, cache)


@checks.door
def _check_params(p, x, width) -> None:
    """The attention sub-layer's parameters: exactly its keys, W_qk of width H * Dh."""
    check_keys("p", p, ATTENTION_KEYS)
    check_float_array("w_qk", p["w_qk"], shape=(x.shape[-1], width), finite=False)


def init_attention_params(rng, d_model: int, n_heads: int, d_head: int, dtype="float32"):
    """{"ln_gamma" (ones), "ln_beta" (zeros) (D,), "w_qk", "w_v" (D, H*Dh), "w_o" (H*Dh, D)}."""
    p = init_multihead_attention(rng, d_model, n_heads, d_head, dtype, shared_qk=True)
    p["ln_gamma"], p["ln_beta"] = layers.init_layernorm(d_model, dtype)
    return p
