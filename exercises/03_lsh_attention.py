# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercises 03: LSH attention, one round
#
# Exercises for [notebook 03](../notebooks/03_lsh_attention.ipynb). You will build one round of
# LSH attention from its parts: sort the positions by bucket and cut them into chunks, find each
# chunk's look-back window, apply the three masks, and put it all together into an attention that
# matches `minireformer.lsh_attention.lsh_attention_forward` to $10^{-10}$. Shapes are for one
# head: $L$ positions, $D_h$ wide, $K$ buckets, chunks of $C$, $n_c = L / C$ chunks.

# %%
import numpy as np

from minireformer import lsh
from minireformer.attention import NEG_MASK, NEG_SELF, mask_logits
from minireformer.lsh_attention import lsh_attention_forward
from minireformer.teaching import grading

rng = np.random.default_rng(0)
L, DH, K, C = 24, 6, 6, 4
qk = 2.0 * rng.standard_normal((L, DH))  # shared queries/keys of one head
v = rng.standard_normal((L, 5))
rotations = lsh.random_rotations(rng, DH, n_hashes=1, n_buckets=K)  # (Dh, R=1, K/2)
buckets = lsh.hash_vectors(qk[None, None], rotations)[0, 0, 0]  # (L,)
print("buckets:", buckets)

# %% [markdown]
# ### Exercise 3.1: sort and chunk
#
# Implement `sort_and_chunk(buckets, chunk_len)`: return `order`, the $(L,)$ positions sorted by
# (bucket, position), so that `order[s]` is the position in sorted slot $s$, and `chunks`, the
# same positions reshaped to $(n_c, C)$. Within a bucket, positions must stay in increasing order
# (a *stable* sort: `np.argsort(..., kind="stable")`, or a single integer key that makes ties
# impossible). $L$ is a multiple of $C$.


# %%
def sort_and_chunk(buckets, chunk_len):
    """(order (L,), chunks (L // C, C)): positions sorted by (bucket, position), then chunked."""
    # BEGIN SOLUTION
    order = np.argsort(buckets, kind="stable")
    return order, order.reshape(-1, chunk_len)
    # END SOLUTION


# %%
order, chunks = sort_and_chunk(buckets, C)
grading.check_equal("Exercise 3.1: order is a permutation", np.sort(order), np.arange(L))
sorted_buckets = buckets[order]
ties = sorted_buckets[1:] == sorted_buckets[:-1]
grading.check_true(
    "Exercise 3.1: sorted by (bucket, position)",
    np.all(np.diff(sorted_buckets) >= 0) and np.all(np.diff(order)[ties] > 0),
    "buckets must not decrease along order, and within a bucket positions must increase",
)
grading.check_equal("Exercise 3.1: chunks", chunks, order.reshape(-1, C))

# %% [markdown]
# ### Exercise 3.2: the look-back window
#
# Each chunk's queries attend to the keys of the `n_before` chunks before it and of their own
# chunk, in that order (oldest first), wrapping around: chunk 0 looks back at the last chunk.
# Implement `look_back(chunks, n_before)`: from `chunks` $(n_c, C)$ return the key positions of
# every chunk's window, $(n_c, (n_\text{before} + 1) C)$. (`np.roll` along the chunk axis is one
# way.)


# %%
def look_back(chunks, n_before=1):
    """(n_c, (n_before + 1) * C) key positions of each chunk's window: earlier chunks, then own."""
    # BEGIN SOLUTION
    return np.concatenate([np.roll(chunks, d, axis=0) for d in range(n_before, -1, -1)], axis=1)
    # END SOLUTION


# %%
fresh = np.random.default_rng()  # new inputs at every run: an answer cannot be written in
for n_chunks, chunk_len, n_before in ((4, 3, 1), (5, 2, 2), (6, 4, 1)):
    demo = fresh.permutation(n_chunks * chunk_len).reshape(n_chunks, chunk_len)
    with grading.own_work(f"Exercise 3.2 ({n_chunks} chunks of {chunk_len})"):
        got = look_back(demo, n_before)
    expected = np.stack([  # chunk i's window: chunks i - n_before, ..., i - 1, i (mod n_c)
        np.concatenate([demo[(i - d) % n_chunks] for d in range(n_before, -1, -1)])
        for i in range(n_chunks)
    ])  # fmt: skip
    grading.check_equal(
        f"Exercise 3.2: {n_chunks} chunks of {chunk_len}, {n_before} back", got, expected
    )

# %% [markdown]
# ### Exercise 3.3: the three masks
#
# Implement `mask_window(logits, q_pos, k_pos, q_bucket, k_bucket, causal)` for one chunk:
# `logits` is $(C, W)$, `q_pos` $(C,)$ and `k_pos` $(W,)$ are *original* positions, `q_bucket`
# and `k_bucket` their buckets. Return a new array in which
#
# 1. keys of another bucket get `NEG_MASK` ($-10^9$);
# 2. with `causal`, keys at a later original position get `NEG_MASK`;
# 3. the query's own position gets `NEG_SELF` ($-10^5$), whatever 1 and 2 said.


# %%
def mask_window(logits, q_pos, k_pos, q_bucket, k_bucket, causal=False):
    """(C, W) logits with other-bucket, causal and self masks applied (a new array)."""
    # BEGIN SOLUTION
    out = np.where(q_bucket[:, None] != k_bucket[None, :], NEG_MASK, logits)
    if causal:
        out = np.where(k_pos[None, :] > q_pos[:, None], NEG_MASK, out)
    return np.where(q_pos[:, None] == k_pos[None, :], NEG_SELF, out)
    # END SOLUTION


# %%
queries = np.array([13, 2, 20, 7])  # four query positions of one chunk, in sorted order
window = np.array([5, 0, 16, 9, 13, 2, 20, 7])  # its window: the chunk before, then its own
raw = rng.standard_normal((C, 2 * C))
for causal in (False, True):
    got = mask_window(raw, queries, window, buckets[queries], buckets[window], causal)
    # where query and key share a bucket, the masks are the library's causal and self masks
    library, _ = mask_logits(raw.copy(), queries, window, causal=causal, self_mask=True)
    same = buckets[queries][:, None] == buckets[window][None, :]
    is_self = queries[:, None] == window[None, :]
    expected = np.where(same | is_self, library, NEG_MASK)
    grading.check_close(f"Exercise 3.3: masked logits, causal={causal}", got, expected, rtol=0)

# %% [markdown]
# ### Question 3.1
#
# Why must the causal mask compare *original* positions rather than sorted slots? And why, within
# one bucket, is the causal mask still a triangle after sorting?
#
# <!-- BEGIN ANSWER -->
# After sorting, a slot's left neighbour may be any earlier or later position of the sequence:
# slots are ordered by bucket first. "Key before query in the sorted order" therefore says nothing
# about time; only the original positions do. Within one bucket, the sort orders by position (it is
# stable, or its key is bucket * L + position), so the bucket's positions increase from slot to
# slot, and "earlier slot" does mean "earlier position": the mask is a triangle there.
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 3.4: one round of LSH attention
#
# Put it together. Implement `lsh_attention_one_round(qk, v, rotations, chunk_len, causal)` for
# one head, `qk` $(L, D_h)$, `v` $(L, D_v)$, `rotations` $(D_h, 1, K/2)$:
#
# 1. hash (`lsh.hash_vectors`), sort and chunk;
# 2. keys are the unit-length queries, $k_j = q_j / |q_j|$; each chunk's logits are
#    $q_i \cdot k_j$ over its window (own chunk and one back), **without** a $1/\sqrt{D_h}$;
# 3. mask, softmax (max-subtracted), multiply by the window's values;
# 4. write each query's output back to its original position.
#
# You may use your functions from 3.1-3.3. The check compares with `lsh_attention_forward`.


# %%
def lsh_attention_one_round(qk, v, rotations, chunk_len, causal=False):
    """(L, Dv) output of one round of shared-QK LSH attention for one head."""
    # BEGIN SOLUTION
    buckets = lsh.hash_vectors(qk[None, None], rotations)[0, 0, 0]  # (L,)
    _, chunks = sort_and_chunk(buckets, chunk_len)
    windows = look_back(chunks, 1)  # (n_c, 2C)
    keys = qk / np.linalg.norm(qk, axis=-1, keepdims=True)
    out = np.zeros((qk.shape[0], v.shape[-1]))
    for queries, window in zip(chunks, windows):
        logits = qk[queries] @ keys[window].T  # (C, 2C)
        logits = mask_window(logits, queries, window, buckets[queries], buckets[window], causal)
        weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
        weights /= weights.sum(axis=-1, keepdims=True)
        out[queries] = weights @ v[window]
    return out
    # END SOLUTION


# %%
fresh = np.random.default_rng()
cases = {  # (L, Dh) shared queries/keys of one head
    "spread out": 2.0 * fresh.standard_normal((L, DH)),
    # all about one direction: one bucket holds most positions, so chunk 0's window (the last
    # chunk, then its own) holds keys of the query's bucket at *later* positions, which the
    # causal mask must hide although they come first in the window
    "clustered": 4.0 + 0.3 * fresh.standard_normal((L, DH)),
}
for case, qk1 in cases.items():
    v1 = fresh.standard_normal((L, 5))
    for causal in (False, True):
        with grading.own_work(f"Exercise 3.4 ({case})", allowed=(lsh.hash_vectors,)):
            mine = lsh_attention_one_round(qk1, v1, rotations, C, causal=causal)
        ref, _ = lsh_attention_forward(
            qk1[None, None], v1[None, None], chunk_len=C, rotations=rotations, causal=causal
        )
        grading.check_close(
            f"Exercise 3.4: LSH attention, {case} inputs, causal={causal}", mine, ref[0, 0],
            rtol=1e-10,
        )  # fmt: skip

# %% [markdown]
# ### Question 3.2
#
# In your implementation a query can be left with no key of its bucket in its window. When does
# that happen without a causal mask, what does the query then output, and why is it not a NaN?
# What would `n_chunks_after=1` change?
#
# <!-- BEGIN ANSWER -->
# It happens when the query is the first of its bucket in sorted order and sits in its chunk after
# every other member of the window that shares its bucket, typically at the end of a chunk whose
# bucket continues in the next chunk: its bucket-mates are after it, and the window only looks
# back. All other logits are then $-10^9$ and its own is $-10^5$, so after max-subtraction its own
# key has weight $e^0 = 1$ and every other $e^{-(10^9 - 10^5)} = 0$: it outputs its own value. No
# row is ever fully masked, so the softmax never divides 0 by 0. Looking one chunk ahead adds the
# next chunk to the window, so the query sees its later bucket-mates (notebook 03 shows it for
# tokens 0 and 5), at the cost of $3C$ instead of $2C$ keys per query; a causal model does not
# need it, since later keys are masked anyway.
# <!-- END ANSWER -->

# %% [markdown]
# ### Question 3.3
#
# By the Cauchy-Schwarz inequality, what would attention do without the self mask under
# shared-QK, and why is that not a problem with separate queries and keys?
#
# <!-- BEGIN ANSWER -->
# With $k_j = q_j/|q_j|$, $q_i \cdot k_j = |q_i| \cos\theta_{ij} \le |q_i| = q_i \cdot k_i$: every
# query's own key has the largest logit, so attention would lean towards copying the token's own
# value, and more so the longer $q_i$ is. With separate projections $q_i = x_i W_Q$ and
# $k_i = x_i W_K$ there is no such inequality: the model learns whether a token should attend to
# itself, like to any other key.
# <!-- END ANSWER -->
