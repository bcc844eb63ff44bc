# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 LSH attention step by step
#
# Reformer paper (Kitaev, Kaiser, Levskaya 2020, arXiv 2001.04451), section 2 ("LSH attention",
# Figure 2, "Multi-round LSH attention", "Causal masking for shared-QK attention") and Appendix A;
# the released code is trax's `LSHSelfAttention` (`trax/layers/research/efficient_attention.py`).
#
# Notebook 02 built the hash $h(x) = \arg\max([xR; -xR])$, which puts vectors at a small angle
# into the same bucket with high probability. Here we turn it into attention:
#
# 1. **hash** every query into one of $K$ buckets;
# 2. **sort** the queries by (bucket, position), so that each bucket is a contiguous run;
# 3. **chunk** the sorted sequence into pieces of $C$ consecutive queries;
# 4. **attend** within each chunk and to the chunk before it (the "look-back"), only to keys of
#    the same bucket;
# 5. **unsort** the outputs back to the original order.
#
# Every step is cheap and vectorised, and no $L \times L$ array is ever built: each query scores
# at most $2C$ keys, so time and memory grow like $L \cdot C$, not $L^2$. We follow a 16-token
# example through all five steps, then add several hash rounds, compare the paper's semantics with
# the released code's, derive and check the backward pass, and measure time and memory.
#
# **Shared-QK.** LSH needs the same buckets for queries and keys, so the Reformer shares them: one
# projection gives $q_i$, and the key is the unit vector $k_j = q_j / |q_j|$. The logit is
# $q_i \cdot k_j$ (no $1/\sqrt{D_h}$, as in the released code). A query would almost always
# prefer its own key, so a token attends to itself only when nothing else is available (its own
# logit is set to $-10^5$).

# %%
import time
from functools import partial

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from tqdm.auto import tqdm

from minireformer import lsh, memory
from minireformer.attention import NEG_MASK, NEG_SELF, shared_qk_attention_forward
from minireformer.chunked_attention import look_around
from minireformer.gradcheck import check_op
from minireformer.lsh_attention import lsh_attention_backward, lsh_attention_forward
from minireformer.plotting import save_figure

START = time.perf_counter()
np.set_printoptions(precision=3, suppress=True, linewidth=110)
BUCKET_COLOURS = plt.get_cmap("tab10").colors

# %% [markdown]
# ## A 16-token example: $L = 16$, $K = 4$ buckets, chunk length $C = 4$
#
# The queries come from four clusters of directions, so that the hash has something to find. We
# draw the rotations ourselves and pass them in, so that every step below can be recomputed by
# hand from the same numbers; `lsh_attention_forward` returns them, and the buckets it used, in
# its cache.

# %%
rng = np.random.default_rng(3)
L, K, C, D_HEAD = 16, 4, 4, 8
centres = rng.standard_normal((4, D_HEAD))
cluster = rng.integers(4, size=L)
qk = 3.0 * (centres[cluster] + 0.3 * rng.standard_normal((L, D_HEAD)))[None, None]  # (1, 1, L, Dh)
v = rng.standard_normal((1, 1, L, D_HEAD))
rotations = lsh.random_rotations(rng, D_HEAD, n_hashes=1, n_buckets=K)  # (Dh, R=1, K/2)

out, cache = lsh_attention_forward(qk, v, chunk_len=C, n_buckets=K, rotations=rotations)
buckets = cache.buckets[0, 0, 0]  # (L,)
print("cache fields:", ", ".join(cache._fields))
print("position:", np.arange(L))
print("bucket:  ", buckets)

# %% [markdown]
# ### Steps 1-3 by hand: hash, sort, chunk
#
# The bucket is `argmax([xR; -xR])` (notebook 02). Sorting by bucket, and by position within a
# bucket, is a stable sort of the bucket ids; the library sorts on the single integer key
# `bucket * L + position`, which gives the same order. Reshaping the sorted positions to
# $(L/C, C)$ gives the chunks.

# %%
projected = qk[0, 0] @ rotations[:, 0]  # (L, K/2)
my_buckets = np.argmax(np.concatenate([projected, -projected], axis=-1), axis=-1)  # (L,)
my_order = np.argsort(my_buckets, kind="stable")  # sorted slot -> position
my_chunks = my_order.reshape(L // C, C)  # (n_chunks, C)
print("sorted positions:", my_order)
print("their buckets:   ", my_buckets[my_order])
print("chunks:\n", my_chunks)

# %%
assert np.array_equal(my_buckets, buckets)
assert np.array_equal(my_order, cache.order[0, 0])  # one round: slot -> position
assert np.array_equal(np.argsort(my_order), cache.inverse[0, 0])  # position -> slot

# %% [markdown]
# ### Step 4 by hand: attend within the chunk and one chunk back
#
# Chunk $c$ holds sorted slots $cC, \dots, cC + C - 1$. Its queries look at the keys of chunk $c$
# and chunk $c - 1$ (chunk 0 looks back at the last chunk: the window wraps around, as in the
# released code). Within this window of $2C$ keys three masks apply, each setting a logit to a
# constant:
#
# * keys of **another bucket**: $-10^9$ (the paper attends within a bucket only);
# * the query's **own position**: $-10^5$, so that it is used only when nothing else is left;
# * with **causal** attention, keys at a later *original* position: $-10^9$.
#
# A softmax over the window gives the weights; the outputs are written back to the query's
# original position (step 5, unsort). Here is one short loop over the four chunks, checked against
# the library.

# %%
unit_keys = qk[0, 0] / np.linalg.norm(qk[0, 0], axis=-1, keepdims=True)  # (L, Dh)
by_hand = np.zeros((L, D_HEAD))
for c in range(L // C):
    queries = my_chunks[c]  # (C,) positions
    keys = np.concatenate([my_chunks[c - 1], my_chunks[c]])  # (2C,) chunk before, then own
    logits = qk[0, 0, queries] @ unit_keys[keys].T  # (C, 2C)
    logits[my_buckets[queries][:, None] != my_buckets[keys][None, :]] = NEG_MASK
    logits[queries[:, None] == keys[None, :]] = NEG_SELF
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    by_hand[queries] = weights @ v[0, 0, keys]  # unsort: write back to the original positions
print("max |by hand - library| =", np.abs(by_hand - out[0, 0]).max())
assert np.allclose(by_hand, out[0, 0], atol=1e-12)

# %% [markdown]
# ### The five stages drawn (the paper's Figure 2)
#
# Each square is a token, coloured by its bucket and labelled with its original position. The
# dashed frame in the "attend" row is the window of chunk 2 (its own chunk and the one before);
# the keys its queries may use, same bucket and inside the window, are the ones not faded.


# %%
def draw_strip(ax, positions, y, label, frames=(), faded=()):
    """One row of coloured squares: the tokens at ``positions`` in that order."""
    for slot, pos in enumerate(positions):
        colour = BUCKET_COLOURS[buckets[pos]]
        alpha = 0.2 if slot in faded else 0.85
        ax.add_patch(plt.Rectangle((slot, y), 0.9, 0.9, color=colour, alpha=alpha))
        ax.text(slot + 0.45, y + 0.45, str(pos), ha="center", va="center", fontsize=9)
    for start, stop, style in frames:
        ax.add_patch(
            plt.Rectangle((start - 0.08, y - 0.08), stop - start + 0.06, 1.06, fill=False, **style)
        )
    ax.text(-0.6, y + 0.45, label, ha="right", va="center", fontsize=10)


fig, ax = plt.subplots(figsize=(11, 6))
draw_strip(ax, range(L), 6.0, "1. hash (original order)")
draw_strip(ax, my_order, 4.5, "2. sort by (bucket, position)")
chunk_frames = [(c * C, (c + 1) * C, {"ec": "k", "lw": 1.5}) for c in range(L // C)]
draw_strip(ax, my_order, 3.0, "3. chunk (C = 4)", chunk_frames)
# chunk 2 (slots 8-11) looks at chunks 1 and 2 (slots 4-11); outside or other buckets: faded
window = [(1 * C, 3 * C, {"ec": "0.3", "lw": 2.5, "ls": "--"})]
chunk2_buckets = set(my_buckets[my_chunks[2]])
faded = [s for s in range(L) if not (C <= s < 3 * C and my_buckets[my_order[s]] in chunk2_buckets)]
draw_strip(ax, my_order, 1.5, "4. attend: chunk 2 sees its bucket\nin chunks 1-2", window, faded)
draw_strip(ax, range(L), 0.0, "5. unsort (outputs)")
for b in range(K):
    ax.add_patch(plt.Rectangle((L + 0.6, 5.0 - 0.8 * b), 0.5, 0.5, color=BUCKET_COLOURS[b]))
    ax.text(L + 1.3, 5.25 - 0.8 * b, f"bucket {b}", va="center", fontsize=9)
ax.set_xlim(-9, L + 3.5)
ax.set_ylim(-0.3, 7.1)
ax.axis("off")
ax.set_title("LSH attention on 16 tokens, K = 4 buckets, chunk length C = 4")
save_figure(fig, "03_lsh_stages")
plt.show()

# %% [markdown]
# ### The attention matrix before and after sorting
#
# To *look at* the attention pattern we build the dense $16 \times 16$ matrix of weights that
# LSH attention used (the library never does: it keeps only the $C \times 2C$ window of each
# chunk, `cache.probs`). Each query slot's window holds the key positions of its chunk's window;
# we scatter the weights to (query position, key position).
#
# Beside it is full shared-QK attention. In the original order (left) both look scattered: who
# attends to whom depends on content, not on position. After sorting by bucket (right), full
# attention is nearly block-diagonal, one block per bucket, because the large weights are
# between similar vectors; LSH attention keeps exactly the blocks that fall inside the band of
# "own chunk plus previous chunk" (the grid marks the chunks).


# %%
def dense_weights(cache, length):
    """(B, H, L, L) weights from an LSH cache (for plots and checks on small examples only)."""
    batch, n_heads, _, chunk_len, _ = cache.probs.shape
    padded = cache.qk.shape[2]
    tokens = (cache.order % padded).reshape(batch, n_heads, -1, chunk_len)  # (B, H, n_c, C)
    key_tokens = look_around(tokens, cache.n_before, cache.n_after)  # (B, H, n_c, W)
    dense = np.zeros((batch, n_heads, padded, padded))
    b, h = np.indices(cache.probs.shape[:2])
    np.add.at(
        dense,
        (
            b[..., None, None, None],
            h[..., None, None, None],
            tokens[..., None],
            key_tokens[..., None, :],
        ),
        cache.probs,
    )
    return dense[:, :, :length, :length]


lsh_weights = dense_weights(cache, L)[0, 0]  # (L, L)
full_out, full_cache = shared_qk_attention_forward(qk, v)
full_weights = full_cache.probs[0, 0]  # (L, L)
assert np.allclose(lsh_weights @ v[0, 0], out[0, 0], atol=1e-12)  # the matrix is what was used
assert np.allclose(lsh_weights.sum(axis=1), 1)

fig, axes = plt.subplots(2, 2, figsize=(9, 9))
panels = {
    (0, 0): (full_weights, np.arange(L), "full attention, original order"),
    (0, 1): (full_weights, my_order, "full attention, sorted by bucket"),
    (1, 0): (lsh_weights, np.arange(L), "LSH attention, original order"),
    (1, 1): (lsh_weights, my_order, "LSH attention, sorted; grid = chunks"),
}
for (i, j), (weights, order, title) in panels.items():
    ax = axes[i, j]
    ax.imshow(weights[np.ix_(order, order)], cmap="Greys", vmin=0, vmax=1)
    ax.set_xticks(range(L), order, fontsize=7)
    ax.set_yticks(range(L), order, fontsize=7)
    for tick, pos in zip(ax.get_xticklabels(), order):
        tick.set_color(BUCKET_COLOURS[buckets[pos]])
    for tick, pos in zip(ax.get_yticklabels(), order):
        tick.set_color(BUCKET_COLOURS[buckets[pos]])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if j == 1:
        for edge in range(C, L, C):
            ax.axhline(edge - 0.5, color="tab:red", lw=0.8)
            ax.axvline(edge - 0.5, color="tab:red", lw=0.8)
save_figure(fig, "03_attention_matrices")
plt.show()

mass = (full_weights * (lsh_weights > 0)).sum(axis=1)
print("share of full attention's weight on the keys LSH attends to, per query:\n", mass)

# %% [markdown]
# LSH attention is sparse: in sorted order its non-zeros lie in the band of the chunk and the one
# before it, and only inside same-bucket blocks. It is also a proper softmax over the keys it
# keeps: each row sums to 1.
#
# The black squares show what a chunk boundary costs. Token 0, the first of bucket 1, sits at the
# end of chunk 0; its bucket-mates are in chunk 1, which it cannot see (it looks back, not ahead),
# and the chunk it looks back at (the last, by wrap-around) holds bucket 3. With no key of its
# bucket in its window it falls back on itself. Token 5, the first of bucket 2, is in the same
# position at the end of chunk 1. The per-query shares printed above (the weight full attention
# gives to the keys LSH kept) are low for such queries, and for hash misses such as token 4, whose
# bucket is whole in its chunk but whose strongest keys hashed elsewhere; more hash rounds, below,
# give both other chances.

# %%
sorted_lsh = lsh_weights[np.ix_(my_order, my_order)]
slot = np.arange(L)
in_band = (slot[None, :] // C == slot[:, None] // C) | (
    slot[None, :] // C == (slot[:, None] // C - 1) % (L // C)
)
same_bucket = my_buckets[my_order][:, None] == my_buckets[my_order][None, :]
assert np.all(sorted_lsh[~(in_band & same_bucket)] == 0)
print(
    f"non-zero weights: LSH {np.count_nonzero(lsh_weights)}, full {np.count_nonzero(full_weights)}"
)

# %% [markdown]
# ### Causal and self masks
#
# For a language model, query $i$ may only see keys $j \le i$. After sorting, "earlier" is no
# longer "to the left", so the causal mask compares **original positions**, which the library
# carries along with every sorted slot. Within a bucket the sort keeps positions increasing, so
# inside a bucket the causal mask is still a triangle.
#
# The self mask keeps a query off its own key unless nothing else is left: the first token of a
# causal sequence, whose only visible key is itself, puts all its weight on itself; so does a
# token alone in its bucket within its window.
#
# The picture shows the window of every chunk (rows: the 16 sorted queries, columns: the $2C = 8$
# window slots, chunk before then own chunk), with each logit's fate under causal LSH attention.

# %%
out_causal, cache_causal = lsh_attention_forward(
    qk, v, chunk_len=C, n_buckets=K, rotations=rotations, causal=True
)
q_pos = my_chunks[:, :, None]  # (n_c, C, 1) original positions of the queries
k_pos = look_around(my_chunks[None, None], 1, 0)[0, 0][:, None, :]  # (n_c, 1, 2C)
category = np.full((L // C, C, 2 * C), 0)  # 0 kept
category[my_buckets[q_pos] != my_buckets[k_pos]] = 1  # other bucket: -1e9
category[(category == 0) & (k_pos > q_pos)] = 2  # causal: -1e9
category[np.broadcast_to(q_pos == k_pos, category.shape)] = 3  # self: -1e5
names = ["kept", "other bucket (-1e9)", "causal, later position (-1e9)", "self (-1e5)"]
for code, name in enumerate(names):
    print(f"{name:<32}{np.sum(category == code):>4}")

keep = np.broadcast_to(cache_causal.keep, cache_causal.probs.shape)[0, 0]  # (n_c, C, 2C)
assert np.array_equal(keep, category == 0)
assert np.allclose(out_causal[0, 0, 0], v[0, 0, 0])  # token 0 attends only to itself
causal_weights = dense_weights(cache_causal, L)[0, 0]
assert np.all(np.triu(causal_weights, k=1) == 0)  # nothing from the future
alone = ~np.any((category == 0).reshape(L, 2 * C), axis=1)  # sorted queries with nothing kept
alone_pos = my_chunks.reshape(-1)[alone]
print("queries with no other key, which attend to themselves:", np.sort(alone_pos))
assert np.allclose(np.diag(causal_weights)[alone_pos], 1)
not_alone = np.setdiff1d(np.arange(L), alone_pos)
assert np.allclose(np.diag(causal_weights)[not_alone], 0)

fig, axes = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1, 1.6]})
cmap = ListedColormap(["tab:blue", "0.85", "0.45", "tab:orange"])
axes[0].imshow(category.reshape(L, 2 * C), cmap=cmap, vmin=-0.5, vmax=3.5)
axes[0].set_yticks(range(L), [f"{p} (b{my_buckets[p]})" for p in my_order], fontsize=7)
axes[0].set_xticks(
    range(2 * C),
    [f"prev {i}" for i in range(C)] + [f"own {i}" for i in range(C)],
    fontsize=7,
    rotation=90,
)
for edge in range(C, L, C):
    axes[0].axhline(edge - 0.5, color="k", lw=0.8)
axes[0].axvline(C - 0.5, color="k", lw=0.8)
axes[0].set_ylabel("query position (bucket), sorted")
axes[0].set_xlabel("window slot: previous chunk, own chunk")
axes[0].set_title("masks in each chunk's window (causal)")
handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(4)]
axes[0].legend(handles, names, fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.3))
axes[1].imshow(causal_weights, cmap="Greys", vmin=0, vmax=1)
axes[1].set_title("causal LSH attention weights, original order")
axes[1].set_xlabel("key position")
axes[1].set_ylabel("query position")
save_figure(fig, "03_masks")
plt.show()

# %% [markdown]
# **Causal weights, not a causal pattern.** The masks guarantee that no weight goes to a later
# position, so changing the *values* after position $t$ leaves every output up to $t$ untouched.
# Changing the *queries/keys* after $t$ is another matter: later tokens take places in the sorted
# order, so they move the chunk boundaries, and with them the set of earlier keys that falls
# inside a query's window. Within a bucket the earlier keys sit just before the query, and the
# window always reaches at least $C$ places back, so the effect appears once a bucket holds more
# than $C$ earlier tokens: here 32 tokens, $K = 2$ buckets, $C = 4$, and every token after
# $t = 15$ redrawn (rotations fixed). The released trax code behaves the same way. It is a small
# leak from the future (which earlier keys are visible, not what later keys hold) that is easy to
# overlook.

# %%
rng_leak = np.random.default_rng(0)
t, L_LEAK = 15, 32
qk_a = rng_leak.standard_normal((1, 1, L_LEAK, D_HEAD))
v_a = rng_leak.standard_normal((1, 1, L_LEAK, D_HEAD))
rotations_2 = lsh.random_rotations(rng_leak, D_HEAD, n_hashes=1, n_buckets=2)
leak = partial(lsh_attention_forward, chunk_len=C, rotations=rotations_2, causal=True)
out_a, cache_a = leak(qk_a, v_a)
qk_b = qk_a.copy()
qk_b[:, :, t + 1 :] = rng_leak.standard_normal((1, 1, L_LEAK - t - 1, D_HEAD))
out_b, cache_b = leak(qk_b, v_a)
v_b = v_a.copy()
v_b[:, :, t + 1 :] = 100.0
out_v, _ = leak(qk_a, v_b)

earlier_same_bucket = [
    int(np.sum(cache_a.buckets[0, 0, 0, :i] == cache_a.buckets[0, 0, 0, i])) for i in range(t + 1)
]
change = np.max(np.abs(out_b - out_a)[0, 0, : t + 1], axis=-1)
print("position               ", np.arange(t + 1))
print("earlier same-bucket keys", np.array(earlier_same_bucket))
print("change when later qk are redrawn", np.round(change, 2))
assert np.array_equal(out_v[0, 0, : t + 1], out_a[0, 0, : t + 1])  # later values never reach
assert np.max(change) > 1e-3  # but later hashes move the windows of earlier queries
assert np.all(change[np.array(earlier_same_bucket) <= C] == 0)  # only in buckets fuller than C

# %% [markdown]
# ## Several hash rounds
#
# One round misses neighbours that a bucket boundary happens to split (notebook 02). The
# Reformer hashes $R$ times with independent rotations. Each round $r$ gives query $i$ a set
# $P_i^{(r)}$ of keys (same bucket, inside the window), an output $o_i^{(r)}$ and the
# log-sum-exp of its logits $\ell_i^{(r)} = \log \sum_{j \in P_i^{(r)}} e^{s_{ij}}$. The rounds
# are combined with weights given by a softmax over the rounds' log-sum-exps:
#
# $$
# \text{out}_i = \sum_r \frac{e^{\ell_i^{(r)}}}{\sum_{r'} e^{\ell_i^{(r')}}}\, o_i^{(r)} .
# $$
#
# (All rounds are sorted together: round $r$'s buckets are offset by $r(K+1)$, one more than $K$
# because internal padding sorts as if in bucket $K$, so the $R \cdot L$
# copies form one sorted sequence of $R L / C$ chunks.)
#
# **The duplicate correction (Appendix A).** A key found in several rounds would be counted
# several times. The paper subtracts $\log N_{ij}$ from the logit, where $N_{ij}$ is the number
# of rounds in which key $j$ is among the keys query $i$ attends to. Then each of the $N_{ij}$
# copies contributes $e^{s_{ij}}/N_{ij}$, and the combination above becomes exactly
#
# $$
# \text{out}_i = \sum_{j \in P_i} \frac{e^{s_{ij}}}{\sum_{j' \in P_i} e^{s_{ij'}}}\, v_j,
# \qquad P_i = \bigcup_r P_i^{(r)},
# $$
#
# dense softmax attention over the **union** of the keys found in any round. We check this
# identity with a slow dense reference that knows nothing of the library's internals: from
# `cache.buckets` alone it redoes the sort, finds each query's window in each round, takes the
# union, and applies a plain softmax over it.


# %%
def union_of_attended_keys(buckets, chunk_len, n_before=1):
    """(B, H, L, L) bool from (B, H, R, L) buckets: is key j in query i's window and bucket?

    Redoes the sort: round r's bucket offset by r*K, ordered by (bucket + offset, position).
    Dense, for small examples only; needs L divisible by chunk_len and the default window.
    """
    batch, n_heads, n_rounds, length = buckets.shape
    n_buckets = int(buckets.max()) + 1
    offset = n_buckets * np.arange(n_rounds)[:, None]  # (R, 1)
    sort_key = ((buckets + offset) * length + np.arange(length)).reshape(batch, n_heads, -1)
    slot_of = np.argsort(np.argsort(sort_key, axis=-1), axis=-1)  # (B, H, R*L) copy -> slot
    chunk_of = (slot_of // chunk_len).reshape(buckets.shape)  # (B, H, R, L)
    n_chunks = n_rounds * length // chunk_len
    union = np.zeros((batch, n_heads, length, length), dtype=bool)
    for r in range(n_rounds):
        behind = (chunk_of[:, :, r, :, None] - chunk_of[:, :, r, None, :]) % n_chunks  # q - k
        in_window = behind <= n_before
        same = buckets[:, :, r, :, None] == buckets[:, :, r, None, :]
        union |= in_window & same
    return union


def dense_union_attention(qk, v, union, causal=False):
    """Softmax over the union of attended keys, shared-QK, with the self mask."""
    keys = qk / np.linalg.norm(qk, axis=-1, keepdims=True)
    logits = qk @ keys.swapaxes(-1, -2)  # (B, H, L, L)
    allowed = union.copy()
    if causal:
        allowed &= np.tril(np.ones(union.shape[-2:], dtype=bool))
    logits = np.where(allowed, logits, -np.inf)
    eye = np.eye(qk.shape[2], dtype=bool)
    logits = np.where(eye, NEG_SELF, logits)  # own key: only if nothing else is left
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)) @ v


rng = np.random.default_rng(1)
for n_hashes, causal in ((2, False), (4, False), (4, True), (8, True)):
    qk_t = 2.0 * rng.standard_normal((2, 3, 32, 6))  # (B, H, L, Dh), float64
    v_t = rng.standard_normal((2, 3, 32, 5))
    out_t, cache_t = lsh_attention_forward(
        qk_t, v_t, chunk_len=4, n_hashes=n_hashes, n_buckets=8, rng=rng, causal=causal
    )
    union = union_of_attended_keys(cache_t.buckets, chunk_len=4)
    ref = dense_union_attention(qk_t, v_t, union, causal=causal)
    err = np.abs(out_t - ref).max()
    print(
        f"R={n_hashes} causal={causal!s:<5}: keys per query {union.sum(-1).mean():5.1f}, "
        f"max |LSH - dense union softmax| = {err:.1e}"
    )
    assert err < 1e-10

# %% [markdown]
# ## Error against full attention as the number of rounds grows
#
# Now a longer sequence with cluster structure: $L = 1024$ queries from 32 clusters, values that
# carry their cluster's identity plus noise, two heads, $C = 32$ and the default
# $K = 2L/C = 64$ buckets. Full attention puts about 90% of each query's weight on its own
# cluster. We measure, averaged over three draws of the rotations:
#
# * the relative error $\|\text{out}_{LSH} - \text{out}_{full}\| / \|\text{out}_{full}\|$;
# * the share of full attention's weight that falls on the keys LSH attends to (the union above,
#   so this is exactly what the paper's semantics keeps).

# %%
rng = np.random.default_rng(2)
B, H, L_BIG, D_BIG, C_BIG, N_CLUSTERS = 1, 2, 1024, 32, 32, 32
centres = rng.standard_normal((H, N_CLUSTERS, D_BIG))
values = rng.standard_normal((H, N_CLUSTERS, D_BIG))
member = rng.integers(N_CLUSTERS, size=(B, H, L_BIG))


def of_cluster(table):  # (H, N_CLUSTERS, D) -> (B, H, L, D)
    return np.take_along_axis(table[None], member[..., None], axis=2)


qk_big = 1.5 * (of_cluster(centres) + 0.5 * rng.standard_normal((B, H, L_BIG, D_BIG)))
v_big = of_cluster(values) + 0.5 * rng.standard_normal((B, H, L_BIG, D_BIG))
full_big, full_big_cache = shared_qk_attention_forward(qk_big, v_big)
p_full = full_big_cache.probs  # (B, H, L, L), a dense reference is fine here
own = member[..., :, None] == member[..., None, :]
print(f"full attention: weight on own cluster {np.sum(p_full * own, axis=-1).mean():.3f}")

ROUNDS, SEEDS = (1, 2, 4, 8), (10, 11, 12)
SEMANTICS = {"paper": (False, False), "released": (True, True)}
rel_err = {name: {r: [] for r in ROUNDS} for name in SEMANTICS}
recall = {r: [] for r in ROUNDS}
gap = {r: [] for r in ROUNDS}  # |paper - released| relative to |full|
for r in tqdm(ROUNDS, desc="rounds"):
    for seed in SEEDS:
        outs = {}
        for name, (across, duplicates) in SEMANTICS.items():
            outs[name], c_big = lsh_attention_forward(
                qk_big,
                v_big,
                chunk_len=C_BIG,
                n_hashes=r,
                rng=np.random.default_rng(seed),  # the same rotations for both semantics
                attend_across_buckets=across,
                allow_duplicate_attention=duplicates,
            )
            err = np.linalg.norm(outs[name] - full_big) / np.linalg.norm(full_big)
            rel_err[name][r].append(err)
            if name == "paper":
                union = union_of_attended_keys(c_big.buckets, C_BIG)
                recall[r].append(np.sum(p_full * union, axis=-1).mean())
        gap[r].append(np.linalg.norm(outs["paper"] - outs["released"]) / np.linalg.norm(full_big))

table = {name: np.array([np.mean(rel_err[name][r]) for r in ROUNDS]) for name in SEMANTICS}
recall_mean = np.array([np.mean(recall[r]) for r in ROUNDS])
print(
    "rounds | rel. error paper | rel. error released | full weight kept (paper) | paper vs released"
)
for i, r in enumerate(ROUNDS):
    print(
        f"{r:>6} | {table['paper'][i]:>16.4f} | {table['released'][i]:>19.4f} | "
        f"{recall_mean[i]:>24.3f} | {np.mean(gap[r]):>17.4f}"
    )

# %% [markdown]
# Both semantics improve steadily with the number of rounds: each round is another independent
# chance for a query to meet the keys that matter, and the share of full attention's weight that
# the paper's semantics keeps grows accordingly. With one round the released code is somewhat
# closer to full attention, because it also uses the other-bucket keys that happen to share the
# window; with more rounds the paper's exact union softmax catches up and overtakes it, since the
# released code over-weights keys found in several rounds.

# %%
assert table["paper"][-1] < 0.5 * table["paper"][0]  # 8 rounds: less than half the 1-round error
assert table["released"][-1] < 0.5 * table["released"][0]
assert table["released"][0] < table["paper"][0] and table["paper"][-1] < table["released"][-1]
assert np.all(np.diff(recall_mean) > 0)  # more rounds, larger union, more of the weight kept
assert recall_mean[-1] > 0.7

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for name, marker in (("paper", "o-"), ("released", "s--")):
    axes[0].plot(ROUNDS, table[name], marker, label=f"{name} semantics")
axes[0].set_xscale("log", base=2)
axes[0].set_xticks(ROUNDS, ROUNDS)
axes[0].set_xlabel("hash rounds R")
axes[0].set_ylabel("relative error vs full attention")
axes[0].set_title(f"L = {L_BIG}, C = {C_BIG}, K = {2 * L_BIG // C_BIG}, clustered data")
axes[0].legend()
axes[0].grid(alpha=0.3)
axes[1].plot(ROUNDS, recall_mean, "o-")
axes[1].set_xscale("log", base=2)
axes[1].set_xticks(ROUNDS, ROUNDS)
axes[1].set_ylim(0, 1)
axes[1].set_xlabel("hash rounds R")
axes[1].set_ylabel("share of full attention weight kept")
axes[1].set_title("weight of the keys in the union (paper semantics)")
axes[1].grid(alpha=0.3)
save_figure(fig, "03_rounds_error")
plt.show()

# %% [markdown]
# ## The paper's semantics and the released code's, side by side
#
# trax's `LSHSelfAttention` has two switches, and the library keeps their names:
#
# * `attend_across_buckets`: **False** in the paper (keys of other buckets in the window are
#   masked); **True** in the released code (every key in the window is attended).
# * `allow_duplicate_attention`: **False** in the paper ($\log N_{ij}$ is subtracted, so a key
#   found in several rounds counts once); **True** in the released code (a key found in $n$
#   rounds counts $n$ times).
# * Result: the paper's is dense softmax over the union of same-bucket keys; the released code's
#   is a softmax over window *copies*, with no such simple dense form.
#
# The released code attends to more keys (the whole window, not only the bucket), which at one
# round makes it a little closer to full attention in the table above; but it gives a key found in
# several rounds several times its share. The last column of the table is the measured difference
# between the two, relative to the size of the full-attention output. Here we also check that the
# released semantics really differs from the union softmax while the paper's does not, on the same
# small examples as before.

# %%
rng = np.random.default_rng(3)
qk_t = 2.0 * rng.standard_normal((1, 2, 32, 6))
v_t = rng.standard_normal((1, 2, 32, 5))
rot_t = lsh.random_rotations(rng, 6, n_hashes=4, n_buckets=8, n_heads=2)
results = {}
for name, (across, duplicates) in {
    "paper": (False, False),
    "across buckets only": (True, False),
    "duplicates only": (False, True),
    "released": (True, True),
}.items():
    results[name], cache_t = lsh_attention_forward(
        qk_t,
        v_t,
        chunk_len=4,
        n_hashes=4,
        rotations=rot_t,
        attend_across_buckets=across,
        allow_duplicate_attention=duplicates,
    )
ref = dense_union_attention(qk_t, v_t, union_of_attended_keys(cache_t.buckets, 4))
full_t, _ = shared_qk_attention_forward(qk_t, v_t)
print(f"{'semantics':<22}{'max |out - union ref|':>24}{'rel. error vs full':>22}")
for name, o in results.items():
    print(
        f"{name:<22}{np.abs(o - ref).max():>24.2e}"
        f"{np.linalg.norm(o - full_t) / np.linalg.norm(full_t):>22.4f}"
    )
assert np.abs(results["paper"] - ref).max() < 1e-10
assert np.abs(results["released"] - ref).max() > 1e-3
assert np.abs(results["duplicates only"] - ref).max() > 1e-3

# %% [markdown]
# ## The backward pass, derived
#
# Fix one query $i$ and write $\bar g_i = \partial \mathcal{L} / \partial\, \text{out}_i$ for the
# gradient arriving from above. Every (round $r$, window slot $j$) pair that query $i$ scores has
# a logit
#
# $$ s_{rij} = q_i \cdot k_j - c_{rij}, $$
#
# where $c_{rij}$ is a constant: $\log N_{ij}$, or the logit is replaced outright by a mask
# constant ($-10^9$, $-10^5$). Round $r$ has weights $P_{rij} = e^{s_{rij} - \ell_{ri}}$, with
# $\ell_{ri} = \log \sum_j e^{s_{rij}}$, and output $o_{ri} = \sum_j P_{rij} v_j$.
#
# **Rounds combined are one softmax.** With $\lambda_i = \log \sum_r e^{\ell_{ri}}$ the round
# weights are $w_{ri} = e^{\ell_{ri} - \lambda_i}$ and
#
# $$
# \text{out}_i = \sum_r w_{ri}\, o_{ri} = \sum_r \sum_j e^{\ell_{ri} - \lambda_i}\,
#   e^{s_{rij} - \ell_{ri}}\, v_j = \sum_{r, j} \pi_{rij}\, v_j,
# \qquad \pi_{rij} = e^{s_{rij} - \lambda_i}, \quad \sum_{r,j} \pi_{rij} = 1 .
# $$
#
# So the whole multi-round attention of query $i$ is a single softmax over all the slots it sees,
# with the final weights $\pi_{rij} = w_{ri} P_{rij}$ (what `cache.probs` holds).
#
# **Softmax backward.** For a softmax $\pi = \operatorname{softmax}(s)$ and $y = \sum \pi_a v_a$,
# $\partial y / \partial s_a = \pi_a (v_a - y)$. Hence
#
# $$
# \bar s_{rij} = \pi_{rij}\,\big(\bar g_i \cdot v_j - \bar g_i \cdot \text{out}_i\big),
# \qquad
# \bar v_j = \sum_i \sum_r \pi_{rij}\, \bar g_i .
# $$
#
# One row scalar $\bar g_i \cdot \text{out}_i$ per query is all the extra we need.
#
# **The same thing through the log-sum-exp combination.** Going through the two levels gives the
# same result and shows why the round outputs drop out. The rounds' weights see $\ell_{ri}$:
# $\partial\, \text{out}_i / \partial \ell_{ri} = w_{ri}(o_{ri} - \text{out}_i)$, so
# $\bar\ell_{ri} = w_{ri}\, \bar g_i \cdot (o_{ri} - \text{out}_i)$. Inside round $r$,
# $\bar o_{ri} = w_{ri} \bar g_i$ and the within-round softmax backward plus the path through
# $\partial \ell_{ri} / \partial s_{rij} = P_{rij}$ give
#
# $$
# \bar s_{rij} = P_{rij}\, w_{ri}\, \bar g_i \cdot (v_j - o_{ri}) + P_{rij}\, \bar\ell_{ri}
# = \pi_{rij}\, \bar g_i \cdot (v_j - o_{ri} + o_{ri} - \text{out}_i)
# = \pi_{rij}\, \big(\bar g_i \cdot v_j - \bar g_i \cdot \text{out}_i\big).
# $$
#
# **Masks and counts.** A masked logit and the count $\log N_{ij}$ are constants: they pass no
# gradient to $q$ or $k$, so $\bar s$ is set to zero where a logit was replaced. (The self logit
# $-10^5$ can carry weight 1 for a lonely query, but it is still a constant.)
#
# **Into queries and keys.** From $s_{rij} = q_i \cdot k_j$:
# $\bar q_i = \sum_{r,j} \bar s_{rij}\, k_j$ and $\bar k_j = \sum_{i, r} \bar s_{rij}\, q_i$.
# **Keys are normalised,** $k_j = x_j / |x_j|$ with $x_j$ the same vector as the query $q_j$, and
# the Jacobian of $x / |x|$ removes the radial part:
#
# $$
# \bar x_j = \frac{\bar k_j - k_j\,(k_j \cdot \bar k_j)}{|x_j|},
# \qquad \overline{qk}_j = \bar q_j + \bar x_j .
# $$
#
# **Sorting, chunking and unsorting are permutations.** Sorting the $R$ copies of the $L$
# positions is a gather $y = G x$ with $G$ an $RL \times L$ matrix holding a single 1 per row
# (row = sorted slot, column = its original position); for one round $G$ is a permutation matrix
# $\Pi$. The adjoint of a gather is $G^\top$: scatter each slot's gradient back to its position,
# adding up the $R$ copies. For a permutation, $\Pi^\top = \Pi^{-1}$, so "transpose" is simply
# "apply the inverse permutation", which is why the cache keeps both `order` and `inverse`. The
# unsort of the outputs is $\Pi^\top$, so its backward is $\Pi$: the upstream gradient is
# sorted the same way as the inputs were. The look-back window copies chunk $c$ into the windows
# of chunks $c$ and $c+1$; its adjoint adds those two gradients.
#
# **The hash has no gradient.** Buckets are piecewise constant in $qk$ (they change only when a
# vector crosses a boundary), so their derivative is zero almost everywhere. The backward replays
# the cached sort and never hashes again; the finite-difference check below holds the rotations
# fixed.

# %%
rng = np.random.default_rng(4)
qk_g = rng.standard_normal((1, 2, 13, 4))  # L = 13 is not a multiple of C = 4: padding inside
v_g = rng.standard_normal((1, 2, 13, 3))
mask_g = np.ones((1, 13), dtype=bool)
mask_g[0, -2:] = False  # two padding tokens
rot_g = lsh.random_rotations(rng, 4, n_hashes=2, n_buckets=4)
worst = 0.0
for name, (across, duplicates) in SEMANTICS.items():
    for causal in (False, True):
        errors = check_op(
            lsh_attention_forward,
            lsh_attention_backward,
            (qk_g, v_g),
            dict(
                chunk_len=4,
                n_hashes=2,
                rotations=rot_g,
                causal=causal,
                mask=mask_g,
                attend_across_buckets=across,
                allow_duplicate_attention=duplicates,
            ),
            rng=rng,
        )
        print(f"{name:<9} causal={causal!s:<5}: rel. error dqk {errors[0]:.1e}, dv {errors[1]:.1e}")
        worst = max(worst, *errors.values())
assert worst < 1e-7

# %% [markdown]
# ## Time and memory as the sequence grows
#
# Full attention builds the $L \times L$ matrix of logits and weights per head: time and memory
# grow like $L^2$. LSH attention builds, per round, $L/C$ windows of $C \times 2C$: like
# $L \cdot R \cdot 2C$, linear in $L$ for a fixed chunk length. (The paper's abstract says
# $O(L \log L)$: the $\log L$ is the sort, which takes a small fraction of the time here.) We
# time one forward pass of each (best of several runs, float32, $H = 2$, $D_h = 32$, $C = 64$,
# $R = 2$) and measure its peak memory with `memory.measure_peak` (NumPy allocations made during
# the call, the returned cache included). Times depend on the machine and its load; they are
# printed, not checked. On a shared, busy machine the shortest runs are the noisiest (a few
# milliseconds of work can be delayed by tens of milliseconds), so besides the first length at
# which LSH was measured faster we also print where a linear and a quadratic fit of the longer
# runs cross.

# %%
H_T, D_T, C_T, R_T = 2, 32, 64, 2
LENGTHS = (256, 512, 1024, 2048, 4096)
rng = np.random.default_rng(5)
timing = {"LSH": [], "full": []}
peak = {"LSH": [], "full": []}


def best_time(fn, budget=0.6, min_runs=3, max_runs=15):
    """The fastest of several runs (repeated until ``budget`` seconds have been spent)."""
    times = []
    while len(times) < min_runs or (sum(times) < budget and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


for length in tqdm(LENGTHS, desc="length"):
    qk_l = rng.standard_normal((1, H_T, length, D_T)).astype(np.float32)
    v_l = rng.standard_normal((1, H_T, length, D_T)).astype(np.float32)
    rot_l = lsh.random_rotations(
        rng, D_T, R_T, lsh.default_n_buckets(length, C_T), n_heads=H_T
    ).astype(np.float32)
    runs = {
        "LSH": partial(
            lsh_attention_forward, qk_l, v_l, chunk_len=C_T, n_hashes=R_T, rotations=rot_l
        ),
        "full": partial(shared_qk_attention_forward, qk_l, v_l),
    }
    for name, fn in runs.items():
        timing[name].append(best_time(fn))
        peak[name].append(memory.measure_peak(fn)[1])

print(f"{'L':>6}{'LSH ms':>10}{'full ms':>10}{'LSH MB':>10}{'full MB':>10}{'full/LSH memory':>17}")
for i, length in enumerate(LENGTHS):
    print(
        f"{length:>6}{1e3 * timing['LSH'][i]:>10.1f}{1e3 * timing['full'][i]:>10.1f}"
        f"{peak['LSH'][i] / 1e6:>10.1f}{peak['full'][i] / 1e6:>10.1f}"
        f"{peak['full'][i] / peak['LSH'][i]:>17.2f}"
    )
crossover = next(
    (
        n
        for i, n in enumerate(LENGTHS)
        if all(tl < tf for tl, tf in zip(timing["LSH"][i:], timing["full"][i:]))
    ),
    None,
)
print(f"measured: LSH is faster than full attention from L = {crossover} on")
# a steadier estimate on a busy machine: fit t = a L (LSH) and t = b L^2 (full) on the three
# longest lengths, where the times are large against scheduling noise; they cross at L = a / b
long = slice(-3, None)
a_lsh = np.median(np.array(timing["LSH"])[long] / np.array(LENGTHS)[long])
b_full = np.median(np.array(timing["full"])[long] / np.array(LENGTHS)[long] ** 2)
print(f"fitted:   a L = b L^2 at L = {a_lsh / b_full:.0f} (on this machine, this run)")

# %% [markdown]
# Memory, unlike wall-clock time, is deterministic here, so its growth can be checked: from
# $L = 1024$ to $L = 4096$ (4 times longer) LSH attention's peak grows about 4 times, full
# attention's about 16 times.

# %%
i1, i4 = LENGTHS.index(1024), LENGTHS.index(4096)
lsh_growth = peak["LSH"][i4] / peak["LSH"][i1]
full_growth = peak["full"][i4] / peak["full"][i1]
print(f"peak memory growth for 4x length: LSH {lsh_growth:.2f}x, full {full_growth:.2f}x")
assert 3.0 < lsh_growth < 5.5
assert 12.0 < full_growth < 20.0

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
lengths = np.array(LENGTHS)
for ax, data, unit, title in (
    (axes[0], timing, 1e3, "forward time (ms)"),
    (axes[1], peak, 1e-6, "peak memory (MB)"),
):
    for name, marker in (("LSH", "o-"), ("full", "s-")):
        ax.plot(lengths, np.array(data[name]) * unit, marker, label=name)
    ref_point = np.array(data["LSH"])[-1] * unit
    ax.plot(lengths, ref_point * lengths / lengths[-1], "k:", lw=1, label="slope 1 (linear)")
    ref_point = np.array(data["full"])[-1] * unit
    ax.plot(lengths, ref_point * (lengths / lengths[-1]) ** 2, "k--", lw=1, label="slope 2")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
fig.suptitle(f"LSH (R = {R_T}, C = {C_T}) vs full attention, H = {H_T}, Dh = {D_T}, float32")
save_figure(fig, "03_lsh_vs_full")
plt.show()

# %% [markdown]
# ## Summary
#
# * LSH attention hashes, sorts by (bucket, position), cuts the sorted sequence into chunks of
#   $C$ and lets each chunk attend to itself and the chunk before, masking other buckets, the
#   query's own key (unless alone) and, for causal attention, later original positions; the
#   outputs are unsorted back.
# * With the paper's semantics, $R$ rounds give exactly dense softmax attention over the union of
#   the keys found in any round; more rounds find more of the keys that matter and the error
#   against full attention falls.
# * The backward is one softmax backward over all the slots a query saw, routed back through the
#   cached permutation (its transpose is its inverse) and through the unit-norm of the keys; it
#   agrees with finite differences.
# * Its memory grows linearly in $L$ where full attention's grows quadratically; on long enough
#   sequences it is faster too.

# %%
print(f"notebook ran in {time.perf_counter() - START:.1f} s")
