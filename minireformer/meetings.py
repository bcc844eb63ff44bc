"""How often a query meets a key: the count behind LSH attention's duplicate correction.

A query of LSH attention attends, in each of R rounds, to the keys in the look-around window of its
chunk of the sorted sequence (``windows.py``); the same key can be met in several rounds (and, on a
sequence shorter than the window is wide, several times in one round). The paper (Appendix A)
subtracts log N_ij from logit ij, N_ij being how often query i meets key j, so that every key
counts once and the rounds combined are one softmax over the union of the keys met. N_ij is
counted here block by block, from where every copy of every key lies, without any L x L array
(as trax does); ``reference.lsh_meetings`` counts it plainly, as an (L, L) array.

Shape letters: B batch, H heads, R rounds, Lp padded length, n_c chunks, C chunk length, m chunks
in a block, W window width.
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend
from .chunks import gather, window_of


class Copies(NamedTuple):
    """Where every copy of every key lies, so that a query's meetings with each key are counted.

    A key j has R copies (one per LSH round; R = 1 for local attention). Query i (its copy in
    round r, in chunk c) meets copy r2 of key j once for each window offset d with
    location[r2, j] = (the location of chunk c + d in round r): the location is the chunk itself,
    or, when only keys of the query's own bucket count, (bucket code) * n_c + chunk, so that one
    comparison tests both.
    """

    chunk: object  # (B, H, R, Lp) int: the chunk of each copy
    location: object  # (B, H, R, Lp) int: its location (above)
    rounds_meet: bool  # a query's window meets copies of every round (not only its own)


def meeting_counts(win, chunks, index, dtype):
    """N (B, H, m, C, W) for the queries of ``chunks`` over their windows ``index``: how often
    each query meets each window key, counted from ``win.copies`` without any N x N array (as
    trax does). Each meeting is one occurrence of the key among the keys the query attends to.

    win: the ``windows.Window`` (its ``pos``, ``n_before``, ``n_after`` and ``copies``); chunks: a
    slice of m query chunks; index: their (m, n_blocks) ``chunks.window_index``; dtype: that of
    the logits the counts are subtracted from (as log N).
    """
    copies = win.copies
    xp = backend.array_module(copies.chunk)
    batch, n_heads, n_rounds, _ = copies.chunk.shape
    n_chunks, chunk_len = win.pos.shape[2:4]
    m = index.shape[0]
    tokens = xp.broadcast_to(win.pos, (batch, n_heads, n_chunks, chunk_len))  # slot -> position
    q_tok = tokens[:, :, chunks].reshape(batch, n_heads, -1)  # (B, H, m*C)
    k_tok = window_of(tokens, index).reshape(batch, n_heads, -1)  # (B, H, m*W)
    q_shape, k_shape = (batch, n_heads, m, -1, 1), (batch, n_heads, m, 1, -1)
    # where the window's keys are in every round: R x (B, H, m, 1, W)
    k_loc = [gather(copies.location[:, :, r], k_tok).reshape(k_shape) for r in range(n_rounds)]
    counts = xp.zeros((batch, n_heads, m, chunk_len, k_loc[0].shape[-1]), dtype=dtype)
    for r in range(n_rounds):
        q_chunk = gather(copies.chunk[:, :, r], q_tok)  # (B, H, m*C)
        q_bucket = gather(copies.location[:, :, r], q_tok) - q_chunk  # bucket code * n_c, or 0
        for d in range(-win.n_before, win.n_after + 1):
            # the location of a key d chunks from the query in round r: (B, H, m, C, 1)
            want = (q_bucket + (q_chunk + d) % n_chunks).reshape(q_shape)
            for r2 in range(n_rounds) if copies.rounds_meet else (r,):
                counts += k_loc[r2] == want  # (B, H, m, C, W)
    return counts
