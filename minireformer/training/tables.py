"""The trained models' results as the README's tables, printed from ``results/*.json``.

The README's numbers for the shipped models are never typed by hand: ``minireformer reproduce``
(or ``--evaluate-only``) writes ``results/*.json``, and ``python -m minireformer.training.tables``
prints the Markdown tables to paste. ``tests/test_readme.py`` fails when a table in the README
is not what this prints, so the two cannot drift apart.

Usage: ``python -m minireformer.training.tables [--results-dir results]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import experiments

NAMES = {
    "full": "full",
    "lsh1": "LSH-1",
    "lsh2": "LSH-2",
    "lsh4": "LSH-4",
    "lsh8": "LSH-8",
}
FIGURE3_NAMES = {
    "separate_qk": "Transformer, separate Q and K",
    "shared_qk": "Transformer, shared QK",
    "reversible_shared_qk": "reversible, shared QK (full attention)",
    "reformer_lsh": "Reformer (LSH-2, reversible)",
}


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def shakespeare(r: dict) -> str:
    """Both models and the floors: whole-split bits per character, bands, samples, training."""
    lines = [
        _row(
            [
                "model",
                "context",
                "bits per character",
                "positions 64-255",
                "positions 1,024-2,047",
                "known words in samples",
                "training",
            ]
        ),  # fmt: skip
        _row(["---", "---:", "---:", "---:", "---:", "---:", "---:"]),
        _row(
            ["unigram (training split)", 0, f"{r['ngram']['unigram']:.3f}", "", "", "", "counting"]
        ),
        _row(["bigram", 1, f"{r['ngram']['bigram']:.3f}", "", "", "", "counting"]),
    ]
    for name in ("shakespeare_transformer", "shakespeare_reformer"):
        if name not in r.get("models", {}):
            continue
        m = r["models"][name]
        known = [s["known_words"] for s in m["samples"]]
        lines.append(
            _row(
                [
                    experiments.model_label(name),
                    f"{m['context']:,}",
                    f"**{m['bpc']:.3f}**",
                    f"{m['bands']['64-255']:.3f}",
                    f"{m['bands'].get('1024-2047', float('nan')):.3f}",
                    f"{100 * min(known):.0f}-{100 * max(known):.0f}%",
                    f"{m['steps']:,} steps, {m['tokens'] / 1e6:.1f}M characters, "
                    f"{m['minutes']} min",
                ]
            )  # fmt: skip
        )
    return "\n".join(lines).replace("| nan |", "| - |")


def equal_time(r: dict) -> str:
    """One sentence: both models' held-out estimates at equal training time."""
    same = r["equal_time"]
    parts = [
        f"{experiments.model_label(name)} {p['valid_bpc']:.3f} (step {p['step']:,})"
        for name, p in same.items()
        if name != "minutes"
    ]
    return (
        f"At equal training time ({same['minutes']:.1f} minutes), the trainer's held-out "
        f"estimates (the first 8,192 validation characters): {', '.join(parts)}."
    )


def same_characters(r: dict) -> str:
    """One sentence per model: the same characters scored with and without half a window more
    context (``evaluation.evaluate_text``'s "same_characters")."""
    lines = []
    for name, m in r["models"].items():
        same = m.get("same_characters")
        if same:
            lines.append(
                f"{experiments.model_label(name)}: the same {same['targets']:,} characters "
                f"score {same['short_bits']:.4f} bits with {same['short_context']} characters of "
                f"context and {same['long_bits']:.4f} with {same['long_context']}."
            )
    return "\n".join(lines)


def figure3(r: dict) -> str:
    """The four Figure 3 variants: whole-split bits per character and training minutes."""
    lines = [
        _row(["variant", "validation bits per character", "training"]),
        _row(["---", "---:", "---:"]),
    ]
    for name, label in FIGURE3_NAMES.items():
        c = r["curves"][name]
        lines.append(_row([label, f"{c['final']['bpc']:.3f}", f"{c['minutes']} min"]))
    return "\n".join(lines)


def table2(r: dict, rows, semantics: str = "paper_semantics") -> str:
    """Table 2: ours (the paper's in brackets), rows trained, columns evaluated; a row whose
    model is not trained yet says so."""
    columns = list(experiments.DUPLICATION_COLUMNS)
    lines = [
        _row(["trained with \\ evaluated with", *(NAMES[c] for c in columns), "training"]),
        _row(["---", *("---:" for _ in columns), "---:"]),
    ]
    for row in rows:
        paper = experiments.PAPER_TABLE2[row]
        if row not in r[semantics]:
            cells = [f"- ({paper[c]:g})" for c in columns]
            lines.append(_row([NAMES[row], *cells, "not trained yet"]))
            continue
        run = r["runs"][row]
        cells = [f"{r[semantics][row][c]:.1f} ({paper[c]:g})" for c in columns]
        training = f"{run['steps']:,} steps, {run['seconds'] / 60:.1f} min"
        lines.append(_row([NAMES[row], *cells, training]))
    return "\n".join(lines)


def tables(results_dir: Path = experiments.RESULTS) -> dict:
    """{name: Markdown text} for every results file present."""
    results_dir = Path(results_dir)

    def read(name):
        path = results_dir / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    out = {}
    if (r := read("shakespeare")) and r.get("models"):
        out["shakespeare"] = shakespeare(r)
        if "equal_time" in r:
            out["shakespeare_equal_time"] = equal_time(r)
        if text := same_characters(r):
            out["shakespeare_same_characters"] = text
    if r := read("figure3"):
        out["figure3"] = figure3(r)
    for size, setting in experiments.DUPLICATION.items():
        if r := read(size):
            out[size] = table2(r, setting["rows"])
            out[f"{size}_released"] = table2(r, setting["rows"], "released_semantics")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default=str(experiments.RESULTS))
    args = parser.parse_args(argv)
    for name, text in tables(Path(args.results_dir)).items():
        print(f"<!-- {name} -->\n{text}\n")


if __name__ == "__main__":
    main()
