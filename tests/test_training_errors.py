"""The training tools answer a mistake before the work it would waste, and never score nothing.

Each case is a mistake a user can make with the trainer, the checkpoints, the evaluation or the
command line; each must end in one clear error (naming the argument, flag or file) before the
first training step, or in a correct result. Checked by running a tiny model: a callback counts
the steps that ran before the error.
"""

import json
import os
import stat

import numpy as np
import pytest

from minireformer.reformer_config import ReformerConfig
from minireformer.training import checkpoint, cli, data, evaluation, lm, train
from minireformer.training.settings import TrainConfig

TASK = data.DuplicationTask(n_symbols=7, word_len=7, eval_seed=99)  # 15 tokens a sequence, V = 8
CONFIG = ReformerConfig(vocab_size=8, d_model=8, n_heads=2, d_ff=16, n_layers=1, chunk_len=4,
                        max_len=TASK.length)  # fmt: skip
SETTINGS = dict(steps=2, batch_size=2, eval_every=2, checkpoint_every=2, warmup=1)


def _train(out, tc=None, **kwargs):
    """Train CONFIG on TASK; returns (result or the exception raised, steps run)."""
    steps = []
    try:
        result = train.train(CONFIG, tc or TrainConfig(**SETTINGS), TASK, out=out, progress=False,
                             on_step=lambda step, *_: steps.append(step), **kwargs)  # fmt: skip
    except (ValueError, TypeError) as error:
        return error, steps
    return result, steps


@pytest.mark.parametrize(
    ("make_out", "message"),
    [
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: tmp / "a_file" / "run.npz", "cannot write a checkpoint there"),
    ],
    ids=["out is a directory", "a file where the folder should be"],
)
def test_an_unwritable_checkpoint_path_is_refused_before_the_first_step(
    tmp_path, make_out, message
):
    (tmp_path / "a_file").write_text("not a folder")
    error, steps = _train(make_out(tmp_path))
    assert isinstance(error, checkpoint.CheckpointError) and message in str(error)
    assert steps == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(eval_seq_len=TASK.length + 1), f"evaluation length {TASK.length + 1}: longer than"),
        (dict(seq_len=TASK.length + 4), f"training length {TASK.length + 4}: longer than"),
        (dict(stages=[[1, 8, 2], [1, 32, 2]]), "training length 32"),
    ],
    ids=["evaluation length", "training length", "a stage's length"],
)
def test_lengths_beyond_the_model_are_refused_before_the_first_step(tmp_path, settings, message):
    error, steps = _train(tmp_path / "r.npz", TrainConfig(**{**SETTINGS, **settings}))
    assert isinstance(error, ValueError) and message in str(error)
    assert steps == [] and not (tmp_path / "r.npz").exists()


def test_an_existing_run_is_kept_unless_resumed_or_overwritten(tmp_path):
    out = tmp_path / "r.npz"
    first, _ = _train(out)
    assert first.step == 2
    before = out.read_bytes()
    error, steps = _train(out)
    assert isinstance(error, checkpoint.CheckpointError) and "--overwrite" in str(error)
    assert steps == [] and out.read_bytes() == before
    replaced, steps = _train(out, overwrite=True)
    assert replaced.step == 2 and steps == [1, 2]
    resumed, steps = _train(out, resume=True)  # a finished run returns at once
    assert resumed.step == 2 and steps == []


def test_numpy_scalars_in_the_settings_are_stored_as_plain_numbers(tmp_path):
    tc = TrainConfig(**SETTINGS, lr=np.float32(1e-3), min_lr_ratio=np.float32(0.1),
                     beta2=np.float64(0.99), clip_norm=np.float32(1.0))  # fmt: skip
    assert all(type(getattr(tc, k)) is float for k in ("lr", "min_lr_ratio", "beta2", "clip_norm"))
    result, steps = _train(tmp_path / "r.npz", tc)
    assert steps == [1, 2] and checkpoint.load(tmp_path / "r.npz").train["lr"] == tc.lr
    assert isinstance(result, train.TrainResult)


def test_checkpoints_follow_the_umask_and_sweep_interrupted_saves(tmp_path):
    out = tmp_path / "r.npz"
    stale = tmp_path / ".r.npz.killed.tmp"  # what a save killed half-way leaves
    stale.write_bytes(b"\0" * 1000)
    old = os.umask(0o022)
    try:
        _train(out)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert not stale.exists() and not list(tmp_path.glob(".*.tmp"))


def test_evaluating_nothing_is_an_error_not_a_perfect_score():
    params = lm.init_params(CONFIG, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no target to evaluate"):
        evaluation.evaluate(params, CONFIG, [])
    tokens, _ = TASK.sequences(np.random.default_rng(0), 2)
    all_masked = np.zeros((2, tokens.shape[1] - 1), dtype=bool)
    with pytest.raises(ValueError, match="no target to evaluate"):
        evaluation.evaluate(params, CONFIG, [(tokens, all_masked)])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda text: text.eval_batches(4, len(text.valid_ids)), "do not fit the validation"),
        (lambda text: text.eval_batches(4, 8, 0), "n_batches: expected a positive integer"),
        (lambda text: text.eval_batches(4, 8, -1), "n_batches: expected a positive integer"),
        (lambda text: TASK.eval_batches(4, None, 0), "n_batches: expected a positive integer"),
    ],
    ids=["window longer than the split", "0 batches", "-1 batches", "0 duplication batches"],
)
def test_held_out_batches_of_nothing_are_refused(tmp_path, call, message):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 20, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        call(data.CharText(path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "dup.npz"
    train.train(CONFIG, TrainConfig(**SETTINGS), TASK, out=out, progress=False)
    return out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batches", "0"], "--batches: expected a positive integer, got 0"),
        (["--batches", "-1"], "--batches: expected a positive integer, got -1"),
        (["--seq-len", "0"], "--seq-len: expected a positive integer, got 0"),
    ],
)
def test_eval_flags_of_nothing_are_usage_errors(trained, capsys, flags, message):
    code = cli.main(["eval", str(trained), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_train_refuses_to_replace_a_run_without_overwrite(trained, capsys):
    config = trained.parent / "c.json"
    config.write_text(json.dumps({
        "data": {"task": "duplication", "n_symbols": 7, "word_len": 7, "eval_seed": 99},
        "model": {"kind": "reformer", **{k: v for k, v in lm.config_to_dict(CONFIG).items()
                                         if k != "kind"}},
        "train": SETTINGS,
    }))  # fmt: skip
    argv = ["train", "--config", str(config), "--out", str(trained), "--quiet"]
    before = trained.read_bytes()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "a checkpoint is already there" in err and trained.read_bytes() == before
    assert cli.main([*argv, "--overwrite"]) == 0
