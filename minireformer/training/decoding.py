"""Incremental decoding: one new position a step, each layer keeping what the next one needs.

Sampling without a cache runs the whole context again for every new token. With one, a step
computes the new position only: every attention layer keeps the keys and values of the positions
before it (and, for LSH attention, their buckets), and the new query attends to them (trax's and
Hugging Face's decoding caches do the same). The Reformer's reversible stream is simply run
forward, y1 = x1 + F(x2), y2 = x2 + G(y1), at the new position.

What the new position attends to is what it would attend to in a full pass over the sequence so
far, with the same rotations:

- full attention: every earlier position, and itself only if nothing else (shared-QK);
- local attention: the positions of its chunk and of the chunk before, up to itself;
- LSH attention: the keys in the look-around window of its copy in each round, after sorting
  every (round, bucket, position) copy of the sequence so far, with the same masks and duplicate
  correction as ``lsh_attention.py`` (an exact single-query LSH attention).

So the logits of the new position equal a full pass's last row exactly (to float round-off) for
models whose layers' attention pattern is causal: the Transformer, full and local attention, and
LSH attention in the first layer. They differ in deeper LSH layers, and the difference is the
semantics of causal LSH attention, not a shortcut: in a full pass the later tokens take places in
the sort and move the chunk boundaries, so the states of *earlier* positions, which deeper layers
read, change as the sequence grows (notebook 04's causal-pattern caveat); the cache keeps each
position's state as it was computed.

Shape letters: B batch, H heads, L positions so far (at most max_len), Dh head width, D model width,
R hash rounds, C chunk length, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

from .. import backend, checks, embedding, head, layers, lsh, transformer
from ..attention import NEG_MASK, NEG_SELF, merge_heads, split_heads, unit_norm_forward
from ..loss import logsumexp
from ..lsh_attention import semantics_of
from ..reformer import build_blocks
from . import lm


class Cache(NamedTuple):
    """The decoding state of a batch: per attention layer, the keys and values of every position
    so far (and LSH buckets), in arrays of max_len positions written in place; ``length`` of them
    are filled."""

    keys: list  # per layer (B, H, max_len, Dh): unit keys (shared-QK) or keys
    values: list  # per layer (B, H, max_len, Dh)
    buckets: list  # per layer (B, H, R, max_len) int for LSH layers, else None
    ranks: list  # per LSH layer (B, H, R, max_len): each position's place in its round's sort
    order: list  # per LSH layer (B, H, R, max_len): the position at each place (ranks inverted)
    rotations: list  # per layer (H, Dh, R, K/2) for LSH layers, else None
    length: int  # positions filled


def fixed_buckets(config):
    """``config`` with the LSH buckets of its whole context fixed (``n_buckets`` set), so that the
    hash is the same function at every length the sequence passes through."""
    if lm.kind_of(config) != "reformer" or config.n_buckets is not None:
        return config
    k = lsh.default_n_buckets(config.max_len, config.chunk_len)
    return dataclasses.replace(config, n_buckets=k)


def start(params, config, tokens, rng=None):
    """A cache holding ``tokens`` (B, L), 1 <= L <= max_len, read in one full pass:
    ``(logits (B, V) of the last position, cache)``.

    LSH rotations are drawn from ``rng`` exactly as a full pass with ``rng`` draws them, and the
    states are those of that full pass. ``config`` must hash with fixed buckets
    (:func:`fixed_buckets`).
    """
    if lm.kind_of(config) == "reformer" and config.uses_lsh and config.n_buckets is None:
        raise ValueError("config: expected fixed n_buckets for decoding (decoding.fixed_buckets)")
    xp = backend.get_xp()
    tokens = backend.asarray(tokens)
    batch, length = tokens.shape
    shape = (batch, config.n_heads, config.max_len, config.d_head)
    keys = [xp.zeros(shape, dtype=config.dtype) for _ in range(config.n_layers)]
    values = [xp.zeros(shape, dtype=config.dtype) for _ in range(config.n_layers)]
    none = [None] * config.n_layers
    cache = Cache(keys, values, list(none), list(none), list(none), list(none), length)
    with checks.trusted():
        if lm.kind_of(config) == "transformer":
            logits = _transformer_prefill(params, config, cache, tokens)
        else:
            logits = _reformer_prefill(params, config, cache, tokens, rng)
    return logits[:, -1], cache


def step(params, config, cache: Cache, tokens):
    """Feed ``tokens`` (B,) at position ``cache.length``: (logits (B, V) of that position, cache).

    The cache's arrays are written in place; the returned cache counts one more position.
    """
    t = cache.length
    if t >= config.max_len:
        raise ValueError(f"cache: full at max_len={config.max_len}; start a new one")
    ids = backend.asarray(tokens)[:, None]  # (B, 1)
    with checks.trusted():
        if lm.kind_of(config) == "transformer":
            logits = _transformer_step(params, config, cache, ids, t)
        else:
            logits = _reformer_step(params, config, cache, ids, t)
    return logits[:, 0], cache._replace(length=t + 1)


def _attend(q, keys, values, *, scale, self_index=None):
    """Softmax attention of one query per (B, H) over consecutive earlier positions.

    q: (B, H, 1, Dh); keys, values: (B, H, N, Dh); self_index: the key of the query's own
    position, whose logit is NEG_SELF (shared-QK), or None. Returns (B, H, 1, Dh).
    """
    xp = backend.array_module(q, keys)
    logits = scale * xp.matmul(q, keys.swapaxes(-1, -2))[:, :, 0]  # (B, H, N)
    if self_index is not None:
        logits[..., self_index] = NEG_SELF
    weights = xp.exp(logits - logsumexp(logits, axis=-1, keepdims=True))  # (B, H, N)
    return xp.matmul(weights[:, :, None], values)  # (B, H, 1, Dh)


# --- The Transformer -------------------------------------------------------------------------


def _transformer_prefill(params, config, cache, tokens):
    x, _ = embedding.embed_forward(params["embed"], tokens)  # (B, L, D)
    length = tokens.shape[1]
    for i, p in enumerate(params["blocks"]):
        x, block = transformer.block_forward(p, x, n_heads=config.n_heads, causal=True)
        attn = block.attn.attn  # the attention on heads: its keys and values
        cache.keys[i][:, :, :length], cache.values[i][:, :, :length] = attn.k, attn.v
    return head.head_logits(params["head"], x)  # (B, L, V)


def _transformer_step(params, config, cache, ids, t):
    x, _ = embedding.embed_forward(params["embed"], ids, offset=t)  # (B, 1, D)
    for i, p in enumerate(params["blocks"]):
        h, _ = layers.layernorm_forward(x, p["ln1"]["gamma"], p["ln1"]["beta"])
        a = p["attn"]
        if "w_qk" in a:  # shared-QK: unit keys, unscaled logits, the self mask
            q = split_heads(h @ a["w_qk"], config.n_heads)  # (B, H, 1, Dh)
            k, scale, self_index = unit_norm_forward(q)[0], 1.0, t
        else:
            q = split_heads(h @ a["w_q"], config.n_heads)
            k = split_heads(h @ a["w_k"], config.n_heads)
            scale, self_index = 1.0 / math.sqrt(config.d_head), None
        cache.keys[i][:, :, t] = k[:, :, 0]
        cache.values[i][:, :, t] = split_heads(h @ a["w_v"], config.n_heads)[:, :, 0]
        ctx = _attend(q, cache.keys[i][:, :, : t + 1], cache.values[i][:, :, : t + 1],
                      scale=scale, self_index=self_index)  # fmt: skip
        x = x + merge_heads(ctx) @ a["w_o"]
        h, _ = layers.layernorm_forward(x, p["ln2"]["gamma"], p["ln2"]["beta"])
        x = x + layers.feedforward_forward(h, p["ff"])[0]
    return head.head_logits(params["head"], x)  # (B, 1, V)


# --- The Reformer ----------------------------------------------------------------------------


def _reformer_prefill(params, config, cache, tokens, rng):
    x, _ = embedding.embed_forward(params["embed"], tokens, positional_type=config.positional)
    length = tokens.shape[1]
    y1, y2 = x, x  # (B, L, D)
    for i, (block, p) in enumerate(zip(build_blocks(config, dropout=0.0), params["blocks"])):
        f, a = block.f, p["attn"]
        record = f.draw(rng, y2.shape)  # as a full pass draws it
        h, _ = layers.layernorm_forward(y2, a["ln_gamma"], a["ln_beta"])
        qk = split_heads(h @ a["w_qk"], config.n_heads)  # (B, H, L, Dh)
        cache.keys[i][:, :, :length] = unit_norm_forward(qk)[0]
        cache.values[i][:, :, :length] = split_heads(h @ a["w_v"], config.n_heads)
        if f.kind == "lsh":
            _lsh_prefill(cache, i, lsh.hash_vectors(qk, record.rotations, f.n_buckets), config)
            cache.rotations[i] = record.rotations
        y1 = y1 + f.output(y2, a, record)[0]
        y2 = y2 + block.g.output(y1, p["ff"], block.g.draw(rng, y1.shape))[0]
    xp = backend.array_module(y1)
    return head.head_logits(params["head"], xp.concatenate([y1, y2], axis=-1))  # (B, L, V)


def _reformer_step(params, config, cache, ids, t):
    x, _ = embedding.embed_forward(
        params["embed"], ids, positional_type=config.positional, offset=t
    )  # (B, 1, D)
    y1, y2 = x, x
    for i, (block, p) in enumerate(zip(build_blocks(config, dropout=0.0), params["blocks"])):
        f = block.f
        a = p["attn"]
        h, _ = layers.layernorm_forward(y2, a["ln_gamma"], a["ln_beta"])  # F reads x2
        qk = split_heads(h @ a["w_qk"], config.n_heads)  # (B, H, 1, Dh)
        cache.keys[i][:, :, t] = unit_norm_forward(qk)[0][:, :, 0]
        cache.values[i][:, :, t] = split_heads(h @ a["w_v"], config.n_heads)[:, :, 0]
        if f.kind == "lsh":
            ctx = _lsh_query(f, qk, cache, i, t)
        else:
            first = 0 if f.kind == "full" else max(0, f.chunk_len * (t // f.chunk_len - 1))
            keys, values = cache.keys[i][:, :, first : t + 1], cache.values[i][:, :, first : t + 1]
            ctx = _attend(qk, keys, values, scale=1.0, self_index=t - first)
        y1 = y1 + merge_heads(ctx) @ a["w_o"]
        g = p["ff"]
        h, _ = layers.layernorm_forward(y1, g["ln_gamma"], g["ln_beta"])
        ffp = {k: g[k] for k in layers.FEEDFORWARD_KEYS}
        y2 = y2 + layers.feedforward_forward(h, ffp, activation=config.activation)[0]
    xp = backend.array_module(y1)
    return head.head_logits(params["head"], xp.concatenate([y1, y2], axis=-1))  # (B, 1, V)


def _lsh_prefill(cache, i, buckets, config):
    """Layer i's buckets (B, H, R, L) of the context and their sort within each round: by bucket,
    then position, as ``lsh_attention`` sorts the copies of a round."""
    xp = backend.array_module(buckets)
    batch, n_heads, n_rounds, length = buckets.shape
    shape = (batch, n_heads, n_rounds, config.max_len)
    cache.buckets[i], cache.ranks[i], cache.order[i] = (xp.zeros(shape, int) for _ in range(3))
    cache.buckets[i][..., :length] = buckets
    order = xp.argsort(buckets, axis=-1, kind="stable")  # (B, H, R, L) ties: by position
    cache.order[i][..., :length] = order
    xp.put_along_axis(cache.ranks[i], order, xp.broadcast_to(xp.arange(length), order.shape), -1)


def _lsh_insert(cache, i, new_buckets, t):
    """Position t's buckets (B, H, R) join the sort of each round: it goes after every position
    of its bucket or a lower one (all earlier), and those of higher buckets move up one place.
    Returns its place in each round (B, H, R). O(t) per round, no sort."""
    xp = backend.array_module(new_buckets)
    buckets, ranks, order = cache.buckets[i], cache.ranks[i], cache.order[i]
    past = buckets[..., :t]  # (B, H, R, t)
    place = xp.sum(past <= new_buckets[..., None], axis=-1)  # (B, H, R)
    ranks[..., :t] += past > new_buckets[..., None]
    buckets[..., t], ranks[..., t] = new_buckets, place
    xp.put_along_axis(order, ranks[..., : t + 1],
                      xp.broadcast_to(xp.arange(t + 1), ranks[..., : t + 1].shape), -1)  # fmt: skip
    return place


def _gather(arr, index):
    """arr (B, H, M, ...) at index (B, H, N) along axis 2: (B, H, N, ...), by one flat ``take``
    (``take_along_axis`` builds broadcast index arrays first, several times slower here)."""
    xp = backend.array_module(arr, index)
    batch, n_heads, m = arr.shape[:3]
    rows = xp.arange(batch * n_heads).reshape(batch, n_heads, 1) * m  # each (b, h)'s first row
    flat = arr.reshape((batch * n_heads * m,) + arr.shape[3:])
    return xp.take(flat, index + rows, axis=0)


def _lsh_query(f, qk, cache, i, t):
    """The new position's LSH attention, exactly as in a full pass over positions 0..t with the
    cached keys, values and buckets: qk (B, H, 1, Dh) -> (B, H, 1, Dh).

    In a full pass, lsh_attention sorts the R Lp copies (Lp = t + 1 padded to a multiple of C):
    round by round, each round's real copies by (bucket, position), then its padding copies.
    So the copy at sorted slot s is in round s // Lp, at place s % Lp of that round's sort (a
    padding copy where the place is beyond t): the cache's ``order`` gives it without sorting.
    """
    xp = backend.array_module(qk)
    across, duplicates = semantics_of(f.semantics)
    new_buckets = lsh.hash_vectors(qk, cache.rotations[i], f.n_buckets)[..., 0]  # (B, H, R)
    place = _lsh_insert(cache, i, new_buckets, t)
    c, max_len = f.chunk_len, cache.order[i].shape[-1]
    batch, n_heads, n_rounds = new_buckets.shape
    padded = c * math.ceil((t + 1) / c)  # Lp
    rounds = xp.arange(n_rounds)
    chunk = (rounds * padded + place) // c  # (B, H, R) the chunk of each round's query copy
    # the window of each round's query copy: its chunk and the one before, wrapping around
    slot = (chunk[..., None] * c + xp.arange(-c, c)) % (n_rounds * padded)  # (B, H, R, 2C)
    if n_rounds * padded // c < 2:  # a single chunk: it is the window twice; count it once
        slot = slot[..., c:]
    slot = slot.reshape(batch, n_heads, -1)  # (B, H, N)
    key_round, key_place = slot // padded, slot % padded
    valid = key_place <= t  # padding copies are masked
    flat = key_round * max_len + xp.minimum(key_place, t)  # into (R max_len) of order, buckets
    position = _gather(cache.order[i].reshape(batch, n_heads, -1), flat)  # (B, H, N)
    key_bucket = _gather(
        cache.buckets[i].reshape(batch, n_heads, -1), key_round * max_len + position
    )
    query_round = xp.repeat(rounds, slot.shape[-1] // n_rounds)  # (N,) the query copy's round
    same = (key_round == query_round) & (key_bucket == new_buckets[..., query_round]) & valid
    safe = xp.where(valid, position, t)  # a masked copy reads position t (weight 0)
    keys, values = _gather(cache.keys[i], safe), _gather(cache.values[i], safe)  # (B, H, N, Dh)
    logits = xp.matmul(qk, keys.swapaxes(-1, -2))[:, :, 0]  # (B, H, N)
    logits = xp.where(valid, logits, NEG_MASK)
    logits = xp.where(valid & (position == t), NEG_SELF, logits)  # its own position: only if alone
    if not across:
        logits = xp.where(same, logits, NEG_MASK)  # another bucket (or round) is masked
    if not duplicates:  # log N: how often the query meets each key position over all rounds
        counted = valid if across else same
        key = position + xp.arange(batch * n_heads).reshape(batch, n_heads, 1) * max_len
        met = xp.bincount(key.ravel(), weights=counted.ravel())[key]
        logits = logits - xp.log(xp.maximum(met, 1))  # met: (B, H, N) copies of each position
    weights = xp.exp(logits - logsumexp(logits, axis=-1, keepdims=True))
    return xp.matmul(weights[:, :, None], values)  # (B, H, 1, Dh)
