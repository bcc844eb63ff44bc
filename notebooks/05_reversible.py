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
# # 05 Reversible layers: backpropagation without storing activations
#
# Reformer paper (Kitaev, Kaiser, Levskaya 2020), section 3 "Reversible Transformer", building on
# RevNets (Gomez, Ren, Urtasun, Grosse 2017, "The Reversible Residual Network: Backpropagation
# Without Storing Activations", arXiv 1707.04585).
#
# **Learning objectives.** After this notebook you can
#
# - write the two coupling equations of a reversible block and invert them by hand;
# - explain why a block with random sub-layers (LSH hashing, dropout) must replay a *record* of
#   its forward pass, and what that record holds;
# - derive the backward pass of a block that rebuilds its inputs while it computes its gradients
#   (`reverse_and_grad`), and check it against an ordinary backward pass;
# - measure what reversibility buys (memory flat in depth) and what it costs (a recomputation).
#
# **Prerequisites.** [01](01_attention_cost.ipynb) (why stored activations grow with depth),
# [03](03_lsh_attention.ipynb) and [04](04_multiround_lsh.ipynb) (LSH attention, its rotations
# and buckets). Symbols follow the [notation](../README.md#notation) table: B batch, L length,
# D model width, H heads, Dh head width, R hash rounds, K buckets, C chunk length.
#
# **Code.** The block and its reverse: [`reversible.py`](../minireformer/reversible.py); its two
# sub-layers F (attention) and G (feed-forward) with their records:
# [`attention_sublayer.py`](../minireformer/attention_sublayer.py) and
# [`feedforward_sublayer.py`](../minireformer/feedforward_sublayer.py); the same equations written
# plainly: [`reference.py`](../minireformer/reference.py); the stack:
# [`reformer.py`](../minireformer/reformer.py); peak-memory measurement and Table 3:
# [`memory.py`](../minireformer/measuring/memory.py),
# [`table3.py`](../minireformer/measuring/table3.py).

# %%
import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import LogLocator

from minireformer import backend, reference, reformer, tree
from minireformer.measuring import gradcheck, memory, table3
from minireformer.reformer_config import ReformerConfig
from minireformer.teaching import plotting, schematics
from minireformer.teaching.progress import progress

print(backend.describe())

# %% [markdown]
# ## Why depth costs memory
#
# Backpropagation needs, for every layer, the input that layer saw in the forward pass: the
# gradient of a matrix product $xW$ with respect to $W$ is $x^\top \bar y$, so $x$ must still be
# around when $\bar y$ arrives. A Transformer of $n_l$ layers therefore keeps at least one
# $(B, L, D)$ array per layer alive between the forward and the backward pass, $B\,L\,D\,n_l$
# numbers in all, plus each layer's larger intermediates (the $(L, d_{ff})$ hidden layer of the
# feed-forward, the $(L, L)$ attention weights of every head).
#
# The paper's example (section 1): a batch of 8 sequences of 64K tokens each, at $D = 1024$, is
# $8 \cdot 65{,}536 \cdot 1024 \approx 0.5$ billion numbers, 2 GiB in float32, *for each layer*;
# twelve layers keep 24 GiB of activations before anything else is counted:

# %%
per_layer = table3.activation_bytes(batch=8, length=65_536, d_model=1024)
print(f"one layer's (B, L, D) activations: {per_layer / 2**30:.1f} GiB")
print(f"twelve layers: {12 * per_layer / 2**30:.0f} GiB")

# %%
assert per_layer == 2 * 2**30  # 2^3 * 2^16 * 2^10 numbers of 2^2 bytes: exactly 2 GiB

# %% [markdown]
# **Goal of this notebook:** make activation memory independent of the number of layers, by making
# each layer's input recomputable from its output.
#
# ## The reversible block, in one picture
#
# The activations are split into two streams. Each stream is updated by a function of the *other*
# one: $F$ (attention) reads $x_2$ and adds into $x_1$; $G$ (feed-forward) reads the new $y_1$ and
# adds into $x_2$. How the two streams begin and end is not in the paper but in its released code:
# trax (`tl.Dup()` before the reversible layers, `tl.Concatenate()` after them) and the Hugging
# Face port (`ReformerEncoder` concatenates the embedding with itself before the first layer)
# copy the embedding into both streams at the bottom and concatenate the two streams at the top,
# before the final layer norm and the output projection. This code does the same.

# %%
fig = schematics.reversible_block()
plotting.save_figure(fig, "05_reversible_block")
plt.show()

# %% [markdown]
# ## The RevNet idea
#
# A residual layer $y = x + F(x)$ cannot be undone in general: to get $x$ back from $y$ we would
# have to solve $x + F(x) = y$, a nonlinear equation. RevNets sidestep this with the two streams
# $(x_1, x_2)$ of the picture, each updated by a function of the other only (an additive coupling,
# as in NICE, Dinh et al. 2014):
#
# $$
# y_1 = x_1 + F(x_2), \qquad y_2 = x_2 + G(y_1).
# $$
#
# Undoing it needs only subtraction, in the opposite order:
#
# $$
# x_2 = y_2 - G(y_1), \qquad x_1 = y_1 - F(x_2).
# $$
#
# Each line of the inverse evaluates $G$ or $F$ at an argument we already have: $y_1$ is an output,
# and $x_2$ was just recovered. Nothing is asked of $F$ and $G$: they need not be invertible, they
# can be any layers. So during the backward pass we can walk down the stack, rebuilding each
# block's inputs from its outputs, and never store the intermediate activations at all. Only the
# top block's outputs are kept.
#
# ## The reversible Transformer
#
# The Reformer takes $F$ to be the attention sub-layer and $G$ the feed-forward sub-layer, each
# with its layer norm *inside* the residual branch (paper equations 7-9):
#
# $$
# Y_1 = X_1 + \mathrm{Attention}(\mathrm{LN}(X_2)), \qquad
# Y_2 = X_2 + \mathrm{FeedForward}(\mathrm{LN}(Y_1)).
# $$
#
# The paper's Figure 3 (right) reports that training curves with and without reversibility match
# (notebook [08](08_shakespeare.ipynb) redraws it at small scale).
#
# One subtlety makes the Reformer harder than a RevNet: its $F$ is *random*. LSH attention draws
# random rotations, and dropout draws masks. Rebuilding $X_1 = Y_1 - F(X_2)$ is exact only if $F$
# is evaluated with exactly the same hashes and masks as in the forward pass, so each block's
# forward returns a small **record** (rotations, buckets, dropout seeds) that is replayed during
# the reversal. The record holds integers and a few numbers per position, not activations.

# %% [markdown]
# ## 1. The equations, by hand, on a tiny example
#
# First with two made-up functions, a one-layer tanh network for $F$ and a squared one for $G$,
# on a $(3, 4)$ pair of streams. Any functions would do: the inverse never inverts them.

# %%
rng = np.random.default_rng(0)
w_f, w_g = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))


def f_toy(x):
    return np.tanh(x @ w_f)


def g_toy(x):
    return (x @ w_g) ** 2


x1, x2 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
y1 = x1 + f_toy(x2)  # forward
y2 = x2 + g_toy(y1)
x2_back = y2 - g_toy(y1)  # reverse: G first, then F
x1_back = y1 - f_toy(x2_back)
print("max |x1 - x1_back| =", np.abs(x1 - x1_back).max())
print("max |x2 - x2_back| =", np.abs(x2 - x2_back).max())

# %%
assert np.abs(x1 - x1_back).max() < 1e-12 and np.abs(x2 - x2_back).max() < 1e-12

# %% [markdown]
# Now the same two lines with the Reformer's real sub-layers. We build one reversible block with
# LSH attention (2 hash rounds, chunks of 16) and dropout 0.1, in float64, and run its `forward`.
# It returns the outputs and a record, nothing else:

# %%
D, L, VOCAB = 32, 128, 64
small = dict(vocab_size=VOCAB, d_model=D, n_heads=2, d_ff=64, n_hashes=2, chunk_len=16, max_len=L)
cfg1 = ReformerConfig(n_layers=1, attention_types=("lsh",), dropout=0.1, dtype="float64", **small)
rng = np.random.default_rng(0)
block = reformer.build_blocks(cfg1)[0]
p = reformer.init_reformer(cfg1, rng)["blocks"][0]
x1, x2 = rng.standard_normal((2, 1, L, D))  # two (B, L, D) streams

y1, y2, record = block.forward(x1, x2, p, rng)
print("record fields:", record._fields)
print("attention record:", {k: getattr(v, "shape", v) for k, v in record.f._asdict().items()})
print("feed-forward record:", record.g)

# %% [markdown]
# The attention record holds the rotations $(H, D_h, R, K/2)$ and the buckets $(B, H, R, L)$ it
# hashed with, and both records hold their dropout seed: integers, not activations. With them the
# block gives $F$ and $G$ as plain functions of a stream (`block.F`, `block.G`) that replay exactly
# the forward pass's randomness, and we can evaluate the block's equations by hand, or with the
# plain versions of `reference.py` (`reversible_forward`, `reversible_reverse`):


# %%
def F(x):  # Attention(LN(x)) with the recorded rotations and dropout seed
    return block.F(x, p, record)


def G(x):  # FeedForward(LN(x)) with the recorded dropout seed
    return block.G(x, p, record)


y1_hand = x1 + F(x2)  # forward, by hand
y2_hand = x2 + G(y1_hand)
x2_hand = y2 - G(y1)  # reverse, by hand
x1_hand = y1 - F(x2_hand)
x1_lib, x2_lib = block.reverse(y1, y2, p, record)  # reverse, library
y1_ref, y2_ref = reference.reversible_forward(x1, x2, F, G)  # the equations, reference.py

checks = {
    "forward by hand vs block.forward": max(abs(y1_hand - y1).max(), abs(y2_hand - y2).max()),
    "reference.reversible_forward vs block": max(abs(y1_ref - y1).max(), abs(y2_ref - y2).max()),
    "reverse by hand vs inputs": max(abs(x1_hand - x1).max(), abs(x2_hand - x2).max()),
    "block.reverse vs inputs": max(abs(x1_lib - x1).max(), abs(x2_lib - x2).max()),
}
for name, err in checks.items():
    print(f"{name:34s} max abs error {err:.1e}")

# %%
assert max(checks.values()) < 1e-12

# %% [markdown]
# Why the record matters: the same block run a second time draws new rotations and a new dropout
# seed, hence *different* functions $F$ and $G$. Reversing with that other record would subtract
# the wrong $G(Y_1)$ and $F(X_2)$, and nothing in the arithmetic would complain: the rebuilt inputs
# would simply be wrong, and so would every gradient computed from them. A record must travel with
# the outputs it was made with, so the library checks what it can: a record names the block that
# made it, the shapes it was made for (section 2 shows a record handed to the wrong block
# refused) and the call, through a fingerprint of the outputs it produced (two numbers per
# position). Reversing with another call's record is refused:

# %%
_, _, other_record = block.forward(x1, x2, p, np.random.default_rng(1))
try:
    block.reverse(y1, y2, p, other_record)
    refused = None
except ValueError as e:
    refused = str(e)
print("reverse with another forward's record:", refused)

# %%
assert refused is not None and "another call" in refused

# %% [markdown]
# ## 2. A 6-layer stack rebuilt from its top outputs
#
# The stack below cycles three kinds of attention, so that the reversal is tested with each:
#
# - **LSH** attention (notebooks 03-04): hash, sort by bucket, cut into chunks of $C$, attend
#   within the chunk and the one before, unsort;
# - **local** attention: the same chunks of $C$ positions and the same look-back window, but in
#   the sequence's own order, with no hashing: each position attends to the positions of its chunk
#   and of the chunk before ([`local_attention.py`](../minireformer/local_attention.py),
#   `local_attention_forward`). It is deterministic, costs $O(L\,C)$ like LSH, and sees only
#   nearby positions; the paper's enwik8 models and ours (notebook 08) mix it with LSH layers;
# - **full** attention: every position attends to every position, $O(L^2)$.
#
# We run 6 reversible blocks forward, cycling LSH, local and full attention, keep only the top
# outputs $(Y_1, Y_2)$ and the per-block records, throw every intermediate activation away, and walk
# back down with `reverse`. The embedding enters both streams, so at the bottom both rebuilt
# streams must equal it.

# %%
cfg6 = ReformerConfig(
    n_layers=6, attention_types=("lsh", "local", "full"), dropout=0.1, dtype="float64", **small
)
rng = np.random.default_rng(1)
blocks6 = reformer.build_blocks(cfg6)
params6 = reformer.init_reformer(cfg6, rng)
x = rng.standard_normal((1, L, D))  # stands in for the embedding

y1, y2 = x, x
records = []
for blk, p_blk in zip(blocks6, params6["blocks"]):
    y1, y2, rec = blk.forward(y1, y2, p_blk, rng)
    records.append(rec)  # no activations kept, only the record
top = (y1, y2)
for blk, p_blk, rec in zip(blocks6[::-1], params6["blocks"][::-1], records[::-1]):
    y1, y2 = blk.reverse(y1, y2, p_blk, rec)
rebuild_err = max(abs(y1 - x).max(), abs(y2 - x).max()) / abs(x).max()
print("attention per layer:", [cfg6.attention_type(i) for i in range(6)])
print(f"top outputs differ from the input by {abs(top[0] - x).max():.2f} (max abs)")
print(f"input rebuilt from the top outputs: relative error {rebuild_err:.1e}")

# %%
assert rebuild_err < 1e-12

# %% [markdown]
# Walking down, each block must get its own record. Handing block 1 the record of block 0 is
# refused rather than silently rebuilding wrong activations:

# %%
try:
    blocks6[1].reverse(*top, params6["blocks"][1], records[0])
    refused = False
except ValueError as err:
    refused = True
    print("ValueError:", err)

# %%
assert refused

# %% [markdown]
# ## 3. How exact is "exact"? Reconstruction error against depth
#
# In exact arithmetic the reversal is perfect. In floating point each block's forward rounds
# $X_1 + F(X_2)$ to the nearest representable number, and the reversal subtracts a recomputed
# $F(X_2)$ that was itself evaluated at a slightly wrong $X_2$. The errors compound as we walk down
# the stack. We build stacks of 1 to 64 blocks (the same three attention types, no dropout), run
# each forward from the same input, reverse it to the bottom, and record the relative error
# $\max|X - \hat X| / \max|X|$, in float32 (machine epsilon $\approx 1.2 \times 10^{-7}$) and
# float64 ($\approx 2.2 \times 10^{-16}$). The 64-block stack's first $n$ blocks are the $n$-block
# stack, so one set of weights serves every depth.

# %%
DEPTHS = [1, 2, 4, 8, 16, 32, 64]


def reconstruction_errors(dtype, seed=2):
    """Relative error of the input rebuilt from the top of stacks of each depth in DEPTHS."""
    cfg = ReformerConfig(
        n_layers=max(DEPTHS), attention_types=("lsh", "local", "full"), dtype=dtype, **small
    )
    rng = np.random.default_rng(seed)
    blks, prm = reformer.build_blocks(cfg), reformer.init_reformer(cfg, rng)["blocks"]
    x = rng.standard_normal((1, L, D)).astype(dtype)
    errors = []
    for depth in DEPTHS:
        y1, y2, recs = x, x, []
        for blk, p_blk in zip(blks[:depth], prm[:depth]):
            y1, y2, rec = blk.forward(y1, y2, p_blk, rng)
            recs.append(rec)
        for blk, p_blk, rec in zip(blks[:depth][::-1], prm[:depth][::-1], recs[::-1]):
            y1, y2 = blk.reverse(y1, y2, p_blk, rec)
        errors.append(float(max(abs(y1 - x).max(), abs(y2 - x).max()) / abs(x).max()))
    return errors


t0 = time.perf_counter()
rec_err = {dt: reconstruction_errors(dt) for dt in progress(["float32", "float64"], desc="dtypes")}
print(f"{time.perf_counter() - t0:.1f} s")
print("depth  float32   float64")
for i, depth in enumerate(DEPTHS):
    print(f"{depth:5d}  {rec_err['float32'][i]:.1e}  {rec_err['float64'][i]:.1e}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for dt, eps in (("float32", np.finfo(np.float32).eps), ("float64", np.finfo(np.float64).eps)):
    (line,) = ax.loglog(DEPTHS, rec_err[dt], "o-", label=f"{dt}, measured")
    ax.axhline(eps, color=line.get_color(), ls=":", lw=1, label=f"{dt} machine epsilon")
ax.set_xscale("log", base=2)
ax.set_xticks(DEPTHS, [str(d) for d in DEPTHS])
ax.yaxis.set_major_locator(LogLocator(base=10, numticks=20))  # a label at every decade
ax.set_xlabel("number of reversible blocks")
ax.set_ylabel(r"relative error of the rebuilt input")
ax.set_title("Rebuilding the input from the top of the stack")
ax.grid(alpha=0.3, which="major")
ax.legend(fontsize=8, loc="center right")
plotting.save_figure(fig, "05_reconstruction_error_vs_depth")
plt.show()

# %% [markdown]
# The checks: the error grows with depth (64 blocks at least 10 times one block's, in both
# dtypes) but stays within a few hundred machine epsilons (below $500\,\epsilon$) even at 64
# blocks, far below anything that matters for the gradient of a training step; float32 is worse
# than float64 at every depth.
#
# Observation (not asserted): the growth is roughly proportional to depth, as if each block added
# an independent rounding error of its own, amplified a little by each block's sensitivity.
#
# Observation (not asserted): these points are rounding errors, and rounding depends on the order
# in which the machine's BLAS library sums the products of a matrix multiplication. That order
# depends on the CPU kernel OpenBLAS picks (and on the NumPy build that ships it), not on seeds or
# threads: on this machine the figure is the same byte for byte on every rebuild, but forcing
# another kernel (`OPENBLAS_CORETYPE=Haswell` where the CPU would pick another) moved the float32
# points by up to 70% when this was written. A rebuild on another CPU or NumPy version
# therefore redraws this figure slightly, as it would a timing; the checks above hold on either.

# %%
for dt in ("float32", "float64"):
    eps = float(np.finfo(dt).eps)
    assert rec_err[dt][-1] > 10 * rec_err[dt][0], dt  # grows with depth
    assert max(rec_err[dt]) < 500 * eps, dt  # within a few hundred machine epsilons
assert all(e32 > e64 for e32, e64 in zip(rec_err["float32"], rec_err["float64"]))

# %% [markdown]
# ## 4. Gradients: the reversible stack against stored activations
#
# ### The backward pass of one block, in one picture
#
# Walking down, a block receives its outputs $(Y_1, Y_2)$ and their gradients, and hands the block
# below its inputs $(X_1, X_2)$ and their gradients. Both come from one recomputation of each
# sub-layer: $G$ first (it was applied last), then $F$.

# %%
fig = schematics.reversible_block(backward=True)
plotting.save_figure(fig, "05_reversible_backward")
plt.show()

# %% [markdown]
# ### The backward pass of one block, derived
#
# Write $\bar a = \partial \mathcal{L}/\partial a$. We arrive at a block holding its outputs
# $(Y_1, Y_2)$ and their gradients $(\bar Y_1, \bar Y_2)$. Reading the forward equations
# backwards:
#
# 1. Recompute $G(Y_1)$ (keeping its cache) and recover $X_2 = Y_2 - G(Y_1)$.
# 2. $Y_1$ feeds both the output $Y_1$ and, through $G$, the output $Y_2$, so its total gradient is
#    $$\hat Y_1 := \bar Y_1 + J_G(Y_1)^{\top} \bar Y_2,$$
#    with $J_G$ the Jacobian of $G$; $G$'s parameter gradients come with it: one backward pass of
#    $G$ with upstream gradient $\bar Y_2$.
# 3. Recompute $F(X_2)$ (same hashes, same dropout) and recover $X_1 = Y_1 - F(X_2)$.
# 4. $X_1$ reaches the loss only through $Y_1$, with identity Jacobian: $\bar X_1 = \hat Y_1$.
# 5. $X_2$ feeds $Y_2$ directly and $Y_1$ through $F$:
#    $$\bar X_2 = \bar Y_2 + J_F(X_2)^{\top} \hat Y_1,$$
#    one backward pass of $F$ with upstream gradient $\hat Y_1$, which also gives
#    $F$'s parameter gradients.
#
# That is `reverse_and_grad`: each sub-layer is run forward once more and backward once, and at any
# moment only one block's intermediates are alive. Memory stops depending on depth; the price is
# the recomputation, one more forward pass of every block, measured at the end of this section.
#
# Since the reversal is a different *order of computation* of the same function, its gradients
# must equal those of an ordinary backward pass with stored activations up to rounding. We check
# that on the whole language model, in float64.

# %% [markdown]
# ### Checked on the whole language model
#
# `reformer.loss_and_grads` runs the same blocks either way: `reversible=True` keeps only the top
# outputs and walks down with `reverse_and_grad`; `reversible=False` keeps every block's cache and
# calls the ordinary backward. Same weights, same random draws (same seed), float64, with LSH, local
# and full attention, dropout 0.1, and chunked feed-forward and loss:

# %%
cfg_rev = ReformerConfig(
    n_layers=6,
    attention_types=("lsh", "local", "full"),
    dropout=0.1,
    ff_chunk=32,
    loss_chunk=32,
    dtype="float64",
    **small,
)
cfg_stored = dataclasses.replace(cfg_rev, reversible=False)
params = reformer.init_reformer(cfg_rev, np.random.default_rng(3))
tokens = np.random.default_rng(4).integers(0, VOCAB, size=(2, L + 1))  # the model reads L

loss_rev, grads_rev = reformer.loss_and_grads(params, tokens, cfg_rev, np.random.default_rng(5))
loss_st, grads_st = reformer.loss_and_grads(params, tokens, cfg_stored, np.random.default_rng(5))

worst, worst_path = 0.0, None
for (path, g_rev), g_st in zip(tree.leaves_with_paths(grads_rev), tree.leaves(grads_st)):
    err = gradcheck.rel_error(g_rev, g_st)
    if err >= worst:
        worst, worst_path = err, tree.path_str(path)
print(f"loss: reversible {loss_rev:.15f}, stored {loss_st:.15f}")
print(f"{len(tree.leaves(grads_rev))} gradient arrays; largest relative difference {worst:.1e}")
print(f"  (at {worst_path})")

# %%
assert abs(loss_rev - loss_st) < 1e-12
assert worst < 1e-9

# %% [markdown]
# ### What the recomputation costs in time
#
# A stored-activation step runs every block forward once and backward once; a reversible step
# runs every block forward a second time on the way down. We time, in float32, the forward pass
# alone (`forward_logits`), a stored step and a reversible step of the same 6-layer model, best of
# three each, and compare the reversible step's extra time with the forward pass.

# %%
cfg_time = dataclasses.replace(cfg_rev, dtype="float32", dropout=0.0, max_len=512)
params_time = reformer.init_reformer(cfg_time, np.random.default_rng(3))
tokens_time = np.random.default_rng(4).integers(0, VOCAB, size=(2, 513))  # reads 512


def best_time(fn, repeats=3):
    """The fastest of ``repeats`` wall-clock runs of ``fn()``, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


step_times = {
    "forward only": best_time(
        lambda: reformer.forward_logits(
            params_time, tokens_time[:, :-1], cfg_time, np.random.default_rng(5)
        )
    ),
    "stored": best_time(
        lambda: reformer.loss_and_grads(
            params_time,
            tokens_time,
            dataclasses.replace(cfg_time, reversible=False),
            np.random.default_rng(5),
        )
    ),
    "reversible": best_time(
        lambda: reformer.loss_and_grads(
            params_time, tokens_time, cfg_time, np.random.default_rng(5)
        )
    ),
}
for name, seconds in step_times.items():
    print(f"{name:13s} {1000 * seconds:7.1f} ms")
extra = step_times["reversible"] - step_times["stored"]
print(
    f"reversible - stored = {1000 * extra:.1f} ms, "
    f"{extra / step_times['forward only']:.2f} forward passes"
)

# %% [markdown]
# Observation (not asserted: wall-clock times on a shared CPU vary by tens of percent): the extra
# time of the reversible step, printed above in units of the timed forward pass, is the
# recomputation's price. Walking down, each block runs its forward again with its backward
# interleaved group of heads by group of heads and chunk by chunk, on arrays that are no longer
# in the CPU's caches, so the price is not a fixed fraction of a forward pass; the ratio of the two
# steps is printed in the recap.

# %% [markdown]
# ## 5. Memory against depth: measured and predicted
#
# Now the point of it all. We measure the peak memory of one training step (`loss_and_grads`:
# forward, loss, backward) with `memory.measure_peak`, which counts the NumPy allocations made
# during the call (the parameters already exist and are not counted; the gradient tree being built
# is). Depths 1 to 24, with full attention and no chunking, at a small size (one sequence of 512
# tokens, $D = 32$, $H = 2$ heads, $d_{ff} = 128$) so that the sweep takes seconds; float32.
#
# Table 3 predicts, for full attention, $\max(B\,L\,d_{ff},\ B\,H\,L^2)\, n_l$ for stored
# activations and $\max(B\,L\,d_{ff},\ B\,H\,L^2)$ for the reversible model: here the attention
# matrix, $H L^2 = 2 \cdot 512^2$ floats = 2 MiB, dominates, kept once per layer or once in
# all. The table names the largest tensor of a layer, not every array a real implementation keeps,
# so we compare **slopes** (bytes per extra layer) and, for a closer prediction, count what our
# stored-activation blocks keep (`table3.transformer_activation_bytes`, and below).

# %%
MEM = dict(vocab_size=VOCAB, d_model=32, n_heads=2, d_ff=128, max_len=512, dtype="float32")
MEM_L = 512
MEM_DEPTHS = [1, 2, 4, 8, 12, 16, 20, 24]
mem_tokens = np.random.default_rng(6).integers(0, VOCAB, size=(1, MEM_L + 1))  # reads MEM_L


def step_peak(n_layers, reversible):
    """Peak bytes of one training step and the bytes of its gradient tree."""
    cfg = ReformerConfig(n_layers=n_layers, attention_types=("full",), reversible=reversible, **MEM)
    params = reformer.init_reformer(cfg, np.random.default_rng(7))
    (_, grads), peak = memory.measure_peak(reformer.loss_and_grads, params, mem_tokens, cfg)
    return peak, memory.tree_nbytes(grads)


t0 = time.perf_counter()
peaks = {"stored": [], "reversible": []}
grad_bytes = []
for n in progress(MEM_DEPTHS, desc="depths"):
    stored_peak, g_bytes = step_peak(n, reversible=False)
    peaks["stored"].append(stored_peak)
    peaks["reversible"].append(step_peak(n, reversible=True)[0])
    grad_bytes.append(g_bytes)
print(f"{time.perf_counter() - t0:.1f} s")

sizes = dict(batch=1, length=MEM_L, d_model=32, d_ff=128, n_heads=2)
predicted = {
    "stored": [table3.table3_memory("transformer", n_layers=n, **sizes) for n in MEM_DEPTHS],
    "reversible": [table3.table3_memory("reversible", n_layers=n, **sizes) for n in MEM_DEPTHS],
}
counted = [table3.transformer_activation_bytes(n_layers=n, **sizes) for n in MEM_DEPTHS]
MiB = 2**20
print("layers  stored MiB  reversible MiB  gradients MiB  Table 3 stored / reversible MiB")
for i, n in enumerate(MEM_DEPTHS):
    print(
        f"{n:6d}  {peaks['stored'][i] / MiB:10.2f}  {peaks['reversible'][i] / MiB:14.2f}  "
        f"{grad_bytes[i] / MiB:13.2f}  {predicted['stored'][i] / MiB:8.2f} / "
        f"{predicted['reversible'][i] / MiB:.2f}"
    )


def slope(values):
    return float(np.polyfit(MEM_DEPTHS, values, 1)[0])


slopes = {k: slope(v) for k, v in peaks.items()}
slope_grads = slope(grad_bytes)
print(
    f"\nbytes per extra layer: stored {slopes['stored'] / MiB:.3f} MiB, "
    f"reversible {slopes['reversible'] / MiB:.3f} MiB (of which gradients "
    f"{slope_grads / MiB:.3f} MiB)"
)
print(
    f"Table 3 slope (H L^2 floats): {slope(predicted['stored']) / MiB:.3f} MiB; "
    f"everything the stored blocks keep (table3.transformer_activation_bytes): "
    f"{slope(counted) / MiB:.3f} MiB"
)
print(f"stored / reversible at 24 layers: {peaks['stored'][-1] / peaks['reversible'][-1]:.1f}x")

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
for key, color in (("stored", "C3"), ("reversible", "C0")):
    ax.plot(MEM_DEPTHS, np.array(peaks[key]) / MiB, "o-", color=color, label=f"{key}, measured")
    # Table 3 gives the growth, not the constant: anchor its line at the measured 1-layer peak.
    anchored = np.array(predicted[key]) - predicted[key][0] + peaks[key][0]
    ax.plot(MEM_DEPTHS, anchored / MiB, "--", color=color, label=f"{key}, Table 3 growth")
ax.plot(MEM_DEPTHS, np.array(grad_bytes) / MiB, ":", color="gray", label="gradient tree")
ax.set_xlabel("number of layers $n_l$")
ax.set_ylabel("peak memory of one training step (MiB)")
ax.set_title(f"One training step, L={MEM_L}, full attention, float32")
ax.legend(fontsize=8)
plotting.save_figure(fig, "05_memory_vs_depth")
plt.show()

# %% [markdown]
# Stored activations grow linearly. Each extra layer costs what its block keeps for the backward
# pass, which we can count exactly: the float arrays of `table3.transformer_activation_bytes`
# (among them the Table 3 term, the $2 \cdot 512^2$ attention weights) and the layer's share of
# the gradient tree. The $(L, L)$ causal mask is not kept: a masked weight is exactly 0 after the
# softmax, so the backward needs no mask unless padding empties a whole row (`attention.py`).
# The reversible model is flat up to the gradient tree, which grows with depth because every layer
# has its own weights (Table 3 counts activations only; the parameters and their gradients are the
# other memory the paper's introduction mentions, and the optimizer's), and up to its records,
# whose largest part is the fingerprint, $2\,B\,L$ float64 numbers per block.
#
# The checks: the stored slope equals that count to within 5%; the reversible slope exceeds the
# gradient tree's by less than four records; at 24 layers the stored step needs more than four
# times the reversible step's memory.

# %%
fingerprint_bytes = 2 * 1 * MEM_L * 8  # (2, B, L) float64 per block's record
stored_count = slope(counted) + slope_grads
print(
    f"stored: measured {slopes['stored'] / MiB:.3f} MiB per layer, counted "
    f"{stored_count / MiB:.3f} MiB (float arrays {slope(counted) / MiB:.3f} + gradients "
    f"{slope_grads / MiB:.3f})"
)
print(
    f"reversible: measured {slopes['reversible'] / 2**10:.1f} KiB per layer, gradients "
    f"{slope_grads / 2**10:.1f} KiB, one fingerprint {fingerprint_bytes / 2**10:.1f} KiB"
)

# %%
assert abs(slopes["stored"] - stored_count) < 0.05 * stored_count
assert slope_grads <= slopes["reversible"] < slope_grads + 4 * fingerprint_bytes
assert peaks["stored"][-1] > 4 * peaks["reversible"][-1]

# %% [markdown]
# ## Recap
#
# - A reversible block $Y_1 = X_1 + F(X_2)$, $Y_2 = X_2 + G(Y_1)$ is undone by two subtractions,
#   whatever $F$ and $G$ are; the Reformer uses $F$ = attention and $G$ = feed-forward, each with
#   its layer norm inside, and (as trax and Hugging Face do) duplicates the embedding into both
#   streams at the bottom and concatenates them at the top.
# - Random sub-layers (LSH hashing, dropout) replay their forward's choices: each block's forward
#   returns a small record (rotations, buckets, seeds, a fingerprint), and a record of another
#   block or another call is refused.
# - A stack is rebuilt from its top outputs to rounding error, which grows with depth (section 3).
# - `reverse_and_grad` recomputes each sub-layer once and gives the same gradients as storing every
#   activation (section 4), at the price of the recomputation's time.
# - Peak training memory grows linearly in depth with stored activations, by what each block keeps
#   (counted exactly, section 5); with reversible layers only the parameter gradients grow.
#
# The numbers of this run, each computed in the cells above:

# %%
print(f"rebuilt 6-layer stack, float64: relative error {rebuild_err:.1e}")
print(
    f"64 blocks: float32 {rec_err['float32'][-1]:.1e}, float64 {rec_err['float64'][-1]:.1e} "
    f"(relative error of the rebuilt input)"
)
print(f"reversible against stored gradients, 6-layer LM, float64: {worst:.1e}")
print(
    f"a reversible step takes {step_times['reversible'] / step_times['stored']:.2f}x a stored one"
)
print(
    f"memory per extra layer: stored {slopes['stored'] / MiB:.2f} MiB, "
    f"reversible {slopes['reversible'] / MiB:.3f} MiB; "
    f"at {MEM_DEPTHS[-1]} layers {peaks['stored'][-1] / peaks['reversible'][-1]:.1f}x less"
)

# %% [markdown]
# What remains is the memory of *one* layer: its $(L, d_{ff})$ feed-forward hidden layer and, with
# a large vocabulary, the $(L, V)$ logits.
#
# Previous: [04 Multi-round LSH and its backward pass](04_multiround_lsh.ipynb).
# Next: [06 Chunking](06_chunking.ipynb) shrinks those with chunking and puts all the tricks
# together.
