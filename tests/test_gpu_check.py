"""benchmarks/gpu_check.py on a CPU: its arguments, its JSON, its "no GPU" stop, and a whole run
at toy sizes against the CuPy stand-in (fake_cupy.FakeCupy). The GPU numbers are its job on a
GPU."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_default_arguments_are_the_gpu_benchmark():
    args = gpu_check.parse_args([])
    assert args.out == ROOT / "benchmarks" / "results" / "gpu_check.json"
    assert (args.train_length, args.cpu_length, args.figure) == (65536, 16384, "gpu_check")
    assert not args.quick and not args.skip_tests


@pytest.mark.parametrize(
    "argv",
    [["--min-length", "0"], ["--min-length", "64", "--max-length", "32"], ["--budget-s", "0"]],
)
def test_bad_arguments_stop_with_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        gpu_check.parse_args(argv)
    assert stop.value.code == 2 and "expected" in capsys.readouterr().err


def test_doubling_lengths():
    assert gpu_check.doubling(1024, 8192) == [1024, 2048, 4096, 8192]
    assert gpu_check.doubling(1024, 5000) == [1024, 2048, 4096]


def test_json_is_written_sorted_with_paths_as_strings(tmp_path):
    path = gpu_check.write_json(tmp_path / "new" / "r.json", {"b": 1, "a": {"out": tmp_path}})
    text = path.read_text()
    assert json.loads(text) == {"a": {"out": str(tmp_path)}, "b": 1}
    assert text.index('"a"') < text.index('"b"') and text.endswith("\n")


def test_without_cupy_it_stops_and_says_why():
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed here")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == gpu_check.NO_GPU_EXIT
    assert "needs CuPy and an NVIDIA GPU" in done.stderr and "cupy-cuda13x" in done.stderr


def test_the_make_target_needs_no_virtual_environment():
    """`make gpu-check PYTHON=python3` must run with the Python given: no venv prerequisite."""
    rule = re.search(r"^gpu-check:(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert rule is not None and rule.group(1).strip() == ""


def test_the_gpu_tests_it_runs_include_the_cpu_gpu_comparisons():
    files = gpu_check.gpu_test_files()
    assert "tests/test_gpu.py" in files and "tests/test_backend.py" in files
    assert "tests/test_notebooks.py" not in files


def test_a_whole_run_at_toy_sizes_on_the_cupy_stand_in(fake_cupy, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIREFORMER_FIGURES", str(tmp_path))
    out = tmp_path / "gpu_check.json"
    argv = ["--quick", "--skip-tests", "--out", str(out), "--budget-s", "60"]
    argv += ["--min-length", "64", "--max-length", "128", "--train-length", "32"]
    argv += ["--cpu-length", "64", "--cpu-train-length", "32"]
    assert gpu_check.main(argv) == 0
    results = json.loads(out.read_text())
    assert results["device"].startswith("CuPy") and results["tests"] is None
    for key in ("lsh_attention", "full_attention", "training_step"):
        rows = results[key]["rows"]
        assert [r["length"] for r in rows][:1] == ([32] if key == "training_step" else [64])
        assert all(r["seconds"] > 0 and r["peak_bytes"] > 0 for r in rows)
    assert results["cpu_reference"]["lsh_attention"]["speedup"] > 0
    assert (tmp_path / "gpu_check.png").stat().st_size > 0
