"""Tests of the basic layers (minireformer/layers.py), float64.

Every backward is checked against centred differences (gradcheck.check_op) below 1e-7; forward
passes are checked against direct, unvectorised computations.
"""

import math

import numpy as np
import pytest

from minireformer import embedding as Em
from minireformer import layers as Lr
from minireformer import loss as Ls
from minireformer.measuring.gradcheck import check_op

TOL = 1e-7


def _rng(seed=0):
    return np.random.default_rng(seed)


def _assert_grads(errors, n_args):
    assert len(errors) == n_args, errors
    assert max(errors.values()) < TOL, errors


# --- Gradient checks ---------------------------------------------------------------------------


def test_linear_gradcheck_with_bias_and_leading_dims():
    rng = _rng(1)
    args = (rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5))
    _assert_grads(check_op(Lr.linear_forward, Lr.linear_backward, args, rng=rng), 3)


def test_linear_gradcheck_without_bias():
    rng = _rng(2)
    args = (rng.standard_normal((6, 4)), rng.standard_normal((4, 3)))
    assert len(Lr.linear_backward(np.ones((6, 3)), Lr.linear_forward(*args)[1])) == 2
    _assert_grads(check_op(Lr.linear_forward, Lr.linear_backward, args, rng=rng), 2)


def test_layernorm_gradcheck():
    rng = _rng(3)
    args = (
        rng.standard_normal((2, 3, 6)) * 2 + 1,
        rng.standard_normal(6),
        rng.standard_normal(6),
    )
    errors = check_op(Lr.layernorm_forward, Lr.layernorm_backward, args, {"eps": 1e-5}, rng=rng)
    _assert_grads(errors, 3)


def test_embedding_gradcheck_with_repeated_ids():
    rng = _rng(4)
    ids = np.array([[0, 3, 3, 1], [3, 0, 4, 4]])  # ids 3 and 4 repeat, id 2 is unused
    table = rng.standard_normal((5, 3))
    _assert_grads(check_op(Em.embedding_forward, Em.embedding_backward, (ids, table), rng=rng), 1)
    dout = rng.standard_normal((2, 4, 3))
    dtable = Em.embedding_backward(dout, Em.embedding_forward(ids, table)[1])
    np.testing.assert_allclose(dtable[3], dout[0, 1] + dout[0, 2] + dout[1, 0], rtol=1e-15)
    np.testing.assert_array_equal(dtable[2], 0.0)


def test_gelu_gradcheck():
    rng = _rng(5)
    x = rng.standard_normal((4, 7)) * 2
    _assert_grads(check_op(Lr.gelu_forward, Lr.gelu_backward, (x,), rng=rng), 1)


def test_relu_gradcheck_away_from_the_kink():
    rng = _rng(6)
    z = rng.standard_normal((4, 7))
    x = np.sign(z) * (0.1 + np.abs(z))  # |x| >= 0.1 >> h: no finite difference crosses 0
    _assert_grads(check_op(Lr.relu_forward, Lr.relu_backward, (x,), rng=rng), 1)


def test_dropout_gradcheck_with_fixed_seed():
    rng = _rng(7)
    x = rng.standard_normal((5, 8))
    errors = check_op(Lr.dropout_forward, Lr.dropout_backward, (x, 0.3, 1234), rng=rng)
    _assert_grads(errors, 1)


def test_softmax_gradcheck():
    rng = _rng(8)
    x = rng.standard_normal((3, 4, 5)) * 3
    _assert_grads(check_op(Ls.softmax_forward, Ls.softmax_backward, (x,), rng=rng), 1)


def test_cross_entropy_gradcheck_with_mask():
    rng = _rng(9)
    logits = rng.standard_normal((2, 5, 7)) * 2
    targets = rng.integers(0, 7, size=(2, 5))
    mask = rng.random((2, 5)) < 0.6
    mask[0, 0] = True
    fwd, bwd = Ls.softmax_cross_entropy_forward, Ls.softmax_cross_entropy_backward
    _assert_grads(check_op(fwd, bwd, (logits, targets, mask), rng=rng), 1)
    dlogits = bwd(1.0, fwd(logits, targets, mask)[1])
    np.testing.assert_array_equal(dlogits[~mask], 0.0)  # ignored targets give no gradient


def _ff_flat_forward(x, w1, b1, w2, b2, activation, dropout, seed):
    p = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    return Lr.feedforward_forward(x, p, activation=activation, dropout=dropout, seed=seed)


def _ff_flat_backward(dout, cache):
    dx, dp = Lr.feedforward_backward(dout, cache)
    return dx, dp["w1"], dp["b1"], dp["w2"], dp["b2"]


@pytest.mark.parametrize("activation, dropout", [("gelu", 0.0), ("gelu", 0.25), ("relu", 0.1)])
def test_feedforward_gradcheck(activation, dropout):
    rng = _rng(10)
    d, f = 4, 9
    params = Lr.init_feedforward(rng, d, f, "float64")
    params["b1"] = rng.standard_normal(f) * 0.5  # non-zero biases exercise their gradients
    params["b2"] = rng.standard_normal(d)
    x = rng.standard_normal((2, 3, d))
    if activation == "relu":  # keep the hidden pre-activations away from the kink at 0
        pre = x @ params["w1"] + params["b1"]
        params["b1"] = params["b1"] + np.where(np.abs(pre).min(axis=(0, 1)) < 0.05, 0.3, 0.0)
        assert np.abs(x @ params["w1"] + params["b1"]).min() > 1e-3
    args = (x, params["w1"], params["b1"], params["w2"], params["b2"], activation, dropout, 99)
    _assert_grads(check_op(_ff_flat_forward, _ff_flat_backward, args, rng=rng), 5)


# --- Forward values ------------------------------------------------------------------------------


def test_linear_forward_any_leading_dims_and_backward_keys():
    rng = _rng(11)
    x, w, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((5, 2)), rng.standard_normal(2)
    out, _ = Lr.linear_forward(x, w, b)
    np.testing.assert_allclose(out[1, 2, 3], x[1, 2, 3] @ w + b, rtol=1e-13)
    np.testing.assert_allclose(Lr.linear_forward(x[0, 0, 0], w)[0], x[0, 0, 0] @ w, rtol=1e-13)


def test_layernorm_output_is_normalised():
    rng = _rng(12)
    x = rng.standard_normal((3, 16)) * 5 + 2
    y, _ = Lr.layernorm_forward(x, np.ones(16), np.zeros(16), eps=0.0 + 1e-12)
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=-1), 1.0, rtol=1e-9)


def test_gelu_matches_formula_and_exact_gelu_closely():
    x = np.linspace(-6, 6, 241)
    y, _ = Lr.gelu_forward(x)
    tanh_form = [
        0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))) for v in x
    ]
    np.testing.assert_allclose(y, tanh_form, rtol=1e-14, atol=1e-15)
    exact = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]
    assert np.abs(y - exact).max() < 5e-4


def test_relu_forward_values():
    out, _ = Lr.relu_forward(np.array([-2.0, -0.5, 0.0, 0.5, 3.0]))
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 0.5, 3.0])


def test_softmax_rows_and_logsumexp_are_stable():
    x = np.array([[1000.0, 1001.0, 999.0], [-1e4, 0.0, 1.0]])
    p, _ = Ls.softmax_forward(x)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-15)
    e = np.exp([0.0, 1.0, -1.0])
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-14)
    lse = Ls.logsumexp(x)
    np.testing.assert_allclose(lse[0], 1000.0 + math.log(e.sum()), rtol=1e-15)
    np.testing.assert_allclose(lse[1], math.log(math.exp(-1e4) + 1 + math.e), rtol=1e-15)
    np.testing.assert_allclose(Ls.logsumexp(x, axis=0, keepdims=True).shape, (1, 3))
    with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer here
        assert Ls.logsumexp(np.full(3, -np.inf)) == -np.inf


def test_cross_entropy_equals_direct_computation():
    rng = _rng(13)
    logits = rng.standard_normal((3, 4, 6)) * 3
    targets = rng.integers(0, 6, size=(3, 4))
    mask = rng.random((3, 4)) < 0.5
    mask[1, 2] = True
    total, count = 0.0, 0
    for i in range(3):
        for j in range(4):
            if mask[i, j]:
                probs = [math.exp(v) for v in logits[i, j]]
                total -= math.log(probs[targets[i, j]] / sum(probs))
                count += 1
    loss, _ = Ls.softmax_cross_entropy_forward(logits, targets, mask)
    assert loss.shape == () and float(loss) == pytest.approx(total / count, rel=1e-13)
    full, _ = Ls.softmax_cross_entropy_forward(logits, targets)
    everything = np.ones_like(mask)
    assert float(full) == pytest.approx(
        float(Ls.softmax_cross_entropy_forward(logits, targets, everything)[0]), rel=1e-15
    )
    summed, _ = Ls.softmax_cross_entropy_forward(logits, targets, mask, normalizer=1)
    assert float(summed) == pytest.approx(total, rel=1e-13)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4]])
    loss, _ = Ls.softmax_cross_entropy_forward(logits, np.array([1]))
    assert float(loss) == pytest.approx(1e4, rel=1e-12)


def test_dropout_same_seed_same_mask_and_backward_replays_it():
    rng = _rng(14)
    x = rng.standard_normal((20, 30)) + 5.0  # no zeros in x, so zeros in out mark dropped entries
    a, cache = Lr.dropout_forward(x, 0.4, 7)
    b, _ = Lr.dropout_forward(x, 0.4, 7)
    c, _ = Lr.dropout_forward(x, 0.4, 8)
    np.testing.assert_array_equal(a, b)
    assert np.any((a == 0) != (c == 0))
    kept = a != 0
    np.testing.assert_allclose(a[kept], x[kept] / 0.6, rtol=1e-15)
    assert cache.seed == 7  # the cache holds the seed, not the mask
    dout = rng.standard_normal(x.shape)
    np.testing.assert_allclose(Lr.dropout_backward(dout, cache), dout * kept / 0.6, rtol=1e-15)


def test_dropout_keep_fraction():
    rate, n = 0.3, 200_000
    out, _ = Lr.dropout_forward(np.ones(n), rate, Lr.draw_seed(_rng(15)))
    keep = np.mean(out != 0)
    assert abs(keep - (1 - rate)) < 4 * math.sqrt(rate * (1 - rate) / n)  # 4 sigma
    assert abs(out.mean() - 1.0) < 0.01  # inverted scaling keeps the mean


def test_dropout_rate_zero_is_identity():
    x = _rng(16).standard_normal((3, 4))
    out, cache = Lr.dropout_forward(x, 0.0, None)
    np.testing.assert_array_equal(out, x)
    dout = np.ones_like(x)
    np.testing.assert_array_equal(Lr.dropout_backward(dout, cache), dout)


def test_draw_seed_is_reproducible_int():
    s1, s2 = Lr.draw_seed(_rng(17)), Lr.draw_seed(_rng(17))
    assert isinstance(s1, int) and s1 == s2 and s1 >= 0


def test_feedforward_relu_no_dropout_matches_composition():
    rng = _rng(18)
    p = Lr.init_feedforward(rng, 4, 8, "float64")
    x = rng.standard_normal((2, 4))
    out, _ = Lr.feedforward_forward(x, p, activation="relu")
    np.testing.assert_allclose(
        out, np.maximum(x @ p["w1"] + p["b1"], 0) @ p["w2"] + p["b2"], rtol=1e-13
    )


def test_init_helpers_shapes_dtype_and_scale():
    w, b = Lr.init_linear(_rng(19), 400, 300, "float32")
    assert w.shape == (400, 300) and w.dtype == np.float32 and b.shape == (300,)
    np.testing.assert_array_equal(b, 0.0)
    assert abs(w.std() - 1 / math.sqrt(400)) < 0.01 / math.sqrt(400)
    w_only = Lr.init_linear(_rng(19), 400, 300, "float32", bias=False)
    np.testing.assert_array_equal(w_only, w)  # same draw, seeded
    p = Lr.init_feedforward(_rng(20), 4, 16, "float64")
    assert {k: v.shape for k, v in p.items()} == {
        "w1": (4, 16),
        "b1": (16,),
        "w2": (16, 4),
        "b2": (4,),
    }
    gamma, beta = Lr.init_layernorm(5, "float64")
    np.testing.assert_array_equal(gamma, 1.0)
    np.testing.assert_array_equal(beta, 0.0)


# --- Bad input -----------------------------------------------------------------------------------

X = np.ones((2, 3))


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: Lr.linear_forward(np.ones((2, 4)), np.ones((3, 5))), ValueError, "x"),
        (lambda: Lr.linear_forward(X, np.ones(3)), ValueError, "w"),
        (lambda: Lr.linear_forward(X, np.ones((3, 5)), np.ones(4)), ValueError, "b"),
        (lambda: Lr.linear_forward(np.ones((2, 3), int), np.ones((3, 5))), TypeError, "x"),
        (lambda: Lr.linear_forward(X, np.ones((3, 5), int)), TypeError, "w"),
        (lambda: Lr.linear_forward([[1.0, 2.0, 3.0]], np.ones((3, 5))), TypeError, "x"),
        (lambda: Lr.layernorm_forward(X, np.ones(4), np.zeros(3)), ValueError, "gamma"),
        (lambda: Lr.layernorm_forward(X, np.ones(3), np.zeros(2)), ValueError, "beta"),
        (
            lambda: Lr.layernorm_forward(np.ones((2, 3), int), np.ones(3), np.zeros(3)),
            TypeError,
            "x",
        ),
        (lambda: Lr.layernorm_forward(X, np.ones(3), np.zeros(3), eps=0.0), ValueError, "eps"),
        (lambda: Em.embedding_forward(np.array([0, 5]), np.ones((5, 2))), ValueError, "ids"),
        (lambda: Em.embedding_forward(np.array([-1, 0]), np.ones((5, 2))), ValueError, "ids"),
        (lambda: Em.embedding_forward(np.array([0.0, 1.0]), np.ones((5, 2))), TypeError, "ids"),
        (lambda: Em.embedding_forward(np.array([0, 1]), np.ones((5, 2), int)), TypeError, "table"),
        (lambda: Em.embedding_forward(np.array([0, 1]), np.ones(5)), ValueError, "table"),
        (lambda: Lr.gelu_forward(np.ones(3, int)), TypeError, "x"),
        (lambda: Lr.relu_forward(np.ones(3, int)), TypeError, "x"),
        (lambda: Ls.softmax_forward(np.ones(3, int)), TypeError, "x"),
        (lambda: Lr.dropout_forward(X, 1.0, 0), ValueError, "rate"),
        (lambda: Lr.dropout_forward(X, -0.1, 0), ValueError, "rate"),
        (lambda: Lr.dropout_forward(X, "0.1", 0), ValueError, "rate"),
        (lambda: Lr.dropout_forward(X, 0.1, None), TypeError, "seed"),
        (lambda: Lr.dropout_forward(X, 0.1, 1.5), TypeError, "seed"),
        (lambda: Lr.dropout_forward(np.ones(3, int), 0.1, 0), TypeError, "x"),
        (lambda: Lr.draw_seed(np.random.RandomState(0)), TypeError, "rng"),
    ],
)
def test_bad_input_names_the_argument(call, error, name):
    with pytest.raises(error, match=rf"^{name}: expected"):
        call()


def test_cross_entropy_bad_input():
    logits, targets = np.zeros((2, 3, 5)), np.zeros((2, 3), dtype=int)
    fwd = Ls.softmax_cross_entropy_forward
    with pytest.raises(ValueError, match="^targets: expected shape"):
        fwd(logits, np.zeros((2, 4), dtype=int))
    with pytest.raises(ValueError, match=r"^targets: expected token ids in \[0, 5\)"):
        fwd(logits, targets + 5)
    with pytest.raises(TypeError, match="^targets: expected an integer array"):
        fwd(logits, targets.astype(float))
    with pytest.raises(TypeError, match="^logits: expected a floating-point"):
        fwd(logits.astype(int), targets)
    with pytest.raises(ValueError, match="^mask: expected shape"):
        fwd(logits, targets, np.ones((2, 2), dtype=bool))
    with pytest.raises(TypeError, match="^mask: expected a boolean"):
        fwd(logits, targets, np.ones((2, 3), dtype=int))
    with pytest.raises(ValueError, match="^mask: expected at least one unmasked target"):
        fwd(logits, targets, np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="^normalizer: expected a positive integer"):
        fwd(logits, targets, normalizer=0)
    with pytest.raises(ValueError, match="^loss: expected finite"), np.errstate(invalid="ignore"):
        fwd(np.full((2, 3, 5), np.inf), targets)


def test_feedforward_bad_input():
    p = Lr.init_feedforward(_rng(21), 3, 6, "float64")
    with pytest.raises(ValueError, match="^activation: expected one of"):
        Lr.feedforward_forward(X, p, activation="swish")
    with pytest.raises(ValueError, match="^p: expected a dict with keys"):
        Lr.feedforward_forward(X, {"w1": p["w1"], "b1": p["b1"]})
    with pytest.raises(ValueError, match="^w2: expected shape"):
        Lr.feedforward_forward(X, {**p, "w2": np.ones((6, 4))})
    with pytest.raises(ValueError, match="^x: expected shape"):
        Lr.feedforward_forward(np.ones((2, 4)), p)
    with pytest.raises(TypeError, match="^seed: expected"):
        Lr.feedforward_forward(X, p, dropout=0.5)
    with pytest.raises(ValueError, match="^seed: expected a non-negative int"):
        Lr.feedforward_forward(X, p, dropout=0.5, seed=-1)


def test_init_bad_input():
    with pytest.raises(ValueError, match="^d_in: expected a positive integer"):
        Lr.init_linear(_rng(), 0, 3)
    with pytest.raises(TypeError, match="^d_out: expected a positive integer"):
        Lr.init_linear(_rng(), 3, 2.5)
    with pytest.raises(TypeError, match="^dtype: expected a floating-point dtype"):
        Lr.init_linear(_rng(), 3, 2, "int32")
    with pytest.raises(TypeError, match="^rng: expected a numpy.random.Generator"):
        Lr.init_feedforward(0, 3, 2)
    with pytest.raises(ValueError, match="^d_model: expected a positive integer"):
        Lr.init_layernorm(-1)
