"""Data parallelism: the workers' slices, weighted by their targets, give the whole batch's
loss and gradients."""

import os
import signal

import numpy as np
import pytest

from minireformer import transformer, tree
from minireformer.reformer_config import ReformerConfig
from minireformer.training import lm, parallel, settings, train
from minireformer.training.data import DuplicationTask

TINY = transformer.TransformerConfig(
    vocab_size=11, d_model=16, n_heads=2, d_head=8, d_ff=32, n_layers=2, max_len=12,
    dtype="float64",
)  # fmt: skip


# a Reformer without random hashing (full and local attention), axial positions: every kind of
# gradient leaf the Reformer makes, comparable with the whole batch's
REFORMER_NO_HASHING = ReformerConfig(
    vocab_size=11, d_model=16, n_heads=2, d_ff=32, n_layers=2, attention_types=("full", "local"),
    chunk_len=4, positional="axial", axial_shape=(3, 4), dtype="float64",
)  # fmt: skip


@pytest.mark.parametrize("config", [TINY, REFORMER_NO_HASHING], ids=["transformer", "reformer"])
@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_workers_give_the_whole_batchs_loss_and_gradients(config, workers, masked):
    rng = np.random.default_rng(0)
    params = lm.init_params(config, rng)
    tokens = rng.integers(0, 11, (5, 13))  # 5 sequences: slices of 3 and 2 (or 2, 2 and 1)
    mask = (rng.random((5, 12)) < 0.6) if masked else None
    want, want_grads = lm.loss_and_grads(params, tokens, config, loss_mask=mask)
    got, got_grads = parallel.loss_and_grads(
        params, tokens, config, loss_mask=mask, workers=workers
    )
    assert abs(got - want) < 1e-12
    for a, b in zip(tree.leaves(got_grads), tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_each_worker_hashes_with_its_own_seeded_generator():
    config = ReformerConfig(vocab_size=11, d_model=8, n_heads=2, d_ff=16, n_layers=1,
                            chunk_len=4, n_hashes=2, max_len=12, dtype="float64")  # fmt: skip
    params = lm.init_params(config, np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 11, (4, 13))
    got, _ = parallel.loss_and_grads(params, tokens, config, np.random.default_rng(2), workers=2)
    seeds = np.random.default_rng(2).integers(0, 2**63 - 1, size=2)
    halves = [
        lm.loss_and_grads(params, tokens[rows], config, np.random.default_rng(seed))[0]
        for rows, seed in zip((slice(0, 2), slice(2, 4)), seeds)
    ]
    assert abs(got - np.mean(halves)) < 1e-12


def test_training_with_two_workers_resumes_bit_identically(tmp_path):
    """The workers' Generators are seeded from the model Generator, whose state the checkpoint
    keeps: 2 steps, stop, resume to 4 equals 4 steps straight, with LSH rotations drawn."""
    task = DuplicationTask(n_symbols=7, word_len=7, eval_seed=99)
    config = ReformerConfig(vocab_size=8, d_model=16, n_heads=2, d_ff=32, n_layers=1,
                            chunk_len=4, n_hashes=2, max_len=task.length)  # fmt: skip
    tc = settings.TrainConfig(steps=4, batch_size=4, lr=1e-2, warmup=1, eval_every=2,
                              checkpoint_every=2, workers=2)  # fmt: skip
    straight = train.train(config, tc, task, progress=False)

    def stop_after_two(step, params, info):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the loop saves and stops

    out = tmp_path / "r.npz"
    first = train.train(config, tc, task, out=out, progress=False, on_step=stop_after_two)
    assert first.interrupted and first.step == 2
    resumed = train.train(config, tc, task, out=out, resume=True, progress=False)
    assert resumed.step == 4
    for a, b in zip(tree.leaves(straight.params), tree.leaves(resumed.params), strict=True):
        assert np.array_equal(a, b)
