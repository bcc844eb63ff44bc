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
# # Exercises 07: the duplication task
#
# Exercises for [notebook 07](../notebooks/07_duplication.ipynb). You will generate the paper's
# synthetic task, score a model on the half of it that can be predicted, and evaluate a shipped
# checkpoint with another number of hash rounds than it was trained with. The checks compare
# with `minireformer.training.data` and `minireformer.training.train`.

# %%
import dataclasses

import numpy as np

from minireformer.teaching import grading
from minireformer.training import checkpoint, data, evaluation, experiments, lm

# |w| = 63 symbols from 1..63, L = 128
task = data.from_spec(experiments.DUPLICATION["duplication"]["data"])
model = checkpoint.load(experiments.CHECKPOINTS / "duplication_full.npz")  # trained with full
print("L =", task.length, " |w| =", task.word_len, " symbols 1 ..", task.n_symbols)

# %% [markdown]
# ### Exercise 7.1: the batch generator
#
# Each sequence is $0\,w\,0\,w$: a zero, a word $w$ of $|w|$ symbols drawn uniformly from
# $1..N$, a zero, and the word again, so $L = 2|w| + 2$. Implement
# `duplication_batch(rng, n, word_len, n_symbols)` returning
#
# - `tokens`, $(n, L)$ integers; draw all the words with **one** call
#   `rng.integers(1, n_symbols + 1, size=(n, word_len))` (so that the same Generator state gives
#   the library's sequences);
# - `mask`, $(n, L - 1)$ booleans, True where the target counts. Logit $t$ predicts token
#   $t + 1$; only the second copy can be predicted, and it occupies tokens $|w| + 2 .. 2|w| + 1$.


# %%
def duplication_batch(rng, n, word_len, n_symbols):
    """(tokens (n, 2 word_len + 2) int, mask (n, 2 word_len + 1) bool) of the task 0 w 0 w."""
    # BEGIN SOLUTION
    w = rng.integers(1, n_symbols + 1, size=(n, word_len))
    zero = np.zeros((n, 1), dtype=np.int64)
    tokens = np.concatenate([zero, w, zero, w], axis=1)
    mask = np.zeros((n, 2 * word_len + 1), dtype=bool)
    mask[:, word_len + 1 :] = True
    return tokens, mask
    # END SOLUTION


# %%
mine = duplication_batch(np.random.default_rng(5), 4, task.word_len, task.n_symbols)
lib = task.sequences(np.random.default_rng(5), 4)
grading.check_equal("Exercise 7.1: tokens", mine[0], lib[0])
grading.check_equal("Exercise 7.1: mask", mine[1], lib[1])

# %% [markdown]
# ### Question 7.1
#
# Why are the loss and the accuracy counted over the second copy only?
#
# <!-- BEGIN ANSWER -->
# The first copy is drawn uniformly at random, so no model can predict it better than chance
# ($1/63$ per symbol here); counting it would add a constant floor that hides what is being tested.
# The second copy is fully determined by the first, and predicting it requires finding the
# matching earlier position: exactly the ability (attention over long distances, and whether LSH
# puts a query and its match in one bucket) the task is meant to measure.
# <!-- END ANSWER -->

# %% [markdown]
# ### Exercise 7.2: the accuracy over the second half
#
# Implement `copy_accuracy(logits, tokens, mask)`: the share (between 0 and 1) of counted targets
# that the model predicts exactly. A sequence has $L + 1$ tokens; the model reads the first $L$,
# and `logits` $(B, L, V)$ is its output: position $t$'s logits predict token $t + 1$, so compare
# the argmax of `logits` with `tokens[:, 1:]`, over the entries where `mask` $(B, L)$ is True.


# %%
def copy_accuracy(logits, tokens, mask):
    """Fraction of the masked next-token targets predicted by argmax: a float in [0, 1]."""
    # BEGIN SOLUTION
    hits = np.argmax(logits, axis=-1) == tokens[:, 1:]
    return float(hits[mask].mean())
    # END SOLUTION


# %%
tokens, mask = task.eval_batches(20, None, 1)[0]
logits = lm.forward_logits(model.params, tokens[:, :-1], model.config, np.random.default_rng(7))
expected = evaluation.evaluate(model.params, model.config, [(tokens, mask)], seed=7)["accuracy"]
grading.check_close("Exercise 7.2: accuracy", copy_accuracy(logits, tokens, mask), expected)

# %% [markdown]
# ### Exercise 7.3: a shipped checkpoint, evaluated with other hash rounds
#
# The model loaded above was trained with full attention. Its parameters do not depend on the
# attention or on the number of rounds, so the same weights can be evaluated with LSH attention:
# `dataclasses.replace(config, attention_types=("lsh",), n_hashes=R)`. Implement
# `accuracy_with_rounds(ck, n_hashes, batches, seed)`: make that config, then for each
# `(tokens, mask)` in `batches` compute the logits with
# `lm.forward_logits(ck.params, tokens[:, :-1], config, rng)`, **one** Generator
# `rng = np.random.default_rng(seed)` drawn from for all batches (it draws the rotations), and
# return the accuracy over all counted targets of all batches, between 0 and 1.


# %%
def accuracy_with_rounds(ck, n_hashes, batches, seed):
    """Second-copy accuracy of checkpoint ck with LSH attention of n_hashes rounds."""
    # BEGIN SOLUTION
    config = dataclasses.replace(ck.config, attention_types=("lsh",), n_hashes=n_hashes)
    rng = np.random.default_rng(seed)
    correct, count = 0, 0
    for tokens, mask in batches:
        logits = lm.forward_logits(ck.params, tokens[:, :-1], config, rng)
        hits = np.argmax(logits, axis=-1) == tokens[:, 1:]
        correct += int(hits[mask].sum())
        count += int(mask.sum())
    return correct / count
    # END SOLUTION


# %%
batches = task.eval_batches(20, None, 2)  # 40 held-out sequences
scores = {r: accuracy_with_rounds(model, r, batches, seed=7) for r in (1, 8)}
print({f"LSH-{r}": round(100 * a, 1) for r, a in scores.items()}, "% on the copy")
for r, acc in scores.items():
    cfg_r = dataclasses.replace(model.config, attention_types=("lsh",), n_hashes=r)
    reference = evaluation.evaluate(model.params, cfg_r, batches, seed=7)["accuracy"]
    grading.check_close(f"Exercise 7.3: accuracy with {r} rounds", acc, reference)
grading.check_true(
    "Exercise 7.3: more rounds, higher accuracy",
    scores[8] > scores[1],
    "with 8 rounds the full-attention model should be more accurate than with 1",
)

# %% [markdown]
# ### Question 7.2
#
# The model trained with full attention loses accuracy when evaluated with one hash round, and
# recovers it with eight. Why? And why are models *trained* with LSH better at one round?
#
# <!-- BEGIN ANSWER -->
# With one round, a query's copy lands in another bucket with some probability, and then the
# query cannot attend to it at all (the paper's semantics masks other buckets): the prediction
# fails. Each further round is another independent chance for the two to share a bucket, so
# the probability of missing the copy in every round falls geometrically with the number of
# rounds. A model trained with LSH learns queries and keys that hash together reliably (nearly
# parallel vectors), because during training a missed copy costs loss; the full-attention model
# never had a reason to.
# <!-- END ANSWER -->

# %% [markdown]
# ### Question 7.3
#
# With shared-QK attention a query cannot simply look for its own token: the key it needs holds
# another symbol. How does the one-layer model find it?
#
# <!-- BEGIN ANSWER -->
# Through the positions: the second-copy query at $t$ must read position $t - |w|$, the position
# of its successor in the first copy, a fixed offset. The learned positional embedding lets the
# query and key vectors encode position, so the model learns queries that point at the key
# $|w|$ positions back, whatever the symbols are (notebook 07, section 6, shows that line in the
# attention map).
# <!-- END ANSWER -->
