"""Attention within look-around windows of chunks: the machinery of LSH and local attention.

Paper section 2, "Chunking" and Figure 2: a sequence of slots (sorted by hash bucket for LSH
attention, in its original order for local attention) is cut into chunks of C consecutive slots;
the queries of chunk c attend to the keys of chunks c - n_before, ..., c + n_after. Chunk indices
wrap around (chunk 0 looks back at the last chunk), as in the released trax code (``look_adjacent``
in ``trax/layers/research/efficient_attention.py``) and Hugging Face's ``_look_adjacent``. Each
chunk's window holds W = (n_before + 1 + n_after) * C keys, so attention costs O(N W) instead of
O(N^2) and no N x N array is ever made.

Within a window the logits are masked exactly as in dense attention (``attention.mask_logits``):
causal and padding keys set to NEG_MASK, the query's own position set to NEG_SELF (shared-QK).
Two more rules, both described by the :class:`Window`:

- ``group``: keys of another group than the query's (LSH: another bucket or round) are set to
  NEG_MASK;
- ``copies``: a key met several times among a query's keys (in several LSH rounds, or a chunk
  repeated in the window of a sequence shorter than the window) would count several times; with
  ``copies`` given, log N_ij is subtracted from the logit, N_ij being how often query i meets key
  j (paper Appendix A; counted in ``meetings.py``), so that each key counts once.

The softmax runs block by block (:data:`BLOCK_ELEMENTS` logits at a time), and the (C, W) weights
are never stored: the backward recomputes them from each query's maximum and scale, as
FlashAttention does (Dao et al. 2022, arXiv 2205.14135).

Shape letters: B batch, H heads, N slots (L, or R*L for LSH), n_c = N / C chunks, C chunk length,
m chunks in a block, W = (n_before + 1 + n_after) * C window width, Dh head width, Dv value width,
R rounds, Lp padded length.
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend
from .attention import NEG_MASK, mask_logits
from .chunks import add_window, gather, window_index, window_of
from .meetings import meeting_counts

# Logits computed at once, per block of chunks: 2^18 entries is 1 MiB in float32, small enough to
# stay in the CPU's cache, large enough that NumPy's per-call overhead is small.
BLOCK_ELEMENTS = 2**18


# --- What the logits of a window depend on ---------------------------------------------------


class Window(NamedTuple):
    """What the logits of a chunk's window depend on besides q and k.

    pos: integer original positions of the slots, (B, H, n_c, C) or broadcastable (1, 1, n_c, C).
    n_before, n_after: chunks looked back / ahead. causal: mask keys after the query.
    key_valid: None or bool (B, H, n_c, C), False for padding keys.
    group: None or integer (B, H, n_c, C): a query only attends to keys of its own group.
    copies: None, or ``meetings.Copies``: subtract log N_ij, how often each query meets each key.
    rows: None when q, k, v are given per slot (B, H, n_c, C, .); or int (B, H, n_c, C), the row
        of each slot in q, k, v given per position (B, H, Lp, .): LSH's sorted order is then
        followed block by block, and no sorted copy of q, k, v is made.
    """

    pos: object
    n_before: int
    n_after: int
    causal: bool
    key_valid: object = None
    group: object = None
    copies: object = None
    rows: object = None


# --- The block loop --------------------------------------------------------------------------


def _slots(x, win: Window, chunks):
    """The rows of the slots of ``chunks``: (B, H, m, C, .), from x per slot or per position."""
    if win.rows is None:
        return x[:, :, chunks]
    rows = win.rows[:, :, chunks]  # (B, H, m, C)
    return gather(x, rows.reshape(rows.shape[:2] + (-1,))).reshape(rows.shape + x.shape[3:])


def _window_slots(x, win: Window, index):
    """The rows of the windows ``index``: (B, H, m, W, .), from x per slot or per position."""
    if win.rows is None:
        return window_of(x, index)
    rows = window_of(win.rows, index)  # (B, H, m, W)
    return gather(x, rows.reshape(rows.shape[:2] + (-1,))).reshape(rows.shape + x.shape[3:])


def _blocks(batch, n_heads, win: Window, xp):
    """(chunks, index) for consecutive blocks of chunks: a slice and its window_index."""
    n_chunks, chunk_len = win.pos.shape[2:4]
    width = (win.n_before + 1 + win.n_after) * chunk_len  # W
    block = max(1, BLOCK_ELEMENTS // (batch * n_heads * chunk_len * width))
    for start in range(0, n_chunks, block):
        stop = min(start + block, n_chunks)
        yield slice(start, stop), window_index(start, stop, n_chunks, win.n_before, win.n_after, xp)


def _block_logits(q, k, chunks, index, win: Window):
    """Masked logits of the queries of ``chunks`` over their windows: (logits (B, H, m, C, W),
    keep (bool broadcastable to it, False where a logit is a mask constant, or None), the
    block's queries (B, H, m, C, Dh) and window keys (B, H, m, W, Dh))."""
    xp = backend.array_module(q, k)
    q_block, k_win = _slots(q, win, chunks), _window_slots(k, win, index)
    logits = xp.matmul(q_block, xp.ascontiguousarray(k_win.swapaxes(-1, -2)))
    logits, keep = mask_logits(
        logits,
        win.pos[:, :, chunks],
        window_of(win.pos, index),
        causal=win.causal,
        key_valid=None if win.key_valid is None else window_of(win.key_valid, index),
        self_mask=True,
    )  # (B, H, m, C, W)
    if win.group is not None:
        same = win.group[:, :, chunks, :, None] == window_of(win.group, index)[..., None, :]
        xp.copyto(logits, xp.asarray(NEG_MASK, dtype=logits.dtype), where=~same)
        keep = same if keep is None else keep & same
    if win.copies is not None:
        counts = meeting_counts(win, chunks, index, logits.dtype)
        # a key masked as another bucket's is met 0 times: counted as 1, its logit is a constant
        logits -= xp.log(xp.maximum(counts, 1, out=counts), out=counts)
    return logits, keep, q_block, k_win


def _slot_shape(q, win: Window) -> tuple:
    """(B, H, n_c, C): one entry per slot."""
    return q.shape[:2] + win.pos.shape[2:4]


def window_attention_forward(q, k, v, win: Window):
    """Softmax attention of each chunk's queries over its look-around window, block by block.

    Every slot holds one query, and its key and value; chunk c's queries attend to the keys of
    chunks c - n_before .. c + n_after (wrapping). The logits q . k are masked as the
    :class:`Window` says (module docstring). The (C, W) weights of a block of chunks live only
    while that block is computed: what the backward needs of them is the per-query maximum
    ``top`` and sum ``total``, from which it recomputes them, so memory grows with the slots, not
    with the slots times W.

    Args:
        q, k: queries and keys, v: values; (B, H, n_c, C, .) per slot, or (B, H, Lp, .) per
            position with ``win.rows``.
        win: the :class:`Window`.

    Returns:
        ``(out (B, H, n_c, C, Dv), top, total)``, ``top`` and ``total`` (B, H, n_c, C): the weights
        of query s over its window are exp(logits - top_s) / total_s, and lse = top + log(total).
    """
    xp = backend.array_module(q, k, v)
    shape = _slot_shape(q, win)
    out = xp.empty(shape + v.shape[-1:], dtype=q.dtype)  # (B, H, n_c, C, Dv)
    top = xp.empty(shape, dtype=q.dtype)
    total = xp.empty(shape, dtype=q.dtype)
    for chunks, index in _blocks(*shape[:2], win, xp):
        logits, _, _, _ = _block_logits(q, k, chunks, index, win)  # (B, H, m, C, W)
        block_top = xp.max(logits, axis=-1, keepdims=True)  # subtracted for stability
        logits -= block_top
        weights = xp.exp(logits, out=logits)  # unnormalised, in place
        block_total = xp.sum(weights, axis=-1, keepdims=True)
        out[:, :, chunks] = xp.matmul(weights, _window_slots(v, win, index)) / block_total
        top[:, :, chunks], total[:, :, chunks] = block_top[..., 0], block_total[..., 0]
        del logits, weights  # before the next block's are made: one block's arrays at a time
    return out, top, total


def window_attention_backward(dout, row, top, scale, q, k, v, win: Window):
    """Gradients of window attention, recomputing each block's weights from ``top`` and ``scale``.

    The weight of window slot s for query i is P_is = exp(logit_is - top_i) * scale_i: with
    scale = 1 / total that is the forward's softmax; LSH attention passes its round weight over
    total, the weight each slot finally gets (one softmax over all slots, across rounds). With
    out_i = sum P_is v_s and S the logits:

        dv_s = sum_i P_is dout_i,   dS_is = P_is (dout_i . v_s - dout_i . out_i),

    then dq_i = sum_s dS_is k_s and dk_s = sum_i dS_is q_i. Logits replaced by a mask constant
    get no gradient. ``row`` is dout_i . out_i with out_i the query's final output.

    Args:
        dout: upstream gradient, row: dout . out; per slot (B, H, n_c, C, Dv) and (B, H, n_c, C),
            or per position (B, H, Lp, Dv) and (B, H, Lp) with ``win.rows``.
        top, scale: (B, H, n_c, C), see above.
        q, k, v, win: as given to :func:`window_attention_forward`.

    Returns:
        ``(dq, dk, dv)``, (B, H, n_c, C, .) per slot (keys and values summed over the windows
        that saw them).
    """
    xp = backend.array_module(dout, q)
    shape = _slot_shape(q, win)
    dq = xp.empty(shape + q.shape[-1:], dtype=q.dtype)
    dk = xp.zeros(shape + k.shape[-1:], dtype=q.dtype)
    dv = xp.zeros(shape + v.shape[-1:], dtype=q.dtype)
    for chunks, index in _blocks(*shape[:2], win, xp):
        weights, keep, q_block, k_win = _block_logits(q, k, chunks, index, win)  # (B,H,m,C,W)
        weights -= top[:, :, chunks, :, None]
        weights = xp.exp(weights, out=weights)
        weights *= scale[:, :, chunks, :, None]  # P, as the forward used it
        d_out = _slots(dout, win, chunks)  # (B, H, m, C, Dv)
        add_window(dv, xp.matmul(weights.swapaxes(-1, -2), d_out), index)
        v_win_t = xp.ascontiguousarray(_window_slots(v, win, index).swapaxes(-1, -2))
        dlogits = xp.matmul(d_out, v_win_t)  # (B, H, m, C, W)
        dlogits -= _slots(row[..., None], win, chunks)
        dlogits *= weights
        if keep is not None:
            xp.copyto(dlogits, xp.asarray(0, dtype=dlogits.dtype), where=~keep)
        dq[:, :, chunks] = xp.matmul(dlogits, k_win)  # (B, H, m, C, Dh)
        add_window(dk, xp.matmul(dlogits.swapaxes(-1, -2), q_block), index)
        del weights, keep, q_block, k_win, d_out, v_win_t, dlogits  # one block's at a time
    return dq, dk, dv
