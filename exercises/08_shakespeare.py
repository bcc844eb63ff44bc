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
# # Exercises 08: a language model on Shakespeare
#
# Exercises for [notebook 08](../notebooks/08_shakespeare.ipynb). You will write one step of the
# Adam optimizer by hand, turn a model's loss into bits per character, and sample the next
# character with a temperature and a top-k cut. The checks compare with
# `minireformer.training.optim`,
# `minireformer.training.train` and `minireformer.training.sampling`.

# %%
import numpy as np

from minireformer.teaching import grading
from minireformer.training import (
    checkpoint,
    data,
    evaluation,
    experiments,
    lm,
    optim,
    sampling,
)

rng = np.random.default_rng(0)

# %% [markdown]
# ### Exercise 8.1: one step of Adam, by hand
#
# Adam (Kingma and Ba 2015, Algorithm 1) keeps, for a parameter $\theta$ with gradient $g$ at step
# $t = 1, 2, \dots$, two running averages and updates
#
# $$
# m_t = \beta_1 m_{t-1} + (1 - \beta_1) g, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g^2,
# $$
# $$
# \theta_t = \theta_{t-1} - \mathrm{lr}\,
#     \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}.
# $$
#
# Implement `adam_update(theta, g, m, v, t, lr, beta1, beta2, eps)` returning the new
# `(theta, m, v)`, all arrays of `theta`'s shape, without modifying the inputs.


# %%
def adam_update(theta, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step at step number t >= 1: (theta_t, m_t, v_t)."""
    # BEGIN SOLUTION
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return theta - lr * m_hat / (np.sqrt(v_hat) + eps), m, v
    # END SOLUTION


# %% [markdown]
# The check runs three steps of yours and of `optim.Adam` from the same start, with a different
# gradient at each step:

# %%
theta0 = rng.standard_normal((3, 4))
grads = rng.standard_normal((3, 3, 4))  # one gradient per step
adam = optim.Adam(lr=1e-2)
params = {"w": theta0.copy()}
state = adam.init(params)
theta, m, v = theta0, np.zeros_like(theta0), np.zeros_like(theta0)
for t, g in enumerate(grads, start=1):
    adam.step(params, {"w": g}, state)
    theta, m, v = adam_update(theta, g, m, v, t, lr=1e-2)
    grading.check_close(f"Exercise 8.1: parameters after step {t}", theta, params["w"])
grading.check_close("Exercise 8.1: first moment", m, state["m"]["w"])
grading.check_close("Exercise 8.1: second moment", v, state["v"]["w"])

# %% [markdown]
# ### Question 8.1
#
# What would the first update be without the bias correction $1 / (1 - \beta^t)$, with the
# defaults $\beta_1 = 0.9$, $\beta_2 = 0.999$? Why is the correction needed?
#
# <!-- BEGIN ANSWER -->
# At $t = 1$, $m_1 = 0.1\,g$ and $v_1 = 0.001\,g^2$, so the uncorrected step is
# $\mathrm{lr} \cdot 0.1 g / (0.0316 |g|) \approx 3.16\,\mathrm{lr}$ per entry instead of
# $\mathrm{lr}$: the averages start at zero and are biased towards it, $v$ more than $m$ since
# $\beta_2$ is closer to 1. Dividing by $1 - \beta^t$ removes that bias exactly for a constant
# gradient, so that the first steps have the intended size $\mathrm{lr}$.
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 8.2: bits per character from a loss
#
# A language model's loss is the mean negative log-likelihood of the next character in **nats**
# (natural logarithms). Implement `bits_per_character(logits, tokens)`: `tokens` $(B, L + 1)$ is a
# batch of windows, `logits` $(B, L, V)$ the model's output on their first $L$ characters, and
# position $t$'s logits predict token $t + 1$; compute the mean over all $B L$ targets of
# $\mathrm{logsumexp}(z_t) - z_{t, x_{t+1}}$ (subtract
# each row's maximum before exponentiating; work in float64), and convert it to bits, the
# logarithm in base 2: divide by $\ln 2$.


# %%
def bits_per_character(logits, tokens):
    """Mean next-character negative log-likelihood of logits (B, L, V), in bits."""
    # BEGIN SOLUTION
    z = logits.astype(np.float64)  # (B, L, V)
    targets = tokens[:, 1:]  # (B, L)
    z_max = z.max(axis=-1, keepdims=True)
    lse = z_max[..., 0] + np.log(np.exp(z - z_max).sum(axis=-1))
    nll = lse - np.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
    return float(nll.mean() / np.log(2))
    # END SOLUTION


# %%
text = data.from_spec(experiments.TEXT_DATA)
model = checkpoint.load(experiments.CHECKPOINTS / "shakespeare_transformer.npz")
batches = text.eval_batches(4, 64, 1)  # the first 4 validation windows of 64 characters
tokens = batches[0][0]
logits = lm.forward_logits(model.params, tokens[:, :-1], model.config)  # reads all but the last
expected = evaluation.evaluate(model.params, model.config, batches)["bits"]
got = bits_per_character(logits, tokens)
print(f"{got:.4f} bits per character on {tokens.shape[0] * (tokens.shape[1] - 1)} characters")
grading.check_close("Exercise 8.2: bits per character", got, expected, rtol=1e-5)

# %% [markdown]
# ### Question 8.2
#
# The vocabulary has 65 characters. What does a model that assigns every character the same
# probability score, and what does the unigram floor of notebook 08 (about 4.8 bits) tell you?
#
# <!-- BEGIN ANSWER -->
# The uniform model scores $\log_2 65 \approx 6.02$ bits per character on any text. The unigram
# model, which only knows how often each character occurs, already saves about 1.2 bits because
# the frequencies are very uneven (spaces and "e" are common, "Z" rare). A model must beat the
# unigram and bigram floors to show that it uses context at all.
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 8.3: sampling with a temperature and top-k
#
# Implement `sample_next(logits, rng, temperature, top_k)` returning one token id from logits
# $(V,)$:
#
# - temperature 0: the most likely token (`argmax`), drawing nothing;
# - otherwise $z = \text{logits} / T$; if `top_k` is given and smaller than $V$, set every entry
#   below the $k$-th largest to $-\infty$ (ties at the cut are kept); then
#   $p = \mathrm{softmax}(z)$ (max-subtracted), and draw with **one** call
#   `rng.choice(V, p=p)` (so that the same Generator gives the library's samples).
#
# Work in float64.


# %%
def sample_next(logits, rng, temperature=1.0, top_k=None):
    """One token id drawn from softmax(logits / temperature) over the top_k largest."""
    # BEGIN SOLUTION
    z = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return int(np.argmax(z))
    z = z / temperature
    if top_k is not None and top_k < z.size:
        cut = np.sort(z)[-top_k]
        z = np.where(z >= cut, z, -np.inf)
    p = np.exp(z - z.max())
    return int(rng.choice(z.size, p=p / p.sum()))
    # END SOLUTION


# %%
next_logits = logits[0, -1]  # the model's logits for the character after the first window
for temperature, top_k in ((0, None), (1.0, None), (0.8, 5), (2.0, 3)):
    mine_rng, lib_rng = np.random.default_rng(3), np.random.default_rng(3)
    mine = [sample_next(next_logits, mine_rng, temperature, top_k) for _ in range(30)]
    lib = [
        sampling.sample_next(next_logits, lib_rng, temperature=temperature, top_k=top_k)
        for _ in range(30)
    ]
    grading.check_equal(
        f"Exercise 8.3: T={temperature}, top_k={top_k}", np.array(mine), np.array(lib)
    )
top3 = set(np.argsort(next_logits)[-3:].tolist())
draws = {sample_next(next_logits, np.random.default_rng(s), 2.0, 3) for s in range(50)}
grading.check_true(
    "Exercise 8.3: top-3 only", draws <= top3, f"drew {sorted(draws - top3)} outside the top 3"
)

# %% [markdown]
# ### Question 8.3
#
# What happens to the samples as the temperature goes to 0, and as it grows large? What does
# top-k add?
#
# <!-- BEGIN ANSWER -->
# Dividing the logits by $T$ sharpens the distribution for $T < 1$ and flattens it for $T > 1$. As
# $T \to 0$ all probability goes to the most likely character (greedy decoding: safe, repetitive
# text); as $T \to \infty$ the distribution tends to uniform over the vocabulary (random
# characters). Top-k removes the long tail of unlikely characters whatever the temperature, so a
# higher temperature can add variety without drawing nonsense characters.
# <!-- END ANSWER -->
