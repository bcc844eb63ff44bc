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
# Notebook 05 made activation memory independent of depth. What is left is the memory of **one**
# layer at a time, and there the biggest arrays are not the $(l, d_{model})$ activations but two
# wide intermediates:
#
# - the feed-forward's hidden layer, $(l, d_{ff})$ with $d_{ff}$ typically $4 d_{model}$ (the paper
#   goes up to $d_{ff} = 4096$ and beyond);
# - the output logits, $(l, V)$, when the vocabulary $V$ is larger than $d_{model}$
#   (sub-word vocabularies have 32K entries).
#
# Both are computed **position by position**: row $i$ of $\mathrm{FeedForward}(Y)$ depends only on
# row $i$ of $Y$, and the loss at position $i$ only on the logits at $i$. So the sequence can be cut
# into $n_c$ chunks and processed one chunk at a time (paper equation 10, which calls their number
# $c$):
#
# $$
# Y_2 = \big[Y_2^{(1)}; \dots; Y_2^{(n_c)}\big]
#     = \big[X_2^{(1)} + \mathrm{FeedForward}(Y_1^{(1)}); \dots;
#            X_2^{(n_c)} + \mathrm{FeedForward}(Y_1^{(n_c)})\big].
# $$
#
# The result is the same numbers (each row is computed by exactly the same operations); only the
# largest intermediate alive at once shrinks from $(l, d_{ff})$ to $(l/n_c, d_{ff})$. The price is a
# Python loop over chunks: smaller matrix products, so somewhat lower throughput. The backward pass
# must be chunked too, otherwise it would rebuild the whole $(l, d_{ff})$ array to compute
# $\partial \mathcal{L} / \partial W_1 = \sum_i x_i^\top \bar h_i$: that sum runs over positions, so
# it is accumulated chunk by chunk.
#
# **Goal of this notebook:** show that chunked and unchunked layers agree, measure how peak memory
# falls with the chunk size, then put every trick together and compare with the paper's Table 3.

# %%
import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from minireformer import chunking, layers, memory, plotting, reformer

print("numpy", np.__version__)

# %% [markdown]
# ## 1. A wide feed-forward layer, chunked and not
#
# One sequence of $L = 1024$ positions at $d_{model} = 64$ through a feed-forward layer with
# $d_{ff} = 2048$, 32 times wider than the model: the hidden layer has $L \cdot d_{ff} \approx 2.1$
# million entries while input and output have 65 thousand each. In float64 we compare the chunked
# layer (chunks of 128 positions) with the unchunked one, output and all gradients.

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
print(
    "the chunked cache holds:",
    [f for f in cache_chunk._fields if f in ("x", "p")],
    "- no (L, d_ff) array",
)

# %% [markdown]
# Each output row is computed by the same operations in both, so outputs and input gradients agree
# to rounding (the matrix library may block a smaller product differently). The weight gradients
# are sums over positions: chunking changes the order of summation, which again moves only the last
# bits.

# %%
assert max(ff_errors.values()) < 1e-12, ff_errors
del cache_full, cache_chunk

# %% [markdown]
# ## 2. Peak memory against chunk size
#
# Now in float32, as in training, we measure the peak memory of the forward **and** backward pass
# of the same layer (`memory.measure_peak`: NumPy allocations during the call, inputs and
# parameters excluded) for chunk lengths $c$ (positions per chunk, from here on) from 16 to $L$.
# A rough prediction of the peak: the
# $(L, d_{model})$ arrays that must exist whole (output, input gradient: a few times $L\,d_{model}$)
# plus the $(c, d_{ff})$ arrays of one chunk alive at once. Counting them in the backward of one
# chunk: the pre-activation and the activation kept by the forward, the gradient arriving at the
# activation, and the GELU's backward temporaries (its tanh, cube and derivative terms), about
# nine in all.

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


ff_chunks = [16, 32, 64, 128, 256, 512, 1024]
t0 = time.perf_counter()
_, ff_peak_full = memory.measure_peak(ff_step, None)
ff_peaks = [memory.measure_peak(ff_step, c)[1] for c in tqdm(ff_chunks, desc="chunk sizes")]
print(f"measured in {time.perf_counter() - t0:.1f} s")
MiB = 2**20
print(f"unchunked: {ff_peak_full / MiB:7.1f} MiB")
for c, peak in zip(ff_chunks, ff_peaks):
    print(f"chunk {c:5d}: {peak / MiB:7.1f} MiB   ({ff_peak_full / peak:5.1f}x less)")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.loglog(ff_chunks, np.array(ff_peaks) / MiB, "o-", label="chunked, measured")
ax.axhline(ff_peak_full / MiB, color="C3", ls="--", label="unchunked, measured")
floor = 4 * B * L_FF * D_FF_MODEL * 4 / MiB  # four (L, d_model) float32 arrays
per_chunk = 9 * B * np.array(ff_chunks) * D_FF * 4 / MiB  # nine (c, d_ff) arrays
ax.loglog(ff_chunks, floor + per_chunk, "k:", label=r"$4\,L\,d_{model} + 9\,c\,d_{ff}$ floats")
ax.set_xlabel("chunk length c (positions)")
ax.set_ylabel("peak memory of forward + backward (MiB)")
ax.set_title(f"Feed-forward, L={L_FF}, d_model={D_FF_MODEL}, d_ff={D_FF}, float32")
ax.legend()
plotting.save_figure(fig, "06_ff_memory_vs_chunk")
plt.show()

# %% [markdown]
# Memory falls in proportion to the chunk length, as the count predicts, until what must exist
# anyway dominates (the $(L, d_{model})$ arrays, and the weight gradients accumulated over chunks,
# which the simple count leaves out); below that, smaller chunks only cost speed. The checks:
# chunk 64 needs several times less memory than the unchunked layer, and a chunk of the whole
# sequence costs about as much as no chunking.

# %%
assert ff_peaks[ff_chunks.index(64)] * 4 < ff_peak_full
assert ff_peaks[-1] > 0.5 * ff_peak_full
assert ff_peaks[0] < ff_peaks[-1] / 4

# %% [markdown]
# ## 3. The output layer and loss with a large vocabulary
#
# The last layer projects each position to $V$ logits, takes a log-softmax and picks the target's
# log-probability. With $V = 8192$ and $L = 1024$ the logits alone are 8.4 million floats, and
# the backward needs the softmax of all of them. The chunked loss computes $c$ positions at a time,
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
        loss, c_ce = layers.softmax_cross_entropy_forward(logits, targets)
        del logits
        return loss, layers.linear_backward(layers.softmax_cross_entropy_backward(1.0, c_ce), c_lin)
    loss, cache = chunking.chunked_output_loss_forward(h, w, b, targets, chunk_len=chunk_len)
    return loss, chunking.chunked_output_loss_backward(1.0, cache)


loss_full, grads_full = loss_step(h64, w_out64, b_out64, None)
loss_chunk, grads_chunk = loss_step(h64, w_out64, b_out64, 64)
loss_errors = {"loss": abs(float(loss_chunk) - float(loss_full)) / abs(float(loss_full))}
loss_errors.update({k: rel(a, b) for k, a, b in zip(("dh", "dw", "db"), grads_chunk, grads_full)})
print(f"loss unchunked {float(loss_full):.12f}, chunked {float(loss_chunk):.12f}")
for name, err in loss_errors.items():
    print(f"{name:4s} relative difference chunked vs unchunked: {err:.1e}")

# %%
assert max(loss_errors.values()) < 1e-12, loss_errors

# %%
h32, w_out32, b_out32 = (
    h64.astype(np.float32),
    w_out64.astype(np.float32),
    b_out64.astype(np.float32),
)
loss_chunks = [16, 32, 64, 128, 256, 512, 1024]
_, loss_peak_full = memory.measure_peak(loss_step, h32, w_out32, b_out32, None)
loss_peaks = [
    memory.measure_peak(loss_step, h32, w_out32, b_out32, c)[1]
    for c in tqdm(loss_chunks, desc="chunk sizes")
]
print(f"one (L, V) float32 array: {B * L_LOSS * VOCAB * 4 / MiB:.1f} MiB")
print(f"unchunked: {loss_peak_full / MiB:7.1f} MiB")
for c, peak in zip(loss_chunks, loss_peaks):
    print(f"chunk {c:5d}: {peak / MiB:7.1f} MiB   ({loss_peak_full / peak:5.1f}x less)")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.loglog(loss_chunks, np.array(loss_peaks) / MiB, "o-", label="chunked, measured")
ax.axhline(loss_peak_full / MiB, color="C3", ls="--", label="unchunked, measured")
grad_w = D_IN * VOCAB * 4 / MiB  # dW_out (d, V) exists whole in both
ax.loglog(
    loss_chunks,
    grad_w + 3 * B * np.array(loss_chunks) * VOCAB * 4 / MiB,
    "k:",
    label=r"$\bar W_{out}$ + $3\,c\,V$ floats",
)
ax.set_xlabel("chunk length c (positions)")
ax.set_ylabel("peak memory of loss forward + backward (MiB)")
ax.set_title(f"Output layer and loss, L={L_LOSS}, V={VOCAB}, float32")
ax.legend()
plotting.save_figure(fig, "06_loss_memory_vs_chunk")
plt.show()

# %% [markdown]
# The same picture: the unchunked loss holds several $(L, V)$ arrays (logits, softmax, their
# gradient); the chunked one holds a few $(c, V)$ arrays plus what must exist whole, here the
# $(d, V)$ gradient of $W_{out}$ (2 MiB).

# %%
assert loss_peaks[loss_chunks.index(64)] * 4 < loss_peak_full
assert loss_peaks[0] < loss_peaks[-1] / 4

# %% [markdown]
# ## 4. All the tricks together: Table 3, measured
#
# The paper's Table 3 gives the memory of each variant as the size of its largest intermediate
# ($b$ batch, $l$ length, $n_h$ heads, $n_l$ layers, $n_r$ hash rounds, and here $c$ the keys each
# query attends to in a round: twice the LSH chunk length, its own chunk and the one before):
#
# | model | memory |
# |---|---|
# | Transformer | $\max(b\,l\,d_{ff},\ b\,n_h\,l^2)\; n_l$ |
# | Reversible Transformer | $\max(b\,l\,d_{ff},\ b\,n_h\,l^2)$ |
# | Chunked Reversible Transformer | $\max(b\,l\,d_{model},\ b\,n_h\,l^2)$ |
# | LSH Transformer | $\max(b\,l\,d_{ff},\ b\,n_h\,n_r\,l\,c)\; n_l$ |
# | Reformer | $\max(b\,l\,d_{model},\ b\,n_h\,n_r\,l\,c)$ |
#
# Reversibility removes the factor $n_l$, chunking replaces $d_{ff}$ by $d_{model}$, and LSH
# attention replaces the $l^2$ attention matrix by $n_r\, l\, c$ (each of the $n_r\, l$ sorted
# queries attends to a few chunks of $c$ keys).

# %% [markdown]
# We measure one training step of each variant at one size, chosen so that every trick has
# something to remove: one sequence of $l = 512$ tokens, $d_{model} = 64$, $n_h = 2$ heads,
# $d_{ff} = 2048$ (so $l\,d_{ff} = 1$M floats exceeds the $n_h l^2 = 0.5$M attention weights),
# a vocabulary of 4096, 4 layers, float32; LSH with $n_r = 2$ rounds and chunks of 32; chunked
# feed-forward and loss with 64 positions per chunk. All five are the same `reformer` code with
# switches, so the differences are the tricks and nothing else:
#
# | variant | attention | reversible | chunked FF and loss |
# |---|---|---|---|
# | Transformer | full | no (stored activations) | no |
# | Reversible | full | yes | no |
# | Chunked reversible | full | yes | yes |
# | LSH Transformer | LSH | no | no |
# | Reformer | LSH | yes | yes |

# %%
ARCH_L = 512
arch_base = reformer.ReformerConfig(
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
arch_tokens = np.random.default_rng(10).integers(0, arch_base.vocab_size, size=(1, ARCH_L))
arch_sizes = dict(batch=1, length=ARCH_L, d_model=64, d_ff=2048, n_heads=2, n_layers=4)
arch_params = reformer.init_reformer(arch_base, np.random.default_rng(11))  # shared by all five

rows = {}
for name, switches in tqdm(ARCHS.items(), desc="variants"):
    cfg = dataclasses.replace(arch_base, **switches)
    t0 = time.perf_counter()
    (loss, grads), peak = memory.measure_peak(
        reformer.loss_and_grads, arch_params, arch_tokens, cfg, np.random.default_rng(12)
    )
    rows[name] = {
        "peak": peak,
        "grads": memory.tree_nbytes(grads),
        "table3": memory.table3_memory(name, n_hashes=2, chunk_len=32, **arch_sizes),
        "seconds": time.perf_counter() - t0,
        "loss": loss,
    }
for r in rows.values():
    r["activations"] = r["peak"] - r["grads"]

header = ("variant", "peak MiB", "- grads", "= rest", "Table 3", "time s")
print("{:20s} {:>9s} {:>8s} {:>7s} {:>8s} {:>7s}".format(*header))
for name, r in rows.items():
    print(
        f"{name:20s} {r['peak'] / MiB:9.1f} {r['grads'] / MiB:8.1f} {r['activations'] / MiB:7.1f} "
        f"{r['table3'] / MiB:8.2f} {r['seconds']:7.1f}"
    )
print("Table 3 formulas, in MiB of float32, for these sizes (c = 2 x chunk = 64 keys per query)")

# %% [markdown]
# "peak" is everything NumPy allocated during the step; "grads" is the gradient tree it returns
# (7.4 MiB, the same for all five since the weights are the same); "rest" is what the tricks act
# on: stored activations and the temporaries of forward and backward.

# %%
fig, ax = plt.subplots(figsize=(8, 4.2))
names = list(rows)
pos = np.arange(len(names))
ax.bar(
    pos - 0.2,
    [rows[n]["activations"] / MiB for n in names],
    0.4,
    label="measured (minus gradients)",
)
ax.bar(pos + 0.2, [rows[n]["table3"] / MiB for n in names], 0.4, label="Table 3 formula")
ax.set_xticks(pos, [n.replace("_", "\n") for n in names])
ax.set_ylabel("MiB")
ax.set_yscale("log")
ax.set_title(f"One training step, l={ARCH_L}, 4 layers, d_ff=2048, V=4096, float32")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
plotting.save_figure(fig, "06_table3_measured")
plt.show()

# %% [markdown]
# The measured numbers sit 4 to 12 times above Table 3's (the table names only the largest tensor
# of a layer; a real implementation keeps several tensors of that size, and temporaries; our LSH
# attention's sorting, hashing and masks add the most), but they move the way the table says:
#
# - **reversible** removes the factor $n_l$ from the activations, which here halves the peak (the
#   table's 4x assumes the activations are all there is; one layer's backward working memory
#   stays);
# - **chunking** removes the $d_{ff}$ (and vocabulary) term, leaving the $n_h l^2$ attention
#   weights of one layer;
# - **LSH** alone barely helps here, because with stored activations the $(l, d_{ff})$ arrays of
#   every layer dominate (Table 3 gives Transformer and LSH Transformer the same value here);
# - the **Reformer**, with all three, needs the least.
#
# The checks below are the strict decreases Table 3 predicts at this size, with a margin.

# %%
act = {n: r["activations"] for n, r in rows.items()}
assert act["transformer"] > 1.5 * act["reversible"]  # n_l factor removed
assert act["reversible"] > 1.5 * act["chunked_reversible"]  # d_ff term removed
assert act["chunked_reversible"] > 1.2 * act["reformer"]  # l^2 replaced by n_r l c
assert act["lsh"] > 3 * act["reformer"]  # reversibility and chunking on top of LSH
assert act["reformer"] == min(act.values())
assert act["transformer"] > 4 * act["reformer"]

# %% [markdown]
# ## Summary
#
# - Position-wise layers can be computed a chunk of positions at a time (paper equation 10): the
#   chunked feed-forward and the chunked output loss give the same values and gradients as the
#   unchunked ones, to rounding.
# - Peak memory then falls with the chunk length, from several $(l, d_{ff})$ or $(l, V)$ arrays to a
#   few $(c, d_{ff})$ or $(c, V)$ ones, down to the floor of the $(l, d_{model})$ arrays that must
#   exist whole; only speed is lost by going smaller.
# - Together with reversible layers and LSH attention, one training step needs several times less
#   memory than the plain Transformer, in the order Table 3 predicts.
