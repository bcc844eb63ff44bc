"""Side by side with Hugging Face's PyTorch Reformer: time and memory of the same model, same run.

What is measured, for each sequence length L and each system:

- ``attention``: one LSH self-attention sub-layer (layer norm, the shared-QK and value projections,
  LSH attention, the output projection) forward and backward, with the gradient of its input and
  of its parameters, on random (1, L, D) inputs. Each call draws new random rotations and hashes,
  in both systems.
- ``step``: one language-model training step: the next-token loss of a random (1, L) token sequence
  and the gradients of every parameter. No optimizer update is made in either system (it is the
  same few element-wise operations over the parameters in both and does not depend on L).

The model is the suite's LM (``common.LM_SETUPS``): 6 reversible LSH layers, d_model 256, 4 heads
of 64, d_ff 1024, 4 hash rounds, chunk 64 with one chunk of look-back, causal, vocab 256, axial
positions (L1, L2) with L1 * L2 = L (Hugging Face trains only on L = L1 * L2), feed-forward and
loss in chunks of 2,048 positions, K = 2 L / C buckets (minireformer's default, given to both; as
two factors where the library factorises it), no dropout, float32, batch 1. What could not be
made the same is listed in :data:`DIFFERENCES`.

The systems are ``minireformer-paper`` (the paper's semantics: keys of other buckets masked, the
log N_ij correction for keys attended in several rounds), ``minireformer-released`` (the released
trax code's semantics, ``semantics="released"``) and
``huggingface`` (``transformers.ReformerModelWithLMHead``, whose LSH attention has the released
semantics: no bucket mask, no duplicate correction). Ratios minireformer / Hugging Face are
reported for both semantics.

How (one rule for every system):

- Every (system, what, L) runs in a fresh Python process, with ``--threads`` (default 2) threads:
  OMP / OpenBLAS / MKL thread variables set for the process and ``torch.set_num_threads``.
- Time: one warm-up call, then ``--repeats`` timed calls (wall clock); median, min and max.
- Memory: the peak resident-set growth of the process: its resident set (``VmRSS``) is read after
  the imports, the model's construction and the inputs' creation (the *baseline*: parameters,
  inputs and libraries are in it), then the kernel's peak (``VmHWM``) is reset to it through
  ``/proc/self/clear_refs``; the number reported is ``VmHWM - baseline`` at the end of the warm-up
  and timed calls: everything the calls touch (activations, temporaries, gradients, allocator
  caches).

Results go to ``benchmarks/results/compare_hf.json`` (written after every measurement, so that a
long run continues with ``--resume``) and ``figures/bench_compare_hf.png``. Before timing, a
cross-check copies one Hugging Face model's weights into minireformer and compares loss and
gradients on one L = 256 sequence under the released semantics, in float64 (Hugging Face computes
its loss from float32 logits, so agreement is to about 1e-7; ``--no-cross-check`` skips it).

Hugging Face's side needs the ``compare`` extra (``make bench-compare`` makes ``.venv-compare``);
without torch, ``--systems minireformer-paper,minireformer-released`` still runs.

Usage: ``python -m benchmarks.compare_hf [--quick] [--lengths 4096,16384] [--repeats 3] [--resume]``
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import json
import math
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np

from benchmarks import common
from minireformer import lsh
from minireformer.measuring import timing

ROOT = Path(__file__).resolve().parents[1]
MiB = common.MiB

SYSTEMS = ("minireformer-paper", "minireformer-released", "huggingface")
WHATS = ("attention", "step")
SEMANTICS = ("paper", "released")  # minireformer's LSH semantics (see lsh_attention.py)


def _setup(name: str, lengths: tuple) -> dict:
    """The suite's LM setup (``common.LM_SETUPS``); the axial shape is chosen per L here."""
    setup = {k: v for k, v in common.LM_SETUPS[name].items() if k != "axial_shape"}
    return dict(setup, lengths=lengths)


# What differs between the two systems although both are configured alike (saved in the JSON).
DIFFERENCES = [
    "Feed-forward chunks: both compute the forward pass in chunks of ff_chunk positions, but "
    "Hugging Face's reversible backward recomputes the feed-forward of all L positions under "
    "autograd before differentiating it, so its (L, d_ff) activations exist at once; "
    "minireformer recomputes and differentiates one chunk at a time.",
    "Output loss: Hugging Face's chunk_size_lm_head chunks only the logits' forward; the (L, V) "
    "logits are then kept whole for the cross-entropy and its backward; minireformer computes "
    "loss and gradient chunk by chunk.",
    "Heads: minireformer attends one head at a time (n_parallel_heads=1, same numbers); Hugging "
    "Face attends all heads at once (it has no such setting).",
    "Unit-norm keys: Hugging Face divides by sqrt(|x|^2 + 1e-6 Dh), minireformer by "
    "sqrt(|x|^2 + 1e-12): a relative difference below 1e-5 in the keys.",
    "Random rotations: both draw new Gaussian (H, Dh, R, K/2) rotations every forward pass, "
    "Hugging Face with torch in float32, minireformer with a NumPy Generator.",
    "Memory: Hugging Face's peak growth includes what torch sets up on its first call "
    "(autograd engine, kernels); at the --quick sizes its whole growth is about 35 MiB against "
    "minireformer's 2-3 MiB, an upper bound on that fixed part.",
]

FULL = _setup("full", (4096, 16384, 65536))
QUICK = _setup("quick", (256, 512))
SETUPS = {"full": FULL, "quick": QUICK}
log = common.log


# ---------------------------------------------------------------------------------------------
# The two systems configured alike
# ---------------------------------------------------------------------------------------------


def axial_shape(length: int) -> tuple[int, int]:
    """(L1, L2) with L1 * L2 = L and L1 the largest divisor <= sqrt(L): (64, 64) for 4,096."""
    first = max(d for d in range(1, math.isqrt(length) + 1) if length % d == 0)
    return first, length // first


def n_buckets(setup: dict, length: int):
    """minireformer's default K (``lsh.default_n_buckets``: 2 ceil(L / C), or two factors of it
    where the library factorises), given to both systems (Hugging Face takes factors as a list)."""
    return lsh.default_n_buckets(length, setup["chunk_len"])


def mini_config(setup: dict, length: int, semantics: str, dtype: str = "float32"):
    """minireformer's ``ReformerConfig`` for ``setup`` at length L with ``semantics``: the suite's
    LM (``common.reformer_config``) with Hugging Face's constraints: axial factors of L, K given."""
    return common.reformer_config(
        dict(setup, axial_shape=axial_shape(length)),
        length,
        n_buckets=n_buckets(setup, length),
        max_len=length,
        dropout=0.0,
        activation="gelu",
        dtype=dtype,
        semantics=semantics,
    )


def hf_kwargs(setup: dict, length: int) -> dict:
    """Keyword arguments of ``transformers.ReformerConfig`` for the same model at length L.

    ``hidden_act="gelu_new"`` is Hugging Face's tanh form of GELU, the one minireformer computes
    ("gelu" there is the erf form); ``layer_norm_eps`` is minireformer's 1e-5 (Hugging Face's
    default is 1e-12). Causal LSH attention with one chunk of look-back, as in minireformer.
    """
    m = setup["model"]
    k = n_buckets(setup, length)
    return dict(
        vocab_size=m["vocab_size"],
        hidden_size=m["d_model"],
        num_attention_heads=m["n_heads"],
        attention_head_size=m["d_model"] // m["n_heads"],
        feed_forward_size=m["d_ff"],
        attn_layers=["lsh"] * m["n_layers"],
        num_hashes=setup["n_hashes"],
        num_buckets=list(k) if isinstance(k, tuple) else k,
        lsh_attn_chunk_length=setup["chunk_len"],
        lsh_num_chunks_before=1,
        lsh_num_chunks_after=0,
        is_decoder=True,
        hidden_act="gelu_new",
        hidden_dropout_prob=0.0,
        lsh_attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-5,
        axial_pos_embds=True,
        axial_pos_shape=list(axial_shape(length)),
        axial_pos_embds_dim=[m["d_model"] // 2, m["d_model"] - m["d_model"] // 2],
        max_position_embeddings=length,
        chunk_size_feed_forward=setup["ff_chunk"],
        chunk_size_lm_head=setup["loss_chunk"],
        tie_word_embeddings=False,
        use_cache=False,
    )


# ---------------------------------------------------------------------------------------------
# One measurement in a fresh process
# ---------------------------------------------------------------------------------------------


def _status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes; None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak resident set (VmHWM) to the current one (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _mini_task(setup, what, length, semantics, seed):
    """Build minireformer's work (outside the measurement); returns (run, config dict)."""
    from minireformer import reformer

    config = mini_config(setup, length, semantics)
    rng = np.random.default_rng(seed)
    if what == "step":
        params = reformer.init_reformer(config, rng)
        tokens = rng.integers(0, config.vocab_size, size=(1, length + 1))  # the model reads L

        def run():
            loss, _ = reformer.loss_and_grads(params, tokens, config, rng)
            return loss

    else:
        one = dataclasses.replace(config, n_layers=1)
        sublayer = reformer.build_blocks(one)[0].f
        p = reformer.init_reformer(one, rng)["blocks"][0][sublayer.key]
        x = rng.standard_normal((1, length, config.d_model)).astype(np.float32)  # (B, L, D)
        dout = rng.standard_normal(x.shape).astype(np.float32)

        def run():
            rec = sublayer.draw(rng, x.shape)  # new rotations; hashed in the forward pass
            sublayer.recompute_backward(x, p, rec, None, dout)

    return run, dataclasses.asdict(config)


def _hf_task(setup, what, length, seed):
    """Build Hugging Face's work (outside the measurement); returns (run, config kwargs)."""
    import torch
    from transformers import ReformerConfig, ReformerModelWithLMHead
    from transformers.models.reformer.modeling_reformer import ReformerAttention

    torch.manual_seed(seed)
    kwargs = hf_kwargs(setup, length)
    config = ReformerConfig(**kwargs)
    if what == "step":
        model = ReformerModelWithLMHead(config).train()  # train(): the reversible backward
        tokens = torch.randint(0, config.vocab_size, (1, length))

        def run():
            model.zero_grad(set_to_none=True)  # the gradients are made (and counted) each call
            out = model(input_ids=tokens, labels=tokens)  # labels shifted inside: L-1 targets
            out.loss.backward()
            return float(out.loss.detach())

    else:
        layer = ReformerAttention(config, layer_id=0).train()
        x = torch.randn(1, length, config.hidden_size, requires_grad=True)  # (B, L, D)
        dout = torch.randn(1, length, config.hidden_size)

        def run():
            layer.zero_grad(set_to_none=True)
            x.grad = None
            layer(x).hidden_states.backward(dout)  # hashes with new rotations each call

    return run, kwargs


def worker(spec: dict) -> dict:
    """Measure one (system, what, L) in this process: build, baseline, warm-up, timed repeats."""
    threads = spec["threads"]
    if spec["system"] == "huggingface":
        import torch

        torch.set_num_threads(threads)
        run, config = _hf_task(spec["setup"], spec["what"], spec["length"], spec["seed"])
    else:
        semantics = spec["system"].split("-", 1)[1]
        run, config = _mini_task(
            spec["setup"], spec["what"], spec["length"], semantics, spec["seed"]
        )
    gc.collect()
    baseline = _status_bytes("VmRSS")
    reset = _reset_peak()
    losses = []
    measured = timing.time_call(lambda: losses.append(run()), repeats=spec["repeats"], warmup=1)
    peak = _status_bytes("VmHWM")
    row = {k: spec[k] for k in ("system", "what", "length", "threads")}
    row.update(
        measured,
        baseline_rss_bytes=baseline,
        memory_method="VmHWM - VmRSS at baseline, VmHWM reset by /proc/self/clear_refs"
        if reset
        else "VmHWM - VmRSS at baseline; VmHWM could not be reset (an upper bound)",
        config=config,
    )
    if baseline is not None and peak is not None:
        row["peak_growth_bytes"] = max(0, peak - baseline)
    if losses[0] is not None:
        row["loss"] = float(losses[0])
    return row


def measure(spec: dict) -> dict:
    """Run :func:`worker` for ``spec`` in a fresh Python process with ``threads`` threads."""
    row = common.run_worker("compare_hf", spec, spec["threads"])
    if "error" in row:
        row = {**{k: spec[k] for k in ("system", "what", "length", "threads")}, **row}
    return row


# ---------------------------------------------------------------------------------------------
# The cross-check: the same weights in both systems give the same loss and gradients
# ---------------------------------------------------------------------------------------------


def hf_to_mini(model, take) -> dict:
    """minireformer's parameter tree from a ``ReformerModelWithLMHead``; ``take(tensor)`` returns
    the array to put there (its values, or its ``.grad``). torch's Linear keeps (out, in): the
    transpose of minireformer's (in, out); axial weights (L1, 1, d1) and (1, L2, d2) squeeze."""
    body = model.reformer

    def t(linear):
        return take(linear.weight).T

    axial = body.embeddings.position_embeddings.weights
    embed = {
        "tokens": take(body.embeddings.word_embeddings.weight),
        "axial_1": take(axial[0])[:, 0, :],
        "axial_2": take(axial[1])[0],
    }
    blocks = []
    for layer in body.encoder.layers:
        att, ff = layer.attention, layer.feed_forward
        blocks.append(
            {
                "attn": {
                    "ln_gamma": take(att.layer_norm.weight),
                    "ln_beta": take(att.layer_norm.bias),
                    "w_qk": t(att.self_attention.query_key),
                    "w_v": t(att.self_attention.value),
                    "w_o": t(att.output.dense),
                },
                "ff": {
                    "ln_gamma": take(ff.layer_norm.weight),
                    "ln_beta": take(ff.layer_norm.bias),
                    "w1": t(ff.dense.dense),
                    "b1": take(ff.dense.dense.bias),
                    "w2": t(ff.output.dense),
                    "b2": take(ff.output.dense.bias),
                },
            }
        )
    decoder = model.lm_head.decoder
    head = {
        "ln": {
            "gamma": take(body.encoder.layer_norm.weight),
            "beta": take(body.encoder.layer_norm.bias),
        },
        "out": {"w": t(decoder), "b": take(decoder.bias)},
    }
    return {"embed": embed, "blocks": blocks, "head": head}


@contextlib.contextmanager
def _rotations_from(rotations, calls: list):
    """Make minireformer's LSH layers draw ``rotations`` (H, Dh, R, K/2) instead of random ones."""
    from minireformer import lsh

    original = lsh.random_rotations

    def fixed(rng, dim, n_hashes, n_buckets, n_heads=None):
        assert (n_heads, dim, n_hashes, n_buckets // 2) == rotations.shape, "rotation shape"
        calls.append(1)
        return rotations.copy()

    lsh.random_rotations = fixed
    try:
        yield
    finally:
        lsh.random_rotations = original


def _relative_error(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(1e-300, np.max(np.abs(a) + np.abs(b))))


def cross_check(length: int = 256, seed: int = 0) -> dict:
    """Hugging Face's model at L = ``length`` (FULL setup, float64, weights perturbed so that no
    layer norm is the identity) copied into minireformer under the released semantics; both get
    the same rotations (Hugging Face's ``hash_seed`` re-seeds torch before each layer draws them,
    and minireformer is handed the same draw). Returns both losses and the worst relative error
    over all gradients, per parameter array."""
    import torch
    from transformers import ReformerConfig, ReformerModelWithLMHead

    from minireformer import reformer, tree

    setup = dict(FULL, ff_chunk=64, loss_chunk=64)  # Hugging Face: chunks must divide L
    torch.manual_seed(seed)
    kwargs = dict(hf_kwargs(setup, length), hash_seed=seed)
    model = ReformerModelWithLMHead(ReformerConfig(**kwargs)).double().train()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    m = setup["model"]
    tokens = torch.randint(0, m["vocab_size"], (1, length))
    out = model(input_ids=tokens, labels=tokens)
    out.loss.backward()

    config = mini_config(setup, length, "released", dtype="float64")
    params = hf_to_mini(model, lambda x: x.detach().numpy().copy())
    hf_grads = hf_to_mini(model, lambda x: x.grad.numpy().copy())
    torch.manual_seed(seed)  # the draw each of Hugging Face's layers made
    shape = (m["n_heads"], config.d_head, setup["n_hashes"], config.n_buckets // 2)
    rotations = torch.randn(shape, dtype=torch.float64).numpy()
    # minireformer reads all but the last token: one more token makes it read Hugging Face's L,
    # and the mask drops the target Hugging Face has none for
    ids = np.concatenate([tokens.numpy(), np.zeros((1, 1), np.int64)], axis=1)  # (1, L + 1)
    scored = np.ones((1, length), bool)
    scored[:, -1] = False
    calls = []
    with _rotations_from(rotations, calls):
        loss, grads = reformer.loss_and_grads(
            params, ids, config, np.random.default_rng(seed), scored
        )
    if len(calls) != m["n_layers"]:
        raise RuntimeError(f"expected {m['n_layers']} rotation draws, got {len(calls)}")
    tree.check_same_structure(grads, hf_grads)
    errors = {
        tree.path_str(path): _relative_error(a, b)
        for (path, a), b in zip(tree.leaves_with_paths(grads), tree.leaves(hf_grads))
    }
    worst = max(errors, key=errors.get)
    return {
        "length": length,
        "dtype": "float64",
        "semantics": "released",
        "loss_minireformer": loss,
        "loss_huggingface": float(out.loss.detach()),
        "loss_relative_difference": abs(loss - float(out.loss.detach()))
        / abs(float(out.loss.detach())),
        "grad_worst_relative_error": errors[worst],
        "grad_worst_parameter": worst,
        "grad_relative_errors": errors,
    }


# ---------------------------------------------------------------------------------------------
# The run: measurements, ratios, JSON, figure, table
# ---------------------------------------------------------------------------------------------


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info(threads: int) -> dict:
    cpu = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True
        ).stdout

    spec = importlib.util.find_spec("minireformer")  # where the workers import it from
    return {
        **common.machine_info(),
        "cpu": cpu,
        "threads": threads,
        "thread_variables": "OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS and "
        "torch.set_num_threads, set to `threads` in every worker",
        "versions": {
            name: _version(name) for name in ("minireformer", "numpy", "torch", "transformers")
        },
        "minireformer_commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "minireformer_uncommitted": git("status", "--porcelain", "minireformer").split("\n")[:-1],
        "minireformer_imported_from": spec.origin if spec else None,
        "note": "shared CPU: times are noisy; ratios are taken within one run",
    }


def ratios(rows: list[dict]) -> list[dict]:
    """minireformer / Hugging Face for every (L, what) measured by both, for each semantics."""
    done = {(r["system"], r["what"], r["length"]): r for r in rows if "error" not in r}
    out = []
    for (system, what, length), hf in sorted(done.items(), key=lambda kv: kv[0][::-1]):
        if system != "huggingface":
            continue
        for semantics in SEMANTICS:
            mine = done.get((f"minireformer-{semantics}", what, length))
            if mine is None:
                continue
            entry = {
                "length": length,
                "what": what,
                "semantics": semantics,
                "time_ratio_median": mine["median_s"] / hf["median_s"],
                "time_ratio_range": [
                    mine["min_s"] / hf["max_s"],
                    mine["max_s"] / hf["min_s"],
                ],
            }
            if "peak_growth_bytes" in mine and hf.get("peak_growth_bytes"):
                entry["memory_ratio"] = mine["peak_growth_bytes"] / hf["peak_growth_bytes"]
            out.append(entry)
    return out


def plot(results: dict):
    """Time and peak memory against L, both systems, layer and step (a matplotlib figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.3))
    colours = dict(zip(SYSTEMS, ("C0", "C1", "C3")))
    for system in SYSTEMS:
        for what, style in (("step", "o-"), ("attention", "s--")):
            rows = sorted(
                (
                    r
                    for r in results["rows"]
                    if r["system"] == system and r["what"] == what and "error" not in r
                ),
                key=lambda r: r["length"],
            )
            if not rows:
                continue
            lengths = [r["length"] for r in rows]
            med = np.array([r["median_s"] for r in rows])
            spread = [
                med - [r["min_s"] for r in rows],
                [r["max_s"] for r in rows] - med,
            ]
            label = f"{system}, {'training step' if what == 'step' else 'LSH attention layer'}"
            ax_t.errorbar(
                lengths, med, yerr=spread, fmt=style, color=colours[system], label=label, capsize=3
            )
            if all("peak_growth_bytes" in r for r in rows):
                ax_m.plot(
                    lengths,
                    [r["peak_growth_bytes"] / MiB for r in rows],
                    style,
                    color=colours[system],
                    label=label,
                )
    for ax in (ax_t, ax_m):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L (tokens, batch 1)")
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_ylabel("seconds (median; bars: min to max)")
    ax_m.set_ylabel("peak resident-set growth (MiB)")
    s, m = results["setup"], results["setup"]["model"]
    fig.suptitle(
        f"minireformer against Hugging Face: {m['n_layers']} layers, d_model {m['d_model']}, "
        f"{m['n_heads']} heads, {s['n_hashes']} rounds, chunk {s['chunk_len']}, "
        f"{results['machine']['threads']} threads"
    )
    lengths = sorted({r["length"] for r in results["rows"]})
    for ax in (ax_t, ax_m):
        ax.set_xticks(lengths, [f"{n:,}" for n in lengths])
        ax.set_xlim(lengths[0] / 1.5, lengths[-1] * 1.5)
    handles, labels = ax_t.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=3, loc="lower center")  # below, off the data
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def print_table(results: dict) -> None:
    done = {(r["system"], r["what"], r["length"]): r for r in results["rows"] if "error" not in r}
    log("\n  L       what       system                 time median [min, max] s   peak MiB")
    for (system, what, length), r in sorted(done.items(), key=lambda kv: (kv[0][2], kv[0][1])):
        mem = r.get("peak_growth_bytes")
        log(
            f"  {length:<7d} {what:<10s} {system:<22s} {r['median_s']:8.2f} "
            f"[{r['min_s']:.2f}, {r['max_s']:.2f}]"
            f"   {'-' if mem is None else f'{mem / MiB:9.1f}'}"
        )
    if results["ratios"]:
        log("\n  ratios minireformer / Hugging Face")
        log("  L       what       semantics  time (median)  time range      memory")
        for e in results["ratios"]:
            lo, hi = e["time_ratio_range"]
            mem = e.get("memory_ratio")
            log(
                f"  {e['length']:<7d} {e['what']:<10s} {e['semantics']:<10s} "
                f"{e['time_ratio_median']:10.2f}     [{lo:.2f}, {hi:.2f}]   "
                f"{'-' if mem is None else f'{mem:6.2f}'}"
            )
    for r in results["rows"]:
        if "error" in r:
            log(f"  FAILED {r['system']} {r['what']} L={r['length']}: {r['error']}")


def _save(results: dict, path: Path) -> None:
    results["ratios"] = ratios(results["rows"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)  # never a half-written file, even if the run is stopped here


def _parse_list(text: str, kind=str) -> list:
    return [kind(part) for part in text.split(",") if part.strip()]


def _arguments(parser) -> None:
    parser.add_argument("--lengths", help="comma-separated L (default: the setup's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument("--what", default=",".join(WHATS), help="attention, step or both")
    parser.add_argument("--resume", action="store_true", help="keep the finished rows")
    parser.add_argument("--no-cross-check", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def main(argv=None) -> dict:
    args = common.parse_args(__doc__, argv, _arguments)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return {}

    def fail(message):
        raise SystemExit(f"compare_hf.py: {message}")

    name = "quick" if args.quick else "full"
    setup = SETUPS[name]
    out = args.out_dir / "compare_hf.json"
    lengths = _parse_list(args.lengths, int) if args.lengths else list(setup["lengths"])
    systems, whats = _parse_list(args.systems), _parse_list(args.what)
    for s in systems:
        if s not in SYSTEMS:
            fail(f"--systems: expected names from {SYSTEMS}, got {s!r}")
    for w in whats:
        if w not in WHATS:
            fail(f"--what: expected names from {WHATS}, got {w!r}")
    if "huggingface" in systems and not (_version("torch") and _version("transformers")):
        fail(
            "Hugging Face's side needs torch and transformers: run `make bench-compare` (it makes "
            ".venv-compare with the `compare` extra), or pass --systems without huggingface"
        )
    chunks = {setup[k] for k in ("chunk_len", "ff_chunk", "loss_chunk")}
    for length in lengths:
        if "huggingface" in systems and any(length % c for c in chunks):
            fail(
                f"--lengths: Hugging Face trains only on multiples of its chunk sizes "
                f"{sorted(chunks)}, got {length}"
            )

    results = {
        "benchmark": "compare_hf",
        "quick": bool(args.quick),
        "setup_name": name,
        "setup": {k: v for k, v in setup.items() if k != "lengths"},
        "machine": machine_info(args.threads),
        "notes": {
            "what": "attention: one LSH attention sub-layer (LN, projections, attention, output "
            "projection) forward + backward incl. input and parameter gradients; step: loss and "
            "all gradients of one LM training step, no optimizer update (in either system)",
            "time": "wall clock; one warm-up call, then `repeats` timed calls in the same fresh "
            "process",
            "memory": "peak_growth_bytes = VmHWM at the end - VmRSS after imports, model "
            "construction and inputs (parameters and inputs are not counted; activations, "
            "temporaries, gradients and allocator caches are); same rule for both systems",
            "semantics": "huggingface: released (no bucket mask, no duplicate correction); "
            "minireformer-paper: bucket mask and log N_ij; minireformer-released: "
            "no bucket mask, no duplicate correction",
        },
        "differences": DIFFERENCES,
        "rows": [],
    }
    if args.resume and out.exists():
        old = json.loads(out.read_text())
        if old.get("setup") == results["setup"] and old["machine"]["threads"] == args.threads:
            results["rows"] = [r for r in old["rows"] if "error" not in r]
            if "cross_check" in old:
                results["cross_check"] = old["cross_check"]
            log(f"resuming: {len(results['rows'])} finished measurements kept from {out}")
        else:
            log(f"not resuming: {out} was made with another setup or thread count")

    if "huggingface" in systems and not args.no_cross_check and "cross_check" not in results:
        log("cross-check: Hugging Face's weights in minireformer, L=256, float64, released ...")
        check = cross_check(seed=args.seed)
        results["cross_check"] = check
        log(
            f"  loss {check['loss_minireformer']:.10f} (minireformer) "
            f"{check['loss_huggingface']:.10f} (Hugging Face), relative difference "
            f"{check['loss_relative_difference']:.1e}; worst gradient relative error "
            f"{check['grad_worst_relative_error']:.1e} ({check['grad_worst_parameter']})"
        )
        _save(results, out)

    finished = {(r["system"], r["what"], r["length"]) for r in results["rows"]}
    for length in lengths:
        for what in whats:
            for system in systems:
                if (system, what, length) in finished:
                    log(f"  L={length} {what} {system}: kept from the earlier run")
                    continue
                log(f"  L={length} {what} {system}: fresh process, {args.repeats} repeats ...")
                spec = dict(
                    system=system,
                    what=what,
                    length=length,
                    setup=setup,
                    repeats=args.repeats,
                    threads=args.threads,
                    seed=args.seed,
                )
                row = measure(spec)
                if "error" in row:
                    log(f"    FAILED: {row['error']}")
                else:
                    mem = row.get("peak_growth_bytes")
                    log(
                        f"    {row['median_s']:.2f} s [{row['min_s']:.2f}, "
                        f"{row['max_s']:.2f}], peak growth "
                        f"{'-' if mem is None else f'{mem / MiB:.1f} MiB'}"
                    )
                results["rows"].append(row)
                _save(results, out)  # after every measurement: --resume continues from here

    _save(results, out)
    path = common.save_figure(args, plot(results), "bench_compare_hf")
    print_table(results)
    log(f"\nwrote {out} and {path}")
    return results


if __name__ == "__main__":
    main()
