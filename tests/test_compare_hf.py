"""Smoke tests of benchmarks/compare_hf.py (the side-by-side with Hugging Face), in seconds.

The minireformer side runs here at the ``--quick`` sizes and must write complete, well-formed JSON;
the Hugging Face side needs torch and transformers (the ``compare`` extra, ``.venv-compare``) and is
skipped without them. Nothing here times anything against a threshold.
"""

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MINI = "minireformer-paper,minireformer-released"


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("benchmarks.compare_hf")


def _check_row(row, system, what, length, repeats):
    assert "error" not in row, row.get("error")
    assert (row["system"], row["what"], row["length"]) == (system, what, length)
    assert len(row["times_s"]) == repeats == row["repeats"] and row["warmup"] == 1
    assert 0 < row["min_s"] <= row["median_s"] <= row["max_s"]
    assert row["baseline_rss_bytes"] > 0 and row["peak_growth_bytes"] >= 0


def test_module_does_not_import_torch():
    code = (
        "import sys, benchmarks.compare_hf\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_quick_minireformer_side_writes_results_and_figure(bench, tmp_path):
    args = ["--quick", "--lengths", "256", "--repeats", "2", "--systems", MINI]
    args += ["--out-dir", str(tmp_path), "--figures-dir", str(tmp_path)]
    bench.main(args)
    assert (tmp_path / "bench_compare_hf.png").exists()
    saved = json.loads((tmp_path / "compare_hf.json").read_text())
    assert saved["quick"] and saved["setup_name"] == "quick" and saved["machine"]["threads"] == 2
    assert saved["ratios"] == [] and "cross_check" not in saved  # no Hugging Face rows
    assert len(saved["rows"]) == 4
    for row in saved["rows"]:
        system = row["system"]
        _check_row(row, system, row["what"], 256, 2)
        assert row["config"]["semantics"] == system.split("-", 1)[1]
        assert row["config"]["n_buckets"] == 2 * 256 // bench.QUICK["chunk_len"]
        assert tuple(row["config"]["axial_shape"]) == (16, 16)
    steps = [r for r in saved["rows"] if r["what"] == "step"]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in steps)

    # --resume keeps the finished rows and measures only what is missing
    again = bench.main(args + ["--resume"])
    assert again["rows"] == saved["rows"]


def test_ratios_pair_each_semantics_with_hugging_face(bench):
    def row(system, seconds, peak):
        return dict(
            system=system,
            what="step",
            length=4096,
            median_s=seconds,
            min_s=seconds / 2,
            max_s=seconds * 2,
            peak_growth_bytes=peak,
        )

    rows = [
        row("huggingface", 10.0, 1000),
        row("minireformer-paper", 5.0, 250),
        row("minireformer-released", 4.0, 200),
        dict(row("minireformer-paper", 1.0, 1), length=8192),  # no Hugging Face row: no ratio
    ]
    got = {e["semantics"]: e for e in bench.ratios(rows)}
    assert set(got) == {"paper", "released"}
    assert got["paper"]["time_ratio_median"] == pytest.approx(0.5)
    assert got["paper"]["time_ratio_range"] == pytest.approx([0.125, 2.0])
    assert got["released"]["memory_ratio"] == pytest.approx(0.2)


def test_both_systems_are_configured_alike(bench):
    for length in (4096, 16384, 65536):
        config = bench.mini_config(bench.FULL, length, "released")
        hf = bench.hf_kwargs(bench.FULL, length)
        k = config.n_buckets  # K = 2 L / C, or two factors of at least that product
        assert hf["num_buckets"] == (list(k) if isinstance(k, tuple) else k)
        assert math.prod(k if isinstance(k, tuple) else (k,)) >= length // 32
        assert tuple(hf["axial_pos_shape"]) == config.axial_shape
        assert config.axial_shape[0] * config.axial_shape[1] == length
        assert tuple(hf["axial_pos_embds_dim"]) == config.axial_dims
        assert hf["attention_head_size"] * hf["num_attention_heads"] == 256
        assert (hf["num_hashes"], hf["lsh_attn_chunk_length"]) == (config.n_hashes, 64)
        assert hf["chunk_size_feed_forward"] == config.ff_chunk
        assert config.semantics == "released"
    assert bench.axial_shape(256) == (16, 16) and bench.axial_shape(2048) == (32, 64)


def test_hugging_face_quick_measurement(bench):
    pytest.importorskip("torch", reason="Hugging Face's side needs the `compare` extra")
    pytest.importorskip("transformers", reason="Hugging Face's side needs the `compare` extra")
    for what in bench.WHATS:
        spec = dict(
            system="huggingface",
            what=what,
            length=256,
            setup=bench.QUICK,
            repeats=1,
            threads=2,
            seed=0,
        )
        _check_row(bench.measure(spec), "huggingface", what, 256, 1)


def test_same_weights_give_the_same_loss_and_gradients(bench):
    pytest.importorskip("torch", reason="the cross-check needs the `compare` extra")
    pytest.importorskip("transformers", reason="the cross-check needs the `compare` extra")
    check = bench.cross_check()
    # float64 in both, but Hugging Face's loss is computed from float32 logits
    assert check["loss_relative_difference"] < 1e-6
    assert check["grad_worst_relative_error"] < 1e-5
