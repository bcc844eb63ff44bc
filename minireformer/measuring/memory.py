"""Peak memory, measured: the bytes a call allocates at its worst moment.

:func:`measure_peak` runs a callable and reports the peak number of bytes that were allocated
during the call on top of what was already allocated when it began. On the NumPy backend it uses
:mod:`tracemalloc`, to which NumPy reports every array buffer it allocates; on the CuPy backend it
watches the used bytes of CuPy's default memory pool. Arrays that existed before the call
(parameters, inputs) are therefore excluded, and arrays created and freed inside the call count
only while they were alive. :func:`measure_training_step` applies it to one ``loss_and_grads``.

What the paper predicts is in ``table3.py`` (its arithmetic and Table 3), and what this
implementation holds at its peak, array by array, in ``memory_model.py``.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from .. import backend
from ..tree import leaves

GiB = 2**30  # memory is reported in binary units


@dataclass
class _Frame:
    """One active measurement: its starting level and the highest level seen so far (absolute)."""

    baseline: int
    peak: int


_frames: list[_Frame] = []  # active measurements, outermost first (nesting support)


def _is_cupy_backend() -> bool:
    return getattr(backend.get_xp(), "__name__", "") == "cupy"


def _raise_enclosing(level: int) -> None:
    """Record ``level`` (absolute bytes) as seen by every active measurement."""
    for frame in _frames:
        frame.peak = max(frame.peak, level)


def _measure_numpy(fn, args, kwargs):
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    # tracemalloc keeps one global peak: hand the peak so far to the enclosing measurements
    # before resetting it for ours.
    _raise_enclosing(tracemalloc.get_traced_memory()[1])
    tracemalloc.reset_peak()
    frame = _Frame(baseline=tracemalloc.get_traced_memory()[0], peak=0)
    _frames.append(frame)
    try:
        result = fn(*args, **kwargs)
        _raise_enclosing(tracemalloc.get_traced_memory()[1])
    finally:
        _frames.pop()
        if started_here:
            tracemalloc.stop()
    return result, max(0, frame.peak - frame.baseline)


def _measure_cupy(fn, args, kwargs):
    import cupy  # only on the CuPy backend: never imported otherwise

    pool = cupy.get_default_memory_pool()
    cupy.cuda.Device().synchronize()
    frame = _Frame(baseline=pool.used_bytes(), peak=pool.used_bytes())
    _frames.append(frame)

    def tracking_malloc(size):
        # The pool's used bytes grow only here, so checking after each allocation sees the peak.
        memory = pool.malloc(size)
        _raise_enclosing(pool.used_bytes())
        return memory

    try:
        with cupy.cuda.using_allocator(tracking_malloc):
            result = fn(*args, **kwargs)
            cupy.cuda.Device().synchronize()
    finally:
        _frames.pop()
    return result, max(0, frame.peak - frame.baseline)


def measure_peak(fn: Callable, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` and return ``(result, peak_bytes)``.

    ``peak_bytes`` is the highest amount of memory allocated during the call above the amount
    allocated when the call began: arrays that already existed are excluded; arrays allocated
    during the call count while they are alive (the result included).

    NumPy backend: :mod:`tracemalloc` traces NumPy's buffers (and Python objects, a few KB). If
    tracing is already on it is left on (its peak counter is reset, as ``tracemalloc.reset_peak``
    does), and nested calls are supported (each sees its own peak, and an outer call's peak
    includes the inner ones). CuPy backend: the used bytes of CuPy's
    default memory pool (imported only then), rounded by the pool to 512-byte blocks.
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    if _is_cupy_backend():
        return _measure_cupy(fn, args, kwargs)
    return _measure_numpy(fn, args, kwargs)


def tree_nbytes(tree) -> int:
    """Total bytes of the array leaves of a parameter (or gradient) tree."""
    return int(sum(leaf.nbytes for leaf in leaves(tree)))


def measure_training_step(loss_and_grads: Callable, params, *args, **kwargs):
    """Peak memory of one ``loss_and_grads(params, *args, **kwargs)`` call.

    The parameters (and any optimizer state) exist before the call, so they are excluded; what is
    counted is the activations kept for the backward pass, the temporaries of forward and backward,
    and the gradient tree being built (``tree_nbytes(params)`` once it is complete; subtract it if
    only activations are wanted and the peak is known to come after the last gradient).

    Returns:
        ``(loss, peak_bytes)``.
    """
    (loss, _grads), peak = measure_peak(loss_and_grads, params, *args, **kwargs)
    return loss, peak
