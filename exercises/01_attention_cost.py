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
# # Exercises 01: the cost of attention
#
# Exercises for [notebook 01](../notebooks/01_attention_cost.ipynb). You will write full
# attention's forward pass, its backward pass by hand (checked against finite differences, the
# way every backward pass in minireformer is checked), and the memory arithmetic of the paper's
# Table 3. Every check compares your function with the library (`minireformer.attention`,
# `minireformer.measuring.memory`) or with finite differences, in float64.

# %%
import numpy as np

from minireformer import attention
from minireformer.measuring import table3
from minireformer.teaching import grading

rng = np.random.default_rng(0)
L, DH, DV = 6, 4, 3
q, k = rng.standard_normal((2, L, DH))  # one head: (L, Dh) queries and keys
v = rng.standard_normal((L, DV))  # (L, Dv) values
dout = rng.standard_normal((L, DV))  # an upstream gradient for the backward pass

# %% [markdown]
# ### Exercise 1.1: full attention, forward
#
# Implement `attention_forward(q, k, v, causal)` for one head:
#
# $$ S = \frac{Q K^\top}{\sqrt{D_h}}, \qquad P = \operatorname{softmax}_{\text{rows}}(S), \qquad
#    \text{out} = P V , $$
#
# with $Q, K$ of shape $(L, D_h)$ and $V$ of shape $(L, D_v)$. With `causal=True`, query $i$ may
# only see keys $j \le i$: set the logits of later keys to $-10^9$ (the library's `NEG_MASK`)
# before the softmax. Subtract each row's maximum before exponentiating. Return `(out, P)`.


# %%
def attention_forward(q, k, v, causal=False):
    """(out (L, Dv), P (L, L)) of softmax(q k^T / sqrt(Dh)) v, optionally causal."""
    # BEGIN SOLUTION
    s = q @ k.T / np.sqrt(q.shape[-1])  # (L, L)
    if causal:
        later = np.triu(np.ones(s.shape, dtype=bool), k=1)
        s = np.where(later, attention.NEG_MASK, s)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v, p
    # END SOLUTION


# %%
fresh = np.random.default_rng()  # new inputs at every run: an answer cannot be written in
for causal in (False, True):
    for scale in (1.0, 300.0):  # x300: logits near 10^5, where exp overflows unless each row's
        q1, k1 = scale * fresh.standard_normal((2, L, DH))  # maximum is subtracted first
        v1 = fresh.standard_normal((L, DV))
        setting = f"causal={causal}, inputs x{scale:g}"
        with grading.own_work(f"Exercise 1.1 ({setting})"):
            out, weights = attention_forward(q1, k1, v1, causal=causal)
        ref, ref_cache = attention.attention_forward(q1[None, None], k1[None, None],
                                                     v1[None, None], causal=causal)  # fmt: skip
        grading.check_close(f"Exercise 1.1: output, {setting}", out, ref[0, 0])
        grading.check_close(f"Exercise 1.1: weights, {setting}", weights, ref_cache.probs[0, 0])

# %% [markdown]
# ### Exercise 1.2: full attention, backward
#
# Implement `attention_backward(dout, q, k, v, P)`, returning $(\bar Q, \bar K, \bar V)$ for the
# non-causal case, given $\bar O = $ `dout` $= \partial\mathcal L / \partial\,\text{out}$:
#
# 1. $\bar V = P^\top \bar O$ and $\bar P = \bar O V^\top$;
# 2. the softmax backward, row by row: $\bar S_{ij} = P_{ij}\,(\bar P_{ij} - \sum_{j'} \bar
#    P_{ij'} P_{ij'})$;
# 3. $\bar Q = \bar S K / \sqrt{D_h}$ and $\bar K = \bar S^\top Q / \sqrt{D_h}$.
#
# The check compares each gradient with centred finite differences of the scalar
# $\mathcal L = \sum \text{out} \odot \bar O$ (whose gradient with respect to out is exactly
# $\bar O$), and with the library's `attention_backward`.


# %%
def attention_backward(dout, q, k, v, p):
    """(dq, dk, dv) of out = softmax(q k^T / sqrt(Dh)) v, non-causal."""
    # BEGIN SOLUTION
    scale = 1.0 / np.sqrt(q.shape[-1])
    dv = p.T @ dout  # (L, Dv)
    dp = dout @ v.T  # (L, L)
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))  # (L, L)
    return ds @ k * scale, ds.T @ q * scale, dv
    # END SOLUTION


# %%
_, weights_lib = attention.attention_forward(q[None, None], k[None, None], v[None, None])
p_lib = weights_lib.probs[0, 0]  # the library's P, so that 1.2 does not depend on 1.1
with grading.own_work("Exercise 1.2"):
    dq, dk, dv = attention_backward(dout, q, k, v, p_lib)


def loss(q_, k_, v_):
    out_, _ = attention.attention_forward(q_[None, None], k_[None, None], v_[None, None])
    return float(np.sum(out_[0, 0] * dout))


grading.check_gradient("Exercise 1.2: dq", lambda x: loss(x, k, v), dq, q)
grading.check_gradient("Exercise 1.2: dk", lambda x: loss(q, x, v), dk, k)
grading.check_gradient("Exercise 1.2: dv", lambda x: loss(q, k, x), dv, v)
ref = attention.attention_backward(dout[None, None], weights_lib)
grading.check_close("Exercise 1.2: dq against the library", dq, ref[0][0, 0])

# %% [markdown]
# ### Question 1.1
#
# Your backward pass needed $P$, an $L \times L$ array, from the forward pass. Notebook 01
# measured about four $L \times L$ float32 arrays per head alive at the peak of a forward and
# backward pass. Which are they? The backward could recompute $P$ from $Q$ and $K$ instead of
# keeping it: what would that save, what would it cost, and would the peak stop growing as $L^2$?
#
# <!-- BEGIN ANSWER -->
# The scores $S$ (or the masked logits), the weights $P$, and in the backward $\bar P$ and
# $\bar S$ (plus temporaries of the softmax backward). It *can* recompute $P$ from $Q$ and $K$:
# that trades time for memory, and it is what memory-efficient attention kernels do. But
# recomputing does not remove the $L \times L$ arrays of the backward itself ($\bar P$, $\bar S$),
# so the peak stays $O(L^2)$ unless the computation is also split into blocks of queries. LSH
# attention removes the $L^2$ differently: each query has only $2C$ keys at all.
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 1.3: Table 3, by hand
#
# Implement `table3_bytes(arch, b, l, d_model, d_ff, n_h, n_l, n_r, c)` for the paper's Table 3
# memory column in float32 bytes (4 per number), for the five rows:
#
# | arch | memory (numbers) |
# |---|---|
# | `"transformer"` | $\max(b\,l\,d_{ff},\ b\,n_h\,l^2)\, n_l$ |
# | `"reversible"` | $\max(b\,l\,d_{ff},\ b\,n_h\,l^2)$ |
# | `"chunked_reversible"` | $\max(b\,l\,d_{model},\ b\,n_h\,l^2)$ |
# | `"lsh"` | $\max(b\,l\,d_{ff},\ b\,n_h\,l\,n_r\,c)\, n_l$ |
# | `"reformer"` | $\max(b\,l\,d_{model},\ b\,n_h\,l\,n_r\,c)$ |


# %%
def table3_bytes(arch, b, l, d_model, d_ff, n_h, n_l, n_r, c):
    """Float32 bytes of Table 3's memory column for ``arch``."""
    # BEGIN SOLUTION
    width = d_model if arch in ("chunked_reversible", "reformer") else d_ff
    attention_term = b * n_h * l * (n_r * c if arch in ("lsh", "reformer") else l)
    depth = n_l if arch in ("transformer", "lsh") else 1
    return 4 * max(b * l * width, attention_term) * depth
    # END SOLUTION


# %%
SETTINGS = [  # the paper's enwik8 setting, a short-sequence one where d_ff matters, a random one
    dict(batch=8, length=65536, d_model=1024, d_ff=4096, n_heads=8, n_layers=12),
    dict(batch=8, length=256, d_model=1024, d_ff=4096, n_heads=2, n_layers=12),
    {k: int(x) for k, x in zip(
        ("batch", "length", "d_model", "d_ff", "n_heads", "n_layers"),
        np.random.default_rng().integers([1, 64, 16, 16, 1, 1], [9, 4096, 512, 2048, 9, 13]),
    )},
]  # fmt: skip
for s in SETTINGS:
    for arch in table3.TABLE3_ARCHS:
        with grading.own_work(f"Exercise 1.3 ({arch})"):
            got = table3_bytes(arch, s["batch"], s["length"], s["d_model"], s["d_ff"],
                               s["n_heads"], s["n_layers"], 4, 256)  # fmt: skip
        want = table3.table3_memory(arch, **s, n_hashes=4, chunk_len=128)
        grading.check_equal(f"Exercise 1.3: {arch} at {s}", np.array(got), np.array(want))

# %% [markdown]
# ### Question 1.2
#
# At $l = 65{,}536$ the chunked reversible row equals the reversible row, and with the caption's
# $c = 128^2$ the LSH rows equal the full-attention rows. Explain both from the formulas. In the
# second setting above ($l = 256$), which trick changes the numbers, and why?
#
# <!-- BEGIN ANSWER -->
# Chunking replaces $b\,l\,d_{ff}$ by $b\,l\,d_{model}$, but at $l = 65{,}536$ the maximum is the
# attention term $b\,n_h\,l^2$, since $n_h l = 524{,}288 \gg d_{ff} = 4096$: the maximum does not
# move. With $c = 128^2 = 16{,}384$ and $n_r = 4$, $n_r c = 65{,}536 = l$, so $b\,n_h\,l\,n_r\,c
# = b\,n_h\,l^2$: LSH's term equals full attention's. At $l = 256$ with 2 heads, $n_h l = 512 <
# d_{ff} = 4096$: the feed-forward term dominates, so chunking (which removes $d_{ff}$) lowers the
# memory and LSH (which only changes the attention term) does not.
# <!-- END ANSWER -->

# %% [markdown]
# ### Question 1.3
#
# Notebook 01 found that in a trained character model the 32 largest weights of a query hold about
# 90% of its weight in the first layer but only about half in the second. What does that predict
# about replacing the second layer's full attention by LSH attention with small buckets?
#
# <!-- BEGIN ANSWER -->
# LSH attention keeps only the keys that share a bucket with the query (a few dozen at most); in a
# layer whose queries read broadly, the dropped keys carry a large share of the weight, so the
# output changes noticeably and the layer's function is approximated worse than in a layer with
# concentrated attention. More hash rounds (a larger union of keys), larger chunks, or full (or
# local) attention in such layers would reduce the error; the model may also learn sharper
# attention when trained with LSH from the start.
# <!-- END ANSWER -->
