"""The benchmark results as tables: the README's Performance section and notebook 09's.

The numbers in the README are never typed by hand: ``python -m minireformer.measuring.report``
reads the results in JSON (``benchmarks/results/*.json``, written by ``make bench``, ``make
bench-compare``, ``make bench-throughput`` and ``make bench-sampling``) and prints the tables to
paste. A results file that is missing is named in the output instead of its table. Notebook 09
shows the same tables by calling :func:`tables`.

Usage: ``python -m minireformer.measuring.report [--results-dir benchmarks/results]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"  # make bench's
MiB = 2**20

FILES = (
    "attention_speed",
    "flop_rate",
    "memory",
    "reformer_memory",
    "compare_hf",
    "throughput",
    "sampling",
)


def load(results_dir: Path) -> dict:
    """{name: parsed JSON, or None when the file is missing} for every results file."""
    out = {}
    for name in FILES:
        path = Path(results_dir) / f"{name}.json"
        out[name] = json.loads(path.read_text()) if path.exists() else None
    return out


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of ``rows`` (lists of cell strings) under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _seconds(timing: dict) -> str:
    return f"{timing['median_s']:.1f} s ({timing['min_s']:.1f} to {timing['max_s']:.1f})"


def speed(results: dict) -> str:
    """Figure 5's numbers: microseconds per token against L, per-token growth, crossover."""
    lsh = results["lsh"]
    full = {r["length"]: r for r in results["full"]}
    lengths = sorted({r["length"] for rows in lsh.values() for r in rows} | set(full))
    by_round = {k: {r["length"]: r for r in rows} for k, rows in lsh.items()}

    def cell(rows, length):
        return f"{rows[length]['us_per_token']:.1f}" if length in rows else "-"

    header = ["L", "full attention", *[f"LSH, {k} round{'s' * (k != '1')}" for k in lsh]]
    rows = [[f"{n:,}", cell(full, n), *[cell(by_round[k], n) for k in lsh]] for n in lengths]
    rows.append(["per-token growth", "", *[f"{results['lsh_growth'][k]:.2f}x" for k in lsh]])
    cross = results["crossover"]
    rows.append(
        [
            "crossover L",
            "",
            *[
                "none"
                if cross[k]["length"] is None
                else f"{cross[k]['length']:,.0f}"
                + (" (extrapolated)" if cross[k]["extrapolated"] else "")
                for k in lsh
            ],
        ]
    )
    s = results["setup"]
    title = (
        f"Attention forward + backward, microseconds per token ({s['tokens']:,} tokens a call, "
        f"H = {s['n_heads']}, Dh = {s['d_head']}, C = {s['chunk_len']}, causal, float32; "
        f"median of the repeats):"
    )
    notes = (
        "\n\nCrossover: where straight lines fitted to per-token time against L meet; "
        "extrapolated: outside the lengths full attention was measured at; none: the lines do "
        "not meet at a positive L (LSH attention was faster at every length measured)."
    )
    return title + "\n\n" + markdown_table(header, rows) + notes


def flop_rate(results: dict) -> str:
    """LSH attention's achieved GFLOP/s beside the two matmul rates of the same run."""
    s = results["setup"]
    rows = [
        [
            f"LSH attention fwd + bwd, L = {s['length']:,}, R = {s['n_hashes']}",
            f"{results['lsh']['flops']['total'] / 1e9:.1f}",
            f"{results['lsh']['gflops']:.2f}",
            "",
        ],
        [
            f"batched matmul {results['batched']['shape']}",
            f"{results['batched']['flops'] / 1e9:.1f}",
            f"{results['batched']['gflops']:.2f}",
            f"{results['fraction_of_batched']:.1%}",
        ],
        [
            f"square matmul {results['square']['shape']}",
            f"{results['square']['flops'] / 1e9:.1f}",
            f"{results['square']['gflops']:.2f}",
            f"{results['fraction_of_square']:.1%}",
        ],
    ]
    return markdown_table(["what", "GFLOP", "GFLOP/s", "LSH's fraction of it"], rows)


def memory(results: dict) -> str:
    """Measured peaks beside the exact model, with the worst relative error over the grid."""
    rows = [
        [
            f"{r['kind']} attention, forward + backward",
            f"{r['length']:,}",
            "1",
            f"{r['measured_bytes'] / MiB:,.1f}",
            f"{r['model_bytes'] / MiB:,.1f}",
            f"{r['relative_error']:.1%}",
        ]
        for r in results["length"]
    ] + [
        [
            f"{r['arch'].replace('_', ' ')} LM step",
            f"{r['length']:,}",
            str(r["n_layers"]),
            f"{r['measured_bytes'] / MiB:,.1f}",
            f"{r['model_bytes'] / MiB:,.1f}",
            f"{r['relative_error']:.1%}",
        ]
        for r in results["depth"]
    ]
    table = markdown_table(["what", "L", "layers", "measured MiB", "model MiB", "error"], rows)
    return table + f"\n\nWorst relative error of the model: {results['worst_relative_error']:.1%}."


def lm_step(results: dict) -> str:
    """The LM training step: time and peak at each L."""
    rows = [
        [
            f"{r['length']:,}",
            _seconds(r["time"]) if "time" in r else r.get("skipped", r.get("error", "-")),
            f"{r['peak_bytes'] / MiB:,.0f}" if "peak_bytes" in r else "-",
            f"{r['table3_bytes'] / MiB:,.0f}",
        ]
        for r in results["reformer"]
        if r["length"] in (*results["setup"]["ladder"], results["target_len"])
    ]
    return markdown_table(["L", "time: median (min to max)", "peak MiB", "Table 3 MiB"], rows)


def huggingface(results: dict) -> str:
    """minireformer against Hugging Face, same run: times, peaks and ratios."""
    rows = [
        [
            f"{r['length']:,}",
            "training step" if r["what"] == "step" else "LSH attention layer",
            r["system"],
            f"{r['median_s']:.2f} s ({r['min_s']:.2f} to {r['max_s']:.2f})",
            f"{r['peak_growth_bytes'] / MiB:,.0f}" if r.get("peak_growth_bytes") else "-",
        ]
        for r in sorted(results["rows"], key=lambda r: (r["length"], r["what"], r["system"]))
        if "error" not in r
    ]
    ratios = [
        [
            f"{e['length']:,}",
            e["what"],
            e["semantics"],
            f"{e['time_ratio_median']:.2f}",
            f"{e['memory_ratio']:.2f}" if "memory_ratio" in e else "-",
        ]
        for e in results["ratios"]
    ]
    m = results["machine"]
    title = (
        f"Measured {m.get('date', '(no date)')} with {m['threads']} threads, minireformer at "
        f"commit {m.get('minireformer_commit')} (times: median, min to max):\n\n"
    )
    return (
        title
        + markdown_table(["L", "what", "system", "time", "peak growth MiB"], rows)
        + "\n\nRatios minireformer / Hugging Face:\n\n"
        + markdown_table(["L", "what", "semantics", "time", "memory"], ratios)
    )


SHAPE_NAMES = {
    "transformer": "Shakespeare Transformer, batch 12 x 64",
    "reformer": "Shakespeare Reformer, batch {batch} x {length:,}",
    "duplication": "duplication model (LSH-2), batch {batch} x {length:,}",
}


def throughput(results: dict) -> str:
    """Training throughput beside PyTorch: tokens/s of a full optimizer step, ratio, spread."""
    setup = {r["shape"]: r for r in results["rows"] if r.get("system") == "minireformer"}
    rows = []
    for e in results["summary"]:
        mine = setup.get(e["shape"], {})
        name = SHAPE_NAMES[e["shape"]].format(batch=mine.get("batch"), length=mine.get("length", 0))
        lo, hi = e["minireformer_range"]
        workers = mine.get("workers", 1)
        how = f"{workers} workers" if workers > 1 else "1 worker"
        cells = [name, f"{e['minireformer_tokens_per_s']:,.0f} ({lo:,.0f} to {hi:,.0f}), {how}"]
        if "ratio" in e:
            plo, phi = e["peer_range"]
            rlo, rhi = e["ratio_range"]
            cells += [
                f"{e['peer']}: {e['peer_tokens_per_s']:,.0f} ({plo:,.0f} to {phi:,.0f})",
                f"{e['ratio']:.2f} ({rlo:.2f} to {rhi:.2f})",
            ]
        else:
            cells += ["not run (no `compare` extra)", "-"]
        rows.append(cells)
    s = results["setup"]
    before, after = results["load_before"][0], results["load_after"][0]
    title = (
        f"{s['threads']} threads per system, {s['repeats']} interleaved repeats of {s['steps']} "
        f"timed steps (median of medians, range over repeats; minireformer's workers are threads "
        f"of data parallelism, one BLAS thread each); load average {before:.2f} before, "
        f"{after:.2f} after:\n\n"
    )
    return title + markdown_table(
        ["model", "minireformer tokens/s", "peer tokens/s", "ratio"], rows
    )


def _rate_cell(summary: dict, system: str) -> str:
    """One system's characters per second in a sampling summary row ('-' where it did not run)."""
    key = f"{system}_chars_per_s"
    return f"{summary[key]:,.1f}" if key in summary else "-"


def sampling(results: dict) -> str:
    """Characters per second at a full context: uncached, cached, Hugging Face's cached."""
    rows = []
    for e in results["summary"]:
        new = {r["system"]: r for r in results["rows"] if r["shape"] == e["shape"]}
        context = next(iter(new.values())).get("context", "?")

        rows.append([
            f"Shakespeare {e['shape']}, context {context:,}",
            _rate_cell(e, "uncached"),
            _rate_cell(e, "minireformer"),
            f"{e['cache_speedup']:.0f}x" if "cache_speedup" in e else "-",
            _rate_cell(e, "huggingface"),
            f"{e['ratio_to_huggingface']:.2f}" if "ratio_to_huggingface" in e else "-",
        ])  # fmt: skip
    s = results["setup"]
    before, after = results["load_before"][0], results["load_after"][0]
    title = (
        f"Greedy characters per second, the prompt's reading included; {s['threads']} threads per "
        f"system, median of {s['repeats']} calls; load average {before:.2f} before, "
        f"{after:.2f} after:\n\n"
    )
    header = ["model", "no cache", "cache", "speed-up", "Hugging Face, cache", "ratio"]
    return title + markdown_table(header, rows)


SECTIONS = {
    "attention_speed": speed,
    "flop_rate": flop_rate,
    "memory": memory,
    "reformer_memory": lm_step,
    "compare_hf": huggingface,
    "throughput": throughput,
    "sampling": sampling,
}


def tables(results_dir: Path = RESULTS) -> dict:
    """{name: Markdown table, or a sentence naming the missing file} for every results file."""
    out = {}
    for name, data in load(results_dir).items():
        if data is None:
            out[name] = f"`benchmarks/results/{name}.json` is missing: no table."
        else:
            out[name] = SECTIONS[name](data)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    print("\n\n".join(tables(args.results_dir).values()))


if __name__ == "__main__":
    main()
