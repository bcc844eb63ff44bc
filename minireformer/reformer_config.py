"""The Reformer's hyper-parameters: one frozen dataclass, validated on creation.

A config is frozen (``dataclasses.replace`` makes a changed copy): a model built from it, and the
blocks ``reformer.build_blocks`` caches for it, can never disagree with it. The parameters do not
depend on ``n_hashes``, ``n_buckets``, ``chunk_len``, ``semantics`` or which attention each layer
uses, so a trained model is evaluated another way with one call:
``dataclasses.replace(config, n_hashes=8)`` or ``replace(config, attention_types=("full",))``.

Shape letters: V vocabulary, D model width, H heads, Dh head width, F feed-forward width, R hash
rounds, K buckets, C chunk length, L1 x L2 the axial grid.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import lsh, positional
from .attention_sublayer import ATTENTION_TYPES
from .checks import check_bool, check_choice, check_positive_int, check_rate
from .embedding import POSITIONAL_TYPES
from .layers import ACTIVATIONS
from .lsh_attention import SEMANTICS

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class ReformerConfig:
    """Hyper-parameters of a Reformer LM (a ``ValueError`` or ``TypeError`` names a bad field).

    Attributes:
        vocab_size: V.
        d_model: D, the width of each of the two residual streams.
        n_heads: H.
        d_ff: F, the feed-forward hidden width.
        n_layers: N reversible blocks.
        d_head: Dh; None means d_model // n_heads, and then H must divide D.
        attention_types: attention of each layer, cycled: "lsh", "local" or "full".
        n_hashes: R, LSH hash rounds.
        n_buckets: K (even) or its factors (K1, K2); None: lsh.default_n_buckets, the paper's
            rule K = 2 * ceil(L / chunk_len), factorised above lsh.MAX_UNFACTORED_BUCKETS.
        chunk_len: C, the chunk length of LSH and local attention.
        causal: language-model masking.
        ff_chunk: positions per feed-forward chunk (paper eq. 10); None: unchunked.
        loss_chunk: positions per output-projection / loss chunk; None: unchunked.
        n_parallel_heads: heads attended at a time (trax's name), bounding the attention's
            memory to that many heads' activations; None: all heads together.
        dropout: rate on the attention output and inside the feed-forward.
        positional: "learned" (a (max_len, D) table), "axial" (two factor tables) or
            "sinusoidal" (fixed, no parameters); see ``embedding.py``.
        axial_shape: (L1, L2) with L1 * L2 >= max_len, for "axial".
        axial_dims: (d1, d2) with d1 + d2 = D; None: (D // 2, D - D // 2).
        max_len: the longest sequence the model reads; None with "axial": L1 * L2.
        dtype: "float32" or "float64".
        reversible: True: reversible backward (no stored activations); False: the same blocks
            with stored activations, for comparisons.
        activation: "gelu" or "relu" in the feed-forward.
        semantics: LSH attention as the paper's Appendix A ("paper": other buckets masked,
            duplicates corrected) or as the released trax / Hugging Face code ("released");
            see ``lsh_attention.py``.
    """

    vocab_size: int
    d_model: int
    n_heads: int
    d_ff: int
    n_layers: int
    d_head: int | None = None
    attention_types: tuple = ("lsh",)
    n_hashes: int = 1
    n_buckets: int | tuple | None = None
    chunk_len: int = 64
    causal: bool = True
    ff_chunk: int | None = None
    loss_chunk: int | None = None
    n_parallel_heads: int | None = None
    dropout: float = 0.0
    positional: str = "learned"
    axial_shape: tuple | None = None
    axial_dims: tuple | None = None
    max_len: int | None = None
    dtype: str = "float32"
    reversible: bool = True
    activation: str = "gelu"
    semantics: str = "paper"

    def __post_init__(self):
        self._check_sizes()
        self._check_attention()
        self._check_positions()
        for name in ("causal", "reversible"):
            check_bool(name, getattr(self, name))
        self._set("dropout", check_rate("dropout", self.dropout))  # a NumPy scalar: a float
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("semantics", self.semantics, tuple(SEMANTICS))

    def _set(self, name, value) -> None:
        object.__setattr__(self, name, value)  # a frozen dataclass normalises its own fields

    def _check_sizes(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "d_ff", "n_layers", "n_hashes"):
            self._set(name, check_positive_int(name, getattr(self, name)))
        self._set("chunk_len", check_positive_int("chunk_len", self.chunk_len))
        for name in ("ff_chunk", "loss_chunk", "n_parallel_heads"):
            if getattr(self, name) is not None:
                self._set(name, check_positive_int(name, getattr(self, name)))
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model: expected n_heads * d_head (d_head not given, so a multiple of "
                    f"n_heads={self.n_heads}), got {self.d_model}"
                )
            self._set("d_head", self.d_model // self.n_heads)
        self._set("d_head", check_positive_int("d_head", self.d_head))

    def _check_attention(self) -> None:
        types = self.attention_types
        if isinstance(types, str) or not isinstance(types, (list, tuple)) or not types:
            raise ValueError(
                f"attention_types: expected a non-empty list of {ATTENTION_TYPES}, got {types!r}"
            )
        bad = [t for t in types if t not in ATTENTION_TYPES]
        if bad:
            raise ValueError(
                f"attention_types: expected entries from {ATTENTION_TYPES}, got {bad[0]!r}"
            )
        self._set("attention_types", tuple(types))
        if self.n_buckets is not None:
            self._set("n_buckets", lsh.check_n_buckets(self.n_buckets))

    def _check_positions(self) -> None:
        check_choice("positional", self.positional, POSITIONAL_TYPES)
        if self.max_len is not None:
            self._set("max_len", check_positive_int("max_len", self.max_len))
        if self.positional != "axial":
            if self.max_len is None:
                raise ValueError(
                    f"max_len: expected a positive integer for {self.positional} positions, "
                    f"got None"
                )
            return
        if self.axial_shape is None:
            raise ValueError("axial_shape: expected (L1, L2) for axial positions, got None")
        dims = self.axial_dims
        if dims is None:
            dims = (self.d_model // 2, self.d_model - self.d_model // 2)
        shape, dims = positional.check_axial(self.axial_shape, dims, self.d_model, self.max_len)
        self._set("axial_shape", shape)
        self._set("axial_dims", dims)
        if self.max_len is None:
            self._set("max_len", shape[0] * shape[1])

    def attention_type(self, layer: int) -> str:
        """The attention of layer ``layer``: the list cycled."""
        return self.attention_types[layer % len(self.attention_types)]

    @property
    def uses_lsh(self) -> bool:
        """Whether some layer hashes (and so draws rotations from an rng)."""
        return any(self.attention_type(i) == "lsh" for i in range(self.n_layers))
