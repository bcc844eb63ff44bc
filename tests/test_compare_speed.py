"""Smoke tests of the side-by-side speed benchmarks (training throughput, sampling), in seconds.

The minireformer side runs at the ``--quick`` sizes and must write complete JSON whose table the
report prints; the PyTorch side needs the ``compare`` extra and is left out when it is missing.
Nothing here times anything against a threshold.
"""

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from minireformer.measuring import report

ROOT = Path(__file__).resolve().parents[1]
HAVE_TORCH = importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize("module", ["compare_throughput", "compare_sampling"])
def test_modules_do_not_import_torch(module):
    code = f"import sys, benchmarks.{module}\nassert 'torch' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.skipif(HAVE_TORCH, reason="checks the run without the compare extra")
def test_throughput_quick_run_and_its_table(tmp_path):
    bench = importlib.import_module("benchmarks.compare_throughput")
    saved = bench.main(["--quick", "--repeats", "2", "--out-dir", str(tmp_path)])
    assert json.loads((tmp_path / "throughput.json").read_text())["rows"] == saved["rows"]
    assert [r["system"] for r in saved["rows"]] == ["minireformer"] * 6  # 3 shapes, 2 repeats
    for row in saved["rows"]:
        assert "error" not in row, row.get("error")
        assert len(row["times_s"]) == 2 and 0 < row["min_s"] <= row["median_s"] <= row["max_s"]
        assert row["tokens_per_s"] == pytest.approx(row["batch"] * row["length"] / row["median_s"])
        assert math.isfinite(row["loss"]) and row["loss"] > 0
        assert row["workers"] == (2 if row["batch"] >= 2 else 1)
    assert [e["shape"] for e in saved["summary"]] == ["transformer", "reformer", "duplication"]
    assert "profile" in saved["rows"][0]
    table = report.tables(tmp_path)["throughput"]
    assert table.count("not run (no `compare` extra)") == 3 and "2 workers" in table


@pytest.mark.skipif(HAVE_TORCH, reason="checks the run without the compare extra")
def test_sampling_quick_run_and_its_table(tmp_path):
    bench = importlib.import_module("benchmarks.compare_sampling")
    saved = bench.main(["--quick", "--repeats", "2", "--out-dir", str(tmp_path)])
    systems = [(r["shape"], r["system"]) for r in saved["rows"]]
    assert systems == [
        (s, k) for s in ("reformer", "transformer") for k in ("uncached", "minireformer")
    ]
    for row in saved["rows"]:
        assert "error" not in row, row.get("error")
        assert row["chars_per_s"] == pytest.approx(row["n_new"] / row["median_s"])
    for entry in saved["summary"]:
        assert entry["cache_speedup"] > 0 and "ratio_to_huggingface" not in entry
    table = report.tables(tmp_path)["sampling"]
    assert "context 64" in table and table.count("|") > 20


def test_a_failing_worker_is_reported_not_raised():
    from benchmarks import common

    row = common.run_worker("compare_sampling", {"system": "no-such-system"}, 1)
    assert row["error"].startswith("worker exited 1:")
