"""Input validation shared by every public function.

Bad input raises ``ValueError`` (or ``TypeError`` for a wrong kind of object) with a message that
names the argument, what was expected and what was received, so that a reader's mistake is caught
where it is made rather than as a broadcasting error three functions deeper.

The policy these helpers implement (also in the README's "Errors" section):

- dtypes: arrays of floats are float32 or float64 (:data:`SUPPORTED_DTYPES`). float16 is refused:
  the mask constants (-1e9) overflow it and its softmax would need float32 anyway. One dtype per
  call: mixing float32 and float64 is a ``TypeError`` naming both (:func:`check_same_dtype`).
- empty inputs: an attention input, a loss input or a model's tokens with an axis of size 0
  (B = 0 or L = 0) is a ``ValueError`` naming the argument (``nonempty=True``), not an empty result.
- numbers: Python and NumPy scalars are both accepted (``np.float32(0.5)`` is a rate); ``bool`` is
  not a number. Flags are strict: only ``True`` or ``False`` (or NumPy's ``bool_``), never a
  truthy string such as ``'False'``.
- non-finite values: the inputs of attention and the parameter trees of the models are checked
  (``finite=True``); inner ops assume checked inputs.
- gradients: every ``*_backward`` checks ``dout`` against the shape and dtype its cache recorded
  (:func:`check_grad`).
"""

from __future__ import annotations

import math
import numbers

from . import backend

SUPPORTED_DTYPES = ("float32", "float64")


def _is_number(value) -> bool:
    """A real Python or NumPy number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, backend.BOOL_TYPES)


def _check_int(name: str, value, minimum: int, expected: str) -> int:
    if isinstance(value, backend.BOOL_TYPES) or not hasattr(value, "__index__"):
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


def check_positive_number(name: str, value) -> float:
    """``value`` as a float if it is a finite real number > 0 (Python or NumPy scalar)."""
    if not _is_number(value):
        raise TypeError(f"{name}: expected a positive number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


def check_rate(name: str, value) -> float:
    """``value`` as a float if it is a number in [0, 1) (a dropout rate, an Adam beta).

    Anything else, a string included, is a ``ValueError`` (as it has always been for rates).
    """
    if not _is_number(value) or not 0 <= value < 1:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """``value`` as a bool if it is True or False (not merely truthy), else ``TypeError``."""
    if not isinstance(value, backend.BOOL_TYPES):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def check_float_dtype(dtype, name: str = "dtype"):
    """``dtype`` as the backend's dtype object if it is one of :data:`SUPPORTED_DTYPES`."""
    try:
        dt = backend.get_xp().dtype(dtype)
    except TypeError as err:
        raise TypeError(
            f"{name}: expected a floating-point dtype, one of {SUPPORTED_DTYPES}, got {dtype!r}"
        ) from err
    if dt.name not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name}: expected a floating-point dtype, one of {SUPPORTED_DTYPES}, got {dt}"
        )
    return dt


def check_array(
    name: str, x, *, ndim: int | None = None, shape: tuple | None = None, nonempty: bool = False
) -> None:
    """Check that ``x`` is an array with ``ndim`` dimensions and/or ``shape`` (None = any size).

    ``nonempty``: every axis must have size >= 1 (the library's policy for empty inputs).
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(x.shape)}")
    if shape is not None and (
        len(shape) != x.ndim or any(s is not None and s != t for s, t in zip(shape, x.shape))
    ):
        want = tuple("any" if s is None else s for s in shape)
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if nonempty and 0 in x.shape:
        raise ValueError(
            f"{name}: expected a non-empty array (every axis of size >= 1), "
            f"got shape {tuple(x.shape)}"
        )


def check_float_array(
    name: str,
    x,
    *,
    ndim: int | None = None,
    shape: tuple | None = None,
    finite: bool = True,
    nonempty: bool = False,
) -> None:
    """Like :func:`check_array`, and the dtype must be float32 or float64 (and values finite)."""
    check_array(name, x, ndim=ndim, shape=shape, nonempty=nonempty)
    if x.dtype.kind != "f":
        raise TypeError(
            f"{name}: expected a floating-point array, got dtype {x.dtype} "
            f"(supported: {' and '.join(SUPPORTED_DTYPES)})"
        )
    if x.dtype.name not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name}: expected dtype float32 or float64 (the supported dtypes), got {x.dtype}"
        )
    if finite:
        check_finite(name, x)


def check_same_dtype(**arrays) -> None:
    """``TypeError`` unless the given arrays (None skipped) share the dtype of the first.

    One dtype per call: NumPy would silently compute float32 with float64 in float64. Called as
    ``check_same_dtype(x=x, w=w, b=b)``; the message names both arrays and both dtypes.
    """
    named = [(name, a) for name, a in arrays.items() if a is not None]
    first, ref = named[0]
    for name, a in named[1:]:
        if a.dtype != ref.dtype:
            raise TypeError(
                f"{name}: expected dtype {ref.dtype} (that of {first}), got {a.dtype}: "
                f"one dtype per call"
            )


def check_grad(name: str, dout, shape: tuple, dtype) -> None:
    """A backward pass's upstream gradient must have its forward output's shape and dtype."""
    check_array(name, dout)
    if tuple(dout.shape) != tuple(shape):
        raise ValueError(
            f"{name}: expected shape {tuple(shape)} (that of the forward's output), "
            f"got {tuple(dout.shape)}"
        )
    if dout.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype} (that of the forward's output), got {dout.dtype}"
        )


def check_scalar_grad(name: str, dloss) -> float:
    """The upstream gradient of a scalar loss: a real number or a 0-d array, as a float."""
    if not (_is_number(dloss) or getattr(dloss, "shape", None) == ()):
        raise ValueError(f"{name}: expected a scalar (the loss is a scalar), got {dloss!r}")
    return float(dloss)


def check_finite(name: str, x) -> None:
    """``ValueError`` if ``x`` (array or scalar) holds NaN or infinity."""
    xp = backend.array_module(x)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name}: expected finite values, got NaN or inf")


def check_token_ids(
    name: str, ids, vocab_size: int, *, ndim: int | None = None, nonempty: bool = False
) -> None:
    """Token ids must be an integer array with values in [0, vocab_size)."""
    check_array(name, ids, ndim=ndim, nonempty=nonempty)
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


def check_keys(name: str, p, keys) -> None:
    """``p`` must be a dict with exactly ``keys``; the message lists what is missing or extra."""
    if not isinstance(p, dict):
        raise TypeError(f"{name}: expected a dict with keys {sorted(keys)}, got {type(p).__name__}")
    missing, extra = sorted(set(keys) - set(p)), sorted(set(p) - set(keys), key=str)
    if missing or extra:
        raise ValueError(
            f"{name}: expected a dict with keys {sorted(keys)}, got {sorted(p, key=str)} "
            f"(missing {missing}, unexpected {extra})"
        )
