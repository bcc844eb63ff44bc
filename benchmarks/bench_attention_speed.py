"""Benchmark: attention forward + backward time per token against length (paper Figure 5, right).

The claim checked (paper section 5, Figure 5 right): at a fixed number of tokens per batch, the
time per token of full attention grows with the length L (its cost is L^2 per sequence), while
LSH attention's stays nearly flat (its cost is L R W: R rounds, a window of W keys per query);
more rounds cost proportionally more.

What it runs, on the attention functions themselves (no projections), causal, float32, with the
heads of the benchmark LM (H = 4 heads of Dh = 64) and chunk C = 64:

- LSH attention (``lsh_attention.lsh_attention_forward`` then ``_backward``) with R = 1, 2, 4, 8
  rounds at L = 1,024 ... 65,536 and batch B = T / L, so that every call holds T = B L tokens;
- full shared-QK attention (``attention.shared_qk_attention_forward`` / ``_backward``) at each L
  whose (B, H, L, L) weights fit ``--full-budget-mib``; where B = T / L does not fit, the largest
  batch that does is used (recorded per point; full attention's time per token is independent of
  the batch, which only repeats the same work).

Each point is timed by :func:`minireformer.measuring.timing.time_call` (median, min and max of
repeated calls, as many as fit a time budget per point) after one warm-up call of each function.
The crossover length is where straight lines fitted (least squares) to per-token time against L,
one for full attention and one for each LSH setting, meet; ``extrapolated`` says whether it lies
outside the lengths where full attention was measured.

Writes ``benchmarks/results/attention_speed.json`` and ``figures/bench_attention_speed.png``.

Usage: ``python -m benchmarks.bench_attention_speed [--quick] [--full-budget-mib 1024]``
"""

from __future__ import annotations

from benchmarks import common
from minireformer.measuring import timing

SETUPS = {
    "full": dict(
        tokens=65_536,
        lsh_lengths=(1024, 2048, 4096, 8192, 16384, 32768, 65536),
        full_lengths=(1024, 2048, 4096, 8192),
        rounds=(1, 2, 4, 8),
        n_heads=4,
        d_head=64,
        chunk_len=64,
        repeats=3,
        point_budget_s=20.0,
    ),
    "quick": dict(
        tokens=256,
        lsh_lengths=(64, 128, 256),
        full_lengths=(64, 128),
        rounds=(1, 2, 4, 8),
        n_heads=2,
        d_head=16,
        chunk_len=16,
        repeats=2,
        point_budget_s=1.0,
    ),
}


def full_batch(setup: dict, length: int, budget_bytes: float) -> int:
    """B = T / L, or fewer so that one (B, H, L, L) float32 array fits the budget (0: none fits)."""
    per_sequence = setup["n_heads"] * length * length * 4
    return min(setup["tokens"] // length, int(budget_bytes // per_sequence))


def point(setup: dict, kind: str, length: int, batch: int, fn, *args, **kwargs) -> dict:
    """Time ``fn(*args, **kwargs)``; the row: timing, per-token microseconds, the shape.

    No warm-up call per point: NumPy compiles nothing per shape, so what a warm-up excludes
    (the first use of each code path and BLAS kernel) is paid once, by :func:`warm_up`. The
    timed calls are as many as fit ``point_budget_s`` (at least one, at most ``repeats``).
    """
    measured = timing.time_call(
        lambda: fn(*args, **kwargs),
        repeats=setup["repeats"],
        warmup=0,
        budget_s=setup["point_budget_s"],
    )
    tokens = batch * length
    row = dict(kind=kind, length=length, batch=batch, tokens=tokens, **measured)
    row["us_per_token"] = 1e6 * measured["median_s"] / tokens
    common.log(
        f"  {kind:6s} L={length:6d} B={batch:3d}: {row['us_per_token']:8.2f} us/token "
        f"(median of {measured['repeats']}; "
        f"{measured['min_s']:.2f}-{measured['max_s']:.2f} s a call)"
    )
    return row


def warm_up(setup: dict) -> None:
    """One untimed call of each attention function at the shortest length, batch 1."""
    arrays = timing.attention_inputs(setup["n_heads"], setup["d_head"], 1, setup["lsh_lengths"][0])
    timing.full_step(*arrays)
    timing.lsh_step(*arrays, chunk_len=setup["chunk_len"], n_hashes=max(setup["rounds"]))


def plot(results: dict):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    full = results["full"]
    ax.loglog(
        [r["length"] for r in full],
        [r["us_per_token"] for r in full],
        "o-",
        color="k",
        label="full attention",
    )
    for i, (rounds, rows) in enumerate(results["lsh"].items()):
        ax.loglog(
            [r["length"] for r in rows],
            [r["us_per_token"] for r in rows],
            "s-",
            color=f"C{i}",
            label=f"LSH, {rounds} round{'s' if rounds != '1' else ''}",
        )
        where = results["crossover"][rounds]["length"]
        if where is not None and rows[0]["length"] <= where <= rows[-1]["length"]:
            ax.axvline(where, color=f"C{i}", ls=":", lw=1)
    lengths = sorted({r["length"] for rows in results["lsh"].values() for r in rows})
    ax.set_xticks(lengths, [f"{n:,}" for n in lengths])
    ax.minorticks_off()
    ax.set_xlabel("sequence length L (batch x L fixed)")
    ax.set_ylabel("forward + backward time per token (us)")
    s = results["setup"]
    ax.set_title(
        f"Attention time per token, {s['tokens']:,} tokens a call, H={s['n_heads']}, "
        f"Dh={s['d_head']}, C={s['chunk_len']} (dotted: crossover within the range)",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="upper left")
    return fig


def main(argv=None) -> dict:
    budget_option = common.full_budget_option(1024, "(B, H, L, L) float32 array")
    args = common.parse_args(__doc__, argv, budget_option)
    setup = SETUPS["quick" if args.quick else "full"]
    budget = args.full_budget_mib * common.MiB
    common.log(f"Attention time per token (paper Figure 5, right): {setup}")
    warm_up(setup)
    common.log("full attention:")
    full_rows = []
    for length in setup["full_lengths"]:
        batch = full_batch(setup, length, budget)
        if batch < 1:
            common.log(f"  full   L={length}: one sequence's weights exceed the budget, skipped")
            continue
        arrays = timing.attention_inputs(setup["n_heads"], setup["d_head"], batch, length)
        full_rows.append(point(setup, "full", length, batch, timing.full_step, *arrays))
    lsh_rows, growth, cross = {}, {}, {}
    for rounds in setup["rounds"]:
        common.log(f"LSH attention, {rounds} round(s):")
        rows = []
        for length in setup["lsh_lengths"]:
            batch = setup["tokens"] // length
            arrays = timing.attention_inputs(setup["n_heads"], setup["d_head"], batch, length)
            kwargs = dict(chunk_len=setup["chunk_len"], n_hashes=rounds)
            rows.append(
                point(setup, f"lsh-{rounds}", length, batch, timing.lsh_step, *arrays, **kwargs)
            )
        lsh_rows[str(rounds)] = rows
        growth[str(rounds)] = rows[-1]["us_per_token"] / rows[0]["us_per_token"]
        cross[str(rounds)] = timing.crossover(full_rows, rows)
        where = cross[str(rounds)]["length"]
        common.log(
            f"  per-token growth L={rows[0]['length']} -> {rows[-1]['length']}: "
            f"{growth[str(rounds)]:.2f}x; crossover with full attention at L = "
            + ("none" if where is None else f"{where:.0f}")
            + (" (extrapolated)" if cross[str(rounds)]["extrapolated"] else "")
        )
    results = {
        "setup": {**setup, "full_budget_bytes": int(budget), "causal": True, "dtype": "float32"},
        "full": full_rows,
        "lsh": lsh_rows,
        "lsh_growth": growth,
        "crossover": cross,
    }
    common.write_results(args, "attention_speed", results)
    common.save_figure(args, plot(results), "bench_attention_speed")
    return results


if __name__ == "__main__":
    main()
