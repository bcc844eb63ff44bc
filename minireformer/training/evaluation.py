"""Evaluation on held-out data: loss in nats, bits per token, accuracy.

Shape letters: B batch, L length, V vocabulary.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..loss import logsumexp
from . import lm

LN2 = math.log(2.0)


def evaluate(params, config, batches, *, seed: int = 0) -> dict:
    """Mean next-token loss (nats), bits per token and accuracy over ``batches``.

    batches: [(tokens (B, L), loss_mask (B, L-1) or None), ...]; LSH rotations from ``seed``, the
    same for every call. Returns {"loss", "bits", "accuracy", "targets"}.
    """
    rng = np.random.default_rng(seed)
    total, correct, count = 0.0, 0, 0
    for tokens, mask in batches:
        logits = lm.forward_logits(params, backend.asarray(tokens[:, :-1]), config, rng)
        xp = backend.array_module(logits)
        targets = backend.asarray(tokens[:, 1:])
        lse = logsumexp(logits, axis=-1)  # (B, L)
        nll = lse - xp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        hit = xp.argmax(logits, axis=-1) == targets
        if mask is not None:
            m = backend.asarray(mask)
            nll, hit = nll[m], hit[m]
        total += float(xp.sum(nll, dtype=xp.float64))
        correct += int(xp.sum(hit))
        count += int(nll.size)
    if count == 0:  # a mean over nothing is no score: 0.0 bits would read as a perfect model
        raise ValueError("batches: no target to evaluate (no batch, or every target masked)")
    loss = total / count
    return {"loss": loss, "bits": loss / LN2, "accuracy": correct / count, "targets": count}


def eval_rows(log):
    """The rows of a training log (n, 5) at which the held-out set was evaluated."""
    return log[~np.isnan(log[:, 2])]
