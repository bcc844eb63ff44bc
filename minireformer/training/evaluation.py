"""Evaluation on held-out data: loss in nats, bits per token, accuracy.

Two ways to score a text. :func:`evaluate` averages over given batches of windows (the trainer's
quick check on a few held-out batches). :func:`evaluate_text` scores a whole token sequence (a
validation split) the way a number worth shipping is made:

- **strided windows** (the overall score): windows of ``window`` tokens start every ``stride``
  positions; the first scores all its targets, each later one only its last ``stride`` (the
  targets no earlier window scored), so every token after the first is scored exactly once and,
  past the first window, with at least ``window - stride`` tokens of context before it (half the
  window at the default stride). Windows that restart the context from nothing at every boundary
  would score a quarter of the tokens with almost no context and make a long-context model look
  like a short-context one;
- **position bands** (how the score depends on context): every target of the windows that start
  at a multiple of the stride scored at its position in its window, averaged in bands of
  positions (0-7, 8-63, ...). A model that learns from its context scores later positions better;
- **the same characters with more context**: with windows every ``stride`` tokens, the token at
  position p of one window sits at position p + stride of the window before, so each token
  scored at p < W - stride is scored twice: with p tokens of context and with p + stride.
  Averaged over the same tokens, the two differ only by the context (bands of positions hold
  different stretches of text, which differ in difficulty); ``"same_characters"`` compares them
  for p from 64 on.

This is the evaluation of the perplexity of a fixed-length model in Hugging Face's documentation
("Perplexity of fixed-length models", sliding windows with a stride), with the bands added.

Shape letters: B batch, L length, W window, V vocabulary.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..checks import check_positive_int
from ..loss import logsumexp
from . import lm

LN2 = math.log(2.0)


def _nll(logits, targets):
    """(..., V) logits and (...) int targets -> (...) negative log-likelihoods, in nats."""
    xp = backend.array_module(logits)
    picked = xp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return logsumexp(logits, axis=-1) - picked


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
        nll = _nll(logits, targets)  # (B, L)
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


BANDS = ((0, 8), (8, 64), (64, 256), (256, 1024), (1024, 2048), (2048, 4096), (4096, 8192))


def _target_nats(params, config, windows, seed: int, batch_size: int):
    """(n, W) negative log-likelihoods, in nats, of windows (n, W + 1) read as (n, W) inputs.
    Every batch hashes with the rotations drawn from ``seed``: the same for every window, so the
    result does not depend on how the windows are batched."""
    out = []
    for i in range(0, len(windows), batch_size):
        tokens = windows[i : i + batch_size]
        rng = np.random.default_rng(seed)
        logits = lm.forward_logits(params, backend.asarray(tokens[:, :-1]), config, rng)
        nll = _nll(logits, backend.asarray(tokens[:, 1:]))  # (b, W)
        out.append(backend.to_numpy(nll).astype(np.float64))
    return np.concatenate(out)


def strided_windows(n_tokens: int, window: int, stride: int) -> list:
    """``[(start, first), ...]``: window k reads tokens start..start+W-1 and scores its targets
    ``first``..W-1 (target t of a window is token start + t + 1). Every token 1..n-1 is scored
    exactly once; the last window is moved back to end at the sequence's end."""
    if n_tokens < window + 1:
        raise ValueError(f"window: {window} + 1 tokens do not fit a sequence of {n_tokens}")
    spans, scored = [(0, 0)], window  # tokens 1..scored are scored
    while scored < n_tokens - 1:
        start = min(len(spans) * stride, n_tokens - 1 - window)
        spans.append((start, scored - start))  # its targets from token scored + 1 on
        scored = start + window
    return spans


def evaluate_text(
    params, config, ids, *, window: int, stride: int | None = None, seed: int = 0,
    batch_size: int = 8, bands=BANDS,
) -> dict:  # fmt: skip
    """Bits per token of ``ids`` (the module docstring): strided overall, banded by position.

    Args:
        ids: (N,) int token ids, N > window (a whole validation split).
        window: W, the tokens the model reads at a time (at most ``config.max_len``).
        stride: new targets per window after the first (default W // 2, so every scored token past
            the first window has at least half the window before it).
        seed: seeds the LSH rotations, the same for every window (deterministic for a seed,
            whatever the batching).
        batch_size: windows per forward pass (memory, not the result).
        bands: ``(low, high)`` position ranges for ``"bands"``; those beyond W are left out.

    Returns:
        ``{"bits": strided bits per token, "loss": the same in nats, "targets": N - 1,
        "window": W, "stride": S, "bands": {"low-high": bits}, "band_targets": {...},
        "position_bits": (W,) mean bits at each position of the windows at multiples of S,
        "same_characters": the same tokens with S more tokens of context (module docstring)}``.
    """
    ids = np.asarray(backend.to_numpy(ids))
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise TypeError(
            f"ids: expected a 1-D array of integer token ids, got {ids.dtype} {ids.shape}"
        )
    window = check_positive_int("window", window)
    if window > config.max_len:
        raise ValueError(f"window: {window} is longer than the model's max_len {config.max_len}")
    stride = window // 2 if stride is None else check_positive_int("stride", stride)
    if stride > window:
        raise ValueError(f"stride: expected at most the window {window}, got {stride}")
    batch_size = check_positive_int("batch_size", batch_size)

    spans = strided_windows(len(ids), window, stride)
    aligned = [k * stride for k in range((len(ids) - 1 - window) // stride + 1)]
    # each window run once: the strided windows are the aligned ones, but for the last
    starts = sorted({start for start, _ in spans} | set(aligned))
    windows = np.stack([ids[start : start + window + 1] for start in starts])
    nats = dict(zip(starts, _target_nats(params, config, windows, seed, batch_size)))  # (W,) each
    total = sum(float(nats[start][first:].sum()) for start, first in spans)
    position_bits = np.mean([nats[start] for start in aligned], axis=0) / LN2  # (W,)
    shown = [(lo, min(hi, window)) for lo, hi in bands if lo < window]
    loss = total / (len(ids) - 1)
    return {
        "bits": loss / LN2,
        "loss": loss,
        "targets": len(ids) - 1,
        "window": window,
        "stride": stride,
        "bands": {f"{lo}-{hi - 1}": float(position_bits[lo:hi].mean()) for lo, hi in shown},
        "band_targets": {f"{lo}-{hi - 1}": (hi - lo) * len(aligned) for lo, hi in shown},
        "position_bits": position_bits,
        "same_characters": _same_characters(nats, aligned, window, stride),
    }


def _same_characters(nats: dict, aligned: list, window: int, stride: int, low: int = 64) -> dict:
    """Bits of the tokens that two consecutive aligned windows both score: at positions
    low..W-stride-1 of the later window and low+stride..W-1 of the earlier (the same tokens,
    ``stride`` more tokens of context); empty when there are none (W - stride <= low)."""
    high = window - stride
    pairs = [(a, a + stride) for a in aligned if a + stride in nats]
    if high <= low or not pairs:
        return {}
    short = np.mean([nats[b][low:high] for _, b in pairs]) / LN2
    long = np.mean([nats[a][low + stride : window] for a, _ in pairs]) / LN2
    return {
        "targets": len(pairs) * (high - low),
        "short_context": f"{low}-{high - 1}",
        "short_bits": float(short),
        "long_context": f"{low + stride}-{window - 1}",
        "long_bits": float(long),
    }


def eval_rows(log):
    """The rows of a training log (n, 5) at which the held-out set was evaluated."""
    return log[~np.isnan(log[:, 2])]
