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
# # 01 The cost of attention
#
# Reformer paper (Kitaev, Kaiser, Levskaya, ICLR 2020, [arXiv
# 2001.04451](https://arxiv.org/abs/2001.04451)),
# section 1, the start of section 2, and Table 3.
#
# **Learning objectives.** After this notebook you can
#
# - say why a softmax is dominated by its largest scores, and check how far that holds in a trained
#   model;
# - redo the paper's memory arithmetic for one large layer and read its Table 3 (including the
#   caption's choice of $c$);
# - measure the time and peak memory of full attention against $L$ and recognise an $L^2$ law on
#   log-log axes;
# - explain why a standard Transformer's training memory grows linearly with depth.
#
# **Prerequisites.** Scaled dot-product attention and backpropagation through a linear layer;
# NumPy broadcasting. No earlier notebook.
#
# **Code used.** `minireformer.attention` (full attention, forward and backward),
# `minireformer.measuring.memory` (peak-memory measurement), `minireformer.measuring.table3` (the
# paper's arithmetic), `minireformer.transformer` (the baseline Transformer). Notation: [the
# README's table](../README.md#notation) maps the paper's symbols to this code's letters ($L$
# length, $D_h$ head width, ...).
#
# **Next:** [02 Hashing](02_hashing.ipynb). Exercises: `exercises/01_attention_cost.py`.
#
# A Transformer reads a sequence by letting every position look at every other position. That
# all-pairs look is what makes it powerful, and it is also what makes it expensive: for a sequence
# of $L$ tokens, each layer builds an $L \times L$ table of scores, and training keeps every
# layer's intermediate results until the backward pass needs them. This notebook measures both
# costs on your machine and sets up the three questions the rest of the series answers:
#
# 1. Attention weights are dominated by a few large scores. Could each query look only at the keys
#    that matter? (LSH attention, notebooks 02, 03 and 04.)
# 2. Training memory grows with the number of layers. Could we avoid storing activations?
#    (Reversible layers, notebook 05.)
# 3. The feed-forward layer's hidden width $d_{ff}$ and the vocabulary make some activations much
#    wider than the model. Could we process them a slice at a time? (Chunking, notebook 06.)
#
# Everything below uses the library's own functions; numbers come from `minireformer.measuring`.
# Each claim is followed by an `assert` that checks it; what is only printed (wall-clock times)
# is marked as an observation. Memory is in binary units throughout: 1 MiB = $2^{20}$ bytes,
# 1 GiB = $2^{30}$ bytes.

# %%
import os

# One BLAS thread: on a small shared machine, multi-threaded matrix products stall unpredictably
# while waiting for a busy core, which blurs the timing curves below. (Must precede numpy.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import time

import matplotlib.pyplot as plt
import numpy as np

from minireformer import attention, backend, transformer
from minireformer.measuring import memory, table3
from minireformer.teaching import attention_maps, plotting
from minireformer.teaching.progress import progress
from minireformer.training import checkpoint, data, experiments

print(backend.describe())

# %% [markdown]
# ## 1. Softmax listens to the loudest scores
#
# Scaled dot-product attention (Vaswani et al. 2017; paper equation 1) turns a query $q_i$ and the
# keys $k_j$ into weights, and the output is the weighted average of the values:
#
# $$
# \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\Big(\frac{Q K^\top}{\sqrt{d_k}}\Big) V,
# \qquad
# \alpha_{ij} = \frac{\exp(s_{ij})}{\sum_{j'} \exp(s_{ij'})},\quad
# s_{ij} = \frac{q_i \cdot k_j}{\sqrt{d_k}}.
# $$
#
# Because of the exponential, a score that is larger by 2 gets $e^2 \approx 7.4$ times the
# weight, and one larger by 6 gets about 400 times. So when a few scores stand out, they take
# nearly all of the weight and the rest hardly matter.
#
# Here is a hand-made example (an illustration of the arithmetic, not evidence about real models:
# the scores are invented; section 1b below checks a trained model). In the sentence *"The animal
# didn't cross the street because it was too tired ."* the word *it* should refer to *animal*.
# Suppose the query of *it* gives these scores against the twelve tokens (made up, as if they
# were already $q \cdot k / \sqrt{d_k}$):

# %%
words = "The animal didn't cross the street because it was too tired .".split()
scores = np.array([4, 10, 0.0001, 0.0005, 0.00025, 8, 0.0001, 3, 0.0005, 0.001, 0.00025, 3.5])
assert len(words) == len(scores) == 12

# softmax by hand, max-subtracted so that exp never overflows
weights = np.exp(scores - scores.max())
weights /= weights.sum()
for w, s, a in zip(words, scores, weights):
    print(f"{w:>8s}  score {s:8.5f}  weight {a:.4f}")

# %% [markdown]
# The same numbers must come out of the library's attention. The library computes self-attention,
# so we give it twelve queries, twelve keys and twelve values, and build them so that the query of
# *it* (position 7) has exactly these scaled dot products: with head width $d_k = 12$, the query
# $q_7 = \sqrt{12}\, e_0$ and keys $k_j = s_j e_0$ give $q_7 \cdot k_j / \sqrt{12} = s_j$.
# Taking the values to be the unit vectors ($v_j = e_j$) makes row 7 of the output the weight
# vector itself. (The other queries are zero: they attend uniformly, and we ignore them.)

# %%
d_k, it = 12, words.index("it")
q = np.zeros((1, 1, 12, d_k))  # (B, H, L, Dh)
q[0, 0, it, 0] = np.sqrt(d_k)
k = np.zeros((1, 1, 12, d_k))  # (B, H, L, Dh)
k[0, 0, :, 0] = scores
v = np.eye(12)[None, None]  # (B, H, L, Dh): value j is the unit vector e_j
out, _ = attention.attention_forward(q, k, v)
library_weights = out[0, 0, it]
print("library attention weights of 'it':", np.round(library_weights, 4))

# %%
animal, street = weights[words.index("animal")], weights[words.index("street")]
print(f"animal {animal:.3f}, street {street:.3f}, together {animal + street:.3f}")
assert np.allclose(library_weights, weights, atol=1e-12)
assert abs(animal - 0.88) < 0.01 and abs(street - 0.12) < 0.01
assert animal + street > 0.99  # the other ten tokens share less than 1% of the weight

# %%
fig, ax = plt.subplots(figsize=(8, 2.8))
ax.bar(range(12), weights, color=["C3" if w in ("animal", "street") else "C0" for w in words])
ax.set_xticks(range(12), words, rotation=30, ha="right")
ax.set_ylabel("attention weight of 'it'")
ax.set_title(f"Two of twelve scores take {100 * (animal + street):.1f}% of the softmax")
for i, a in enumerate(weights):
    ax.text(i, a + 0.01, f"{a:.2f}", ha="center", fontsize=8)
ax.set_ylim(0, 1)
plotting.save_figure(fig, "01_toy_attention_weights")
plt.show()

# %% [markdown]
# ### 1b. Does a trained model's attention look like this?
#
# The toy proves nothing: we chose the scores. The Reformer's bet is an empirical one, that in
# trained models most of a query's weight sits on a few keys. We can check it on a model this
# project trained: a small character model of Shakespeare's plays, two layers of ordinary full
# attention over 256 characters, shipped in `checkpoints/` (it is one of the four models of
# notebook 08's Figure 3; its shared queries and keys and its reversible layers, taught in
# notebooks 03 and 05, do not matter here: we only read its attention weights). For the
# queries that see at least 128 keys (positions 127 to 255 of four validation windows), how much
# of each query's weight do its 8 and its 32 largest weights hold? If the weight were spread
# evenly, the top 32 of $n$ keys would hold $32/n$, at most 25% here.

# %%
trained = checkpoint.load(experiments.CHECKPOINTS / "figure3_reversible_shared_qk.npz")
text = data.from_spec(experiments.TEXT_DATA)
context = trained.config.max_len  # 256
windows = np.asarray(text.valid_ids[: 4 * context]).reshape(4, context)
late = np.arange(context) >= 127  # queries that see at least 128 keys (causal)
uniform_32 = np.mean(32 / (np.arange(context)[late] + 1))
top_share = {}  # layer -> (share held by the top 8, by the top 32), averaged over queries
for layer in range(trained.config.n_layers):
    weights_l = attention_maps.attention_map(trained.params, windows, trained.config, layer=layer)
    ranked = -np.sort(-weights_l[:, :, late], axis=-1)  # (B, H, queries, L), largest first
    top_share[layer] = tuple(float(ranked[..., :k].sum(-1).mean()) for k in (8, 32))
    print(
        f"layer {layer}: top 8 keys hold {top_share[layer][0]:.2f}, top 32 hold "
        f"{top_share[layer][1]:.2f} of the weight (even spread: top 32 hold {uniform_32:.2f})"
    )

# %%
assert top_share[0][1] > 0.85 and top_share[0][1] > 3 * uniform_32  # layer 0: concentrated
assert 0.5 < top_share[1][1] < 0.65  # layer 1: a little over half, much more spread out
assert all(share[1] > 2 * uniform_32 for share in top_share.values())  # both beat an even spread

# %% [markdown]
# The premise holds in part. In the first layer 32 keys out of 128 or more carry about nine
# tenths of each query's weight; in the second they carry a little over half: still twice an even
# spread, but a query there reads broadly, and attending only to a few keys would change its
# output noticeably. How much the Reformer's approximation costs therefore depends on the layer
# and the data; notebook 04 measures the error directly, and notebook 08 trains a model with it.
#
# The lesson the paper draws (section 2, "Hashing attention"): if we could find, for each query,
# the handful of keys with the largest scores, we could skip the others with little change to
# the output. Finding them *without* computing all $L^2$ scores first is what locality-sensitive
# hashing is for (notebook 02).
#
# ## 2. The paper's memory arithmetic
#
# The paper opens with a back-of-the-envelope budget for one large Transformer layer trained on
# 64K-token sequences. The numbers are simple products, and `minireformer.measuring.table3`
# computes them.
# The paper counts in decimal gigabytes (1 GB = $10^9$ bytes); we convert to GiB.
#
# * **Parameters.** The largest reported layer has 0.5 billion parameters; at 4 bytes each that is
#   $2 \cdot 10^9$ bytes, the paper's "2GB", which is 1.86 GiB.
# * **Activations.** The input of one layer for batch 8, length $64\text{K} = 65{,}536$ and
#   $d_{model} = 1024$ holds $8 \times 65{,}536 \times 1024 = 2^{29} \approx 0.5$ billion
#   numbers: exactly 2 GiB in float32 (the paper's "another 2GB").
#
# One layer is therefore about 4 GiB, which fits on a single accelerator. The paper then points
# out that training keeps the activations of *every* layer until backpropagation has used them, so
# memory is multiplied by the depth, but it gives no total. A figure often quoted with it, 96
# layers and about 400 GB, is not the paper's: it is an extrapolation made in blog explanations
# of the Reformer (96 is GPT-3's depth), which we reproduce here as such: 96 layers of about 3.9
# GiB each is about 370 GiB (398 decimal GB).
#
# And that still ignores attention itself: the score matrix $QK^\top$ for one 64K-token sequence
# has $65{,}536^2 \approx 4.3$ billion entries, 16 GiB in float32, per head and per layer (the
# paper's "16GB" is exactly 16 GiB).

# %%
params_per_layer = 500_000_000
batch, length, d_model = 8, 64 * 1024, 1024

p_bytes = table3.param_bytes(params_per_layer)
a_bytes = table3.activation_bytes(batch, length, d_model)
total_96 = table3.per_layer_estimate_bytes(
    96, params_per_layer=params_per_layer, batch=batch, length=length, d_model=d_model
)
attn_bytes = table3.attention_matrix_bytes(length)

print(f"parameters, one layer   : {p_bytes / memory.GiB:6.2f} GiB (the paper's 2 GB)")
print(f"activations, one layer  : {a_bytes / memory.GiB:6.2f} GiB")
print(f"96 layers, both         : {total_96 / memory.GiB:6.0f} GiB (a blog's extrapolation)")
print(f"64K x 64K float32 scores: {attn_bytes / memory.GiB:6.0f} GiB")

# %%
assert p_bytes == 2 * table3.GB and abs(p_bytes / memory.GiB - 1.86) < 0.01
assert a_bytes == 2 * memory.GiB
assert 365 * memory.GiB < total_96 < 375 * memory.GiB  # = 398 decimal GB, the "about 400 GB"
assert attn_bytes == 16 * memory.GiB

# %% [markdown]
# The paper's Table 3 summarises where each of its tricks attacks this budget, counting the
# largest tensor a layer keeps (in numbers, $b$ batch, $l$ length, $n_h$ heads, $n_l$ layers,
# $n_r$ hash rounds, $c$ attended keys per query and round):
#
# | model | memory |
# |---|---|
# | Transformer | $\max(b\,l\,d_{ff},\ b\,n_h\,l^2)\, n_l$ |
# | Reversible Transformer | $\max(b\,l\,d_{ff},\ b\,n_h\,l^2)$ |
# | Chunked Reversible Transformer | $\max(b\,l\,d_{model},\ b\,n_h\,l^2)$ |
# | LSH Transformer | $\max(b\,l\,d_{ff},\ b\,n_h\,l\,n_r\,c)\, n_l$ |
# | Reformer | $\max(b\,l\,d_{model},\ b\,n_h\,l\,n_r\,c)$ |
#
# What is $c$? The table's caption sets $c = 128^2$, carried over from Table 1's attention term
# $(4l/n_c)^2$ with $n_c = l/32$ chunks. But in the attention this project implements (and the
# paper's section 2 describes), a query in a chunk of length $C$ scores the $2C$ keys of its own
# chunk and the one before, so we take $c = 2C$ (`table3.table3_memory`'s default; `c=128**2`
# gives the caption's value). Both are evaluated below for the paper's enwik8 setting
# ($d_{model} = 1024$, $d_{ff} = 4096$, 8 heads, batch 8, $l = 64\text{K}$) with 12 layers,
# 4 hash rounds and chunks of $C = 128$ (so $c = 256$).

# %%
setting = dict(batch=8, length=64 * 1024, d_model=1024, d_ff=4096, n_heads=8, n_layers=12)
rows = {
    arch: table3.table3_memory(arch, **setting, n_hashes=4, chunk_len=128)
    for arch in table3.TABLE3_ARCHS
}
literal = {
    arch: table3.table3_memory(arch, **setting, n_hashes=4, chunk_len=128, c=128**2)
    for arch in table3.TABLE3_ARCHS
}
print(f"{'':>20s}  {'c = 2C = 256':>14s}  {'c = 128^2':>12s}")
for arch in table3.TABLE3_ARCHS:
    gib, gib_literal = rows[arch] / memory.GiB, literal[arch] / memory.GiB
    print(f"{arch:>20s}: {gib:10,.0f} GiB  {gib_literal:8,.0f} GiB")

# %%
# Full attention's l^2 term dominates the first three rows; LSH removes it, reversibility the
# depth factor, chunking the d_ff factor.
assert rows["transformer"] == 12 * rows["reversible"]
assert rows["reformer"] < rows["lsh"] < rows["transformer"]
# with both attention terms dominant, LSH saves the factor l / (n_r c) = 65536 / (4 * 256) = 64
assert rows["chunked_reversible"] == 64 * rows["reformer"]
# chunking alone changes nothing here: n_h l = 524,288 scores per position dwarf d_ff = 4,096
assert rows["chunked_reversible"] == rows["reversible"]
assert setting["n_heads"] * setting["length"] > setting["d_ff"]
# taken literally, c = 128^2 makes n_r c = 4 * 16384 = l: the LSH rows equal full attention's
assert literal["lsh"] == literal["transformer"] and literal["reformer"] == literal["reversible"]

# %% [markdown]
# Two things in this table are easy to misread.
#
# * **The chunked reversible row equals the reversible row.** Chunking replaces $b\,l\,d_{ff}$
#   by $b\,l\,d_{model}$, but at $l = 64\text{K}$ both are far below the attention term
#   $b\,n_h\,l^2$ (one position holds $n_h l = 524{,}288$ scores against $d_{ff} = 4096$
#   hidden units), so the maximum does not move. Chunking pays off only once LSH has removed the
#   $l^2$ term: in the last row, where the Reformer's 16 GiB is set by the attention term, and at
#   shorter lengths (notebook 06 measures it).
# * **Taking the caption's $c = 128^2$ literally** makes $n_r c = 4 \times 16{,}384 = 65{,}536
#   = l$: the LSH rows then equal the full-attention rows at this length, and LSH would save
#   nothing. With the keys a query actually scores, $c = 2C = 256$, LSH's attention term is $64$
#   times smaller than full attention's. The caption's $c$ describes Table 1's chunked
#   computation, not the memory of the attention this series builds.

# %% [markdown]
# These are orders of growth, not exact byte counts: they name the largest tensor and whether it is
# kept per layer. The rest of this notebook checks the two growth laws that matter most, on
# real code: attention memory and time grow like $L^2$, and a Transformer's training memory grows
# linearly with depth.
#
# ## 3. Full attention, measured: time and memory against $L$
#
# We run the library's dense attention, forward and backward, on one sequence with 2 heads of
# width 64 in float32, doubling $L$ each time. Time is the best of a few runs after a warm-up
# (wall-clock, so it depends on your machine and on what else it is doing). Memory is the peak of
# NumPy allocations during the call, measured with `memory.measure_peak` (Python's `tracemalloc`,
# to which NumPy reports its buffers); the inputs exist before the call, so they are not counted.

# %%
n_heads, d_head = 2, 64
lengths = [128, 256, 512, 1024, 2048, 4096]
rng = np.random.default_rng(1)


def attention_step(q, k, v, dout):
    """Forward and backward of causal full attention; returns the three input gradients."""
    out, cache = attention.attention_forward(q, k, v, causal=True)
    return attention.attention_backward(dout, cache)


def best_time(fn, *args, min_runs=2, max_runs=7, budget_s=0.3):
    """The fastest of several runs: the least disturbed by whatever else the machine is doing."""
    fn(*args)  # warm-up: first-touch page faults and thread start-up are not attention's cost
    best, spent, runs = np.inf, 0.0, 0
    while runs < min_runs or (runs < max_runs and spent < budget_s):
        start = time.perf_counter()
        fn(*args)
        elapsed = time.perf_counter() - start
        best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
    return best


times, peaks = [], []
for n in progress(lengths, desc="full attention"):
    q, k, v, dout = (
        rng.standard_normal((1, n_heads, n, d_head)).astype(np.float32) for _ in range(4)
    )
    _, peak = memory.measure_peak(attention_step, q, k, v, dout)
    times.append(best_time(attention_step, q, k, v, dout))
    peaks.append(peak)

times, peaks = np.array(times), np.array(peaks, dtype=float)
score_bytes = np.array([table3.attention_matrix_bytes(n, n_heads=n_heads) for n in lengths])
print("     L   time (ms)   peak (MiB)   peak / (H L^2 floats)")
for n, t, p, s in zip(lengths, times, peaks, score_bytes):
    print(f"{n:6d}   {1e3 * t:9.2f}   {p / 2**20:10.2f}   {p / s:8.2f}")

# %% [markdown]
# The last column says how many $L \times L$ score matrices (per head) are alive at the peak:
# the scores, the softmax weights, and their gradients during the backward pass. It settles to a
# constant as $L$ grows, which is exactly what "memory is $O(L^2)$" means. We fit the exponent on
# log-log axes, using the three largest lengths where the $L^2$ term dominates the $O(L)$ terms
# ($Q$, $K$, $V$ and their gradients).

# %%
big = slice(-3, None)
mem_slope = np.polyfit(np.log(lengths[big]), np.log(peaks[big]), 1)[0]
time_slope = np.polyfit(np.log(lengths[big]), np.log(times[big]), 1)[0]
print(f"fitted on L = {lengths[big][0]} ... {lengths[big][-1]}")
print(f"log-log slope of peak memory : {mem_slope:.2f}  (L^2 predicts 2)")
print(f"log-log slope of time        : {time_slope:.2f}  (L^2 predicts 2; wall-clock)")

# %%
assert 1.8 < mem_slope < 2.2  # memory is deterministic, so this check is robust
ratio = peaks / score_bytes
assert abs(ratio[-1] - ratio[-2]) < 0.15 * ratio[-1]  # a fixed number of L x L matrices

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
fit_t = times[-1] * (np.array(lengths) / lengths[-1]) ** 2
fit_m = peaks[-1] * (np.array(lengths) / lengths[-1]) ** 2
axes[0].loglog(lengths, 1e3 * times, "o-", label="measured")
axes[0].loglog(lengths, 1e3 * fit_t, "k--", label=r"$\propto L^2$")
axes[0].set_ylabel("time, forward + backward (ms)")
axes[1].loglog(lengths, peaks / 2**20, "o-", label="measured peak")
axes[1].loglog(lengths, fit_m / 2**20, "k--", label=r"$\propto L^2$")
axes[1].set_ylabel("peak NumPy memory (MiB)")
for ax in axes:
    ax.set_xlabel("sequence length L")
    ax.legend()
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()
fig.suptitle(f"Full attention, {n_heads} heads of width {d_head}, float32")
fig.tight_layout()
plotting.save_figure(fig, "01_full_attention_scaling")
plt.show()

# %% [markdown]
# Extrapolating the measured memory along the fitted $L^2$ law to the paper's 64K tokens:

# %%
per_entry = peaks[-1] / (n_heads * lengths[-1] ** 2)  # bytes per score entry at the peak
at_64k = per_entry * n_heads * (64 * 1024) ** 2
print(f"{per_entry:.1f} bytes per (head, query, key) -> {at_64k / memory.GiB:.0f} GiB at L = 64K")
assert at_64k > table3.attention_matrix_bytes(64 * 1024, n_heads=n_heads)

# %% [markdown]
# ## 4. Training memory grows with depth
#
# The second cost has nothing to do with attention. Backpropagation through a layer needs what
# that layer saw in the forward pass: the gradient of $y = xW$ with respect to $W$ is
# $x^\top \bar y$, so $x$ must still exist when $\bar y$ arrives. A standard Transformer therefore
# keeps every block's inputs and intermediates alive from the forward pass until the backward pass
# comes back down to that block. Per pre-LayerNorm block our baseline (`minireformer.transformer`)
# keeps
# four $(b, l, d_{model})$ arrays (each layer norm's normalised input and its output), the
# queries, keys, values and merged heads $4 \times (b, l, n_h d_h)$, the softmax weights
# $(b, n_h, l, l)$ and the feed-forward hidden layer before and after its activation
# $2 \times (b, l, d_{ff})$; `table3.transformer_activation_bytes` counts them. All of it is
# multiplied by the number of layers $n_l$: the $n_l$ factor of Table 3's first row.
#
# We measure the peak memory of one training step (`loss_and_grads`: forward, loss, backward) of
# the baseline language model for 1 to 8 layers. Parameters exist before the step and are not
# counted (their size is printed for comparison); the gradients the step returns are.

# %%
depths = [1, 2, 4, 6, 8]
base = dict(vocab_size=64, d_model=64, n_heads=4, d_head=16, d_ff=256, max_len=256)
tokens = np.random.default_rng(2).integers(0, 64, size=(2, 257))  # the model reads 256
step_peaks, predicted, param_bytes = [], [], []
for n_layers in progress(depths, desc="depth"):
    config = transformer.TransformerConfig(**base, n_layers=n_layers)
    params = transformer.init_transformer(config, np.random.default_rng(3))
    _, peak = memory.measure_training_step(transformer.loss_and_grads, params, tokens, config)
    step_peaks.append(peak)
    param_bytes.append(memory.tree_nbytes(params))
    predicted.append(
        table3.transformer_activation_bytes(2, 256, 64, 256, 4, n_layers, d_head=16, vocab_size=64)
    )
step_peaks, predicted, param_bytes = (
    np.array(a, dtype=float) for a in (step_peaks, predicted, param_bytes)
)

slope, intercept = np.polyfit(depths, step_peaks, 1)
pred_slope = np.polyfit(depths, predicted, 1)[0]
residual = np.abs(step_peaks - (slope * np.array(depths) + intercept)).max()
print("layers   measured (MiB)   counted activations (MiB)   parameters (MiB)")
for n, m, p, g in zip(depths, step_peaks, predicted, param_bytes):
    print(f"{n:6d}   {m / 2**20:14.2f}   {p / 2**20:25.2f}   {g / 2**20:16.2f}")
print(f"measured slope: {slope / 2**20:.2f} MiB per layer; counted: {pred_slope / 2**20:.2f} MiB")
print(f"fixed part (intercept): {intercept / 2**20:.2f} MiB")
print(f"largest deviation from the straight line: {residual / 2**10:.1f} KiB")

# %% [markdown]
# The straight line has a fixed part too: the embedding and the output head, and the temporaries
# of the backward pass of one block (the gradient of the softmax weights is another
# $(b, n_h, l, l)$ array), which exist once whatever the depth. The slope is what depth costs, and
# it matches the count of cached arrays to within a few percent.

# %%
assert residual < 0.01 * step_peaks[-1]  # a straight line in depth
assert 0.95 < slope / pred_slope < 1.15  # each layer costs its cached activations
# %%
fig, ax = plt.subplots(figsize=(6, 3.8))
# the measured peaks as points and the count as lines, so that one does not hide the other
ax.plot(depths, (intercept + predicted) / 2**20, "k:", lw=2, label="count + measured fixed part")
ax.plot(depths, step_peaks / 2**20, "o", ms=8, mfc="none", mew=2,
        label="measured peak of one training step")  # fmt: skip
ax.plot(depths, predicted / 2**20, "s--", label="cached activations (analytic count)")
ax.set_xlabel("number of layers $n_l$")
ax.set_ylabel("MiB")
ax.set_ylim(0, None)
ax.set_title("Stored-activation Transformer: memory grows linearly with depth")
ax.legend()
plotting.save_figure(fig, "01_transformer_memory_vs_depth")
plt.show()

# %% [markdown]
# ## Recap
#
# What this notebook showed, each with its check:
#
# * A softmax is dominated by its largest scores: in the invented toy sentence two keys out of
#   twelve hold more than 99% of the weight of *it* (an illustration). In a trained character
#   model the top 32 keys of at least 128 hold about 90% of a query's weight in the first layer and
#   about half in the second (asserted: concentrated in layer 0, more than twice an even spread in
#   both): the premise of LSH attention holds, more in some layers than in others.
# * The paper's arithmetic, in GiB: 1.86 GiB of parameters (the paper's decimal "2GB") and 2 GiB
#   of activations per layer, and 16 GiB for a single 64K $\times$ 64K attention matrix. The
#   96-layer, "400 GB" total is a blog extrapolation (370 GiB), not the paper's.
# * Table 3 at the enwik8 setting: the chunked reversible row equals the reversible row because
#   the $l^2$ attention term dominates both; with $c = 2C = 256$ LSH divides the attention term by
#   64, while the caption's literal $c = 128^2$ would make it equal to full attention's.
# * Measured: full attention's peak memory grows with exponent close to 2 in $L$ (asserted,
#   between 1.8 and 2.2) and holds a fixed number of $L \times L$ matrices; its wall-clock time
#   grows at least as fast (an observation: timings are noisy).
# * Measured: the training-step memory of a stored-activation Transformer is a straight line in
#   the number of layers, with a slope within 15% of the per-block activations we counted
#   (asserted).
#
# The numbers of this run:

# %%
print(f"top-32 share of the weight: layer 0 {top_share[0][1]:.2f}, layer 1 {top_share[1][1]:.2f}")
print(f"full attention: memory slope {mem_slope:.2f}, time slope {time_slope:.2f} (wall-clock)")
print(f"  at L = {lengths[-1]}: {1e3 * times[-1]:.0f} ms, {peaks[-1] / 2**20:.0f} MiB")
print(f"Transformer training step: {slope / 2**20:.2f} MiB per layer measured, ", end="")
print(f"{pred_slope / 2**20:.2f} MiB counted")

# %% [markdown]
# **Next:** [notebook 02](02_hashing.ipynb) builds the hash that finds nearby keys; notebooks 03
# and 04 turn it into LSH attention; notebook 05 removes the depth factor with reversible layers,
# and notebook 06 removes the $d_{ff}$ factor by chunking. Practise with
# `exercises/01_attention_cost.py`: full attention forward and backward by hand, with a gradient
# check.
