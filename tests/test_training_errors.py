"""The training tools answer a mistake before the work it would waste, and never score nothing.

Each case is a mistake a user can make with the trainer, the checkpoints, the evaluation or the
command line; each must end in one clear error (naming the argument, flag or file) before the
first training step, or in a correct result. Checked by running a tiny model: a callback counts
the steps that ran before the error.
"""

import json
import os
import signal
import stat
import subprocess
import sys

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


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda text: text.decode([-1]), ValueError, r"ids: expected ids in \[0, 4\)"),
        (lambda text: text.decode([1.7]), TypeError, "ids: expected a 1-D sequence of integer"),
        (lambda text: text.decode([[1]]), TypeError, "ids: expected a 1-D sequence of integer"),
        (lambda text: text.encode(123), TypeError, "text: expected a str, got int"),
        (lambda text: text.batch(None, 2, 4), TypeError, "rng: expected a numpy.random.Generator"),
        (lambda text: data.CharText(text.path, valid_fraction="0.1"), TypeError, "valid_fraction"),
        (lambda text: data.DuplicationTask(eval_seed=-1), ValueError, "eval_seed: expected an"),
        (lambda text: TASK.sequences(None, 2), TypeError, "rng: expected a numpy.random.Gen"),
    ],
    ids=[
        "decode -1",
        "decode 1.7",
        "decode 2-D",
        "encode 123",
        "batch without rng",
        "valid_fraction as str",
        "negative eval_seed",
        "sequences without rng",
    ],  # fmt: skip
)
def test_data_sources_check_their_inputs(tmp_path, call, error, message):
    path = tmp_path / "t.txt"
    path.write_text("abcd" * 50, encoding="utf-8")
    with pytest.raises(error, match=message):
        call(data.CharText(path))


def test_a_text_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 ".encode("latin-1") * 20)
    with pytest.raises(ValueError, match=f"data: {path} is not UTF-8 text"):
        data.CharText(path)


def test_a_text_checkpoint_refuses_another_text_of_the_same_name(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question. " * 40, encoding="utf-8")
    out = tmp_path / "lm.npz"
    config = lm.config_from_dict(dict(kind="transformer", vocab_size=data.CharText(text).vocab_size,
                                      d_model=8, n_heads=2, d_head=4, d_ff=16, n_layers=1,
                                      max_len=16))  # fmt: skip
    tc = TrainConfig(steps=1, batch_size=2, seq_len=16, eval_every=1, warmup=1)
    train.train(config, tc, data.CharText(text), out=out, progress=False)
    assert cli.main(["eval", str(out), "--batches", "1"]) == 0
    capsys.readouterr()
    original = text.read_text(encoding="utf-8")
    text.write_text("T" + original[1:], encoding="utf-8")  # one character replaced
    for command in (["eval", str(out)], ["sample", str(out), "--n", "3"]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert "is not the text the model was trained on" in err and str(text) in err


def _rewrite(path, out, *, meta=None, arrays=None):
    """A copy of checkpoint ``path`` at ``out`` with its meta (a function of the dict) or its
    arrays (a function of the dict) changed."""
    with np.load(path, allow_pickle=False) as z:
        contents = {k: z[k] for k in z.files}
    if meta is not None:
        contents["meta"] = np.array(json.dumps(meta(json.loads(str(contents["meta"])))))
    if arrays is not None:
        contents = arrays(contents)
    with open(out, "wb") as f:
        np.savez(f, **contents)
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(meta=lambda m: [m]), "its meta is not a JSON object"),
        (dict(meta=lambda m: {k: v for k, v in m.items() if k != "model"}), "no 'model'"),
        (dict(meta=lambda m: {k: v for k, v in m.items() if k != "step"}), "no 'step'"),
        (dict(meta=lambda m: {**m, "step": "abc"}), "step 'abc' is not an integer"),
        (dict(meta=lambda m: {**m, "step": -3}), "step -3 is not an integer"),
        (dict(meta=lambda m: {**m, "train": None}), "its 'train' is not a JSON object"),
        (dict(arrays=lambda a: {**a, "log": np.zeros((3, 2))}), r"log has shape \(3, 2\)"),
    ],
    ids=[
        "meta a list",
        "no model",
        "no step",
        "step abc",
        "negative step",
        "train null",
        "log badly shaped",
    ],  # fmt: skip
)
def test_a_damaged_checkpoint_is_refused_with_what_is_wrong(trained, tmp_path, change, message):
    bad = _rewrite(trained, tmp_path / "bad.npz", **change)
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load(bad)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a text file\n", "not a minireformer checkpoint"),
        (bytes(range(256)) * 4, "not a minireformer checkpoint"),
        (None, "not a minireformer checkpoint"),  # a .npy array
    ],
    ids=["text", "random bytes", ".npy"],
)
def test_a_file_that_is_no_checkpoint_is_named_so(tmp_path, content, message):
    path = tmp_path / "x.npz"
    if content is None:
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    else:
        path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load(path)


def test_a_foreign_random_state_is_refused_when_used(trained, tmp_path):
    mt = np.random.Generator(np.random.MT19937(0)).bit_generator.state
    state = {**mt, "state": {k: v.tolist() if hasattr(v, "tolist") else v
                             for k, v in mt["state"].items()}}  # fmt: skip
    bad = _rewrite(trained, tmp_path / "mt.npz", meta=lambda m: {**m, "rng": {"data": state}})
    with pytest.raises(checkpoint.CheckpointError, match="'data' is not a PCG64 state"):
        checkpoint.load(bad).generator("data")


def test_save_refuses_what_load_would_refuse(tmp_path):
    params = lm.init_params(CONFIG, np.random.default_rng(0))
    params["head"]["out"]["b"] = np.zeros(3, dtype=np.float32)  # another vocabulary
    with pytest.raises(ValueError, match="params.head.out.b"):
        checkpoint.save(tmp_path / "a.npz", params=params, config=CONFIG, step=1)
    good = lm.init_params(CONFIG, np.random.default_rng(0))
    with pytest.raises(ValueError, match="step: expected an integer >= 0"):
        checkpoint.save(tmp_path / "b.npz", params=good, config=CONFIG, step=-3)
    with pytest.raises(ValueError, match="step: 99 is past the run's 4 steps"):
        checkpoint.save(tmp_path / "c.npz", params=good, config=CONFIG, step=99, train={"steps": 4})
    assert not list(tmp_path.iterdir())


def test_sigterm_stops_like_ctrl_c_with_a_checkpoint(tmp_path):
    out = tmp_path / "r.npz"

    def terminate_at_one(step, *_):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    result = train.train(CONFIG, TrainConfig(**{**SETTINGS, "steps": 4}), TASK, out=out,
                         progress=False, on_step=terminate_at_one)  # fmt: skip
    assert result.interrupted and result.step == 1 and checkpoint.load(out).step == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the old handler is back


def _config_file(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (lambda tmp: ["train", "--config", str(tmp), "--out", "x.npz"], "cannot read"),
        (lambda tmp: ["train", "--config", _config_file(tmp, "c.json", b'{"model": "\xff"}'),
                      "--out", "x.npz"], "is not UTF-8 text"),
        (lambda tmp: ["train", "--config", _config_file(tmp, "c.json", b'{"train": null}'),
                      "--out", "x.npz"], "'train' must be a JSON object, got None"),
        (lambda tmp: ["train", "--config", _config_file(tmp, "c.json", b'{"data": "text"}'),
                      "--out", "x.npz"], "'data' must be a JSON object, got 'text'"),
        (lambda tmp: ["train", "--task", "duplication", "--data", "f.txt", "--out", "x.npz"],
         "--data: a text file is for --task text"),
        (lambda tmp: ["train", "--task", "duplication", "--lr", "-1e-3", "--out", "x.npz"],
         "lr: expected a positive number, got -0.001"),
        (lambda tmp: ["reproduce", "--only", ""], "--only: expected some of"),
    ],
    ids=["config a directory", "config not UTF-8", "train null", "data a string",
         "--data with duplication", "negative lr in e-notation", "reproduce nothing"],
)  # fmt: skip
def test_command_line_mistakes_get_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert cli.main(argv(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_sample_refuses_a_text_prompt_for_the_duplication_task(trained, capsys):
    assert cli.main(["sample", str(trained), "--prompt", "hello", "--n", "2"]) == 2
    assert "--prompt: a text prompt is for text models" in capsys.readouterr().err
    assert cli.main(["sample", str(trained), "--n", "2"]) == 0


def test_the_installed_command_answers_a_mistake_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "minireformer", "train", "--config", str(tmp_path), "--out", "x"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"minireformer train: error: --config: cannot read {tmp_path} (Is a directory)"
    ]


def test_the_earlier_probes_obscure_cases_name_the_argument():
    from minireformer import lsh, positional

    with pytest.raises(
        ValueError, match=r"rotations: expected no empty axis, got shape \(4, 1, 0\)"
    ):
        lsh.hash_vectors(np.ones((1, 1, 8, 4)), np.zeros((4, 1, 0)))
    p = positional.init_axial(np.random.default_rng(0), (2, 4), (4, 4))
    with pytest.raises(ValueError, match=r"missing \['axial_2'\]"):
        positional.axial_forward({"axial_1": p["axial_1"]}, 8)


@pytest.mark.parametrize("kind", ["transformer", "reformer"])
def test_training_at_the_full_length_trains_every_positional_row(tmp_path, kind):
    """Windows of max_len + 1 tokens: the model reads max_len positions and every one of them is
    scored, so no row of the positional table keeps its initial value (the shipped Transformer,
    trained on windows of max_len tokens, never trained its last row)."""
    text = tmp_path / "t.txt"
    text.write_text("all the world's a stage, and all the men and women merely players. " * 20)
    source = data.CharText(text)
    model = dict(kind=kind, vocab_size=source.vocab_size, d_model=8, n_heads=2, d_ff=16,
                 n_layers=1, max_len=16)  # fmt: skip
    if kind == "transformer":
        model["d_head"] = 4
    else:
        model.update(chunk_len=4, positional="learned")
    config = lm.config_from_dict(model)
    tc = TrainConfig(steps=2, batch_size=2, seq_len=16, eval_every=2, warmup=1)
    before = lm.init_params(config, np.random.default_rng([tc.seed, 0]))["embed"]["positions"]
    after = train.train(config, tc, source, progress=False).params["embed"]["positions"]
    assert before.shape == (16, 8)
    assert (np.abs(after - before).sum(axis=1) > 0).all()  # every row of 0..15 moved
