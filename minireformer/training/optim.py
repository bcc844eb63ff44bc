"""Adam with bias correction, and gradient clipping by global norm.

Adam (Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", ICLR, arXiv 1412.6980,
Algorithm 1), for every parameter array theta with gradient g at step t = 1, 2, ...:

    m_t = beta1 m_{t-1} + (1 - beta1) g              first-moment (mean) estimate
    v_t = beta2 v_{t-1} + (1 - beta2) g^2            second-moment (uncentred variance) estimate
    m_hat = m_t / (1 - beta1^t),  v_hat = v_t / (1 - beta2^t)    bias correction (m_0 = v_0 = 0)
    theta_t = theta_{t-1} - lr * m_hat / (sqrt(v_hat) + eps)

Global-norm clipping (Pascanu, Mikolov, Bengio 2013, "On the difficulty of training recurrent
neural networks", section 3.2): when the norm of all gradients together, sqrt(sum of g^2 over every
leaf), exceeds ``max_norm``, every gradient is scaled by max_norm / norm, keeping its direction.

Parameters and gradients are trees (nested dicts / lists of arrays, see ``tree.py``); the optimizer
state mirrors them. The Reformer paper trains with Adafactor; Adam is the standard choice for the
small models of this project.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import backend, checks
from ..checks import check_float_array, check_positive_number, check_rate
from ..tree import check_same_structure, leaf_name, leaves, leaves_with_paths, map_tree


def global_norm(grads) -> float:
    """sqrt(sum over all leaves of sum(g^2)), each leaf's sum a dot product (no temporary),
    added in float64. 0.0 for an empty tree."""
    total = 0.0
    for g in leaves(grads):
        xp = backend.array_module(g)
        flat = g.reshape(-1)
        total = total + float(xp.dot(flat, flat))
    return math.sqrt(total)


def finite_global_norm(grads, name: str = "grads") -> float:
    """:func:`global_norm`, or ``ValueError`` if it is NaN or inf (a non-finite gradient).

    Clipping a NaN would turn every gradient into NaN, and clipping an inf would zero the finite
    ones; neither is a step worth taking.
    """
    norm = global_norm(grads)
    if not math.isfinite(norm):
        raise ValueError(f"{name}: expected finite values, got global norm {norm}")
    return norm


def clip_by_global_norm(grads, max_norm: float):
    """Scale ``grads`` by max_norm / norm when their global norm exceeds ``max_norm``.

    Returns ``(clipped, norm)``: a new tree (or ``grads`` itself when no scaling is needed) and
    the global norm before clipping. ``ValueError`` if a gradient holds NaN or inf.
    """
    max_norm = check_positive_number("max_norm", max_norm)
    norm = finite_global_norm(grads)
    if norm <= max_norm:
        return grads, norm
    scale = max_norm / norm
    return map_tree(lambda g: g * scale, grads), norm


@checks.door
def _check_step(params, grads, state) -> None:
    """Adam.step's door: gradients and state of the parameters' structure (the trainer, whose
    gradients come from the model, runs the step inside ``checks.trusted()``)."""
    check_same_structure(params, grads, "grads")
    if not isinstance(state, dict) or set(state) != {"m", "v", "step"}:
        raise ValueError("state: expected the dict returned by Adam.init(params)")
    check_same_structure(params, state["m"], "state")


@dataclass
class Adam:
    """Adam optimizer (Kingma & Ba 2015, Algorithm 1) with optional global-norm clipping.

    Usage: ``state = adam.init(params)``, then ``info = adam.step(params, grads, state)`` each
    step, which updates ``params`` (and ``state``) in place. ``lr`` may be changed between steps
    (a schedule); the bias correction uses the step count kept in ``state``.
    """

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip_norm: float | None = None

    def __post_init__(self):
        check_positive_number("lr", self.lr)  # NumPy scalars are accepted like Python numbers
        check_positive_number("eps", self.eps)
        check_rate("beta1", self.beta1)
        check_rate("beta2", self.beta2)
        if self.clip_norm is not None:
            check_positive_number("clip_norm", self.clip_norm)

    def init(self, params) -> dict:
        """``{"m": zeros like params, "v": zeros like params, "step": 0}``.

        ``TypeError`` unless every leaf is a float32 or float64 array (Adam updates in place).
        """
        for path, p in leaves_with_paths(params):
            check_float_array(leaf_name("params", path), p, finite=False)

        def zeros(p):
            return backend.array_module(p).zeros_like(p)

        return {"m": map_tree(zeros, params), "v": map_tree(zeros, params), "step": 0}

    def step(self, params, grads, state) -> dict:
        """One Adam update of ``params`` in place from ``grads`` (same tree structure).

        Returns ``{"grad_norm": global norm before clipping, "clipped": bool, "step": t}``.
        Raises ValueError, before changing anything, if the gradients are not finite.
        """
        _check_step(params, grads, state)
        norm = finite_global_norm(grads)
        clipped = self.clip_norm is not None and norm > self.clip_norm  # scales g in the update
        t = state["step"] = state["step"] + 1
        c1, c2 = 1.0 - self.beta1**t, 1.0 - self.beta2**t  # bias corrections
        scale = 1.0 if not clipped else self.clip_norm / norm
        for p, g, m, v in zip(
            leaves(params), leaves(grads), leaves(state["m"]), leaves(state["v"])
        ):
            xp = backend.array_module(p)
            # in place, one temporary per leaf: m and v updated, then the step
            tmp = xp.multiply(g, (1.0 - self.beta1) * scale)
            m *= self.beta1
            m += tmp
            xp.multiply(g, g, out=tmp)
            tmp *= (1.0 - self.beta2) * scale * scale
            v *= self.beta2
            v += tmp
            xp.sqrt(v, out=tmp)
            tmp *= 1.0 / math.sqrt(c2)
            tmp += self.eps  # sqrt(v_hat) + eps
            xp.divide(m, tmp, out=tmp)
            tmp *= self.lr / c1  # lr m_hat / (sqrt(v_hat) + eps)
            p -= tmp
        return {"grad_norm": norm, "clipped": clipped, "step": t}
