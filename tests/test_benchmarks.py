"""Smoke test of benchmarks/bench_reformer_memory.py at toy sizes (seconds, not the benchmark).

The benchmark itself takes minutes; here its functions run on the ``--quick`` setup so that a
broken import, a renamed library function or a malformed results file is caught by ``make test``.
"""

import importlib.util
import json
from pathlib import Path

import pytest

from minireformer import memory

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_reformer_memory.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_reformer_memory", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_results_and_figure(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIREFORMER_FIGURES", str(tmp_path))
    out = tmp_path / "reformer_memory.json"
    results = bench.main(["--quick", "--no-components", "--out", str(out), "--figure", "bench"])
    assert (tmp_path / "bench.png").exists()
    saved = json.loads(out.read_text())
    assert saved["target_len"] == bench.QUICK["target_len"]

    main_row = saved["reformer"][-1]
    assert main_row["length"] == bench.QUICK["target_len"]
    assert "error" not in main_row and main_row["peak_bytes"] > 0
    assert main_row["table3_bytes"] == bench.table3(bench.QUICK, "reformer", main_row["length"])

    base = saved["baseline"]
    assert len(base) >= 3 and saved["baseline_largest_len"] == base[-1]["length"]
    lengths = [row["length"] for row in base]
    assert lengths == [bench.QUICK["baseline_start"] * 2**i for i in range(len(base))]
    # stored activations with full attention: memory grows faster than linearly in L
    assert base[-1]["peak_bytes"] > 2.5 * base[-2]["peak_bytes"]
    # at the baseline's largest L the Reformer needs less memory than the baseline
    assert saved["ratios"]["baseline_over_reformer_at_largest_baseline_len"] > 1
    assert results["table3_transformer_at_target_bytes"] == memory.table3_memory(
        "transformer",
        batch=1,
        length=bench.QUICK["target_len"],
        n_hashes=bench.QUICK["n_hashes"],
        chunk_len=bench.QUICK["chunk_len"],
        **{k: bench.QUICK["model"][k] for k in ("d_model", "d_ff", "n_heads", "n_layers")},
    )


def test_components_measure_each_part(bench):
    parts = bench.components(bench.QUICK, 256)
    for key in ("attention_bytes", "feedforward_bytes", "loss_bytes"):
        assert parts[key] > 0, key
    assert parts["stream_bytes"] == 256 * bench.QUICK["model"]["d_model"] * 4


def test_baseline_sweep_stops_at_the_budget(bench):
    rows = bench.baseline_sweep(bench.QUICK, budget_bytes=2 * 2**20, time_budget=60.0)
    assert rows, "the smallest length fits 2 MiB"
    for row in rows:
        assert row["table3_bytes"] <= 2 * 2**20
    last = rows[-1]
    predicted_next = max(
        bench.table3(bench.QUICK, "transformer", 2 * last["length"]), 4 * last["peak_bytes"]
    )
    assert predicted_next > 2 * 2**20
