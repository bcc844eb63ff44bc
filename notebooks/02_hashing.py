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
# # 02 Hashing: angular locality-sensitive hashing from scratch
#
# Reformer paper (Kitaev, Kaiser, Levskaya 2020, arXiv 2001.04451), section 2,
# "Locality sensitive hashing" and Figure 1; the hash family is the one of Andoni, Indyk,
# Laarhoven, Razenshteyn and Schmidt (2015, "Practical and optimal LSH for angular distance",
# arXiv 1509.02897).
#
# **Learning objectives.** After this notebook you can
#
# - explain shared-QK attention and why it makes the angle between vectors the thing to hash;
# - compute the angular hash $h(x) = \arg\max([xR; -xR])$ by hand and state its two identities
#   (scale invariance, $h(-x) = h(x) + K/2 \bmod K$);
# - derive the collision probability $1 - \theta/\pi$ for $K = 2$, estimate it for more buckets
#   by Monte Carlo, and say what more buckets and more rounds do to it;
# - choose the number of buckets from the chunk length, $K = 2\lceil L/C \rceil$.
#
# **Prerequisites.** [Notebook 01](01_attention_cost.ipynb) (why attention would like to skip most
# keys); the dot product as $|x||y|\cos\theta$; the normal distribution.
#
# **Code used.** `minireformer.lsh` (`random_rotations`, `hash_vectors`, `default_n_buckets`).
# Notation: [the README's table](../README.md#notation) ($K$ buckets, $R$ rounds, $C$ chunk length,
# $D_h$ head width).
#
# **Previous:** [01 The cost of attention](01_attention_cost.ipynb) · **Next:**
# [03 LSH attention step by step](03_lsh_attention.ipynb). Exercises: `exercises/02_hashing.py`.
#
# ## Why hash at all?
#
# Softmax attention is dominated by the few keys with the largest logits: a key whose logit is 10
# below the best one gets a weight of about $e^{-10} \approx 4.5 \cdot 10^{-5}$ of the best key's.
# If, for each query, we could find the keys closest to it *without* computing all $L^2$ logits,
# we could attend only to those and lose little. Finding near neighbours among $L$ vectors quickly
# is exactly what locality-sensitive hashing (LSH) is for.
#
# A hash function $h$ is *locality-sensitive* if vectors close to each other get the same hash
# with high probability and vectors far apart get the same hash with low probability. The
# Reformer uses it to put each query into one of $K$ *buckets*, and then lets a query attend only
# within its bucket (notebook 03 shows how this becomes a fast, sorted and chunked computation).
#
# **Shared-QK and unit keys.** A query should meet the keys it would score highly, so queries and
# keys must be hashed *alike*. With separate projections $q_i = x_i W_Q$ and $k_j = x_j W_K$ a
# query and the key it needs could sit in unrelated places of the space, and one hash would not put
# them together. The Reformer therefore shares the projection (paper section 2, "shared-QK
# attention"): one matrix gives $q_i$, and the key of position $j$ is the same vector normalised to
# unit length,
#
# $$ k_j = \frac{q_j}{|q_j|}, \qquad q_i \cdot k_j = |q_i| \cos\theta_{ij}. $$
#
# For a fixed query $i$, the logits of all keys are its own length $|q_i|$ times the cosine of the
# angle to each key: the keys that matter most are those at the smallest **angle** to the query,
# whatever their length. (Normalising the keys is what makes this true; without it a long key could
# outscore a well-aligned one.) So the hash should depend on the *direction* of a vector only.
# Notebook 03 builds the attention; the paper reports that sharing costs little accuracy (its
# Figure 3, which notebook 08 reproduces at small scale).
#
# This notebook builds that hash from nothing, draws it in two dimensions, measures how the
# probability of sharing a bucket falls with the angle, and looks at the buckets of clustered
# queries like the ones attention sees.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from minireformer import backend, lsh
from minireformer.teaching.plotting import save_figure
from minireformer.teaching.progress import progress

START = time.perf_counter()
print(backend.describe())

# %% [markdown]
# ## The hash: $h(x) = \arg\max([xR;\, -xR])$
#
# To hash into $K$ buckets ($K$ even), draw one random matrix $R$ of shape $(D_h, K/2)$ with
# independent standard normal entries. Its $K/2$ columns $r_1, \dots, r_{K/2}$ are random
# directions, and $xR$ holds the coordinates of $x$ along them. (The paper calls $R$ a *random
# rotation*; below we look at how far a Gaussian matrix is from one, and why the hash does not
# need it to be one.) Then
#
# $$
# h(x) = \arg\max_{c \in \{0, \dots, K-1\}} \big[\, x r_1, \dots, x r_{K/2},\;
#        -x r_1, \dots, -x r_{K/2} \,\big].
# $$
#
# In words: among the $K$ *signed* axes $\pm r_c$, pick the one that $x$ points along the most.
# Bucket $c < K/2$ means "mostly along $+r_{c+1}$", bucket $c \ge K/2$ "mostly along
# $-r_{c-K/2+1}$". Two facts follow at once:
#
# * $h$ depends only on the direction of $x$: scaling $x$ by $a > 0$ scales every entry, and the
#   argmax stays where it is.
# * Several *rounds* of hashing use independent matrices; the library stores all $R$ rounds in one
#   array of shape $(D_h, R, K/2)$ (or $(H, D_h, R, K/2)$, one set per head).
#
# Here is the computation spelled out for three vectors of width 4 hashed into $K = 4$ buckets,
# then checked against `lsh.hash_vectors`.

# %%
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 1, 3, 4))  # (B, H, L, Dh): three vectors of width 4
rotations = lsh.random_rotations(rng, dim=4, n_hashes=1, n_buckets=4)  # (Dh, R, K/2) = (4, 1, 2)

projected = x[0, 0] @ rotations[:, 0, :]  # (L, K/2): coordinates along r_1, r_2
signed = np.concatenate([projected, -projected], axis=-1)  # (L, K): along +r_1, +r_2, -r_1, -r_2
by_hand = np.argmax(signed, axis=-1)  # (L,)
np.set_printoptions(precision=3, suppress=True)
print("[xR; -xR] =\n", signed)
print("argmax    =", by_hand)
print("library   =", lsh.hash_vectors(x, rotations)[0, 0, 0])

# %%
assert np.array_equal(by_hand, lsh.hash_vectors(x, rotations)[0, 0, 0])
# only the direction matters
assert np.array_equal(lsh.hash_vectors(3.7 * x, rotations), lsh.hash_vectors(x, rotations))

# %% [markdown]
# ## A picture in two dimensions (the paper's Figure 1)
#
# With $D_h = 2$ and $K = 4$, $R$ is a $2 \times 2$ matrix whose two columns $r_1, r_2$ are the
# axes of a randomly rotated frame. The four signed axes $\pm r_1, \pm r_2$ cut the circle into four
# quarter arcs, one per bucket, each centred on its axis: a point's bucket is the signed axis it is
# most aligned with. (The paper draws the same thing the other way round: it rotates the points and
# keeps the axes fixed.)
#
# For this picture we pass exact rotation matrices to `lsh.hash_vectors`, so that the four arcs
# are equal. The library's `random_rotations` draws Gaussian matrices instead. Is that "close to a
# rotation"? Only when $K/2$ is much smaller than $D_h$: then the $K/2$ columns, scaled by
# $1/\sqrt{D_h}$, are nearly orthonormal (their singular values lie roughly within
# $1 \pm \sqrt{K / 2D_h}$). When $K/2 > D_h$ (a 65,536-token sequence with $C = 64$ asks for
# $K = 2048$ buckets: 1,024 columns in $D_h = 64$ dimensions), $R$ cannot be a rotation at all:
# $D_h$ dimensions hold at most $D_h$ orthogonal directions. (The library avoids that many
# columns by factorising large $K$, end of this notebook, but even each factor's 23 columns are
# not "much fewer" than 64.) We check these cases after the picture. Nothing below depends on
# orthogonality: the collision probabilities are derived for a Gaussian $R$ exactly. What a
# non-orthogonal $R$ does change is that, for one fixed $R$, some buckets are larger than others
# (visible at the end of this notebook).
#
# Below, three independent rounds (three matrices $R$) hash the same points. In the top row $x$
# and $y$ are far apart (100 degrees): they land in different buckets in every round. In the
# bottom row they are close (15 degrees): they share a bucket in most rounds, and when a boundary
# happens to fall between them, another round usually puts them together again. This is why the
# Reformer hashes several times.

# %%
rng = np.random.default_rng(1)
alpha = rng.uniform(0, 2 * np.pi, size=3)  # one random rotation angle per round
rotations_2d = np.empty((2, 3, 2))  # (Dh=2, R=3, K/2=2): column c of round r = rotated axis e_c
rotations_2d[:, :, 0] = np.cos(alpha), np.sin(alpha)  # r_1 = (cos a, sin a)
rotations_2d[:, :, 1] = -np.sin(alpha), np.cos(alpha)  # r_2 = (-sin a, cos a)
assert np.allclose(np.einsum("irc,ird->rcd", rotations_2d, rotations_2d), np.eye(2))  # orthonormal
phi = np.linspace(0, 2 * np.pi, 720, endpoint=False)
circle = np.stack([np.cos(phi), np.sin(phi)], axis=-1)  # (720, 2)
circle_buckets = lsh.hash_vectors(circle[None, None], rotations_2d)[0, 0]  # (R, 720)


def unit(deg):
    return np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))])


pairs = {
    "far apart (100 degrees)": (unit(20), unit(120)),
    "close (15 degrees)": (unit(200), unit(215)),
}
colours = plt.get_cmap("tab10").colors
fig, axes = plt.subplots(2, 3, figsize=(11, 7.4))
pair_buckets = {}
for row, (label, (px, py)) in enumerate(pairs.items()):
    both = np.stack([px, py])[None, None]  # (1, 1, 2, 2)
    pair_buckets[label] = lsh.hash_vectors(both, rotations_2d)[0, 0]  # (R, 2)
    for r in range(3):
        ax = axes[row, r]
        ax.scatter(*circle.T, c=[colours[b] for b in circle_buckets[r]], s=6, lw=0)
        for c in range(2):  # the signed axes +r_c (solid) and -r_c (dashed)
            axis = rotations_2d[:, r, c] / np.linalg.norm(rotations_2d[:, r, c])
            for sign, style in ((1, "-"), (-1, "--")):
                end = 1.25 * sign * axis
                bucket = c if sign > 0 else c + 2
                ax.plot([0, end[0]], [0, end[1]], style, color=colours[bucket], lw=1.2)
                ax.text(
                    *(1.42 * sign * axis),
                    f"{'+' if sign > 0 else '-'}r{c + 1}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color=colours[bucket],
                )
        for name, p in (("x", px), ("y", py)):
            ax.plot(*p, "ko", ms=6)
            ax.text(*(1.12 * p), name, fontsize=11, ha="center", va="center")
        hx, hy = pair_buckets[label][r]
        ax.set_title(
            f"round {r + 1}: h(x)={hx}, h(y)={hy}" + ("  same" if hx == hy else ""), fontsize=9
        )
        ax.set_aspect("equal")
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(-1.6, 1.6)
        ax.axis("off")
    axes[row, 0].text(-1.9, 0, label, rotation=90, va="center", ha="center", fontsize=10)
fig.suptitle("Angular LSH in 2-D, K = 4 buckets: circle coloured by bucket, three random rotations")
save_figure(fig, "02_angular_lsh_2d")
plt.show()

# %% [markdown]
# How close to a scaled rotation is a Gaussian $R$? The singular values of $R/\sqrt{D_h}$ are all
# 1 for a rotation (orthonormal columns). For $D_h = 64$:

# %%
spread = {}
for n_buckets in (8, 32, 128, 2048):
    cols = lsh.random_rotations(np.random.default_rng(6), dim=64, n_hashes=1, n_buckets=n_buckets)
    sv = np.linalg.svd(cols[:, 0] / np.sqrt(64), compute_uv=False)  # min(Dh, K/2) values
    spread[n_buckets] = (sv.min(), sv.max(), len(sv))
    print(
        f"K = {n_buckets:>4} (K/2 = {n_buckets // 2:>4} columns): singular values of R/sqrt(Dh) "
        f"from {sv.min():.2f} to {sv.max():.2f}; {len(sv)} of them"
    )

# %%
assert 0.6 < spread[8][0] and spread[8][1] < 1.4  # K/2 = 4 << 64: close to orthonormal
assert spread[32][1] - spread[32][0] > spread[8][1] - spread[8][0]  # wider as K/2 grows
assert spread[2048][2] == 64 < 2048 // 2  # 1024 columns in 64 dimensions: rank 64, no rotation

# %% [markdown]
# With $K/2 = 4$ columns the singular values stay within about 30% of 1; with 16 they already
# range from about 0.6 to 1.4; a square Gaussian matrix ($K/2 = D_h = 64$) is nearly singular;
# and 1,024 columns in 64 dimensions are an overcomplete set of random directions, which is the
# hash of Andoni et al. in its general form rather than a rotation.

# %% [markdown]
# Each arc is centred on one signed axis, and opposite arcs belong to buckets $c$ and $c + K/2$.
# The far pair never collides; the close pair collides in most rounds.

# %%
far, close = pair_buckets["far apart (100 degrees)"], pair_buckets["close (15 degrees)"]
print("far pair shares a bucket in rounds:  ", np.flatnonzero(far[:, 0] == far[:, 1]) + 1)
print("close pair shares a bucket in rounds:", np.flatnonzero(close[:, 0] == close[:, 1]) + 1)
assert not np.any(far[:, 0] == far[:, 1])
assert np.sum(close[:, 0] == close[:, 1]) >= 2
# every bucket owns a part of the circle, and opposite points are in opposite buckets
assert all(set(np.unique(circle_buckets[r])) == {0, 1, 2, 3} for r in range(3))
assert np.array_equal(circle_buckets[:, 360:], (circle_buckets[:, :360] + 2) % 4)

# %% [markdown]
# ## The antipodal identity: $h(-x) = (h(x) + K/2) \bmod K$
#
# Negating $x$ negates every projection, which swaps the two halves of $[xR; -xR]$: entry $c$ of
# $[-xR; xR]$ is entry $(c + K/2) \bmod K$ of $[xR; -xR]$. So the maximum moves by exactly $K/2$
# places, and $x$ and $-x$, the least similar pair there is (angle $\pi$), *never* share a bucket.
# We check it for many vectors, several $K$ and several rounds at once.

# %%
rng = np.random.default_rng(2)
for n_buckets in (2, 4, 8, 32, 64):
    vectors = rng.standard_normal((2, 3, 50, 16))  # (B, H, L, Dh)
    rot = lsh.random_rotations(rng, 16, n_hashes=4, n_buckets=n_buckets, n_heads=3)
    h_plus, h_minus = lsh.hash_vectors(vectors, rot), lsh.hash_vectors(-vectors, rot)
    assert np.array_equal(h_minus, (h_plus + n_buckets // 2) % n_buckets)
    assert h_plus.min() >= 0 and h_plus.max() < n_buckets
print("h(-x) == (h(x) + K/2) mod K for K in 2, 4, 8, 32, 64")

# %% [markdown]
# ## How likely do two vectors share a bucket?
#
# Let $x, y$ be unit vectors at angle $\theta$. Everything $h$ sees of them is the pairs
# $(x^\top r_c,\; y^\top r_c)$, $c = 1, \dots, K/2$. Because each column $r_c$ is a standard normal
# vector, each pair is a standard **bivariate normal with correlation $\cos\theta$**, and the
# pairs are independent across columns. The dimension $D_h$ has dropped out: the collision
# probability $p_K(\theta) = \Pr[h(x) = h(y)]$ depends on the angle and on $K$ only.
#
# **$K = 2$ in closed form.** With one column $r$, $h(x)$ is just the sign of $x^\top r$: the
# hyperplane orthogonal to $r$ splits space in two. A uniformly random hyperplane through the
# origin separates $x$ from $y$ exactly when its trace in the plane of $x$ and $y$ (a uniformly
# random line) falls inside the angle between them, which happens with probability
# $\theta / \pi$. So
#
# $$
# p_2(\theta) = 1 - \frac{\theta}{\pi}.
# $$
#
# **More buckets.** For $K > 2$ the integral over the $K/2$ correlated pairs has no neat closed
# form, but the reduction above gives a cheap and independent *expected* value: simulate the
# correlated Gaussian pairs directly (no vectors, no matrices, no `lsh` code) and count how often
# the two argmaxes agree. More buckets make each bucket narrower, so the probability falls faster
# with the angle: at a fixed angle, nearby vectors are split more often, and far vectors much
# more often still.
#
# **$R$ rounds.** Rounds use independent matrices, so the probability that $x$ and $y$ share a
# bucket in *at least one* round (which is what decides whether a query can attend to a key,
# notebook 04) is
#
# $$
# P_{K,R}(\theta) = 1 - \big(1 - p_K(\theta)\big)^R .
# $$
#
# Do rounds lift the curve near $\theta = 0$ more than far away? That depends on $K$. Going from 1
# to $R$ rounds adds $(1 - p) - (1 - p)^R$, which is largest where $p$ is moderate. With many
# buckets ($K \ge 8$, and attention uses tens to thousands) $p_K$ is moderate for close pairs and
# tiny for far ones, so rounds recover the close neighbours a single round misses while far pairs
# stay rare. With $K = 2$, $p_2 = 1 - \theta/\pi$ is already close to 1 for close pairs and
# moderate for far ones, so rounds lift the far pairs *more*. The table and the checks below show
# both; the practical rule is to use enough buckets that one round is selective, then rounds to
# recover what it misses.

# %%
ANGLES = np.radians(np.arange(0, 181, 15))  # 13 angles from 0 to 180 degrees
BUCKETS, ROUNDS = (2, 4, 8, 16), (1, 2, 4)
N_MC = 200_000  # Monte-Carlo samples per angle for the expected curve


def expected_collision(theta, n_buckets, n_samples, rng):
    """p_K(theta) from correlated Gaussian pairs, independent of the lsh module."""
    rho = np.cos(theta)
    a = rng.standard_normal((n_samples, n_buckets // 2))  # x^T r_c
    b = rho * a + np.sqrt(max(0.0, 1 - rho**2)) * rng.standard_normal(a.shape)  # y^T r_c
    h_x = np.argmax(np.concatenate([a, -a], axis=1), axis=1)
    h_y = np.argmax(np.concatenate([b, -b], axis=1), axis=1)
    p = np.mean(h_x == h_y)
    return p, np.sqrt(p * (1 - p) / n_samples)


rng = np.random.default_rng(3)
expected = {
    k: np.array([expected_collision(t, k, N_MC, rng) for t in ANGLES]) for k in BUCKETS
}  # K -> (angles, 2): probability and its standard error

# the simulation reproduces the closed form for K = 2
p2, se2 = expected[2].T
print("K=2: max |simulated - (1 - theta/pi)| =", np.abs(p2 - (1 - ANGLES / np.pi)).max())
assert np.all(np.abs(p2 - (1 - ANGLES / np.pi)) <= 4.5 * se2 + 1e-12)

# %% [markdown]
# Now the **measurement** with the real thing: for each angle, 10,000 pairs of vectors in
# $D_h = 64$ at exactly that angle, hashed by `lsh.hash_vectors` with freshly drawn rotations. To
# average over many random matrices cheaply we use the per-head form of the rotations: each of 200
# "heads" has its own matrices and hashes 50 pairs. The standard error is computed from the
# spread of the 200 per-head averages, so it also covers the variation between matrices (and is
# never taken smaller than the binomial error $\sqrt{p(1-p)/n}$ of 10,000 independent pairs, which
# matters where every pair agrees and the spread is zero).

# %%
D_HEAD, N_ROT, N_PAIRS = 64, 200, 50


def pairs_at_angle(theta, rng):
    """(1, N_ROT, 2 * N_PAIRS, D_HEAD): N_PAIRS random x's, then the y's at angle theta."""
    x = rng.standard_normal((1, N_ROT, N_PAIRS, D_HEAD))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    u = rng.standard_normal(x.shape)  # a random direction orthogonal to x
    u -= np.sum(u * x, axis=-1, keepdims=True) * x
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    return np.concatenate([x, np.cos(theta) * x + np.sin(theta) * u], axis=2)


rng = np.random.default_rng(4)
measured = {}  # (K, R) -> (angles, 2): probability and standard error
for k, r in progress([(k, r) for k in BUCKETS for r in ROUNDS], desc="K, R"):
    rows = []
    for theta in ANGLES:
        rot = lsh.random_rotations(rng, D_HEAD, n_hashes=r, n_buckets=k, n_heads=N_ROT)
        h = lsh.hash_vectors(pairs_at_angle(theta, rng), rot)[0]  # (N_ROT, R, 2 * N_PAIRS)
        shared = np.any(h[..., :N_PAIRS] == h[..., N_PAIRS:], axis=1)  # (N_ROT, N_PAIRS)
        per_rotation = shared.mean(axis=1)
        rows.append((per_rotation.mean(), per_rotation.std(ddof=1) / np.sqrt(N_ROT)))
    measured[k, r] = np.array(rows)

# %%
print("P(share a bucket in >= 1 of R rounds), measured (expected)")
print("angle:      " + " ".join(f"{d:>11.0f}" for d in np.degrees(ANGLES[::3])))
worst_z = 0.0
for k in BUCKETS:
    p, se = expected[k].T
    for r in ROUNDS:
        exp_r = 1 - (1 - p) ** r
        exp_se = r * (1 - p) ** (r - 1) * se  # delta method
        meas, meas_se = measured[k, r].T
        binomial_se = np.sqrt(exp_r * (1 - exp_r) / (N_ROT * N_PAIRS))  # floor when all agree
        total_se = np.sqrt(np.maximum(meas_se, binomial_se) ** 2 + exp_se**2 + 1e-12)
        z = np.abs(meas - exp_r) / total_se
        worst_z = max(worst_z, z.max())
        cells = " ".join(f"{m:.3f}({e:.3f})" for m, e in zip(meas[::3], exp_r[::3]))
        print(f"K={k:>2} R={r}: {cells}")
print(f"largest deviation: {worst_z:.2f} standard errors over {len(BUCKETS) * len(ROUNDS)} curves")

# %% [markdown]
# Checks: every measured point agrees with its expectation within sampling error (4.5 standard
# errors, over 156 points); the probability is exactly 1 at angle 0 and exactly 0 at angle $\pi$
# (the antipodal identity); it decreases with the angle (up to noise); more buckets lower it and
# more rounds raise it.

# %%
assert worst_z < 4.5
for (k, r), curve in measured.items():
    meas, meas_se = curve.T
    assert meas[0] == 1.0 and meas[-1] == 0.0
    assert np.all(np.diff(meas) <= 3 * np.hypot(meas_se[1:], meas_se[:-1]) + 1e-12), (k, r)
    assert meas[1] > meas[6] > meas[11]  # 15 < 90 < 165 degrees: strictly lower, far beyond noise
middle = slice(1, -1)  # compare away from the two ends where all curves are 1 or 0
for r in ROUNDS:
    for k_small, k_big in zip(BUCKETS, BUCKETS[1:]):
        assert np.all(measured[k_big, r][middle, 0] <= measured[k_small, r][middle, 0] + 0.02)
for k in BUCKETS:
    for r_small, r_big in zip(ROUNDS, ROUNDS[1:]):
        assert np.all(measured[k, r_big][middle, 0] >= measured[k, r_small][middle, 0] - 0.02)
# the lift from 1 to 4 rounds, at 30 degrees (close) and at 135 degrees (far)
near, far = list(np.degrees(ANGLES).round()).index(30), list(np.degrees(ANGLES).round()).index(135)
lift = {k: measured[k, 4][:, 0] - measured[k, 1][:, 0] for k in BUCKETS}
for k in BUCKETS:
    print(f"K={k:>2}: 1 -> 4 rounds lifts 30 degrees by {lift[k][near]:.3f}, ", end="")
    print(f"135 degrees by {lift[k][far]:.3f}")
assert lift[2][near] < lift[2][far]  # K = 2: far pairs gain more
assert all(lift[k][near] > 5 * lift[k][far] for k in (8, 16))  # K >= 8: close pairs gain far more

# %%
fig, axes = plt.subplots(1, len(ROUNDS), figsize=(13, 4), sharey=True)
deg = np.degrees(ANGLES)
for ax, r in zip(axes, ROUNDS):
    for i, k in enumerate(BUCKETS):
        p = 1 - (1 - expected[k][:, 0]) ** r
        ax.plot(deg, p, "-", color=colours[i], lw=1.5, label=f"K={k} expected")
        meas, meas_se = measured[k, r].T
        ax.errorbar(
            deg, meas, yerr=2 * meas_se, fmt="o", ms=4, color=colours[i], label=f"K={k} measured"
        )
    if r == 1:  # a wide grey band under the K=2 curve, which it should (and does) match
        ax.plot(deg, 1 - ANGLES / np.pi, color="0.6", lw=6, alpha=0.5, zorder=0,
                label=r"$1 - \theta/\pi$ (exact, K=2)")  # fmt: skip
    ax.set_title(f"R = {r} round{'s' if r > 1 else ''}")
    ax.set_xlabel("angle between x and y (degrees)")
    ax.set_xticks(range(0, 181, 30))
    ax.grid(alpha=0.3)
axes[0].set_ylabel("P(same bucket in at least one round)")
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="upper center", ncol=5, fontsize=8, bbox_to_anchor=(0.5, 0.0))
fig.suptitle(
    f"Collision probability of angular LSH, Dh = {D_HEAD}: measured (points, 2 standard errors) "
    "vs expected (lines)",
    y=1.03,
)
save_figure(fig, "02_collision_probability")
plt.show()

# %% [markdown]
# ## How many buckets? $K = 2 \lceil L / C \rceil$
#
# In notebook 03 the queries are sorted by bucket and cut into chunks of $C$ consecutive
# queries; each chunk attends to itself and to the chunk before it. A query's window is therefore
# the $2C$ sorted positions of its own chunk and the previous one. How many of them come *before*
# it in sorted order depends on where it sits in its chunk: $C$ if it is the first of its chunk,
# up to $2C - 1$ if it is the last. Within a bucket the sort keeps the original order, so a query
# is sure to see all of its bucket's earlier members when there are at most $C$ of them, and may
# miss some when there are more. The cost of the attention is set by $C$ (each query scores at
# most $2C$ keys), not by $K$. So $K$ only decides how the $L$ queries are spread:
#
# * too **few** buckets, and a bucket holds more than $C$ queries: its members are spread over
#   several chunks and a query misses the bucket-mates outside its window;
# * too **many** buckets, and close neighbours are split more often (the previous figure: the
#   collision probability drops as $K$ grows), while the chunks fill up with several unrelated
#   small buckets.
#
# The paper's rule (section 2) sets the chunk length to $m = 2L / n_{buckets}$, twice the average
# bucket size $L / n_{buckets}$, and assumes that a bucket rarely grows to twice its average. For a
# chosen chunk length $C$ that is $K = 2L/C$; `lsh.default_n_buckets` rounds $L/C$ up (so that $K$
# is even and any $L$ works) and uses at least 2 buckets.
#
# **Factorised buckets.** Hashing into $K$ buckets costs $K/2$ projections per vector, and under
# the rule $K = 2L/C$ that grows with $L$: at $L = 65{,}536$ and $C = 64$, 1,024 projections per
# token and round, more than attending to its $2C = 128$ keys. The released code (trax, Hugging
# Face) therefore accepts the bucket count as factors $(K_1, K_2)$: two independent hashes $h_1$
# into $K_1$ buckets and $h_2$ into $K_2$ are combined as $h = h_1 + K_1 h_2$, at
# $(K_1 + K_2)/2$ projections. Two vectors share $h$ exactly when they share both $h_1$ and $h_2$,
# so the collision probability is $p_{K_1}(\theta)\, p_{K_2}(\theta)$ and the family is still
# locality-sensitive. The library's default factorises above 128 buckets, into two even factors
# of about $\sqrt{K}$ each (their product may round $K$ up a little).

# %%
for length, chunk in ((16, 4), (1024, 64), (4096, 64), (1000, 64), (50, 64), (65536, 64)):
    k = lsh.default_n_buckets(length, chunk)
    total, width = lsh.total_buckets(k), lsh.rotation_width(k)
    print(
        f"L={length:>5} C={chunk:>3}: K = {k!s:>8} ({total:>4} buckets, {width:>3} projections), "
        f"average bucket size L/K = {length / total:6.1f}"
    )
assert lsh.default_n_buckets(1024, 64) == 32 and lsh.default_n_buckets(1000, 64) == 32
assert lsh.default_n_buckets(50, 64) == 2 and lsh.default_n_buckets(16, 4) == 8
factors = lsh.default_n_buckets(65536, 64)
assert lsh.total_buckets(factors) >= 2048 and lsh.rotation_width(factors) < 64  # not 1,024

# %% [markdown]
# ## Buckets of attention-like queries
#
# Real attention queries are not spread uniformly over the sphere: tokens that play similar roles
# produce similar queries. We mimic that with a sequence of $L = 1024$ tokens drawn from 24
# clusters (a cluster centre in a 32-dimensional "embedding" space plus noise), projected to
# queries of width $D_h = 64$ by a random matrix, as a shared-QK projection $W_{qk}$ would do. With
# chunk length $C = 64$ the default is $K = 32$ buckets. For comparison we also hash isotropic
# random queries (no structure at all).

# %%
rng = np.random.default_rng(5)
L, D_MODEL, D_QK, N_CLUSTERS, CHUNK = 1024, 32, 64, 24, 64
N_BUCKETS = lsh.default_n_buckets(L, CHUNK)
centres = rng.standard_normal((N_CLUSTERS, D_MODEL))
cluster = rng.integers(N_CLUSTERS, size=L)  # (L,) the cluster of each token
tokens = centres[cluster] + 0.35 * rng.standard_normal((L, D_MODEL))  # (L, D)
w_qk = rng.standard_normal((D_MODEL, D_QK)) / np.sqrt(D_MODEL)
queries = (tokens @ w_qk)[None, None]  # (B=1, H=1, L, Dh)
isotropic = rng.standard_normal(queries.shape)
rot = lsh.random_rotations(rng, D_QK, n_hashes=1, n_buckets=N_BUCKETS)
buckets = lsh.hash_vectors(queries, rot)[0, 0, 0]  # (L,)
buckets_iso = lsh.hash_vectors(isotropic, rot)[0, 0, 0]  # (L,)
sizes = np.bincount(buckets, minlength=N_BUCKETS)
sizes_iso = np.bincount(buckets_iso, minlength=N_BUCKETS)

same_cluster = cluster[:, None] == cluster[None, :]
same_bucket = buckets[:, None] == buckets[None, :]
off_diag = ~np.eye(L, dtype=bool)
p_within = same_bucket[same_cluster & off_diag].mean()
p_between = same_bucket[~same_cluster].mean()
print(f"K = {N_BUCKETS} buckets, chunk length C = {CHUNK}, average bucket size {L / N_BUCKETS:.0f}")
print(f"P(same bucket | same cluster)      = {p_within:.3f}")
print(f"P(same bucket | different cluster) = {p_between:.3f}")
print(f"largest bucket: clustered {sizes.max()}, isotropic {sizes_iso.max()}")
overflow = np.mean(sizes[buckets] > CHUNK)  # share of queries whose bucket exceeds a chunk
overflow_iso = np.mean(sizes_iso[buckets_iso] > CHUNK)
print(f"share of queries in a bucket larger than C: clustered {overflow:.3f}, ", end="")
print(f"isotropic {overflow_iso:.3f}")

# %% [markdown]
# Queries of the same cluster share a bucket far more often than queries of different clusters:
# the hash has found the structure without being told about it. The price of that structure is
# uneven bucket sizes. Isotropic queries spread over the buckets fairly evenly (sizes scatter
# around $L/K = 32$ and stay below $C$ here), which is the situation the rule $K = 2L/C$ is designed
# for. (Not perfectly evenly: for one fixed Gaussian $R$, which is not a rotation, some buckets
# are more likely than others.) Clustered queries pile up in a few buckets, some larger than
# $C$, where a query cannot see all of its bucket. Multi-round hashing and the look-back window
# soften this, and notebook 04 measures the resulting error.

# %%
assert p_within > 5 * p_between
assert sizes.sum() == L and sizes_iso.sum() == L
assert sizes_iso.max() <= CHUNK  # isotropic queries: every bucket stays within a chunk here
assert overflow > 0.1 and sizes.max() > sizes_iso.max()  # clustered queries make large buckets

# %%
# a 2-D view: the two leading principal directions of the unit-length queries
unit_q = queries[0, 0] / np.linalg.norm(queries[0, 0], axis=-1, keepdims=True)
centred = unit_q - unit_q.mean(axis=0)
_, _, vt = np.linalg.svd(centred, full_matrices=False)
xy = centred @ vt[:2].T  # (L, 2)

fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), gridspec_kw={"width_ratios": [1, 1.15, 1]})
# 32 buckets cannot be told apart by colour: the 8 largest are coloured, the others grey
largest = np.argsort(-sizes, kind="stable")[:8]
palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]  # tab10 less its grey
axes[0].scatter(*xy[~np.isin(buckets, largest)].T, c="0.8", s=6, label="other buckets")
for colour, b in zip(palette, largest):
    axes[0].scatter(*xy[buckets == b].T, color=colour, s=8, label=f"bucket {b} ({sizes[b]})")
axes[0].set_title("unit-length queries (PCA): the 8 largest buckets")
axes[0].legend(
    fontsize=7,
    loc="upper center",
    bbox_to_anchor=(0.5, 0.0),
    ncol=3,
    markerscale=1.5,
    title="bucket (size)",
    title_fontsize=7,
)  # below the points
axes[0].set_xticks([])
axes[0].set_yticks([])

counts = np.zeros((N_CLUSTERS, N_BUCKETS), dtype=int)
np.add.at(counts, (cluster, buckets), 1)
order = np.argsort(np.argmax(counts, axis=0) * N_BUCKETS - counts.max(axis=0))
im = axes[1].imshow(counts[:, order], cmap="Blues", aspect="auto")
axes[1].set_xlabel("bucket (sorted by main cluster)")
axes[1].set_ylabel("cluster")
axes[1].set_title("tokens per (cluster, bucket)")
fig.colorbar(im, ax=axes[1], label="tokens of that cluster in that bucket")

rank = np.arange(N_BUCKETS)
axes[2].bar(rank - 0.2, np.sort(sizes)[::-1], width=0.4, label="clustered queries")
axes[2].bar(rank + 0.2, np.sort(sizes_iso)[::-1], width=0.4, label="isotropic queries")
axes[2].axhline(L / N_BUCKETS, color="k", ls=":", label="L/K (average)")
axes[2].axhline(CHUNK, color="r", ls="--", label="C (chunk length)")
axes[2].set_xlabel("bucket, largest first")
axes[2].set_ylabel("queries in bucket")
axes[2].set_title(f"bucket sizes, L = {L}, K = {N_BUCKETS}")
axes[2].legend(fontsize=8)
fig.tight_layout()
save_figure(fig, "02_query_buckets")
plt.show()

# %% [markdown]
# ## Recap
#
# * Shared-QK attention makes the key the unit-length query, so a query's logits are its length
#   times the cosine of the angle to each key: the hash must find small angles.
# * $h(x) = \arg\max([xR; -xR])$ with a Gaussian $R$ of shape $(D_h, K/2)$ assigns a direction to
#   the signed random axis it is closest to; it ignores length, and $h(-x) = (h(x) + K/2) \bmod K$
#   (both asserted, the second for $K$ = 2 to 64). $R$ is close to a scaled rotation only for
#   $K/2 \ll D_h$, and the hash does not need it to be one.
# * The chance that two vectors share a bucket depends only on their angle and falls with it:
#   exactly $1 - \theta/\pi$ for $K = 2$ (simulated within sampling error), faster for more
#   buckets. Every one of 156 measured points, 4 bucket counts times 3 round counts, agrees with
#   the independent simulation within 4.5 standard errors (asserted). Rounds raise it; for
#   $K \ge 8$ far more for close pairs than for far ones (asserted), for $K = 2$ the other way
#   round (asserted).
# * The number of buckets follows the chunk length, $K = 2\lceil L/C \rceil$, so that an average
#   bucket fills half a chunk; above 128 buckets the library factorises $K$ into two hashes, so that
#   hashing costs about $\sqrt{K}$ projections instead of $K/2$. Clustered queries share buckets
#   with their cluster far more often than with others (asserted: over 5 times), and make buckets
#   uneven, some larger than a chunk.
#
# The numbers of this run:

# %%
print(f"largest deviation from the expected collision curves: {worst_z:.2f} standard errors")
print(f"K=16, 1 -> 4 rounds: +{lift[16][near]:.3f} at 30 degrees, +{lift[16][far]:.3f} at 135")
print(f"same-cluster pairs share a bucket {p_within:.3f}, others {p_between:.3f}; ", end="")
print(
    f"largest bucket {sizes.max()} (clustered) against {sizes_iso.max()} (isotropic), C = {CHUNK}"
)

# %% [markdown]
# **Next:** [notebook 03](03_lsh_attention.ipynb) sorts queries by these buckets and builds LSH
# attention from them. Practise with `exercises/02_hashing.py`: the hash, the collision
# probability by Monte Carlo, and the multi-round formula.

# %%
print(f"notebook ran in {time.perf_counter() - START:.1f} s")
