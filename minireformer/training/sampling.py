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
from ..checks import check_nonnegative_int, check_nonnegative_number, check_positive_int
from . import decoding, lm


def check_prompt(prompt, vocab_size: int) -> list:
    """A prompt of token ids: 1-D integers in [0, V), at least one; returned as a list."""
    ids = np.asarray(prompt)
    if ids.size == 0:
        raise ValueError("prompt: expected at least one token, got none")
    if ids.dtype.kind not in "iu":
        what = "a str (encode text first)" if ids.dtype.kind == "U" else f"dtype {ids.dtype}"
        raise TypeError(f"prompt: expected integer token ids, got {what}")
    if ids.ndim != 1:
        raise ValueError(f"prompt: expected a 1-D sequence of ids, got shape {ids.shape}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"prompt: expected token ids in [0, {vocab_size}), got {ids[:8].tolist()}")
    return ids.tolist()


def sample_next(logits, rng, *, temperature: float = 1.0, top_k: int | None = None) -> int:
    """One token id from (V,) finite logits: greedy at temperature 0, else softmax(logits / T)
    over the ``top_k`` largest logits (None: all).

    The logits are shifted by their maximum before the division, so a tiny temperature gives
    probabilities 1 and 0 (the greedy limit) instead of an overflow.
    """
    checks.check_rng(rng)
    temperature = check_nonnegative_number("temperature", temperature)
    logits = np.asarray(backend.to_numpy(logits), dtype=np.float64)
    if logits.ndim != 1 or logits.size == 0 or not np.isfinite(logits).all():
        raise ValueError(f"logits: expected a 1-D array of finite numbers, got {logits.shape}")
    if top_k is not None:
        top_k = check_positive_int("top_k", top_k)
        if top_k < logits.size:  # the top_k largest logits stay, whatever the temperature
            cut = np.partition(logits, -top_k)[-top_k]
            logits = np.where(logits >= cut, logits, -np.inf)
    if temperature == 0:
        return int(np.argmax(logits))
    with np.errstate(over="ignore"):  # a tiny temperature sends the shifted logits to -inf
        p = np.exp((logits - logits.max()) / temperature)  # (V,) in [0, 1], 1 at the maximum
    return int(rng.choice(p.size, p=p / p.sum()))


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
    ids = check_prompt(prompt, config.vocab_size)
    n_new = check_nonnegative_int("n_new", n_new)
    temperature = check_nonnegative_number("temperature", temperature)
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
