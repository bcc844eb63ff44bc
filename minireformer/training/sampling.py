"""Autoregressive sampling from a trained language model (Reformer or Transformer).

Each new token is drawn from softmax(logits / temperature) at the last position, restricted to
the ``top_k`` most likely tokens; temperature 0 takes the most likely token (greedy).

**Context.** The model reads at most ``context`` positions (default and at most ``max_len``).
When the text grows longer, the oldest ``slide`` tokens are dropped and the rest is read again
from position 0 (``slide`` 1: the window moves one token at a time, every token read with the
fullest context; a larger ``slide`` re-reads less often). Every position the model is asked for
was trained: windows of max_len + 1 tokens train all max_len positions.

**Cache.** Without it (``cache=False``) the whole context is run again for every token; with it
(``decoding.py``) the context is read in one pass, then a step computes the new position only,
and the context is read again only when it slides. Both hash with the same rotations, drawn once
from a seed taken from ``rng`` (apart from the samples' draws, so that greedy and top-1 decoding
hash alike), and with the buckets of the whole context (``decoding.fixed_buckets``), so a seed
fixes the whole output; for models whose
attention pattern is causal (the Transformer, full and local attention) the two give the same
tokens, and with LSH layers beyond the first they differ as decoding.py explains.

Shape letters: L length, V vocabulary.
"""

from __future__ import annotations

import numpy as np

from .. import backend, checks
from ..checks import check_nonnegative_int, check_positive_int
from . import decoding, lm


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
    slide: int = 1,
    cache: bool = True,
):
    """``prompt`` (1-D int ids, at least one) followed by ``n_new`` sampled ids: (len + n_new,).

    Args:
        params, config: a trained model (either kind; causal).
        rng: ``numpy.random.Generator`` for the samples and (through one seed) the rotations.
        temperature: >= 0 (0: greedy). top_k: keep the k most likely tokens (None: all).
        context: the most positions fed to the model (default and at most ``config.max_len``).
        slide: tokens dropped from the front when the context is full (module docstring).
        cache: decode with a cache (one position a step) or run the whole context each step.
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
    window = config.max_len if context is None else check_positive_int("context", context)
    window = min(window, config.max_len)
    slide = min(check_positive_int("slide", slide), window)
    config = decoding.fixed_buckets(config)
    hash_seed = int(rng.integers(2**63))
    start = max(0, len(ids) - window)  # the first token the model reads
    state = None  # the decoding cache of the tokens ids[start:]
    for _ in range(n_new):
        if len(ids) - start > window:  # the context is full: drop the oldest ``slide`` tokens
            start = len(ids) - window + slide - 1
            state = None
        if cache and state is not None:  # one new position
            logits, state = decoding.step(params, config, state, np.array([ids[-1]]))
            logits = logits[0]
        elif cache:  # read the context in one pass, keeping each layer's keys and values
            tokens = backend.asarray(np.array([ids[start:]], dtype=np.int64))
            logits, state = decoding.start(params, config, tokens, np.random.default_rng(hash_seed))
            logits = logits[0]
        else:
            tokens = backend.asarray(np.array([ids[start:]], dtype=np.int64))  # (1, <= window)
            hash_rng = np.random.default_rng(hash_seed)  # the same rotations every step
            logits = lm.forward_logits(params, tokens, config, hash_rng)[0, -1]  # (V,)
        ids.append(sample_next(logits, rng, temperature=temperature, top_k=top_k))
    return np.array(ids, dtype=np.int64)
