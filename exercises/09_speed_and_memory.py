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
# # Exercises 09: speed and memory at scale
#
# Exercises for [notebook 09](../notebooks/09_speed_and_memory.ipynb). You will count the
# floating-point operations of LSH attention, predict an attention layer's peak memory from two
# measurements, and find the length where LSH attention overtakes full attention from timing fits.
# Every check compares your function with what the library does (the products it makes, the
# memory it allocates) or with the benchmark suite's own functions. Shapes: B batch, H heads,
# L length, Dh head width, R rounds, C chunk length, W = 2C the window width (one chunk back).

# %%
import numpy as np

from minireformer import attention, lsh_attention
from minireformer.measuring import flops, memory, timing
from minireformer.teaching import grading

rng = np.random.default_rng(0)

# %% [markdown]
# ### Exercise 9.1: the FLOPs of LSH attention's window products
#
# A product of an $(m, k)$ and a $(k, n)$ matrix costs $2mkn$ FLOPs. LSH attention sorts each
# round's L positions, padded to $L_p = C \lceil L/C \rceil$, into $L_p / C$ chunks of C
# queries; each chunk attends to a window of $W = 2C$ keys. Read
# `windows.window_attention_forward` and `window_attention_backward` in
# [`windows.py`](../minireformer/windows.py) and count the products one
# forward and one backward make per chunk (the forward keeps no (C, W) weights, so the backward
# computes the logits again before its own products; Dv = Dh here).
#
# Implement `lsh_window_flops(B, H, L, Dh, R, C)`: the FLOPs of all those products, forward and
# backward, over all batches, heads, rounds and chunks (hashing not included).


# %%
def lsh_window_flops(B, H, L, Dh, R, C):
    """FLOPs of the window products of one LSH attention forward + backward (an int)."""
    # BEGIN SOLUTION
    padded = C * -(-L // C)  # L rounded up to a multiple of C
    n_chunks = B * H * R * padded // C
    per_product = 2 * C * (2 * C) * Dh  # (C, Dh) @ (Dh, W) and its relatives
    return n_chunks * 7 * per_product  # forward 2, backward 4 + the recomputed logits
    # END SOLUTION


# %%
def window_products_made(B, H, L, Dh, R, C):
    """The FLOPs of the products one LSH forward + backward really makes (counted as they run)."""
    qk, v, dout = rng.standard_normal((3, B, H, L, Dh))

    def step():
        out, cache = lsh_attention.lsh_attention_forward(
            qk, v, chunk_len=C, n_hashes=R, rng=rng, causal=True
        )
        return lsh_attention.lsh_attention_backward(dout, cache)

    return flops.count_matmul_flops(step)[1]


for shape in [(1, 2, 128, 8, 2, 16), (2, 1, 100, 4, 3, 8)]:
    grading.check_equal(
        "Exercise 9.1: window FLOPs at (B, H, L, Dh, R, C) = " + str(shape),
        np.int64(lsh_window_flops(*shape)),
        np.int64(window_products_made(*shape)),
    )

# %% [markdown]
# ### Question 9.1
#
# Hashing projects every position on P random directions per round: $2\,Dh\,R\,P$ FLOPs per
# position and head. With K buckets, P = K/2; with factorised buckets $K = K_1 K_2$ (two hashes
# combined, as the released code and `lsh.default_n_buckets` do for large K),
# $P = K_1/2 + K_2/2$. At L = 65,536, C = 64 and Dh = 64 the rule K = 2L/C gives K = 2,048.
# Compare both hashing costs with the window products of Exercise 9.1 per position and head.
# What does it mean for LSH attention's time per token as L grows?
#
# <!-- BEGIN ANSWER -->
# The window products cost 7 x 2 x C x 2C x Dh / C = 28 C Dh = 114,688 R FLOPs per position and
# head, whatever L is. Unfactorised, hashing costs 2 x 64 x 1,024 R = 131,072 R: more than the
# attention itself, and growing linearly with L because K does, so the time per token would grow
# with L. Factorised into two even factors of about sqrt(2,048) = 45 each (the library takes
# (46, 46), so P = 23 + 23 = 46), it costs 2 x 64 x 46 R = 5,888 R, 5% of the window products,
# and grows only as sqrt(L): the time per token stays nearly flat.
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 9.2: predict an attention layer's peak memory
#
# Full attention's forward + backward holds a few (B, H, L, L) arrays (weights, their gradient,
# temporaries) and a few (B, H, L, Dh) ones, so its peak is close to $p(L) = a L^2 + b L$.
# Implement `predict_peak(lengths, peaks, new_length)`: fit $a$ and $b$ to the measured peaks by
# least squares (no constant term; `np.linalg.lstsq` on the columns $L^2$ and $L$) and return the
# predicted peak at `new_length` (a float, bytes).


# %%
def predict_peak(lengths, peaks, new_length):
    """Fit peaks = a L^2 + b L to the measurements; the prediction at new_length (bytes)."""
    # BEGIN SOLUTION
    lengths = np.asarray(lengths, dtype=float)
    design = np.stack([lengths**2, lengths], axis=1)  # (n, 2)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(peaks, dtype=float), rcond=None)
    return float(a * new_length**2 + b * new_length)
    # END SOLUTION


# %%
grading.check_close(
    "Exercise 9.2: an exact quadratic is predicted exactly",
    predict_peak([10, 20, 30], [3 * n**2 + 5 * n for n in (10, 20, 30)], 50),
    float(3 * 50**2 + 5 * 50),
    rtol=1e-9,
)


def full_attention_peak(length, B=1, H=2, Dh=16):
    """Measured peak bytes of one full shared-QK attention forward + backward, float32."""
    qk, v, dout = rng.standard_normal((3, B, H, length, Dh)).astype(np.float32)

    def step():
        out, cache = attention.shared_qk_attention_forward(qk, v, causal=True)
        return attention.shared_qk_attention_backward(dout, cache)

    return memory.measure_peak(step)[1]


measured = {n: full_attention_peak(n) for n in (128, 256, 768)}
predicted = predict_peak([128, 256], [measured[128], measured[256]], 768)
error = abs(predicted - measured[768]) / measured[768]
print(f"L = 768: predicted {predicted / 2**20:.2f} MiB, measured {measured[768] / 2**20:.2f} MiB")
grading.check_true(
    "Exercise 9.2: the prediction at L = 768 from L = 128 and 256",
    error < 0.05,
    f"the prediction is {error:.1%} off the measured peak (expected within 5%)",
)

# %% [markdown]
# ### Question 9.2
#
# Divide the fitted $a$ by $B \cdot H \cdot 4$ bytes: about how many float32 (L, L) arrays are
# alive at the peak? Read `_attend` and `_attend_backward` in
# [`attention.py`](../minireformer/attention.py) and name them.
#
# <!-- BEGIN ANSWER -->
# About four and a quarter. During the backward pass the cached weights P are alive, then
# dP = dout V^T, the temporary dP - row, and dS = P * (dP - row); the boolean mask of kept logits
# adds a quarter (one byte per entry against four). The forward alone peaks lower, at about three
# (the logits, their shifted exponential and the mask). An LSH layer replaces these (L, L) arrays
# by (C, W) blocks of a few chunks at a time, which is why its peak grows linearly in L.
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 9.3: the crossover length from two timing fits
#
# Full attention's time per token grows linearly in L; LSH attention's is nearly constant. Given
# per-token times measured at a few lengths for each, fit a straight line $t = c_0 + c_1 L$ to
# each (least squares, `np.polyfit(lengths, times, 1)`) and return the L where the two lines meet:
# beyond it LSH attention is faster. Implement
# `crossover_length(full_lengths, full_times, lsh_lengths, lsh_times)`.


# %%
def crossover_length(full_lengths, full_times, lsh_lengths, lsh_times):
    """L where the fitted lines of full and LSH per-token time meet (a float)."""
    # BEGIN SOLUTION
    slope_full, intercept_full = np.polyfit(full_lengths, full_times, 1)
    slope_lsh, intercept_lsh = np.polyfit(lsh_lengths, lsh_times, 1)
    return float((intercept_lsh - intercept_full) / (slope_full - slope_lsh))
    # END SOLUTION


# %%
# made-up per-token times (microseconds), shaped like the benchmark's
full_lengths, full_times = [1024, 2048, 4096, 8192], [1.9, 3.1, 5.8, 11.2]
lsh_lengths, lsh_times = [1024, 4096, 16384, 65536], [9.0, 9.3, 9.9, 12.1]


def rows(lengths, times):
    return [{"length": n, "us_per_token": t} for n, t in zip(lengths, times)]


expected = timing.crossover(rows(full_lengths, full_times), rows(lsh_lengths, lsh_times))
grading.check_close(
    "Exercise 9.3: crossover length",
    crossover_length(full_lengths, full_times, lsh_lengths, lsh_times),
    expected["length"],
    rtol=1e-9,
)

# %% [markdown]
# ### Question 9.3
#
# Counting FLOPs alone, full attention (12 L Dh per query and head) costs more than one round of
# LSH attention (28 C Dh plus hashing) from a few hundred tokens on, yet the measured crossover in
# notebook 09 lies much further out. Name three costs of LSH attention that are not matrix
# products, and one reason its products run slower than full attention's.
#
# <!-- BEGIN ANSWER -->
# Sorting the R L hash codes (and inverting the permutation); gathering queries, keys and values
# into sorted order and scattering the results back; building the window masks (causal, self,
# other bucket) and the duplicate counts of the log N_ij correction; combining the rounds. Its
# products are many small ones, (C, Dh) @ (Dh, W) per chunk, on gathered copies, where full
# attention makes a few large (L, Dh) @ (Dh, L) products that BLAS runs near its peak rate.
# <!-- END ANSWER -->
