"""The command line: ``python -m minireformer COMMAND`` (also installed as ``minireformer``).

    train      train a Reformer or Transformer on a task; checkpoints to --out, --resume continues
    eval       evaluate a checkpoint (optionally with other hash rounds or full attention)
    sample     generate text (or symbols) from a checkpoint
    memory     Table 3's estimate and the measured peak of one training step for a config
    reproduce  the duplication table, the Shakespeare models and Figure 3 (resumable; > 1 hour)

A run is described by three JSON objects, the same in a ``--config FILE.json`` and inside a
checkpoint: ``{"data": {"task": ...}, "model": {"kind": ..., fields}, "train": {fields}}``; flags
override the file. Mistakes (an unknown task, flag or config field, a value of the wrong type, a
missing file, a checkpoint of another config) print one line naming the problem and exit with
status 2; Ctrl-C during training writes a checkpoint and exits with status 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np

from ..measuring import memory
from . import checkpoint, data, lm, sampling, train

MODEL_FLAGS = {  # config field -> type (the flag is --field-name)
    "d_model": int,
    "n_heads": int,
    "d_ff": int,
    "n_layers": int,
    "n_hashes": int,
    "chunk_len": int,
    "max_len": int,
    "n_buckets": int,
    "dropout": float,
}
TRAIN_FLAGS = {
    "steps": int,
    "batch_size": int,
    "seq_len": int,
    "lr": float,
    "warmup": int,
    "schedule": str,
    "clip_norm": float,
    "eval_every": int,
    "checkpoint_every": int,
    "seed": int,
}
DEFAULT_MODEL = {
    "kind": "reformer",
    "d_model": 128,
    "n_heads": 4,
    "d_ff": 256,
    "n_layers": 2,
    "chunk_len": 32,
    "attention_types": ["lsh"],
    "n_hashes": 2,
}


class UsageError(Exception):
    """A mistake in the command line or its files: printed as one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minireformer", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model", description="Train a model on a task.")
    _add_run_flags(t)
    t.add_argument("--out", required=True, help="checkpoint file (.npz) to write")
    t.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="evaluate a checkpoint", description="Evaluate a checkpoint.")
    e.add_argument("checkpoint")
    _add_eval_overrides(e)
    e.add_argument("--batches", type=int, default=None, help="at most this many eval batches")
    e.add_argument("--seq-len", type=int, default=None, help="evaluation length")

    s = sub.add_parser(
        "sample", help="generate from a checkpoint", description="Generate from a checkpoint."
    )
    s.add_argument("checkpoint")
    s.add_argument("--prompt", default="\n", help="text prompt (text tasks)")
    s.add_argument("--n", type=int, default=200, help="tokens to generate")
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--context", type=int, default=None, help="most positions fed to the model")
    _add_eval_overrides(s)

    m = sub.add_parser(
        "memory",
        help="memory of one training step",
        description="Table 3 estimate and measured peak of one training step.",
    )
    _add_run_flags(m)

    r = sub.add_parser(
        "reproduce",
        help="rerun the paper's experiments (resumable)",
        description="Train and evaluate every experiment; results/*.json.",
    )
    r.add_argument(
        "--only",
        default=",".join(_experiments()),
        help=f"comma-separated subset of {','.join(_experiments())}",
    )
    r.add_argument("--quiet", action="store_true")
    return p


def _experiments():
    from . import experiments

    return list(experiments.EXPERIMENTS)


def _add_run_flags(p):
    p.add_argument("--config", help="JSON file with data, model and train objects")
    p.add_argument("--task", choices=data.TASKS, help="duplication or text (default text)")
    p.add_argument("--data", help=f"text file for --task text (default {data.DEFAULT_TEXT})")
    p.add_argument("--model", choices=sorted(lm.KINDS), help="reformer (default) or transformer")
    p.add_argument("--attention", help="attention of each layer, cycled: e.g. lsh or local,lsh")
    for name, typ in {**MODEL_FLAGS, **TRAIN_FLAGS}.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, dest=name, default=None)
    p.add_argument(
        "--semantics",
        choices=("paper", "released"),
        help="LSH attention as the paper's Appendix A (default) or the released trax code",
    )


def _add_eval_overrides(p):
    p.add_argument("--n-hashes", type=int, default=None, help="evaluate with R hash rounds")
    p.add_argument("--attention", default=None, help="evaluate with this attention, e.g. full")
    p.add_argument(
        "--semantics", choices=("paper", "released"), help="evaluate with this LSH semantics"
    )


def _read_config(path) -> dict:
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"--config: no file {path}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"--config: {path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or set(cfg) - {"data", "model", "train"}:
        extra = sorted(set(cfg) - {"data", "model", "train"}) if isinstance(cfg, dict) else cfg
        raise UsageError(f"--config: expected keys data, model, train; got unknown {extra}")
    return cfg


def _run_settings(args):
    """(data source, model config, TrainConfig) from --config and the flags over it."""
    cfg = _read_config(args.config)
    spec = dict(cfg.get("data", {"task": "text", "path": data.DEFAULT_TEXT}))
    if args.task is not None:
        spec = {"task": args.task} if args.task != spec.get("task") else spec
    if args.data is not None:
        spec["path"] = args.data
    if spec.get("task") == "text":
        spec.setdefault("path", data.DEFAULT_TEXT)
    source = data.from_spec(spec)

    model = dict(cfg.get("model", DEFAULT_MODEL))
    if args.model is not None and args.model != model.get("kind", "reformer"):
        model = {**DEFAULT_MODEL, "kind": args.model}
    if model.get("kind") == "transformer":
        for name in ("attention_types", "chunk_len", "n_hashes"):  # Reformer-only fields
            model.pop(name, None)
        model.setdefault("d_head", model["d_model"] // model["n_heads"])
    for name in MODEL_FLAGS:
        if getattr(args, name) is not None:
            model[name] = getattr(args, name)
    if args.attention is not None:
        model["attention_types"] = args.attention.split(",")
    if args.semantics is not None:
        model["semantics"] = args.semantics
    model["vocab_size"] = source.vocab_size

    settings = dict(cfg.get("train", {}))
    for name in TRAIN_FLAGS:
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(train.TrainConfig)})
    if unknown:
        raise UsageError(f"train config: unknown field(s): {', '.join(unknown)}")
    tc = train.TrainConfig(**settings)
    length = getattr(source, "length", None) or max(
        [tc.seq_len or 256] + [s[1] for s in tc.stages or []]
    )
    if tc.seq_len is None and not hasattr(source, "length"):
        tc = dataclasses.replace(tc, seq_len=length)
    model.setdefault("max_len", length)
    if model.get("positional") == "axial":
        model.pop("max_len")
    return source, lm.config_from_dict(model), tc


def _with_overrides(config, args):
    changes = {}
    if args.n_hashes is not None:
        changes["n_hashes"] = args.n_hashes
    if args.attention is not None:
        changes["attention_types"] = tuple(args.attention.split(","))
    if args.semantics is not None:
        changes["semantics"] = args.semantics
    if changes and lm.kind_of(config) != "reformer":
        raise UsageError("--n-hashes, --attention and --semantics apply to Reformers")
    return dataclasses.replace(config, **changes) if changes else config


def cmd_train(args):
    source, config, tc = _run_settings(args)
    res = train.train(config, tc, source, out=args.out, resume=args.resume, progress=not args.quiet)
    last = train.eval_rows(res.log)
    summary = {"step": res.step, "seconds": round(res.seconds, 1), "checkpoint": str(args.out)}
    if len(last):
        summary.update(
            eval_loss=round(float(last[-1, 2]), 4), eval_accuracy=round(float(last[-1, 3]), 4)
        )
    print(json.dumps(summary))
    if res.interrupted:
        print(
            f"interrupted at step {res.step}; checkpoint written to {args.out}; "
            "continue with the same command and --resume",
            file=sys.stderr,
        )
        return 130
    return 0


def cmd_eval(args):
    ck = checkpoint.load(args.checkpoint)
    config = _with_overrides(ck.config, args)
    source = data.from_spec(ck.data)
    if isinstance(source, data.DuplicationTask):  # 1,000 fresh sequences unless --batches
        length, batches = source.length, source.eval_batches(100, None, args.batches or 10)
    else:
        length = args.seq_len or ck.train.get("eval_seq_len") or config.max_len
        batches = source.eval_batches(1 if length > 512 else 16, length, args.batches)
    ev = train.evaluate(ck.params, config, batches, seed=0)
    print(
        json.dumps(
            {
                "checkpoint": str(args.checkpoint),
                "step": ck.step,
                "length": length,
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in ev.items()},
            }
        )
    )
    return 0


def cmd_sample(args):
    ck = checkpoint.load(args.checkpoint)
    config = _with_overrides(ck.config, args)
    source = data.from_spec(ck.data)
    prompt = source.encode(args.prompt) if hasattr(source, "encode") else np.zeros(1, np.int64)
    ids = sampling.generate(
        ck.params,
        config,
        prompt,
        args.n,
        rng=np.random.default_rng(args.seed),
        temperature=args.temperature,
        top_k=args.top_k,
        context=args.context,
    )
    print(source.decode(ids) if hasattr(source, "decode") else " ".join(map(str, ids)))
    return 0


def cmd_memory(args):
    source, config, tc = _run_settings(args)
    length, batch = tc.stage_at(tc.steps - 1)
    length = length or source.length
    params = lm.init_params(config, np.random.default_rng(0))
    tokens, mask = source.batch(np.random.default_rng(1), batch, length)
    _, peak = memory.measure_training_step(
        lm.loss_and_grads, params, tokens, config, np.random.default_rng(2), mask
    )
    kind = lm.kind_of(config)
    arch = "transformer" if kind == "transformer" else _table3_arch(config)
    estimate = memory.table3_memory(
        arch,
        batch=batch,
        length=length,
        d_model=config.d_model,
        d_ff=config.d_ff,
        n_heads=config.n_heads,
        n_layers=config.n_layers,
        n_hashes=getattr(config, "n_hashes", 1),
        chunk_len=getattr(config, "chunk_len", 64),
        dtype_bytes=np.dtype(config.dtype).itemsize,
    )
    print(
        json.dumps(
            {
                "kind": kind,
                "batch": batch,
                "length": length,
                "table3_row": arch,
                "table3_estimate_bytes": estimate,
                "parameter_bytes": memory.tree_nbytes(params),
                "measured_step_peak_bytes": int(peak),
            }
        )
    )
    return 0


def _table3_arch(config) -> str:
    """Table 3's closest row for a Reformer config (the table has no reversible LSH row without
    chunking: such a config is shown as "reformer")."""
    lsh = "lsh" in config.attention_types
    if not config.reversible:
        return "lsh" if lsh else "transformer"
    if lsh:
        return "reformer"
    return "chunked_reversible" if config.ff_chunk else "reversible"


def cmd_reproduce(args):
    from . import experiments

    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(experiments.EXPERIMENTS))
    if unknown:
        raise UsageError(
            f"--only: unknown experiment(s) {unknown}; "
            f"expected some of {list(experiments.EXPERIMENTS)}"
        )
    for name in names:
        experiments.EXPERIMENTS[name](progress=not args.quiet)
        print(f"{name}: wrote {experiments.RESULTS / (name + '.json')}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "sample": cmd_sample,
    "memory": cmd_memory,
    "reproduce": cmd_reproduce,
}


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or argparse's own message for a bad flag (2)
        return e.code
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; every finished checkpoint is kept (rerun to resume)", file=sys.stderr)
        return 130
    except train.TrainingError as e:
        print(f"minireformer {args.command}: training stopped: {e}", file=sys.stderr)
        return 1
    except (UsageError, checkpoint.CheckpointError, FileNotFoundError, ValueError, TypeError) as e:
        print(f"minireformer {args.command}: error: {e}", file=sys.stderr)
        return 2
