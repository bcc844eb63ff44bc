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
# # 07 The duplication task: does LSH attention find what full attention finds?
#
# Reformer paper (Kitaev, Kaiser, Levskaya 2020), section 2.1 "Analysis on a synthetic task" and
# its Table 2.
#
# Notebooks 02-06 built LSH attention, reversible layers and chunking and checked each against its
# exact counterpart. None of them trained anything. This notebook trains (or loads) small
# Reformers on a task that only attention can solve, and asks the paper's question: *a model
# trained with one attention, evaluated with another: does it still work?*
#
# **The task.** Each sequence is $0\,w\,0\,w$: a zero, a word $w$ of $|w|$ symbols drawn uniformly
# from $1..N$, a zero, and the same word again. The first half is random, so no model can predict
# it; the second half is a copy, so a model that finds the matching position in the first half
# predicts it perfectly. Loss and accuracy count the second copy only. The paper uses $N = 127$,
# $|w| = 511$ ($L = 1024$); here $N = 63$, $|w| = 63$ ($L = 128$), so that each model trains in a
# few minutes on a laptop CPU.
#
# Why it is a good test of LSH: with shared-QK attention the query at position $t$ of the second
# half must hash into the same bucket as the key it needs in the first half. That key holds a
# *different token* than the query; the model must learn to find it by position, through the
# learned positional embedding, and LSH must put the two in one bucket often enough.
#
# **Learning objectives.** After this notebook you can
#
# - describe the duplication task and why only its second half is scored;
# - evaluate a trained model with another attention or number of hash rounds than it was trained
#   with, and read the resulting Table 2 analogue;
# - explain why more rounds recover accuracy, and what the paper's and the released code's LSH
#   semantics change;
# - read an attention map of a trained layer.
#
# **Prerequisites.** [03](03_lsh_attention.ipynb) and [04](04_multiround_lsh.ipynb) (LSH
# attention, hash rounds, the paper's and the released code's semantics); [06](06_chunking.ipynb)
# (the model as a whole). Symbols follow the [notation](../README.md#notation) table.
#
# **Code.** The task: [`data.py`](../minireformer/training/data.py); the training loop and
# evaluation:
# [`train.py`](../minireformer/training/train.py); the settings and runs:
# [`experiments.py`](../minireformer/training/experiments.py); the checkpoints:
# [`checkpoint.py`](../minireformer/training/checkpoint.py); the pictures:
# [`attention_maps.py`](../minireformer/teaching/attention_maps.py).

# %%
import dataclasses
import json
import time

import matplotlib.pyplot as plt
import numpy as np

from minireformer import backend
from minireformer.teaching import attention_maps, plotting
from minireformer.training import checkpoint, data, experiments

RETRAIN = False  # True: train and evaluate the four models from scratch (about 25 minutes)
print(backend.describe())

# %% [markdown]
# ## 1. The task
#
# One sequence, printed as its two halves. The mask marks the targets that count: logit $t$
# predicts token $t + 1$, and the second copy occupies tokens $|w| + 2 .. 2|w| + 1$.

# %%
task = data.from_spec(experiments.DUPLICATION["duplication"]["data"])
tokens, mask = task.batch(np.random.default_rng(0), 1)
n = task.word_len
print("L =", task.length, " vocabulary =", task.vocab_size, " |w| =", n)
print("first half :", tokens[0, : n + 1][:16], "...")
print("second half:", tokens[0, n + 1 :][:16], "...")
print("targets counted:", int(mask.sum()), "of", mask.size)

# %%
assert tokens[0, 0] == 0 and tokens[0, n + 1] == 0
assert np.array_equal(tokens[0, 1 : n + 1], tokens[0, n + 2 :])
assert np.array_equal(tokens[0, 1:][mask[0]], tokens[0, 1 : n + 1])  # exactly the copy counts

# %% [markdown]
# ## 2. Four trained models
#
# One layer, $d_{model} = 128$, 4 heads of 32, chunk length $C = 16$ (so $K = 16$ buckets at
# $L = 128$), learned positions, Adam with warm-up and cosine decay, batches of 16 fresh
# sequences. The rows of Table 2 are the attention used in *training*: full (dense shared-QK),
# LSH-1, LSH-2, LSH-4. The shipped checkpoints hold the weights and the training log;
# `RETRAIN = True` trains them again (`minireformer reproduce --only duplication` does the same
# from the command line and also writes `results/duplication.json`).

# %%
if RETRAIN:  # trains the four models, evaluates them on 1,000 sequences, writes the results file
    experiments.reproduce_duplication()
models = {
    row: checkpoint.load(experiments.CHECKPOINTS / f"duplication_{row}.npz")
    for row in experiments.DUPLICATION["duplication"]["rows"]
}
results = json.loads((experiments.RESULTS / "duplication.json").read_text())
for row, ck in models.items():
    print(f"{row:5s} trained {ck.step:5d} steps in {ck.extra['seconds'] / 60:4.1f} min")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.4))
for row, ck in models.items():
    log = ck.log
    smooth = np.convolve(log[:, 1], np.ones(20) / 20, mode="valid")
    ax.plot(log[19:, 0], smooth, label=f"trained with {row}")
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("training loss on the copy (nats, mean of 20)")
ax.set_title("duplication task: training loss", fontsize=10)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plotting.save_figure(fig, "07_training_loss")
plt.show()

# %% [markdown]
# ## 3. The Table 2 analogue
#
# Each trained model is evaluated with full attention and with LSH-1, 2, 4, 8 on fresh sequences
# from a seed that training never used. The parameters do not depend on the attention or the
# number of rounds, so evaluating another way is one `dataclasses.replace(config, ...)`. Accuracy
# is the share of second-half tokens predicted exactly (argmax). `results/duplication.json` holds
# the evaluation on 1,000 sequences (written by `minireformer reproduce --only duplication`);
# here the first 200 of them are evaluated again, live, and must agree with it.

# %%
t0 = time.perf_counter()
live = {
    row: experiments.evaluate_duplication(ck.params, ck.config, n_sequences=200)
    for row, ck in models.items()
}
print(f"evaluated in {time.perf_counter() - t0:.0f} s")
table = results["paper_semantics"]
columns = list(experiments.DUPLICATION_COLUMNS)
paper = experiments.PAPER_TABLE2


def show(t, title):
    print(title)
    print("trained \\ eval" + "".join(f"{c:>14s}" for c in columns))
    for row in t:
        cells = []
        for c in columns:
            ref = paper[row][c]
            cells.append(f"{t[row][c]:6.1f} ({'  - ' if ref is None else f'{ref:4.1f}'})")
        print(f"{row:15s}" + "".join(f"{x:>14s}" for x in cells))


show(table, "accuracy %, 1,000 sequences (in brackets: the paper's Table 2, at L = 1024)")
show(live, "accuracy %, the first 200 of them, evaluated now")

# %% [markdown]
# The 200 live sequences are the first 200 of the stored 1,000, hashed with the same rotations;
# the rest of the stored evaluation draws other rotations, and with one round a hash that misses
# many copies in one batch moves a 200-sequence average by a few points:

# %%
gap = max(abs(live[r][c] - table[r][c]) for r in table for c in columns)
print(f"largest difference between the live and the stored evaluation: {gap:.1f} points")

# %% [markdown]
# What the table shows, each point checked below:
#
# - trained and evaluated with full attention, the model solves the task;
# - evaluated with LSH, the same model loses accuracy with fewer rounds (a copy the hash misses
#   cannot be read), and more rounds recover it: LSH-8 reaches full attention's accuracy;
# - models *trained* with LSH are better at few rounds than the full-attention model (they learned
#   queries and keys that hash together reliably) and reach 100% with 4 or 8 rounds;
# - unlike the paper, whose LSH-trained models fail with full attention (0.8%, chance level), ours
#   keep their accuracy with full attention.
#
# Observation (not asserted, an explanation we have not tested): at $L = 128$ with 16 buckets a
# query and its copy share a bucket in most rounds, and the learned attention is sharp enough that
# the other keys, which full attention adds, receive almost no weight.
#
# A second departure, printed below: the one-round column. In the paper, models trained with more
# rounds do better at one round (77.9%, 86.8%, 91.9% for 1, 2, 4 rounds of training); here the
# order is the other way round. A model trained with one round has only ever been rewarded for
# copies that one hash found, so it may have learned queries that hash together more reliably
# than a model that could count on a second or fourth chance; why the paper's models at
# $L = 1024$ behave the opposite way is not settled here.

# %%
for row in ("lsh1", "lsh2", "lsh4"):
    print(f"trained with {row}, evaluated with one round: {table[row]['lsh1']:5.1f}%  "
          f"(paper {paper[row]['lsh1']:.1f}%)")  # fmt: skip


# %%
def check_table2(t):
    full = t["full"]
    assert full["full"] > 99
    assert full["lsh1"] < full["lsh2"] < full["lsh4"] <= full["lsh8"]
    assert full["lsh8"] > 99
    for row in ("lsh1", "lsh2", "lsh4"):
        assert t[row]["lsh1"] > full["lsh1"] + 5  # trained with LSH: robust to hashing
        assert min(t[row]["lsh4"], t[row]["lsh8"]) > 99
        assert t[row]["full"] > 99  # where this run differs from the paper's 0.8%


check_table2(table)  # the stored 1,000-sequence evaluation
check_table2(live)  # and the shipped checkpoints, evaluated now

# %% [markdown]
# ## 4. The same weights with the released code's LSH semantics
#
# Notebook 04 showed two LSH semantics: the paper's (keys of other buckets masked, the log-count
# correction for keys attended in several rounds) and the released trax / Hugging Face code's (both
# switched off: `semantics="released"`). The models were
# trained with the paper's; here the same weights are evaluated with the released code's.

# %%
released = results["released_semantics"]
show(released, "accuracy %, released semantics at evaluation, 1,000 sequences")
live_released = {
    row: experiments.evaluate_duplication(
        ck.params, ck.config, n_sequences=200, semantics="released"
    )
    for row, ck in models.items()
}
show(live_released, "accuracy %, released semantics, the first 200, evaluated now")
experiments.save_table2_figures(table, released)
plt.show()

# %% [markdown]
# With the released code's semantics every model does at least as well at every number of rounds,
# and clearly better with one round: keys of another bucket that fall in the query's window are
# attended rather than masked, so a query whose copy hashed elsewhere can still find it when the
# sort put the copy nearby.

# %%
for paper_t, released_t in ((table, released), (live, live_released)):
    for row in models:
        assert released_t[row]["full"] == paper_t[row]["full"]  # no LSH switch in full attention
        assert all(released_t[row][c] >= paper_t[row][c] for c in ("lsh1", "lsh2", "lsh4", "lsh8"))
        assert released_t[row]["lsh1"] > paper_t[row]["lsh1"]

# %% [markdown]
# ## 5. Accuracy against evaluation rounds
#
# The columns of the table, drawn as lines: each curve is one trained model.

# %%
rounds = [1, 2, 4, 8]
fig, ax = plt.subplots(figsize=(5.5, 3.4))
styles = zip(("o", "s", "^", "D"), ("-", "--", "-.", ":"), (9, 7, 5, 3))  # told apart at 100%
for row, (marker, line, size) in zip(models, styles):
    ax.plot(rounds, [table[row][f"lsh{r}"] for r in rounds], marker=marker, ls=line, ms=size,
            label=f"trained {row}")  # fmt: skip
ax.set_xscale("log", base=2)
ax.set_xticks(rounds, [str(r) for r in rounds])
ax.set_xlabel("hash rounds at evaluation")
ax.set_ylabel("accuracy on the copy (%)")
ax.set_title("duplication: accuracy against evaluation rounds", fontsize=10)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plotting.save_figure(fig, "07_accuracy_vs_rounds")
plt.show()

# %% [markdown]
# ## 6. Where do second-half queries look?
#
# `attention_maps.attention_map` returns the $(L, L)$ weights with which the layer mixes positions
# (attention is linear in the values, so feeding the identity matrix as values returns the
# weights; for LSH this is the round-weighted mix of notebook 04). The query at position $t$ in
# the second half predicts token $t + 1$, which also sits at position $t + 1 - (|w| + 1) = t - |w|$
# in the first half: that is where a one-layer model must read. (Its own copy, $t - |w| - 1$, is
# one further back; a single layer cannot use it, since the value there does not yet know its
# successor.) Averaged over heads:

# %%
seq = task.eval_batches(1, None, 1)[0][0][:1, :-1]  # one held-out sequence, as the model reads it
maps = {
    "full-trained, full attention": (models["full"], ("full", 1)),
    "LSH-4-trained, LSH-4": (models["lsh4"], ("lsh", 4)),
    "LSH-4-trained, LSH-1": (models["lsh4"], ("lsh", 1)),
}
queries = np.arange(n + 1, 2 * n + 1)  # the second-half positions whose target counts
fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
reads_copy = {}
for ax, (name, (ck, (attention, r))) in zip(axes, maps.items()):
    cfg = dataclasses.replace(ck.config, attention_types=(attention,), n_hashes=r)
    w = attention_maps.attention_map(ck.params, seq, cfg, rng=np.random.default_rng(1))[0]
    w = w.mean(axis=0)  # (L, L), averaged over heads
    reads_copy[name] = float(np.mean(w[queries, queries - n]))
    image = ax.imshow(w, cmap="magma", vmin=0, vmax=1)
    ax.set_title(f"{name}\nweight on t - |w|: {reads_copy[name]:.2f}", fontsize=9)
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position t")
fig.colorbar(image, ax=axes, label="attention weight (mean over heads)", shrink=0.9)
plotting.save_figure(fig, "07_attention_maps")
plt.show()

# %% [markdown]
# The bright off-diagonal line in the lower-left quarter is the copy: second-half query $t$
# reads position $t - |w|$ (the check: more than half of the weight of the second-half queries
# lies there, averaged over heads). Observation (not asserted): the first half has nothing to find
# (the past holds no copy), so its rows spread out.

# %%
print({k: round(v, 3) for k, v in reads_copy.items()})
assert reads_copy["full-trained, full attention"] > 0.5
assert reads_copy["LSH-4-trained, LSH-4"] > 0.5

# %% [markdown]
# ## 7. At the paper's size: L = 1,024
#
# Everything above is at $L = 128$, where a model trains in minutes. The paper's task is eight
# times longer: $|w| = 511$ symbols from $1..127$, so the copy lies 512 positions back, and with
# chunks of $C = 64$ there are $K = 32$ buckets. `minireformer reproduce --only duplication1024`
# trains the same four rows at that size (one layer, $d_{model} = 128$, batches of 8, learned
# positions); on two cores that takes hours, so it writes `results/duplication1024.json` after
# each model it finishes, and the table below shows the rows trained so far.

# %%
big_file = experiments.RESULTS / "duplication1024.json"
big = json.loads(big_file.read_text()) if big_file.exists() else None
if big is None:
    print("not run yet: minireformer reproduce --only duplication1024")
else:
    trained = list(big["paper_semantics"])
    missing = [r for r in experiments.DUPLICATION["duplication1024"]["rows"] if r not in trained]
    show(big["paper_semantics"], "L = 1024, accuracy % on 1,000 sequences (paper in brackets)")
    show(big["released_semantics"], "the same weights, released semantics")
    for row in trained:
        run = big["runs"][row]
        print(f"{row}: {run['steps']:,} steps, {run['seconds'] / 60:.1f} min of training")
    print("rows not trained yet:", missing or "none")

# %% [markdown]
# ## Recap
#
# - The duplication task is solved by one layer of attention that reads position $t - |w|$ from
#   query $t$; with shared-QK, it must find that position through the positional embedding.
# - The printed table is this run's analogue of the paper's Table 2, at $L = 128$ instead of 1024:
#   the model trained with full attention solves the task with full attention and degrades with
#   fewer hash rounds; the LSH-trained models solve it with LSH and improve with more rounds;
#   unlike the paper's, they also keep their accuracy with full attention.
# - The released code's LSH semantics scores at least as well on the same weights, and clearly
#   better with one round (section 4).
#
# The numbers, from the cells above (the stored 1,000-sequence evaluation, accuracy in %):

# %%
print("full-trained, evaluated with full / LSH-1 / LSH-8:",
      table["full"]["full"], "/", table["full"]["lsh1"], "/", table["full"]["lsh8"])  # fmt: skip
print(
    "LSH-1 accuracy of the LSH-trained models:",
    {r: table[r]["lsh1"] for r in ("lsh1", "lsh2", "lsh4")},
)
print("the same with the released semantics:", {r: released[r]["lsh1"] for r in models})
print("weight on t - |w|:", {k: round(v, 2) for k, v in reads_copy.items()})

# %% [markdown]
# Previous: [06 Chunking](06_chunking.ipynb).
# Next: [08 A Reformer on Shakespeare](08_shakespeare.ipynb) trains a Reformer language model on
# 2,048-character contexts.
