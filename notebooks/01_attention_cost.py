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
# Reformer paper (Kitaev, Kaiser, Levskaya, ICLR 2020, [arXiv 2001.04451](https://arxiv.org/abs/2001.04451)),
# section 1 and the start of section 2.
#
# A Transformer reads a sequence by letting every position look at every other position. That
# all-pairs look is what makes it powerful, and it is also what makes it expensive: for a sequence
# of $L$ tokens, each layer builds an $L \times L$ table of scores, and training keeps every
# layer's intermediate results until the backward pass needs them. This notebook measures both
# costs on your machine and sets up the three questions the rest of the series answers:
#
# 1. Attention weights are dominated by a few large scores. Could each query look only at the keys
#    that matter? (LSH attention, notebooks 02 and 03.)
# 2. Training memory grows with the number of layers. Could we avoid storing activations?
#    (Reversible layers, notebook 05.)
# 3. The feed-forward layer's hidden width $d_{ff}$ and the vocabulary make some activations much
#    wider than the model. Could we process them a slice at a time? (Chunking, notebook 06.)
#
# Everything below uses the library's own functions; numbers come from `minireformer.memory`, and
# each claim is followed by an `assert` that checks it.

# %%
import os

# One BLAS thread: on a small shared machine, multi-threaded matrix products stall unpredictably
# while waiting for a busy core, which blurs the timing curves below. (Must precede numpy.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import time

import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from minireformer import attention, memory, model, plotting

print("numpy", np.__version__)

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
# Here is a hand-made example. In the sentence *"The animal didn't cross the street because it
# was too tired ."* the word *it* should refer to *animal*. Suppose the query of *it* gives these
# scores against the twelve tokens (made up for illustration, as if they were already
# $q \cdot k / \sqrt{d_k}$):

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
# The lesson the paper draws (section 2, "Hashing attention"): if we could find, for each query,
# the handful of keys with the largest scores, we could skip the others with almost no change to
# the output. Finding them *without* computing all $L^2$ scores first is what locality-sensitive
# hashing is for (notebook 02).
#
# ## 2. The paper's memory arithmetic
#
# The paper opens with a back-of-the-envelope budget for one large Transformer layer trained on
# 64K-token sequences. The numbers are simple products, and `minireformer.memory` computes them:
#
# * **Parameters.** The largest reported layer has 0.5 billion parameters; at 4 bytes each that is
#   2 GB.
# * **Activations.** The input of one layer for batch 8, length $64\text{K} = 65{,}536$ and
#   $d_{model} = 1024$ holds $8 \times 65{,}536 \times 1024 \approx 0.5$ billion numbers, again
#   about 2 GB in float32 (exactly 2 GiB).
#
# One layer is therefore about 4 GB, which fits on a single accelerator. But training does not
# keep one layer: it keeps the activations of *every* layer until backpropagation has used them,
# so memory is multiplied by the depth. At 96 such layers, the estimate is about 400 GB.
#
# And that still ignores attention itself: the score matrix $QK^\top$ for one 64K-token sequence
# has $65{,}536^2 \approx 4.3$ billion entries, 16 GiB in float32, per head and per layer.

# %%
params_per_layer = 500_000_000
batch, length, d_model = 8, 64 * 1024, 1024

p_bytes = memory.param_bytes(params_per_layer)
a_bytes = memory.activation_bytes(batch, length, d_model)
total_96 = memory.per_layer_estimate_bytes(
    96, params_per_layer=params_per_layer, batch=batch, length=length, d_model=d_model
)
attn_bytes = memory.attention_matrix_bytes(length)

print(f"parameters, one layer   : {p_bytes / memory.GB:6.2f} GB")
print(f"activations, one layer  : {a_bytes / memory.GB:6.2f} GB  = {a_bytes / memory.GiB} GiB")
print(f"96 layers, both         : {total_96 / memory.GB:6.0f} GB")
print(f"64K x 64K float32 scores: {attn_bytes / memory.GiB:6.0f} GiB")

# %%
assert p_bytes == 2 * memory.GB
assert a_bytes == 2 * memory.GiB and abs(a_bytes / memory.GB - 2) < 0.15
assert 390 * memory.GB < total_96 < 410 * memory.GB
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
# Evaluated for the paper's enwik8 setting ($d_{model} = 1024$, $d_{ff} = 4096$, 8 heads,
# batch 8, $l = 64\text{K}$) with 12 layers, 4 hash rounds and chunks of 128 (so $c = 256$: a
# chunk plus the one before it):

# %%
setting = dict(batch=8, length=64 * 1024, d_model=1024, d_ff=4096, n_heads=8, n_layers=12)
table3 = {
    arch: memory.table3_memory(arch, **setting, n_hashes=4, chunk_len=128)
    for arch in memory.TABLE3_ARCHS
}
for arch, nbytes in table3.items():
    print(f"{arch:>20s}: {nbytes / memory.GiB:10,.0f} GiB")

# %%
# Full attention's l^2 term dominates the first three rows; LSH removes it, reversibility the
# depth factor, chunking the d_ff factor.
assert table3["transformer"] == 12 * table3["reversible"]
assert table3["reformer"] < table3["lsh"] < table3["transformer"]
# with both attention terms dominant, LSH saves the factor l / (n_r c) = 65536 / (4 * 256) = 64
assert table3["chunked_reversible"] == 64 * table3["reformer"]

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
for n in tqdm(lengths, desc="full attention"):
    q, k, v, dout = (
        rng.standard_normal((1, n_heads, n, d_head)).astype(np.float32) for _ in range(4)
    )
    _, peak = memory.measure_peak(attention_step, q, k, v, dout)
    times.append(best_time(attention_step, q, k, v, dout))
    peaks.append(peak)

times, peaks = np.array(times), np.array(peaks, dtype=float)
score_bytes = np.array([memory.attention_matrix_bytes(n, n_heads=n_heads) for n in lengths])
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
assert at_64k > memory.attention_matrix_bytes(64 * 1024, n_heads=n_heads)

# %% [markdown]
# ## 4. Training memory grows with depth
#
# The second cost has nothing to do with attention. Backpropagation through a layer needs what
# that layer saw in the forward pass: the gradient of $y = xW$ with respect to $W$ is
# $x^\top \bar y$, so $x$ must still exist when $\bar y$ arrives. A standard Transformer therefore
# keeps every block's inputs and intermediates alive from the forward pass until the backward pass
# comes back down to that block. Per pre-LayerNorm block our baseline (`minireformer.model`) keeps
# four $(b, l, d_{model})$ arrays (each layer norm's normalised input and its output), the
# queries, keys, values and merged heads $4 \times (b, l, n_h d_h)$, the softmax weights
# $(b, n_h, l, l)$ and the feed-forward hidden layer before and after its activation
# $2 \times (b, l, d_{ff})$; `memory.transformer_activation_bytes` counts them. All of it is
# multiplied by the number of layers $n_l$: the $n_l$ factor of Table 3's first row.
#
# We measure the peak memory of one training step (`loss_and_grads`: forward, loss, backward) of
# the baseline language model for 1 to 8 layers. Parameters exist before the step and are not
# counted (their size is printed for comparison); the gradients the step returns are.

# %%
depths = [1, 2, 4, 6, 8]
base = dict(vocab_size=64, d_model=64, n_heads=4, d_head=16, d_ff=256, max_len=256)
tokens = np.random.default_rng(2).integers(0, 64, size=(2, 256))
step_peaks, predicted, param_bytes = [], [], []
for n_layers in tqdm(depths, desc="depth"):
    config = model.TransformerConfig(**base, n_layers=n_layers)
    params = model.init_transformer(config, np.random.default_rng(3))
    _, peak = memory.measure_training_step(model.loss_and_grads, params, tokens, config)
    step_peaks.append(peak)
    param_bytes.append(memory.tree_nbytes(params))
    predicted.append(
        memory.transformer_activation_bytes(2, 256, 64, 256, 4, n_layers, d_head=16, vocab_size=64)
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
ax.plot(depths, step_peaks / 2**20, "o-", label="measured peak of one training step")
ax.plot(depths, predicted / 2**20, "s--", label="cached activations (analytic count)")
ax.plot(depths, (intercept + predicted) / 2**20, "k:", label="count + measured fixed part")
ax.set_xlabel("number of layers $n_l$")
ax.set_ylabel("MiB")
ax.set_ylim(0, None)
ax.set_title("Stored-activation Transformer: memory grows linearly with depth")
ax.legend()
plotting.save_figure(fig, "01_transformer_memory_vs_depth")
plt.show()

# %% [markdown]
# ## Summary
#
# * A softmax is dominated by its largest scores: in the toy sentence two keys out of twelve hold
#   more than 99% of the weight of *it*. Attention could skip most keys if it knew which ones.
# * The paper's arithmetic, reproduced by `minireformer.memory`: 2 GB of parameters and 2 GB of
#   activations per layer, about 400 GB for 96 such layers, and 16 GiB for a single
#   64K $\times$ 64K attention matrix.
# * Measured here: full attention's peak memory grows with exponent close to 2 in $L$ (asserted);
#   the peak holds a fixed number of $L \times L$ matrices. Its wall-clock time grows at least as
#   fast (slope about 2 to 2.5 on a shared CPU, printed, not asserted: timings are noisy).
# * Measured here: the training-step memory of a stored-activation Transformer is a straight line
#   in the number of layers, with a slope equal to the per-block activations we counted.
#
# Next: notebook 02 builds the hash that finds nearby keys, notebook 03 turns it into LSH
# attention, notebook 05 removes the depth factor with reversible layers, and notebook 06 removes
# the $d_{ff}$ factor by chunking.
