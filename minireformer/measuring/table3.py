"""The paper's memory arithmetic: its introduction's budget and the memory column of Table 3.

The introduction (Kitaev et al. 2020, section 1): 0.5B parameters per layer are 2 GB; 64K tokens x
1024 features x batch 8 are 0.5B floats, another 2 GB per layer; a 64K x 64K float32 attention
matrix is 16 GiB. :func:`transformer_activation_bytes` counts what this project's
stored-activation Transformer keeps for its backward pass, and :func:`table3_memory` is the memory
column of the paper's Table 3:

==================  =====================================
arch                Table 3 memory (elements)
==================  =====================================
transformer         max(b l d_ff, b n_h l^2) n_l
reversible          max(b l d_ff, b n_h l^2)
chunked_reversible  max(b l d_model, b n_h l^2)
lsh                 max(b l d_ff, b n_h l n_r c) n_l
reformer            max(b l d_model, b n_h l n_r c)
==================  =====================================

Table 3's formulas are orders of growth, not byte counts: they name the largest tensor of a layer
and say whether it is kept once per layer (the n_l factor) or once in all. They are compared with
measurements by their *shape* (linear in depth or flat, linear or quadratic in length), not by
their constant. The arrays this implementation really holds are counted in ``memory_model.py``.

Shape letters and the paper's symbols: b (B) batch, l (L) length, d_model (D), d_ff (F), n_h (H)
heads, n_l layers, n_r (R) hash rounds, C chunk length, c attention entries per query and round.

Source: Kitaev, Kaiser, Levskaya, "Reformer: The Efficient Transformer", ICLR 2020,
https://arxiv.org/abs/2001.04451, Table 3 ("Memory and time complexity of Transformer variants"),
and Table 1 for the LSH attention term b n_h l n_r (4l/n_c)^2.
"""

from __future__ import annotations

from ..checks import check_positive_int

GB = 10**9  # the paper's "GB" in its introduction is a decimal gigabyte

TABLE3_ARCHS = ("transformer", "reversible", "chunked_reversible", "lsh", "reformer")


def _check_dtype_bytes(dtype_bytes) -> int:
    dtype_bytes = check_positive_int("dtype_bytes", dtype_bytes)
    if dtype_bytes not in (1, 2, 4, 8):
        raise ValueError(f"dtype_bytes: expected 1, 2, 4 or 8, got {dtype_bytes}")
    return dtype_bytes


def param_bytes(n_params: int, dtype_bytes: int = 4) -> int:
    """Bytes of ``n_params`` parameters (paper: 0.5B parameters per layer "account for 2GB")."""
    return check_positive_int("n_params", n_params) * _check_dtype_bytes(dtype_bytes)


def activation_bytes(batch: int, length: int, d_model: int, dtype_bytes: int = 4) -> int:
    """Bytes of one (B, L, D) activation tensor: b * l * d_model numbers.

    Paper section 1: 64K tokens x 1024 x batch 8 = 0.5B floats, "another 2GB" per layer.
    """
    b = check_positive_int("batch", batch)
    length = check_positive_int("length", length)
    d = check_positive_int("d_model", d_model)
    return b * length * d * _check_dtype_bytes(dtype_bytes)


def attention_matrix_bytes(
    length: int, *, batch: int = 1, n_heads: int = 1, dtype_bytes: int = 4
) -> int:
    """Bytes of the (B, H, L, L) matrix Q K^T (paper: 64K x 64K in float32 is 16GB = 16 GiB)."""
    b = check_positive_int("batch", batch)
    h = check_positive_int("n_heads", n_heads)
    length = check_positive_int("length", length)
    return b * h * length * length * _check_dtype_bytes(dtype_bytes)


def per_layer_estimate_bytes(
    n_layers: int,
    *,
    params_per_layer: int,
    batch: int,
    length: int,
    d_model: int,
    dtype_bytes: int = 4,
) -> int:
    """The introduction's estimate scaled by depth: n_l * (parameters + one (B, L, D) activation).

    With 0.5B parameters and 64K x 1024 x 8 activations per layer, 96 layers need about 400 GB:
    far beyond one accelerator, although each layer alone (about 4 GB) fits.
    """
    n = check_positive_int("n_layers", n_layers)
    per_layer = param_bytes(params_per_layer, dtype_bytes) + activation_bytes(
        batch, length, d_model, dtype_bytes
    )
    return n * per_layer


# ---------------------------------------------------------------------------------------------
# What the stored-activation Transformer keeps for backward
# ---------------------------------------------------------------------------------------------


def transformer_activation_bytes(
    batch: int,
    length: int,
    d_model: int,
    d_ff: int,
    n_heads: int,
    n_layers: int,
    dtype_bytes: int = 4,
    *,
    d_head: int | None = None,
    vocab_size: int | None = None,
) -> int:
    """Bytes of the activations a pre-LayerNorm Transformer LM stores for its backward pass.

    Counted per block (model.py's baseline; standard residuals, everything cached):

    - two layer norms, each keeping its normalised input and its output (the next linear layer's
      input): 4 x (B, L, D);
    - attention: Q, K, V and the merged context, 4 x (B, L, H Dh), and the softmax weights
      (B, H, L, L), the only term quadratic in L;
    - feed-forward: the hidden layer before and after the activation, 2 x (B, L, F).

    Per block that is b l (4 d_model + 4 n_h d_head + 2 d_ff) + b n_h l^2 numbers, times
    ``n_layers``, because every block's cache is alive until the backward pass reaches it. With
    ``vocab_size`` the output head's (B, L, V) logits and softmax are added once. Small terms are
    ignored: per-row layer-norm statistics and the (L, L) boolean causal mask. Compare Table 3's
    first row, max(b l d_ff, b n_h l^2) n_l: the same terms, up to constants.

    Args:
        d_head: head width Dh (default d_model // n_heads).
    """
    b = check_positive_int("batch", batch)
    length = check_positive_int("length", length)
    d = check_positive_int("d_model", d_model)
    f = check_positive_int("d_ff", d_ff)
    h = check_positive_int("n_heads", n_heads)
    n = check_positive_int("n_layers", n_layers)
    dh = max(1, d // h) if d_head is None else check_positive_int("d_head", d_head)
    per_block = b * length * (4 * d + 4 * h * dh + 2 * f) + b * h * length * length
    head = 0
    if vocab_size is not None:  # logits and softmax of the output head, kept once
        head = 2 * b * length * check_positive_int("vocab_size", vocab_size)
    return (n * per_block + head) * _check_dtype_bytes(dtype_bytes)


# ---------------------------------------------------------------------------------------------
# Table 3
# ---------------------------------------------------------------------------------------------


def table3_memory(
    arch: str,
    *,
    batch: int,
    length: int,
    d_model: int,
    d_ff: int,
    n_heads: int,
    n_layers: int,
    n_hashes: int = 1,
    chunk_len: int = 64,
    c: int | None = None,
    dtype_bytes: int = 4,
) -> int:
    """The memory column of the paper's Table 3, in bytes (elements times ``dtype_bytes``).

    Args:
        arch: one of ``TABLE3_ARCHS``: ``"transformer"`` max(b l d_ff, b n_h l^2) n_l,
            ``"reversible"`` max(b l d_ff, b n_h l^2), ``"chunked_reversible"``
            max(b l d_model, b n_h l^2), ``"lsh"`` max(b l d_ff, b n_h l n_r c) n_l,
            ``"reformer"`` max(b l d_model, b n_h l n_r c).
        n_hashes: n_r, the LSH rounds (LSH rows only).
        chunk_len: C, the LSH chunk length (LSH rows only).
        c: attention entries per query and round. Default ``2 * chunk_len``: a query attends to
            its chunk and one chunk back, which is what our LSH attention holds. The paper's table
            instead writes c = 128^2, from Table 1's (4l/n_c)^2 with n_c = l/32 chunks; pass
            ``c=128**2`` to reproduce its literal numbers.
    """
    if arch not in TABLE3_ARCHS:
        raise ValueError(f"arch: expected one of {TABLE3_ARCHS}, got {arch!r}")
    b = check_positive_int("batch", batch)
    length = check_positive_int("length", length)
    d = check_positive_int("d_model", d_model)
    f = check_positive_int("d_ff", d_ff)
    h = check_positive_int("n_heads", n_heads)
    n = check_positive_int("n_layers", n_layers)
    r = check_positive_int("n_hashes", n_hashes)
    chunk = check_positive_int("chunk_len", chunk_len)
    c = 2 * chunk if c is None else check_positive_int("c", c)
    dtype_bytes = _check_dtype_bytes(dtype_bytes)

    width = d if arch in ("chunked_reversible", "reformer") else f  # chunking removes d_ff
    attention = b * h * length * (length if arch in TABLE3_ARCHS[:3] else r * c)
    depth = n if arch in ("transformer", "lsh") else 1  # reversibility removes n_l
    return max(b * length * width, attention) * depth * dtype_bytes
