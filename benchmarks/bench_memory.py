"""Benchmark: peak memory against length and against depth, measured beside the exact model.

The claims checked (paper sections 2-4, Table 3): an LSH or local attention layer's memory grows
linearly with L where full attention's grows as L^2; a model with stored activations needs memory
that grows with depth, a reversible one does not, and chunking the feed-forward and the loss
removes the (B, L, d_ff) and (B, L, V) terms. Beside every measurement stands the exact memory
model of ``minireformer.measuring.memory_model`` (the arrays this implementation holds at its peak,
not Table 3's
orders of growth): ``memory_model.attention_peak_model(kind, ...)`` for an attention call and
``memory_model.step_peak_model(config, batch, length)`` for a training step, each returning
``.total``
bytes and ``.terms`` (name -> bytes).

What it runs (the benchmark LM, ``common.LM_SETUPS``; float32, batch 1):

1. against length: one attention forward + backward on existing (B, H, L, Dh) inputs
   (``lsh_attention_forward`` / ``_backward`` with rotations drawn inside the call,
   ``local_attention_*``, ``shared_qk_attention_*``; the LM's H = 4 heads of 64, C = 64, R = 4)
   at L = 1,024 ... 16,384, full attention only where its (B, H, L, L) weights fit
   ``--full-budget-mib``;
2. against depth: one ``reformer.loss_and_grads`` step at L = 4,096 with 1 to 8 layers, for
   stored activations (not reversible, no chunking), reversible (no chunking) and chunked
   reversible (the Reformer).

Peaks are ``memory.measure_peak`` / ``memory.measure_training_step`` (tracemalloc): the bytes
NumPy allocated during the call on top of what existed before (parameters and inputs excluded).
The worst relative error |model - measured| / measured over both grids is reported.

Writes ``benchmarks/results/memory.json`` and ``figures/bench_memory.png``.

Usage: ``python -m benchmarks.bench_memory [--quick] [--full-budget-mib 512]``
"""

from __future__ import annotations

import numpy as np

from benchmarks import common
from minireformer import reformer
from minireformer.measuring import memory, memory_model, timing

SETUPS = {
    "full": dict(
        lm="full",
        lengths=(1024, 2048, 4096, 8192, 16384),
        kinds=("lsh", "local", "full"),
        depth_length=4096,
        depths=(1, 2, 4, 8),
    ),
    "quick": dict(
        lm="quick",
        lengths=(64, 128, 256),
        kinds=("lsh", "local", "full"),
        depth_length=128,
        depths=(1, 2, 3),
    ),
}
# The three models of the depth sweep: what changes against the Reformer (common.reformer_config).
ARCHS = {
    "stored": dict(reversible=False, ff_chunk=None, loss_chunk=None),
    "reversible": dict(ff_chunk=None, loss_chunk=None),
    "chunked_reversible": dict(),
}


def model_row(measured: int, model) -> dict:
    """The measured peak beside the model's total and terms, and their relative error."""
    return {
        "measured_bytes": int(measured),
        "model_bytes": int(model.total),
        "model_terms": {name: int(b) for name, b in model.terms.items()},
        "relative_error": abs(model.total - measured) / measured,
    }


def attention_call(lm: dict, kind: str, length: int, seed: int = 0) -> dict:
    """Peak of one attention forward + backward at ``length`` on existing inputs, and the model's.

    The heads, chunk and rounds are the LM's (``lm``); batch 1, causal, float32; LSH draws its
    rotations inside the call, as in a training step.
    """
    config = common.reformer_config(lm, length)
    qk, v, dout = timing.attention_inputs(config.n_heads, config.d_head, 1, length, seed)
    window = dict(chunk_len=config.chunk_len)
    steps = {
        "lsh": (timing.lsh_step, dict(window, n_hashes=config.n_hashes)),
        "local": (timing.local_step, window),
        "full": (timing.full_step, {}),
    }
    step, kwargs = steps[kind]
    _, peak = memory.measure_peak(step, qk, v, dout, **kwargs)
    model = memory_model.attention_peak_model(
        kind,
        batch=1,
        n_heads=config.n_heads,
        length=length,
        d_head=config.d_head,
        chunk_len=config.chunk_len,
        n_hashes=config.n_hashes,
        causal=True,
    )
    return {"kind": kind, "length": length, **model_row(peak, model)}


def training_step(lm: dict, arch: str, n_layers: int, length: int, seed: int = 0) -> dict:
    """Peak of one ``loss_and_grads`` step of ``arch`` with ``n_layers`` layers, and the model's."""
    config = common.reformer_config(lm, length, n_layers=n_layers, **ARCHS[arch])
    rng = np.random.default_rng(seed)
    params = reformer.init_reformer(config, rng)
    tokens = rng.integers(0, config.vocab_size, size=(1, length + 1))  # the model reads L
    _, peak = memory.measure_training_step(reformer.loss_and_grads, params, tokens, config, rng)
    row = {"arch": arch, "n_layers": n_layers, "length": length}
    row.update(model_row(peak, memory_model.step_peak_model(config, 1, length)))
    return row


def _measured_and_model(draw, xs, rows, color, name):
    """Measured peaks (solid) and the model's (dashed) of ``rows`` at ``xs``, in MiB."""
    for key, style, what in (("measured_bytes", "o-", "measured"), ("model_bytes", "x--", "model")):
        values = [r[key] / common.MiB for r in rows]
        draw(xs, values, style, color=color, label=f"{name}: {what}")


def plot(results: dict):
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, kind in enumerate(results["setup"]["kinds"]):
        rows = [r for r in results["length"] if r["kind"] == kind]
        _measured_and_model(left.loglog, [r["length"] for r in rows], rows, f"C{i}", kind)
    lengths = results["setup"]["lengths"]
    left.set_xticks(lengths, [f"{n:,}" for n in lengths])
    left.minorticks_off()
    left.set_xlabel("sequence length L (batch 1)")
    left.set_ylabel("peak memory (MiB)")
    lm = results["setup"]["model"]
    left.set_title(
        f"Attention forward + backward: H = {lm['model']['n_heads']}, R = {lm['n_hashes']} "
        f"(LSH), C = {lm['chunk_len']}",
        fontsize=10,
    )
    left.legend(fontsize=7)
    for i, arch in enumerate(ARCHS):
        rows = [r for r in results["depth"] if r["arch"] == arch]
        depths = [r["n_layers"] for r in rows]
        _measured_and_model(right.plot, depths, rows, f"C{i + 3}", arch.replace("_", " "))
    right.set_xticks(results["setup"]["depths"])
    right.set_xlabel("layers")
    right.set_ylabel("peak memory of one training step (MiB)")
    right.set_title(f"LM training step at L = {results['setup']['depth_length']:,}", fontsize=10)
    right.legend(fontsize=7)
    fig.suptitle(
        f"measured (solid) and the exact memory model (dashed); worst relative error "
        f"{results['worst_relative_error']:.1%}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def main(argv=None) -> dict:
    budget_option = common.full_budget_option(512, "(B, H, L, L) float32 array")
    args = common.parse_args(__doc__, argv, budget_option)
    setup = SETUPS["quick" if args.quick else "full"]
    lm = common.LM_SETUPS[setup["lm"]]
    budget = args.full_budget_mib * common.MiB
    common.log(f"Peak memory against length and depth: {setup}, model {lm['model']}")
    rows = []
    for kind in setup["kinds"]:
        for length in setup["lengths"]:
            if kind == "full" and lm["model"]["n_heads"] * length**2 * 4 > budget:
                common.log(f"  full   L={length}: weights exceed the budget, skipped")
                continue
            rows.append(attention_call(lm, kind, length))
            r = rows[-1]
            common.log(
                f"  {kind:6s} L={length:6d}: measured {r['measured_bytes'] / common.MiB:8.1f} MiB,"
                f" model {r['model_bytes'] / common.MiB:8.1f} MiB ({r['relative_error']:.1%})"
            )
    depth_rows = []
    for arch in ARCHS:
        for n_layers in setup["depths"]:
            depth_rows.append(training_step(lm, arch, n_layers, setup["depth_length"]))
            r = depth_rows[-1]
            common.log(
                f"  {arch:18s} {n_layers} layers: measured "
                f"{r['measured_bytes'] / common.MiB:8.1f} MiB, model "
                f"{r['model_bytes'] / common.MiB:8.1f} MiB ({r['relative_error']:.1%})"
            )
    everything = rows + depth_rows
    worst = max(everything, key=lambda r: r["relative_error"])
    results = {
        "setup": {**setup, "model": lm, "full_budget_bytes": int(budget)},
        "length": rows,
        "depth": depth_rows,
        "worst_relative_error": worst["relative_error"],
        "worst_point": {
            k: v for k, v in worst.items() if k in ("kind", "arch", "n_layers", "length")
        },
    }
    common.log(
        f"  worst relative error of the model: {worst['relative_error']:.1%} at "
        f"{results['worst_point']}"
    )
    common.write_results(args, "memory", results)
    common.save_figure(args, plot(results), "bench_memory")
    return results


if __name__ == "__main__":
    main()
