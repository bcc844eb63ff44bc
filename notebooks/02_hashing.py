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
# ## Why hash at all?
#
# Softmax attention $\operatorname{softmax}(q_i^\top k_j)$ is dominated by the few keys with the
# largest logits: a key whose logit is 10 below the best one gets a weight of about
# $e^{-10} \approx 4.5 \cdot 10^{-5}$ of the best key's. If, for each query, we could find the keys
# closest to it *without* computing all $L^2$ logits, we could attend only to those and lose very
# little. Finding near neighbours among $L$ vectors quickly is exactly what locality-sensitive
# hashing (LSH) is for.
#
# A hash function $h$ is *locality-sensitive* if vectors close to each other get the same hash
# with high probability and vectors far apart get the same hash with low probability. The
# Reformer uses it to put each query into one of $K$ *buckets*, and then lets a query attend only
# within its bucket (notebook 03 shows how this becomes a fast, sorted and chunked computation).
# Because keys are the unit-length queries (shared-QK attention), "close" means a small
# **angle**: the logit $q_i^\top k_j = |q_i| \cos\theta_{ij}$ grows as the angle shrinks. So we want
# a hash of the *direction* of a vector.
#
# This notebook builds that hash from nothing, draws it in two dimensions, measures how the
# probability of sharing a bucket falls with the angle, and looks at the buckets of clustered
# queries like the ones attention sees.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from minireformer import lsh
from minireformer.plotting import save_figure

START = time.perf_counter()

# %% [markdown]
# ## The hash: $h(x) = \arg\max([xR;\, -xR])$
#
# To hash into $K$ buckets ($K$ even), draw one random matrix $R$ of shape $(D_h, K/2)$ with
# independent standard normal entries. Its $K/2$ columns $r_1, \dots, r_{K/2}$ are random
# directions: in high dimensions they are almost orthogonal, so $xR$ is, up to scale, the
# coordinates of $x$ in a randomly rotated frame (the paper calls $R$ a *random rotation*).
# Then
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
# For this picture we pass exact rotation matrices to `lsh.hash_vectors`. The library's
# `random_rotations` draws Gaussian matrices instead, which is simpler and, in the dimensions
# attention uses, almost the same thing: $K/2$ Gaussian columns in $D_h = 64$ dimensions are
# nearly orthogonal and of nearly equal length (checked below), so $R$ is close to a scaled
# rotation. In two dimensions a Gaussian matrix is far from a rotation and its arcs would be
# lopsided.
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

# %%
cols = lsh.random_rotations(np.random.default_rng(6), dim=64, n_hashes=1, n_buckets=32)[:, 0]
lengths = np.linalg.norm(cols, axis=0)  # (K/2,)
cosines = (cols.T @ cols / np.outer(lengths, lengths))[np.triu_indices(16, k=1)]
print(
    f"Gaussian R, Dh=64, K=32: column lengths {lengths.mean():.2f} +- {lengths.std():.2f} "
    f"(sqrt(64) = 8), |cos| between columns: mean {np.abs(cosines).mean():.3f}"
)
assert np.abs(lengths / 8 - 1).max() < 0.3 and np.abs(cosines).max() < 0.5

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
# notebook 03) is
#
# $$
# P_{K,R}(\theta) = 1 - \big(1 - p_K(\theta)\big)^R .
# $$
#
# Rounds lift the curve near $\theta = 0$ much more than far away: that is how multi-round hashing
# recovers the close neighbours a single round misses while still mostly ignoring far ones.

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
for k, r in tqdm([(k, r) for k in BUCKETS for r in ROUNDS], desc="K, R"):
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
    if r == 1:
        ax.plot(deg, 1 - ANGLES / np.pi, "k:", lw=1, label="1 - theta/pi")
    ax.set_title(f"R = {r} round{'s' if r > 1 else ''}")
    ax.set_xlabel("angle between x and y (degrees)")
    ax.set_xticks(range(0, 181, 30))
    ax.grid(alpha=0.3)
axes[0].set_ylabel("P(same bucket in at least one round)")
axes[0].legend(fontsize=7, ncol=2)
fig.suptitle(f"Collision probability of angular LSH, Dh = {D_HEAD}: measured (points) vs expected")
save_figure(fig, "02_collision_probability")
plt.show()

# %% [markdown]
# ## How many buckets? $K = 2 \lceil L / C \rceil$
#
# In notebook 03 the queries are sorted by bucket and cut into chunks of $C$ consecutive
# queries; each chunk attends to itself and to the chunk before it. A query can therefore see at
# most the $C$ to $2C$ sorted positions around it, and it sees all of its bucket's earlier members
# when its bucket holds no more than about $C$ queries. The cost of the attention is set by $C$
# (each query scores at most $2C$ keys), not by $K$. So $K$ only decides how the $L$ queries are
# spread:
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

# %%
for length, chunk in ((16, 4), (1024, 64), (4096, 64), (1000, 64), (50, 64)):
    k = lsh.default_n_buckets(length, chunk)
    print(f"L={length:>5} C={chunk:>3}: K = {k:>3}, average bucket size L/K = {length / k:6.1f}")
assert lsh.default_n_buckets(1024, 64) == 32 and lsh.default_n_buckets(1000, 64) == 32
assert lsh.default_n_buckets(50, 64) == 2 and lsh.default_n_buckets(16, 4) == 8

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
# for. (Not perfectly evenly: a Gaussian $R$ is only approximately a rotation, so some buckets are
# a little more likely than others.) Clustered queries pile up in a few buckets, some larger than
# $C$, where a query cannot see all of its bucket. Multi-round
# hashing and the look-back window soften this, and notebook 03 measures the resulting error.

# %%
assert p_within > 5 * p_between
assert sizes.sum() == L and sizes_iso.sum() == L
assert overflow_iso < 0.05  # isotropic queries (almost) never overflow a chunk
assert overflow > 0.1 and sizes.max() > sizes_iso.max()  # clustered queries make large buckets

# %%
# a 2-D view: the two leading principal directions of the unit-length queries
unit_q = queries[0, 0] / np.linalg.norm(queries[0, 0], axis=-1, keepdims=True)
centred = unit_q - unit_q.mean(axis=0)
_, _, vt = np.linalg.svd(centred, full_matrices=False)
xy = centred @ vt[:2].T  # (L, 2)

fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
cmap = plt.get_cmap("tab20", N_BUCKETS)
axes[0].scatter(*xy.T, c=buckets, cmap=cmap, vmin=-0.5, vmax=N_BUCKETS - 0.5, s=8)
axes[0].set_title("unit-length queries (PCA), coloured by bucket")
axes[0].set_xticks([])
axes[0].set_yticks([])

counts = np.zeros((N_CLUSTERS, N_BUCKETS), dtype=int)
np.add.at(counts, (cluster, buckets), 1)
order = np.argsort(np.argmax(counts, axis=0) * N_BUCKETS - counts.max(axis=0))
im = axes[1].imshow(counts[:, order], cmap="Blues", aspect="auto")
axes[1].set_xlabel("bucket (sorted by main cluster)")
axes[1].set_ylabel("cluster")
axes[1].set_title("tokens per (cluster, bucket)")
fig.colorbar(im, ax=axes[1])

rank = np.arange(N_BUCKETS)
axes[2].bar(rank - 0.2, np.sort(sizes)[::-1], width=0.4, label="clustered queries")
axes[2].bar(rank + 0.2, np.sort(sizes_iso)[::-1], width=0.4, label="isotropic queries")
axes[2].axhline(L / N_BUCKETS, color="k", ls=":", label="L/K (average)")
axes[2].axhline(CHUNK, color="r", ls="--", label="C (chunk length)")
axes[2].set_xlabel("bucket, largest first")
axes[2].set_ylabel("queries in bucket")
axes[2].set_title(f"bucket sizes, L = {L}, K = {N_BUCKETS}")
axes[2].legend(fontsize=8)
save_figure(fig, "02_query_buckets")
plt.show()

# %% [markdown]
# ## Summary
#
# * $h(x) = \arg\max([xR; -xR])$ with a Gaussian $R$ of shape $(D_h, K/2)$ assigns a direction to
#   the signed random axis it is closest to; it ignores length, and $h(-x) = (h(x) + K/2) \bmod K$.
# * The chance that two vectors share a bucket depends only on their angle and falls steadily
#   with it: exactly $1 - \theta/\pi$ for $K = 2$, faster for more buckets. Several independent
#   rounds raise it, mostly for close pairs.
# * The number of buckets follows the chunk length, $K = 2\lceil L/C \rceil$, so that an average
#   bucket fills half a chunk. Clustered queries make buckets uneven.
#
# Next, notebook 03 sorts queries by these buckets and builds LSH attention from them.

# %%
print(f"notebook ran in {time.perf_counter() - START:.1f} s")
