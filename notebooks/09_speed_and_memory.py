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
# # 09 Speed and memory at scale
#
# Reformer paper (Kitaev, Kaiser, Levskaya 2020), section 5 and Figure 5 (right): LSH attention's
# time per token stays flat as the sequence grows, where full attention's grows with L; and
# Table 3: with reversible layers and chunking, a training step's memory no longer grows with
# depth. This notebook reads what the benchmark suite (`make bench`) measured on this machine and
# explains it.
#
# **You will:**
#
# - read the Figure 5 analogue and find the length where LSH attention overtakes full attention,
#   and say why that length is where it is;
# - see what LSH attention's time is spent on, and what fraction of the machine's matrix-multiply
#   rate it reaches;
# - compare measured peak memory with the exact memory model, against length and against depth;
# - compare with Hugging Face's PyTorch Reformer on the same CPU (when that comparison was run).
#
# **Prerequisites:** [03](03_lsh_attention.ipynb) and [04](04_multiround_lsh.ipynb) (LSH attention
# and its rounds), [05](05_reversible.ipynb) (reversible layers), [06](06_chunking.ipynb)
# (chunking), [08](08_shakespeare.ipynb) (a trained model). Symbols: the
# [notation table](../README.md#notation) (B batch, H heads, L length, Dh head width, R rounds,
# K buckets, C chunk length, W window width).
#
# **Code:** the benchmarks in `benchmarks/` (one concept per script, shared
# timing in [`common.py`](../benchmarks/common.py), FLOP counts in
# [`flops.py`](../minireformer/measuring/flops.py)); the library's
# [`lsh_attention.py`](../minireformer/lsh_attention.py),
# [`windows.py`](../minireformer/windows.py),
# [`attention.py`](../minireformer/attention.py) and
# [`memory.py`](../minireformer/measuring/memory.py).
#
# This notebook reads the committed results in `benchmarks/results/` (so it runs in seconds) and
# reruns one small benchmark live. Timings are of a shared 2-core CPU: they vary by tens of
# percent from run to run, so what is asserted below are ratios measured within one run.

# %%
from minireformer import backend

print(backend.describe())

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from minireformer.measuring import flops, report, timing
from minireformer.teaching import plotting

# the results `make bench` wrote; another folder (your own run) through this variable
RESULTS = Path(os.environ.get("MINIREFORMER_BENCH_RESULTS", report.RESULTS))
results = report.load(RESULTS)
tables = report.tables(RESULTS)
for name, data in results.items():
    when = None if data is None else data.get("machine", {}).get("date", "(no date)")
    print(f"{name + '.json':22s}", "missing" if data is None else f"measured {when}")

# %% [markdown]
# ## 1. Figure 5: time per token against length
#
# `benchmarks/bench_attention_speed.py` times one forward and one backward pass of the attention
# functions alone (no projections): `lsh_attention_forward` / `lsh_attention_backward` with
# R = 1, 2, 4, 8 rounds, and dense `shared_qk_attention_forward` / `_backward`, causal, float32,
# with the heads of the benchmark LM (H = 4 of Dh = 64) and C = 64. Every LSH call holds the same
# number of tokens, B x L = 65,536 (batch 64 at L = 1,024, ..., batch 1 at 65,536), so the time
# per token is comparable across lengths. Full attention's (L, L) weights outgrow memory first:
# it runs only where they fit a budget, with a smaller batch where needed (its time per token
# does not depend on the batch).

# %%
speed = results["attention_speed"]
if speed is None:
    print("benchmarks/results/attention_speed.json is missing: run `make bench`.")
else:
    display(Markdown(tables["attention_speed"]))

# %% [markdown]
# ![Figure 5 analogue](../figures/bench_attention_speed.png)
#
# What the paper's Figure 5 shows, and what to check here: full attention's time per token grows
# with L (each query meets L keys), LSH attention's stays nearly flat (each query meets W = 2C
# keys per round), and each doubling of the rounds roughly doubles LSH's time.

# %%
if speed is not None:
    full = speed["full"]
    full_growth = full[-1]["us_per_token"] / full[0]["us_per_token"]
    length_ratio = full[-1]["length"] / full[0]["length"]
    print(
        f"full attention, L = {full[0]['length']:,} -> {full[-1]['length']:,} "
        f"({length_ratio:.0f}x longer): time per token x{full_growth:.1f}"
    )
    for rounds, growth in speed["lsh_growth"].items():
        rows = speed["lsh"][rounds]
        print(
            f"LSH, {rounds} round(s), L = {rows[0]['length']:,} -> {rows[-1]['length']:,} "
            f"({rows[-1]['length'] // rows[0]['length']}x longer): time per token x{growth:.2f}"
        )
    # full attention's time per token grows with L; LSH's grows far less over a longer range
    assert full_growth > 2
    assert all(growth < full_growth for growth in speed["lsh_growth"].values())
    # more rounds cost more, at every length
    for length_index in range(len(speed["lsh"]["1"])):
        times = [speed["lsh"][r][length_index]["us_per_token"] for r in ("1", "2", "4", "8")]
        assert times == sorted(times), times

# %% [markdown]
# ## 2. Where full and LSH attention cross, and why there
#
# Straight lines fitted to time per token against L (least squares; full attention's cost per
# token is linear in L, LSH's nearly constant) meet at the crossover length: below it full
# attention is faster, above it LSH attention.

# %%
if speed is not None:
    fig, ax = plt.subplots(figsize=(7, 4.3))
    grid = np.geomspace(512, 2 * max(r["length"] for r in speed["lsh"]["1"]), 200)
    fit = speed["crossover"]["1"]["full_fit_us"]
    ax.loglog([r["length"] for r in full], [r["us_per_token"] for r in full], "ko", label="full")
    ax.loglog(grid, fit["intercept"] + fit["slope_per_token"] * grid, "k--", lw=1)
    for i, (rounds, rows) in enumerate(speed["lsh"].items()):
        line = speed["crossover"][rounds]["lsh_fit_us"]
        lengths = [r["length"] for r in rows]
        ax.loglog(
            lengths,
            [r["us_per_token"] for r in rows],
            "s",
            color=f"C{i}",
            label=f"LSH, R = {rounds}",
        )
        ax.loglog(
            grid, line["intercept"] + line["slope_per_token"] * grid, "--", color=f"C{i}", lw=1
        )
        where = speed["crossover"][rounds]["length"]
        if where is not None:  # past the measured full-attention lengths, the legend says so
            beyond = " (extrapolated)" if speed["crossover"][rounds]["extrapolated"] else ""
            ax.axvline(where, color=f"C{i}", ls=":", lw=1, label=f"crossover, R = {rounds}{beyond}")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("forward + backward time per token (us)")
    ax.set_title("Measured points, fitted lines (dashed), crossovers (dotted)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    plotting.save_figure(fig, "09_crossover")
    plt.show()
    for rounds, cross in speed["crossover"].items():
        where = cross["length"]
        print(
            f"R = {rounds}: crossover at L =",
            "none"
            if where is None
            else f"{where:,.0f}"
            + (
                " (extrapolated beyond the measured full-attention lengths)"
                if cross["extrapolated"]
                else ""
            ),
        )

# %% [markdown]
# If the arithmetic alone decided, where would the crossover be? Per query and head, full
# attention's six products over L keys cost 12 L Dh FLOPs forward and backward. LSH attention's
# products over its window of W = 2C keys cost 14 W Dh per round (its backward recomputes the
# logits: seven products, see [`flops.py`](../minireformer/measuring/flops.py)), plus hashing, L Dh
# R K / L =
# Dh R K per query, which grows with L because the default K = 2L/C does. The counts come from
# `flops.py`, whose window terms a test checks against the products the library actually makes.

# %%
setup = results["attention_speed"]["setup"]  # the heads and chunks the benchmark measured
H, Dh, C = setup["n_heads"], setup["d_head"], setup["chunk_len"]


def flops_per_token(kind, length, rounds=1):
    """FLOPs per token of one forward + backward (flops.py), for batch 1."""
    if kind == "full":
        return (
            flops.full_attention_flops(batch=1, n_heads=H, length=length, d_head=Dh)["total"]
            / length
        )
    count = flops.lsh_attention_flops(
        batch=1, n_heads=H, length=length, d_head=Dh, n_hashes=rounds, chunk_len=C
    )
    return count["total"] / length


flop_crossover = {}
for rounds in (1, 2, 4, 8):
    lengths = 2 ** np.arange(6, 18)
    ratio = [flops_per_token("full", n) / flops_per_token("lsh", n, rounds) for n in lengths]
    flop_crossover[rounds] = int(lengths[np.argmax(np.array(ratio) > 1)])
    print(f"R = {rounds}: full attention needs more FLOPs from L = {flop_crossover[rounds]:,}")
# full attention's FLOPs per token grow linearly; LSH's window FLOPs per token do not depend on L
assert flops_per_token("full", 2048) == 2 * flops_per_token("full", 1024)

# %% [markdown]
# So by FLOPs alone LSH attention would win from a few hundred tokens on (a few hundred per
# round). Where the measured crossover falls depends on how fast each kind turns its FLOPs into
# results: the achieved rate, FLOPs counted as above over the measured time.

# %%
if speed is not None:

    def gflops(row, kind, rounds=1):
        """Achieved GFLOP/s of one measured point: FLOPs per token over time per token."""
        return flops_per_token(kind, row["length"], rounds) / row["us_per_token"] / 1e3

    full_rate = {r["length"]: gflops(r, "full") for r in full}
    print("L        full  " + "  ".join(f"LSH R={r}" for r in speed["lsh"]) + "   (GFLOP/s)")
    for i, row in enumerate(speed["lsh"]["1"]):
        n = row["length"]
        lsh_rates = [gflops(speed["lsh"][r][i], "lsh", int(r)) for r in speed["lsh"]]
        shown = f"{full_rate[n]:5.1f}" if n in full_rate else "    -"
        print(f"{n:6,d}  {shown}  " + "  ".join(f"{x:7.1f}" for x in lsh_rates))
        # full attention turns its FLOPs into results faster than LSH attention, at every length
        assert n not in full_rate or max(lsh_rates) < full_rate[n]
    for rounds, cross in speed["crossover"].items():
        where = cross["length"]
        print(
            f"R = {rounds}: FLOP crossover L = {flop_crossover[int(rounds)]:,}, measured "
            + ("none" if where is None else f"{where:,.0f}")
            + (
                " (outside the measured lengths)"
                if where is not None and cross["extrapolated"]
                else ""
            )
        )
    # one round: LSH attention is faster than full attention at every length both were measured
    lsh_1 = {r["length"]: r["us_per_token"] for r in speed["lsh"]["1"]}
    assert all(lsh_1[r["length"]] < r["us_per_token"] for r in full if r["length"] in lsh_1)

# %% [markdown]
# LSH attention reaches a lower rate than full attention because it pays costs that full
# attention does not, and that are not matrix products: sorting the R L hash codes, gathering
# queries, keys and values in sorted order and back, building the masks of every window (causal,
# self, other bucket), counting duplicates for the log N_ij correction, and making many small
# products (64 x 64 by 64 x 128) where full attention makes a few large ones, which BLAS runs
# faster. Full attention has its own overhead, the exponentials and masks over (L, L) arrays
# far larger than the cache, which is why its fitted line does not pass through zero. With one
# round, LSH attention's lower FLOP count outweighs its lower rate already at the shortest length
# measured here (1,024); each doubling of the rounds doubles LSH's cost and moves the crossover
# out. The next two sections measure where LSH's time goes.

# %% [markdown]
# ## 3. What LSH attention spends its time on
#
# `benchmarks/bench_flop_rate.py` profiles one forward + backward of LSH attention on the
# benchmark LM's layer (L = 16,384, R = 4) with cProfile. NumPy's ufuncs (matmul, exp, the
# arithmetic)
# do not appear as entries of their own: their time is the own time of the library function that
# calls them, so `window_attention_forward` / `_backward` and `_block_logits` include the products
# and the softmax.

# %%
rate = results["flop_rate"]
if rate is None:
    print("benchmarks/results/flop_rate.json is missing: run `make bench`.")
else:
    rows = [
        [f"{100 * r['own_share']:.1f}%", f"{r['own_s']:.2f} s", f"`{r['function']}`"]
        for r in rate["profile"]["top"][:10]
    ]
    display(Markdown(report.markdown_table(["share", "own time", "function"], rows)))
    top = rate["profile"]["top"][0]
    # Observation (not asserted, it changes as the library gets faster): the largest own time
    print(f"largest own time: {top['function']}, {top['own_share']:.0%} of the call")

# %% [markdown]
# The one live cell of this notebook reruns a small version of that profile here and now
# (L = 4,096, batch 1, R = 2): a few seconds. Its numbers are this run's, printed, not asserted.

# %%
qk, v, dout = timing.attention_inputs(H, Dh, 1, 4096)
live = timing.profile(lambda: timing.lsh_step(qk, v, dout, chunk_len=C, n_hashes=2))
print(f"one LSH forward + backward at L = 4,096, R = 2: {live['total_s']:.2f} s (profiled)")
for r in live["top"][:8]:
    print(f"  {100 * r['own_share']:5.1f}%  {r['function']}")

# %% [markdown]
# ## 4. The fraction of the machine's matrix-multiply rate
#
# The FLOPs of one call (counted analytically: window products, the recomputed logits, hashing)
# over its median time give an achieved rate; the same run measures NumPy's float32 matmul on the
# shape of the window products, (n, 64, 64) @ (n, 64, 128), and on a large square product.

# %%
if rate is not None:
    display(Markdown(tables["flop_rate"]))
    terms = rate["lsh"]["flops"]
    print(
        {k: f"{v / terms['total']:.0%}" for k, v in terms.items() if k != "total"}, "of the FLOPs"
    )
    assert 0 < rate["fraction_of_batched"] < 1 and 0 < rate["fraction_of_square"] < 1
    # Observation: the square product runs faster than the small batched ones of the same total.
    print(
        f"square / batched matmul rate: {rate['square']['gflops'] / rate['batched']['gflops']:.1f}"
    )

# %% [markdown]
# ## 5. Memory against length and depth, beside the exact model
#
# `benchmarks/bench_memory.py` measures peak memory (`memory.measure_peak`: the bytes NumPy
# allocates during a call on top of what existed before) of one attention sub-layer's forward +
# backward against L, and of one training step against the number of layers, and sets beside
# each the exact memory model of [`memory_model.py`](../minireformer/measuring/memory_model.py),
# which
# counts the arrays this implementation holds at its peak.

# %%
mem = results["memory"]
if mem is None:
    print("benchmarks/results/memory.json is missing: run `make bench`.")
else:
    display(Markdown(tables["memory"]))

# %% [markdown]
# ![Memory against length and depth](../figures/bench_memory.png)

# %%
if mem is not None:

    def peaks(key, value):
        return {
            r["length"] if key == "kind" else r["n_layers"]: r["measured_bytes"]
            for r in mem["length" if key == "kind" else "depth"]
            if r[key] == value
        }

    for kind in ("lsh", "local", "full"):
        p = peaks("kind", kind)
        lo, hi = min(p), max(p)
        print(f"{kind:5s} attention layer: L x{hi // lo} -> peak x{p[hi] / p[lo]:.1f}")
    lsh, full_mem = peaks("kind", "lsh"), peaks("kind", "full")
    # LSH: linear in L (a 16x longer sequence needs well under 32x the memory); full: quadratic
    assert lsh[max(lsh)] / lsh[min(lsh)] < 2 * max(lsh) / min(lsh)
    assert (
        full_mem[max(full_mem)] / full_mem[min(full_mem)]
        > 0.5 * (max(full_mem) / min(full_mem)) ** 2
    )
    for arch in ("stored", "reversible", "chunked_reversible"):
        p = peaks("arch", arch)
        print(f"{arch:18s}: {min(p)} -> {max(p)} layers, peak x{p[max(p)] / p[min(p)]:.2f}")
    stored, rev = peaks("arch", "stored"), peaks("arch", "reversible")
    assert stored[max(stored)] / stored[min(stored)] > 2  # stored activations grow with depth
    assert rev[max(rev)] / rev[min(rev)] < 1.5  # reversible: (nearly) flat
    chunked = peaks("arch", "chunked_reversible")
    assert all(chunked[n] < rev[n] < stored[n] for n in stored)  # each trick lowers the peak
    assert mem["worst_relative_error"] < 0.15  # the exact model: within 15% everywhere
    print(
        f"worst relative error of the exact model over the grid: {mem['worst_relative_error']:.1%}"
        f" at {mem['worst_point']}"
    )

# %% [markdown]
# ## 6. The LM training step, L = 4,096 ... 65,536
#
# `benchmarks/bench_reformer_memory.py` times one `loss_and_grads` step of the benchmark LM (6
# reversible LSH layers, d_model 256, 4 heads of 64, d_ff 1024, R = 4, C = 64, vocabulary 256,
# axial positions, chunked feed-forward and loss, batch 1) and measures its peak.

# %%
step = results["reformer_memory"]
if step is None:
    print("benchmarks/results/reformer_memory.json is missing: run `make bench`.")
else:
    display(Markdown(tables["reformer_memory"]))
    by_length = {r["length"]: r for r in step["reformer"] if "time" in r}
    lo, hi = by_length[min(by_length)], by_length[max(by_length)]
    print(
        f"L x{hi['length'] // lo['length']}: "
        f"time x{hi['time']['median_s'] / lo['time']['median_s']:.1f}, "
        f"peak x{hi['peak_bytes'] / lo['peak_bytes']:.1f}"
    )

# %% [markdown]
# ## 7. Side by side with Hugging Face
#
# `make bench-compare` (`benchmarks/compare_hf.py`) runs the same model in Hugging Face
# `transformers`' PyTorch Reformer on the same CPU, each measurement in its own process, and
# writes `benchmarks/results/compare_hf.json`. It needs PyTorch, which `make test` does not
# install, so the file may be absent.

# %%
if results["compare_hf"] is None:
    print(
        "benchmarks/results/compare_hf.json is missing: the Hugging Face comparison has not been"
        " run here (`make bench-compare`), so there is nothing to compare."
    )
else:
    display(Markdown(tables["compare_hf"]))

# %% [markdown]
# Hugging Face runs the released code's semantics (keys of other buckets in the window count, no
# duplicate correction), so the fair comparison is the "released" rows; the paper's semantics adds
# the duplicate counts N_ij, evaluated block by block in the forward and again in the backward,
# the largest own time in the profile of section 3 (an observation). The memory ratios are
# resident-set growth for both systems: Hugging Face keeps every (L, d_ff) activation of the
# feed-forward and the (L, V) logits whole in its backward (the JSON's `differences` lists what
# could not be made equal).
# The checks, on the committed results:

# %%
if results["compare_hf"] is not None:
    hf = results["compare_hf"]["ratios"]
    released = {(r["what"], r["length"]): r for r in hf if r["semantics"] == "released"}
    paper = {(r["what"], r["length"]): r for r in hf if r["semantics"] == "paper"}
    for key, r in sorted(released.items()):
        print(f"{key[0]:9s} L = {key[1]:6,}: released {r['time_ratio_median']:.2f}, paper "
              f"{paper[key]['time_ratio_median']:.2f} of Hugging Face's time; memory "
              f"{r['memory_ratio']:.2f}")  # fmt: skip
    assert all(r["memory_ratio"] < 0.25 for r in hf)  # under a quarter of the memory everywhere
    assert all(released[k]["time_ratio_median"] < paper[k]["time_ratio_median"] for k in paper)

# %% [markdown]
# ## 8. Training and sampling the small models, beside PyTorch
#
# The models a reader trains here are small (the shipped Shakespeare models: 4 layers, d_model
# 128), where a step is bound by passes over memory and by the cost of each call rather than by
# the matrix products. `make bench-throughput` times one whole optimizer step (loss, gradients,
# clipping, Adam) of each shipped shape beside a plain PyTorch GPT of the same shape and Hugging
# Face's Reformer of the same configuration, each in its own process, the systems taking turns;
# minireformer splits a batch of several sequences over two worker threads
# ([`parallel.py`](../minireformer/training/parallel.py)). `make bench-sampling` times greedy
# sampling at a full context with the decoding cache
# ([`decoding.py`](../minireformer/training/decoding.py)), which reads the context once and then
# computes one new position per character, against rereading the whole context every time.

# %%
if results["throughput"] is not None:
    display(Markdown(tables["throughput"]))
if results["sampling"] is not None:
    display(Markdown(tables["sampling"]))

# %% [markdown]
# The claims, on the committed results (ratios within one run; the ranges over its repeats are in
# the tables): the shipped shapes train at least as fast as their PyTorch peers, and the cache
# makes the Reformer's sampling at a 2,048-character context more than 50 times faster.

# %%
if results["throughput"] is not None:
    shipped = {e["shape"]: e for e in results["throughput"]["summary"]}
    for shape in ("transformer", "reformer"):
        e = shipped[shape]
        low, high = e["ratio_range"]
        print(f"{shape}: {e['ratio']:.2f} of {e['peer']}'s tokens per second "
              f"({low:.2f} to {high:.2f} over the repeats)")  # fmt: skip
        assert e["ratio"] >= 1.0
if results["sampling"] is not None:
    cached = {e["shape"]: e for e in results["sampling"]["summary"]}
    print(f"Reformer sampling: {cached['reformer']['cache_speedup']:.0f}x with the cache")
    assert cached["reformer"]["cache_speedup"] > 50

# %% [markdown]
# ## Recap
#
# The numbers below are read from the results files by the cell itself.

# %%
if speed is not None:
    print(
        "Figure 5: LSH time per token grows",
        ", ".join(f"x{g:.2f} (R={r})" for r, g in speed["lsh_growth"].items()),
        f"from L = {speed['lsh']['1'][0]['length']:,} to {speed['lsh']['1'][-1]['length']:,};"
        f" full attention x{full_growth:.1f} over {length_ratio:.0f}x.",
    )
    print(
        "crossover (fitted lines):",
        ", ".join(
            f"R={r}: " + ("none" if c["length"] is None else f"{c['length']:,.0f}")
            for r, c in speed["crossover"].items()
        ),
    )
if rate is not None:
    print(
        f"LSH attention at L = {rate['setup']['length']:,}: {rate['lsh']['gflops']:.1f} GFLOP/s,"
        f" {rate['fraction_of_batched']:.0%} of the batched and {rate['fraction_of_square']:.0%}"
        " of the square matmul rate."
    )
if mem is not None:
    print(
        f"exact memory model: worst relative error {mem['worst_relative_error']:.1%} over "
        f"{len(mem['length']) + len(mem['depth'])} measurements."
    )
if step is not None:
    top = max(r["length"] for r in step["reformer"])
    row = next(r for r in step["reformer"] if r["length"] == top)
    if "time" in row:
        print(
            f"LM step at L = {top:,}: {row['time']['median_s']:.0f} s, peak "
            f"{row['peak_bytes'] / 2**20:,.0f} MiB."
        )

if results["throughput"] is not None:
    print(
        "training throughput against PyTorch:",
        ", ".join(f"{e['shape']} {e['ratio']:.2f}" for e in results["throughput"]["summary"]),
    )

# %% [markdown]
# Previous: [08 A Reformer on Shakespeare](08_shakespeare.ipynb). Next: back to the
# [README](../README.md#performance), whose Performance section tabulates these results.
