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
# # Exercises 05: reversible layers
#
# Exercises for [notebook 05](../notebooks/05_reversible.ipynb). You will undo a reversible block,
# write its backward pass that rebuilds the inputs while it computes the gradients, and count the
# memory a stored-activation block keeps. Every check compares your function with the library
# (`minireformer.reversible`, `minireformer.reformer`) or with finite differences, in float64.

# %%
import numpy as np

from minireformer import reformer
from minireformer.measuring import memory, memory_model
from minireformer.reformer_config import ReformerConfig
from minireformer.teaching import grading

D, L = 8, 16
small = dict(vocab_size=16, d_model=D, n_heads=2, d_ff=16, n_hashes=2, chunk_len=4, max_len=L)
cfg = ReformerConfig(n_layers=1, attention_types=("lsh",), dropout=0.1, dtype="float64", **small)
rng = np.random.default_rng(0)
block = reformer.build_blocks(cfg)[0]
p = reformer.init_reformer(cfg, rng)["blocks"][0]
x1, x2 = rng.standard_normal((2, 1, L, D))  # two (B, L, D) streams
y1, y2, record = block.forward(x1, x2, p, rng)


# The block's two sub-layers, replaying the recorded hashes and dropout seeds.
def F(x):
    """Attention(LN(x)), (B, L, D) -> (B, L, D)."""
    return block.F(x, p, record)


def G(x):
    """FeedForward(LN(x)), (B, L, D) -> (B, L, D)."""
    return block.G(x, p, record)


# %% [markdown]
# ### Exercise 5.1: the reverse of a block
#
# A reversible block computes $y_1 = x_1 + F(x_2)$ and $y_2 = x_2 + G(y_1)$. Implement
# `reverse(y1, y2, F, G)`, which returns the inputs $(x_1, x_2)$ from the outputs alone, each
# $(B, L, D)$. $F$ and $G$ are plain functions; do not try to invert them.


# %%
def reverse(y1, y2, F, G):
    """(x1, x2) from (y1, y2): x2 = y2 - G(y1), then x1 = y1 - F(x2)."""
    # BEGIN SOLUTION
    x2 = y2 - G(y1)
    x1 = y1 - F(x2)
    return x1, x2
    # END SOLUTION


# %%
with grading.own_work("Exercise 5.1", allowed=(F, G)):
    x1_back, x2_back = reverse(y1, y2, F, G)
x1_lib, x2_lib = block.reverse(y1, y2, p, record)
grading.check_close("Exercise 5.1: x1 against block.reverse", x1_back, x1_lib, rtol=1e-12)
grading.check_close("Exercise 5.1: x2 against block.reverse", x2_back, x2_lib, rtol=1e-12)
grading.check_close("Exercise 5.1: x1 against the true input", x1_back, x1, rtol=1e-12)

# %% [markdown]
# ### Question 5.1
#
# Why must $x_2$ be recovered before $x_1$, and why does $G$ read $y_1$ rather than $x_1$?
#
# <!-- BEGIN ANSWER -->
# To compute $x_1 = y_1 - F(x_2)$ we need $x_2$, which is not an output; $x_2 = y_2 - G(y_1)$
# needs only outputs, so it comes first. $G$ reads $y_1$ so that its argument is available at the
# top: had the block used $y_2 = x_2 + G(x_1)$, undoing it would need $x_1$, which in turn needs
# $x_2$: a circle. Each coupling must read a stream that the inverse already has.
# <!-- END ANSWER -->

# %% [markdown]
# ### Question 5.2
#
# The block above has dropout. What would happen if `F` drew a fresh dropout mask each time it is
# called, instead of replaying the recorded seed? Would anything raise an error?
#
# <!-- BEGIN ANSWER -->
# $F(x_2)$ in the reversal would be a different function from the one in the forward pass, so
# $x_1 = y_1 - F(x_2)$ would be wrong by the difference of the two dropout masks' outputs, and
# every gradient computed from the rebuilt activations would be wrong too. Nothing in the
# arithmetic notices: subtraction works on any numbers. That is why the library keeps a record of
# every random choice and refuses a record of another call (its fingerprint of the outputs).
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 5.2: reverse and backpropagate in one pass
#
# Walking down a reversible stack, a block receives its outputs $(y_1, y_2)$ and the gradients
# $(\bar y_1, \bar y_2)$ of the loss with respect to them. Implement
# `reverse_and_grad(y1, y2, dy1, dy2, f_fb, g_fb)` returning `(x1, x2, dx1, dx2)`:
#
# 1. $G$'s output and vector-Jacobian product at $y_1$: `g_out, g_vjp = g_fb(y1, dy2)`, where
#    `g_vjp` $= J_G(y_1)^\top \bar y_2$; then $x_2 = y_2 - G(y_1)$;
# 2. $\hat y_1 = \bar y_1 + J_G(y_1)^\top \bar y_2$ ($y_1$ feeds $y_2$ through $G$), and
#    $\bar x_1 = \hat y_1$;
# 3. `f_out, f_vjp = f_fb(x2, dx1)`, then $x_1 = y_1 - F(x_2)$ and
#    $\bar x_2 = \bar y_2 + J_F(x_2)^\top \hat y_1$.
#
# `f_fb(x, dout)` and `g_fb(x, dout)` return the sub-layer's output at `x` and
# $J^\top$ `dout`, both $(B, L, D)$. Call each exactly once.


# %%
def reverse_and_grad(y1, y2, dy1, dy2, f_fb, g_fb):
    """Inputs and their gradients from the outputs and theirs: (x1, x2, dx1, dx2)."""
    # BEGIN SOLUTION
    g_out, g_vjp = g_fb(y1, dy2)
    x2 = y2 - g_out
    dx1 = dy1 + g_vjp
    f_out, f_vjp = f_fb(x2, dx1)
    x1 = y1 - f_out
    dx2 = dy2 + f_vjp
    return x1, x2, dx1, dx2
    # END SOLUTION


# %% [markdown]
# First against the library's `block.reverse_and_grad` on the real block (LSH attention and
# dropout, replayed from the record):

# %%
dy1, dy2 = rng.standard_normal((2, 1, L, D))


def f_fb(x, dout):
    out, dx, _ = block.F_backward(x, p, record, dout)
    return out, dx


def g_fb(x, dout):
    out, dx, _ = block.G_backward(x, p, record, dout)
    return out, dx


calls = []


def counted(fb, name):
    """``fb``, counting its calls in ``calls``."""

    def call(x, dout):
        calls.append(name)
        return fb(x, dout)

    return call


with grading.own_work("Exercise 5.2", allowed=(f_fb, g_fb)):
    mine = reverse_and_grad(y1, y2, dy1, dy2, counted(f_fb, "F"), counted(g_fb, "G"))
grading.check_true(
    "Exercise 5.2: F and G each run exactly once",
    calls == ["G", "F"],
    f"the sub-layers ran in the order {calls}: G once (at y1), then F once (at x2) is all the "
    f"pass needs; each extra run costs a whole sub-layer",
)
lib = block.reverse_and_grad(y1, y2, dy1, dy2, p, record)[:4]
for name, got, expected in zip(("x1", "x2", "dx1", "dx2"), mine, lib):
    grading.check_close(f"Exercise 5.2: {name} against block.reverse_and_grad", got, expected)

# %% [markdown]
# Then against finite differences, on a block small enough to differentiate numerically: toy
# sub-layers $F(x) = \tanh(x W_F)$ and $G(x) = (x W_G)^2$ on $(3, 4)$ streams, and the scalar
# $\mathcal{L} = \sum \bar y_1 \odot y_1 + \sum \bar y_2 \odot y_2$, whose gradients with respect
# to the outputs are exactly $(\bar y_1, \bar y_2)$.

# %%
w_f, w_g = rng.standard_normal((2, 4, 4))
a1, a2 = rng.standard_normal((2, 3, 4))  # the toy block's inputs
da1, da2 = rng.standard_normal((2, 3, 4))  # upstream gradients


def f_toy_fb(x, dout):
    out = np.tanh(x @ w_f)
    return out, (dout * (1 - out**2)) @ w_f.T


def g_toy_fb(x, dout):
    z = x @ w_g
    return z**2, (2 * z * dout) @ w_g.T


def toy_loss(x1_, x2_):
    b1 = x1_ + f_toy_fb(x2_, 0 * x2_)[0]
    b2 = x2_ + g_toy_fb(b1, 0 * b1)[0]
    return float(np.sum(da1 * b1) + np.sum(da2 * b2))


b1 = a1 + f_toy_fb(a2, 0 * a2)[0]
b2 = a2 + g_toy_fb(b1, 0 * b1)[0]
toy = reverse_and_grad(b1, b2, da1, da2, f_toy_fb, g_toy_fb)
grading.check_close("Exercise 5.2: toy x1 rebuilt", toy[0], a1, rtol=1e-12)
grading.check_gradient("Exercise 5.2: dx1", lambda x: toy_loss(x, a2), toy[2], a1)
grading.check_gradient("Exercise 5.2: dx2", lambda x: toy_loss(a1, x), toy[3], a2)

# %% [markdown]
# ### Exercise 5.3: what a stored-activation block keeps
#
# Without reversibility every block keeps, until the backward pass reaches it, what its backward
# needs. For the library's block with full shared-QK attention run with stored activations
# (`reversible=False`; float32, 4 bytes a number, $D_h = D / H$), that is:
#
# - two layer norms, each keeping its normalised input and its output: $4$ arrays $(B, L, D)$;
# - attention: the queries $Q$, the values $V$ and the merged context, $3$ arrays
#   $(B, L, H D_h)$; the unit-length keys $Q / |Q|$, one array $(B, H, L, D_h)$; and the softmax
#   weights $(B, H, L, L)$;
# - the feed-forward's hidden layer before and after the activation: $2$ arrays
#   $(B, L, d_{ff})$;
# - the block's record: a fingerprint of its outputs, a $(2, B, L)$ array of float64 (8 bytes
#   each), which the backward pass uses to refuse a record of another call.
#
# Implement `stored_bytes_per_layer(B, L, D, H, d_ff)`, the bytes one more layer adds. Two checks:
# the library's exact count of what the block keeps (`memory_model.stored_block_bytes`) at fresh
# random sizes, to the byte; and a *measurement*, the growth of a training step's peak from 1 to 3
# layers less the growth of the gradient tree (the extra layers' weights have gradients too),
# which your count must match to 5% (the allocator adds a little that no count of arrays sees).


# %%
def stored_bytes_per_layer(B, L, D, H, d_ff):
    """Bytes one stored-activation block keeps for its backward pass (float32)."""
    # BEGIN SOLUTION
    d_head = D // H
    floats = B * L * (4 * D + 3 * H * d_head + 2 * d_ff) + B * H * L * d_head + B * H * L * L
    return 4 * floats + 8 * 2 * B * L
    # END SOLUTION


# %%
MEM = dict(vocab_size=16, dtype="float32")


def block_config(n_layers, D, H, d_ff, L):
    return ReformerConfig(n_layers=n_layers, attention_types=("full",), reversible=False,
                          d_model=D, n_heads=H, d_ff=d_ff, max_len=L, **MEM)  # fmt: skip


fresh = np.random.default_rng()  # new sizes at every run
for _ in range(3):
    B, L, H = (int(x) for x in fresh.integers([1, 16, 1], [4, 200, 5]))
    D, d_ff = H * int(fresh.integers(2, 17)), int(fresh.integers(8, 300))
    with grading.own_work("Exercise 5.3"):
        got = stored_bytes_per_layer(B, L, D, H, d_ff)
    exact = memory_model.stored_block_bytes(block_config(1, D, H, d_ff, L), B, L)
    grading.check_equal(f"Exercise 5.3: B={B}, L={L}, D={D}, H={H}, d_ff={d_ff}", got, exact)

mem_tokens = np.random.default_rng(1).integers(0, 16, size=(1, 257))  # the model reads 256


def step_peak(n_layers):
    """(peak bytes of one stored-activation training step, bytes of its gradient tree)."""
    c = block_config(n_layers, 32, 2, 128, 256)
    params = reformer.init_reformer(c, np.random.default_rng(2))
    (_, grads), peak = memory.measure_peak(reformer.loss_and_grads, params, mem_tokens, c)
    return peak, memory.tree_nbytes(grads)


(peak1, grads1), (peak3, grads3) = step_peak(1), step_peak(3)
measured_per_layer = ((peak3 - peak1) - (grads3 - grads1)) / 2
print(f"measured: {measured_per_layer / 2**20:.3f} MiB per layer")
with grading.own_work("Exercise 5.3"):
    counted = float(stored_bytes_per_layer(1, 256, 32, 2, 128))
grading.check_close(
    "Exercise 5.3: bytes per stored layer, measured", counted, measured_per_layer, rtol=0.05
)

# %% [markdown]
# ### Question 5.3
#
# With reversible layers the same training step's peak hardly grows with depth (notebook 05,
# section 5). What still grows by a little with every layer, and what stays of the size of *one*
# layer?
#
# <!-- BEGIN ANSWER -->
# The gradient tree grows, because every layer has its own weights (and so do the parameters and
# the optimizer state, which exist before the step). Each block also keeps its record: LSH
# rotations and buckets, dropout seeds and the fingerprint of its outputs, a few numbers per
# position. What stays of the size of one layer is the working memory of the block being
# recomputed and backpropagated: its attention weights, its feed-forward hidden layer, its
# temporaries. Chunking (notebook 06) shrinks that.
# <!-- END ANSWER -->
