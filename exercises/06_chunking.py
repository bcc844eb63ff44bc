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
# # Exercises 06: chunking
#
# Exercises for [notebook 06](../notebooks/06_chunking.ipynb). You will compute a feed-forward
# layer and the output loss a chunk of $S$ positions at a time, forward and backward, and check
# them against the unchunked layers of `minireformer.layers` and against finite differences, in
# float64. Shapes: B batch, L length, D model width, F the feed-forward width $d_{ff}$,
# V vocabulary, S positions per chunk.

# %%
import numpy as np

from minireformer import chunking, layers, loss
from minireformer.measuring import memory
from minireformer.teaching import grading

rng = np.random.default_rng(0)
B, L, D, F, S = 2, 10, 4, 12, 4  # L is not a multiple of S: the last chunk is shorter
p = layers.init_feedforward(rng, D, F, dtype="float64")
x = rng.standard_normal((B, L, D))
dout = rng.standard_normal((B, L, D))

# %% [markdown]
# ### Exercise 6.1: the chunked feed-forward, forward
#
# Implement `chunked_ff_forward(x, p, S)`: cut the positions (axis 1 of `x`, shape $(B, L, D)$)
# into chunks $[0, S), [S, 2S), \dots$ (the last one may be shorter), apply
# `layers.feedforward_forward(x_chunk, p)` to each (it returns `(out, cache)`; keep only `out`) and
# assemble the $(B, L, D)$ output, as paper equation 10 does:
# $Y = [\mathrm{FF}(X^{(1)}); \dots; \mathrm{FF}(X^{(\lceil L/S \rceil)})]$.


# %%
def chunked_ff_forward(x, p, S):
    """FeedForward(x) computed S positions at a time: (B, L, D) -> (B, L, D)."""
    # BEGIN SOLUTION
    out = np.empty_like(x)
    for start in range(0, x.shape[1], S):
        out[:, start : start + S] = layers.feedforward_forward(x[:, start : start + S], p)[0]
    return out
    # END SOLUTION


# %%
fresh = np.random.default_rng()  # new inputs at every run
x1 = fresh.standard_normal((B, L, D))
with (
    grading.own_work("Exercise 6.1", allowed=(layers.feedforward_forward,)),
    grading.recording(layers, "feedforward_forward") as calls,
):
    got = chunked_ff_forward(x1, p, S)
grading.check_equal(
    f"Exercise 6.1: positions per feed-forward call (L = {L}, S = {S})",
    np.array([args[0].shape[1] for args, _ in calls]),
    np.array([min(S, L - start) for start in range(0, L, S)]),
)
grading.check_close(
    "Exercise 6.1: chunked feed-forward output", got, layers.feedforward_forward(x1, p)[0],
    rtol=1e-12,
)  # fmt: skip

# %% [markdown]
# ### Exercise 6.2: the chunked feed-forward, backward
#
# Implement `chunked_ff_backward(x, p, dout, S)` returning `(dx, dp)`: for each chunk, recompute
# the chunk's forward (`layers.feedforward_forward`, whose cache holds the chunk's $(B, S, F)$
# hidden layer), backpropagate the chunk of `dout` through it
# (`layers.feedforward_backward(dout_chunk, cache)` returns `(dx_chunk, dp_chunk)`), write
# `dx_chunk` into `dx`, and **add** `dp_chunk` into `dp` (a dict with keys `w1, b1, w2, b2`):
# a weight gradient is a sum over positions, $\bar W_1 = \sum_i x_i^\top \bar h_i$, so it is
# accumulated over chunks. Only one chunk's hidden layer exists at a time.


# %%
def chunked_ff_backward(x, p, dout, S):
    """Gradients of FeedForward at x for upstream dout (B, L, D): (dx (B, L, D), dp)."""
    # BEGIN SOLUTION
    dx = np.empty_like(x)
    dp = {k: np.zeros_like(v) for k, v in p.items()}
    for start in range(0, x.shape[1], S):
        s = slice(start, start + S)
        _, cache = layers.feedforward_forward(x[:, s], p)
        dx[:, s], dp_chunk = layers.feedforward_backward(dout[:, s], cache)
        for k in dp:
            dp[k] += dp_chunk[k]
    return dx, dp
    # END SOLUTION


# %%
allowed = (layers.feedforward_forward, layers.feedforward_backward)
with (
    grading.own_work("Exercise 6.2", allowed=allowed),
    grading.recording(layers, "feedforward_forward") as calls,
):
    dx, dp = chunked_ff_backward(x, p, dout, S)
grading.check_equal(
    f"Exercise 6.2: positions per recomputed feed-forward (L = {L}, S = {S})",
    np.array([args[0].shape[1] for args, _ in calls]),
    np.array([min(S, L - start) for start in range(0, L, S)]),
)
grading.check_gradient(
    "Exercise 6.2: dx against finite differences",
    lambda x_: float(np.sum(dout * layers.feedforward_forward(x_, p)[0])),
    dx,
    x,
)
_, lib_dp = chunking.chunked_feedforward_backward(
    dout, chunking.chunked_feedforward_forward(x, p, chunk_len=S)[1]
)
for k in ("w1", "b1", "w2", "b2"):
    grading.check_close(f"Exercise 6.2: d{k} against the library", dp[k], lib_dp[k], rtol=1e-12)

# %% [markdown]
# ### Question 6.1
#
# Why can the feed-forward be chunked along positions with no change to its result, while
# attention cannot be chunked the same way?
#
# <!-- BEGIN ANSWER -->
# The feed-forward acts on each position on its own: row $i$ of its output depends only on row $i$
# of its input, so any partition of the positions gives the same rows. Attention mixes positions:
# the output at $i$ is a weighted sum over all keys $j$, with weights normalised over all of them,
# so cutting the keys into chunks changes the result unless something (LSH's buckets, a local
# window) decides which keys may be left out, and each chunk's softmax is combined correctly.
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 6.3: the chunked cross-entropy
#
# The output layer maps $h$ $(B, L, D)$ to logits $z = h W + b$ $(B, L, V)$, and the loss is the
# mean over all $n = B L$ targets $t$ of $\mathrm{logsumexp}(z_i) - z_{i, t_i}$. Implement
# `chunked_loss(h, w, b, targets, S)` returning `(loss, dh, dw, db)` with, for each chunk of $S$
# positions only:
#
# 1. the chunk's logits $z$ $(B, S, V)$ and its contribution
#    $\sum_i (\mathrm{logsumexp}(z_i) - z_{i,t_i}) / n$ to the loss (subtract each row's maximum
#    before exponentiating);
# 2. $\bar z = (\mathrm{softmax}(z) - \mathrm{onehot}(t)) / n$, then
#    $\bar h_{chunk} = \bar z W^\top$, $\bar W \mathrel{+}= \sum_{b} h_{chunk}^\top \bar z$ and
#    $\bar b \mathrel{+}= \sum \bar z$ over batch and positions.
#
# Divide by the total $n$, not by the chunk's own count, so that the chunks add up to the mean.

# %%
V = 7
w = rng.standard_normal((D, V))
b = rng.standard_normal(V)
h = rng.standard_normal((B, L, D))
targets = rng.integers(0, V, size=(B, L))


def chunked_loss(h, w, b, targets, S):
    """Mean cross-entropy of softmax(h w + b) and its gradients, S positions at a time."""
    # BEGIN SOLUTION
    n = targets.size
    loss, dh, dw, db = 0.0, np.empty_like(h), np.zeros_like(w), np.zeros_like(b)
    for start in range(0, h.shape[1], S):
        s = slice(start, start + S)
        z = h[:, s] @ w + b  # (B, S, V)
        z_max = z.max(axis=-1, keepdims=True)
        lse = z_max[..., 0] + np.log(np.exp(z - z_max).sum(axis=-1))  # (B, S)
        t = targets[:, s]
        loss += float(np.sum(lse - np.take_along_axis(z, t[..., None], axis=-1)[..., 0])) / n
        dz = np.exp(z - lse[..., None])  # softmax
        dz[np.arange(t.shape[0])[:, None], np.arange(t.shape[1])[None, :], t] -= 1.0
        dz /= n
        dh[:, s] = dz @ w.T
        dw += np.einsum("bsd,bsv->dv", h[:, s], dz)
        db += dz.sum(axis=(0, 1))
    return loss, dh, dw, db
    # END SOLUTION


# %%
with grading.own_work("Exercise 6.3"):
    value, dh, dw, db = chunked_loss(h, w, b, targets, S)
logits, lin_cache = layers.linear_forward(h, w, b)
ref_loss, ce_cache = loss.softmax_cross_entropy_forward(logits, targets)
ref_dh, ref_dw, ref_db = layers.linear_backward(
    loss.softmax_cross_entropy_backward(1.0, ce_cache), lin_cache
)
grading.check_close("Exercise 6.3: loss", value, float(ref_loss), rtol=1e-12)
grading.check_close("Exercise 6.3: dw", dw, ref_dw, rtol=1e-12)
grading.check_close("Exercise 6.3: db", db, ref_db, rtol=1e-12)
grading.check_gradient(
    "Exercise 6.3: dh against finite differences",
    lambda h_: float(loss.softmax_cross_entropy_forward(h_ @ w + b, targets)[0]),
    dh,
    h,
)
# memory: at L = 8,192 and V = 512 the whole (B, L, V) logits would take 64 MiB; in chunks of
# S = 64 positions, one chunk's take 0.5 MiB
big_h = fresh.standard_normal((2, 8192, D))
big_w, big_b = fresh.standard_normal((D, 512)), fresh.standard_normal(512)
big_targets = fresh.integers(0, 512, size=(2, 8192))
_, peak = memory.measure_peak(chunked_loss, big_h, big_w, big_b, big_targets, 64)
grading.check_true(
    "Exercise 6.3: one chunk's logits at a time (B = 2, L = 8,192, V = 512, S = 64)",
    peak < 16 * 2**20,
    f"the function's peak was {peak / 2**20:.1f} MiB, where the (B, L, V) logits alone take "
    f"64 MiB and one chunk's 0.5 MiB: compute the logits S positions at a time",
)

# %% [markdown]
# ### Question 6.2
#
# In notebook 06 the chunked loss's peak memory stops falling below a few MiB however small the
# chunks. What sets that floor, and could a smaller chunk length lower it?
#
# <!-- BEGIN ANSWER -->
# What must exist whole whatever the chunk length: the $(D, V)$ gradient of $W_{out}$ (its running
# sum, and each chunk's contribution before it is added), the $(B, L, D)$ gradient $\bar h$, and
# the inputs. None of them depends on $S$, so smaller chunks cannot lower the floor; they only add
# iterations of a Python loop of smaller matrix products, which is slower.
# <!-- END ANSWER -->

# %% [markdown]
# ### Question 6.3
#
# Chunking saves memory without changing the result. What does it cost, and at which chunk
# length would you stop making chunks smaller?
#
# <!-- BEGIN ANSWER -->
# Time: $L/S$ iterations of smaller matrix products, which use the hardware less efficiently than
# one large product, plus (for the loss and in a reversible block) a recomputation of each chunk's
# forward pass in the backward. Shrink $S$ only until the chunk's $(S, d_{ff})$ or $(S, V)$ arrays
# are small beside what exists anyway (the $(L, D)$ activations and the weight gradients): beyond
# that the peak hardly moves and each step only gets slower.
# <!-- END ANSWER -->
