"""Checks that grade the exercises: a clear PASS, or an explanation of what is wrong.

Each exercise notebook (``exercises/NN_topic.py``) ends an exercise with a check cell such as

    grading.check_close("Exercise 3.2: LSH output", out, reference_out)

A check that holds prints ``PASS  <name>``. One that fails raises :class:`ExerciseFailed`, an
``AssertionError`` whose message is one paragraph saying what differs: the shape, the kind of
number, where the NaNs are, which entries are off and by how much, and a hint when the error has a
telling form (a flipped sign, a constant factor, float32 where float64 was expected).

The four checks:

- :func:`check_close`: floating-point results, to a tolerance scaled by the largest expected entry;
- :func:`check_equal`: exact results (bucket ids, permutations, masks);
- :func:`check_gradient`: an analytic gradient against centred differences
  (:func:`minireformer.measuring.gradcheck.numerical_gradient`, with the project's relative error
  :func:`minireformer.measuring.gradcheck.rel_error`);
- :func:`check_true`: any other condition, with the message to show when it fails.

A check that compares a student's function with the library proves nothing if the function
calls the library. A check cell therefore runs the student's function inside :func:`own_work`,
which records every call into the ``minireformer`` package made while the function runs (through
``sys.setprofile``) and fails the exercise if there was one, naming it; the functions an exercise
lets students use (``lsh.hash_vectors`` in exercise 3.4) are passed as ``allowed``, and the calls
they make in turn are theirs. :func:`recording` lists the arguments of every call to one library
function while a block runs, so a check can see *how* a student used it (the chunk sizes of a
chunked feed-forward).

The tolerance of :func:`check_close` is ``|got - expected| <= atol + rtol * max|expected|`` entry by
entry: relative to the scale of the whole array, as ``gradcheck.rel_error`` is, so
that an entry whose expected value is exactly zero is not held to an exact match.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import backend
from ..checks import check_nonnegative_number
from ..measuring.gradcheck import numerical_gradient, rel_error

_SHOWN_ENTRIES = 3  # how many differing entries a failure message lists
_PACKAGE = str(Path(__file__).resolve().parents[1])  # the minireformer package's folder
_KIND_NAMES = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats", "c": "complex"}


class ExerciseFailed(AssertionError):
    """An exercise check that does not hold; the message says what is wrong."""


def _passed(name: str) -> None:
    print(f"PASS  {name}")


def _as_array(name: str, label: str, value) -> np.ndarray:
    """``value`` as a NumPy array of numbers, or ExerciseFailed saying why it is not one."""
    if value is None:
        raise ExerciseFailed(
            f"{name}: {label} is None. A function that ends without a `return` statement returns "
            f"None: return the result."
        )
    if isinstance(value, tuple):
        raise ExerciseFailed(
            f"{name}: {label} is a tuple of {len(value)} items, where one array was expected. "
            f"A forward function returns (out, cache): pass `out` only."
        )
    try:
        array = np.asarray(backend.to_numpy(value))
    except (TypeError, ValueError) as error:
        raise ExerciseFailed(f"{name}: {label} could not be read as an array ({error}).") from None
    if array.dtype.kind not in _KIND_NAMES:
        raise ExerciseFailed(
            f"{name}: {label} is not an array of numbers (dtype {array.dtype}); a list of arrays "
            f"of different shapes, or of non-numbers, gives this."
        )
    return array


def _kind(array: np.ndarray) -> str:
    return _KIND_NAMES[array.dtype.kind]


def _check_shape_and_kind(name: str, got: np.ndarray, expected: np.ndarray) -> None:
    if got.shape != expected.shape:
        hint = ""
        if sorted(got.shape) == sorted(expected.shape):
            hint = " The same sizes in another order: two axes are swapped (a missing transpose?)."
        elif got.size == expected.size:
            hint = " The same number of entries: a reshape is missing or wrong."
        raise ExerciseFailed(
            f"{name}: shape {got.shape} was expected to be {expected.shape}.{hint}"
        )
    if _kind(got) != _kind(expected):
        raise ExerciseFailed(
            f"{name}: expected {_kind(expected)} (dtype {expected.dtype}), got {_kind(got)} "
            f"(dtype {got.dtype})."
            + (
                " Integer division (//) or astype(int) truncates floats."
                if _kind(expected) == "floats"
                else ""
            )
        )


def _fmt(value) -> str:
    return f"{value:.10g}" if isinstance(value, float | np.floating) else str(value)


def _entries(got: np.ndarray, expected: np.ndarray, wrong: np.ndarray) -> str:
    """``'at (0, 3) got 1.5, expected 2; ...'`` for the first few wrong entries."""
    shown = []
    for index in np.argwhere(wrong)[:_SHOWN_ENTRIES]:
        where = tuple(int(i) for i in index)
        shown.append(f"at {where} got {_fmt(got[where])}, expected {_fmt(expected[where])}")
    return "; ".join(shown)


def check_close(name: str, got, expected, *, rtol: float = 1e-7, atol: float = 0.0) -> None:
    """Check that the float array (or scalar) ``got`` equals ``expected`` to a tolerance.

    Passes when the shapes agree, both hold floats, NaN and infinities sit in the same places with
    the same signs, and every other entry has ``|got - expected| <= atol + rtol * max|expected|``.
    ``rtol=1e-7`` suits float64 results computed in another order than the library's; a float32
    exercise needs about 1e-5.
    """
    __tracebackhide__ = True  # IPython and pytest show the exercise cell, not this frame
    # a NaN tolerance would pass every answer (no comparison with NaN is true): refused
    rtol, atol = check_nonnegative_number("rtol", rtol), check_nonnegative_number("atol", atol)
    got, expected = _as_array(name, "your result", got), _as_array(name, "the reference", expected)
    _check_shape_and_kind(name, got, expected)
    got64, expected64 = got.astype(np.float64), expected.astype(np.float64)

    finite = np.isfinite(expected64)
    same_special = (np.isnan(got64) & np.isnan(expected64)) | (got64 == expected64)
    special = ~finite & ~same_special  # the reference's NaN or +-inf, not matched by yours
    n_nan = int(np.sum(np.isnan(got64) & finite))
    if n_nan:
        raise ExerciseFailed(
            f"{name}: {n_nan} of {got.size} entries are NaN where the reference is finite "
            f"({_entries(got, expected, np.isnan(got64) & finite)}). NaN usually comes from "
            f"exp overflowing (subtract the maximum before exponentiating), 0/0, or log(0)."
        )
    if np.any(special):
        raise ExerciseFailed(
            f"{name}: the NaN or infinite entries differ from the reference's "
            f"({_entries(got, expected, special)})."
        )

    scale = float(np.max(np.abs(expected64[finite]), initial=0.0))
    with np.errstate(invalid="ignore"):  # inf - inf where both are infinite: not compared
        error = np.where(finite, np.abs(got64 - expected64), 0.0)
    wrong = error > atol + rtol * scale
    if not np.any(wrong):
        _passed(name)
        return
    max_error = float(np.max(error))
    raise ExerciseFailed(
        f"{name}: {int(np.sum(wrong))} of {got.size} entries differ from the reference by more "
        f"than the tolerance atol + rtol * max|expected| = {atol:.3g} + {rtol:.3g} * "
        f"{scale:.3g} ({_entries(got, expected, wrong)}). Largest difference {max_error:.3g}, "
        f"{max_error / scale if scale else float('inf'):.3g} relative to max|expected|."
        f"{_hint(got, expected)}"
    )


def _hint(got: np.ndarray, expected: np.ndarray, yours: str = "Your result") -> str:
    """A sentence naming a telling form of the error, or ''; ``yours`` names ``got``."""
    got64, expected64 = got.astype(np.float64), expected.astype(np.float64)
    if not (np.all(np.isfinite(got64)) and np.all(np.isfinite(expected64))):
        return ""
    if not np.any(got64):
        return f" {yours} is all zeros: is the computation still a placeholder?"
    if rel_error(got64, -expected64) < 1e-6:
        return f" {yours} is the reference with its sign flipped."
    if got.dtype != expected.dtype and rel_error(got64, expected64) < 1e-5:
        return (
            f" The error is at the level of {got.dtype} round-off: compute in {expected.dtype}, "
            f"the inputs' dtype."
        )
    # the best constant c with got ~ c * expected: a missing scale factor (1/sqrt(d), 1/N, 2)
    factor = float(np.sum(got64 * expected64) / max(float(np.sum(expected64**2)), 1e-300))
    if abs(factor - 1) > 1e-3 and rel_error(got64, factor * expected64) < 1e-6:
        return f" {yours} is the reference times {factor:.6g}: a constant factor is off."
    return ""


def check_equal(name: str, got, expected) -> None:
    """Check that ``got`` equals ``expected`` exactly: shape, kind of number and every entry.

    For integer and boolean results (bucket ids, sorting permutations, masks), where a tolerance
    would hide a wrong answer.
    """
    __tracebackhide__ = True
    got, expected = _as_array(name, "your result", got), _as_array(name, "the reference", expected)
    _check_shape_and_kind(name, got, expected)
    wrong = got != expected
    if got.dtype.kind == "f":  # NaN where the reference has NaN is the same answer
        wrong &= ~(np.isnan(got) & np.isnan(expected))
    if not np.any(wrong):
        _passed(name)
        return
    raise ExerciseFailed(
        f"{name}: {int(np.sum(wrong))} of {got.size} entries differ from the reference "
        f"({_entries(got, expected, wrong)}). This check is exact: every entry must match."
    )


def check_gradient(
    name: str, f: Callable, grad, x, *, eps: float = 1e-6, rtol: float = 1e-6
) -> None:
    """Check the analytic gradient ``grad`` of the scalar function ``f`` at ``x``.

    Args:
        name: what is checked, shown in the PASS line and in a failure.
        f: ``f(x) -> float``, deterministic (fixed rotations, dropout masks and seeds): it is
            evaluated twice per entry of ``x``, so keep ``x`` small (a few hundred entries).
        grad: the gradient to check, an array shaped like ``x`` (the student's backward at ``x``).
        x: a float64 array, the point; it is not modified (``f`` is evaluated on a copy).
        eps: the finite-difference step h of ``(f(x + h) - f(x - h)) / 2h``.
        rtol: the largest accepted relative error ``max|a - n| / max(|a| + |n|)``
            (:func:`minireformer.measuring.gradcheck.rel_error`): 1e-7 suits one op, 1e-6 a block.
    """
    __tracebackhide__ = True
    x = backend.to_numpy(x)
    if not (isinstance(x, np.ndarray) and x.dtype == np.float64):
        raise ValueError(
            f"check_gradient({name!r}): x must be a float64 array, got "
            f"{getattr(x, 'dtype', type(x).__name__)}; finite differences need float64"
        )
    grad = _as_array(name, "your gradient", grad)
    point = np.array(x, dtype=np.float64, order="C")  # perturbed in place by numerical_gradient
    if grad.shape != point.shape:
        raise ExerciseFailed(
            f"{name}: your gradient has shape {grad.shape}, but x has shape {point.shape}; a "
            f"gradient has the shape of what it differentiates with respect to."
        )
    if not np.all(np.isfinite(grad)):
        raise ExerciseFailed(
            f"{name}: your gradient has {int(np.sum(~np.isfinite(grad)))} non-finite entries."
        )
    eps, rtol = check_nonnegative_number("eps", eps), check_nonnegative_number("rtol", rtol)
    value = np.asarray(f(point.copy()))
    if value.size != 1:
        raise ExerciseFailed(
            f"{name}: f returned an array of shape {value.shape}; a gradient check needs f to "
            "return one number (sum the array, or its product with a fixed random array)"
        )
    if not np.isfinite(value).all():
        raise ExerciseFailed(
            f"{name}: f itself is {float(value.reshape(-1)[0])} at x, so there is no gradient "
            "to compare with: look at the forward pass first"
        )
    numeric = numerical_gradient(lambda: float(np.asarray(f(point)).reshape(-1)[0]), point, h=eps)
    analytic = grad.astype(np.float64)
    error = rel_error(analytic, numeric)
    if error <= rtol:
        _passed(name)
        return
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(analytic - numeric)), x.shape))
    raise ExerciseFailed(
        f"{name}: relative error {error:.3g} against centred differences (step {eps:g}), above "
        f"rtol = {rtol:g}; the largest difference is at {worst}: yours {_fmt(analytic[worst])}, "
        f"numerical {_fmt(numeric[worst])}.{_hint(analytic, numeric, 'Your gradient')}"
    )


def check_true(name: str, condition, message: str) -> None:
    """Check that ``condition`` holds; ``message`` says what it means when it does not."""
    __tracebackhide__ = True
    if not isinstance(condition, (bool, np.bool_)):  # an array's truth would be ambiguous
        raise TypeError(
            f"check_true({name!r}): condition must be True or False, got "
            f"{type(condition).__name__} (use np.all(...) or np.any(...) for an array)"
        )
    if bool(condition):
        _passed(name)
        return
    raise ExerciseFailed(f"{name}: {message}")


def _library_name(code) -> str:
    """``module.function`` of a code object inside the package."""
    module = Path(code.co_filename).resolve().relative_to(_PACKAGE).with_suffix("")
    return ".".join(("minireformer", *module.parts, getattr(code, "co_qualname", code.co_name)))


@contextlib.contextmanager
def own_work(name: str, *, allowed: tuple = ()):
    """Run the block (a student's function) with no calls into the library but ``allowed``.

    Records, through ``sys.setprofile``, every Python function of the ``minireformer`` package
    called while the block runs; on leaving the block, raises :class:`ExerciseFailed` naming them.
    ``allowed``: functions the exercise lets students call (what those call is not counted).
    """
    __tracebackhide__ = True
    allowed_codes = {getattr(inspect.unwrap(f), "__code__", None) for f in allowed} - {None}
    called, depth = [], [0]  # depth: inside a library call already counted (or allowed)

    def profile(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if depth[0]:
                depth[0] += 1
            elif code in allowed_codes:
                depth[0] = 1
            elif code.co_filename.startswith(_PACKAGE) and code.co_filename != __file__:
                called.append(_library_name(code))
                depth[0] = 1
        elif event == "return" and depth[0]:
            depth[0] -= 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(previous)
    if called:
        names = ", ".join(dict.fromkeys(called))
        raise ExerciseFailed(
            f"{name}: your function called the library ({names}). The check compares your "
            f"result with the library's, so a call proves nothing: write the computation yourself."
        )


@contextlib.contextmanager
def recording(module, name: str):
    """Replace ``module.<name>`` by a wrapper that appends each call's ``(args, kwargs)`` to the
    list this yields, calling the original; restored on leaving the block."""
    original, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    setattr(module, name, wrapper)
    try:
        yield calls
    finally:
        setattr(module, name, original)
