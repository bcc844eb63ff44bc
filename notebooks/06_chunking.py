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
# # 06 Chunking, and all the Reformer's memory tricks together
#
# Reformer paper (Kitaev, Kaiser, Levskaya 2020), section 3 "Chunking" (equation 10) and Table 3.
#
# **Learning objectives.** After this notebook you can
#
# - explain why a position-wise layer (the feed-forward, the output projection and loss) can be
#   computed a chunk of positions at a time, forward *and* backward, with the same result;
# - predict how the peak memory of such a layer falls with the chunk length, and name what the
#   simple prediction leaves out;
# - read the paper's Table 3 and compare each row with a measured training step;
# - say why the memory tricks cost time at short lengths, and how the whole model's memory grows
#   with the sequence length.
#
# **Prerequisites.** [05](05_reversible.ipynb) (reversible layers: memory flat in depth) and
# [01](01_attention_cost.ipynb) (peak memory, measured with `memory.measure_peak`); for the LSH
# rows of Table 3, [03](03_lsh_attention.ipynb) and [04](04_multiround_lsh.ipynb).
#
# **Notation** (the [notation](../README.md#notation) table): B batch, L length, D model width,
# $d_{ff}$ feed-forward width, V vocabulary, H heads, R hash rounds, C the chunk length of LSH and
# local attention, $n_c = L / C$ their number of chunks. One more letter, for this notebook:
# **S, the number of positions in one chunk of the feed-forward or of the loss** (config fields
# `ff_chunk` and `loss_chunk`), so that they are computed in $L / S$ chunks. (The paper writes
# the number of feed-forward chunks $c$ in equation 10, and uses $c$ for other things elsewhere;
# here each letter has one meaning.)
#
# **Code.** Chunked feed-forward and chunked output loss:
# [`chunking.py`](../minireformer/chunking.py) (the unchunked ops they are checked against:
# [`layers.py`](../minireformer/layers.py)); the models with all switches:
# [`reformer.py`](../minireformer/reformer.py); measurement and Table 3:
# [`memory.py`](../minireformer/measuring/memory.py); the length sweep at the end:
# [`benchmarks/bench_reformer_memory.py`](../benchmarks/bench_reformer_memory.py).

# %%
import dataclasses
import json
import time

import matplotlib.pyplot as plt
import numpy as np

from minireformer import backend, chunking, layers, loss, reformer
from minireformer.measuring import memory, memory_model, table3
from minireformer.reformer_config import ReformerConfig
from minireformer.teaching import plotting, schematics
from minireformer.teaching.progress import progress
from minireformer.training import experiments

print(backend.describe())
MiB, GiB = 2**20, 2**30

# %% [markdown]
# ## What is left after reversibility
#
# Notebook 05 made activation memory independent of depth. What is left is the memory of **one**
# layer at a time, and there the biggest arrays are not the $(L, D)$ activations but two wide
# intermediates:
#
# - the feed-forward's hidden layer, $(L, d_{ff})$ with $d_{ff}$ typically $4D$ (the paper goes up
#   to $d_{ff} = 4096$ and beyond);
# - the output logits, $(L, V)$, when the vocabulary $V$ is larger than $D$ (sub-word
#   vocabularies have 32K entries).
#
# Both are computed **position by position**: row $i$ of $\mathrm{FeedForward}(Y)$ depends only on
# row $i$ of $Y$, and the loss at position $i$ only on the logits at $i$. So the sequence can be cut
# into chunks of $S$ positions and processed one chunk at a time:

# %%
fig = schematics.chunked_feed_forward()
plotting.save_figure(fig, "06_chunked_feed_forward")
plt.show()

# %% [markdown]
# In equations (paper equation 10), with the chunks numbered $1 \dots L/S$:
#
# $$
# Y_2 = \big[Y_2^{(1)}; \dots; Y_2^{(L/S)}\big]
#     = \big[X_2^{(1)} + \mathrm{FeedForward}(Y_1^{(1)}); \dots;
#            X_2^{(L/S)} + \mathrm{FeedForward}(Y_1^{(L/S)})\big].
# $$
#
# The result is the same numbers (each row is computed by exactly the same operations); only the
# largest intermediate alive at once shrinks from $(L, d_{ff})$ to $(S, d_{ff})$. The price is a
# Python loop over chunks: smaller matrix products, so somewhat lower throughput. The backward pass
# must be chunked too, otherwise it would rebuild the whole $(L, d_{ff})$ array to compute
# $\partial \mathcal{L} / \partial W_1 = \sum_i x_i^\top \bar h_i$: that sum runs over positions, so
# it is accumulated chunk by chunk.
#
# **Goal of this notebook:** show that chunked and unchunked layers agree, measure how peak memory
# falls with the chunk length, put every trick together and compare with the paper's Table 3, and
# follow the whole model's memory as the sequence grows.

# %% [markdown]
# ## 1. A wide feed-forward layer, chunked and not
#
# One sequence of $L = 1024$ positions at $D = 64$ through a feed-forward layer with
# $d_{ff} = 2048$, 32 times wider than the model: the hidden layer has $L \cdot d_{ff} \approx 2.1$
# million entries while input and output have 65 thousand each. In float64 we compare the chunked
# layer (chunks of $S = 128$ positions) with the unchunked one, output and all gradients.

# %%
B, L_FF, D_FF_MODEL, D_FF = 1, 1024, 64, 2048
rng = np.random.default_rng(0)
ff_p64 = layers.init_feedforward(rng, D_FF_MODEL, D_FF, dtype="float64")
x64 = rng.standard_normal((B, L_FF, D_FF_MODEL))
dout64 = rng.standard_normal((B, L_FF, D_FF_MODEL))

out_full, cache_full = layers.feedforward_forward(x64, ff_p64)
dx_full, dp_full = layers.feedforward_backward(dout64, cache_full)
out_chunk, cache_chunk = chunking.chunked_feedforward_forward(x64, ff_p64, chunk_len=128)
dx_chunk, dp_chunk = chunking.chunked_feedforward_backward(dout64, cache_chunk)


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


ff_errors = {"out": rel(out_chunk, out_full), "dx": rel(dx_chunk, dx_full)}
ff_errors.update({f"d{k}": rel(dp_chunk[k], dp_full[k]) for k in dp_full})
for name, err in ff_errors.items():
    print(f"{name:4s} relative difference chunked vs unchunked: {err:.1e}")
print("the chunked cache holds:", [type(v).__name__ for v in cache_chunk], "- no (L, d_ff) array")

# %% [markdown]
# Each output row is computed by the same operations in both, so outputs and input gradients agree
# to rounding (the matrix library may block a smaller product differently). The weight gradients
# are sums over positions: chunking changes the order of summation, which again moves only the last
# bits. The chunked cache holds the input and the parameters, no array of $d_{ff}$ columns per
# position:

# %%
assert max(ff_errors.values()) < 1e-12, ff_errors
assert all(
    getattr(v, "shape", (0,))[-2:] != (L_FF, D_FF) for v in cache_chunk
)  # no (L, d_ff) array cached
del cache_full, cache_chunk

# %% [markdown]
# ## 2. Peak memory against chunk length
#
# Now in float32, as in training, we measure the peak memory of the forward **and** backward pass
# of the same layer (`memory.measure_peak`: NumPy allocations during the call, inputs and
# parameters excluded) for chunk lengths $S$ from 16 to $L$.
#
# A simple prediction: a few $(L, D)$ arrays must exist whole (the output, the input gradient),
# plus the $(S, d_{ff})$ arrays of one chunk alive at once: in the backward of one chunk, the
# pre-activation and activation its recomputed forward keeps, the gradient arriving at the
# activation, and the GELU's backward temporaries. Rather than trust such a count, we **fit** the
# measured peaks with a line, $\text{peak} \approx a + b\,S$, over the chunk lengths below $L$:
# $b$ is what one more position per chunk costs (divided by $4\,d_{ff}$ bytes: the number of
# $(S, d_{ff})$ float32 arrays alive at once), and $a$ what exists whatever the chunk length.

# %%
ff_p32 = layers.init_feedforward(rng, D_FF_MODEL, D_FF, dtype="float32")
x32, dout32 = x64.astype(np.float32), dout64.astype(np.float32)


def ff_step(chunk_len):
    """Forward and backward of the feed-forward layer; chunk_len None = unchunked."""
    if chunk_len is None:
        out, cache = layers.feedforward_forward(x32, ff_p32)
        return out, layers.feedforward_backward(dout32, cache)
    out, cache = chunking.chunked_feedforward_forward(x32, ff_p32, chunk_len=chunk_len)
    return out, chunking.chunked_feedforward_backward(dout32, cache)


def fit_peaks(chunks, peaks, length):
    """Least-squares line peak = a + b S over the chunk lengths S < length: (a, b) in bytes."""
    short = [(s, p) for s, p in zip(chunks, peaks) if s < length]
    b, a = np.polyfit([s for s, _ in short], [p for _, p in short], 1)
    return float(a), float(b)


CHUNKS = [16, 32, 64, 128, 256, 512, 1024]
t0 = time.perf_counter()
_, ff_peak_full = memory.measure_peak(ff_step, None)
ff_peaks = [memory.measure_peak(ff_step, s)[1] for s in progress(CHUNKS, desc="chunk lengths")]
print(f"measured in {time.perf_counter() - t0:.1f} s")
print(f"unchunked: {ff_peak_full / MiB:7.1f} MiB")
for s, peak in zip(CHUNKS, ff_peaks):
    print(f"S = {s:5d}: {peak / MiB:7.1f} MiB   ({ff_peak_full / peak:5.1f}x less)")
ff_a, ff_b = fit_peaks(CHUNKS, ff_peaks, L_FF)
ff_wgrad = 2 * D_FF_MODEL * D_FF * 4  # the (D, d_ff) and (d_ff, D) weight gradients, float32
print(
    f"fit: a = {ff_a / MiB:.2f} MiB (the weight gradients alone are {ff_wgrad / MiB:.2f} MiB), "
    f"b = {ff_b / (4 * D_FF):.1f} arrays of (S, d_ff) float32"
)


# %%
def plot_chunk_sweep(peaks, unchunked, fit, extra=None):
    """Measured peaks against S, the unchunked peak and the fit a + b S (and an extra curve)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.loglog(CHUNKS, np.array(peaks) / MiB, "o-", label="chunked, measured")
    ax.axhline(unchunked / MiB, color="C3", ls="--", label="unchunked, measured")
    if extra is not None:
        ax.loglog(CHUNKS, np.array(extra[0]) / MiB, "k:", label=extra[1])
    ax.loglog(CHUNKS, (fit[0] + fit[1] * np.array(CHUNKS)) / MiB, "--", color="0.5",
              label="fit $a + b\\,S$ (S < L)")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(CHUNKS, [str(s) for s in CHUNKS])
    plotting.label_log_axis(ax.yaxis)
    ax.set_xlabel("chunk length S (positions)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return fig, ax


fig, ax = plot_chunk_sweep(ff_peaks, ff_peak_full, (ff_a, ff_b))
ax.set_ylabel("peak memory of forward + backward (MiB)")
ax.set_title(f"Feed-forward, L={L_FF}, D={D_FF_MODEL}, d_ff={D_FF}, float32")
plotting.save_figure(fig, "06_ff_memory_vs_chunk")
plt.show()

# %% [markdown]
# Memory falls in proportion to the chunk length until what must exist anyway dominates. The fit
# shows what that is: its constant $a$ is larger than the weight gradients alone, because the
# chunked backward holds, besides the $(L, D)$ output and input gradient, the running sums of
# $\bar W_1, \bar W_2$, the current chunk's contribution, and their sum (made as a new array before
# the old one is freed). Below that floor, smaller chunks only cost speed. The checks: the peaks
# lie on the fitted line to within 15% (S < L); the floor holds at least the weight gradients;
# $S = 64$ needs several times less memory than the unchunked layer; one chunk of the whole
# sequence costs about as much as no chunking.

# %%
for s, peak in zip(CHUNKS[:-1], ff_peaks[:-1]):
    assert abs(peak - (ff_a + ff_b * s)) < 0.15 * peak, s
assert ff_a > ff_wgrad
assert ff_peaks[CHUNKS.index(64)] * 4 < ff_peak_full
assert ff_peaks[-1] > 0.5 * ff_peak_full

# %% [markdown]
# ## 3. The output layer and loss with a large vocabulary
#
# The last layer projects each position to $V$ logits, takes a log-softmax and picks the target's
# log-probability. With $V = 8192$ and $L = 1024$ the logits alone are 8.4 million floats, and
# the backward needs the softmax of all of them. The chunked loss computes $S$ positions at a time,
# and in the backward recomputes each chunk's logits, turns them into
# $\bar{z} = (\mathrm{softmax}(z) - \mathrm{onehot}(t)) / n$ and immediately folds them into
# $\bar W_{out} \mathrel{+}= h_{chunk}^\top \bar z$ and $\bar h_{chunk} = \bar z\, W_{out}^\top$,
# so the $(L, V)$ array never exists whole. (Each chunk divides by the total number $n$ of targets,
# not its own, so the chunk losses add up to the mean.)

# %%
L_LOSS, D_IN, VOCAB = 1024, 64, 8192
w_out64 = rng.standard_normal((D_IN, VOCAB)) / np.sqrt(D_IN)
b_out64 = 0.1 * rng.standard_normal(VOCAB)
h64 = rng.standard_normal((B, L_LOSS, D_IN))
targets = rng.integers(0, VOCAB, size=(B, L_LOSS))


def loss_step(h, w, b, chunk_len):
    """Loss and gradients (dh, dw, db) of the output layer; chunk_len None = unchunked."""
    if chunk_len is None:
        logits, c_lin = layers.linear_forward(h, w, b)  # (B, L, V)
        value, c_ce = loss.softmax_cross_entropy_forward(logits, targets)
        del logits
        return value, layers.linear_backward(loss.softmax_cross_entropy_backward(1.0, c_ce), c_lin)
    value, cache = chunking.chunked_output_loss_forward(h, w, b, targets, chunk_len=chunk_len)
    return value, chunking.chunked_output_loss_backward(1.0, cache)


loss_full, grads_full = loss_step(h64, w_out64, b_out64, None)
loss_chunk, grads_chunk = loss_step(h64, w_out64, b_out64, 64)
loss_errors = {"loss": abs(float(loss_chunk) - float(loss_full)) / abs(float(loss_full))}
loss_errors.update({k: rel(a, b) for k, a, b in zip(("dh", "dw", "db"), grads_chunk, grads_full)})
print(f"loss unchunked {float(loss_full):.12f}, chunked {float(loss_chunk):.12f}")
for name, err in loss_errors.items():
    print(f"{name:4s} relative difference chunked vs unchunked: {err:.1e}")

# %%
assert max(loss_errors.values()) < 1e-12, loss_errors

# %% [markdown]
# Memory, as for the feed-forward: measured peaks against chunk length, and beside them a simple
# count, $\bar W_{out}$ plus three $(S, V)$ arrays (the logits, their softmax, its gradient), and
# the same straight-line fit.

# %%
h32, w_out32, b_out32 = (
    h64.astype(np.float32),
    w_out64.astype(np.float32),
    b_out64.astype(np.float32),
)
_, loss_peak_full = memory.measure_peak(loss_step, h32, w_out32, b_out32, None)
loss_peaks = [
    memory.measure_peak(loss_step, h32, w_out32, b_out32, s)[1]
    for s in progress(CHUNKS, desc="chunk lengths")
]
wgrad_out = D_IN * VOCAB * 4  # one (D, V) float32 array: the gradient of W_out
loss_count = [wgrad_out + 3 * B * s * VOCAB * 4 for s in CHUNKS]  # the simple count, bytes
loss_a, loss_b = fit_peaks(CHUNKS, loss_peaks, L_LOSS)
print(f"one (L, V) float32 array: {B * L_LOSS * VOCAB * 4 / MiB:.1f} MiB")
print(f"unchunked: {loss_peak_full / MiB:7.1f} MiB")
for s, peak, count in zip(CHUNKS, loss_peaks, loss_count):
    print(
        f"S = {s:5d}: {peak / MiB:7.1f} MiB   ({loss_peak_full / peak:5.1f}x less), "
        f"simple count {count / MiB:5.1f} MiB, measured / count {peak / count:.2f}"
    )
print(
    f"fit: a = {loss_a / wgrad_out:.1f} arrays of (D, V), "
    f"b = {loss_b / (4 * VOCAB):.1f} arrays of (S, V) float32 (the count: 1 and 3)"
)

# %%
count_label = r"count: $\bar W_{out}$ + $3\,S\,V$ floats"
fig, ax = plot_chunk_sweep(loss_peaks, loss_peak_full, (loss_a, loss_b), (loss_count, count_label))
ax.set_ylabel("peak memory of loss forward + backward (MiB)")
ax.set_title(f"Output layer and loss, L={L_LOSS}, V={VOCAB}, float32")
plotting.save_figure(fig, "06_loss_memory_vs_chunk")
plt.show()

# %% [markdown]
# The unchunked loss holds three $(L, V)$ arrays at its peak; the chunked one falls with $S$ as
# the feed-forward did. The simple count has the right form (a constant plus a line in $S$) but
# **undershoots** the measurement below $S = L$, by the factor printed above, because it leaves
# out two things the fit makes visible: in the constant, a second $(D, V)$ array, each chunk's
# $h_{chunk}^\top \bar z$, which exists whole before it is added into the running sum; and in the
# slope, the temporaries of one chunk's backward (the shifted logits from which the softmax is
# exponentiated, the one-hot comparison, the product by $1/n$), so that about five $(S, V)$ arrays
# are alive where the count has three. An exact count of every array a step holds is the subject
# of `memory.py`'s model. The checks: the count undershoots, by less than 2.5x, at every
# $S < L$; the fit's constant is between one and three $(D, V)$ arrays and its slope above the
# count's three $(S, V)$ arrays; $S = 64$ needs several times less than the unchunked loss.

# %%
for peak, count in zip(loss_peaks[:-1], loss_count[:-1]):
    assert count < peak < 2.5 * count
assert wgrad_out < loss_a < 3 * wgrad_out
assert loss_b > 3 * 4 * VOCAB
assert loss_peaks[CHUNKS.index(64)] * 4 < loss_peak_full
assert loss_peaks[0] < loss_peaks[-1] / 4

# %% [markdown]
# ## 4. All the tricks together: Table 3, measured
#
# The paper's Table 3 gives the memory of each variant as the size of its largest intermediate,
# written here in this code's letters ($n_l$ layers; $2C$ is the number of keys each query attends
# to in one LSH round: its own chunk of $C$ and the one before):
#
# | model | memory |
# |---|---|
# | Transformer | $\max(B\,L\,d_{ff},\ B\,H\,L^2)\; n_l$ |
# | Reversible Transformer | $\max(B\,L\,d_{ff},\ B\,H\,L^2)$ |
# | Chunked Reversible Transformer | $\max(B\,L\,D,\ B\,H\,L^2)$ |
# | LSH Transformer | $\max(B\,L\,d_{ff},\ B\,H\,R\,L\,2C)\; n_l$ |
# | Reformer | $\max(B\,L\,D,\ B\,H\,R\,L\,2C)$ |
#
# Reversibility removes the factor $n_l$, chunking replaces $d_{ff}$ by $D$, and LSH attention
# replaces the $L^2$ attention matrix by $R\,L\,2C$ (each of the $R\,L$ sorted queries attends to
# $2C$ keys). (The paper's table writes this last term with a constant $c = 128^2$ in place of
# $2C$; notebook [01](01_attention_cost.ipynb) discusses that choice.)

# %% [markdown]
# We measure one training step of each variant at one size, chosen so that every trick has
# something to remove: one sequence of $L = 512$ tokens, $D = 64$, $H = 2$ heads,
# $d_{ff} = 2048$ (so $L\,d_{ff} = 1$M floats exceeds the $H L^2 = 0.5$M attention weights),
# a vocabulary of $V = 4096$, 4 layers, float32; LSH with $R = 2$ rounds and chunks of $C = 32$;
# chunked feed-forward and loss with $S = 64$. All five are the same `reformer` code with
# switches, so the differences are the tricks and nothing else:
#
# | variant | attention | reversible | chunked FF and loss |
# |---|---|---|---|
# | Transformer | full | no (stored activations) | no |
# | Reversible | full | yes | no |
# | Chunked reversible | full | yes | yes |
# | LSH Transformer | LSH | no | no |
# | Reformer | LSH | yes | yes |
#
# Each step runs twice: once under `memory.measure_peak` for its peak, and once untraced for its
# time (tracing every allocation slows code that makes many small arrays, such as the chunk
# loops, far more than the rest).

# %%
ARCH_L = 512
arch_base = ReformerConfig(
    vocab_size=4096,
    d_model=64,
    n_heads=2,
    d_ff=2048,
    n_layers=4,
    n_hashes=2,
    chunk_len=32,
    max_len=ARCH_L,
    dtype="float32",
)
chunked = dict(ff_chunk=64, loss_chunk=64)
ARCHS = {
    "transformer": dict(attention_types=("full",), reversible=False),
    "reversible": dict(attention_types=("full",), reversible=True),
    "chunked_reversible": dict(attention_types=("full",), reversible=True, **chunked),
    "lsh": dict(attention_types=("lsh",), reversible=False),
    "reformer": dict(attention_types=("lsh",), reversible=True, **chunked),
}
arch_tokens = np.random.default_rng(10).integers(0, arch_base.vocab_size, size=(1, ARCH_L + 1))
arch_sizes = dict(batch=1, length=ARCH_L, d_model=64, d_ff=2048, n_heads=2, n_layers=4)
arch_params = reformer.init_reformer(arch_base, np.random.default_rng(11))  # shared by all five

measured = {}  # name -> peak, gradient bytes, activations (= peak - gradients), seconds
for name, switches in progress(ARCHS.items(), desc="variants"):
    cfg = dataclasses.replace(arch_base, **switches)
    (_, grads), peak = memory.measure_peak(
        reformer.loss_and_grads, arch_params, arch_tokens, cfg, np.random.default_rng(12)
    )
    t0 = time.perf_counter()
    reformer.loss_and_grads(arch_params, arch_tokens, cfg, np.random.default_rng(12))
    seconds = time.perf_counter() - t0
    g = memory.tree_nbytes(grads)
    measured[name] = {"peak": peak, "grads": g, "activations": peak - g, "seconds": seconds}

# Predictions of the activations, one column per model of memory (bytes, float32).
predicted = {
    "Table 3": {
        name: table3.table3_memory(name, n_hashes=2, chunk_len=32, **arch_sizes) for name in ARCHS
    },
}

columns = ["peak MiB", "- grads", "= rest"] + [f"{p} MiB" for p in predicted] + ["time s"]
print(f"{'variant':20s}" + "".join(f"{c:>14s}" for c in columns))
for name, m in measured.items():
    cells = [m["peak"] / MiB, m["grads"] / MiB, m["activations"] / MiB]
    cells += [p[name] / MiB for p in predicted.values()] + [m["seconds"]]
    print(f"{name:20s}" + "".join(f"{v:14.2f}" for v in cells))
print("rest / Table 3:", {n: round(m["activations"] / predicted["Table 3"][n], 1)
                          for n, m in measured.items()})  # fmt: skip

# %% [markdown]
# "peak" is everything NumPy allocated during the step; "grads" is the gradient tree it returns
# (the same for all five, since the weights are the same); "rest" is what the tricks act on:
# stored activations and the temporaries of forward and backward. The figure draws "rest" beside
# each prediction, each bar labelled with its value and each measured bar with its ratio to
# Table 3's.

# %%
fig, ax = plt.subplots(figsize=(9, 4.6))
names = list(measured)
bars = {"measured (minus gradients)": [measured[n]["activations"] for n in names]}
bars.update({f"{p} formula": [predicted[p][n] for n in names] for p in predicted})
width = 0.8 / len(bars)
pos = np.arange(len(names))
for k, (label, values) in enumerate(bars.items()):
    mib = np.array(values) / MiB
    rects = ax.bar(pos + (k - (len(bars) - 1) / 2) * width, mib, width, label=label)
    if k == 0:  # measured: its value and its ratio to Table 3
        ratios = [v / predicted["Table 3"][n] for v, n in zip(values, names)]
        text = [f"{v:.1f}\n{r:.0f}x" for v, r in zip(mib, ratios)]
    else:
        text = [f"{v:.1f}" for v in mib]
    ax.bar_label(rects, text, fontsize=7, padding=2)
ax.set_xticks(pos, [n.replace("_", "\n") for n in names])
ax.set_ylabel("MiB")
ax.set_yscale("log")
ax.set_ylim(0.2, 300)
plotting.label_log_axis(ax.yaxis)
ax.set_title(f"One training step, L={ARCH_L}, 4 layers, d_ff=2048, V=4096, float32")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(bars))
plotting.save_figure(fig, "06_table3_measured")
plt.show()

# %% [markdown]
# The measured numbers sit several times above Table 3's (the ratios on the bars: the table names
# only the largest tensor of a layer; a real implementation keeps several tensors of that size,
# and temporaries; the exact model of the next section names the largest terms), but they move
# the way the table says:
#
# - **reversible** removes the factor $n_l$ from the activations (the table's 4x assumes the
#   activations are all there is; one layer's backward working memory stays, so the measured
#   saving is smaller);
# - **chunking** removes the $d_{ff}$ (and vocabulary) term, leaving the $H L^2$ attention weights
#   of one layer;
# - **LSH** alone barely helps here, because with stored activations the $(L, d_{ff})$ arrays of
#   every layer dominate (Table 3 gives Transformer and LSH Transformer the same value here);
# - the **Reformer**, with all three, needs the least.
#
# The checks below are the strict decreases Table 3 predicts at this size, with a margin.

# %%
act = {n: m["activations"] for n, m in measured.items()}
assert act["transformer"] > 1.5 * act["reversible"]  # n_l factor removed
assert act["reversible"] > 1.5 * act["chunked_reversible"]  # d_ff term removed
assert act["chunked_reversible"] > 1.2 * act["reformer"]  # L^2 replaced by R L 2C
assert act["lsh"] > 3 * act["reformer"]  # reversibility and chunking on top of LSH
assert act["reformer"] == min(act.values())
assert act["transformer"] > 4 * act["reformer"]
assert all(act[n] > predicted["Table 3"][n] for n in ARCHS)  # the table counts one array a term

# %% [markdown]
# ### Formula, exact model and measurement side by side
#
# Table 3 is an order of growth. [`memory_model.py`](../minireformer/measuring/memory_model.py) is
# the other
# extreme: it walks the implementation phase by phase (the loss, each block's feed-forward and
# attention in the backward pass) and adds up, from their shapes, the arrays alive together in
# each phase; the largest phase is the predicted peak. It predicts the whole peak, gradients
# included, so it is compared with the measured peak, and each prediction names the phase where
# the peak falls.

# %%
exact = {name: memory_model.step_peak_model(dataclasses.replace(arch_base, **sw), 1, ARCH_L)
         for name, sw in ARCHS.items()}  # fmt: skip
header = ["Table 3 MiB", "exact MiB", "measured MiB", "error"]
print(f"{'variant':20s}" + "".join(f"{c:>14s}" for c in header) + "  phase")
for name, m in measured.items():
    err = exact[name].total / m["peak"] - 1
    cells = [predicted["Table 3"][name] / MiB, exact[name].total / MiB, m["peak"] / MiB]
    row = "".join(f"{v:14.2f}" for v in cells)
    print(f"{name:20s}{row}{err:+14.1%}  {exact[name].phase}")
top_terms = sorted(exact["reformer"].terms.items(), key=lambda kv: -kv[1])[:4]
print("largest terms of the Reformer's peak:", [(k, round(v / MiB, 2)) for k, v in top_terms])
assert all(abs(exact[n].total / measured[n]["peak"] - 1) < 0.15 for n in ARCHS)

# %% [markdown]
# ### The time column
#
# The tricks are about memory; what they do to time differs:
#
# - **reversible** layers recompute every block's forward pass on the way down (notebook 05
#   measured the extra);
# - **chunking** replaces one large matrix product by a Python loop of $L/S$ smaller ones
#   (8 here), and the chunked loss recomputes each chunk's logits in the backward;
# - **LSH** attention replaces one $(L, L)$ product, which at $L = 512$ is small and fast, by
#   hashing, a sort, gathers into chunks, $R$ rounds and their combination. It does $O(L\,C)$
#   work instead of $O(L^2)$, so whether it saves time at a given length depends on that overhead
#   against the $L^2$ it removes:
#   notebook [04](04_multiround_lsh.ipynb) measures that crossover for the attention alone, and the
#   length sweep below for a whole training step.
#
# Observation (not asserted: wall-clock times of a shared CPU): the times printed above; the
# ratio of each variant's time to the Transformer's:

# %%
print({n: round(m["seconds"] / measured["transformer"]["seconds"], 2) for n, m in measured.items()})

# %% [markdown]
# ## 5. The whole model against sequence length
#
# Table 3 is about how memory *grows*. We measure one whole training step of two variants of
# section 4's model, the Transformer and the Reformer, at doubling lengths (the Transformer up to
# 2,048 tokens, the Reformer one doubling further), the same `reformer.loss_and_grads` call under
# `memory.measure_peak`:

# %%
SWEEP = {"transformer": (512, 1024, 2048), "reformer": (512, 1024, 2048, 4096)}
sweep_base = dataclasses.replace(arch_base, max_len=max(SWEEP["reformer"]))
sweep_params = reformer.init_reformer(sweep_base, np.random.default_rng(11))  # positions for all L
sweep = {name: {} for name in SWEEP}
for name, lengths in SWEEP.items():
    for length in progress(lengths, desc=name):
        cfg = dataclasses.replace(sweep_base, **ARCHS[name])
        tokens = np.random.default_rng(13).integers(0, cfg.vocab_size, size=(1, length + 1))
        (_, grads), peak = memory.measure_peak(
            reformer.loss_and_grads, sweep_params, tokens, cfg, np.random.default_rng(14)
        )
        sweep[name][length] = peak - memory.tree_nbytes(grads)
print("peak minus gradients, MiB")
for length in SWEEP["reformer"]:
    r, t = sweep["reformer"][length], sweep["transformer"].get(length)
    versus = f", Transformer {t / MiB:6.1f} ({t / r:.1f}x)" if t else ""
    print(f"L = {length:5d}: Reformer {r / MiB:6.1f}{versus}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for name, color in (("transformer", "C3"), ("reformer", "C0")):
    lengths = list(sweep[name])
    ax.loglog(lengths, np.array(list(sweep[name].values())) / MiB, "o-", color=color,
              label=f"{name}, measured (minus gradients)")  # fmt: skip
    predicted = [
        table3.table3_memory(name, n_hashes=2, chunk_len=32, **{**arch_sizes, "length": n})
        for n in lengths
    ]
    ax.loglog(lengths, np.array(predicted) / MiB, "--", color=color, label=f"{name}, Table 3")
ax.set_xscale("log", base=2)
ax.set_xticks(SWEEP["reformer"], [f"{n:,}" for n in SWEEP["reformer"]])
plotting.label_log_axis(ax.yaxis)
ax.set_xlabel("sequence length L (tokens, batch 1)")
ax.set_ylabel("peak memory of one training step (MiB)")
ax.set_title("section 4's model, 4 layers, float32")
ax.grid(alpha=0.3)
ax.legend(fontsize=8, loc="upper left")
plotting.save_figure(fig, "06_length_sweep")
plt.show()

# %% [markdown]
# After the first doubling (while the attention's block buffers still grow to their fixed size,
# `windows.BLOCK_ELEMENTS`), the Reformer's step grows by less than 2.2 per doubling of
# $L$: at most linear growth, below it while fixed costs (the weight gradients, those buffers) are
# a large share; the Transformer's by a factor above 2.3 that rises with $L$, towards the 4 of its
# $L^2$ attention weights, kept for every layer. At 2,048 tokens the Transformer needs more than
# ten times the Reformer's memory. The checks:

# %%
ref, base = sweep["reformer"], sweep["transformer"]
growth = {name: [s[2 * n] / s[n] for n in list(s)[:-1]] for name, s in sweep.items()}
print({name: [round(g, 2) for g in gs] for name, gs in growth.items()}, "per doubling of L")
ratios = [base[n] / ref[n] for n in SWEEP["transformer"]]
assert all(g < 2.2 for g in growth["reformer"][1:])  # at most linear after the first doubling
assert all(g > 2.3 for g in growth["transformer"])  # faster than linear ...
assert all(a < b for a, b in zip(growth["transformer"], growth["transformer"][1:]))  # ... and more
assert ratios[-1] > 10

# %% [markdown]
# At scale: the benchmark
# [`benchmarks/bench_reformer_memory.py`](../benchmarks/bench_reformer_memory.py) (`make
# benchmarks`, about 8 minutes; its `training_step` is the same measured call) runs a larger model
# (6 layers, $D = 256$, $H = 4$, $d_{ff} = 1024$, $R = 4$, $C = 64$, $V = 256$) up to
# $L = 65{,}536$, and the Transformer variant while it fits a 4 GiB budget. Its last results, as
# stored in `benchmarks/results/reformer_memory.json` (the README's table is drawn from them):

# %%
bench_file = experiments.RESULTS.parent / "benchmarks" / "results" / "reformer_memory.json"
bench = json.loads(bench_file.read_text())
stored = {
    kind: {
        r["length"]: r["peak_bytes"] for r in bench[key] if "error" not in r and "peak_bytes" in r
    }
    for kind, key in (("Reformer", "reformer"), ("Transformer", "baseline"))
}
for kind, rows in stored.items():
    print(kind + ":", ", ".join(f"L={n:,} {b / MiB:,.0f} MiB" for n, b in sorted(rows.items())))
big = max(stored["Reformer"])
print(f"Reformer at L = {big:,}: {stored['Reformer'][big] / GiB:.2f} GiB")
print(f"Transformer: longest L within the budget {max(stored['Transformer']):,}")

# %% [markdown]
# These are stored numbers of the benchmark's last run, not this notebook's: the two lines above
# say how far each model went.
#
# ## Recap
#
# - Position-wise layers can be computed a chunk of $S$ positions at a time (paper equation 10):
#   the chunked feed-forward and the chunked output loss give the same values and gradients as the
#   unchunked ones, to rounding (section 1, section 3).
# - Their peak memory falls linearly with $S$ down to a floor of what must exist whole (the
#   $(L, D)$ arrays and the weight gradients); a simple count of the arrays alive undershoots,
#   and a straight-line fit shows by how many arrays (sections 2 and 3).
# - With reversible layers and LSH attention, one training step needs several times less memory
#   than the plain Transformer, in the order Table 3 predicts, though each measured row sits
#   several times above the table's formula (section 4), while the exact model of
#   `memory_model.py`, which counts every array alive in each phase, predicts each measured peak
#   within 15%; at this short length the tricks cost time (observed, not asserted).
# - Over lengths, the Reformer's step grows at most linearly and the Transformer's faster and
#   faster, more than ten times the Reformer's at 2,048 tokens (section 5); the benchmark takes
#   the same comparison to 65,536 tokens.
#
# The numbers of this run, from the cells above:

# %%
print(f"feed-forward: {ff_peak_full / MiB:.1f} MiB unchunked, {ff_peaks[0] / MiB:.1f} at S = 16")
print(f"loss: {loss_peak_full / MiB:.1f} MiB unchunked, {loss_peaks[0] / MiB:.1f} at S = 16")
print(
    "one training step, activations: "
    + ", ".join(f"{n} {a / MiB:.1f}" for n, a in act.items())
    + " MiB"
)
print(
    "exact model / measured peak: "
    + ", ".join(f"{n} {exact[n].total / measured[n]['peak']:.2f}" for n in ARCHS)
)
print(
    f"length sweep: Transformer / Reformer at L = {SWEEP['transformer'][-1]:,}: {ratios[-1]:.1f}x"
)

# %% [markdown]
# Previous: [05 Reversible layers](05_reversible.ipynb).
# Next: [07 The duplication task](07_duplication.ipynb) trains small Reformers and asks whether
# LSH attention finds what full attention finds.
