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
import sys

from . import checkpoint, data, lm, train
from .commands import COMMANDS, MODEL_FLAGS, TRAIN_FLAGS, UsageError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minireformer", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model", description="Train a model on a task.")
    _add_run_flags(t)
    t.add_argument("--out", required=True, help="checkpoint file (.npz) to write")
    t.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="evaluate a checkpoint", description="Evaluate a checkpoint.")
    e.add_argument("checkpoint")
    _add_eval_overrides(e)
    e.add_argument(
        "--batches",
        type=int,
        default=None,
        help="a quick estimate from this many batches (text: default the whole split, strided)",
    )
    e.add_argument("--seq-len", type=int, default=None, help="evaluation window (text)")
    e.add_argument(
        "--stride", type=int, default=None, help="new targets per window (text; default half)"
    )

    s = sub.add_parser(
        "sample", help="generate from a checkpoint", description="Generate from a checkpoint."
    )
    s.add_argument("checkpoint")
    s.add_argument("--prompt", default=None, help="text prompt (text tasks; default a newline)")
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
        description=(
            "Train and evaluate every experiment; results/*.json. The Shakespeare models train "
            "with two worker threads: run with OPENBLAS_NUM_THREADS=1 (as make reproduce does)."
        ),
    )
    r.add_argument(
        "--only",
        default=",".join(_experiments()),
        help=f"comma-separated subset of {','.join(_experiments())}",
    )
    r.add_argument(
        "--evaluate-only",
        action="store_true",
        help="no training: evaluate the shipped checkpoints on the whole validation split again",
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


def _attach_negative_numbers(argv: list) -> list:
    """``--lr -1e-3`` as ``--lr=-1e-3``: argparse reads a token that starts with '-' and is not
    a plain negative number (scientific notation) as another flag, and then reports "expected one
    argument" instead of the flag's own check."""
    out = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _is_negative(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _is_negative(token: str) -> bool:
    try:
        return token.startswith("-") and float(token) < 0
    except ValueError:
        return False


def main(argv=None) -> int:
    argv = _attach_negative_numbers(list(sys.argv[1:] if argv is None else argv))
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
