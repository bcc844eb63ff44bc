"""Training: the loop, with evaluation, checkpoints and resumption.

One step (for the Reformer and the baseline Transformer alike, through ``lm.py``)::

    tokens, mask = source.batch(data_rng, B, L)                 (B, L+1), (B, L) or None
    loss, grads  = loss_and_grads(params, tokens, config, model_rng, mask)
    lr           = schedule(step)                               warm-up, then decay
    params       = Adam(params, clip_by_global_norm(grads))     ``optim.py``

The settings of a run and its learning-rate schedule are in ``settings.py``; the evaluation on
held-out data in ``evaluation.py``.

Everything random comes from three Generators seeded from ``seed``: the initial parameters, the
training batches (``data_rng``: its state is the data position) and the model's own draws
(``model_rng``: LSH rotations, dropout seeds). A checkpoint stores the last two with the
parameters and Adam's moments, so a resumed run is bit-identical to one that never stopped.

Shape letters: B batch, L length, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import backend, checks
from . import allocator, checkpoint, lm, parallel
from .evaluation import evaluate
from .settings import TrainConfig, learning_rate


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the message names the step and a remedy."""


@dataclass
class TrainResult:
    params: dict
    config: object
    step: int
    log: np.ndarray  # (n, 5) as checkpoint.LOG_COLUMNS
    seconds: float  # training wall time, over every resumed part
    interrupted: bool
    checkpoint: Path | None


class _InterruptFlag:
    """Ctrl-C (SIGINT) or a polite kill (SIGTERM, as a job scheduler or ``kill`` sends) sets a
    flag that the loop reads between steps: the step finishes, a checkpoint is written, the run
    stops. A step is never half applied."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.set = False

    def __enter__(self):
        self._old = {}
        for signum in self.SIGNALS:
            try:
                self._old[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass
        return self

    def _handle(self, signum, frame):
        self.set = True

    def __exit__(self, *exc):
        for signum, old in self._old.items():
            signal.signal(signum, old)


def _metric_text(source, ev: dict) -> dict:
    if hasattr(source, "decode"):  # text: bits per character
        return {"bpc": f"{ev['bits']:.3f}"}
    return {"acc": f"{ev['accuracy']:.3f}"}


def train(
    config,
    tc: TrainConfig,
    source,
    *,
    out=None,
    resume: bool = False,
    progress: bool = True,
    on_step=None,
    description: str = "train",
    overwrite: bool = False,
) -> TrainResult:
    """Train ``config`` (Reformer or Transformer) on ``source`` with the settings ``tc``.

    Args:
        out: checkpoint path (``.npz``) written every ``tc.checkpoint_every`` steps, at the end and
            on Ctrl-C or SIGTERM; None: nothing written.
        resume: continue from ``out`` if it exists (its model config, training settings and data
            must equal these; ``CheckpointError`` otherwise). A finished run returns at once.
        progress: show a tqdm bar (step, loss, bits per character or accuracy, tokens/s, ETA).
        on_step: optional ``on_step(step, params, info)`` called after every step.
        overwrite: replace an existing ``out`` (without it, an existing checkpoint is refused
            unless ``resume``).

    Everything the run needs is checked before its first step (:func:`_check_before_training`),
    so that no late failure loses the steps before it.

    Returns:
        :class:`TrainResult`. Raises :class:`TrainingError` on a non-finite loss or gradient
        (the last checkpoint is left as it was).
    """
    kind = lm.kind_of(config)
    if not isinstance(tc, TrainConfig):
        raise TypeError(f"train config: expected a TrainConfig, got {type(tc).__name__}")
    if config.vocab_size != source.vocab_size:
        raise ValueError(
            f"vocab_size: the data has {source.vocab_size} symbols, the {kind} config "
            f"{config.vocab_size}"
        )
    train_dict = dataclasses.asdict(tc)
    adam = tc.optimizer()
    out = _check_before_training(config, tc, source, out, resume, overwrite, train_dict)
    if resume and out is not None and out.exists():
        ck = checkpoint.load(out, expect_config=config)
        for what, got, want in (
            ("training settings", ck.train, train_dict),
            ("data", ck.data, source.spec()),
        ):
            if got != want:
                diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
                raise checkpoint.CheckpointError(
                    f"checkpoint {out}: other {what} ({', '.join(diff)}); start a new --out"
                )
        if ck.adam_state is None:
            raise checkpoint.CheckpointError(f"checkpoint {out}: weights only, cannot resume")
        params, state, step = ck.params, ck.adam_state, ck.step
        data_rng, model_rng = ck.generator("data"), ck.generator("model")
        log, seconds = [list(r) for r in ck.log], float(ck.extra.get("seconds", 0.0))
        saved_step = step
    else:
        params = lm.init_params(config, np.random.default_rng([tc.seed, 0]))
        state, step = adam.init(params), 0
        data_rng = np.random.default_rng([tc.seed, 1])
        model_rng = np.random.default_rng([tc.seed, 2])
        log, seconds, saved_step = [], 0.0, None

    def save():
        nonlocal saved_step
        if out is None:
            return
        checkpoint.save(
            out,
            params=params,
            config=config,
            step=step,
            adam_state=state,
            train=train_dict,
            data=source.spec(),
            rngs={"data": data_rng, "model": model_rng},
            log=log,
            extra={"seconds": seconds, "kind": kind},
        )
        saved_step = step

    held_out = None
    if step < tc.steps:
        length = tc.eval_seq_len or tc.stage_at(tc.steps - 1)[0]
        held_out = source.eval_batches(tc.eval_batch_size or tc.batch_size, length, tc.eval_batches)
    allocator.keep_freed_memory()  # the steps' temporaries reuse mapped pages (allocator.py)
    bar = _progress_bar(progress, tc.steps, step, description)
    interrupted, last_ev = False, {}
    started = time.perf_counter() - seconds
    with _InterruptFlag() as flag:
        try:
            while step < tc.steps:
                length, batch = tc.stage_at(step)
                tokens, mask = source.batch(data_rng, batch, length)
                offset = 0
                if tc.random_offset:
                    offset = int(data_rng.integers(0, config.max_len - tokens.shape[1] + 2))
                t0 = time.perf_counter()
                loss, grads = parallel.loss_and_grads(
                    params,
                    backend.asarray(tokens),
                    config,
                    model_rng,
                    None if mask is None else backend.asarray(mask),
                    offset=offset,
                    workers=tc.workers,
                )
                if not math.isfinite(loss):
                    raise _diverged(step + 1, f"the training loss is {loss}", out, saved_step)
                adam.lr = learning_rate(step + 1, tc)
                try:
                    with checks.trusted():  # the gradients come from the model: its structure
                        info = adam.step(params, grads, state)
                except ValueError as e:  # non-finite gradients; Adam changed nothing
                    raise _diverged(step + 1, str(e), out, saved_step) from None
                del grads
                step += 1
                seconds = time.perf_counter() - started
                row = [step, loss, math.nan, math.nan, seconds]
                if step % tc.eval_every == 0 or step == tc.steps:
                    last_ev = evaluate(params, config, held_out, seed=tc.seed)
                    row[2:4] = last_ev["loss"], last_ev["accuracy"]
                log.append(row)
                if bar is not None:
                    tok_s = tokens.size / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(
                        L=tokens.shape[1],
                        loss=f"{loss:.3f}",
                        **(_metric_text(source, last_ev) if last_ev else {}),
                        tok_s=f"{tok_s:,.0f}",
                    )
                    bar.update(1)
                if on_step is not None:
                    on_step(step, params, info)
                if step % tc.checkpoint_every == 0 or step == tc.steps or flag.set:
                    save()
                if flag.set:
                    interrupted = True
                    break
        finally:
            if bar is not None:
                bar.close()
    return TrainResult(
        params,
        config,
        step,
        np.array(log, dtype=np.float64).reshape(-1, 5),
        seconds,
        interrupted,
        out,
    )


def _check_before_training(config, tc, source, out, resume, overwrite, train_dict):
    """What would otherwise fail after training has started, checked before its first step:
    the checkpoint path (writable, not a directory, not an existing run unless ``resume`` or
    ``overwrite``), the training and evaluation lengths against the model's ``max_len``, and the
    settings that every checkpoint stores (JSON). Returns ``out`` as a Path (or None)."""
    checks.check_bool("resume", resume)
    checks.check_bool("overwrite", overwrite)
    training = [stage[1] for stage in tc.stages] if tc.stages else [tc.seq_len]
    for name, length in [("training", n) for n in training] + [("evaluation", tc.eval_seq_len)]:
        if length is not None and length > config.max_len:  # None: the data's own length
            raise ValueError(
                f"{name} length {length}: longer than the model's max_len {config.max_len}"
            )
    try:
        json.dumps({"train": train_dict, "model": lm.config_to_dict(config)})
        json.dumps(source.spec())
    except TypeError as e:
        raise TypeError(f"settings: a checkpoint cannot store them ({e})") from None
    if out is None:
        return None
    out = Path(out)
    if out.is_file() and not resume and not overwrite:
        raise checkpoint.CheckpointError(
            f"{out}: a checkpoint is already there; resume it (--resume) or replace it "
            "(--overwrite)"
        )
    return checkpoint.check_destination(out)


def _diverged(step: int, what: str, out, saved_step) -> TrainingError:
    saved = "none written" if saved_step is None else saved_step
    return TrainingError(
        f"step {step}: {what}; the last good checkpoint ({out}, step {saved}) is "
        f"kept. Try a lower lr, a longer warm-up or clip_norm."
    )


def _progress_bar(enabled: bool, total: int, initial: int, description: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit="step", dynamic_ncols=True)
