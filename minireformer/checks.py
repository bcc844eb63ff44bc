"""Input validation shared by every public function.

Bad input raises ``ValueError`` (or ``TypeError`` for a wrong kind of object) with a message that
names the argument, what was expected and what was received, so that a reader's mistake is caught
where it is made rather than as a broadcasting error three functions deeper.
"""

from __future__ import annotations

from . import backend


def _check_int(name: str, value, minimum: int, expected: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name}: expected {expected}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return int(value)


def check_positive_int(name: str, value) -> int:
    """``value`` as an int if it is an integer >= 1, else ``ValueError``/``TypeError``."""
    return _check_int(name, value, 1, "a positive integer")


def check_nonnegative_int(name: str, value) -> int:
    """``value`` as an int if it is an integer >= 0, else ``ValueError``/``TypeError``."""
    return _check_int(name, value, 0, "an integer >= 0")


def check_rate(name: str, value) -> float:
    """``value`` as a float if it is a number in [0, 1) (a dropout rate, an Adam beta)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """``value`` if it is True or False (not merely truthy), else ``TypeError``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def check_array(name: str, x, *, ndim: int | None = None, shape: tuple | None = None) -> None:
    """Check that ``x`` is an array with ``ndim`` dimensions and/or ``shape`` (None = any size)."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(x.shape)}")
    if shape is not None and (
        len(shape) != x.ndim or any(s is not None and s != t for s, t in zip(shape, x.shape))
    ):
        want = tuple("any" if s is None else s for s in shape)
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")


def check_float_array(
    name: str, x, *, ndim: int | None = None, shape: tuple | None = None, finite: bool = True
) -> None:
    """Like :func:`check_array`, and the dtype must be floating point (and values finite)."""
    check_array(name, x, ndim=ndim, shape=shape)
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    if finite:
        check_finite(name, x)


def check_finite(name: str, x) -> None:
    """``ValueError`` if ``x`` (array or scalar) holds NaN or infinity."""
    xp = backend.array_module(x)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name}: expected finite values, got NaN or inf")


def check_token_ids(name: str, ids, vocab_size: int, *, ndim: int | None = None) -> None:
    """Token ids must be an integer array with values in [0, vocab_size)."""
    check_array(name, ids, ndim=ndim)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array of token ids, got dtype {ids.dtype}")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"{name}: expected token ids in [0, {vocab_size}), got values in [{lo}, {hi}]"
            )


def check_mask(name: str, mask, shape: tuple) -> None:
    """A boolean mask of exactly ``shape``."""
    check_array(name, mask, shape=shape)
    if mask.dtype.kind != "b":
        raise TypeError(f"{name}: expected a boolean array, got dtype {mask.dtype}")
