"""What every benchmark script shares: its command line, timing, machine description, results.

Each ``benchmarks/bench_*.py`` measures one concept and follows the same pattern::

    args = common.parse_args(__doc__, argv)           # --quick, --out-dir, --figures-dir
    setup = SETUPS["quick" if args.quick else "full"]
    ... measure, with minireformer.measuring.timing.time_call and memory.measure_peak ...
    common.write_results(args, "name", results)       # benchmarks/results/name.json
    common.save_figure(args, fig, "bench_name")       # figures/bench_name.png

Timing (:func:`time_call`): one or more untimed warm-up calls, then repeated timed calls; the
median is the number reported, the minimum and maximum show the spread. On a shared CPU the
spread is often tens of percent, so scripts compare quantities measured in the same run.

``--quick`` runs every script at toy sizes in seconds (the smoke test in tests/test_benchmarks.py)
and writes into ``benchmarks/results/quick/`` (results and figures, ignored by git), so that the
committed full results and figures are never overwritten by a toy run.

The benchmark LM (:data:`LM_SETUPS`, :func:`reformer_config`) is shared by the LM-step,
memory and Hugging Face benchmarks: 6 reversible LSH layers, d_model 256, 4 heads of 64, d_ff 1024,
4 hash rounds, chunk 64, vocab 256, axial positions, chunked feed-forward and loss, float32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from minireformer import backend
from minireformer.reformer_config import ReformerConfig
from minireformer.teaching import plotting

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
QUICK_RESULTS = RESULTS / "quick"
MiB = 2**20
GiB = 2**30

LM_SETUPS = {
    "full": dict(
        model=dict(vocab_size=256, d_model=256, n_heads=4, d_ff=1024, n_layers=6),
        n_hashes=4,
        chunk_len=64,
        ff_chunk=2048,
        loss_chunk=2048,
        n_parallel_heads=1,  # attend one head at a time (trax's knob): same numbers, less memory
        axial_shape=(256, 256),
    ),
    "quick": dict(
        model=dict(vocab_size=32, d_model=32, n_heads=2, d_ff=64, n_layers=2),
        n_hashes=2,
        chunk_len=16,
        ff_chunk=64,
        loss_chunk=64,
        n_parallel_heads=1,
        axial_shape=(32, 32),
    ),
}


def log(message: str) -> None:
    """Progress output, flushed at once (a full benchmark takes minutes)."""
    print(message, flush=True)


def run_worker(module: str, spec: dict, blas_threads: int) -> dict:
    """The ``RESULT`` JSON that ``python -m benchmarks.<module> --worker <spec>`` prints, run in a
    fresh process with ``blas_threads`` BLAS and OpenMP threads; on failure ``{"error": ...}``
    with the exit status and the last lines of its output."""
    import subprocess

    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(blas_threads)
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--worker", json.dumps(spec)],
        cwd=BENCHMARKS.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"worker exited {proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1][len("RESULT ") :])


def parse_args(doc: str, argv=None, add_arguments=None) -> argparse.Namespace:
    """The common command line (``--quick``, ``--out-dir``, ``--figures-dir``) plus the script's.

    ``add_arguments(parser)``, if given, adds the script's own options. The output folders
    default to ``benchmarks/results/`` and ``figures/``, or both to ``benchmarks/results/quick/``
    with ``--quick``.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes, seconds (smoke test)")
    parser.add_argument("--out-dir", type=Path, help="folder of the JSON results")
    parser.add_argument("--figures-dir", type=Path, help="folder of the figures")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    if args.out_dir is None:
        args.out_dir = QUICK_RESULTS if args.quick else RESULTS
    if args.figures_dir is None:
        args.figures_dir = QUICK_RESULTS if args.quick else plotting.figures_dir()
    return args


def full_budget_option(default_mib: float, what: str):
    """An ``add_arguments`` for :func:`parse_args`: ``--full-budget-mib``, the largest ``what``
    that full attention may allocate (full attention is skipped at lengths beyond it)."""

    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--full-budget-mib",
            type=float,
            default=default_mib,
            help=f"largest {what} full attention may make, MiB",
        )

    return add


def machine_info() -> dict:
    """Where the numbers were measured: platform, Python, NumPy, backend, cores, BLAS threads."""
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "backend": backend.describe(),
        "cpus": os.cpu_count(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, np.ndarray)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_results(args: argparse.Namespace, name: str, results: dict) -> Path:
    """Write ``results`` (with the machine description and the mode added) to ``<name>.json``."""
    results = {"benchmark": name, "quick": bool(args.quick), "machine": machine_info(), **results}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    log(f"wrote {path}")
    return path


def save_figure(args: argparse.Namespace, fig, name: str) -> Path:
    """Save ``fig`` as ``<figures-dir>/<name>.png`` through :func:`plotting.save_figure`."""
    previous = os.environ.get(plotting.FIGURES_ENV)
    os.environ[plotting.FIGURES_ENV] = str(args.figures_dir)
    try:
        path = plotting.save_figure(fig, name)
    finally:
        if previous is None:
            del os.environ[plotting.FIGURES_ENV]
        else:
            os.environ[plotting.FIGURES_ENV] = previous
    log(f"wrote {path}")
    return path


def reformer_config(setup: dict, length: int, **changes) -> ReformerConfig:
    """The Reformer LM of ``setup`` for sequences of ``length`` tokens; ``changes`` replace fields.

    By default: LSH attention, reversible, chunked feed-forward and loss, axial positions,
    causal, float32.
    """
    fields = dict(
        **setup["model"],
        attention_types=("lsh",),
        n_hashes=setup["n_hashes"],
        chunk_len=setup["chunk_len"],
        ff_chunk=setup["ff_chunk"],
        loss_chunk=setup["loss_chunk"],
        n_parallel_heads=setup["n_parallel_heads"],
        causal=True,
        positional="axial",
        axial_shape=setup["axial_shape"],
        max_len=max(length, 2),
        reversible=True,
        dtype="float32",
    )
    fields.update(changes)
    return ReformerConfig(**fields)
