"""The benchmark suite at toy sizes (``--quick``, seconds): every script runs and writes complete,
well-formed JSON and its figure; the analytic FLOP counts match the products the library makes.

No timing is asserted: the numbers are whatever this machine does. What is checked is the shape of
the results (keys, types, positive finite numbers), so that a broken import, a renamed library
function or a malformed results file is caught by ``make test``.
"""

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from minireformer import attention, lsh_attention
from minireformer.measuring import flops, table3

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("bench_*.py"))
TIMING_KEYS = {"median_s", "min_s", "max_s", "repeats", "warmup", "times_s"}
# numbers that may be zero or negative: warm-up counts, and the fitted lines' coefficients
SIGNED_KEYS = {"warmup", "intercept", "slope_per_token"}


@pytest.fixture(scope="module")
def bench_module():
    """``bench_module(stem)``: the benchmark script ``benchmarks/<stem>.py``, imported as a module
    of the ``benchmarks`` package (the repository root is on the path under ``python -m
    pytest``)."""
    return lambda stem: importlib.import_module(f"benchmarks.{stem}")


@pytest.fixture(scope="module")
def quick_results(bench_module, tmp_path_factory):
    """``quick_results(stem)``: run ``benchmarks/<stem>.py --quick`` into a temporary folder once
    (per test module) and return (folder, saved JSON); ``bench_<name>.py`` writes ``<name>.json``
    and ``bench_<name>.png``. One script failing fails only its own tests."""
    out = tmp_path_factory.mktemp("bench")
    done = {}

    def run(stem):
        if stem not in done:
            bench_module(stem).main(["--quick", "--out-dir", str(out), "--figures-dir", str(out)])
            done[stem] = (
                out,
                json.loads((out / f"{stem.removeprefix('bench_')}.json").read_text()),
            )
        return done[stem]

    return run


def check_numbers(tree, path="results"):
    """Every number in the tree is finite, and positive unless its key is in SIGNED_KEYS."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "machine":
                assert all(v is None or isinstance(v, (str, int)) for v in value.values()), path
                continue
            if key in SIGNED_KEYS and isinstance(value, (int, float)):
                assert math.isfinite(value), f"{path}.{key}"
                continue
            check_numbers(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            check_numbers(value, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        assert math.isfinite(tree) and tree > 0, f"{path} = {tree}"
    else:
        assert tree is None or isinstance(tree, (str, bool)), f"{path}: {type(tree).__name__}"


def check_timing(row, path):
    assert TIMING_KEYS <= set(row), f"{path}: missing {TIMING_KEYS - set(row)}"
    assert row["min_s"] <= row["median_s"] <= row["max_s"], path
    assert len(row["times_s"]) == row["repeats"] >= 1, path


@pytest.mark.parametrize("stem", SCRIPTS)
def test_quick_run_writes_well_formed_json_and_a_figure(quick_results, stem):
    out, saved = quick_results(stem)
    assert saved["quick"] is True and set(saved["machine"]) >= {"numpy", "backend", "cpus"}
    check_numbers(saved)
    assert (out / f"{stem}.png").exists()


def test_attention_speed_results(quick_results, bench_module):
    _, saved = quick_results("bench_attention_speed")
    setup = bench_module("bench_attention_speed").SETUPS["quick"]
    assert [r["length"] for r in saved["full"]] == list(setup["full_lengths"])
    assert set(saved["lsh"]) == {str(r) for r in setup["rounds"]} == set(saved["crossover"])
    for rows in [saved["full"], *saved["lsh"].values()]:
        for row in rows:
            check_timing(row, row["kind"])
            assert row["tokens"] == row["batch"] * row["length"] <= setup["tokens"]
            assert row["us_per_token"] == pytest.approx(1e6 * row["median_s"] / row["tokens"])
    for rounds, rows in saved["lsh"].items():
        assert [r["length"] for r in rows] == list(setup["lsh_lengths"])
        assert all(r["tokens"] == setup["tokens"] for r in rows), "LSH holds batch x L fixed"
        assert saved["lsh_growth"][rounds] == pytest.approx(
            rows[-1]["us_per_token"] / rows[0]["us_per_token"]
        )
        cross = saved["crossover"][rounds]
        assert isinstance(cross["extrapolated"], bool) and cross["method"]


def test_flop_rate_results(quick_results):
    _, saved = quick_results("bench_flop_rate")
    lsh = saved["lsh"]
    check_timing(lsh, "lsh")
    assert lsh["flops"]["total"] == sum(lsh["flops"][k] for k in ("hash", "forward", "backward"))
    assert lsh["gflops"] == pytest.approx(lsh["flops"]["total"] / lsh["median_s"] / 1e9)
    for name in ("batched", "square"):
        check_timing(saved[name], name)
        assert saved[f"fraction_of_{name}"] == pytest.approx(lsh["gflops"] / saved[name]["gflops"])
    top = saved["profile"]["top"]
    assert top and all({"function", "own_s", "own_share", "cumulative_s"} <= set(r) for r in top)
    assert sum(r["own_share"] for r in top) <= 1 + 1e-9


def test_memory_results(quick_results, bench_module):
    _, saved = quick_results("bench_memory")
    setup = bench_module("bench_memory").SETUPS["quick"]
    assert {r["kind"] for r in saved["length"]} == set(setup["kinds"])
    assert {(r["arch"], r["n_layers"]) for r in saved["depth"]} == {
        (a, n) for a in bench_module("bench_memory").ARCHS for n in setup["depths"]
    }
    rows = saved["length"] + saved["depth"]
    for row in rows:
        assert row["relative_error"] == pytest.approx(
            abs(row["model_bytes"] - row["measured_bytes"]) / row["measured_bytes"]
        )
        assert row["model_terms"], "the model names its terms"
    assert saved["worst_relative_error"] == max(r["relative_error"] for r in rows)


def test_lm_step_results(quick_results, bench_module):
    _, saved = quick_results("bench_reformer_memory")
    bench = bench_module("bench_reformer_memory")
    assert saved["target_len"] == bench.QUICK["target_len"]
    steps = {r["length"]: r for r in saved["reformer"]}
    for length in [*bench.QUICK["ladder"], bench.QUICK["target_len"]]:
        row = steps[length]
        assert "error" not in row and row["peak_bytes"] > 0, length
        check_timing(row["time"], f"step L={length}")
        assert row["table3_bytes"] == bench.table3_bytes(bench.QUICK, "reformer", length)

    base = saved["baseline"]
    assert len(base) >= 3 and saved["baseline_largest_len"] == base[-1]["length"]
    lengths = [row["length"] for row in base]
    assert lengths == [bench.QUICK["baseline_start"] * 2**i for i in range(len(base))]
    # stored activations with full attention: memory grows faster than linearly in L
    assert base[-1]["peak_bytes"] > 2.5 * base[-2]["peak_bytes"]
    # at the baseline's largest L the Reformer needs less memory than the baseline
    assert saved["ratios"]["baseline_over_reformer_at_largest_baseline_len"] > 1
    assert saved["table3_transformer_at_target_bytes"] == table3.table3_memory(
        "transformer",
        batch=1,
        length=bench.QUICK["target_len"],
        n_hashes=bench.QUICK["n_hashes"],
        chunk_len=bench.QUICK["chunk_len"],
        **{k: bench.QUICK["model"][k] for k in ("d_model", "d_ff", "n_heads", "n_layers")},
    )


def test_components_measure_each_part(bench_module):
    bench = bench_module("bench_reformer_memory")
    parts = bench.components(bench.QUICK, 256)
    for key in ("attention_bytes", "feedforward_bytes", "loss_bytes"):
        assert parts[key] > 0, key
    assert parts["stream_bytes"] == 256 * bench.QUICK["model"]["d_model"] * 4


def test_baseline_sweep_stops_at_the_budget(bench_module):
    bench = bench_module("bench_reformer_memory")
    rows = bench.baseline_sweep(bench.QUICK, budget_bytes=2 * 2**20, time_budget=60.0)
    assert rows, "the smallest length fits 2 MiB"
    for row in rows:
        assert row["table3_bytes"] <= 2 * 2**20
    last = rows[-1]
    predicted_next = max(
        bench.table3_bytes(bench.QUICK, "transformer", 2 * last["length"]), 4 * last["peak_bytes"]
    )
    assert predicted_next > 2 * 2**20


@pytest.mark.parametrize("length, n_hashes, causal", [(200, 3, True), (64, 1, False), (7, 2, True)])
def test_lsh_flop_count_matches_the_products_made(length, n_hashes, causal):
    """The window products of the analytic count are exactly those lsh_attention makes."""
    rng = np.random.default_rng(0)
    qk, v, dout = rng.standard_normal((3, 2, 2, length, 8))

    def step():
        out, cache = lsh_attention.lsh_attention_forward(
            qk, v, chunk_len=16, n_hashes=n_hashes, rng=rng, causal=causal
        )
        return lsh_attention.lsh_attention_backward(dout, cache)

    _, counted = flops.count_matmul_flops(step)
    count = flops.lsh_attention_flops(
        batch=2, n_heads=2, length=length, d_head=8, n_hashes=n_hashes, chunk_len=16
    )
    assert counted == count["forward"] + count["backward"]


def test_full_flop_count_matches_the_products_made():
    qk, v, dout = np.random.default_rng(1).standard_normal((3, 2, 3, 50, 8))

    def step():
        out, cache = attention.shared_qk_attention_forward(qk, v, causal=True)
        return attention.shared_qk_attention_backward(dout, cache)

    _, counted = flops.count_matmul_flops(step)
    assert counted == flops.full_attention_flops(batch=2, n_heads=3, length=50, d_head=8)["total"]
