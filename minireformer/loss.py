"""The softmax, its log-sum-exp and the cross-entropy loss of a language model.

A language model's loss (paper section 5 reports bits per dimension, the same loss divided by
log 2) is the mean negative log-likelihood of each target under the softmax of its logits:

    loss = (1/N) sum_i (logsumexp(z_i) - z_i[t_i]),    logsumexp(z) = m + log sum_v exp(z_v - m)

with m = max_v z_v subtracted so that exp never overflows. Its gradient with respect to the
logits is softmax(z_i) - onehot(t_i), divided by N.

Shape letters: ``...`` any leading dimensions (B, L), N entries of the softmax, V vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend, checks


def logsumexp(x, axis: int = -1, keepdims: bool = False):
    """log(sum(exp(x))) along ``axis``, max-subtracted: m + log(sum(exp(x - m))).

    A slice that is all -inf gives -inf (not NaN).
    """
    xp = backend.array_module(x)
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)  # all -inf slice: avoid inf - inf
    out = m + xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else xp.squeeze(out, axis=axis)


def softmax_forward(x):
    """p = exp(x - max) / sum(exp(x - max)) along the last axis. x: (..., N) -> p (..., N)."""
    checks.float_input("x", x)
    xp = backend.array_module(x)
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    p = e / xp.sum(e, axis=-1, keepdims=True)
    return p, p


def softmax_backward(dout, cache):
    """dx = p * (dout - sum(dout * p)) along the last axis (Jacobian diag(p) - p p^T)."""
    p = cache
    checks.grad("dout", dout, p.shape, p.dtype)
    xp = backend.array_module(dout)
    return p * (dout - xp.sum(dout * p, axis=-1, keepdims=True))


class CrossEntropyCache(NamedTuple):
    logits: object  # (..., V)
    lse: object  # (...) log-sum-exp of the logits
    targets: object  # (...) int
    weights: object  # (...) 1 for counted targets, 0 for ignored ones
    n: int  # the normaliser


def softmax_cross_entropy_forward(logits, targets, mask=None, *, normalizer=None):
    """Mean negative log-likelihood of ``targets`` under softmax(logits), over unmasked positions.

        loss = sum_i w_i (logsumexp(logits_i) - logits_i[t_i]) / N,   N = sum_i w_i

    logits: (..., V) float; targets: (...) int in [0, V), masked or not; mask: (...) bool, True =
    counted (None = all). ``normalizer`` replaces N (e.g. the total count over all chunks of a
    chunked loss, where one chunk may be entirely masked). Returns a 0-d loss; ValueError if N = 0,
    or if ``logits`` is empty (no position or an empty vocabulary).
    """
    checks.cross_entropy(logits, targets, mask, normalizer)
    xp = backend.array_module(logits)
    if mask is None:
        weights, n = xp.ones(targets.shape, dtype=logits.dtype), targets.size
    else:
        weights, n = mask.astype(logits.dtype), int(xp.sum(mask))
    n = n if normalizer is None else int(normalizer)
    lse = logsumexp(logits)  # (...)
    picked = xp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # (...)
    loss = xp.sum((lse - picked) * weights) / n
    checks.finite_result("loss", loss)
    return loss, CrossEntropyCache(logits, lse, targets, weights, n)


def softmax_cross_entropy_backward(dloss, cache: CrossEntropyCache):
    """dlogits = dloss * w_i * (softmax(logits_i) - onehot(t_i)) / N.  Returns (..., V)."""
    checks.scalar_grad("dloss", dloss)
    xp = backend.array_module(cache.logits)
    grad = xp.exp(cache.logits - cache.lse[..., None])  # softmax, (..., V)
    grad -= xp.arange(cache.logits.shape[-1]) == cache.targets[..., None]  # minus the one-hot
    return grad * (cache.weights * (float(dloss) / cache.n))[..., None]
