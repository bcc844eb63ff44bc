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
# Figure 2, "Causal masking for shared-QK attention"); the released code is trax's
# `LSHSelfAttention` (`trax/layers/research/efficient_attention.py`).
#
# **Learning objectives.** After this notebook you can
#
# - carry out one round of LSH attention by hand: hash, sort by (bucket, position), cut into
#   chunks, attend within the chunk and one chunk back, unsort;
# - state the three masks (other bucket, own position, causal) and why each exists;
# - read an attention matrix before and after sorting, and say what a chunk boundary costs;
# - explain why chunks that only look back cannot serve bidirectional attention, and what
#   looking ahead changes.
#
# **Prerequisites.** [Notebook 02](02_hashing.ipynb): the angular hash, shared-QK attention with
# unit keys, and the rule $K = 2\lceil L/C \rceil$. Softmax attention (notebook 01).
#
# **Code used.** `minireformer.lsh` (step 1, the hash), `minireformer.lsh_attention` (steps 2-5:
# `lsh_attention_forward`), `minireformer.windows` and `minireformer.chunks` (the chunks, windows
# and masks that LSH attention shares with local attention), `minireformer.reference` (the same
# computations written plainly), `minireformer.attention` (full shared-QK attention,
# for comparison). Notation: [the README's table](../README.md#notation) ($K$ buckets, $C$ chunk
# length, $n_c$ number of chunks, $R$ rounds, $D_h$ head width, $L$ length).
#
# **Previous:** [02 Hashing](02_hashing.ipynb) · **Next:**
# [04 Multi-round LSH and its backward pass](04_multiround_lsh.ipynb). Exercises:
# `exercises/03_lsh_attention.py`.
#
# This notebook stays with **one hash round** and one tiny example, so that every number can be
# checked by hand. Notebook 04 adds several rounds, the paper's and the released code's semantics,
# the backward pass, and measures time and memory.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from minireformer import backend, lsh, reference
from minireformer.attention import NEG_MASK, NEG_SELF, shared_qk_attention_forward
from minireformer.lsh_attention import lsh_attention_forward
from minireformer.teaching import schematics
from minireformer.teaching.plotting import save_figure

START = time.perf_counter()
np.set_printoptions(precision=3, suppress=True, linewidth=110)
BUCKET_COLOURS = schematics.BUCKET_COLOURS  # bucket b is drawn in tab10 colour b everywhere
print(backend.describe())

# %% [markdown]
# ## The picture first
#
# LSH attention replaces "every query scores every key" by five cheap steps. Each row below is the
# sequence after one step, on twelve tokens coloured by bucket (a hand-picked example), with the
# shape of what that step produces:
#
# 1. **hash** every position into one of $K$ buckets, $h(x) = \arg\max([xR; -xR])$ (notebook 02);
# 2. **sort** the positions by (bucket, position), so that each bucket is a contiguous run;
# 3. **chunk** the sorted sequence into $n_c = L/C$ pieces of $C$ consecutive positions;
# 4. **attend**: each chunk's queries score the keys of their own chunk and of the chunk before
#    (the curved arrows; the first chunk wraps around to the last), and only those of their own
#    bucket;
# 5. **unsort** the outputs back to the original order.
#
# No $L \times L$ array is ever built: each query scores at most $2C$ keys, so time and memory
# grow like $L \cdot C$, not $L^2$.

# %%
fig = schematics.lsh_pipeline()
save_figure(fig, "03_lsh_pipeline")
plt.show()

# %% [markdown]
# **Shared-QK, recalled.** LSH needs the same buckets for queries and keys, so the Reformer shares
# them (notebook 02): one projection gives $q_i$, and the key is the unit vector
# $k_j = q_j / |q_j|$. The logit is $q_i \cdot k_j$ (no $1/\sqrt{D_h}$, as in the released code).
#
# **Why a query may not attend to itself.** By the Cauchy-Schwarz inequality,
# $q_i \cdot k_j \le |q_i|\,|k_j| = |q_i| = q_i \cdot k_i$, with equality only when $q_j$ points
# the same way as $q_i$. So, left alone, every query would *always* give its own key the largest
# logit (or share the largest, with keys pointing exactly its way), and attention would be
# dominated by copying the token's own value. The paper therefore masks the own position: its
# logit is set to $-10^5$, so a token attends to itself only when nothing else is available. We
# check the inequality on the example below.

# %% [markdown]
# ## A 16-token example: $L = 16$, $K = 4$ buckets, chunk length $C = 4$
#
# The queries come from four clusters of directions, so that the hash has something to find. We
# draw the rotations ourselves and pass them in, so that every step below can be recomputed by
# hand from the same numbers; `lsh_attention_forward` returns the buckets it used in its cache.

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
print("position:", np.arange(L))
print("bucket:  ", buckets)

# %%
unit_keys = qk[0, 0] / np.linalg.norm(qk[0, 0], axis=-1, keepdims=True)  # (L, Dh)
all_logits = qk[0, 0] @ unit_keys.T  # (L, L), for this check only
assert np.allclose(np.diag(all_logits), np.linalg.norm(qk[0, 0], axis=-1))  # q_i . k_i = |q_i|
assert np.all(all_logits <= np.diag(all_logits)[:, None] + 1e-12)  # Cauchy-Schwarz: own is max
print("every query's own key has its largest logit (before the self mask)")

# %% [markdown]
# ### Steps 1-3 by hand: hash, sort, chunk
#
# The bucket is `argmax([xR; -xR])` (notebook 02). Sorting by bucket, and by position within a
# bucket, is a *stable* sort of the bucket ids (a stable sort keeps equal keys in their original
# order); the library sorts on the single integer key `bucket * L + position`, which gives the
# same order. Reshaping the sorted positions to $(n_c, C) = (L/C, C)$ gives the chunks.

# %%
projected = qk[0, 0] @ rotations[:, 0]  # (L, K/2)
my_buckets = np.argmax(np.concatenate([projected, -projected], axis=-1), axis=-1)  # (L,)
my_order = np.argsort(my_buckets, kind="stable")  # sorted slot -> position
my_chunks = my_order.reshape(L // C, C)  # (n_c, C)
print("sorted positions:", my_order)
print("their buckets:   ", my_buckets[my_order])
print("chunks:\n", my_chunks)

# %%
assert np.array_equal(my_buckets, buckets)
assert np.array_equal(my_buckets, reference.angular_hash(qk, rotations)[0, 0, 0])  # the equation
assert np.array_equal(my_order, np.argsort(my_buckets * L + np.arange(L)))  # the library's key
assert np.all(np.diff(my_buckets[my_order]) >= 0)  # buckets are contiguous runs

# %% [markdown]
# ### Step 4 by hand: attend within the chunk and one chunk back
#
# Chunk $c$ holds sorted slots $cC, \dots, cC + C - 1$. Its queries look at the keys of chunk $c$
# and chunk $c - 1$ (chunk 0 looks back at the last chunk: the window wraps around, as in the
# released code). Within this window of $2C$ keys three masks apply, each *replacing* a logit by
# a constant:
#
# * keys of **another bucket**: $-10^9$ (the paper attends within a bucket only);
# * the query's **own position**: $-10^5$, so that it is used only when nothing else is left;
# * with **causal** attention, keys at a later *original* position: $-10^9$.
#
# Since $-10^9 < -10^5$, a query whose window holds no other key of its bucket puts all its
# weight on itself. A softmax over the window gives the weights; the outputs are written back to
# the query's original position (step 5, unsort). Here is one short loop over the four chunks,
# checked against the library.

# %%
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
# and the plain dense version of the same attention (reference.py), from the same buckets
dense = reference.lsh_attention(qk, v, cache.buckets, chunk_len=C, n_buckets=K)
assert np.allclose(dense, out, atol=1e-12)

# %% [markdown]
# ### The five stages drawn (the paper's Figure 2)
#
# The same five steps on the real example. Each square is a token, coloured by its bucket and
# labelled with its original position. The dashed frame in the "attend" row is the window of
# chunk 2 (its own chunk and the one before); the keys its queries may use, same bucket and inside
# the window, are the ones not faded.


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
# To *look at* the attention pattern we need the dense $16 \times 16$ matrix of weights that LSH
# attention used. The library never builds it, but it can give it to us: once the buckets are
# fixed, the output is linear in the values, $\text{out} = P v$, so passing the $L \times L$
# identity matrix as the values returns $P$ itself (the same trick as `attention_maps.py`). This
# is for pictures of short sequences only.


# %%
def lsh_weight_matrix(qk, **kwargs):
    """(B, H, L, L) weights of LSH attention with fixed ``rotations`` (passed in ``kwargs``)."""
    batch, n_heads, length, _ = qk.shape
    eye = np.broadcast_to(np.eye(length), (batch, n_heads, length, length))
    return lsh_attention_forward(qk, np.ascontiguousarray(eye), **kwargs)[0]


lsh_weights = lsh_weight_matrix(qk, chunk_len=C, n_buckets=K, rotations=rotations)[0, 0]
full_out, full_cache = shared_qk_attention_forward(qk, v)
full_weights = full_cache.probs[0, 0]  # (L, L)
assert np.allclose(lsh_weights @ v[0, 0], out[0, 0], atol=1e-12)  # the matrix is what was used
assert np.allclose(lsh_weights.sum(axis=1), 1) and np.allclose(full_weights.sum(axis=1), 1)
assert np.all(np.diag(full_weights) == 0)  # the self mask: full attention never reads itself here

same_bucket_dense = my_buckets[:, None] == my_buckets[None, :]
in_blocks = (full_weights * same_bucket_dense).sum(axis=1)  # per query
print("share of full attention's weight inside the query's own bucket, per query:\n", in_blocks)
print("queries with less than a tenth inside:", np.flatnonzero(in_blocks < 0.1))
assert np.flatnonzero(in_blocks < 0.1).tolist() == [4, 5]  # two queries look almost all elsewhere
print(f"mean {in_blocks.mean():.2f}, smallest {in_blocks.min():.2f}")
assert 0.6 < in_blocks.mean() < 0.9 and in_blocks.min() < 0.1  # mostly in-bucket, not always

# %% [markdown]
# Beside LSH attention we draw full shared-QK attention. Two things to read before the picture:
#
# * **The full-attention panels have an empty diagonal.** That is the self mask: with shared-QK
#   the own position is masked in full attention too (otherwise, by Cauchy-Schwarz, it would
#   dominate), and with 15 other keys available its weight is exactly 0. The LSH panels have two
#   black diagonal squares: queries left with no other key in their window (below).
# * **Sorted, full attention is block-structured, but not block-diagonal.** The numbers above are
#   the share of each query's full-attention weight that lies inside its own bucket: about three
#   quarters on average, yet two queries (4 and 5) put almost all of theirs in other buckets. The
#   hash puts similar vectors together often, not always; more rounds (notebook 04) repair that.


# %%
fig, axes = plt.subplots(2, 2, figsize=(10, 9.4), constrained_layout=True)
panels = {
    (0, 0): (full_weights, np.arange(L), "full attention, original order"),
    (0, 1): (full_weights, my_order, "full attention, sorted by bucket"),
    (1, 0): (lsh_weights, np.arange(L), "LSH attention, original order"),
    (1, 1): (lsh_weights, my_order, "LSH attention, sorted; grid = chunks"),
}
for (i, j), (weights, order, title) in panels.items():
    ax = axes[i, j]
    image = ax.imshow(weights[np.ix_(order, order)], cmap="Greys", vmin=0, vmax=1)
    ax.set_xticks(range(L), order, fontsize=7)
    ax.set_yticks(range(L), order, fontsize=7)
    for tick, pos in zip(ax.get_xticklabels(), order):
        tick.set_color(BUCKET_COLOURS[buckets[pos]])
    for tick, pos in zip(ax.get_yticklabels(), order):
        tick.set_color(BUCKET_COLOURS[buckets[pos]])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("key position (coloured by bucket)", fontsize=8)
    ax.set_ylabel("query position", fontsize=8)
    if j == 1:
        for edge in range(C, L, C):
            ax.axhline(edge - 0.5, color="0.45", lw=0.8, ls="--")
            ax.axvline(edge - 0.5, color="0.45", lw=0.8, ls="--")
fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
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
# end of chunk 0; its bucket-mates are in chunk 1, *after* it in sorted order. It cannot see them:
# chunks look back, not ahead. The chunk it looks back at (the last, by wrap-around) holds bucket
# 3. With no key of its bucket in its window it falls back on itself. Token 5, the first of
# bucket 2, is in the same position at the end of chunk 1. The per-query shares printed above
# (the weight full attention gives to the keys LSH kept) are low for such queries, and for hash
# misses such as token 4, whose bucket is whole in its chunk but whose strongest keys hashed
# elsewhere.

# %%
slot = np.arange(L)
in_band = (slot[None, :] // C == slot[:, None] // C) | (
    slot[None, :] // C == (slot[:, None] // C - 1) % (L // C)
)
sorted_lsh = lsh_weights[np.ix_(my_order, my_order)]
same_bucket = my_buckets[my_order][:, None] == my_buckets[my_order][None, :]
assert np.all(sorted_lsh[~(in_band & same_bucket)] == 0)
assert np.allclose(out[0, 0, 0], v[0, 0, 0]) and np.allclose(out[0, 0, 5], v[0, 0, 5])  # alone
print(
    f"non-zero weights: LSH {np.count_nonzero(lsh_weights)}, full {np.count_nonzero(full_weights)}"
)

# %% [markdown]
# ### Looking ahead: why a bidirectional model needs it
#
# Without a causal mask a query *should* see its later bucket-mates too, but with chunks that only
# look back it sees them only when they share its own chunk. A query at the end of a chunk, like
# tokens 0 and 5, misses its whole bucket. This is harmless for a causal language model (later
# keys would be masked anyway, by position, and the sort keeps positions increasing within a
# bucket) but wrong for bidirectional use. The fix is a window that also looks one chunk ahead,
# `n_chunks_after=1` (trax's `n_chunks_after`): each query then scores $3C$ keys.

# %%
ahead = lsh_weight_matrix(qk, chunk_len=C, n_buckets=K, rotations=rotations, n_chunks_after=1)
ahead = ahead[0, 0]
mass_ahead = (full_weights * (ahead > 0)).sum(axis=1)
for token in (0, 5):
    mates = np.flatnonzero(same_bucket_dense[token] & (np.arange(L) != token))
    print(
        f"token {token}: bucket-mates {mates}; weight on them looking back only "
        f"{lsh_weights[token, mates].sum():.2f}, also looking ahead {ahead[token, mates].sum():.2f}"
    )
print(f"mean share of full attention's weight kept: {mass.mean():.2f} -> {mass_ahead.mean():.2f}")

# %%
for token in (0, 5):
    mates = same_bucket_dense[token] & (np.arange(L) != token)
    assert lsh_weights[token, mates].sum() == 0 and np.isclose(ahead[token, mates].sum(), 1)
assert np.all(mass_ahead >= mass - 1e-12) and mass_ahead.mean() > mass.mean()
# no bucket here is larger than a chunk plus one, so with look-ahead every query sees its whole
# bucket: LSH then keeps exactly the in-bucket share of full attention's weight
assert np.allclose(mass_ahead, in_blocks)

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
# window slots, chunk before then own chunk), with each logit's fate under causal LSH attention,
# beside the weights that result.

# %%
q_pos = my_chunks[:, :, None]  # (n_c, C, 1) original positions of the queries
k_pos = np.concatenate([np.roll(my_chunks, 1, axis=0), my_chunks], axis=1)[
    :, None, :
]  # (n_c, 1, 2C)
category = np.full((L // C, C, 2 * C), 0)  # 0 kept
category[my_buckets[q_pos] != my_buckets[k_pos]] = 1  # other bucket: -1e9
category[(category == 0) & (k_pos > q_pos)] = 2  # causal: -1e9
category[np.broadcast_to(q_pos == k_pos, category.shape)] = 3  # self: -1e5
names = ["kept", "other bucket (-1e9)", "causal: later position (-1e9)", "self (-1e5)"]
for code, name in enumerate(names):
    print(f"{name:<32}{np.sum(category == code):>4}")

out_causal, _ = lsh_attention_forward(
    qk, v, chunk_len=C, n_buckets=K, rotations=rotations, causal=True
)
causal_weights = lsh_weight_matrix(qk, chunk_len=C, n_buckets=K, rotations=rotations, causal=True)
causal_weights = causal_weights[0, 0]
kept_dense = np.zeros((L, L), dtype=bool)  # (query, key) pairs the windows keep
for c in range(L // C):
    kept_dense[np.ix_(my_chunks[c], k_pos[c, 0])] |= category[c] == 0
alone = ~np.any((category == 0).reshape(L, 2 * C), axis=1)  # sorted queries with nothing kept
alone_pos = my_chunks.reshape(-1)[alone]
print("queries with no other key, which attend to themselves:", np.sort(alone_pos))

# %%
assert np.array_equal(causal_weights > 0, kept_dense | np.diag(np.isin(np.arange(L), alone_pos)))
assert np.allclose(out_causal[0, 0, 0], v[0, 0, 0])  # token 0 attends only to itself
assert np.all(np.triu(causal_weights, k=1) == 0)  # nothing from the future
assert np.allclose(np.diag(causal_weights)[alone_pos], 1)
not_alone = np.setdiff1d(np.arange(L), alone_pos)
assert np.allclose(np.diag(causal_weights)[not_alone], 0)

# %%
# mask colours: none of them is a bucket colour (tab10 0-3), so that colour means one thing
# kept, other bucket, causal, self: also four distinct greys in print (lightness about 0.1,
# 0.95, 0.7 and 0.4)
MASK_COLOURS = ["#1a1a1a", "#f2f2f2", "#c5b0d5", "#8c564b"]
fig, axes = plt.subplots(
    1, 2, figsize=(10, 6.2), gridspec_kw={"width_ratios": [0.62, 1]}, constrained_layout=True
)
cmap = ListedColormap(MASK_COLOURS)
axes[0].imshow(category.reshape(L, 2 * C), cmap=cmap, vmin=-0.5, vmax=3.5)
axes[0].set_yticks(range(L), [f"{p} (b{my_buckets[p]})" for p in my_order], fontsize=7)
for tick, pos in zip(axes[0].get_yticklabels(), my_order):
    tick.set_color(BUCKET_COLOURS[my_buckets[pos]])
axes[0].set_xticks(
    range(2 * C),
    [f"prev {i}" for i in range(C)] + [f"own {i}" for i in range(C)],
    fontsize=7,
    rotation=90,
)
for edge in range(C, L, C):
    axes[0].axhline(edge - 0.5, color="w", lw=1.5)
axes[0].axvline(C - 0.5, color="w", lw=1.5)
axes[0].set_ylabel("query position (bucket), sorted")
axes[0].set_xlabel("window slot: previous chunk, own chunk")
axes[0].set_title("masks in each chunk's window (causal)", fontsize=10)
handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in MASK_COLOURS]
axes[0].legend(handles, names, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
image = axes[1].imshow(causal_weights, cmap="Greys", vmin=0, vmax=1)
axes[1].set_title("causal LSH attention weights, original order", fontsize=10)
axes[1].set_xticks(range(0, L, 2))
axes[1].set_yticks(range(0, L, 2))
axes[1].set_xlabel("key position")
axes[1].set_ylabel("query position")
fig.colorbar(image, ax=axes[1], shrink=0.8, label="attention weight")
save_figure(fig, "03_masks")
plt.show()

# %% [markdown]
# ## Recap
#
# * One round of LSH attention hashes, sorts by (bucket, position), cuts the sorted sequence into
#   chunks of $C$ and lets each chunk attend to itself and the chunk before, masking other buckets,
#   the query's own key (unless alone) and, for causal attention, later original positions; the
#   outputs are unsorted back. A loop of a dozen lines reproduces the library to $10^{-12}$
#   (asserted).
# * Shared-QK makes a query's own key its largest logit (Cauchy-Schwarz, asserted), which is why the
#   own position is masked, in full attention as well (its diagonal is empty, asserted).
# * LSH attention is a proper softmax over the keys it keeps, all inside the chunk band and the
#   query's bucket (asserted). Sorted by bucket, full attention keeps about three quarters of its
#   weight inside the query's bucket on this example, but some queries almost none (asserted):
#   block-structured, not block-diagonal.
# * A query at the end of its chunk cannot see its later bucket-mates: harmless for causal
#   attention, wrong for bidirectional attention, and fixed by looking one chunk ahead (tokens 0
#   and 5 then put all their weight on their bucket-mates, asserted).
#
# The numbers of this run:

# %%
print(f"full attention weight inside the query's bucket: mean {in_blocks.mean():.2f}")
print(f"full attention weight on the keys LSH keeps: looking back {mass.mean():.2f}, ", end="")
print(f"looking back and ahead {mass_ahead.mean():.2f}")
print(f"notebook ran in {time.perf_counter() - START:.1f} s")

# %% [markdown]
# **Next:** [notebook 04](04_multiround_lsh.ipynb) hashes several times, combines the rounds,
# compares the paper's semantics with the released code's, derives the backward pass and measures
# LSH attention against full attention as $L$ grows. Practise with `exercises/03_lsh_attention.py`:
# sort-and-chunk, the look-back window, the masks, and one round of LSH attention by hand.
