"""Sampling speed: characters per second at a full context, with and without a decoding cache.

For each shipped Shakespeare shape (``minireformer.training.experiments``) a prompt of
``context - n_new`` characters is extended by ``n_new`` greedy characters, so that the last
ones are sampled with the model's whole context (2,048 characters for the Reformer, 64 for the
Transformer) and nothing slides. The speed is ``n_new`` over the wall time of the whole call,
the reading of the prompt included. The systems:

- ``uncached``: ``sampling.generate(cache=False)``, the whole context run again for every
  character (the sampler before the decoding cache);
- ``minireformer``: ``sampling.generate(cache=True)``, the prompt read in one pass, then one
  position a character (``training/decoding.py``);
- ``huggingface``: ``generate(use_cache=True)`` of Hugging Face's model of the same shape, with
  random weights (speed does not depend on them): ``ReformerModelWithLMHead`` for the Reformer
  (its cached LSH and local attention), ``GPT2LMHeadModel`` for the Transformer.

Every measurement runs in a fresh process with ``--threads`` BLAS / PyTorch threads; one warm-up
call, then ``--repeats`` timed calls, whose median is reported; the systems take turns.
Writes ``benchmarks/results/sampling.json``; ``python -m minireformer.measuring.report`` prints
its table. Hugging Face comes from the ``compare`` extra (``make bench-sampling``).

Usage: ``python -m benchmarks.compare_sampling [--quick] [--threads 2] [--repeats 3]``
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

SYSTEMS = ("uncached", "minireformer", "huggingface")


def _shapes(quick: bool) -> dict:
    """{shape: (model config dict with "kind", context, new characters, uncached characters)}."""
    from minireformer.training import experiments as E

    shapes = {
        "reformer": (dict(kind="reformer", **E.SHAKESPEARE_REFORMER), 2048, 200, 20),
        "transformer": (dict(kind="transformer", **E.SHAKESPEARE_TRANSFORMER), 64, 32, 32),
    }
    if quick:  # the same kinds of model at toy sizes (seconds, for the test suite)
        small = dict(d_model=32, n_heads=2, d_ff=64, n_layers=2)
        shapes = {
            "reformer": (dict(shapes["reformer"][0], **small, chunk_len=16, max_len=64), 64, 8, 4),
            "transformer": (dict(shapes["transformer"][0], **small, d_head=16), 64, 8, 8),
        }
    return shapes


def _mini_generate(model: dict, cached: bool):
    from minireformer.training import lm, sampling

    config = lm.config_from_dict(model)
    params = lm.init_params(config, np.random.default_rng(0))

    def generate(prompt, n_new):
        out = sampling.generate(params, config, prompt, n_new, rng=np.random.default_rng(0),
                                temperature=0, cache=cached)  # fmt: skip
        return len(out) - len(prompt)

    return generate


def _hf_generate(model: dict, context: int):
    import torch

    if model["kind"] == "reformer":
        from transformers import ReformerConfig, ReformerModelWithLMHead

        from benchmarks.compare_throughput import _hf_kwargs

        kwargs = dict(_hf_kwargs(model, context), use_cache=True)
        net = ReformerModelWithLMHead(ReformerConfig(**kwargs))
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        net = GPT2LMHeadModel(GPT2Config(
            vocab_size=model["vocab_size"], n_positions=model["max_len"],
            n_embd=model["d_model"], n_layer=model["n_layers"], n_head=model["n_heads"],
            n_inner=model["d_ff"], activation_function="gelu_new", resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0,
        ))  # fmt: skip
    net.eval()

    def generate(prompt, n_new):
        ids = torch.as_tensor(np.asarray(prompt)[None], dtype=torch.long)
        with torch.no_grad():
            out = net.generate(ids, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                               use_cache=True, pad_token_id=0)  # fmt: skip
        return out.shape[1] - ids.shape[1]

    return generate


def worker(spec: dict) -> dict:
    """Build ``spec``'s generator in this process, warm up once, time ``spec["repeats"]`` calls."""
    model, context, n_new = spec["model"], spec["context"], spec["n_new"]
    if spec["system"] == "huggingface":
        import torch

        torch.set_num_threads(spec["threads"])
        generate = _hf_generate(model, context)
    else:
        generate = _mini_generate(model, cached=spec["system"] == "minireformer")
    prompt = np.random.default_rng(1).integers(0, model["vocab_size"], size=context - n_new)
    generate(prompt, n_new)
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        made = generate(prompt, n_new)
        times.append(time.perf_counter() - start)
        if made != n_new:
            raise RuntimeError(f"{spec['system']} made {made} characters, not {n_new}")
    median = statistics.median(times)
    return {
        **{k: spec[k] for k in ("system", "shape", "context", "n_new", "threads")},
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "chars_per_s": n_new / median,
    }


def summarise(rows: list[dict]) -> list[dict]:
    """Per shape: each system's characters per second and the speed-ups over ``uncached``."""
    out = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        speed = {r["system"]: r["chars_per_s"] for r in rows
                 if r["shape"] == shape and "error" not in r}  # fmt: skip
        entry = {"shape": shape, **{f"{k}_chars_per_s": v for k, v in speed.items()}}
        if "uncached" in speed and "minireformer" in speed:
            entry["cache_speedup"] = speed["minireformer"] / speed["uncached"]
        if "huggingface" in speed and "minireformer" in speed:
            entry["ratio_to_huggingface"] = speed["minireformer"] / speed["huggingface"]
        out.append(entry)
    return out


def main(argv=None) -> dict:
    def add(parser):
        parser.add_argument("--threads", type=int, default=2)
        parser.add_argument("--repeats", type=int, default=3)
        parser.add_argument("--worker", help="internal: measure one spec (JSON) in this process")

    argv = sys.argv[1:] if argv is None else argv
    if "--worker" in argv:
        print("RESULT " + json.dumps(worker(json.loads(argv[argv.index("--worker") + 1]))))
        return {}
    args = common.parse_args(__doc__, argv, add)
    have_hf = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
    results = {
        "setup": {"threads": args.threads, "repeats": args.repeats},
        "load_before": os.getloadavg(),
        "rows": [],
    }
    for shape, (model, context, n_new, n_uncached) in _shapes(args.quick).items():
        for system in SYSTEMS:
            if system == "huggingface" and not have_hf:
                continue
            new = n_uncached if system == "uncached" else n_new
            spec = dict(system=system, shape=shape, model=model, context=context, n_new=new,
                        threads=args.threads, repeats=args.repeats)  # fmt: skip
            row = common.run_worker("compare_sampling", spec, args.threads)
            row = {**{k: spec[k] for k in ("system", "shape")}, **row}
            results["rows"].append(row)
            common.log(
                f"  {shape:11s} {system:12s} "
                + (row["error"] if "error" in row else f"{row['chars_per_s']:9,.1f} characters/s")
            )
    results["load_after"] = os.getloadavg()
    results["summary"] = summarise(results["rows"])
    common.write_results(args, "sampling", results)
    return results


if __name__ == "__main__":
    main()
