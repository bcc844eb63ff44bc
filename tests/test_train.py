"""The training loop: schedule, learning, bit-identical resumption, faults and Ctrl-C."""

import math
import os
import signal

import numpy as np
import pytest

from minireformer.reformer_config import ReformerConfig
from minireformer.training import checkpoint, data, evaluation, lm, settings, train
from minireformer.transformer import TransformerConfig
from minireformer.tree import leaves

TASK = data.DuplicationTask(n_symbols=7, word_len=7, eval_seed=99)  # L = 16, V = 8


def tiny_reformer(**kw):
    base = dict(vocab_size=8, d_model=32, n_heads=2, d_ff=64, n_layers=1, chunk_len=4, max_len=16)
    return ReformerConfig(**{**base, **kw})


def tiny_transformer(**kw):
    base = dict(vocab_size=8, d_model=32, n_heads=2, d_head=16, d_ff=64, n_layers=2, max_len=16)
    return TransformerConfig(**{**base, **kw})


def run_settings(**kw):
    base = dict(
        steps=6,
        batch_size=4,
        lr=3e-3,
        warmup=2,
        eval_every=3,
        eval_batches=1,
        checkpoint_every=2,
        seed=5,
    )
    return settings.TrainConfig(**{**base, **kw})


def test_learning_rate_warms_up_then_decays():
    tc = settings.TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    rates = [settings.learning_rate(s, tc) for s in range(1, 101)]
    assert rates[4] == pytest.approx(0.5) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))  # cosine: never increases
    assert rates[-1] == pytest.approx(0.1)
    rs = settings.TrainConfig(steps=100, lr=1.0, warmup=25, schedule="rsqrt")
    assert settings.learning_rate(100, rs) == pytest.approx(0.5)  # sqrt(25 / 100)


def test_a_tiny_duplication_model_learns_the_copy():
    """Full attention, one layer: from chance (1/7) to above 99% second-half accuracy on fresh
    sequences within 100 steps (a few seconds)."""
    cfg = tiny_reformer(attention_types=("full",))
    tc = settings.TrainConfig(
        steps=100, batch_size=16, lr=3e-3, warmup=20, eval_every=50, eval_batches=4
    )
    held_out = TASK.eval_batches(16, None, 4)
    untrained = lm.init_params(cfg, np.random.default_rng([tc.seed, 0]))
    assert evaluation.evaluate(untrained, cfg, held_out)["accuracy"] < 0.3
    res = train.train(cfg, tc, TASK, progress=False)
    assert evaluation.evaluate(res.params, cfg, held_out)["accuracy"] > 0.99
    assert res.log[-1, 3] > 0.99  # the log's last evaluation says the same


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make", [tiny_reformer, tiny_transformer])
def test_resume_is_bit_identical_to_training_straight(tmp_path, make, dtype):
    """N steps, save, load, N more == 2N straight; LSH rotations and dropout draw from the saved
    Generators, so a resume that lost them would differ."""
    kw = dict(dtype=dtype, dropout=0.1)
    if make is tiny_reformer:
        kw.update(attention_types=("lsh",), n_hashes=2)
    cfg = make(**kw)
    straight = train.train(cfg, run_settings(), TASK, progress=False)
    first = train.train(
        cfg, run_settings(), TASK, out=tmp_path / "a.npz", progress=False, on_step=_stop_at(3)
    )
    assert first.interrupted and first.step == 3
    resumed = train.train(
        cfg, run_settings(), TASK, out=tmp_path / "a.npz", resume=True, progress=False
    )
    assert resumed.step == 6
    for a, b in zip(leaves(straight.params), leaves(resumed.params)):
        assert a.dtype == np.dtype(dtype) and np.array_equal(a, b)
    assert np.array_equal(straight.log[:, :4], resumed.log[:, :4], equal_nan=True)


def _stop_at(step):
    """An on_step hook that presses Ctrl-C after ``step`` (the loop saves and stops)."""

    def hook(s, params, info):
        if s == step:
            os.kill(os.getpid(), signal.SIGINT)

    return hook


def test_ctrl_c_writes_a_checkpoint_that_resumes(tmp_path):
    out = tmp_path / "run.npz"
    res = train.train(
        tiny_reformer(),
        run_settings(checkpoint_every=100),
        TASK,
        out=out,
        progress=False,
        on_step=_stop_at(1),
    )
    assert res.interrupted and checkpoint.load(out).step == 1
    done = train.train(
        tiny_reformer(),
        run_settings(checkpoint_every=100),
        TASK,
        out=out,
        resume=True,
        progress=False,
    )
    assert done.step == 6 and not done.interrupted
    again = train.train(
        tiny_reformer(),
        run_settings(checkpoint_every=100),
        TASK,
        out=out,
        resume=True,
        progress=False,
    )
    assert again.step == 6  # a finished run returns at once


def test_a_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real = lm.loss_and_grads
    calls = []

    def poisoned(*args, **kwargs):
        loss, grads = real(*args, **kwargs)
        calls.append(loss)
        return (math.nan if len(calls) == 3 else loss), grads

    monkeypatch.setattr(train.lm, "loss_and_grads", poisoned)
    out = tmp_path / "run.npz"
    with pytest.raises(train.TrainingError, match=r"step 3: the training loss is nan.*step 2"):
        train.train(tiny_reformer(), run_settings(), TASK, out=out, progress=False)
    assert checkpoint.load(out).step == 2


def test_non_finite_gradients_stop_with_the_step_too(tmp_path, monkeypatch):
    real = lm.loss_and_grads
    calls = []

    def poisoned(*args, **kwargs):
        loss, grads = real(*args, **kwargs)
        calls.append(loss)
        if len(calls) == 5:
            grads["head"]["out"]["b"][0] = np.inf
        return loss, grads

    monkeypatch.setattr(train.lm, "loss_and_grads", poisoned)
    out = tmp_path / "run.npz"
    with pytest.raises(train.TrainingError, match=r"step 5: grads: expected finite.*step 4"):
        train.train(tiny_reformer(), run_settings(), TASK, out=out, progress=False)
    assert checkpoint.load(out).step == 4


def test_resume_refuses_another_config_or_training_settings(tmp_path):
    out = tmp_path / "run.npz"
    train.train(tiny_reformer(), run_settings(steps=2), TASK, out=out, progress=False)
    with pytest.raises(checkpoint.CheckpointError, match="d_model=32 .expected 16"):
        train.train(
            tiny_reformer(d_model=16), run_settings(), TASK, out=out, resume=True, progress=False
        )
    with pytest.raises(checkpoint.CheckpointError, match="holds a reformer model"):
        train.train(tiny_transformer(), run_settings(), TASK, out=out, resume=True, progress=False)
    with pytest.raises(checkpoint.CheckpointError, match="other training settings .lr"):
        train.train(
            tiny_reformer(),
            run_settings(steps=2, lr=1e-2),
            TASK,
            out=out,
            resume=True,
            progress=False,
        )


def test_curriculum_stages_change_length_and_batch():
    src = data.CharText(valid_fraction=0.1)
    cfg = tiny_reformer(vocab_size=src.vocab_size, max_len=32, attention_types=("local",))
    tc = settings.TrainConfig(stages=[[2, 8, 4], [1, 32, 1]], eval_every=3, eval_batches=1, lr=1e-3)
    seen = []
    orig = src.batch

    def spy(rng, batch, length):
        seen.append((batch, length))
        return orig(rng, batch, length)

    src.batch = spy
    res = train.train(cfg, tc, src, progress=False)
    assert tc.steps == 3 and res.step == 3 and seen == [(4, 8), (4, 8), (1, 32)]


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(schedule="linear"), "schedule: expected one of"),
        (dict(steps=0), "steps: expected a positive integer"),
        (dict(warmup=-1), "warmup: expected an integer >= 0"),
        (dict(lr=-1.0), "lr: expected a positive number"),
        (dict(stages=[[10, 64]]), "stages: expected"),
        (dict(min_lr_ratio=2.0), "min_lr_ratio"),
    ],
)
def test_bad_training_settings_name_the_field(kw, message):
    with pytest.raises((ValueError, TypeError), match=message):
        settings.TrainConfig(**kw)


def test_vocabulary_mismatch_between_data_and_model_is_named():
    with pytest.raises(ValueError, match="vocab_size: the data has 8 symbols"):
        train.train(tiny_reformer(vocab_size=20), run_settings(), TASK, progress=False)


def test_random_offsets_resume_bit_identically_and_cover_the_table(tmp_path):
    src = data.CharText(valid_fraction=0.1)
    cfg = tiny_reformer(vocab_size=src.vocab_size, max_len=64, attention_types=("local",))
    tc = run_settings(seq_len=8, random_offset=True, steps=40, checkpoint_every=20)
    offsets = []
    real = lm.loss_and_grads

    def spy(*args, offset=0, **kwargs):
        offsets.append(offset)
        return real(*args, offset=offset, **kwargs)

    straight = train.train(cfg, tc, src, progress=False)
    first = train.train(cfg, tc, src, out=tmp_path / "a.npz", progress=False, on_step=_stop_at(20))
    train.lm.loss_and_grads = spy
    try:
        resumed = train.train(cfg, tc, src, out=tmp_path / "a.npz", resume=True, progress=False)
    finally:
        train.lm.loss_and_grads = real
    assert first.step == 20 and resumed.step == 40
    for a, b in zip(leaves(straight.params), leaves(resumed.params)):
        assert np.array_equal(a, b)
    assert len(offsets) == 20 and max(offsets) > 28 and min(offsets) < 28 and max(offsets) <= 56
