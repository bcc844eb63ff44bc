"""The exact memory model against tracemalloc, over a small grid of shapes.

memory_model counts, from the code, the arrays alive at the peak of an attention layer's forward
and backward and of a reversible training step; measure_peak records what NumPy really allocates.
They must agree within 15% on every case, for every attention kind, length, width, chunk length,
number of rounds, semantics and depth tried here (benchmarks/bench_memory.py runs a larger grid).
"""

import itertools

import numpy as np
import pytest

from minireformer import reformer
from minireformer.attention import shared_qk_attention_backward, shared_qk_attention_forward
from minireformer.local_attention import local_attention_backward, local_attention_forward
from minireformer.lsh_attention import lsh_attention_backward, lsh_attention_forward
from minireformer.measuring import memory, memory_model
from minireformer.reformer_config import ReformerConfig

TOLERANCE = 0.15


def measured_attention(kind, batch, heads, length, chunk_len, n_hashes, released, mask):
    rng = np.random.default_rng(0)
    qk, v, dout = (rng.standard_normal((batch, heads, length, 16)).astype(np.float32)
                   for _ in range(3))  # fmt: skip
    pad = None
    if mask:
        pad = rng.random((batch, length)) > 0.2
        pad[:, 0] = True

    def run():
        if kind == "lsh":
            _, cache = lsh_attention_forward(
                qk, v, chunk_len=chunk_len, n_hashes=n_hashes, rng=np.random.default_rng(1),
                causal=True, mask=pad, semantics="released" if released else "paper",
            )  # fmt: skip
            return lsh_attention_backward(dout, cache)
        if kind == "local":
            _, cache = local_attention_forward(qk, v, chunk_len=chunk_len, causal=True, mask=pad)
            return local_attention_backward(dout, cache)
        _, cache = shared_qk_attention_forward(qk, v, causal=True, mask=pad)
        return shared_qk_attention_backward(dout, cache)

    return memory.measure_peak(run)[1]


ATTENTION_CASES = [
    (kind, *shape)
    for kind, shape in itertools.product(
        ["lsh", "local", "full"],
        itertools.product([(1, 1), (2, 3)], [1000, 2048], [16, 64], [1, 4], [False, True]),
    )
    if kind == "lsh" or shape[3] == 1  # rounds and semantics are LSH's
]


@pytest.mark.parametrize("kind, heads, length, chunk_len, n_hashes, released", ATTENTION_CASES)
def test_attention_model_predicts_the_measured_peak(
    kind, heads, length, chunk_len, n_hashes, released
):
    batch, heads = heads
    measured = measured_attention(kind, batch, heads, length, chunk_len, n_hashes, released,
                                  mask=length == 1000)  # fmt: skip
    model = memory_model.attention_peak_model(
        kind, batch=batch, n_heads=heads, length=length, d_head=16, chunk_len=chunk_len,
        n_hashes=n_hashes, mask=length == 1000, semantics="released" if released else "paper",
    )  # fmt: skip
    assert model.total == sum(model.terms.values()) and model.phase
    assert abs(model.total / measured - 1) < TOLERANCE, (model.phase, model.total, measured)


def step_config(length, n_layers, n_heads, chunk_len, n_hashes, kind, chunked, group,
                reversible=True):  # fmt: skip
    return ReformerConfig(
        vocab_size=64, d_model=64, n_heads=n_heads, d_ff=128, n_layers=n_layers,
        attention_types=(kind,), n_hashes=n_hashes, chunk_len=chunk_len,
        ff_chunk=128 if chunked else None, loss_chunk=128 if chunked else None,
        n_parallel_heads=group, positional="sinusoidal", max_len=length, reversible=reversible,
    )  # fmt: skip


@pytest.mark.parametrize(
    "length, n_layers, n_heads, chunk_len, n_hashes, kind, chunked, group, reversible",
    [
        (512, 1, 4, 16, 4, "lsh", True, None, True),
        (1024, 3, 1, 64, 1, "lsh", False, None, True),
        (1024, 2, 4, 16, 2, "lsh", True, 1, True),
        (1024, 2, 4, 32, 1, "local", True, 2, True),
        (512, 2, 2, 16, 1, "full", False, None, True),
        (512, 3, 2, 16, 1, "full", False, None, False),  # stored activations
        (1024, 2, 2, 32, 2, "lsh", True, None, False),
    ],
)
def test_step_model_predicts_the_measured_peak(
    length, n_layers, n_heads, chunk_len, n_hashes, kind, chunked, group, reversible
):
    config = step_config(length, n_layers, n_heads, chunk_len, n_hashes, kind, chunked, group,
                         reversible)  # fmt: skip
    rng = np.random.default_rng(0)
    params = reformer.init_reformer(config, rng)
    tokens = rng.integers(0, 64, size=(1, length + 1))  # the model reads L
    _, measured = memory.measure_training_step(
        lambda p: reformer.loss_and_grads(p, tokens, config, rng=np.random.default_rng(1)), params
    )
    model = memory_model.step_peak_model(config, 1, length)
    assert model.total == sum(model.terms.values()) and model.phase
    assert abs(model.total / measured - 1) < TOLERANCE, (model.phase, model.total, measured)
