"""One interface to both language models: the Reformer (``reformer.py``) and the baseline
Transformer (``transformer.py``), so that training, evaluation, sampling and checkpoints are
written once.

The model's kind follows from its config's type (:class:`ReformerConfig` or
:class:`TransformerConfig`); configs travel as JSON-able dicts ``{"kind": ..., **fields}``
(:func:`config_to_dict`, :func:`config_from_dict`), which is how checkpoints and ``--config`` files
hold them.

Shape letters: B batch, L length, V vocabulary.
"""

from __future__ import annotations

import dataclasses

from .. import reformer, transformer
from ..reformer_config import ReformerConfig

KINDS = {"reformer": ReformerConfig, "transformer": transformer.TransformerConfig}


def kind_of(config) -> str:
    """ "reformer" or "transformer"; ``TypeError`` for any other object."""
    for kind, cls in KINDS.items():
        if isinstance(config, cls):
            return kind
    raise TypeError(
        f"config: expected a ReformerConfig or TransformerConfig, got {type(config).__name__}"
    )


def init_params(config, rng) -> dict:
    """Fresh parameters for ``config``, drawn from ``rng``."""
    if kind_of(config) == "reformer":
        return reformer.init_reformer(config, rng)
    return transformer.init_transformer(config, rng)


def loss_and_grads(params, tokens, config, rng=None, loss_mask=None, *, offset: int = 0):
    """(loss float, grads tree) of the next-token loss; tokens (B, L), loss_mask (B, L-1) or None.

    ``rng`` draws the step's LSH rotations and dropout seeds (the Transformer uses it for dropout
    only); ``offset`` is the position of the first token (offset + L <= max_len)."""
    if kind_of(config) == "reformer":
        return reformer.loss_and_grads(params, tokens, config, rng, loss_mask, offset=offset)
    return transformer.loss_and_grads(params, tokens, config, rng, loss_mask, offset=offset)


def forward_logits(params, tokens, config, rng=None):
    """(B, L, V) evaluation logits (no dropout); ``rng`` draws LSH rotations (Reformer only)."""
    if kind_of(config) == "reformer":
        return reformer.forward_logits(params, tokens, config, rng)
    return transformer.forward_logits(params, tokens, config)


def config_to_dict(config) -> dict:
    """``{"kind": "reformer" | "transformer", **fields}``, JSON-able (tuples become lists)."""
    return {"kind": kind_of(config), **dataclasses.asdict(config)}


def config_from_dict(d: dict):
    """Inverse of :func:`config_to_dict`; ``ValueError`` naming an unknown kind or field.

    Ill-typed values are refused by the config's own validation (``TypeError``/``ValueError``
    naming the field)."""
    if not isinstance(d, dict):
        raise ValueError(f"model config: expected a JSON object, got {type(d).__name__}")
    d = dict(d)
    kind = d.pop("kind", "reformer")
    if kind not in KINDS:
        raise ValueError(f"model kind: expected one of {sorted(KINDS)}, got {kind!r}")
    cls = KINDS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"model config: unknown field(s) for {kind}: {', '.join(unknown)}")
    for name in ("attention_types", "axial_shape", "axial_dims"):
        if isinstance(d.get(name), list):
            d[name] = tuple(d[name])
    return cls(**d)
