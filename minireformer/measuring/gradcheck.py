"""Numerical gradient checking by centred differences, in float64.

A hand-written backward pass is trusted only after it agrees with finite differences:

    df/dx_i  ~  (f(x + h e_i) - f(x - h e_i)) / (2 h),

whose truncation error is O(h^2). In float64 with h = 1e-5 the truncation and round-off errors are
both around 1e-10 relative, so a correct backward gives relative errors of 1e-8 or less, and a wrong
one gives errors of order 1. The comparison used everywhere in the project is

    rel_error(a, b) = max_i |a_i - b_i| / max(1e-8, max_i (|a_i| + |b_i|)),

a relative error normalised by the largest gradient entry, so that entries whose true gradient is
exactly zero (an unused embedding row, say) do not turn round-off into a large ratio.

Following CS231n's ``gradient_check.py``, an op ``forward(*args) -> (out, cache)`` is reduced to a
scalar with a random upstream gradient ``dout``: ``f = sum(out * dout)``, whose gradient with
respect to each input is exactly what ``backward(dout, cache)`` returns.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

from .. import backend, checks
from ..checks import check_float_array, check_positive_number
from ..tree import leaves_with_paths, path_str


class PrecisionWarning(UserWarning):
    """A gradient check run in float32: its errors (~1e-3) say nothing about the backward."""


def rel_error(a, b) -> float:
    """``max|a - b| / max(1e-8, max(|a| + |b|))`` for arrays of the same shape, as a float."""
    xp = backend.array_module(a, b)
    a, b = xp.asarray(a, dtype=xp.float64), xp.asarray(b, dtype=xp.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    return float(xp.max(xp.abs(a - b)) / max(1e-8, float(xp.max(xp.abs(a) + xp.abs(b)))))


def numerical_gradient(f: Callable[[], float], x, h: float = 1e-5, indices=None):
    """Centred-difference gradient of the scalar ``f()`` with respect to the array ``x``.

    ``x`` is perturbed in place (and restored, also when ``f`` raises); ``f`` must read it.
    ``indices`` (flat positions) limits the work to a sample of entries; the others are returned
    as zero. ``x`` must be a float array (an integer array cannot be perturbed by h); a float32
    ``x`` gives a :class:`PrecisionWarning`, since its round-off (~1e-7 relative, divided by h)
    swamps the truncation error: the check is meaningful in float64 only.

    Returns a float64 array shaped like ``x``.
    """
    check_float_array("x", x, finite=False)
    h = check_positive_number("h", h)
    if x.dtype.name != "float64":
        warnings.warn(
            f"numerical_gradient: x is {x.dtype}; centred differences are meaningful in float64 "
            f"only (float32 round-off gives errors near 1e-3 even for a correct backward)",
            PrecisionWarning,
            stacklevel=2,
        )
    if not x.flags.c_contiguous:
        raise ValueError("x: expected a C-contiguous array (it is perturbed in place), got a view")
    xp = backend.array_module(x)
    grad = xp.zeros(x.shape, dtype=xp.float64)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)  # views: writing flat_x perturbs x
    positions = range(x.size) if indices is None else indices
    for i in positions:
        old = float(flat_x[i])  # exact: restored below whatever f does
        try:
            flat_x[i] = old + h
            f_plus = float(f())
            flat_x[i] = old - h
            f_minus = float(f())
        finally:
            flat_x[i] = old
        flat_g[i] = (f_plus - f_minus) / (2 * h)
    return grad


def _is_float_array(a) -> bool:
    return hasattr(a, "dtype") and hasattr(a, "shape") and a.dtype.kind == "f"


def check_op(
    forward: Callable,
    backward: Callable,
    args: Sequence,
    kwargs: dict | None = None,
    *,
    rng,
    h: float = 1e-5,
    max_entries: int | None = None,
) -> dict[int, float]:
    """Compare ``backward`` with centred differences of ``forward`` on every float-array argument.

    Args:
        forward: ``forward(*args, **kwargs) -> (out, cache)``.
        backward: ``backward(dout, cache)`` returning the gradients of the floating-point array
            arguments, in their order in ``args`` (a single array when there is one).
        args: positional arguments; float arrays should be float64 (float32 gives a
            :class:`PrecisionWarning`). Integer or boolean arrays (token ids, masks) and
            non-arrays are passed through and not differentiated.
        rng: ``numpy.random.Generator`` for the random upstream gradient and entry sampling.
        max_entries: check at most this many randomly chosen entries per argument.

    Returns:
        ``{argument index: rel_error}`` for each differentiated argument.
    """
    checks.check_rng(rng)
    kwargs = kwargs or {}
    args = list(args)
    wrt = [i for i, a in enumerate(args) if _is_float_array(a)]
    out, cache = forward(*args, **kwargs)
    # the random upstream gradient in the output's dtype (backward refuses another dtype)
    dout = backend.asarray(
        rng.standard_normal(getattr(out, "shape", ())), getattr(out, "dtype", None)
    )
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    if len(grads) != len(wrt):
        raise ValueError(
            f"check_op: backward returned {len(grads)} gradients, expected {len(wrt)} "
            f"(one per float argument at positions {wrt})"
        )
    xp = backend.array_module(dout)

    def scalar() -> float:
        return float(xp.sum(forward(*args, **kwargs)[0] * dout))

    errors = {}
    for i, analytic in zip(wrt, grads):
        x = args[i]
        idx = _sample(rng, x.size, max_entries)
        numeric = numerical_gradient(scalar, x, h, idx)
        analytic = xp.asarray(analytic, dtype=xp.float64)
        if idx is not None:
            numeric, analytic = numeric.reshape(-1)[idx], analytic.reshape(-1)[idx]
        errors[i] = rel_error(analytic, numeric)
    return errors


def _sample(rng, size: int, max_entries: int | None):
    if max_entries is None or size <= max_entries:
        return None
    return [int(i) for i in rng.choice(size, size=max_entries, replace=False)]


def check_tree(
    loss_and_grads: Callable,
    params,
    *,
    rng,
    h: float = 1e-5,
    max_entries_per_leaf: int | None = None,
) -> tuple[float, dict[str, float]]:
    """Gradient check of a scalar loss of a whole parameter tree.

    Args:
        loss_and_grads: ``loss_and_grads(params) -> (loss, grads)`` with ``grads`` mirroring
            ``params``; it must be deterministic (fix dropout seeds and LSH rotations).
        params: the tree (nested dicts / lists of float64 arrays), perturbed in place and restored.
        max_entries_per_leaf: check at most this many random entries of each leaf.

    Returns:
        ``(error, per_leaf)``: ``error`` is :func:`rel_error` over all checked entries together;
        ``per_leaf`` maps ``'blocks[0].attn.w_qk'``-style paths to max absolute differences.
    """
    checks.check_rng(rng)
    _, grads = loss_and_grads(params)
    grad_leaves = dict(leaves_with_paths(grads))
    analytic_all, numeric_all, per_leaf = [], [], {}
    for path, x in leaves_with_paths(params):
        idx = _sample(rng, x.size, max_entries_per_leaf)
        numeric = numerical_gradient(lambda: loss_and_grads(params)[0], x, h, idx).reshape(-1)
        analytic = grad_leaves[path].reshape(-1)
        if idx is not None:
            numeric, analytic = numeric[idx], analytic[idx]
        xp = backend.array_module(analytic)
        per_leaf[path_str(path)] = float(xp.max(xp.abs(analytic - numeric)))
        analytic_all.append(analytic)
        numeric_all.append(numeric)
    xp = backend.array_module(*analytic_all)
    return rel_error(xp.concatenate(analytic_all), xp.concatenate(numeric_all)), per_leaf
