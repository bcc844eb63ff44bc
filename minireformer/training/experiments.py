"""The paper's experiments at laptop scale: what ``minireformer reproduce`` runs.

1. **Duplication** (paper section 2.1, Table 2): one-layer models trained with full attention and
   with LSH-1, LSH-2, LSH-4, each evaluated with full attention and LSH-1, 2, 4, 8 on 1,000 fresh
   sequences from a seed not used in training; the same trained weights are evaluated a second
   time with the released code's LSH semantics (``semantics="released"``). Two sizes: L = 128
   (minutes, for the notebooks and tests) and the paper's L = 1024 (hours).
2. **Shakespeare**: a Reformer LM trained on 2,048-character windows and a Transformer of the same
   size on 512-character windows, on the same number of characters; each evaluated on the whole
   validation split (overall and by position in the window) and sampled, with unigram and bigram
   baselines.
3. **Figure 3** (shared-QK and reversibility do not hurt): the same small model trained four
   ways with the same steps and seed.

Every run writes its checkpoint under ``runs/`` (resumable: a stopped ``reproduce`` continues), a
weights-only copy under ``checkpoints/`` (what the notebooks evaluate) and a ``results/*.json``.

Settings are module constants so that notebooks, tests and the README all name the same runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..reformer_config import ReformerConfig
from ..teaching import plotting
from ..transformer import TransformerConfig
from . import checkpoint, data, evaluation, lm, sampling, settings, train, words

ROOT = Path(__file__).resolve().parents[2]
RUNS, CHECKPOINTS, RESULTS = ROOT / "runs", ROOT / "checkpoints", ROOT / "results"

# ---- 1. duplication ------------------------------------------------------------------------

DUPLICATION = {  # run names and results file, and each size's settings
    "duplication": dict(  # L = 128: minutes of training, the size of the notebooks and tests
        figure="07_table2",
        data={"task": "duplication", "n_symbols": 63, "word_len": 63, "eval_seed": 2026},
        model=dict(vocab_size=64, d_model=128, n_heads=4, d_ff=256, n_layers=1, chunk_len=16),
        train=dict(
            batch_size=16, lr=1e-3, warmup=200, schedule="cosine", eval_every=100,
            checkpoint_every=100, seed=0,
        ),
        rows={  # attention, R, steps
            "full": ("full", 1, 600), "lsh1": ("lsh", 1, 1200), "lsh2": ("lsh", 2, 1200),
            "lsh4": ("lsh", 4, 1000),
        },
    ),
    "duplication1024": dict(  # the paper's size: |w| = 511, N = 127, L = 1024
        figure="07_table2_1024",
        data={"task": "duplication", "n_symbols": 127, "word_len": 511, "eval_seed": 2026},
        model=dict(vocab_size=128, d_model=128, n_heads=4, d_ff=256, n_layers=1, chunk_len=64),
        train=dict(
            batch_size=8, lr=1e-3, warmup=200, schedule="cosine", eval_every=250, eval_batches=1,
            checkpoint_every=50, seed=0, workers=2,
        ),
        rows={
            "full": ("full", 1, 3000), "lsh1": ("lsh", 1, 3000), "lsh2": ("lsh", 2, 3000),
            "lsh4": ("lsh", 4, 3000),
        },
    ),
}  # fmt: skip
DUPLICATION_COLUMNS = {
    "full": ("full", 1),
    "lsh1": ("lsh", 1),
    "lsh2": ("lsh", 2),
    "lsh4": ("lsh", 4),
    "lsh8": ("lsh", 8),
}
DUPLICATION_EVAL_SEQUENCES = 1000
# Table 2 of the paper (section 2.1; L = 1024, |w| = 511, N = 127, one layer with d_model = d_ff =
# 256 and 4 heads, 150K steps): accuracy %, rows trained with, columns evaluated with
PAPER_TABLE2 = {
    "full": {"full": 100.0, "lsh8": 94.8, "lsh4": 92.5, "lsh2": 76.9, "lsh1": 52.5},
    "lsh4": {"full": 0.8, "lsh8": 100.0, "lsh4": 99.9, "lsh2": 99.4, "lsh1": 91.9},
    "lsh2": {"full": 0.8, "lsh8": 100.0, "lsh4": 99.9, "lsh2": 98.1, "lsh1": 86.8},
    "lsh1": {"full": 0.8, "lsh8": 99.9, "lsh4": 99.6, "lsh2": 94.8, "lsh1": 77.9},
}


def duplication_config(
    attention: str, n_hashes: int, semantics: str = "paper", size: str = "duplication"
) -> ReformerConfig:
    """The one-layer duplication model of ``DUPLICATION[size]`` with the given attention."""
    setting = DUPLICATION[size]
    return ReformerConfig(
        **setting["model"],
        max_len=2 * setting["data"]["word_len"] + 1,  # the tokens a model reads
        attention_types=(attention,),
        n_hashes=n_hashes,
        semantics=semantics,
    )


def duplication_train_config(row: str, size: str = "duplication") -> settings.TrainConfig:
    setting = DUPLICATION[size]
    return settings.TrainConfig(steps=setting["rows"][row][2], **setting["train"])


# ---- 2. Shakespeare -------------------------------------------------------------------------

TEXT_DATA = {"task": "text", "path": data.DEFAULT_TEXT, "valid_fraction": 0.1}
SHAKESPEARE_REFORMER = dict(
    vocab_size=65,
    d_model=192,
    n_heads=4,
    d_ff=768,
    n_layers=4,
    chunk_len=64,
    n_hashes=2,
    attention_types=("local", "lsh"),
    positional="sinusoidal",
    max_len=2048,
)
# The same number of tokens for both models: 4,800 steps of 4,096 characters (19.7 million, about
# 20 passes over the training split), Adam 2e-3 with cosine decay, two data-parallel workers.
SHAKESPEARE_TRAIN = dict(
    steps=4800, lr=2e-3, warmup=200, schedule="cosine", eval_every=400, eval_batches=2,
    checkpoint_every=100, workers=2,
)  # fmt: skip
SHAKESPEARE_REFORMER_TRAIN = dict(**SHAKESPEARE_TRAIN, batch_size=2, seq_len=2048)
# the full-attention Transformer of the same size: the context is where its time runs out on two
# cores (at 2,048 one step costs 2.0x the Reformer's per token), not its memory
SHAKESPEARE_TRANSFORMER = dict(
    vocab_size=65, d_model=192, n_heads=4, d_head=48, d_ff=768, n_layers=4, max_len=512
)
SHAKESPEARE_TRANSFORMER_TRAIN = dict(**SHAKESPEARE_TRAIN, batch_size=8, seq_len=512)
# the samples of results/shakespeare.json: each model continues the validation split's first
# 1,024 characters for 300 more at temperature 0.8, three times
SAMPLES = {"prompt": 1024, "characters": 300, "temperature": 0.8, "seeds": (0, 1, 2)}

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
    params, config, *, n_sequences=DUPLICATION_EVAL_SEQUENCES, semantics: str = "paper",
    size: str = "duplication",
) -> dict:  # fmt: skip
    """Second-half accuracy (%) of one trained model under every column's attention, on
    ``n_sequences`` fresh sequences of ``DUPLICATION[size]`` (its evaluation seed)."""
    source = data.from_spec(DUPLICATION[size]["data"])
    batch = min(100, n_sequences)
    batches = source.eval_batches(batch, None, n_sequences // batch)
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


def reproduce_duplication(size: str = "duplication", progress=True) -> dict:
    """Train (or resume) every row of ``DUPLICATION[size]`` and evaluate each under every column,
    in both semantics. ``results/<size>.json`` is written after each row (a long experiment ships
    the rows it has finished) and the figure ``setting["figure"]`` at the end."""
    setting = DUPLICATION[size]
    source = data.from_spec(setting["data"])
    out = {
        "paper_semantics": {},
        "released_semantics": {},
        "paper": PAPER_TABLE2,
        "runs": {},
        **{key: setting[key] for key in ("model", "train", "data")},
        "eval_sequences": DUPLICATION_EVAL_SEQUENCES,
    }
    for row, (attention, n_hashes, _) in setting["rows"].items():
        res = run(
            f"{size}_{row}",
            duplication_config(attention, n_hashes, size=size),
            duplication_train_config(row, size),
            source,
            progress=progress,
        )
        if res.interrupted:
            raise KeyboardInterrupt
        for semantics in ("paper", "released"):
            out[f"{semantics}_semantics"][row] = evaluate_duplication(
                res.params, res.config, semantics=semantics, size=size
            )
        out["runs"][row] = {"steps": res.step, "seconds": round(res.seconds, 1)}
        _write(size, out)
    plt.close(save_table2_figures(out["paper_semantics"], out["released_semantics"],
                                  setting["figure"]))  # fmt: skip
    return out


def save_table2_figures(table: dict, released: dict, name: str = "07_table2"):
    """figures/<name>.png: the two Table 2 analogues (paper and released semantics)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, (semantics, t) in zip(axes, [("paper", table), ("released", released)]):
        plotting.accuracy_table(
            t,
            list(PAPER_TABLE2),
            list(DUPLICATION_COLUMNS),
            ax=ax,
            title=f"{semantics} LSH semantics (the paper's Table 2 in brackets)",
            reference=PAPER_TABLE2,
        )
    plotting.save_figure(fig, name)
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
    windows of ``window``, every character scored once, with the position bands, the mean bits at
    every position, and the same characters scored with and without half a window more context)."""
    ev = evaluation.evaluate_text(
        params, config, source.valid_ids, window=window, batch_size=max(1, 4096 // window)
    )
    return {
        "bpc": round(ev["bits"], 4),
        "characters": ev["targets"],
        "context": window,
        "stride": ev["stride"],
        "bands": {k: round(v, 4) for k, v in ev["bands"].items()},
        "position_bpc": ev["position_bits"].round(4).tolist(),
        "same_characters": {
            k: round(v, 4) if isinstance(v, float) else v for k, v in ev["same_characters"].items()
        },
    }


def eval_curve(log) -> dict:
    """{"step", "minutes", "valid_bpc": [...]} from a training log's evaluation rows."""
    ev = evaluation.eval_rows(log)
    return {
        "step": ev[:, 0].astype(int).tolist(),
        "minutes": (ev[:, 4] / 60).round(2).tolist(),
        "valid_bpc": (ev[:, 2] / evaluation.LN2).round(4).tolist(),
    }


def shakespeare_runs() -> dict:
    """{name: (model config, TrainConfig)} of the two Shakespeare models."""
    return {
        "shakespeare_reformer": (
            ReformerConfig(**SHAKESPEARE_REFORMER),
            settings.TrainConfig(**SHAKESPEARE_REFORMER_TRAIN),
        ),
        "shakespeare_transformer": (
            TransformerConfig(**SHAKESPEARE_TRANSFORMER),
            settings.TrainConfig(**SHAKESPEARE_TRANSFORMER_TRAIN),
        ),
    }


def model_label(name: str) -> str:
    """How tables and figures name a Shakespeare run: "Reformer" for "shakespeare_reformer"."""
    return name.split("_")[1].capitalize()


def shakespeare_samples(params, config, source) -> list:
    """``SAMPLES``: the model continues the validation split's first ``prompt`` characters at
    temperature 0.8, once per seed; each sample with its share of words from the training text."""
    vocabulary = set(words.words(source.decode(source.train_ids)))
    prompt = source.valid_ids[: SAMPLES["prompt"]]
    out = []
    for seed in SAMPLES["seeds"]:
        ids = sampling.generate(
            params, config, prompt, SAMPLES["characters"], rng=np.random.default_rng(seed),
            temperature=SAMPLES["temperature"],
        )  # fmt: skip
        sample = source.decode(ids[len(prompt) :])
        share = words.known_word_share(sample, vocabulary)
        out.append({"seed": seed, "text": sample, "known_words": round(share, 4)})
    return out


def shakespeare_numbers(params, config, source) -> dict:
    """What ``results/shakespeare.json`` holds of a trained model (besides its training): the
    whole-split evaluation at its full context and its samples."""
    return {
        **validation_bits(params, config, source, config.max_len),
        "samples": shakespeare_samples(params, config, source),
    }


def equal_time(models: dict) -> dict:
    """Each model's held-out estimate (its curve) at the last evaluation before the shorter of
    the two training times: the comparison at equal wall-clock time."""
    minutes = min(m["curve"]["minutes"][-1] for m in models.values())
    out = {"minutes": minutes}
    for name, m in models.items():
        c = m["curve"]
        k = max(i for i, t in enumerate(c["minutes"]) if t <= minutes + 1e-9)
        out[name] = {
            "step": c["step"][k],
            "minutes": c["minutes"][k],
            "valid_bpc": c["valid_bpc"][k],
        }
    return out


def reproduce_shakespeare_model(name: str, progress=True) -> dict:
    """Train (or resume) one of ``shakespeare_runs()`` and write its entry of
    ``results/shakespeare.json`` (with the n-gram floors; with both models, their comparison at
    equal time and figures/08_bits_by_position.png)."""
    source = data.from_spec(TEXT_DATA)
    config, tc = shakespeare_runs()[name]
    res = run(name, config, tc, source, progress=progress)
    if res.interrupted:
        raise KeyboardInterrupt
    path = RESULTS / "shakespeare.json"
    out = json.loads(path.read_text()) if path.is_file() else {}
    models = out.setdefault("models", {})
    models[name] = {
        **shakespeare_numbers(res.params, config, source),
        "steps": res.step,
        "tokens": res.step * tc.batch_size * tc.seq_len,
        "minutes": round(res.seconds / 60, 1),
        "curve": eval_curve(res.log),
        "model": lm.config_to_dict(config),
        "train": dataclasses.asdict(tc),
    }
    out["ngram"] = ngram_bits(source)
    if set(models) == set(shakespeare_runs()):
        out["equal_time"] = equal_time(models)
        plt.close(save_position_figure(models))
    return _write("shakespeare", out)


def save_position_figure(models: dict):
    """figures/08_bits_by_position.png: each model's bits per character against the position in
    its window (means over doubling ranges of positions, 1 to W - 1), whole validation split."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, m in models.items():
        bits = np.asarray(m["position_bpc"])
        edges = 2 ** np.arange(int(np.log2(len(bits))) + 1)  # 1, 2, 4, ..., W (position 0 left out)
        centres = [np.sqrt(lo * (hi - 1)) for lo, hi in zip(edges, edges[1:])]
        means = [bits[lo:hi].mean() for lo, hi in zip(edges, edges[1:])]
        label = f"{model_label(name)} (context {m['context']:,})"
        ax.semilogx(centres, means, marker="o", label=label)
    ax.set_xlabel("position in the window (characters of context before it)")
    ax.set_ylabel("bits per character")
    ax.set_title("what more context buys: the whole validation split", fontsize=10)
    plotting.label_log_axis(ax.xaxis)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    plotting.save_figure(fig, "08_bits_by_position")
    return fig


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
        entry.update(shakespeare_numbers(ck.params, ck.config, source))
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
    **{size: functools.partial(reproduce_duplication, size) for size in DUPLICATION},
    "shakespeare_reformer": functools.partial(reproduce_shakespeare_model, "shakespeare_reformer"),
    "shakespeare_transformer": functools.partial(
        reproduce_shakespeare_model, "shakespeare_transformer"
    ),
    "figure3": reproduce_figure3,
}
RESULT_FILES = {name: f"{name.split('_')[0]}.json" for name in EXPERIMENTS}  # what each writes
