"""Benchmark: peak memory and time of one Reformer LM training step, L = 4,096 ... 65,536 tokens.

The claim checked (paper section 5 and Table 3): with LSH attention, reversible layers and chunked
feed-forward / loss, one training step on a long sequence needs memory roughly proportional to
``b * n_h * n_r * l * c`` (a few chunks per query), independent of depth, where a Transformer with
stored activations, full attention and no chunking needs ``max(b l d_ff, b n_h l^2) * n_l``.

What it runs (float32, one sequence, batch 1):

1. the Reformer: 6 layers, d_model 256, 4 heads, d_ff 1024, 4 hash rounds, chunk 64, vocab 256,
   reversible, chunked feed-forward and loss, attention one head at a time (``common.LM_SETUPS``);
   peak NumPy memory (tracemalloc, :func:`memory.measure_peak`) and wall time of
   ``loss_and_grads`` at L = 4,096, 8,192, 16,384 and then 65,536 (the first call traced
   for the peak, then timed calls: median, min, max, :func:`timing.time_call`); plus the peak of
   each component on its own, to show where the memory goes (the shorter lengths' attention peaks
   are extrapolated: the step at 65,536 runs only if it fits ``--max-gib``);
2. the same model with stored activations, full attention and no chunking (the "Transformer" row
   of Table 3), at L = 512, 1024, 2048, ... doubled while the Table 3 prediction and the measured
   peak stay under a memory budget and the step under a time budget: the largest L that fits;
3. Table 3's predictions (:func:`table3.table3_memory`) for both at every L measured
   and at 65,536.

Writes ``benchmarks/results/reformer_memory.json`` and ``figures/bench_reformer_memory.png``.
``--quick`` runs everything at toy sizes in seconds (used by tests/test_benchmarks.py).

Timings are wall-clock on whatever machine runs it; on a shared 2-core CPU they are noisy.

Usage: ``python -m benchmarks.bench_reformer_memory [--quick] [--budget-gib 4] [--max-gib 6]``
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from benchmarks import common
from benchmarks.common import GiB, MiB, log
from minireformer import chunking, lsh, reformer
from minireformer.measuring import memory, table3, timing
from minireformer.reformer_config import ReformerConfig

# The benchmark LM (common.LM_SETUPS), the lengths of its training steps, the baseline's start.
FULL = dict(
    **common.LM_SETUPS["full"],
    ladder=(4096, 8192, 16384),
    target_len=65_536,
    baseline_start=512,
    repeats=3,
    step_budget_s=30.0,
)
QUICK = dict(
    **common.LM_SETUPS["quick"],
    ladder=(64, 128, 256),
    target_len=512,
    baseline_start=64,
    repeats=2,
    step_budget_s=5.0,
)


def reformer_config(setup: dict, length: int) -> ReformerConfig:
    """The Reformer: LSH attention, reversible, chunked feed-forward and loss, axial positions."""
    return common.reformer_config(setup, length)


def baseline_config(setup: dict, length: int) -> ReformerConfig:
    """The same model with stored activations, full attention and no chunking (Table 3, row 1)."""
    return dataclasses.replace(
        reformer_config(setup, length),
        attention_types=("full",),
        ff_chunk=None,
        loss_chunk=None,
        n_parallel_heads=None,
        reversible=False,
    )


def table3_bytes(setup: dict, arch: str, length: int) -> int:
    """Table 3's memory (bytes, float32) of ``arch`` for one sequence of ``length`` tokens."""
    m = setup["model"]
    return table3.table3_memory(
        arch,
        batch=1,
        length=length,
        d_model=m["d_model"],
        d_ff=m["d_ff"],
        n_heads=m["n_heads"],
        n_layers=m["n_layers"],
        n_hashes=setup["n_hashes"],
        chunk_len=setup["chunk_len"],
    )


def training_step(
    config: ReformerConfig, length: int, seed: int = 0, *, setup: dict | None = None
) -> dict:
    """One ``loss_and_grads`` call on random tokens: peak bytes (parameters excluded), seconds.

    The first call runs under ``memory.measure_peak`` (its time is ``"seconds"``). With
    ``setup``, it also serves as the warm-up of ``setup["repeats"]`` timed calls without tracing
    (fewer if they would exceed ``setup["step_budget_s"]``), reported under ``"time"``.

    A ``RuntimeError`` raised by the library (for example a reversible recomputation that refuses
    to go on) is recorded under ``"error"``; the peak is then the peak up to the failure.
    """
    rng = np.random.default_rng(seed)
    params = reformer.init_reformer(config, rng)
    tokens = rng.integers(0, config.vocab_size, size=(1, length + 1))  # the model reads L

    def guarded():
        try:
            return reformer.loss_and_grads(params, tokens, config, rng), None
        except RuntimeError as err:
            return None, err

    start = time.perf_counter()
    (result, error), peak = memory.measure_peak(guarded)
    seconds = time.perf_counter() - start
    row = {
        "length": length,
        "peak_bytes": int(peak),
        "peak_gib": peak / GiB,
        "seconds": seconds,
        "param_bytes": memory.tree_nbytes(params),
    }
    if error is None:
        loss, grads = result
        row.update(loss=float(loss), grad_bytes=memory.tree_nbytes(grads))
        del result, grads
        if setup is not None:
            row["time"] = timing.time_call(
                lambda: reformer.loss_and_grads(params, tokens, config, rng),
                repeats=setup["repeats"],
                warmup=0,
                budget_s=setup["step_budget_s"],
                estimate_s=seconds,
            )
            measured = row["time"]
            log(f"    {measured['repeats']} timed step(s): median {measured['median_s']:.1f} s")
    else:
        row["error"] = f"{type(error).__name__}: {error}"
        log(f"    FAILED after {seconds:.1f} s (peak so far {peak / MiB:.1f} MiB): {row['error']}")
    return row


def components(setup: dict, length: int, seed: int = 1) -> dict:
    """Peak bytes of each piece of one Reformer layer's work on its own, at ``length`` tokens.

    Where a training step's memory goes: the LSH attention sub-layer (forward and backward, as
    ``reverse_and_grad`` recomputes it), the chunked feed-forward sub-layer, the chunked output
    loss, and one (B, L, D) stream (the reversible model holds a handful of those).
    """
    config = reformer_config(setup, length)
    block = reformer.build_blocks(config)[0]
    rng = np.random.default_rng(seed)
    p = reformer.init_reformer(dataclasses.replace(config, n_layers=1), rng)["blocks"][0]
    d = config.d_model
    x = rng.standard_normal((1, length, d)).astype(np.float32)  # (B, L, D)
    dout = rng.standard_normal((1, length, d)).astype(np.float32)
    out = {"stream_bytes": int(x.nbytes)}
    for name, sub in (("attention", block.f), ("feedforward", block.g)):
        rec = sub.draw(rng, x.shape)
        start = time.perf_counter()
        _, peak = memory.measure_peak(sub.recompute_backward, x, p[sub.key], rec, None, dout)
        out[f"{name}_bytes"] = int(peak)
        out[f"{name}_seconds"] = time.perf_counter() - start
        log(f"    {name:12s} forward+backward: {peak / MiB:9.1f} MiB")
    if config.attention_type(0) == "lsh":
        # The two ways a training step runs the LSH sub-layer: forward (hashing included) and,
        # walking down, forward + backward replaying the recorded buckets (no hashing).
        rec = block.f.draw(rng, x.shape)

        def forward_only():
            return block.f.output(x, p["attn"], rec)[1]  # the completed record

        rec, peak = memory.measure_peak(forward_only)
        out["attention_forward_bytes"] = int(peak)
        log(f"    {'attention':12s} forward, hashing included: {peak / MiB:9.1f} MiB")
        _, peak = memory.measure_peak(block.f.recompute_backward, x, p["attn"], rec, None, dout)
        out["attention_replay_bytes"] = int(peak)
        log(f"    {'attention':12s} replayed forward+backward: {peak / MiB:9.1f} MiB")
        rec = block.f.draw(rng, x.shape)
        qk = rng.standard_normal((1, config.n_heads, length, config.d_head)).astype(np.float32)
        # K, or its factors (the library's default factorises K above 2C buckets)
        out["n_buckets"] = config.n_buckets or lsh.default_n_buckets(length, config.chunk_len)
        _, peak = memory.measure_peak(lsh.hash_vectors, qk, rec.rotations, out["n_buckets"])
        out["hashing_bytes"] = int(peak)
        log(f"    {'LSH hashing':12s} alone ({out['n_buckets']} buckets): {peak / MiB:9.1f} MiB")
    w = (rng.standard_normal((2 * d, config.vocab_size)) / np.sqrt(2 * d)).astype(np.float32)
    h = rng.standard_normal((1, length, 2 * d)).astype(np.float32)  # (B, L, 2D)
    targets = rng.integers(0, config.vocab_size, size=(1, length))

    def loss_step():
        loss, cache = chunking.chunked_output_loss_forward(
            h, w, None, targets, chunk_len=config.loss_chunk
        )
        return loss, chunking.chunked_output_loss_backward(1.0, cache)

    _, peak = memory.measure_peak(loss_step)
    out["loss_bytes"] = int(peak)
    log(f"    {'output loss':12s} forward+backward: {peak / MiB:9.1f} MiB")
    return out


def baseline_sweep(setup: dict, budget_bytes: float, time_budget: float) -> list[dict]:
    """Stored activations at doubling L while the next step is predicted to fit both budgets.

    The next length's memory is predicted as the larger of 4x the last measured peak (the L^2
    attention weights dominate) and Table 3's formula; its time as 4x the last time.
    """
    rows = []
    length = setup["baseline_start"]
    while True:
        predicted = table3_bytes(setup, "transformer", length)
        if rows:
            predicted = max(predicted, 4 * rows[-1]["peak_bytes"])
            if 4 * rows[-1]["seconds"] > time_budget:
                log(f"  stop before L={length}: predicted time > {time_budget:.0f} s")
                break
        if predicted > budget_bytes:
            log(
                f"  stop before L={length}: predicted {predicted / GiB:.2f} GiB > budget "
                f"{budget_bytes / GiB:.2f} GiB"
            )
            break
        log(f"  baseline L={length}: predicted {predicted / MiB:.0f} MiB, running ...")
        row = training_step(baseline_config(setup, length), length)
        row["table3_bytes"] = table3_bytes(setup, "transformer", length)
        log(f"    peak {row['peak_bytes'] / MiB:.1f} MiB, {row['seconds']:.1f} s")
        rows.append(row)
        length *= 2
    return rows


def plot(results: dict, setup: dict):
    """Peak memory against length: measured points and Table 3 lines, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    base, ref = results["baseline"], results["reformer"]
    lengths = np.array(sorted({r["length"] for r in base + ref} | {setup["target_len"]}))
    grid = np.geomspace(lengths.min(), lengths.max(), 50).astype(int)
    ax.loglog(
        [r["length"] for r in base],
        [r["peak_bytes"] / MiB for r in base],
        "o-",
        color="C3",
        label="stored activations, full attention, no chunking: measured",
    )
    ax.loglog(
        grid,
        [table3_bytes(setup, "transformer", n) / MiB for n in grid],
        "--",
        color="C3",
        label="Transformer, Table 3",
    )
    ok = [r for r in ref if "error" not in r and "peak_bytes" in r]
    failed = [r for r in ref if "error" in r]
    ax.loglog(
        [r["length"] for r in ok],
        [r["peak_bytes"] / MiB for r in ok],
        "s-",
        color="C0",
        label="Reformer: measured",
    )
    if failed:
        ax.loglog(
            [r["length"] for r in failed],
            [r["peak_bytes"] / MiB for r in failed],
            "x",
            color="C0",
            ms=9,
            label="Reformer: step failed, peak until the failure",
        )
    comp = [r for r in ref if "components" in r]
    if comp:
        ax.loglog(
            [r["length"] for r in comp],
            [r["components"]["attention_bytes"] / MiB for r in comp],
            "^-",
            color="C2",
            label="one LSH attention sub-layer, forward + backward",
        )
    skipped = [r for r in ref if "skipped" in r]
    if skipped:
        ax.loglog(
            [r["length"] for r in skipped],
            [r["predicted_attention_bytes"] / MiB for r in skipped],
            "^",
            color="C2",
            mfc="none",
            ms=9,
            label="attention sub-layer, extrapolated (step not run)",
        )
    ax.loglog(
        grid,
        [table3_bytes(setup, "reformer", n) / MiB for n in grid],
        "--",
        color="C0",
        label="Reformer, Table 3",
    )
    ax.axhline(2 * 1024, color="gray", ls=":", label="2 GiB")
    ax.set_xlabel("sequence length L (tokens, batch 1)")
    ax.set_ylabel("peak memory of one training step (MiB)")
    m = setup["model"]
    ax.set_title(
        f"{m['n_layers']} layers, d_model {m['d_model']}, {m['n_heads']} heads, d_ff {m['d_ff']}, "
        f"float32"
    )
    ax.legend(fontsize=7)
    return fig


def main(argv=None) -> dict:
    def options(parser):
        parser.add_argument(
            "--budget-gib", type=float, default=4.0, help="memory budget of the baseline sweep"
        )
        parser.add_argument(
            "--time-budget", type=float, default=120.0, help="seconds per baseline step, at most"
        )
        parser.add_argument(
            "--max-gib",
            type=float,
            default=6.0,
            help="do not run the Reformer at the target length if predicted above this",
        )

    args = common.parse_args(__doc__, argv, options)
    setup = QUICK if args.quick else FULL
    budget = (16 * MiB) if args.quick else args.budget_gib * GiB
    target = setup["target_len"]

    log(f"Reformer memory benchmark ({'quick' if args.quick else 'full'}): {setup['model']}")
    results = {
        "setup": dict(setup),
        "note": "wall-clock times on a shared CPU are noisy; peaks are tracemalloc's",
    }

    log("[1/4] Reformer at shorter lengths: where the memory goes, and how it grows ...")
    ladder = list(setup["ladder"])
    ref_rows = []
    for length in ladder:
        log(f"  L={length}: components")
        parts = components(setup, length)
        log(f"  L={length}: one training step ...")
        row = training_step(reformer_config(setup, length), length, setup=setup)
        row.update(components=parts, table3_bytes=table3_bytes(setup, "reformer", length))
        if "error" not in row:
            log(f"    peak {row['peak_bytes'] / MiB:.1f} MiB, {row['seconds']:.1f} s")
        ref_rows.append(row)

    log(f"[2/4] Reformer at L={target} ...")
    # The attention sub-layer is the largest piece; fit a L + b L^2 (the hashing's K grows with L)
    # to its measured peaks and extrapolate: a lower bound for the whole step.
    fit = np.polyfit(ladder, [r["components"]["attention_bytes"] for r in ref_rows], 2)
    predicted = float(np.polyval(fit, target))
    log(f"  predicted peak of one attention sub-layer alone: {predicted / GiB:.2f} GiB")
    if predicted > args.max_gib * GiB:
        main_row = {
            "length": target,
            "skipped": (
                f"not run: the attention sub-layer alone is predicted to need "
                f"{predicted / GiB:.1f} GiB (fit to L={ladder}), above --max-gib {args.max_gib} "
                f"(this machine is shared)"
            ),
            "predicted_attention_bytes": int(predicted),
            "table3_bytes": table3_bytes(setup, "reformer", target),
        }
        log(f"  {main_row['skipped']}")
    else:
        log("  components")
        parts = components(setup, target)
        log("  one training step ...")
        main_row = training_step(reformer_config(setup, target), target, setup=setup)
        main_row.update(components=parts, table3_bytes=table3_bytes(setup, "reformer", target))
        main_row["predicted_attention_bytes"] = int(predicted)
        main_row["max_rss_bytes_after"] = _max_rss()
        if "error" not in main_row:
            log(f"    peak {main_row['peak_bytes'] / MiB:.1f} MiB, {main_row['seconds']:.1f} s")

    log("[3/4] Stored activations, full attention, no chunking: doubling L ...")
    base = baseline_sweep(setup, budget, args.time_budget)
    largest = base[-1]["length"] if base else None

    log("[4/4] Reformer at the baseline's lengths, for ratios at equal L ...")
    for row in base:
        if row["length"] in ladder or row["length"] == target:
            continue  # measured in [1/4] or [2/4]
        log(f"  Reformer L={row['length']} ...")
        r = training_step(reformer_config(setup, row["length"]), row["length"])
        r["table3_bytes"] = table3_bytes(setup, "reformer", row["length"])
        if "error" not in r:
            log(
                f"  Reformer L={r['length']}: peak {r['peak_bytes'] / MiB:.1f} MiB, "
                f"{r['seconds']:.1f} s"
            )
        ref_rows.append(r)
    ref_rows.append(main_row)
    ref_rows.sort(key=lambda r: r["length"])
    results.update(
        reformer=ref_rows,
        baseline=base,
        target_len=target,
        baseline_largest_len=largest,
        table3_transformer_at_target_bytes=table3_bytes(setup, "transformer", target),
        table3_reformer_at_target_bytes=table3_bytes(setup, "reformer", target),
    )
    ratios = {}
    measured = {r["length"]: r for r in ref_rows if "peak_bytes" in r and "error" not in r}
    for row in base:  # at every length where both steps were measured
        if row["length"] in measured:
            ratios[f"baseline_over_reformer_at_L{row['length']}"] = (
                row["peak_bytes"] / measured[row["length"]]["peak_bytes"]
            )
    if base and largest in measured:
        ratios["baseline_over_reformer_at_largest_baseline_len"] = (
            base[-1]["peak_bytes"] / measured[largest]["peak_bytes"]
        )
    if target in measured:
        ratios["table3_transformer_at_target_over_reformer_measured"] = (
            results["table3_transformer_at_target_bytes"] / main_row["peak_bytes"]
        )
        ratios["reformer_measured_over_table3_at_target"] = (
            main_row["peak_bytes"] / main_row["table3_bytes"]
        )
    results["ratios"] = ratios

    log("\nSummary")
    if "skipped" in main_row:
        log(f"  Reformer, L={target}: {main_row['skipped']}")
    elif "error" in main_row:
        log(f"  Reformer, L={target}: step FAILED: {main_row['error']}")
    else:
        log(
            f"  Reformer, L={target}: peak {main_row['peak_bytes'] / GiB:.2f} GiB "
            f"(Table 3's Reformer row: {main_row['table3_bytes'] / MiB:.0f} MiB), "
            f"{main_row.get('time', {}).get('median_s', main_row['seconds']):.0f} s"
        )
    log(f"  Table 3, Reformer at L={target}: {main_row['table3_bytes'] / MiB:.0f} MiB")
    for r in ref_rows:
        if "error" in r and "components" not in r:
            log(f"  L={r['length']}: step failed: {r['error']}")
        if "components" in r:
            c = r["components"]
            log(
                f"  L={r['length']}: attention {c['attention_bytes'] / MiB:.0f} MiB "
                f"(hashing alone {c.get('hashing_bytes', 0) / MiB:.0f} MiB, replayed without "
                f"hashing {c.get('attention_replay_bytes', 0) / MiB:.0f} MiB), feed-forward "
                f"{c['feedforward_bytes'] / MiB:.0f} MiB, loss {c['loss_bytes'] / MiB:.0f} MiB, "
                f"one stream {c['stream_bytes'] / MiB:.0f} MiB; step: "
                + (r["error"] if "error" in r else f"{r['peak_bytes'] / MiB:.0f} MiB")
            )
    if base:
        log(
            f"  Baseline largest L that fits: {largest} "
            f"(peak {base[-1]['peak_bytes'] / GiB:.2f} GiB, {base[-1]['seconds']:.1f} s)"
        )
    log(
        f"  Table 3, Transformer at L={target}: "
        f"{results['table3_transformer_at_target_bytes'] / GiB:.0f} GiB"
    )
    for name, value in ratios.items():
        log(f"  {name}: {value:.2f}")

    common.write_results(args, "reformer_memory", results)
    common.save_figure(args, plot(results, setup), "bench_reformer_memory")
    return results


def _max_rss() -> int | None:
    """The process's resident-memory high-water mark in bytes (Linux), a cross-check."""
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, AttributeError):
        return None


if __name__ == "__main__":
    main()
