"""The GPU check: the CuPy test cases, then a GPU benchmark, as JSON and a figure.

    make gpu-check                                 # or, with any Python that has CuPy:
    python3 -m benchmarks.gpu_check   # no install step, no package registry

1. The CuPy cases of the test suite (``pytest -m gpu tests``: tests/test_gpu.py compares CPU and
   GPU results, and every test parametrised over the backends runs its CuPy case).
2. LSH and full attention, forward and backward, on (B, H, L, Dh) = (1, 8, L, 64) in float32:
   seconds and peak GPU memory (CuPy's pool, ``memory.measure_peak``) for L = 1,024, 2,048, ...
   up to the largest L that fits (or ``--max-length``, or the time budget).
3. One Reformer training step (loss, gradients, an Adam update) at L = 65,536 and at doubling
   lengths until one does not fit in the GPU's memory.
4. LSH attention at L = 16,384 and a training step at L = 8,192 on the GPU and on NumPy, on this
   machine's CPU: the GPU's speed-up (the CPU is timed once; it takes a minute or so).

Writes ``benchmarks/results/gpu_check.json`` and ``figures/gpu_check.png``. Without CuPy or a GPU
it writes nothing and stops with exit status 2 and a message that says why. The sweeps share one
time budget (``--budget-s``): each stops before a length that would not finish in its share.
Only the standard library, NumPy, matplotlib (for the figure) and the package are imported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from minireformer import backend
from minireformer.reformer_config import ReformerConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu_check.json"
NO_GPU_EXIT = 2
HEADS, D_HEAD, CHUNK, N_HASHES = 8, 64, 64, 4  # the attention benchmark's shape
REPEATS = 2  # timed calls after the first (measured) one
SHARES = {"lsh": 0.3, "full": 0.2, "train": 0.5}  # of the time budget (the CPU phase: fixed L)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file written")
    parser.add_argument("--figure", default="gpu_check", help="figure name under figures/")
    parser.add_argument(
        "--budget-s", type=float, default=300.0, help="seconds for the benchmark (all phases)"
    )
    parser.add_argument("--min-length", type=int, default=1024, help="first L of the sweeps")
    parser.add_argument("--max-length", type=int, default=2**22, help="last L of the sweeps")
    parser.add_argument("--train-length", type=int, default=65536, help="first L trained")
    parser.add_argument("--cpu-length", type=int, default=16384, help="L of the CPU's attention")
    parser.add_argument(
        "--cpu-train-length", type=int, default=8192, help="L of the CPU's training step"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny model (checks the script, not the GPU)"
    )
    parser.add_argument("--skip-tests", action="store_true", help="benchmark only")
    args = parser.parse_args(argv)
    if (
        not 0 < args.min_length <= args.max_length
        or min(args.train_length, args.cpu_train_length) < 2
    ):
        parser.error("expected 0 < --min-length <= --max-length and training lengths >= 2")
    if args.budget_s <= 0:
        parser.error("--budget-s: expected a positive number of seconds")
    return args


def require_gpu():
    """CuPy on a working GPU, or ``SystemExit(2)`` with a message that says what is missing."""
    try:
        return backend.load_cupy()
    except RuntimeError as err:
        print(
            f"gpu_check: this check needs CuPy and an NVIDIA GPU, and here there is none, so "
            f"nothing was tested or measured ({err}). On a CPU, `make test` runs the rest of "
            f"the suite (its CuPy cases are skipped).",
            file=sys.stderr,
        )
        raise SystemExit(NO_GPU_EXIT) from None


def write_json(path: Path, results: dict) -> Path:
    """``results`` as indented JSON with sorted keys (stable diffs), paths as strings; folders
    created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    return path


def doubling(start: int, stop: int) -> list[int]:
    """start, 2 start, 4 start, ... up to stop (inclusive)."""
    return [start * 2**i for i in range(int(math.log2(stop // start)) + 1)]


def gpu_test_files() -> list[str]:
    """The test files with CuPy cases (others may import what a GPU machine lacks, e.g. nbval)."""
    files = sorted((ROOT / "tests").glob("test_*.py"))
    marks = ("pytest.mark.gpu", "backend_name")
    return [str(p.relative_to(ROOT)) for p in files if any(m in p.read_text() for m in marks)]


def run_gpu_tests() -> dict:
    """``pytest -m gpu`` on :func:`gpu_test_files` with this Python; exit status and summary."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:randomly"]
    command += gpu_test_files()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
    lines = done.stdout.strip().splitlines()
    return {
        "command": " ".join(command[1:]),
        "exit_status": done.returncode,
        "summary": lines[-1] if lines else "",
    }


# ---------------------------------------------------------------------------------------------
# Measuring one call
# ---------------------------------------------------------------------------------------------


def synchronize():
    """Wait for the GPU's queued work (nothing to wait for on NumPy)."""
    xp = backend.get_xp()
    if xp is not np:
        xp.cuda.Device().synchronize()


def timed(fn) -> float:
    """Wall-clock seconds of one call of ``fn()``, until the GPU has finished it."""
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def measure(fn) -> dict:
    """Peak bytes of a first call of ``fn()`` (which also compiles GPU kernels), then the best
    seconds of ``REPEATS`` further calls."""
    from minireformer.measuring import memory

    _, peak = memory.measure_peak(fn)
    return {"seconds": min(timed(fn) for _ in range(REPEATS)), "peak_bytes": int(peak)}


def sweep(make_step, lengths, deadline: float, out_of_memory) -> dict:
    """``measure(make_step(L))`` for each L in ``lengths`` until one runs out of memory or the next
    (assumed 4 times slower, as quadratic attention is) would end after ``deadline``.

    Returns ``{"rows": [{"length", "seconds", "peak_bytes"}...], "stopped": why}``.
    """
    rows, stopped = [], "max-length"
    for length in lengths:
        if rows and time.perf_counter() + 4 * (1 + REPEATS) * rows[-1]["seconds"] > deadline:
            stopped = f"time budget (next L = {length})"
            break
        try:
            rows.append({"length": length, **measure(make_step(length))})
        except out_of_memory:
            stopped = f"out of memory at L = {length}"
            break
        finally:
            free_memory()
        print(f"  L = {length:>9,}: {rows[-1]['seconds']:.4f} s", flush=True)
    return {"rows": rows, "stopped": stopped}


def free_memory():
    xp = backend.get_xp()
    if xp is not np:
        xp.get_default_memory_pool().free_all_blocks()


# ---------------------------------------------------------------------------------------------
# The workloads
# ---------------------------------------------------------------------------------------------


def random_heads(seed: int, length: int, batch: int = 1):
    """(B, H, L, Dh) float32 normal numbers drawn by the backend's own generator, on its device."""
    rng = backend.get_xp().random.default_rng(seed)
    return backend.asarray(rng.standard_normal((batch, HEADS, length, D_HEAD), dtype=np.float32))


def lsh_step(length: int):
    """A callable running LSH attention forward and backward at ``length``, with rotations
    drawn once (K = 2L/C buckets: at long L, drawing them on the host would dominate)."""
    from minireformer import lsh, lsh_attention

    qk, v = random_heads(0, length), random_heads(1, length)
    n_buckets = lsh.default_n_buckets(length, CHUNK)
    rotations = lsh.random_rotations(
        np.random.default_rng(2), D_HEAD, N_HASHES, n_buckets, n_heads=HEADS
    ).astype(np.float32)

    def step():
        out, cache = lsh_attention.lsh_attention_forward(
            qk, v, chunk_len=CHUNK, n_hashes=N_HASHES, rotations=rotations, causal=True
        )
        return lsh_attention.lsh_attention_backward(out, cache)

    return step


def full_step(length: int):
    """A callable running dense attention forward and backward at ``length``."""
    from minireformer import attention

    q, k, v = (random_heads(s, length) for s in range(3))

    def step():
        out, cache = attention.attention_forward(q, k, v, causal=True)
        return attention.attention_backward(out, cache)

    return step


def train_config(length: int, quick: bool):
    """The Reformer trained in the benchmark: 6 layers of width 512 (``quick``: 2 of width 32)."""

    size = (
        dict(d_model=32, n_heads=2, d_ff=64, n_layers=2, chunk_len=8)
        if quick
        else dict(d_model=512, n_heads=8, d_ff=2048, n_layers=6, chunk_len=CHUNK)
    )
    return ReformerConfig(
        vocab_size=256,
        n_hashes=N_HASHES,
        ff_chunk=min(length, 8192),
        loss_chunk=min(length, 8192),
        positional="sinusoidal",  # no (max_len, D) table to hold at a million positions
        max_len=length,
        **size,
    )


def training_step(length: int, quick: bool):
    """A callable doing one training step (loss, gradients, Adam) of a byte-level Reformer."""
    from minireformer.training import lm, optim

    config = train_config(length, quick)
    params = lm.init_params(config, np.random.default_rng(0))
    adam = optim.Adam(lr=1e-4)
    state = adam.init(params)
    tokens = backend.asarray(np.random.default_rng(1).integers(0, 256, size=(1, length)))
    rng = np.random.default_rng(2)

    def step():
        loss, grads = lm.loss_and_grads(params, tokens, config, rng)
        adam.step(params, grads, state)
        return loss

    return step


# ---------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------


def benchmark(args, cupy) -> dict:
    """Phases 2 to 4 of the module docstring, each within its share of ``args.budget_s``."""
    deadline = time.perf_counter()
    oom = cupy.cuda.memory.OutOfMemoryError
    results = {}
    lengths = doubling(args.min_length, args.max_length)
    for name, make_step in (("lsh", lsh_step), ("full", full_step)):
        deadline += SHARES[name] * args.budget_s
        print(f"{name} attention, forward and backward:", flush=True)
        results[f"{name}_attention"] = sweep(make_step, lengths, deadline, oom)

    deadline += SHARES["train"] * args.budget_s
    print("Reformer training step:", flush=True)
    train_lengths = doubling(args.train_length, max(args.train_length, args.max_length))
    trained = sweep(lambda n: training_step(n, args.quick), train_lengths, deadline, oom)
    trained["config"] = _config_dict(train_config(args.train_length, args.quick))
    results["training_step"] = trained

    print("the same on NumPy, on the CPU:", flush=True)
    results["cpu_reference"] = cpu_reference(args)
    return results


def cpu_reference(args) -> dict:
    """LSH attention at ``--cpu-length`` and a training step at ``--cpu-train-length``, measured on
    the GPU and timed once on NumPy on this machine's CPU, and the GPU's speed-up on each."""
    cases = {
        "lsh_attention": (args.cpu_length, lsh_step),
        "training_step": (args.cpu_train_length, lambda n: training_step(n, args.quick)),
    }
    out = {"cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    for name, (length, make_step) in cases.items():
        gpu = measure(make_step(length))["seconds"]
        backend.set_backend("numpy")
        try:
            cpu = timed(make_step(length))
        finally:
            backend.set_backend("cupy")
        out[name] = {"length": length, "cpu_seconds": cpu, "gpu_seconds": gpu, "speedup": cpu / gpu}
        print(f"  {name} at L = {length:,}: CPU {cpu:.3f} s, GPU {gpu:.4f} s", flush=True)
    return out


def _config_dict(config) -> dict:
    from minireformer.training import lm

    return lm.config_to_dict(config)


def plot(results: dict, name: str) -> Path:
    """Seconds and peak memory against L for LSH and full attention and the training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minireformer.teaching.plotting import save_figure

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (
        ("lsh_attention", f"LSH attention (R = {N_HASHES}, C = {CHUNK})"),
        ("full_attention", "full attention"),
        ("training_step", "Reformer training step"),
    ):
        rows = results[key]["rows"]
        lengths = [r["length"] for r in rows]
        ax_t.loglog(lengths, [r["seconds"] for r in rows], "o-", label=label)
        ax_m.loglog(lengths, [r["peak_bytes"] / 2**30 for r in rows], "o-", label=label)
    ax_t.set(xlabel="sequence length L", ylabel="seconds (forward + backward)")
    ax_m.set(xlabel="sequence length L", ylabel="peak GPU memory (GiB)")
    ax_t.legend()
    fig.suptitle(results["device"])
    path = save_figure(fig, name)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    cupy = require_gpu()
    backend.set_backend("cupy")
    results = {"device": backend.describe(), "numpy": np.__version__, "arguments": vars(args)}
    results["tests"] = None if args.skip_tests else run_gpu_tests()
    results.update(benchmark(args, cupy))
    print(f"wrote {write_json(args.out, results)} and {plot(results, args.figure)}")
    failed = results["tests"] is not None and results["tests"]["exit_status"] != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
