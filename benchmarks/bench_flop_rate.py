"""Benchmark: achieved FLOP rate of LSH attention forward + backward, against NumPy's matmul rate.

How close does LSH attention come to the machine's matrix-multiply speed? Its FLOPs are counted
analytically (:func:`flops.lsh_attention_flops`: the window products of forward and backward,
the backward's recomputed logits and the hashing projection) and divided by the measured time of
one ``lsh_attention_forward`` + ``lsh_attention_backward`` call. The same run measures NumPy's
float32 matmul rate twice:

- a batched matmul of the shape of the attention's logits, (n, C, Dh) @ (n, Dh, W) with
  n = B H R L / C chunk products: the best the window products could do;
- a large square matmul (N, N) @ (N, N): the machine's peak as NumPy reaches it.

The ratios say how much of the time goes to arithmetic; the rest is sorting, gathering, masking
and counting duplicates, which a profile (cProfile of one call, the functions taking the most
time) breaks down. NumPy's ufuncs (matmul, exp, the arithmetic) are not listed by cProfile: their
time is the own time of the library function that calls them.

Setting: the benchmark LM's LSH layer at L = 16,384 (batch 1, H = 4 heads of 64, R = 4 rounds,
C = 64,
causal, float32).

Writes ``benchmarks/results/flop_rate.json`` and ``figures/bench_flop_rate.png``.

Usage: ``python -m benchmarks.bench_flop_rate [--quick]``
"""

from __future__ import annotations

import numpy as np

from benchmarks import common
from minireformer.measuring import flops, timing

SETUPS = {
    "full": dict(
        batch=1,
        length=16384,
        n_heads=4,
        d_head=64,
        n_hashes=4,
        chunk_len=64,
        square=2048,
        repeats=2,
        matmul_repeats=5,
    ),
    "quick": dict(
        batch=1,
        length=512,
        n_heads=2,
        d_head=16,
        n_hashes=2,
        chunk_len=16,
        square=256,
        repeats=2,
        matmul_repeats=3,
    ),
}


def matmul_rate(a, b, repeats: int) -> dict:
    """GFLOP/s of ``a @ b`` (batched or not): 2 m k n per product over its median time."""
    measured = timing.time_call(lambda: np.matmul(a, b), repeats=repeats)
    n_flops = 2 * a.shape[-1] * int(np.prod(a.shape[:-1])) * b.shape[-1]
    shape = f"{tuple(a.shape)} @ {tuple(b.shape)}"
    return {
        "shape": shape,
        "flops": n_flops,
        "gflops": n_flops / measured["median_s"] / 1e9,
        **measured,
    }


def plot(results: dict):
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=(1, 1.6))
    names = ["LSH attention\nfwd + bwd", "batched\nmatmul", "square\nmatmul"]
    rates = [results["lsh"]["gflops"], results["batched"]["gflops"], results["square"]["gflops"]]
    bars = left.bar(names, rates, color=["C0", "C1", "C2"])
    left.bar_label(bars, fmt="%.1f")
    left.set_ylabel("GFLOP/s (float32)")
    left.set_title("Achieved rate, same run", fontsize=10)
    top = results["profile"]["top"][:8][::-1]
    right.barh([r["function"] for r in top], [100 * r["own_share"] for r in top], color="C0")
    right.set_xlabel("share of one call's time (%, own time, cProfile)")
    right.set_title("Where LSH attention's time goes", fontsize=10)
    right.tick_params(axis="y", labelsize=7)
    s = results["setup"]
    fig.suptitle(
        f"L={s['length']:,}, B={s['batch']}, H={s['n_heads']}, Dh={s['d_head']}, "
        f"R={s['n_hashes']}, C={s['chunk_len']}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def main(argv=None) -> dict:
    args = common.parse_args(__doc__, argv)
    s = SETUPS["quick" if args.quick else "full"]
    common.log(f"LSH attention FLOP rate: {s}")
    qk, v, dout = timing.attention_inputs(s["n_heads"], s["d_head"], s["batch"], s["length"])

    def step():
        return timing.lsh_step(qk, v, dout, chunk_len=s["chunk_len"], n_hashes=s["n_hashes"])

    count = flops.lsh_attention_flops(
        batch=s["batch"],
        n_heads=s["n_heads"],
        length=s["length"],
        d_head=s["d_head"],
        n_hashes=s["n_hashes"],
        chunk_len=s["chunk_len"],
    )
    lsh = {"flops": count, **timing.time_call(step, repeats=s["repeats"])}
    lsh["gflops"] = count["total"] / lsh["median_s"] / 1e9
    common.log(f"  LSH attention: {count['total'] / 1e9:.2f} GFLOP, {lsh['gflops']:.2f} GFLOP/s")

    rng = np.random.default_rng(1)
    n = s["batch"] * s["n_heads"] * s["n_hashes"] * s["length"] // s["chunk_len"]
    window = 2 * s["chunk_len"]  # the default window: the chunk and the one before it
    a = rng.standard_normal((n, s["chunk_len"], s["d_head"]), dtype=np.float32)
    b = rng.standard_normal((n, s["d_head"], window), dtype=np.float32)
    batched = matmul_rate(a, b, s["matmul_repeats"])
    common.log(f"  batched matmul {batched['shape']}: {batched['gflops']:.2f} GFLOP/s")
    square = rng.standard_normal((s["square"], s["square"]), dtype=np.float32)
    square = matmul_rate(square, square, s["matmul_repeats"])
    common.log(f"  square matmul {square['shape']}: {square['gflops']:.2f} GFLOP/s")

    breakdown = timing.profile(step)
    for r in breakdown["top"][:6]:
        common.log(f"    {100 * r['own_share']:5.1f}%  {r['function']}")
    results = {
        "setup": {**s, "causal": True, "dtype": "float32"},
        "lsh": lsh,
        "batched": batched,
        "square": square,
        "fraction_of_batched": lsh["gflops"] / batched["gflops"],
        "fraction_of_square": lsh["gflops"] / square["gflops"],
        "profile": breakdown,
    }
    common.log(
        f"  LSH reaches {results['fraction_of_batched']:.1%} of the batched and "
        f"{results['fraction_of_square']:.1%} of the square matmul rate"
    )
    common.write_results(args, "flop_rate", results)
    common.save_figure(args, plot(results), "bench_flop_rate")
    return results


if __name__ == "__main__":
    main()
