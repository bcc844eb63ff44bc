"""What each command of the command line does (``cli.py`` parses the flags and calls these).

Each ``cmd_*`` takes the parsed arguments and returns the exit status; a user's mistake raises
:class:`UsageError` (one line, exit status 2).
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np

from ..measuring import memory, table3
from . import checkpoint, data, evaluation, lm, sampling, settings, train

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


def _read_config(path) -> dict:
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"--config: no file {path}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--config: {path} is not UTF-8 text") from None
    except OSError as e:  # a directory, no permission
        raise UsageError(f"--config: cannot read {path} ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"--config: {path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or set(cfg) - {"data", "model", "train"}:
        extra = sorted(set(cfg) - {"data", "model", "train"}) if isinstance(cfg, dict) else cfg
        raise UsageError(f"--config: expected keys data, model, train; got unknown {extra}")
    for key, value in cfg.items():
        if not isinstance(value, dict):
            raise UsageError(f"--config: {path}: {key!r} must be a JSON object, got {value!r}")
    return cfg


def _run_settings(args):
    """(data source, model config, TrainConfig) from --config and the flags over it."""
    cfg = _read_config(args.config)
    spec = dict(cfg.get("data", {"task": "text", "path": data.DEFAULT_TEXT}))
    if args.task is not None:
        spec = {"task": args.task} if args.task != spec.get("task") else spec
    if args.data is not None:
        if spec.get("task") != "text":
            raise UsageError(f"--data: a text file is for --task text, not {spec.get('task')}")
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

    fields = dict(cfg.get("train", {}))
    for name in TRAIN_FLAGS:
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(settings.TrainConfig)})
    if unknown:
        raise UsageError(f"train config: unknown field(s): {', '.join(unknown)}")
    tc = settings.TrainConfig(**fields)
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
    res = train.train(
        config,
        tc,
        source,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    last = evaluation.eval_rows(res.log)
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


def _positive_flag(flag: str, value):
    """A command's optional count or length: None (not given) or an integer >= 1."""
    if value is not None and value < 1:
        raise UsageError(f"{flag}: expected a positive integer, got {value}")
    return value


def _rounded(d: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def cmd_eval(args):
    _positive_flag("--batches", args.batches)
    _positive_flag("--seq-len", args.seq_len)
    _positive_flag("--stride", args.stride)
    ck = checkpoint.load(args.checkpoint)
    config = _with_overrides(ck.config, args)
    source = data.from_spec(ck.data)
    if isinstance(source, data.DuplicationTask):  # 1,000 fresh sequences unless --batches
        n_batches = 10 if args.batches is None else args.batches
        length, batches = source.length, source.eval_batches(100, None, n_batches)
    else:
        length = args.seq_len or ck.train.get("eval_seq_len") or config.max_len
        if args.batches is None:  # the whole validation split, strided (evaluation.py)
            ev = evaluation.evaluate_text(
                ck.params, config, source.valid_ids, window=length,
                stride=args.stride, batch_size=1 if length > 512 else 16,
            )  # fmt: skip
            ev.pop("position_bits")
            ev["bands"] = {k: round(v, 4) for k, v in ev["bands"].items()}
            print(json.dumps({"checkpoint": str(args.checkpoint), "step": ck.step, **_rounded(ev)}))
            return 0
        batches = source.eval_batches(1 if length > 512 else 16, length, args.batches)
    ev = evaluation.evaluate(ck.params, config, batches, seed=0)
    print(
        json.dumps(
            {
                "checkpoint": str(args.checkpoint),
                "step": ck.step,
                "length": length,
                **_rounded(ev),
            }
        )
    )
    return 0


def cmd_sample(args):
    ck = checkpoint.load(args.checkpoint)
    config = _with_overrides(ck.config, args)
    source = data.from_spec(ck.data)
    if hasattr(source, "encode"):
        prompt = source.encode("\n" if args.prompt is None else args.prompt)
    elif args.prompt is not None:
        raise UsageError("--prompt: a text prompt is for text models; this one is duplication")
    else:
        prompt = np.zeros(1, np.int64)  # the duplication task's separator
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
    estimate = table3.table3_memory(
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

    if args.evaluate_only:
        experiments.evaluate_shipped(progress=not args.quiet)
        print(f"wrote {experiments.RESULTS / 'shakespeare.json'} and figure3.json")
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--only: expected some of {list(experiments.EXPERIMENTS)}, got none")
    unknown = sorted(set(names) - set(experiments.EXPERIMENTS))
    if unknown:
        raise UsageError(
            f"--only: unknown experiment(s) {unknown}; "
            f"expected some of {list(experiments.EXPERIMENTS)}"
        )
    for name in names:
        experiments.EXPERIMENTS[name](progress=not args.quiet)
        print(f"{name}: wrote {experiments.RESULTS / experiments.RESULT_FILES[name]}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "sample": cmd_sample,
    "memory": cmd_memory,
    "reproduce": cmd_reproduce,
}
