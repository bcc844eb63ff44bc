"""Autoregressive sampling from a trained language model (Reformer or Transformer).

Each new token is drawn from softmax(logits / temperature) at the last position, restricted to
the ``top_k`` most likely tokens; temperature 0 takes the most likely token (greedy). The whole
context is run again for every token (no decoding cache), and once it is longer than the model's
``max_len`` (or ``context``) only its last positions are kept: the window slides.

For the Reformer, every forward pass hashes with fresh LSH rotations, drawn from a Generator
seeded once from ``rng`` (apart from the samples' draws, so greedy and top-1 decoding hash alike):
a seed fixes the whole output.

Shape letters: L length, V vocabulary.
"""

from __future__ import annotations

import numpy as np

from .. import backend, checks
from ..checks import check_nonnegative_int, check_positive_int
from . import lm


def sample_next(logits, rng, *, temperature: float = 1.0, top_k: int | None = None) -> int:
    """One token id from (V,) logits: greedy at temperature 0, else softmax(logits / T) over the
    ``top_k`` largest (None: all)."""
    logits = np.asarray(backend.to_numpy(logits), dtype=np.float64)
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits / temperature
    if top_k is not None and top_k < z.size:
        cut = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cut, z, -np.inf)
    p = np.exp(z - z.max())
    return int(rng.choice(z.size, p=p / p.sum()))


def generate(
    params,
    config,
    prompt,
    n_new: int,
    *,
    rng,
    temperature: float = 1.0,
    top_k: int | None = None,
    context: int | None = None,
):
    """``prompt`` (1-D int ids, at least one) followed by ``n_new`` sampled ids: (len + n_new,).

    Args:
        params, config: a trained model (either kind).
        rng: ``numpy.random.Generator`` for the samples and (through one seed) the rotations.
        temperature: >= 0 (0: greedy). top_k: keep the k most likely tokens (None: all).
        context: the most positions fed to the model (default and at most ``config.max_len``).
    """
    checks.check_rng(rng)
    ids = [int(i) for i in np.asarray(prompt).reshape(-1)]
    if not ids:
        raise ValueError("prompt: expected at least one token, got none")
    if min(ids) < 0 or max(ids) >= config.vocab_size:
        raise ValueError(f"prompt: expected token ids in [0, {config.vocab_size}), got {ids[:8]}")
    n_new = check_nonnegative_int("n_new", n_new)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or temperature < 0
    ):
        raise ValueError(f"temperature: expected a number >= 0, got {temperature!r}")
    if top_k is not None:
        top_k = check_positive_int("top_k", top_k)
    window = (
        config.max_len
        if context is None
        else min(check_positive_int("context", context), config.max_len)
    )
    hash_rng = np.random.default_rng(int(rng.integers(2**63)))
    for _ in range(n_new):
        tokens = backend.asarray(np.array([ids[-window:]], dtype=np.int64))  # (1, <= window)
        logits = lm.forward_logits(params, tokens, config, hash_rng)[0, -1]  # (V,)
        ids.append(sample_next(logits, rng, temperature=temperature, top_k=top_k))
    return np.array(ids, dtype=np.int64)
