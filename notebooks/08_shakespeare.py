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
# # 08 A Reformer on Shakespeare
#
# Reformer paper (Kitaev, Kaiser, Levskaya 2020), section 5: language modelling on long
# sequences (enwik8 at 64K tokens) and Figure 3 (shared-QK attention and reversible layers do not
# hurt). Here at laptop scale: a character-level model of tiny Shakespeare with 2,048-character
# contexts.
#
# **Learning objectives.** After this notebook you can
#
# - turn a language model's loss into bits per character and compare it with the unigram and
#   bigram floors;
# - read learning curves against steps and against time, and say what a curriculum of short
#   contexts and the choice of positional encoding did here;
# - state what the paper's Figure 3 claims (shared QK and reversibility do not hurt) and what the
#   small-scale redraw shows;
# - sample text with a temperature and top-k, and measure a training step's memory against the
#   context length.
#
# **Prerequisites.** [03](03_lsh_attention.ipynb)-[06](06_chunking.ipynb) (LSH attention,
# reversible layers, chunking) and [07](07_duplication.ipynb) (training and evaluating small
# models). Symbols follow the [notation](../README.md#notation) table.
#
# **Code.** The text and its split: [`data.py`](../minireformer/training/data.py) (`CharText`);
# training
# and evaluation: [`train.py`](../minireformer/training/train.py) with Adam in
# [`optim.py`](../minireformer/training/optim.py); sampling:
# [`sampling.py`](../minireformer/training/sampling.py);
# the settings and runs: [`experiments.py`](../minireformer/training/experiments.py); sinusoidal
# and axial
# positions: [`positional.py`](../minireformer/positional.py).
#
# The corpus is tiny Shakespeare (about 1.1M characters, public domain), shipped in
# `data/tinyshakespeare.txt`.

# %%
import dataclasses
import json
import time

import matplotlib.pyplot as plt
import numpy as np

from minireformer import backend
from minireformer.measuring import memory
from minireformer.teaching import plotting
from minireformer.training import checkpoint, data, evaluation, experiments, lm, sampling
from minireformer.tree import leaves

RETRAIN = False  # True: train both models, the ablation and Figure 3's four (over an hour)
LN2 = np.log(2)
print(backend.describe())

# %% [markdown]
# ## 1. The data and two floors
#
# Characters are the tokens: the vocabulary is the set of characters in the file. The last 10%
# of the text validates (a fixed split). A unigram model (each character's frequency) and a
# bigram model (the next character's frequency given this one), both counted on the training
# split, give the bits per character that any model should beat.

# %%
text = data.from_spec(experiments.TEXT_DATA)
print(f"{len(text.train_ids):,} training and {len(text.valid_ids):,} validation characters")
print("vocabulary:", text.vocab_size, repr("".join(text.chars)))
print(text.decode(text.valid_ids[:200]))
floors = experiments.ngram_bits(text)
print({k: round(v, 3) for k, v in floors.items()})

# %%
assert text.vocab_size == 65
assert floors["bigram"] < floors["unigram"] < np.log2(text.vocab_size)

# %% [markdown]
# ## 2. Two models of the same size
#
# Both have 4 layers of width 128 with 4 heads of 32 and a 512-wide feed-forward.
#
# - **Transformer**: the pre-LayerNorm baseline of `transformer.py`, trained on 12 windows of 64
#   characters (65 with the one the last position predicts, so all 64 positions are trained) for
#   1,800 steps with Adam at 1e-3 (a calibration setting).
# - **Reformer**: reversible layers alternating local attention (chunks of 64, each attending to
#   itself and the chunk before) and LSH attention (2 rounds), shared-QK, sinusoidal positions
#   (`positional.sinusoidal`, no parameters). It trains like the Transformer for 3,000 steps (12
#   windows of 64), then on single 2,048-character windows for 300 more: a curriculum,
#   since a short step is cheap and the early part of training needs many steps more than long
#   contexts. Each short window is given the positions of a random place in the 2,048
#   (`TrainConfig.random_offset`), and sinusoids make that cheap: position $p + t$ is a fixed
#   rotation of position $p$, so what attention learns about "$t$ characters back" holds at every
#   position.
#
# The ablation is the same Reformer and schedule with the paper's learned axial positions (a
# $64 \times 32$ factorisation) and no offsets: the table rows for positions past 63 are then
# never trained during the short stage, and the model meets them untrained at the first long
# window. Only its curve is shipped (in `results/shakespeare.json`).

# %%
if RETRAIN:  # both models, the run without offsets, the Figure 3 variants; writes results/
    experiments.reproduce_shakespeare()
    experiments.reproduce_figure3()
names = {"Reformer": "shakespeare_reformer", "Transformer": "shakespeare_transformer"}
models = {
    label: checkpoint.load(experiments.CHECKPOINTS / f"{name}.npz") for label, name in names.items()
}
results = json.loads((experiments.RESULTS / "shakespeare.json").read_text())
for label, ck in models.items():
    n_params = sum(x.size for x in leaves(ck.params))
    minutes = ck.extra["seconds"] / 60
    print(f"{label:11s} {n_params:,} parameters, {ck.step} steps, {minutes:.1f} min of training")
print(lm.config_to_dict(models["Reformer"].config))

# %% [markdown]
# ## 3. Learning curves
#
# From the logs saved in the checkpoints: training loss every step (smoothed) and validation bits
# per character at every evaluation, against step and against wall-clock minutes. The minutes are
# not a race: the Transformer was trained again after the library's training steps became several
# times faster, the Reformer before.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for label, ck in models.items():
    log = ck.log
    smooth = np.convolve(log[:, 1], np.ones(50) / 50, mode="valid") / LN2
    ev = evaluation.eval_rows(log)
    axes[0].plot(log[49:, 0], smooth, alpha=0.6, label=f"{label} training (mean of 50)")
    axes[0].plot(ev[:, 0], ev[:, 2] / LN2, marker="o", label=f"{label} validation")
    axes[1].plot(ev[:, 4] / 60, ev[:, 2] / LN2, marker="o", label=f"{label} validation")
ablation = results["ablation_axial_no_offset"]["curve"]
axes[0].plot(ablation["step"], ablation["valid_bpc"], ls="--", marker="x",
             label="ablation: axial positions, no offsets, validation")  # fmt: skip
for ax in axes:
    for k, v in floors.items():
        ax.axhline(v, color="grey", ls=":", lw=1)
        ax.text(ax.get_xlim()[0], v, f" {k}", va="bottom", fontsize=8, color="grey")
    ax.set_ylabel("bits per character")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
axes[0].set_xlabel("training step")
axes[1].set_xlabel("training time (minutes)")
fig.suptitle("tiny Shakespeare: Reformer (2,048 context) and Transformer (64 context)")
plotting.save_figure(fig, "08_learning_curves")
plt.show()

# %% [markdown]
# The Reformer's validation is measured at 2,048 characters throughout, also while it trains on
# 64: with sinusoids and random offsets it improves during the short stage; the ablation
# (dashed, learned axial positions, no offsets) gets *worse* at 2,048 while it learns at 64,
# because every position past 63 keeps its initial embedding.

# %%
with_offsets = experiments.eval_curve(models["Reformer"].log)["valid_bpc"]
without = ablation["valid_bpc"]
print(
    f"validation at 2,048 from step 100 to 1,600: {with_offsets[0]:.2f} -> {with_offsets[15]:.2f}"
)
print(f"the same in the ablation: {without[0]:.2f} -> {without[15]:.2f}")
assert without[15] > without[0]  # the ablation: worse at step 1,600 than at step 100
assert with_offsets[15] < with_offsets[0] - 0.5  # sinusoids and offsets: much better

# %% [markdown]
# ## 4. Bits per character on held-out text
#
# `results/shakespeare.json` holds each model's bits per character on the whole validation split
# (111,539 characters), as `minireformer eval checkpoints/shakespeare_reformer.npz` measures it
# ([`evaluation.py`](../minireformer/training/evaluation.py)): windows of the model's context that
# start every half window, so every character is scored once and, past the first window, with at
# least half a window of context before it. The same file holds the bits per character in bands of
# positions within non-overlapping windows: a model that learns from its context scores later
# positions better. Measured again here, quickly, on the start of the split: its first 16,376
# characters for the Reformer (8 windows of 2,048) and its first 16,128 for the Transformer (256
# windows of 64), each window scored from its first position:

# %%
t0 = time.perf_counter()
reformer, transformer = models["Reformer"], models["Transformer"]
live = {
    "Reformer": evaluation.evaluate(
        reformer.params, reformer.config, text.eval_batches(1, 2048, 8)
    )["bits"],
    "Transformer": evaluation.evaluate(
        transformer.params, transformer.config, text.eval_batches(16, 64, 16)
    )["bits"],
}
print(f"evaluated in {time.perf_counter() - t0:.0f} s")
stored = {label: results["models"][name]["bpc"] for label, name in names.items()}
print(f"{'':11s} {'first 16K now':>14s} {'whole split':>12s}")
for label in live:
    print(f"{label:11s} {live[label]:14.3f} {stored[label]:12.3f}")
for k, v in floors.items():
    print(f"{k:11s} {'':14s} {v:12.3f}")
for label, name in names.items():
    bands = sorted(results["models"][name]["bands"].items(), key=lambda b: int(b[0].split("-")[0]))
    print(f"{label:11s} by position:", ", ".join(f"{k}: {v:.3f}" for k, v in bands))

# %%
for bits in (*live.values(), *stored.values()):
    assert bits < floors["bigram"] - 0.5  # both models are far past the bigram floor

# %% [markdown]
# ## 5. Figure 3 at small scale
#
# The paper's Figure 3 trains the same model with separate and with shared query/key projections
# (left) and with and without reversible layers (right), and finds the curves on top of each
# other. Here: the same two-layer model (width 128, 4 heads, feed-forward 256, context 256) trained
# four ways for 1,500 steps with the same data order and seed: a Transformer with separate Q and K,
# a Transformer with shared QK, a reversible shared-QK model (full attention), and a Reformer with
# LSH attention (2 rounds, chunks of 32). The curves are the trainer's estimates on 8 held-out
# windows; the final numbers printed below are the whole validation split, strided, from
# `results/figure3.json`.

# %%
variants = {}
for name in experiments.figure3_configs():
    ck = checkpoint.load(experiments.CHECKPOINTS / f"figure3_{name}.npz")
    variants[name] = {**experiments.eval_curve(ck.log), "minutes": ck.extra["seconds"] / 60}
experiments.save_figure3(variants)
plt.show()
figure3 = json.loads((experiments.RESULTS / "figure3.json").read_text())
final = {name: c["final"]["bpc"] for name, c in figure3["curves"].items()}  # the whole split
print({k: round(v, 3) for k, v in final.items()}, "bits per character after 1,500 steps")
print({k: round(v["minutes"], 1) for k, v in variants.items()}, "minutes")

# %% [markdown]
# The paper's claim holds here: separate or shared QK, standard or reversible residuals, the three
# full-attention models end within 0.15 bits per character of each other (checked below). The
# fourth, with LSH attention in both layers, is a different story at this budget: it ends more
# than 0.3 bits behind all three (checked below). Observation (not asserted): in the figure it is
# still on the plateau where the others left it, around step 700. A likely reason, not tested
# here: a character model first learns to read the last few characters, and LSH attention offers
# a query only the keys that hash with it, so "the previous character" is available only when the
# hash happens to agree. (The paper's Figure 3 has no LSH curve; the Reformer of section 2 mixes
# local attention layers with LSH layers for this reason.)

# %%
full_attention = [final[k] for k in ("separate_qk", "shared_qk", "reversible_shared_qk")]
spread = max(full_attention) - min(full_attention)
print(f"spread of the three full-attention variants: {spread:.3f} bits per character")
assert spread < 0.15  # shared QK and reversibility do not hurt
assert final["reformer_lsh"] > max(full_attention) + 0.3  # all-LSH lags at this budget

# %% [markdown]
# ## 6. Samples
#
# Generation feeds the model its own output one character at a time (`sampling.generate`); without
# a decoding cache every character runs the whole context again, so generation is slow: the
# measured rate is printed. Here the window is the last 256 characters.

# %%
prompt = text.encode("ROMEO:\n")
reformer = models["Reformer"]


def sample(n_new, temperature, seed=0):
    return sampling.generate(
        reformer.params,
        reformer.config,
        prompt,
        n_new,
        rng=np.random.default_rng(seed),
        temperature=temperature,
        top_k=20,
        context=256,
    )


for temperature in (0.5, 0.8, 1.0):
    t0 = time.perf_counter()
    ids = sample(120, temperature)
    rate = 120 / (time.perf_counter() - t0)
    print(f"--- temperature {temperature} ({rate:.0f} characters per second)")
    print(text.decode(ids))

# %%
assert np.array_equal(sample(20, 0.8), sample(20, 0.8))  # the same seed gives the same text
assert not np.array_equal(sample(20, 0.8), sample(20, 0.8, seed=1))

# %% [markdown]
# ## 7. Memory of one training step against context length
#
# One `loss_and_grads` call with batch 1, measured by `memory.measure_peak` (tracemalloc counts
# NumPy's allocations; the parameters exist before the call and are not counted). The models are
# those of section 2 with fresh parameters and a longer positional table (memory does not depend
# on the trained values). Full attention's $(L, L)$ weights make the Transformer grow faster than
# linearly (more than 8x the memory for 4x the length, checked below); the Reformer grows about
# linearly (less than 12x for 8x the length).

# %%
rng = np.random.default_rng(0)
ref_cfg = dataclasses.replace(models["Reformer"].config, max_len=8192)
tr_cfg = dataclasses.replace(models["Transformer"].config, max_len=2048)
peaks = {"Reformer": {}, "Transformer": {}}
for label, cfg, lengths in (
    ("Reformer", ref_cfg, (1024, 2048, 4096, 8192)),
    ("Transformer", tr_cfg, (256, 512, 1024, 2048)),
):
    params = lm.init_params(cfg, rng)
    for length in lengths:
        tokens = rng.integers(0, text.vocab_size, (1, length + 1))  # the model reads L
        _, peak = memory.measure_training_step(lm.loss_and_grads, params, tokens, cfg, rng)
        peaks[label][length] = peak
        print(f"{label:11s} L = {length:5d}: {peak / 2**20:8.1f} MiB")

# %%
fig, ax = plt.subplots(figsize=(6, 3.8))
for label, p in peaks.items():
    ax.loglog(list(p), [v / 2**20 for v in p.values()], marker="o", label=label)
ax.set_xlabel("context length L (characters)")
ax.set_ylabel("peak memory of one training step (MiB)")
ax.set_title("memory against context, batch 1", fontsize=10)
ax.grid(alpha=0.3, which="both")
ax.legend()
plotting.save_figure(fig, "08_memory_vs_context")
plt.show()

# %%
r, t = peaks["Reformer"], peaks["Transformer"]
assert r[8192] / r[1024] < 12  # about linear: 8x the length
assert t[2048] / t[512] > 8  # faster than linear: 4x the length
assert t[2048] > r[2048]  # at the Reformer's training length, the Transformer needs more

# %% [markdown]
# ## Recap
#
# - A 4-layer Reformer with 2,048-character contexts, trained with a short-context curriculum,
#   and a Transformer of the same size both beat the bigram floor by more than half a bit per
#   character (section 4).
# - Sinusoidal positions with random offsets let the short-context stage train what the long
#   context uses; learned axial positions without offsets got worse at 2,048 (section 3).
# - At small scale, shared-QK attention and reversible layers train as well as the plain
#   Transformer (section 5), as the paper's Figure 3 reports at large scale; a model with only LSH
#   layers lags far behind within the same budget.
# - The Reformer's training step grows about linearly in memory with the context; the
#   Transformer's faster than linearly (section 7).
#
# The numbers, from the cells above:

# %%
print("floors:", {k: round(v, 3) for k, v in floors.items()}, "bits per character")
print("whole validation split:", {k: round(v, 3) for k, v in stored.items()})
print(f"Figure 3: full-attention spread {spread:.3f}, all-LSH {final['reformer_lsh']:.3f}")
print(f"memory: Reformer x{r[8192] / r[1024]:.1f} from 1,024 to 8,192; "
      f"Transformer x{t[2048] / t[512]:.1f} from 512 to 2,048")  # fmt: skip

# %% [markdown]
# Previous: [07 The duplication task](07_duplication.ipynb).
# Next: [09 Speed and memory](09_speed_and_memory.ipynb).
