"""Validation at the doors: a model checks its input once, and its inner ops trust it.

A training step of a tiny 2-layer all-LSH Reformer is profiled, and every call into ``checks.py``
is counted: the door checks of the inner ops (each a call that returns at its first line inside
``checks.trusted()``) and the checks that do work (the step's own door: tokens, parameters, rng).
The same ops called outside a model check their arguments.
"""

import cProfile
import pstats

import numpy as np
import pytest

from minireformer import checks, layers, reformer
from minireformer.reformer_config import ReformerConfig

TINY = ReformerConfig(
    vocab_size=11, d_model=16, n_heads=2, d_ff=32, n_layers=2, attention_types=("lsh",),
    n_hashes=2, chunk_len=4, max_len=32,
)  # fmt: skip


def _check_calls(fn):
    """{function name: calls} of everything in checks.py during ``fn()``."""
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    counts = {}
    for (path, _, name), (_, calls, *_) in pstats.Stats(profiler).stats.items():
        if path.endswith("checks.py"):
            counts[name] = counts.get(name, 0) + calls
    return counts


def test_a_training_step_validates_once_at_its_door():
    rng = np.random.default_rng(0)
    params = reformer.init_reformer(TINY, rng)
    tokens = rng.integers(0, 11, (2, 33))
    reformer.loss_and_grads(params, tokens, TINY, rng)  # the specs of the config, once
    counts = _check_calls(lambda: reformer.loss_and_grads(params, tokens, TINY, rng))
    passed_over = counts.pop("guarded", 0)  # inner ops' doors: return at once, inside trusted()
    working = sum(counts.values())
    assert passed_over + working < 150, counts
    assert working <= 20, counts  # the door of the step: tokens, the parameter tree, the rng
    assert counts.get("check_float_array", 0) == 0  # no inner op looked at an array


def test_the_same_op_checks_outside_a_model_and_trusts_inside():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="w: expected dtype float64"):
        layers.linear_forward(x, np.ones((3, 4), np.float32))
    with checks.trusted():  # inside a model's step, the door is passed over
        out, _ = layers.linear_forward(x, np.ones((3, 4)))
    assert out.shape == (2, 4)
