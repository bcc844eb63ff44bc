"""Full (dense) multi-head attention: the exact O(L^2) reference (paper section 2, equation 1).

    Attention(Q, K, V) = softmax(Q K^T / sqrt(Dh)) V

Shared-QK variant (paper section 2, "Shared-QK Transformer"): queries and keys come from the same
projection; keys are the queries normalised to unit length, k_j = q_j / |q_j|, and the logit is
q_i . k_j with no further 1/sqrt(Dh), as in the released trax and Hugging Face code. Since q_i . k_i
would usually be the largest logit, a token may attend to itself only when nothing else is
available: its self logit is set to NEG_SELF.

Shape letters: B batch, H heads, L length, D model width, Dh head width.
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend

NEG_SELF = -1e5  # logit of a token attending to itself under shared-QK (paper section 2)
NEG_MASK = -1e9  # logit of a masked key (causal or padding); exp underflows to exactly 0


class UnitNormCache(NamedTuple):
    unit: object  # (..., Dh) the normalised vectors
    norm: object  # (..., 1) their original lengths


def unit_norm_forward(x, eps: float = 1e-12):
    """k = x / |x| along the last axis. x: (..., Dh) -> (..., Dh)."""
    xp = backend.array_module(x)
    norm = xp.sqrt(xp.sum(x * x, axis=-1, keepdims=True) + eps)  # (..., 1)
    unit = x / norm
    return unit, UnitNormCache(unit, norm)


def unit_norm_backward(dout, cache: UnitNormCache):
    """dx = (dk - k (k . dk)) / |x|: the Jacobian of x/|x| projects out the radial direction."""
    xp = backend.array_module(dout)
    unit, norm = cache
    return (dout - unit * xp.sum(unit * dout, axis=-1, keepdims=True)) / norm
