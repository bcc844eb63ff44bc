"""The paper's experiments at laptop scale: what ``minireformer reproduce`` runs.

1. **Duplication** (paper section 5, Table 2): one-layer models trained with full attention and
   with LSH-1, LSH-2, LSH-4, each evaluated with full attention and LSH-1, 2, 4, 8 on 1,000 fresh
   sequences from a seed not used in training; the same trained weights are evaluated a second
   time with the released code's LSH semantics (``semantics="released"``).
2. **Shakespeare**: a Reformer LM on 2,048-character contexts (short contexts first: a
   curriculum) and the same-size Transformer, with unigram and bigram baselines.
3. **Figure 3** (shared-QK and reversibility do not hurt): the same small model trained four
   ways with the same steps and seed.

Every run writes its checkpoint under ``runs/`` (resumable: a stopped ``reproduce`` continues), a
weights-only copy under ``checkpoints/`` (what the notebooks evaluate) and a ``results/*.json``.

Settings are module constants so that notebooks, tests and the README all name the same runs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..reformer_config import ReformerConfig
from ..teaching import plotting
from ..transformer import TransformerConfig
from . import checkpoint, data, evaluation, lm, settings, train

ROOT = Path(__file__).resolve().parents[2]
RUNS, CHECKPOINTS, RESULTS = ROOT / "runs", ROOT / "checkpoints", ROOT / "results"

# ---- 1. duplication ------------------------------------------------------------------------

DUPLICATION_DATA = {"task": "duplication", "n_symbols": 63, "word_len": 63, "eval_seed": 2026}
DUPLICATION_LENGTH = 2 * DUPLICATION_DATA["word_len"] + 1  # the tokens a model reads
DUPLICATION_MODEL = dict(
    vocab_size=64,
    d_model=128,
    n_heads=4,
    d_ff=256,
    n_layers=1,
    chunk_len=16,
    max_len=DUPLICATION_LENGTH,
)
DUPLICATION_TRAIN = dict(
    batch_size=16,
    lr=1e-3,
    warmup=200,
    schedule="cosine",
    eval_every=100,
    checkpoint_every=100,
    seed=0,
)
DUPLICATION_ROWS = {
    "full": ("full", 1, 600),
    "lsh1": ("lsh", 1, 1200),
    "lsh2": ("lsh", 2, 1200),
    "lsh4": ("lsh", 4, 1000),
}  # attention, R, steps
DUPLICATION_COLUMNS = {
    "full": ("full", 1),
    "lsh1": ("lsh", 1),
    "lsh2": ("lsh", 2),
    "lsh4": ("lsh", 4),
    "lsh8": ("lsh", 8),
}
DUPLICATION_EVAL_SEQUENCES = 1000
# Table 2 of the paper (L = 1024, accuracy %, rows trained, columns evaluated): the cells quoted
# quoted from the paper so far; the rest are left out (None) rather than quoted from memory.
PAPER_TABLE2 = {
    "full": {"full": 100.0, "lsh8": 94.8, "lsh4": None, "lsh2": None, "lsh1": 52.5},
    "lsh4": {"full": 0.8, "lsh8": 100.0, "lsh4": None, "lsh2": None, "lsh1": 91.9},
    "lsh2": {"full": 0.8, "lsh8": None, "lsh4": None, "lsh2": None, "lsh1": None},
    "lsh1": {"full": 0.8, "lsh8": None, "lsh4": None, "lsh2": None, "lsh1": None},
}


def duplication_config(attention: str, n_hashes: int, semantics: str = "paper") -> ReformerConfig:
    return ReformerConfig(
        **DUPLICATION_MODEL,
        attention_types=(attention,),
        n_hashes=n_hashes,
        semantics=semantics,
    )


def duplication_train_config(row: str) -> settings.TrainConfig:
    return settings.TrainConfig(steps=DUPLICATION_ROWS[row][2], **DUPLICATION_TRAIN)


# ---- 2. Shakespeare -------------------------------------------------------------------------

TEXT_DATA = {"task": "text", "path": data.DEFAULT_TEXT, "valid_fraction": 0.1}
SHAKESPEARE_REFORMER = dict(
    vocab_size=65,
    d_model=128,
    n_heads=4,
    d_ff=512,
    n_layers=4,
    chunk_len=64,
    n_hashes=2,
    attention_types=("local", "lsh"),
    positional="sinusoidal",
    max_len=2048,
)
# the ablation, the first attempt: learned axial positions (64 x 32), no random offsets, a short
# stage of 4 windows of 128 at Adam 2e-3
SHAKESPEARE_ABLATION = {**SHAKESPEARE_REFORMER, "positional": "axial", "axial_shape": (64, 32)}
SHAKESPEARE_ABLATION_TRAIN = dict(
    stages=[[1600, 128, 4], [300, 2048, 1]], lr=2e-3, warmup=100, schedule="cosine",
    eval_every=100, eval_batches=2, eval_batch_size=1, eval_seq_len=2048, checkpoint_every=50,
)  # fmt: skip
SHAKESPEARE_REFORMER_TRAIN = dict(
    stages=[[3000, 64, 12], [300, 2048, 1]],  # the Transformer's recipe, then long contexts
    random_offset=True,
    lr=1e-3,
    warmup=100,
    schedule="cosine",
    eval_every=100,
    eval_batches=2,
    eval_batch_size=1,
    eval_seq_len=2048,
    checkpoint_every=50,
)
SHAKESPEARE_TRANSFORMER = dict(
    vocab_size=65, d_model=128, n_heads=4, d_head=32, d_ff=512, n_layers=4, max_len=64
)
SHAKESPEARE_TRANSFORMER_TRAIN = dict(  # a calibration run: 12 windows of 64, Adam 1e-3
    steps=1800, batch_size=12, seq_len=64, lr=1e-3, warmup=100, schedule="cosine",
    eval_every=300, eval_batches=4, checkpoint_every=100,
)  # fmt: skip

# ---- 3. Figure 3 -----------------------------------------------------------------------------

FIGURE3_COMMON = dict(vocab_size=65, d_model=128, n_heads=4, d_ff=256, n_layers=2, max_len=256)
FIGURE3_TRAIN = dict(
    steps=1500,
    batch_size=4,
    seq_len=256,
    lr=2e-3,
    warmup=100,
    schedule="cosine",
    eval_every=100,
    eval_batches=8,
    checkpoint_every=100,
)


def figure3_configs() -> dict:
    """The four variants of the paper's Figure 3, same width, depth and data."""
    c = FIGURE3_COMMON
    d_head = c["d_model"] // c["n_heads"]
    return {
        "separate_qk": TransformerConfig(**c, d_head=d_head),
        "shared_qk": TransformerConfig(**c, d_head=d_head, shared_qk=True),
        "reversible_shared_qk": ReformerConfig(**c, attention_types=("full",)),
        "reformer_lsh": ReformerConfig(**c, attention_types=("lsh",), n_hashes=2, chunk_len=32),
    }


# ---- running ---------------------------------------------------------------------------------


def run(
    name: str, config, tc: settings.TrainConfig, source, *, progress=True, ship=True
) -> train.TrainResult:
    """Train (or resume, or find finished) ``runs/<name>.npz``; with ``ship``, copy its weights
    and log (no optimizer state) to ``checkpoints/<name>.npz``."""
    result = train.train(
        config,
        tc,
        source,
        out=RUNS / f"{name}.npz",
        resume=True,
        progress=progress,
        description=name,
    )
    if ship and not result.interrupted:
        ck = checkpoint.load(RUNS / f"{name}.npz")
        checkpoint.save(
            CHECKPOINTS / f"{name}.npz",
            params=ck.params,
            config=ck.config,
            step=ck.step,
            train=ck.train,
            data=ck.data,
            log=ck.log,
            extra=ck.extra,
        )
    return result


def evaluate_duplication(
    params, config, *, n_sequences=DUPLICATION_EVAL_SEQUENCES, semantics: str = "paper"
) -> dict:
    """Second-half accuracy (%) of one trained model under every column's attention."""
    source = data.from_spec(DUPLICATION_DATA)
    batches = source.eval_batches(100, None, n_sequences // 100)
    scores = {}
    for col, (attention, n_hashes) in DUPLICATION_COLUMNS.items():
        cfg = dataclasses.replace(
            config,
            attention_types=(attention,),
            n_hashes=n_hashes,
            semantics=semantics,
        )
        scores[col] = round(100 * evaluation.evaluate(params, cfg, batches, seed=7)["accuracy"], 1)
    return scores


def reproduce_duplication(progress=True) -> dict:
    source = data.from_spec(DUPLICATION_DATA)
    table, released, runs = {}, {}, {}
    for row, (attention, n_hashes, _) in DUPLICATION_ROWS.items():
        res = run(
            f"duplication_{row}",
            duplication_config(attention, n_hashes),
            duplication_train_config(row),
            source,
            progress=progress,
        )
        if res.interrupted:
            raise KeyboardInterrupt
        table[row] = evaluate_duplication(res.params, res.config)
        released[row] = evaluate_duplication(res.params, res.config, semantics="released")
        runs[row] = {"steps": res.step, "seconds": round(res.seconds, 1)}
    plt.close(save_table2_figures(table, released))
    out = {
        "paper_semantics": table,
        "released_semantics": released,
        "paper": PAPER_TABLE2,
        "runs": runs,
        "model": DUPLICATION_MODEL,
        "train": DUPLICATION_TRAIN,
        "data": DUPLICATION_DATA,
        "eval_sequences": DUPLICATION_EVAL_SEQUENCES,
    }
    return _write("duplication", out)


def save_table2_figures(table: dict, released: dict):
    """figures/07_table2.png: the two Table 2 analogues (paper and released semantics)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, (name, t) in zip(axes, [("paper", table), ("released", released)]):
        plotting.accuracy_table(
            t,
            list(t),
            list(DUPLICATION_COLUMNS),
            ax=ax,
            title=f"duplication accuracy, {name} LSH semantics",
        )
    plotting.save_figure(fig, "07_table2")
    return fig


def save_figure3(curves: dict):
    """figures/08_figure3.png: validation bits per character of the four Figure 3 variants."""
    fig = plotting.validation_curves(
        {n: (c["step"], c["valid_bpc"]) for n, c in curves.items()},
        ylabel="validation bits per character",
        title="Figure 3 at small scale (tiny Shakespeare)",
    )
    plotting.save_figure(fig, "08_figure3")
    return fig


def ngram_bits(source: data.CharText) -> dict:
    """Validation bits per character of add-one-smoothed unigram and bigram models of the
    training split (the floor any model should beat)."""
    tr, va, v = source.train_ids, source.valid_ids, source.vocab_size
    uni = (np.bincount(tr, minlength=v) + 1.0) / (len(tr) + v)
    pairs = np.zeros((v, v))
    np.add.at(pairs, (tr[:-1], tr[1:]), 1.0)
    bi = (pairs + 1.0) / (pairs.sum(axis=1, keepdims=True) + v)
    return {
        "unigram": float(-np.mean(np.log2(uni[va[1:]]))),
        "bigram": float(-np.mean(np.log2(bi[va[:-1], va[1:]]))),
    }


def validation_bits(params, config, source, window: int) -> dict:
    """Bits per character on the whole validation split (``evaluation.evaluate_text``: strided
    windows of ``window``, every character scored once, with the position bands)."""
    ev = evaluation.evaluate_text(
        params, config, source.valid_ids, window=window, batch_size=max(1, 4096 // window)
    )
    return {
        "bpc": round(ev["bits"], 4),
        "characters": ev["targets"],
        "context": window,
        "stride": ev["stride"],
        "bands": {k: round(v, 4) for k, v in ev["bands"].items()},
    }


def eval_curve(log) -> dict:
    """{"step": [...], "valid_bpc": [...]} from a training log's evaluation rows."""
    ev = evaluation.eval_rows(log)
    bpc = (ev[:, 2] / evaluation.LN2).round(4)
    return {"step": ev[:, 0].astype(int).tolist(), "valid_bpc": bpc.tolist()}


def reproduce_shakespeare(progress=True) -> dict:
    """Both models, their validation bits per character on the whole validation split, the
    n-gram floors, and the ablation: the Reformer with learned axial positions and no random
    offsets (its curve only; its weights are not shipped)."""
    source = data.from_spec(TEXT_DATA)
    out = {"ngram": ngram_bits(source), "models": {}}
    runs = {
        "shakespeare_reformer": (
            ReformerConfig(**SHAKESPEARE_REFORMER),
            settings.TrainConfig(**SHAKESPEARE_REFORMER_TRAIN),
            2048,
        ),
        "shakespeare_transformer": (
            TransformerConfig(**SHAKESPEARE_TRANSFORMER),
            settings.TrainConfig(**SHAKESPEARE_TRANSFORMER_TRAIN),
            64,
        ),
    }
    for name, (config, tc, length) in runs.items():
        res = run(name, config, tc, source, progress=progress)
        if res.interrupted:
            raise KeyboardInterrupt
        out["models"][name] = {
            **validation_bits(res.params, config, source, length),
            "steps": res.step,
            "minutes": round(res.seconds / 60, 1),
            "curve": eval_curve(res.log),
            "model": lm.config_to_dict(config),
            "train": dataclasses.asdict(tc),
        }
    tc = settings.TrainConfig(**SHAKESPEARE_ABLATION_TRAIN)
    ablation = ReformerConfig(**{**SHAKESPEARE_ABLATION, "max_len": None})
    res = run("shakespeare_reformer_axial_no_offset", ablation, tc, source, progress=progress,
              ship=False)  # fmt: skip
    if res.interrupted:
        raise KeyboardInterrupt
    out["ablation_axial_no_offset"] = {
        "curve": eval_curve(res.log),
        "minutes": round(res.seconds / 60, 1),
        "model": lm.config_to_dict(ablation),
    }
    return _write("shakespeare", out)


def reproduce_figure3(progress=True) -> dict:
    source = data.from_spec(TEXT_DATA)
    tc = settings.TrainConfig(**FIGURE3_TRAIN)
    curves = {}
    for name, config in figure3_configs().items():
        res = run(f"figure3_{name}", config, tc, source, progress=progress)
        if res.interrupted:
            raise KeyboardInterrupt
        curves[name] = {
            **eval_curve(res.log),
            "minutes": round(res.seconds / 60, 1),
            "final": validation_bits(res.params, config, source, FIGURE3_TRAIN["seq_len"]),
        }
    plt.close(save_figure3(curves))
    return _write("figure3", {"curves": curves, "train": FIGURE3_TRAIN, "model": FIGURE3_COMMON})


def evaluate_shipped(progress=True) -> dict:
    """The whole-split numbers of ``results/shakespeare.json`` and ``results/figure3.json``
    computed again from the shipped checkpoints, without training (seconds to a minute each);
    the training fields of the results are kept."""
    source = data.from_spec(TEXT_DATA)
    shakespeare = json.loads((RESULTS / "shakespeare.json").read_text())
    for name, entry in shakespeare["models"].items():
        ck = checkpoint.load(CHECKPOINTS / f"{name}.npz")
        entry.update(validation_bits(ck.params, ck.config, source, entry["context"]))
        if progress:
            print(f"{name}: {entry['bpc']} bits per character, bands {entry['bands']}")
    _write("shakespeare", shakespeare)
    figure3 = json.loads((RESULTS / "figure3.json").read_text())
    for name, curve in figure3["curves"].items():
        ck = checkpoint.load(CHECKPOINTS / f"figure3_{name}.npz")
        curve["final"] = validation_bits(ck.params, ck.config, source, figure3["train"]["seq_len"])
        if progress:
            print(f"figure3_{name}: {curve['final']['bpc']} bits per character")
    _write("figure3", figure3)
    return {"shakespeare": shakespeare, "figure3": figure3}


def _write(name: str, obj: dict) -> dict:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    return obj


EXPERIMENTS = {
    "duplication": reproduce_duplication,
    "shakespeare": reproduce_shakespeare,
    "figure3": reproduce_figure3,
}
