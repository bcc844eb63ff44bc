"""Timing: repeated wall-clock measurements, profiles, and one attention step to time.

The benchmarks (``benchmarks/``) and notebook 09 measure with these:

- :func:`time_call`: warm-up calls, then repeated timed calls; the median is reported, the minimum
  and maximum show the spread (tens of percent on a shared CPU, so compare quantities measured in
  the same run);
- :func:`profile`: the functions with the most own time in one call (cProfile);
- :func:`attention_inputs` and :func:`lsh_step`, :func:`local_step`, :func:`full_step`: one
  forward and backward pass of an attention on random heads, causal, as in a training step;
- :func:`crossover`: where straight lines fitted to per-token time against L meet (the length
  beyond which LSH attention is the faster).

Shape letters: B batch, H heads, L length, Dh head width.
"""

from __future__ import annotations

import cProfile
import gc
import math
import pstats
import statistics
import time

import numpy as np

from .. import attention, local_attention, lsh_attention

TOP_FUNCTIONS = 12  # rows of a profile kept


def time_call(
    fn,
    *,
    repeats: int = 3,
    warmup: int = 1,
    budget_s: float | None = None,
    estimate_s: float | None = None,
) -> dict:
    """Wall-clock seconds of ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed calls.

    With ``budget_s``, fewer timed calls are made when one call's duration (the last warm-up
    call's, ``estimate_s``, that of an earlier call made by the caller, or else the first timed
    call's) says that ``repeats`` of them would take longer than the budget; at least one is
    always made. A garbage collection runs before each call, so that no call pays for its
    predecessor's.

    Returns:
        {"median_s", "min_s", "max_s": seconds over the timed calls, "repeats": their number,
        "warmup": the number of warm-up calls, "times_s": every timed call}.
    """

    def once() -> float:
        gc.collect()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    warm = [once() for _ in range(warmup)]
    times = []
    one_call = warm[-1] if warm else estimate_s
    if one_call is None:
        times.append(once())
        one_call = times[0]
    if budget_s is not None:
        repeats = max(1, min(repeats, math.floor(budget_s / one_call)))
    times += [once() for _ in range(repeats - len(times))]
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": len(times),
        "warmup": warmup,
        "times_s": times,
    }


def profile(fn) -> dict:
    """cProfile of one call: total seconds and the functions with the most own time."""
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = []
    for (path, line, name), (_, _, own, cumulative, _) in stats.stats.items():
        where = name if path == "~" else f"{path.rsplit('/', 1)[-1]}:{line}({name})"
        rows.append({"function": where, "own_s": own, "cumulative_s": cumulative})
    rows.sort(key=lambda r: -r["own_s"])
    for r in rows:
        r["own_share"] = r["own_s"] / total
    return {"total_s": total, "top": rows[:TOP_FUNCTIONS]}


# --- One attention step ---------------------------------------------------------------------


def attention_inputs(n_heads: int, d_head: int, batch: int, length: int, seed: int = 0):
    """Random qk, v and upstream gradient, each (B, H, L, Dh) float32."""
    rng = np.random.default_rng(seed)
    shape = (batch, n_heads, length, d_head)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(3)]


def lsh_step(qk, v, dout, *, chunk_len: int, n_hashes: int, seed: int = 0):
    """One LSH attention forward + backward (fresh rotations, as in a training step)."""
    out, cache = lsh_attention.lsh_attention_forward(
        qk, v, chunk_len=chunk_len, n_hashes=n_hashes, rng=np.random.default_rng(seed), causal=True
    )
    return lsh_attention.lsh_attention_backward(dout, cache)


def local_step(qk, v, dout, *, chunk_len: int):
    """One local (chunked, unsorted) attention forward + backward."""
    out, cache = local_attention.local_attention_forward(qk, v, chunk_len=chunk_len, causal=True)
    return local_attention.local_attention_backward(dout, cache)


def full_step(qk, v, dout):
    """One full shared-QK attention forward + backward."""
    out, cache = attention.shared_qk_attention_forward(qk, v, causal=True)
    return attention.shared_qk_attention_backward(dout, cache)


# --- Where LSH overtakes full attention -------------------------------------------------------


def linear_fit(rows: list[dict]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of per-token microseconds against L."""
    lengths = np.array([r["length"] for r in rows], dtype=float)
    times = np.array([r["us_per_token"] for r in rows])
    slope, intercept = np.polyfit(lengths, times, 1)
    return float(intercept), float(slope)


def crossover(full_rows: list[dict], lsh_rows: list[dict]) -> dict:
    """Where the fitted lines of full and LSH per-token time meet (L at which LSH gets faster).

    ``length`` is None when the lines do not meet at a positive L with full attention slower
    beyond it (possible at toy sizes, where the timings are mostly overhead).
    """
    a_full, b_full = linear_fit(full_rows)
    a_lsh, b_lsh = linear_fit(lsh_rows)
    length = (a_lsh - a_full) / (b_full - b_lsh) if b_full > b_lsh else -1.0
    measured = [r["length"] for r in full_rows]
    return {
        "length": length if length > 0 else None,
        "extrapolated": not min(measured) <= length <= max(measured),
        "full_fit_us": {"intercept": a_full, "slope_per_token": b_full},
        "lsh_fit_us": {"intercept": a_lsh, "slope_per_token": b_lsh},
        "method": "least-squares lines of per-token time against L, intersected",
    }
