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
# # Exercises 02: angular hashing
#
# Exercises for [notebook 02](../notebooks/02_hashing.ipynb). You will write the angular hash,
# estimate its collision probability by Monte Carlo against the closed form $1 - \theta/\pi$,
# extend it to several rounds, and choose the number of buckets from the chunk length. Every
# check compares your function with the library (`minireformer.lsh`), with an exact formula, or
# with a statistical bound that a correct answer passes for the fixed seeds below.

# %%
import numpy as np

from minireformer import lsh
from minireformer.teaching import grading

rng = np.random.default_rng(0)
DH, K = 16, 8
x = rng.standard_normal((20, DH))  # (L, Dh): twenty vectors
rotations = lsh.random_rotations(rng, DH, n_hashes=1, n_buckets=K)[:, 0]  # (Dh, K/2)


def pair_at_angle(theta, dim, rng):
    """Two unit vectors of width ``dim`` at angle ``theta`` (radians), in random directions."""
    a = rng.standard_normal(dim)
    a /= np.linalg.norm(a)
    u = rng.standard_normal(dim)
    u -= (u @ a) * a  # orthogonal to a
    u /= np.linalg.norm(u)
    return a, np.cos(theta) * a + np.sin(theta) * u


# %% [markdown]
# ### Exercise 2.1: the angular hash
#
# Implement `hash_vectors(x, rotations)` for one round:
#
# $$ h(x) = \arg\max\,[\,x R\,;\; -x R\,] \in \{0, \dots, K-1\}, $$
#
# with `x` of shape $(L, D_h)$ and `rotations` $R$ of shape $(D_h, K/2)$; concatenate $xR$ and
# $-xR$ along the last axis (in that order) and return the $(L,)$ integer bucket ids.


# %%
def hash_vectors(x, rotations):
    """Bucket ids (L,) of x (L, Dh) under rotations (Dh, K/2): argmax([xR; -xR])."""
    # BEGIN SOLUTION
    projected = x @ rotations  # (L, K/2)
    return np.argmax(np.concatenate([projected, -projected], axis=-1), axis=-1)
    # END SOLUTION


# %%
mine = hash_vectors(x, rotations)
library = lsh.hash_vectors(x[None, None], rotations[:, None, :])[0, 0, 0]  # (B, H, R, L) -> (L,)
grading.check_equal("Exercise 2.1: buckets against lsh.hash_vectors", mine, library)
grading.check_equal(
    "Exercise 2.1: h(-x) = (h(x) + K/2) mod K", hash_vectors(-x, rotations), (mine + K // 2) % K
)
grading.check_equal(
    "Exercise 2.1: only the direction matters", hash_vectors(5 * x, rotations), mine
)

# %% [markdown]
# ### Question 2.1
#
# Why must $K$ be even? And why do $x$ and $-x$ never share a bucket?
#
# <!-- BEGIN ANSWER -->
# The hash compares $K/2$ projections and their $K/2$ negatives, so the buckets come in pairs
# $(c, c + K/2)$: "along $+r_c$" and "along $-r_c$". An odd $K$ has no such split. Negating $x$
# negates every projection, which swaps the two halves of $[xR; -xR]$: the largest entry moves
# from position $c$ to position $c + K/2 \pmod K$, so $h(-x) = (h(x) + K/2) \bmod K \ne h(x)$.
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 2.2: collision probability by Monte Carlo
#
# Implement `collision_rate(a, b, n_buckets, n_trials, rng)`: draw `n_trials` independent
# rotation matrices, hash $a$ and $b$ with each, and return the fraction of matrices under which
# they share a bucket. Use `lsh.random_rotations(rng, dim, n_hashes=n_trials,
# n_buckets=n_buckets)` (its rounds are independent matrices, shape $(D_h, R, K/2)$) and
# `lsh.hash_vectors`, which takes $(B, H, L, D_h)$ vectors and returns $(B, H, R, L)$ buckets.
#
# For $K = 2$ the answer should be $1 - \theta/\pi$; the check accepts a deviation of four
# standard errors, $4\sqrt{p(1-p)/n}$, at three angles.


# %%
def collision_rate(a, b, n_buckets, n_trials, rng):
    """Fraction of n_trials random rotations under which a and b (each (Dh,)) share a bucket."""
    # BEGIN SOLUTION
    rot = lsh.random_rotations(rng, a.shape[0], n_hashes=n_trials, n_buckets=n_buckets)
    h = lsh.hash_vectors(np.stack([a, b])[None, None], rot)[0, 0]  # (R, 2)
    return float(np.mean(h[:, 0] == h[:, 1]))
    # END SOLUTION


# %%
N_TRIALS = 20_000
check_rng = np.random.default_rng(1)
deviations = []
for degrees in (30, 90, 150):
    theta = np.radians(degrees)
    a, b = pair_at_angle(theta, DH, check_rng)
    p = 1 - theta / np.pi
    estimate = collision_rate(a, b, 2, N_TRIALS, check_rng)
    deviations.append(abs(estimate - p) / np.sqrt(p * (1 - p) / N_TRIALS))
    print(f"{degrees:>3} degrees: measured {estimate:.4f}, 1 - theta/pi = {p:.4f}")
grading.check_true(
    "Exercise 2.2: K = 2 matches 1 - theta/pi",
    max(deviations) < 4,
    f"the estimates are {max(deviations):.1f} standard errors from 1 - theta/pi (4 allowed)",
)
a, b = pair_at_angle(np.radians(60), DH, check_rng)
rates = [collision_rate(a, b, k, N_TRIALS, check_rng) for k in (2, 8, 32)]
grading.check_true(
    "Exercise 2.2: more buckets, fewer collisions",
    rates[0] > rates[1] > rates[2],
    f"at 60 degrees, K = 2, 8, 32 gave {rates}: it should fall as K grows",
)

# %% [markdown]
# ### Exercise 2.3: several rounds
#
# A query can attend to a key when they share a bucket in **at least one** of $R$ rounds.
# Implement `share_any_round(x, y, rotations)` for pairs: `x` and `y` are $(N, D_h)$ (pair $i$ is
# `x[i]`, `y[i]`), `rotations` is $(D_h, R, K/2)$; return an $(N,)$ boolean array, True where pair
# $i$ shares a bucket in some round. You may call `lsh.hash_vectors`. The check compares your
# answer with a reference on random pairs, and the measured rate with
# $1 - (1 - p_K(\theta))^R$, using $p_K(\theta)$ measured with one round.


# %%
def share_any_round(x, y, rotations):
    """(N,) bool: do x[i] and y[i] share a bucket in at least one round of rotations?"""
    # BEGIN SOLUTION
    hx = lsh.hash_vectors(x[None, None], rotations)[0, 0]  # (R, N)
    hy = lsh.hash_vectors(y[None, None], rotations)[0, 0]
    return np.any(hx == hy, axis=0)
    # END SOLUTION


# %%
pairs_rng = np.random.default_rng(2)
N_PAIRS, R, THETA = 4000, 4, np.radians(45)
xs, ys = map(np.array, zip(*(pair_at_angle(THETA, DH, pairs_rng) for _ in range(N_PAIRS))))
rot_r = lsh.random_rotations(pairs_rng, DH, n_hashes=R, n_buckets=K)
reference = np.zeros(N_PAIRS, dtype=bool)
for r in range(R):
    reference |= (
        lsh.hash_vectors(xs[None, None], rot_r[:, r : r + 1])[0, 0, 0]
        == (lsh.hash_vectors(ys[None, None], rot_r[:, r : r + 1])[0, 0, 0])
    )
got = share_any_round(xs, ys, rot_r)
grading.check_equal("Exercise 2.3: pairs sharing a bucket in some round", got, reference)
p_one = np.mean(share_any_round(xs, ys, rot_r[:, :1]))  # one round: p_K(theta), measured
predicted = 1 - (1 - p_one) ** R
grading.check_true(
    "Exercise 2.3: 1 - (1 - p)^R",
    abs(np.mean(got) - predicted) < 0.05,
    f"measured {np.mean(got):.3f} over {R} rounds against 1 - (1 - p)^R = {predicted:.3f}",
)

# %% [markdown]
# ### Question 2.2
#
# For $K = 2$, going from one round to four raises the collision probability of pairs at
# 135 degrees more than that of pairs at 30 degrees; for $K = 16$ it is the other way round.
# Explain with $1 - (1-p)^R$, and say what this means for choosing $K$ and $R$ together.
#
# <!-- BEGIN ANSWER -->
# The gain is $(1 - p) - (1 - p)^R$, which is small when $p$ is near 1 (nothing left to gain) or
# near 0 (every round misses) and largest for moderate $p$. For $K = 2$, $p = 1 - \theta/\pi$ is
# 0.83 at 30 degrees (little to gain) and 0.25 at 135 degrees (moderate): the far pairs gain more.
# For $K = 16$, $p$ is moderate for close pairs and nearly 0 for far ones, so rounds recover close
# neighbours and leave far pairs rare. So rounds only help *selectively* when $K$ is large enough
# that one round already separates far pairs; then rounds buy back the close pairs a single round
# misses.
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 2.4: how many buckets?
#
# LSH attention cuts the sorted sequence into chunks of $C$; the paper sets the chunk length to
# twice the average bucket size, $C = 2L/K$. Implement `n_buckets_for(length, chunk_len)`: the even
# number $K = 2\lceil L / C \rceil$, and at least 2. Use integer arithmetic only. (Above 128
# buckets the library's `lsh.default_n_buckets` returns two factors instead, notebook 02's last
# section; the check stays below that.)


# %%
def n_buckets_for(length, chunk_len):
    """K = 2 * ceil(L / C), at least 2."""
    # BEGIN SOLUTION
    return max(2, 2 * (-(-length // chunk_len)))
    # END SOLUTION


# %%
grid = [(n, c) for n in (1, 7, 50, 64, 65, 200, 1000, 1024, 4096) for c in (64, 100, 128, 512)]
grading.check_equal(
    "Exercise 2.4: K for 36 (L, C) pairs",
    np.array([n_buckets_for(n, c) for n, c in grid]),
    np.array([lsh.default_n_buckets(n, c) for n, c in grid]),
)

# %% [markdown]
# ### Question 2.3
#
# `lsh.random_rotations` draws a Gaussian $R$ of shape $(D_h, K/2)$. For a 65,536-token sequence
# with $D_h = 64$ and $C = 64$, how many columns would an unfactorised $R$ have, and can it be a
# rotation? Does the collision probability of notebook 02 depend on $R$ being one?
#
# <!-- BEGIN ANSWER -->
# $K = 2 \cdot 65{,}536 / 64 = 2048$ buckets, so $R$ would have $K/2 = 1024$ columns in 64
# dimensions. At most 64 directions can be orthogonal in 64 dimensions, so $R$ cannot be a
# rotation: it is an overcomplete set of random directions (the library factorises such a $K$
# into two hashes of 46 buckets, 23 columns each, which is cheaper but still no rotation).
# The collision probability does not need orthogonality:
# for unit $x, y$ at angle $\theta$, each pair $(x \cdot r_c, y \cdot r_c)$ is a standard
# bivariate normal with correlation $\cos\theta$, independently over the columns, for any
# Gaussian $R$; that is all the derivation uses. What non-orthogonality changes is that, for one
# fixed $R$, some buckets are more likely than others.
# <!-- END ANSWER -->
