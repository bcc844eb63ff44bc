"""Input validation: checked once at the door, trusted inside.

Bad input raises ``ValueError`` (or ``TypeError`` for a wrong kind of object) with a message that
names the argument, what was expected and what was received, so that a reader's mistake is caught
where it is made rather than as a broadcasting error three functions deeper.

**Doors.** Every public op starts with one line, a call of the helper below named after it
(``checks.linear(x, w, b)`` in ``layers.linear_forward``), and then does its math. A model's entry
point (``loss_and_grads``, ``forward_logits``) checks its whole input once (the parameter tree
against the config, the tokens) and runs the layers inside :func:`trusted`: there the door
helpers return at once, because what reaches an inner op was made by the model from checked
input. The same op called by a reader, outside any model, checks its arguments.

The policy these helpers implement (also in the README's "Errors" section):

- dtypes: arrays of floats are float32 or float64 (:data:`SUPPORTED_DTYPES`). float16 is refused:
  the mask constants (-1e9) overflow it and its softmax would need float32 anyway. One dtype per
  call: mixing float32 and float64 is a ``TypeError`` naming both (:func:`check_same_dtype`).
- empty inputs: an attention input, a loss input or a model's tokens with an axis of size 0
  (B = 0 or L = 0) is a ``ValueError`` naming the argument, not an empty result.
- numbers: Python and NumPy scalars are both accepted (``np.float32(0.5)`` is a rate); ``bool`` is
  not a number. Flags are strict: only ``True`` or ``False`` (or NumPy's ``bool_``), never a
  truthy string such as ``'False'``.
- non-finite values: the inputs of attention and the parameter trees of the models are checked;
  the other ops assume finite inputs.
- gradients: every ``*_backward`` checks ``dout`` against the shape and dtype its cache recorded
  (:func:`grad`).

This file is longer than the others because it holds every door of the package in one place:
one concept, the input policy, read in one file.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import numbers

from . import backend

SUPPORTED_DTYPES = ("float32", "float64")
_TRUSTED = contextvars.ContextVar("minireformer_trusted", default=False)


@contextlib.contextmanager
def trusted():
    """Inside this context the door checks return at once (a model has checked its input)."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def door(check):
    """Make ``check`` a door check: it runs outside :func:`trusted` and returns None inside."""

    @functools.wraps(check)
    def guarded(*args, **kwargs):
        if _TRUSTED.get():
            return None
        return check(*args, **kwargs)

    return guarded


# --- Numbers, flags and dtypes -----------------------------------------------------------------


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


def check_nonnegative_number(name: str, value) -> float:
    """``value`` as a float if it is a finite real number >= 0 (Python or NumPy scalar)."""
    if not _is_number(value):
        raise TypeError(f"{name}: expected a finite number >= 0, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def check_rate(name: str, value) -> float:
    """``value`` as a float if it is a number in [0, 1) (a dropout rate, an Adam beta)."""
    if not _is_number(value) or not 0 <= value < 1:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value!r}")
    return float(value)


def check_fraction(name: str, value) -> float:
    """``value`` as a float if it is a number in [0, 1] (a ratio, both ends allowed)."""
    if not _is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """``value`` as a bool if it is True or False (not merely truthy), else ``TypeError``."""
    if not isinstance(value, backend.BOOL_TYPES):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value, choices) -> str:
    """``value`` if it is one of ``choices`` (strings), else ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def check_rng(rng, name: str = "rng"):
    """Return ``rng`` if it is a ``numpy.random.Generator``, else raise ``TypeError`` naming it."""
    if not isinstance(rng, backend.GENERATOR):
        raise TypeError(f"{name}: expected a numpy.random.Generator, got {type(rng).__name__}")
    return rng


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


# --- Arrays ------------------------------------------------------------------------------------


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


# --- The doors of the ops ----------------------------------------------------------------------


@door
def grad(name: str, dout, shape: tuple, dtype) -> None:
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


@door
def scalar_grad(name: str, dloss) -> None:
    """The upstream gradient of a scalar loss: a real number or a 0-d array."""
    if not (_is_number(dloss) or getattr(dloss, "shape", None) == ()):
        raise ValueError(f"{name}: expected a scalar (the loss is a scalar), got {dloss!r}")


@door
def finite_result(name: str, x) -> None:
    """A computed result (a loss) must be finite: NaN or inf means the inputs overflowed."""
    check_finite(name, x)


@door
def float_input(name: str, x) -> None:
    """An elementwise op's input: a float32 or float64 array (values not scanned)."""
    check_float_array(name, x, finite=False)


@door
def linear(x, w, b) -> None:
    """x (..., Din), w (Din, Dout), b (Dout,) or None, of one float dtype."""
    check_float_array("w", w, ndim=2, finite=False)
    check_float_array("x", x, finite=False)
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"x: expected shape (..., {w.shape[0]}) to match w, got {x.shape}")
    if b is not None:
        check_float_array("b", b, shape=(w.shape[1],), finite=False)
    check_same_dtype(x=x, w=w, b=b)


@door
def layernorm(x, gamma, beta, eps) -> None:
    """x (..., D); gamma, beta (D,) of x's dtype; eps > 0."""
    check_float_array("x", x, finite=False)
    if x.ndim < 1:
        raise ValueError(f"x: expected at least 1 dimension, got shape {x.shape}")
    check_float_array("gamma", gamma, shape=(x.shape[-1],), finite=False)
    check_float_array("beta", beta, shape=(x.shape[-1],), finite=False)
    check_same_dtype(x=x, gamma=gamma, beta=beta)
    check_positive_number("eps", eps)


@door
def embedding(ids, table) -> None:
    """table (V, D) floats; ids integers in [0, V)."""
    check_float_array("table", table, ndim=2, finite=False)
    check_token_ids("ids", ids, table.shape[0])


@door
def dropout(x, rate, seed) -> None:
    """x floats; rate in [0, 1); seed a non-negative int when rate > 0."""
    check_float_array("x", x, finite=False)
    rate = check_rate("rate", rate)
    if rate == 0:
        return
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise TypeError(f"seed: expected a non-negative int when rate > 0, got {seed!r}")
    if int(seed) < 0:
        raise ValueError(f"seed: expected a non-negative int when rate > 0, got {seed!r}")


@door
def cross_entropy(logits, targets, mask, normalizer) -> None:
    """logits (..., V) non-empty; targets (...) ids in [0, V); mask (...) bool or None."""
    check_float_array("logits", logits, finite=False, nonempty=True)
    if logits.ndim < 1:
        raise ValueError(f"logits: expected shape (..., V), got {logits.shape}")
    check_token_ids("targets", targets, logits.shape[-1])
    check_array("targets", targets, shape=logits.shape[:-1])
    if mask is not None:
        check_mask("mask", mask, targets.shape)
    if normalizer is not None:
        check_positive_int("normalizer", normalizer)
    elif mask is not None and not bool(mask.any()):
        raise ValueError("mask: expected at least one unmasked target, got none")


@door
def feedforward(x, p, keys, activations, activation) -> None:
    """p holds exactly ``keys`` with w1 (D, F) and w2 (F, D); a known activation; x (..., D)."""
    if activation not in activations:
        raise ValueError(f"activation: expected one of {sorted(activations)}, got {activation!r}")
    check_keys("p", p, keys)
    check_float_array("w1", p["w1"], ndim=2, finite=False)
    check_float_array("w2", p["w2"], shape=p["w1"].shape[::-1], finite=False)
    linear(x, p["w1"], p["b1"])


@door
def heads(q_name, q, v_name, v, mask, causal) -> None:
    """The checks every attention on heads makes at its entry (one policy for all of them):

    q (B, H, L, Dh) and v (B, H, L, Dv) finite, non-empty (B = 0 or L = 0 is a ValueError),
    float32 or float64 of one dtype; mask (B, L) bool or None; ``causal`` a strict bool.
    """
    check_float_array(q_name, q, ndim=4, nonempty=True)
    batch, n_heads, length, _ = q.shape
    check_float_array(v_name, v, shape=(batch, n_heads, length, None), nonempty=True)
    check_same_dtype(**{q_name: q, v_name: v})
    if mask is not None:
        check_mask("mask", mask, (batch, length))
    check_bool("causal", causal)


@door
def attention(q, k, v, mask, causal) -> None:
    """Dense attention: :func:`heads` for q and v, k shaped like q."""
    heads("q", q, "v", v, mask, causal)
    check_float_array("k", k, shape=q.shape)
    check_same_dtype(q=q, k=k)


@door
def windowed_attention(qk, v, mask, causal, chunk_len, n_chunks_before, n_chunks_after) -> None:
    """Local and LSH attention: :func:`heads`, chunk_len >= 1, window sizes >= 0."""
    heads("qk", qk, "v", v, mask, causal)
    check_positive_int("chunk_len", chunk_len)
    check_nonnegative_int("n_chunks_before", n_chunks_before)
    check_nonnegative_int("n_chunks_after", n_chunks_after)


@door
def mask_flags(logits, causal, self_mask) -> None:
    """mask_logits: strict flags and a writable logits array (it is masked in place)."""
    check_bool("causal", causal)
    check_bool("self_mask", self_mask)
    if not getattr(logits.flags, "writeable", True):
        raise ValueError("logits: expected a writable array (masked in place), got a read-only one")


@door
def split(x, n_heads) -> None:
    """split_heads: x (B, L, H*Dh) with H dividing its width."""
    check_array("x", x, ndim=3)
    n_heads = check_positive_int("n_heads", n_heads)
    if x.shape[-1] % n_heads:
        raise ValueError(
            f"n_heads: expected a divisor of the width of x ({x.shape[-1]}), got {n_heads}"
        )


@door
def merge(x) -> None:
    """merge_heads: x (B, H, L, Dh)."""
    check_array("x", x, ndim=4)


@door
def multihead(x, p, n_heads) -> None:
    """x (B, L, D); p holds w_q/w_k or w_qk, w_v (D, H*Dh), w_o (H*Dh, D); H divides H*Dh."""
    check_float_array("x", x, ndim=3, nonempty=True)
    if not isinstance(p, dict):
        raise TypeError(f"p: expected a dict of weights, got {type(p).__name__}")
    in_names = ("w_qk", "w_v") if "w_qk" in p else ("w_q", "w_k", "w_v")
    expected = set(in_names) | {"w_o"}
    if set(p) != expected:
        raise ValueError(f"p: expected keys {sorted(expected)}, got {sorted(p)}")
    d_model = x.shape[-1]
    check_float_array(in_names[0], p[in_names[0]], shape=(d_model, None))
    width = p[in_names[0]].shape[1]
    for name in in_names[1:]:
        check_float_array(name, p[name], shape=(d_model, width))
    check_float_array("w_o", p["w_o"], shape=(width, d_model))
    check_same_dtype(x=x, **{name: p[name] for name in (*in_names, "w_o")})
    n_heads = check_positive_int("n_heads", n_heads)
    if width % n_heads:
        raise ValueError(
            f"n_heads: expected a divisor of the projection width {width}, got {n_heads}"
        )


@door
def chunked_positions(x, chunk_len) -> None:
    """A chunked position-wise op: x (..., L, D) finite, non-empty, chunk_len >= 1."""
    check_float_array("x", x, nonempty=True)
    if x.ndim < 2:
        raise ValueError(f"x: expected shape (..., L, D), got {tuple(x.shape)}")
    check_positive_int("chunk_len", chunk_len)


@door
def chunked_loss(h, w, b, targets, mask, chunk_len) -> None:
    """h (B, L, Din), w (Din, V), b (V,) or None, targets (B, L), mask (B, L) or None."""
    check_float_array("h", h, ndim=3, nonempty=True)
    check_float_array("w", w, shape=(h.shape[-1], None))
    if b is not None:
        check_float_array("b", b, shape=(w.shape[1],))
    check_same_dtype(h=h, w=w, b=b)
    check_array("targets", targets, shape=h.shape[:2])
    if mask is not None:
        check_mask("mask", mask, h.shape[:2])
        if not bool(mask.any()):
            raise ValueError("mask: expected at least one True entry (a target to score), got none")
    check_positive_int("chunk_len", chunk_len)


@door
def lm_tokens(tokens, vocab_size, max_len, *, targets: bool, mask=None, offset=0) -> None:
    """A language model's tokens: (B, L) non-empty integer ids in [0, V).

    With ``targets`` (a loss) the model reads tokens 0..L-2 and predicts 1..L-1, so
    2 <= L <= max_len + 1, ``mask`` is None or (B, L-1) bool with at least one True, and the
    positions read, offset .. offset + L - 2, must exist; else 1 <= L <= max_len.
    """
    check_token_ids("tokens", tokens, vocab_size, ndim=2, nonempty=True)
    length = tokens.shape[1]
    low, high, what = (2, max_len + 1, "max_len + 1") if targets else (1, max_len, "max_len")
    if not low <= length <= high:
        read = " (the model reads all but the last token)" if targets else ""
        raise ValueError(
            f"tokens: expected length in [{low}, {what} = {high}]{read}, got shape "
            f"{tuple(tokens.shape)}"
        )
    offset = check_nonnegative_int("offset", offset)
    read = length - 1 if targets else length
    if offset + read > max_len:
        raise ValueError(
            f"offset: expected offset + length <= max_len={max_len}, got offset {offset} and "
            f"length {read}"
        )
    if mask is not None:
        check_mask("loss_mask", mask, (tokens.shape[0], length - 1))
        if not bool(mask.any()):
            raise ValueError("loss_mask: expected at least one True entry (a target), got none")


@door
def streams(names, a, b) -> None:
    """A reversible block's two (B, L, D) streams of one float dtype."""
    check_float_array(names[0], a, ndim=3)
    check_float_array(names[1], b, shape=a.shape)
    check_same_dtype(**{names[0]: a, names[1]: b})
