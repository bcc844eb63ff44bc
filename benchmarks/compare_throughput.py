"""Training throughput: tokens per second of one optimizer step, minireformer beside PyTorch.

What a user trains here are small models. For each shape below, one *step* is the loss, every
gradient and the Adam update (global-norm clipping at 1.0 included), on a batch of the shape's
size; its throughput is the tokens the model reads per second. The shapes are the shipped
models' (``minireformer.training.experiments``):

- ``transformer``: the Shakespeare Transformer, 12 windows of 64 characters, beside a plain
  PyTorch GPT of the same shape written for this comparison (token and learned position
  embeddings, pre-LayerNorm blocks with ``torch.nn.functional.scaled_dot_product_attention``,
  ``LayerNorm``, tanh-GELU, ``torch.optim.Adam``), the same widths, biases and loss;
- ``reformer``: the Shakespeare Reformer at its training batch, beside Hugging Face's
  ``ReformerModelWithLMHead`` with the same configuration (local and LSH layers alternating, the
  same chunks, rounds and buckets, reversible; learned positions, as Hugging Face has no
  sinusoids);
- ``duplication``: the paper-size duplication model with LSH attention, beside Hugging Face's
  Reformer of the same configuration.

Every measurement runs in a fresh process with the same number of threads (``--threads``, BLAS
and PyTorch alike); two warm-up steps, then ``--steps`` timed steps, whose median is the process's
number. The systems take turns (``--repeats`` rounds of every system), so that a change in the
machine's load touches all of them; a ratio is reported only from one run, with the spread over
the repeats, and the load average before and after (a ratio counts when the machine was otherwise
idle: a load average near zero before the run). One profile of each minireformer step (cProfile,
the functions with the most own time) says where its time goes.

Writes ``benchmarks/results/throughput.json``; ``python -m minireformer.measuring.report`` prints
its table. PyTorch and ``transformers`` come from the ``compare`` extra (``make bench-throughput``
installs them in ``.venv-compare``); without them only the minireformer side runs.

Usage: ``python -m benchmarks.compare_throughput [--quick] [--threads 2] [--repeats 3]``
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
import time

import numpy as np

from benchmarks import common

SHAPES = ("transformer", "reformer", "duplication")
PEERS = {"transformer": "pytorch-gpt", "reformer": "huggingface", "duplication": "huggingface"}


def _shapes(quick: bool) -> dict:
    """{shape: (model config dict with "kind", batch, length read)} from the shipped settings."""
    from minireformer.training import experiments as E
    from minireformer.training import lm

    shapes = {
        "transformer": (dict(kind="transformer", **E.SHAKESPEARE_TRANSFORMER), 12, 64),
        "reformer": (dict(kind="reformer", **E.SHAKESPEARE_REFORMER), 1, 2048),
        "duplication": (
            lm.config_to_dict(E.duplication_config("lsh", 2)),
            16,
            E.duplication_config("lsh", 2).max_len,
        ),
    }
    if quick:  # the same kinds of model at toy sizes (seconds, for the test suite)
        small = dict(d_model=32, n_heads=2, d_ff=64, n_layers=2)
        shapes = {
            "transformer": (dict(shapes["transformer"][0], **small, d_head=16), 4, 32),
            "reformer": (dict(shapes["reformer"][0], **small, chunk_len=16, max_len=128), 1, 128),
            "duplication": (dict(shapes["duplication"][0], **small, chunk_len=16), 2, 95),
        }
    return shapes


# ---------------------------------------------------------------------------------------------
# The systems: a function that builds one training step
# ---------------------------------------------------------------------------------------------


def _workers(system: str, batch: int, threads: int) -> int:
    """minireformer's data-parallel workers: one per thread when the batch splits that far (each
    with one BLAS thread), else 1 (BLAS then has every thread). The other systems: 1."""
    return threads if system == "minireformer" and batch >= threads else 1


def _mini_step(model: dict, batch: int, length: int, workers: int = 1):
    from minireformer.training import allocator, lm, optim, parallel

    allocator.keep_freed_memory()  # as the trainer does
    config = lm.config_from_dict(model)
    rng = np.random.default_rng(0)
    params = lm.init_params(config, rng)
    adam = optim.Adam(lr=1e-3, beta1=0.9, beta2=0.98, clip_norm=1.0)
    state = adam.init(params)
    tokens = rng.integers(0, config.vocab_size, size=(batch, length + 1))  # reads `length`

    def step():
        loss, grads = parallel.loss_and_grads(params, tokens, config, rng, workers=workers)
        adam.step(params, grads, state)
        return loss

    return step


def _gpt_step(model: dict, batch: int, length: int, workers: int = 1):
    """A plain PyTorch GPT of the minireformer Transformer's shape and its Adam step."""
    import torch
    from torch import nn
    from torch.nn import functional as fn

    d, h, dh = model["d_model"], model["n_heads"], model["d_head"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * h * dh, bias=False)
            self.out = nn.Linear(h * dh, d, bias=False)
            self.fc1, self.fc2 = nn.Linear(d, model["d_ff"]), nn.Linear(model["d_ff"], d)

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, h, dh).permute(2, 0, 3, 1, 4)
            a = fn.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, L, Dh)
            x = x + self.out(a.transpose(1, 2).reshape(b, n, h * dh))
            return x + self.fc2(fn.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(model["vocab_size"], d)
            self.pos = nn.Parameter(torch.randn(model["max_len"], d) / d**0.5)
            self.blocks = nn.ModuleList(Block() for _ in range(model["n_layers"]))
            self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, model["vocab_size"])

        def forward(self, idx):
            x = self.tok(idx) + self.pos[: idx.shape[1]]
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln_f(x))

    torch.manual_seed(0)
    net = GPT()
    adam = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.98))
    tokens = torch.randint(0, model["vocab_size"], (batch, length + 1))

    def step():
        adam.zero_grad(set_to_none=True)
        logits = net(tokens[:, :-1])
        loss = fn.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        adam.step()
        return loss.item()

    return step


def _hf_kwargs(model: dict, length: int) -> dict:
    """Hugging Face's ReformerConfig for minireformer's Reformer config ``model``."""
    from minireformer import lsh

    kinds = model["attention_types"]
    layers = [kinds[i % len(kinds)] for i in range(model["n_layers"])]
    k = model.get("n_buckets") or lsh.default_n_buckets(length, model["chunk_len"])
    return dict(
        vocab_size=model["vocab_size"],
        hidden_size=model["d_model"],
        num_attention_heads=model["n_heads"],
        attention_head_size=model["d_model"] // model["n_heads"],
        feed_forward_size=model["d_ff"],
        attn_layers=layers,
        num_hashes=model.get("n_hashes", 1),
        num_buckets=list(k) if isinstance(k, tuple) else k,
        lsh_attn_chunk_length=model["chunk_len"],
        local_attn_chunk_length=model["chunk_len"],
        lsh_num_chunks_before=1,
        lsh_num_chunks_after=0,
        local_num_chunks_before=1,
        local_num_chunks_after=0,
        is_decoder=True,
        hidden_act="gelu_new",  # the tanh form, as minireformer's
        hidden_dropout_prob=0.0,
        lsh_attention_probs_dropout_prob=0.0,
        local_attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-5,
        axial_pos_embds=False,  # learned positions (Hugging Face has no sinusoids)
        max_position_embeddings=max(model["max_len"], length),
        chunk_size_feed_forward=model.get("ff_chunk") or 0,
        tie_word_embeddings=False,
        use_cache=False,
    )


def _hf_length(model: dict, length: int) -> int:
    """The length Hugging Face's Reformer reads: in training it must be a multiple of the chunk
    length, so ``length`` rounded up (its tokens/s counts the tokens it reads)."""
    chunk = model["chunk_len"]
    return -(-length // chunk) * chunk


def _hf_step(model: dict, batch: int, length: int, workers: int = 1):
    import torch
    from transformers import ReformerConfig, ReformerModelWithLMHead

    torch.manual_seed(0)
    net = ReformerModelWithLMHead(ReformerConfig(**_hf_kwargs(model, length))).train()
    adam = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.98))
    tokens = torch.randint(0, model["vocab_size"], (batch, length))

    def step():
        adam.zero_grad(set_to_none=True)
        out = net(input_ids=tokens, labels=tokens)  # reads L tokens, L - 1 targets
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        adam.step()
        return out.loss.item()

    return step


BUILDERS = {"minireformer": _mini_step, "pytorch-gpt": _gpt_step, "huggingface": _hf_step}


# ---------------------------------------------------------------------------------------------
# One measurement in a fresh process
# ---------------------------------------------------------------------------------------------


def worker(spec: dict) -> dict:
    """Build the step of ``spec`` in this process, warm up, time ``spec["steps"]`` steps."""
    if spec["system"] != "minireformer":
        import torch

        torch.set_num_threads(spec["threads"])
    step = BUILDERS[spec["system"]](
        spec["model"], spec["batch"], spec["length"], spec.get("workers", 1)
    )
    for _ in range(2):
        step()
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    row = {k: spec.get(k, 1) for k in ("system", "shape", "batch", "length", "threads", "workers")}
    median = statistics.median(times)
    row.update(
        median_s=median,
        min_s=min(times),
        max_s=max(times),
        times_s=times,
        tokens_per_s=spec["batch"] * spec["length"] / median,
        loss=float(loss),
    )
    if spec.get("profile"):
        from minireformer.measuring import timing

        row["profile"] = timing.profile(step)
    return row


def measure(spec: dict) -> dict:
    """:func:`worker` for ``spec`` in a fresh Python process with ``threads`` threads in all:
    ``workers`` data-parallel workers of ``threads / workers`` BLAS threads each."""
    row = common.run_worker(
        "compare_throughput", spec, max(1, spec["threads"] // spec.get("workers", 1))
    )
    if "error" in row:
        row = {**{k: spec[k] for k in ("system", "shape")}, **row}
    return row


def _speeds(rows: list[dict], shape: str, system: str) -> list[float]:
    return [
        r["tokens_per_s"]
        for r in rows
        if (r["shape"], r["system"]) == (shape, system) and "error" not in r
    ]


def summarise(rows: list[dict]) -> list[dict]:
    """Per shape: each system's median tokens/s over the repeats (and their range), the ratio."""
    out = []
    for shape in SHAPES:
        mine, peer = _speeds(rows, shape, "minireformer"), _speeds(rows, shape, PEERS[shape])
        if not mine:
            continue
        entry = {
            "shape": shape,
            "peer": PEERS[shape],
            "minireformer_tokens_per_s": statistics.median(mine),
            "minireformer_range": [min(mine), max(mine)],
        }
        if peer:
            entry.update(
                peer_tokens_per_s=statistics.median(peer),
                peer_range=[min(peer), max(peer)],
                ratio=statistics.median(mine) / statistics.median(peer),
                ratio_range=[min(mine) / max(peer), max(mine) / min(peer)],
            )
        out.append(entry)
    return out


def main(argv=None) -> dict:
    def add(parser):
        parser.add_argument("--threads", type=int, default=2)
        parser.add_argument("--repeats", type=int, default=3)
        parser.add_argument("--steps", type=int, default=None, help="timed steps per process")
        parser.add_argument("--shapes", default=",".join(SHAPES))
        parser.add_argument("--worker", help="internal: measure one spec (JSON) in this process")

    if argv is None:
        argv = sys.argv[1:]
    if "--worker" in argv:
        spec = json.loads(argv[argv.index("--worker") + 1])
        print("RESULT " + json.dumps(worker(spec)))
        return {}
    args = common.parse_args(__doc__, argv, add)
    shapes = _shapes(args.quick)
    steps = args.steps or (2 if args.quick else 10)
    have_torch = importlib.util.find_spec("torch") is not None
    have_hf = have_torch and importlib.util.find_spec("transformers") is not None
    available = {"minireformer": True, "pytorch-gpt": have_torch, "huggingface": have_hf}
    results = {
        "setup": {"threads": args.threads, "repeats": args.repeats, "steps": steps},
        "load_before": os.getloadavg(),
        "rows": [],
    }
    names = [s for s in args.shapes.split(",") if s]
    for repeat in range(args.repeats):
        for shape in names:
            model, batch, length = shapes[shape]
            for system in ("minireformer", PEERS[shape]):
                if not available[system]:
                    continue
                read = _hf_length(model, length) if system == "huggingface" else length
                spec = dict(system=system, shape=shape, model=model, batch=batch, length=read,
                            threads=args.threads, steps=steps,
                            workers=_workers(system, batch, args.threads),
                            profile=system == "minireformer" and repeat == 0)  # fmt: skip
                row = measure(spec)
                row["repeat"] = repeat
                results["rows"].append(row)
                common.log(
                    f"  {shape:11s} {system:12s} repeat {repeat}: "
                    + (row["error"] if "error" in row else f"{row['tokens_per_s']:9,.0f} tokens/s")
                )
    results["load_after"] = os.getloadavg()
    results["summary"] = summarise(results["rows"])
    for entry in results["summary"]:
        line = f"{entry['shape']:11s} minireformer {entry['minireformer_tokens_per_s']:9,.0f}"
        if "ratio" in entry:
            line += f", {entry['peer']} {entry['peer_tokens_per_s']:9,.0f}: {entry['ratio']:.2f}"
        common.log(line + " tokens/s")
    common.write_results(args, "throughput", results)
    return results


if __name__ == "__main__":
    main()
