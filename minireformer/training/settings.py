"""The settings of a training run and its learning-rate schedule.

Schedule: linear warm-up from 0 to ``lr`` over ``warmup`` steps, then ``"cosine"`` decay to
``min_lr_ratio * lr`` at the last step (Loshchilov & Hutter 2017, arXiv 1608.03983),
``"rsqrt"`` decay lr * sqrt(warmup / step) (Vaswani et al. 2017, section 5.3; the trax Reformer's
default), or ``"constant"``.

A curriculum (``stages``) changes the sequence length and batch size at given steps: short
contexts first (many cheap optimizer steps), long contexts after; the parameters do not depend on
the length, only the positional table's size ``max_len`` bounds it. Trained at 128 positions
only, the rows of the table past 128 would never be trained and a long context would meet them
for the first time; ``random_offset`` places each short window at a random position of the table
instead (in the spirit of randomised positional encodings, Ruoss et al. 2023, arXiv 2305.16843).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..checks import (
    check_bool,
    check_fraction,
    check_nonnegative_int,
    check_positive_int,
    check_positive_number,
    check_rate,
)
from .optim import Adam

SCHEDULES = ("cosine", "rsqrt", "constant")


@dataclass
class TrainConfig:
    """Settings of a training run, validated on creation (errors name the field).

    Attributes:
        steps: optimizer steps in all (the sum of ``stages`` when they are given).
        batch_size, seq_len: B and L of a training batch (seq_len None: the task's length).
        stages: None, or [[steps, seq_len, batch_size], ...] run one after the other.
        random_offset: give each training window the positions of a random place in the model's
            ``max_len`` (drawn from the data Generator), so that short windows train every
            positional row; False: every window starts at position 0.
        lr, warmup, schedule, min_lr_ratio: the learning-rate schedule (module docstring).
        clip_norm: global-norm gradient clipping; None: off.
        beta1, beta2: Adam's moment decays.
        eval_every: evaluate every this many steps (and at the last).
        eval_batches, eval_batch_size, eval_seq_len: the held-out batches (None: as training).
        checkpoint_every: write the checkpoint every this many steps (and at the last).
        seed: seeds every Generator of the run.
        workers: threads that compute the gradients of slices of each batch (``parallel.py``; run
            BLAS with one thread each); 1: the whole batch in this thread.
    """

    steps: int = 1000
    batch_size: int = 16
    seq_len: int | None = None
    stages: list | None = None
    random_offset: bool = False
    lr: float = 1e-3
    warmup: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    clip_norm: float | None = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    eval_every: int = 100
    eval_batches: int = 4
    eval_batch_size: int | None = None
    eval_seq_len: int | None = None
    checkpoint_every: int = 100
    seed: int = 0
    workers: int = 1

    def __post_init__(self):
        if self.stages is not None:
            if not isinstance(self.stages, (list, tuple)) or not self.stages:
                raise ValueError(
                    f"stages: expected [[steps, seq_len, batch_size], ...], got {self.stages!r}"
                )
            stages = []
            for stage in self.stages:
                if not isinstance(stage, (list, tuple)) or len(stage) != 3:
                    raise ValueError(
                        f"stages: expected [steps, seq_len, batch_size], got {stage!r}"
                    )
                stages.append([check_positive_int("stages", s) for s in stage])
            self.stages = stages
            self.steps = sum(s[0] for s in stages)
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "checkpoint_every"):
            setattr(self, name, check_positive_int(name, getattr(self, name)))
        for name in ("seq_len", "eval_batch_size", "eval_seq_len"):
            if getattr(self, name) is not None:
                setattr(self, name, check_positive_int(name, getattr(self, name)))
        self.warmup = check_nonnegative_int("warmup", self.warmup)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        self.min_lr_ratio = check_fraction("min_lr_ratio", self.min_lr_ratio)
        check_bool("random_offset", self.random_offset)
        self.seed = check_nonnegative_int("seed", self.seed)
        self.workers = check_positive_int("workers", self.workers)
        # NumPy scalars become Python numbers: a checkpoint stores the settings as JSON
        self.lr = check_positive_number("lr", self.lr)
        self.beta1, self.beta2 = check_rate("beta1", self.beta1), check_rate("beta2", self.beta2)
        if self.clip_norm is not None:
            self.clip_norm = check_positive_number("clip_norm", self.clip_norm)
        self.optimizer()

    def optimizer(self) -> Adam:
        return Adam(lr=self.lr, beta1=self.beta1, beta2=self.beta2, clip_norm=self.clip_norm)

    def stage_at(self, step: int) -> tuple:
        """(seq_len, batch_size) of step ``step`` (0-based)."""
        if self.stages is None:
            return self.seq_len, self.batch_size
        for n, length, batch in self.stages:
            if step < n:
                return length, batch
            step -= n
        return self.stages[-1][1], self.stages[-1][2]


def learning_rate(step: int, tc: TrainConfig) -> float:
    """The rate of optimizer step ``step`` = 1, 2, ..., ``tc.steps`` (module docstring)."""
    if step <= tc.warmup:
        return tc.lr * step / max(tc.warmup, 1)
    if tc.schedule == "constant":
        return tc.lr
    if tc.schedule == "rsqrt":
        return tc.lr * math.sqrt(max(tc.warmup, 1) / step)
    progress = (step - tc.warmup) / max(tc.steps - tc.warmup, 1)
    floor = tc.min_lr_ratio * tc.lr
    return floor + (tc.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
