"""The command line: every command on a tiny config, and a one-line error (exit 2) for mistakes."""

import json
import subprocess
import sys

import pytest

from minireformer.training import checkpoint, cli, experiments

TINY = [
    "--d-model",
    "16",
    "--n-heads",
    "2",
    "--d-ff",
    "32",
    "--n-layers",
    "1",
    "--chunk-len",
    "8",
    "--batch-size",
    "2",
    "--eval-every",
    "2",
]


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_eval_sample_memory_on_a_tiny_text_model(tmp_path, capsys):
    ck = tmp_path / "lm.npz"
    train_argv = ["train", "--task", "text", *TINY, "--seq-len", "32", "--steps", "3", "--out", ck]
    code, out, _ = run(capsys, *train_argv, "--quiet")
    assert code == 0 and json.loads(out)["step"] == 3 and checkpoint.load(ck).step == 3
    code, out, _ = run(capsys, *train_argv, "--quiet", "--resume")
    assert code == 0 and json.loads(out)["step"] == 3  # already finished
    code, out, _ = run(capsys, "eval", ck, "--batches", "2")
    assert code == 0 and 0 < json.loads(out)["bits"] < 10
    code, out, _ = run(capsys, "eval", ck, "--batches", "1", "--attention", "full")
    assert code == 0
    code, out, _ = run(capsys, "sample", ck, "--prompt", "ROMEO:", "--n", "5", "--seed", "3")
    assert code == 0 and out.startswith("ROMEO:") and len(out.rstrip("\n")) >= 11
    code, out, _ = run(capsys, "memory", "--task", "text", *TINY, "--seq-len", "64", "--steps", "1")
    info = json.loads(out)
    assert code == 0 and info["measured_step_peak_bytes"] > 0 and info["table3_row"] == "reformer"


def test_config_file_and_transformer(tmp_path, capsys):
    cfg = {
        "data": {"task": "duplication", "n_symbols": 5, "word_len": 5},
        "model": {
            "kind": "transformer",
            "d_model": 16,
            "n_heads": 2,
            "d_head": 8,
            "d_ff": 32,
            "n_layers": 1,
        },
        "train": {"steps": 2, "batch_size": 4, "eval_every": 1},
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    code, out, _ = run(capsys, "train", "--config", path, "--out", tmp_path / "t.npz", "--quiet")
    assert code == 0
    ck = checkpoint.load(tmp_path / "t.npz")
    assert ck.config.max_len == 11 and ck.data["word_len"] == 5  # reads 2 * 5 + 1 tokens
    code, out, _ = run(capsys, "eval", tmp_path / "t.npz", "--batches", "1")
    assert code == 0 and json.loads(out)["targets"] == 100 * 5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--task", "translate", "--out", "x.npz"], "invalid choice: 'translate'"),
        (["train", "--wings", "2", "--out", "x.npz"], "unrecognized arguments: --wings"),
        (["train", "--task", "text", "--data", "absent.txt", "--out", "x.npz"], "no text file"),
        (["train", "--config", "absent.json", "--out", "x.npz"], "--config: no file"),
        (["eval", "absent.npz"], "checkpoint: no file"),
        (["reproduce", "--only", "mnist"], "--only: unknown experiment"),
        (["sample", "{tiny}", "--prompt", "\u00e9t\u00e9"], "not in the vocabulary"),
        (["eval", "{tiny}", "--n-hashes", "0"], "n_hashes: expected a positive integer"),
    ],
)
def test_mistakes_exit_2_with_one_line(tmp_path, capsys, argv, message):
    if any("{tiny}" in a for a in argv):
        ck = tmp_path / "tiny.npz"
        cli.main(
            [
                "train",
                "--task",
                "text",
                *TINY,
                "--seq-len",
                "16",
                "--steps",
                "1",
                "--out",
                str(ck),
                "--quiet",
            ]
        )
        capsys.readouterr()
        argv = [a.replace("{tiny}", str(ck)) for a in argv]
    argv = [a.replace("x.npz", str(tmp_path / "x.npz")) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "model, message",
    [
        (
            {
                "kind": "reformer",
                "d_model": 16,
                "n_heads": 2,
                "d_ff": 32,
                "n_layers": 1,
                "wings": 2,
            },
            "unknown field(s) for reformer: wings",
        ),
        (
            {"kind": "reformer", "d_model": "16", "n_heads": 2, "d_ff": 32, "n_layers": 1},
            "d_model: expected a positive integer, got '16'",
        ),
        ({"kind": "rnn"}, "model kind: expected one of"),
    ],
)
def test_bad_config_files_name_the_field(tmp_path, capsys, model, message):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps({"data": {"task": "duplication", "n_symbols": 5, "word_len": 5}, "model": model})
    )
    code, _, err = run(capsys, "train", "--config", path, "--out", tmp_path / "x.npz")
    assert code == 2 and message in err


def test_a_checkpoint_of_another_config_is_refused_on_resume(tmp_path, capsys):
    ck = tmp_path / "a.npz"
    run(
        capsys,
        "train",
        "--task",
        "text",
        *TINY,
        "--seq-len",
        "16",
        "--steps",
        "1",
        "--out",
        ck,
        "--quiet",
    )
    code, _, err = run(
        capsys,
        "train",
        "--task",
        "text",
        *TINY[:-2],
        "--d-model",
        "32",
        "--seq-len",
        "16",
        "--steps",
        "1",
        "--out",
        ck,
        "--resume",
        "--quiet",
    )
    assert code == 2 and "another config: d_model=16 (expected 32)" in err


def test_reproduce_runs_a_shrunken_duplication_experiment(tmp_path, capsys, monkeypatch):
    for name in ("RUNS", "CHECKPOINTS", "RESULTS"):
        monkeypatch.setattr(experiments, name, tmp_path / name.lower())
    monkeypatch.setenv("MINIREFORMER_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setitem(
        experiments.DUPLICATION,
        "duplication",
        dict(
            figure="07_table2",
            data={"task": "duplication", "n_symbols": 5, "word_len": 5, "eval_seed": 1},
            model=dict(vocab_size=6, d_model=16, n_heads=2, d_ff=32, n_layers=1, chunk_len=4),
            train=dict(batch_size=4, eval_every=2, checkpoint_every=2, seed=0),
            rows={"full": ("full", 1, 3), "lsh2": ("lsh", 2, 3)},
        ),
    )
    monkeypatch.setattr(experiments, "DUPLICATION_EVAL_SEQUENCES", 100)
    code, out, _ = run(capsys, "reproduce", "--only", "duplication", "--quiet")
    assert code == 0 and "duplication: wrote" in out
    result = json.loads((tmp_path / "results" / "duplication.json").read_text())
    assert set(result["paper_semantics"]) == {"full", "lsh2"}
    assert set(result["paper_semantics"]["full"]) == {"full", "lsh1", "lsh2", "lsh4", "lsh8"}
    assert (tmp_path / "checkpoints" / "duplication_lsh2.npz").exists()
    assert (tmp_path / "figures" / "07_table2.png").exists()
    assert checkpoint.load(tmp_path / "checkpoints" / "duplication_lsh2.npz").adam_state is None


def test_reproduce_runs_shrunken_shakespeare_models_and_compares_them(
    tmp_path, capsys, monkeypatch
):
    for name in ("RUNS", "CHECKPOINTS", "RESULTS"):
        monkeypatch.setattr(experiments, name, tmp_path / name.lower())
    monkeypatch.setenv("MINIREFORMER_FIGURES", str(tmp_path / "figures"))
    small = dict(vocab_size=65, d_model=16, n_heads=2, d_ff=32, n_layers=2)
    monkeypatch.setattr(
        experiments,
        "SHAKESPEARE_REFORMER",
        {**small, "chunk_len": 8, "attention_types": ("local", "lsh"), "max_len": 64},
    )
    monkeypatch.setattr(
        experiments, "SHAKESPEARE_TRANSFORMER", {**small, "d_head": 8, "max_len": 16}
    )
    common = dict(steps=4, eval_every=2, eval_batches=1, checkpoint_every=2, workers=2)
    monkeypatch.setattr(
        experiments, "SHAKESPEARE_REFORMER_TRAIN", {**common, "batch_size": 2, "seq_len": 64}
    )
    monkeypatch.setattr(
        experiments, "SHAKESPEARE_TRANSFORMER_TRAIN", {**common, "batch_size": 8, "seq_len": 16}
    )
    monkeypatch.setattr(
        experiments,
        "SAMPLES",
        {"prompt": 40, "characters": 30, "temperature": 0.8, "seeds": (0, 1)},
    )
    code, out, _ = run(capsys, "reproduce", "--only", "shakespeare_reformer", "--quiet")
    assert code == 0 and "shakespeare_reformer: wrote" in out and "shakespeare.json" in out
    result = json.loads((tmp_path / "results" / "shakespeare.json").read_text())
    assert set(result["models"]) == {"shakespeare_reformer"} and "equal_time" not in result
    code, _, _ = run(capsys, "reproduce", "--only", "shakespeare_transformer", "--quiet")
    result = json.loads((tmp_path / "results" / "shakespeare.json").read_text())
    reformer, transformer = (
        result["models"]["shakespeare_reformer"],
        result["models"]["shakespeare_transformer"],
    )
    assert code == 0 and reformer["tokens"] == transformer["tokens"] == 4 * 128
    assert len(reformer["position_bpc"]) == 64 and set(reformer["bands"]) == {"0-7", "8-63"}
    assert [s["seed"] for s in transformer["samples"]] == [0, 1]
    assert all(0 <= s["known_words"] <= 1 and len(s["text"]) == 30 for s in reformer["samples"])
    same = result["equal_time"]
    assert same["minutes"] == min(
        reformer["curve"]["minutes"][-1], transformer["curve"]["minutes"][-1]
    )
    assert all(same[name]["minutes"] <= same["minutes"] for name in result["models"])
    assert (tmp_path / "figures" / "08_bits_by_position.png").exists()
    assert set(result["ngram"]) == {"unigram", "bigram"}


def test_python_dash_m_help_runs_in_a_fresh_process():
    for argv in ([], ["train"], ["eval"], ["sample"], ["memory"], ["reproduce"]):
        done = subprocess.run(
            [sys.executable, "-m", "minireformer", *argv, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and "usage: minireformer" in done.stdout
