"""minireformer.teaching.grading: each check passes on a right answer and explains a wrong one."""

import sys

import numpy as np
import pytest

from minireformer.teaching import grading
from minireformer.teaching.grading import ExerciseFailed


def _fails(check, *args, **kwargs) -> str:
    """The message of the ExerciseFailed that ``check(*args, **kwargs)`` raises."""
    with pytest.raises(ExerciseFailed) as failure:
        check(*args, **kwargs)
    return str(failure.value)


@pytest.fixture
def reference():
    return np.random.default_rng(0).standard_normal((3, 4))


def test_exercise_failed_is_an_assertion_error():
    assert issubclass(ExerciseFailed, AssertionError)


def test_check_close_passes_and_prints_pass(reference, capsys):
    grading.check_close("Exercise 1.1: out", reference + 1e-12, reference)
    grading.check_close("scalar", 0.5, np.float64(0.5))
    assert capsys.readouterr().out == "PASS  Exercise 1.1: out\nPASS  scalar\n"


def test_check_close_tolerance_scales_with_the_largest_entry():
    # 1e-12 where 0 is expected is round-off next to entries of size 1, not an error
    grading.check_close("zeros", np.array([1.0, 1e-12]), np.array([1.0, 0.0]))
    grading.check_close("atol", np.array([1e-3]), np.array([0.0]), atol=1e-2)


def test_check_close_names_the_entries_that_differ(reference):
    wrong = reference.copy()
    wrong[1, 2] += 0.5
    message = _fails(grading.check_close, "Exercise 1.1: out", wrong, reference)
    assert message.startswith("Exercise 1.1: out: 1 of 12 entries differ")
    assert "at (1, 2) got" in message
    assert "Largest difference 0.5" in message


def test_check_close_shape_mismatch(reference):
    message = _fails(grading.check_close, "out", reference.T, reference)
    assert "shape (4, 3) was expected to be (3, 4)" in message
    assert "two axes are swapped" in message
    assert "reshape" in _fails(grading.check_close, "out", reference.reshape(2, 6), reference)


def test_check_close_kind_mismatch(reference):
    message = _fails(grading.check_close, "out", reference.astype(int), reference)
    assert "expected floats (dtype float64), got integers (dtype int64)" in message


def test_check_close_nan(reference):
    wrong = reference.copy()
    wrong[0, 0] = np.nan
    message = _fails(grading.check_close, "out", wrong, reference)
    assert "1 of 12 entries are NaN where the reference is finite" in message
    assert "at (0, 0) got nan" in message


def test_check_close_nan_and_infinity_in_the_same_places_pass():
    expected = np.array([np.nan, np.inf, -np.inf, 1.0])
    grading.check_close("special", expected.copy(), expected)
    message = _fails(
        grading.check_close, "special", np.array([np.nan, np.inf, np.inf, 1.0]), expected
    )
    assert "NaN or infinite entries differ" in message
    assert "at (2,) got inf, expected -inf" in message
    assert "got inf, expected 1" in _fails(grading.check_close, "inf", np.array([np.inf]), [1.0])


@pytest.mark.parametrize(
    ("transform", "hint"),
    [
        (lambda a: -a, "sign flipped"),
        (lambda a: 0.5 * a, "times 0.5: a constant factor is off"),
        (lambda a: np.zeros_like(a), "all zeros"),
        (lambda a: (a * (1 + 1e-6)).astype(np.float32), "level of float32 round-off"),
    ],
)
def test_check_close_hints(reference, transform, hint):
    assert hint in _fails(grading.check_close, "out", transform(reference), reference)


def test_check_close_refuses_what_is_not_one_array(reference):
    assert "is None" in _fails(grading.check_close, "out", None, reference)
    assert "pass `out` only" in _fails(grading.check_close, "out", (reference, {}), reference)
    ragged = [np.ones(2), np.ones(3)]
    assert "could not be read as an array" in _fails(grading.check_close, "out", ragged, reference)
    assert "not an array of numbers" in _fails(grading.check_close, "out", "abc", reference)


def test_check_equal(capsys):
    buckets = np.array([[0, 3, 1], [2, 2, 0]])
    grading.check_equal("Exercise 2.1: buckets", buckets.copy(), buckets)
    assert capsys.readouterr().out == "PASS  Exercise 2.1: buckets\n"
    wrong = buckets.copy()
    wrong[1, 0] = 1
    message = _fails(grading.check_equal, "Exercise 2.1: buckets", wrong, buckets)
    assert "1 of 6 entries differ" in message
    assert "at (1, 0) got 1, expected 2" in message
    assert "exact" in message


def test_check_equal_is_exact_and_checks_kind():
    ids = np.arange(4)
    assert "expected integers" in _fails(grading.check_equal, "perm", ids.astype(float), ids)
    assert "shape (3,)" in _fails(grading.check_equal, "perm", ids[:3], ids)
    assert "1 of 1 entries" in _fails(grading.check_equal, "x", 1.0 + 1e-15, 1.0)
    grading.check_equal("mask", np.array([True, False]), np.array([True, False]))


def _sine(x):
    return float(np.sum(np.sin(x) * np.arange(x.size).reshape(x.shape)))


def _sine_grad(x):
    return np.cos(x) * np.arange(x.size).reshape(x.shape)


def test_check_gradient_passes_on_the_analytic_gradient(capsys):
    x = np.random.default_rng(1).standard_normal((2, 3))
    before = x.copy()
    grading.check_gradient("Exercise 3.4: dx", _sine, _sine_grad(x), x)
    assert capsys.readouterr().out == "PASS  Exercise 3.4: dx\n"
    np.testing.assert_array_equal(x, before)  # evaluated on a copy


def test_check_gradient_explains_a_wrong_gradient():
    x = np.random.default_rng(1).standard_normal((2, 3))
    wrong = _sine_grad(x)
    wrong[1, 1] += 1.0
    message = _fails(grading.check_gradient, "dx", _sine, wrong, x)
    assert message.startswith("dx: relative error")
    assert "above rtol = 1e-06" in message
    assert "the largest difference is at (1, 1)" in message
    message = _fails(grading.check_gradient, "dx", _sine, 2 * _sine_grad(x), x)
    assert "Your gradient is the reference times 2" in message


def test_check_gradient_shape_and_finiteness():
    x = np.random.default_rng(1).standard_normal((2, 3))
    assert "shape (3, 2), but x has shape (2, 3)" in _fails(
        grading.check_gradient, "dx", _sine, _sine_grad(x).T, x
    )
    nan_grad = np.full_like(x, np.nan)
    assert "6 non-finite entries" in _fails(grading.check_gradient, "dx", _sine, nan_grad, x)
    assert "is None" in _fails(grading.check_gradient, "dx", _sine, None, x)


def test_check_gradient_needs_float64_x():
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(ValueError, match="x must be a float64 array, got float32"):
        grading.check_gradient("dx", _sine, _sine_grad(x), x)


def test_check_true(capsys):
    grading.check_true("Exercise 5.3: reversible", np.bool_(True), "unused")
    assert capsys.readouterr().out == "PASS  Exercise 5.3: reversible\n"
    message = _fails(grading.check_true, "Exercise 5.3: reversible", False, "x is not rebuilt")
    assert message == "Exercise 5.3: reversible: x is not rebuilt"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: grading.check_close("c", [1.0], [2.0], rtol=float("nan")), ValueError, "rtol"),
        (lambda: grading.check_close("c", [1.0], [2.0], atol=-1.0), ValueError, "atol"),
        (lambda: grading.check_true("t", np.array([True, False]), "m"), TypeError, "np.all"),
        (lambda: grading.check_gradient("g", lambda x: x * 2, np.ones(3), np.ones(3)),
         grading.ExerciseFailed, "f returned an array of shape"),
        (lambda: grading.check_gradient("g", lambda x: np.nan, np.ones(3), np.ones(3)),
         grading.ExerciseFailed, "f itself is nan at x"),
    ],
    ids=["nan rtol", "negative atol", "array condition", "f returns an array", "f is NaN"],
)  # fmt: skip
def test_a_check_used_wrongly_says_so_instead_of_passing(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_check_equal_accepts_nan_where_the_reference_has_nan(capsys):
    a = np.array([1.0, np.nan, 3.0])
    grading.check_equal("same", a, a.copy())
    assert "PASS" in capsys.readouterr().out
    with pytest.raises(grading.ExerciseFailed):
        grading.check_equal("differs", a, np.array([1.0, 2.0, 3.0]))


def test_own_work_names_the_library_function_a_block_called():
    from minireformer import attention

    q = np.ones((1, 1, 3, 2))
    with grading.own_work("E"):
        np.exp(q).sum()  # NumPy is not the library
    with pytest.raises(grading.ExerciseFailed, match=r"E: your function called the library "
                       r"\(minireformer\.attention\.attention_forward\)\."):  # fmt: skip
        with grading.own_work("E"):
            attention.attention_forward(q, q, q)


def test_own_work_lets_allowed_functions_and_what_they_call_run():
    from minireformer import lsh

    rotations = lsh.random_rotations(np.random.default_rng(0), 2, n_hashes=1, n_buckets=4)
    with grading.own_work("E", allowed=(lsh.hash_vectors,)):
        lsh.hash_vectors(np.ones((1, 1, 3, 2)), rotations)
    assert sys.getprofile() is None  # the profiler is removed


def test_recording_lists_the_calls_and_restores_the_function():
    from minireformer import layers

    original = layers.feedforward_forward
    p = layers.init_feedforward(np.random.default_rng(0), 2, 4, dtype="float64")
    with grading.recording(layers, "feedforward_forward") as calls:
        layers.feedforward_forward(np.ones((1, 3, 2)), p)
    assert len(calls) == 1 and calls[0][0][0].shape == (1, 3, 2)
    assert layers.feedforward_forward is original
