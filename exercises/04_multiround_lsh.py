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
# # Exercises 04: multi-round LSH attention and its backward pass
#
# Exercises for [notebook 04](../notebooks/04_multiround_lsh.ipynb). You will combine hash rounds
# by their log-sum-exps, count how often each key is attended (the $N_{ij}$ of the paper's
# duplicate correction) and check the union identity with it, then write the backward pass of
# LSH attention: first through the unit-norm keys, then through the whole (union) softmax,
# checked against finite differences and against `lsh_attention_backward`. One head, float64.

# %%
import numpy as np

from minireformer import lsh
from minireformer.attention import NEG_SELF
from minireformer.lsh_attention import Semantics, lsh_attention_backward, lsh_attention_forward
from minireformer.teaching import grading

rng = np.random.default_rng(0)
L, DH, DV, K, C, R = 32, 6, 5, 8, 4, 4
qk = 2.0 * rng.standard_normal((L, DH))
v = rng.standard_normal((L, DV))
rotations = lsh.random_rotations(rng, DH, n_hashes=R, n_buckets=K)  # (Dh, R, K/2)


DUPLICATES_KEPT = Semantics(attend_across_buckets=False, allow_duplicate_attention=True)


def lsh_one_head(qk, v, rotations, **kwargs):
    """One head's LSH attention (chunk length C): (out (L, Dv), cache)."""
    out, cache = lsh_attention_forward(
        qk[None, None], v[None, None], chunk_len=C, rotations=rotations, **kwargs
    )
    return out[0, 0], cache


# %% [markdown]
# ### Exercise 4.1: combining rounds
#
# Each round $r$ gives query $i$ an output $o_i^{(r)}$ and the log-sum-exp of its logits
# $\ell_i^{(r)}$. Implement `combine_rounds(outs, lses)` with `outs` $(R, L, D_v)$ and `lses`
# $(R, L)$, returning the combined output $(L, D_v)$ and log-sum-exp $(L,)$:
#
# $$ \text{out}_i = \sum_r \frac{e^{\ell_i^{(r)}}}{\sum_{r'} e^{\ell_i^{(r')}}}\, o_i^{(r)},
#    \qquad \ell_i = \log \sum_r e^{\ell_i^{(r)}} . $$
#
# Subtract the maximum over rounds before exponentiating (a lonely query's $\ell$ is about
# $-10^5$). The check runs each round alone and compares your mix with the library's four rounds
# together, without the duplicate correction (`allow_duplicate_attention=True` in the
# `Semantics` pair), which is the
# only thing that couples the rounds.


# %%
def combine_rounds(outs, lses):
    """(out (L, Dv), lse (L,)) from per-round outputs (R, L, Dv) and log-sum-exps (R, L)."""
    # BEGIN SOLUTION
    top = lses.max(axis=0)  # (L,)
    w = np.exp(lses - top)  # (R, L)
    total = w.sum(axis=0)
    return np.sum((w / total)[..., None] * outs, axis=0), top + np.log(total)
    # END SOLUTION


# %%
singles = [
    lsh_one_head(qk, v, rotations[:, r : r + 1], semantics=DUPLICATES_KEPT) for r in range(R)
]
outs = np.stack([o for o, _ in singles])  # (R, L, Dv)
lses = np.stack([c.lse[0, 0] for _, c in singles])  # (R, L)
together, cache_together = lsh_one_head(qk, v, rotations, n_hashes=R, semantics=DUPLICATES_KEPT)
mixed, mixed_lse = combine_rounds(outs, lses)
grading.check_close("Exercise 4.1: combined output", mixed, together, rtol=1e-10)
grading.check_close("Exercise 4.1: combined lse", mixed_lse, cache_together.lse[0, 0], rtol=1e-10)

# %% [markdown]
# ### Question 4.1
#
# Show that the combination is one softmax over every (round, key) slot the query saw, and say why
# a round whose log-sum-exp is larger deserves more weight.
#
# <!-- BEGIN ANSWER -->
# Round $r$'s output is $o_i^{(r)} = \sum_j e^{s_{ij} - \ell_i^{(r)}} v_j$ over its keys. Its
# weight is $e^{\ell_i^{(r)}} / Z$ with $Z = \sum_{r'} e^{\ell_i^{(r')}}$, so
# $w_i^{(r)} o_i^{(r)} = \sum_j e^{s_{ij}} v_j / Z$ and the sum over rounds is
# $\sum_{r, j} e^{s_{ij}} v_j / \sum_{r, j} e^{s_{ij}}$: a softmax over all slots together. The
# log-sum-exp measures how much unnormalised weight a round found: a round that met the keys with
# large logits holds more of the total mass and should contribute more, exactly as it would in a
# single softmax over those keys.
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 4.2: counting duplicates
#
# With $R$ rounds a key can be attended by a query several times. Implement
# `attended_counts(buckets, chunk_len)`: from the $(R, L)$ buckets return the $(L, L)$ integer
# matrix $N$, where $N_{ij}$ is the number of rounds in which key $j$ is in query $i$'s window
# (its own chunk or the one before, wrapping around) **and** in its bucket. Redo the library's
# sort of all rounds together:
#
# 1. offset round $r$'s buckets by $rK$ so that rounds never mix, and sort all $RL$ (round,
#    position) copies by (bucket + offset, position);
# 2. the slot of each copy gives its chunk, slot $// C$; there are $n_c = RL / C$ chunks;
# 3. in round $r$, $j$ is in $i$'s window when $(\text{chunk}_r(i) - \text{chunk}_r(j)) \bmod n_c
#    \in \{0, 1\}$.
#
# $N_{ii} = R$ (a query is always in its own window). Two identities check your $N$: with the
# paper's semantics, LSH attention is a softmax over the keys with $N_{ij} > 0$; with duplicates
# allowed (`allow_duplicate_attention=True`), key $j$ counts $N_{ij}$ times, so it is a softmax
# of $s_{ij} + \log N_{ij}$.


# %%
def attended_counts(buckets, chunk_len):
    """(L, L) int: in how many rounds key j is in query i's window and bucket."""
    # BEGIN SOLUTION
    n_rounds, length = buckets.shape
    n_buckets = int(buckets.max()) + 1
    codes = buckets + n_buckets * np.arange(n_rounds)[:, None]  # (R, L)
    sort_key = (codes * length + np.arange(length)).reshape(-1)  # (R*L,)
    slot = np.argsort(np.argsort(sort_key))  # copy -> sorted slot
    chunk = (slot // chunk_len).reshape(n_rounds, length)  # (R, L)
    n_chunks = n_rounds * length // chunk_len
    counts = np.zeros((length, length), dtype=int)
    for r in range(n_rounds):
        behind = (chunk[r][:, None] - chunk[r][None, :]) % n_chunks  # (L, L): query - key
        counts += (behind <= 1) & (buckets[r][:, None] == buckets[r][None, :])
    return counts
    # END SOLUTION


# %%
_, cache_paper = lsh_one_head(qk, v, rotations, n_hashes=R)
counts = attended_counts(cache_paper.buckets[0, 0], C)
keys = qk / np.linalg.norm(qk, axis=-1, keepdims=True)
s = qk @ keys.T  # (L, L) logits


def dense_softmax(logits, v):  # rows max-subtracted; own position NEG_SELF
    logits = np.where(np.eye(len(logits), dtype=bool), NEG_SELF, logits)
    w = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (w / w.sum(axis=-1, keepdims=True)) @ v


grading.check_true("Exercise 4.2: N_ii = R", np.all(np.diag(counts) == R), "diagonal is not R")
paper = dense_softmax(np.where(counts > 0, s, -np.inf), v)
paper_lib, _ = lsh_one_head(qk, v, rotations, n_hashes=R)
grading.check_close("Exercise 4.2: union softmax = paper semantics", paper, paper_lib, rtol=1e-10)
with np.errstate(divide="ignore"):
    duplicates = dense_softmax(s + np.log(counts), v)  # log 0 = -inf: never attended
grading.check_close("Exercise 4.2: duplicates counted N_ij times", duplicates, together, rtol=1e-10)

# %% [markdown]
# ### Question 4.2
#
# The paper subtracts $\log N_{ij}$ from each of the $N_{ij}$ copies of logit $s_{ij}$. Why does
# that give exactly the softmax over the union, and what does the released code
# (`allow_duplicate_attention=True`) compute instead?
#
# <!-- BEGIN ANSWER -->
# By Question 4.1 the rounds together are one softmax over all copies. Key $j$ has $N_{ij}$
# copies, each with weight $e^{s_{ij} - \log N_{ij}} = e^{s_{ij}} / N_{ij}$ before normalising;
# together they contribute $e^{s_{ij}}$, as a single copy would. So every key of the union counts
# once, and the result is the dense softmax over $P_i = \{j: N_{ij} > 0\}$. Without the
# correction key $j$ contributes $N_{ij} e^{s_{ij}}$: a softmax of $s_{ij} + \log N_{ij}$, which
# favours keys found in many rounds (often, but not always, the ones closest to the query).
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 4.3: backward through unit-norm keys
#
# Under shared-QK the key is $k = x / |x|$. Implement `unit_norm_backward(dk, x)`: given
# $\bar k = \partial\mathcal L / \partial k$ for each row of `x` $(L, D_h)$, return
# $\partial\mathcal L / \partial x$:
#
# $$ \bar x = \frac{\bar k - k\,(k \cdot \bar k)}{|x|}, $$
#
# row by row: the radial part of $\bar k$ is removed (moving $x$ along itself does not change $k$).


# %%
def unit_norm_backward(dk, x):
    """dL/dx (L, Dh) from dL/dk (L, Dh), where k = x / |x| row by row."""
    # BEGIN SOLUTION
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    k = x / norm
    return (dk - k * np.sum(k * dk, axis=-1, keepdims=True)) / norm
    # END SOLUTION


# %%
dk = rng.standard_normal(qk.shape)
grading.check_gradient(
    "Exercise 4.3: unit-norm backward",
    lambda x: float(np.sum(x / np.linalg.norm(x, axis=-1, keepdims=True) * dk)),
    unit_norm_backward(dk, qk),
    qk,
)

# %% [markdown]
# ### Exercise 4.4: the backward pass of LSH attention
#
# With the paper's semantics and fixed buckets, LSH attention *is* dense shared-QK attention over
# the allowed keys, so its backward is that of a masked softmax attention. Implement
# `union_attention_backward(dout, qk, v, allowed)`, where `allowed` $(L, L)$ marks the keys each
# query attends to (its own position counts as allowed and gets the logit `NEG_SELF`, as in the
# forward `union_attention` below). Return $(\overline{qk}, \bar v)$:
#
# 1. recompute $k$, the logits $s = qk\,k^\top$ (masked), $P$ and out $= P v$;
# 2. $\bar v = P^\top \bar O$; $\bar P = \bar O v^\top$;
#    $\bar s_{ij} = P_{ij}\,(\bar P_{ij} - \bar O_i \cdot \text{out}_i)$;
# 3. $\bar s$ must be zero where the logit was a constant (masked keys, and the own position);
# 4. $qk$ is both the query and, through $k = qk/|qk|$, the key:
#    $\overline{qk} = \bar s\, k + \text{unit\_norm\_backward}(\bar s^\top qk,\ qk)$.
#
# Check 1: finite differences. Check 2: `lsh_attention_backward`, with `allowed` read off the
# library's own forward (the keys that got a positive weight).


# %%
def union_attention(qk, v, allowed):
    """Softmax attention over the allowed keys, shared-QK, own position NEG_SELF: (L, Dv)."""
    keys = qk / np.linalg.norm(qk, axis=-1, keepdims=True)
    logits = np.where(allowed, qk @ keys.T, -np.inf)
    logits = np.where(np.eye(len(qk), dtype=bool), NEG_SELF, logits)
    w = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (w / w.sum(axis=-1, keepdims=True)) @ v


def union_attention_backward(dout, qk, v, allowed):
    """(dqk (L, Dh), dv (L, Dv)) of union_attention at (qk, v)."""
    # BEGIN SOLUTION
    keys = qk / np.linalg.norm(qk, axis=-1, keepdims=True)
    varies = allowed & ~np.eye(len(qk), dtype=bool)  # logits that depend on qk
    logits = np.where(varies, qk @ keys.T, -np.inf)
    logits = np.where(np.eye(len(qk), dtype=bool), NEG_SELF, logits)
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    out = p @ v
    dv = p.T @ dout
    ds = p * (dout @ v.T - np.sum(dout * out, axis=-1, keepdims=True))
    ds = np.where(varies, ds, 0.0)  # constants pass no gradient
    return ds @ keys + unit_norm_backward(ds.T @ qk, qk), dv
    # END SOLUTION


# %%
eye_values = np.eye(L)  # values = identity: the output is the weight matrix itself
weights_lib, _ = lsh_one_head(qk, eye_values, rotations, n_hashes=R)
allowed = (weights_lib > 0) | np.eye(L, dtype=bool)
out_paper, cache_paper = lsh_one_head(qk, v, rotations, n_hashes=R)
assert np.allclose(union_attention(qk, v, allowed), out_paper, rtol=0, atol=1e-10)  # the set-up
dout = rng.standard_normal((L, DV))
dqk, dv = union_attention_backward(dout, qk, v, allowed)
grading.check_gradient(
    "Exercise 4.4: dqk by finite differences",
    lambda x: float(np.sum(union_attention(x, v, allowed) * dout)),
    dqk,
    qk,
)
grading.check_gradient(
    "Exercise 4.4: dv by finite differences",
    lambda x: float(np.sum(union_attention(qk, x, allowed) * dout)),
    dv,
    v,
)
dqk_lib, dv_lib = lsh_attention_backward(dout[None, None], cache_paper)
grading.check_close(
    "Exercise 4.4: dqk against lsh_attention_backward", dqk, dqk_lib[0, 0], rtol=1e-9
)
grading.check_close("Exercise 4.4: dv against lsh_attention_backward", dv, dv_lib[0, 0], rtol=1e-9)

# %% [markdown]
# ### Question 4.3
#
# The buckets are computed from $qk$, yet your backward (and the library's) gives them no
# gradient, and the finite-difference check holds the rotations fixed. Why is that correct, and
# what would go wrong if the backward pass hashed again instead of replaying the cached buckets?
#
# <!-- BEGIN ANSWER -->
# The bucket is an argmax: piecewise constant in $qk$, it changes only when a vector crosses a
# boundary between buckets, so its derivative is zero almost everywhere (and undefined on the
# boundaries, a set of measure zero). The attention is differentiable in $qk$ for fixed buckets,
# and that is the function whose gradient we need. Hashing again in the backward pass gives the
# same buckets only if $qk$ is bit-for-bit the same: a recomputed $qk$ (a reversible layer rebuilds
# its inputs, with round-off) can put a vector on the other side of a boundary, and the backward
# would then differentiate a different attention pattern from the one the forward used. That is why
# the cache keeps the sort and the buckets, and the forward accepts given `buckets` for replays.
# <!-- END ANSWER -->

# %% [markdown]
# ### Question 4.4
#
# Notebook 04 found the released semantics closer to full attention than the paper's on random
# data and with one round, and further with eight rounds on clustered data. Explain both.
#
# <!-- BEGIN ANSWER -->
# The released code attends to every key of its windows (about twice as many distinct keys as the
# paper's same-bucket keys there) and counts repeated keys several times. On random data, or with
# one round, the buckets carry little signal and full attention's weight is spread, so covering
# more keys matters most: the released code keeps more of full attention's weight. On clustered
# data with many rounds, the union of same-bucket keys already holds most of the weight, and what
# remains is the weighting: the paper's union softmax weights each key once, as full attention
# does, while the released code over-weights keys found in many rounds.
# <!-- END ANSWER -->
