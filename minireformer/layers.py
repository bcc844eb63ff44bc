"""Basic layers, each a forward/backward pair with a hand-written backward (CS231n style).

``out, cache = op_forward(...)`` keeps in ``cache`` only what ``op_backward(dout, cache)`` needs;
backward returns the gradients of the float inputs in argument order. These are the pieces of the
Transformer and Reformer layers (paper section 3: layer norm and the feed-forward sub-layer
FeedForward(x) = W2 act(W1 x + b1) + b2 of equation 10; section 5: dropout). The softmax and the
loss are in ``loss.py``, the token embedding in ``embedding.py``.

Shape letters: B batch, L length, D model width, F feed-forward width, V vocabulary; ``...`` stands
for any leading dimensions (B, L). Each op opens with its door check (``checks.py``), then the math;
input values are not scanned for NaN/inf (a full pass per op), the model's loss is checked instead.
The plain, unfused versions of these formulas are in ``reference.py``.

References: https://arxiv.org/abs/2001.04451 (Reformer); CS231n ``layers.py`` for the convention;
Ba, Kiros, Hinton 2016 (layer norm, arXiv 1607.06450); Hendrycks & Gimpel 2016 (GELU, arXiv
1606.08415); Srivastava et al. 2014 (dropout, JMLR 15).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from . import backend, checks
from .checks import check_bool, check_float_dtype, check_positive_int, check_rng

# --- Initialisation ------------------------------------------------------------------------------


def init_linear(rng, d_in: int, d_out: int, dtype="float32", bias: bool = True):
    """Weights of a linear layer: w ~ N(0, 1/d_in) (LeCun normal, as in ``attention.py``) and b = 0.

    The 1/d_in variance keeps the output's scale equal to the input's (LeCun et al. 1998).
    Returns ``(w (d_in, d_out), b (d_out,))``, or only ``w`` when ``bias`` is False (as
    :func:`linear_backward` returns ``(dx, dw)`` without a bias).
    """
    check_rng(rng)
    d_in, d_out = check_positive_int("d_in", d_in), check_positive_int("d_out", d_out)
    dt = check_float_dtype(dtype)
    w = backend.asarray(rng.standard_normal((d_in, d_out)) / math.sqrt(d_in), dtype=dt)
    return (w, backend.get_xp().zeros(d_out, dtype=dt)) if check_bool("bias", bias) else w


def init_feedforward(rng, d_model: int, d_ff: int, dtype="float32") -> dict:
    """``{"w1" (D, F), "b1" (F,), "w2" (F, D), "b2" (D,)}`` drawn with :func:`init_linear`."""
    w1, b1 = init_linear(rng, d_model, d_ff, dtype)
    w2, b2 = init_linear(rng, d_ff, d_model, dtype)
    return {"w1": w1, "b1": b1, "w2": w2, "b2": b2}


def init_layernorm(d_model: int, dtype="float32"):
    """``(gamma, beta)`` of shape (D,): ones and zeros (the layer starts as plain normalisation)."""
    dt = check_float_dtype(dtype)
    xp = backend.get_xp()
    return xp.ones(check_positive_int("d_model", d_model), dtype=dt), xp.zeros(d_model, dtype=dt)


# --- Linear and layer norm -----------------------------------------------------------------------


class LinearCache(NamedTuple):
    x: object  # (..., Din)
    w: object  # (Din, Dout)
    has_bias: bool


def flat_matmul(x, w):
    """x (..., Din) @ w (Din, Dout) -> (..., Dout), computed as one 2-D product over all leading
    positions. NumPy's matmul of a stacked x runs one small GEMM per leading index; flattened,
    BLAS gets one (N, Din) x (Din, Dout) product (10-30% faster at the shipped models' shapes)."""
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(x.shape[:-1] + w.shape[-1:])


def linear_forward(x, w, b=None):
    """out = x w + b. x: (..., Din), w: (Din, Dout), b: (Dout,) or None -> out (..., Dout)."""
    checks.linear(x, w, b)
    out = flat_matmul(x, w)
    if b is not None:
        out += b
    return out, LinearCache(x, w, b is not None)


def linear_backward(dout, cache: LinearCache):
    """dx = dout w^T, dw = sum over leading dims of x^T dout, db = sum of dout.

    Returns ``(dx, dw, db)``, or ``(dx, dw)`` when the forward had no bias.
    """
    checks.grad("dout", dout, cache.x.shape[:-1] + cache.w.shape[1:], cache.x.dtype)
    return (linear_input_grad(dout, cache.w),) + linear_param_grads(dout, cache.x, cache.has_bias)


def linear_input_grad(dout, w):
    """dx = dout w^T: (..., Dout), (Din, Dout) -> (..., Din). It needs no forward activation, so a
    layer can send a gradient back through a linear map before recomputing what fed it."""
    return flat_matmul(dout, w.T)


def linear_param_grads(dout, x, has_bias: bool = False) -> tuple:
    """(dw,) or (dw, db): dw = sum over leading dims of x^T dout (Din, Dout), db = sum of dout."""
    dout2 = dout.reshape(-1, dout.shape[-1])  # (N, Dout), N = product of leading dims
    dw = x.reshape(-1, x.shape[-1]).T @ dout2  # (Din, Dout)
    return (dw, dout2.sum(axis=0)) if has_bias else (dw,)


class LayerNormCache(NamedTuple):
    xhat: object  # (..., D) normalised input
    rstd: object  # (..., 1) 1 / sqrt(var + eps)
    gamma: object  # (D,)


def _mean_last(x, average):
    """x (..., D) @ average (D,) as one flat product -> (..., 1): the mean over the last axis."""
    return flat_matmul(x, average[:, None])


def layernorm_forward(x, gamma, beta, eps: float = 1e-5):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta over the last axis (Ba et al. 2016).

    x: (..., D); gamma, beta: (D,) -> y (..., D). var is the biased (1/D) variance.
    """
    checks.layernorm(x, gamma, beta, eps)
    xp = backend.array_module(x)
    # both means are products with the vector (1/D, ..., 1/D): one flat gemv each, as in the
    # backward, instead of NumPy's mean (a Python-level wrapper and a division per call)
    average = xp.full(x.shape[-1:], 1.0 / x.shape[-1], dtype=x.dtype)  # (D,)
    xhat = x - _mean_last(x, average)  # (..., D), centred
    var = _mean_last(xhat * xhat, average)  # (..., 1)
    var += eps
    rstd = xp.sqrt(var, out=var)
    rstd = xp.divide(1.0, rstd, out=rstd)
    xhat *= rstd  # normalised, in place
    y = xhat * gamma
    y += beta
    return y, LayerNormCache(xhat, rstd, gamma)


def layernorm_backward(dout, cache: LayerNormCache):
    """With g = dout * gamma and means over the last axis (D entries):

        dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
        dgamma = sum over leading dims of dout * xhat,   dbeta = sum over leading dims of dout.

    The two subtracted terms are the gradient flowing through the mean and through the variance.
    Both means are matrix-vector products with gamma: mean(g) = dout gamma / D and
    mean(g * xhat) = (dout * xhat) gamma / D. Returns ``(dx, dgamma, dbeta)``.
    """
    checks.grad("dout", dout, cache.xhat.shape, cache.xhat.dtype)
    xp = backend.array_module(dout)
    xhat, rstd, gamma = cache.xhat, cache.rstd, cache.gamma
    width = xhat.shape[-1]
    lead = tuple(range(dout.ndim - 1))
    dout_xhat = dout * xhat  # (..., D)
    dgamma = xp.sum(dout_xhat, axis=lead)
    scaled = gamma / width  # (D,)
    mean_gx = _mean_last(dout_xhat, scaled)  # (..., 1) mean(g * xhat)
    mean_g = _mean_last(dout, scaled)  # (..., 1) mean(g)
    dx = dout * gamma  # g
    dx -= mean_g
    dout_xhat = xp.multiply(xhat, mean_gx, out=dout_xhat)  # its buffer reused: xhat mean(g xhat)
    dx -= dout_xhat
    dx *= rstd
    return dx, dgamma, xp.sum(dout, axis=lead)


# --- Activations and dropout ---------------------------------------------------------------------

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def _gelu_tanh(x):
    """t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3), as a new array.

    Written as products in place: ``x**3`` goes through NumPy's general ``power`` loop, about 50x
    slower than two multiplications in float32, and each in-place step saves a temporary.
    """
    xp = backend.array_module(x)
    t = x * x  # x^2
    t *= _GELU_A
    t += 1.0
    t *= x  # x + a x^3
    t *= _GELU_C  # u
    return xp.tanh(t, out=t)


def gelu_forward(x):
    """GELU, tanh approximation (Hendrycks & Gimpel 2016, section 2), as in BERT and trax:

        gelu(x) = 0.5 x (1 + t),   t = tanh(u),   u = sqrt(2/pi) (x + 0.044715 x^3)

    x: any shape. (The exact GELU is x Phi(x); the two differ by less than 5e-4.) The cache is the
    derivative at x (below), computed here while t is at hand: the backward is then one product,
    and x itself is not kept (an array of x's size either way).
    """
    checks.float_input("x", x)
    half = _gelu_tanh(x)  # t
    half += 1.0
    half *= 0.5  # 0.5 (1 + t)
    out = half * x
    # gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,   du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    t = 2.0 * half - 1.0  # t again
    t *= t
    t -= 1.0  # t^2 - 1
    slope = x * x
    slope *= 3 * _GELU_A * _GELU_C
    slope += _GELU_C  # du/dx
    slope *= x
    slope *= 0.5
    slope *= t  # 0.5 x (t^2 - 1) du/dx
    half -= slope  # the derivative, in the buffer of 0.5 (1 + t)
    return out, half


def gelu_backward(dout, cache):
    """dx = dout * gelu'(x), the derivative the forward cached."""
    checks.grad("dout", dout, cache.shape, cache.dtype)
    return dout * cache


def relu_forward(x):
    """relu(x) = max(x, 0). x: any shape. The derivative at 0 is taken as 0."""
    checks.float_input("x", x)
    return x * (x > 0), x


def relu_backward(dout, cache):
    """dx = dout where x > 0, else 0."""
    checks.grad("dout", dout, cache.shape, cache.dtype)
    return dout * (cache > 0)


ACTIVATIONS = {"gelu": (gelu_forward, gelu_backward), "relu": (relu_forward, relu_backward)}


def check_activation(activation) -> str:
    """``activation`` must name one of the feed-forward's nonlinearities ("gelu", "relu")."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return activation


def draw_seed(rng) -> int:
    """An int seed for :func:`dropout_forward`, drawn from the Generator ``rng``."""
    return int(check_rng(rng).integers(0, 2**63 - 1))


class DropoutCache(NamedTuple):
    rate: float
    seed: object  # int, or None when rate == 0
    shape: tuple
    dtype: object


def _keep_scale(xp, rate, seed, shape, dtype):
    """The inverted-dropout multiplier: 1/(1-rate) where kept, 0 where dropped. Shape ``shape``."""
    keep = backend.default_rng(seed).random(shape) >= rate  # host draw, replayable from the seed
    return xp.asarray(keep).astype(dtype) / (1.0 - rate)


def dropout_forward(x, rate: float, seed):
    """Inverted dropout (Srivastava et al. 2014): out = x * keep / (1 - rate).

    keep ~ Bernoulli(1 - rate) independently per entry.
    x: any shape; rate in [0, 1); seed: int (e.g. from :func:`draw_seed`), may be None if rate = 0.
    The mask is regenerated from ``backend.default_rng(seed)``, so the cache holds the seed, not the
    mask, and backward (or a reversible recomputation) replays it exactly. rate 0 is the identity.
    Scaling by 1/(1-rate) keeps E[out] = x, so nothing changes at evaluation time.
    """
    checks.dropout(x, rate, seed)
    if rate == 0:
        return x, DropoutCache(0.0, seed, x.shape, x.dtype)
    xp = backend.array_module(x)
    cache = DropoutCache(float(rate), int(seed), x.shape, x.dtype)
    return x * _keep_scale(xp, cache.rate, cache.seed, x.shape, x.dtype), cache


def dropout_backward(dout, cache: DropoutCache):
    """dx = dout * keep / (1 - rate), with the same mask regenerated from the cached seed."""
    checks.grad("dout", dout, cache.shape, cache.dtype)
    if cache.rate == 0:
        return dout
    xp = backend.array_module(dout)
    return dout * _keep_scale(xp, cache.rate, cache.seed, cache.shape, cache.dtype)


# --- Feed-forward sub-layer ----------------------------------------------------------------------

FEEDFORWARD_KEYS = ("w1", "b1", "w2", "b2")


class FeedForwardCache(NamedTuple):
    lin1: LinearCache
    act: object
    drop: DropoutCache
    lin2: LinearCache
    activation: str


def feedforward_forward(x, p, activation: str = "gelu", dropout: float = 0.0, seed=None):
    """out = dropout(act(x w1 + b1)) w2 + b2 (paper equation 10's FeedForward; Vaswani et al. 3.3).

    x: (..., D); p: {"w1" (D, F), "b1" (F,), "w2" (F, D), "b2" (D,)}; activation "gelu" or "relu";
    dropout rate on the hidden activations with int ``seed`` (see :func:`dropout_forward`).
    """
    checks.feedforward(x, p, FEEDFORWARD_KEYS, ACTIVATIONS, activation)
    h, lin1 = linear_forward(x, p["w1"], p["b1"])  # (..., F)
    a, act = ACTIVATIONS[activation][0](h)
    a, drop = dropout_forward(a, dropout, seed)
    out, lin2 = linear_forward(a, p["w2"], p["b2"])  # (..., D)
    return out, FeedForwardCache(lin1, act, drop, lin2, activation)


def feedforward_backward(dout, cache: FeedForwardCache):
    """Backward through the four steps in reverse. Returns ``(dx, {"w1", "b1", "w2", "b2"})``."""
    da, dw2, db2 = linear_backward(dout, cache.lin2)  # (..., F)
    da = dropout_backward(da, cache.drop)
    dh = ACTIVATIONS[cache.activation][1](da, cache.act)
    dx, dw1, db1 = linear_backward(dh, cache.lin1)  # (..., D)
    return dx, {"w1": dw1, "b1": db1, "w2": dw2, "b2": db2}
