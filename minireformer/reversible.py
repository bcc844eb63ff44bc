"""Reversible residual blocks (paper section 3, equations 7-9; Gomez et al. 2017, RevNets).

A reversible block works on a pair of streams (x1, x2) and two sub-layers F (attention) and G
(feed-forward), each with its layer norm inside (paper eqs. 7-8, pre-norm as in the released code):

    y1 = x1 + F(x2),        F(x) = Attention(LN(x))
    y2 = x2 + G(y1),        G(x) = FeedForward(LN(x))

Its inputs can be recomputed from its outputs (paper eq. 9):

    x2 = y2 - G(y1),        x1 = y1 - F(x2)

so that a stack of N blocks need not store the activations of every layer for backpropagation:
the backward pass keeps the last block's outputs and walks down, rebuilding each block's inputs
while it computes the gradients (:meth:`ReversibleBlock.reverse_and_grad`). With upstream gradients
dy1, dy2 and the Jacobian-transpose products G'^T, F'^T:

    dy1' = dy1 + G'(y1)^T dy2          (y1 feeds y2 through G)
    dx1  = dy1'
    dx2  = dy2 + F'(x2)^T dy1'         (x2 feeds y1 through F and y2 directly)

Each sub-layer is recomputed exactly once, with its output (for the subtraction) and its gradients
coming from the same recomputation. Randomness is replayed, not redrawn: ``forward`` returns, beside
the outputs, a small :class:`BlockRecord` (LSH rotations and buckets, dropout seeds, the padding
mask) and never the activations; ``reverse`` and ``reverse_and_grad`` need that record, and refuse
a record made by another block, for other shapes or by another call (the record keeps a
fingerprint of the outputs it produced), so that a stack can never silently recompute a different
attention pattern than the one it ran.

The sub-layers (``attention_sublayer.py`` for F, ``feedforward_sublayer.py`` for G) follow one
protocol:

    key                                      the name of its parameters in the block's dict
    draw(rng, shape) -> record               the step's random choices for inputs (B, L, D)
    check_record(record, shape)              ValueError unless it is one of its own, for this shape
    forward(x, p, record, mask) -> (out, cache)     cache.record: the record, completed by the
                                             first run (the LSH buckets it hashed)
    backward(dout, cache) -> (dx, dp)

and two memory-saving forms of the same computations, which the block uses:

    output(x, p, record, mask) -> (out, record)                no cache: activations freed at once
    recompute_backward(x, p, record, mask, dout) -> (out, dx, dp)   forward and backward together,
                                             one group of heads (or one chunk) at a time

The block gives them the paper's names as functions of a stream: :meth:`ReversibleBlock.F`,
``G``, ``F_backward`` and ``G_backward``. The same equations with plain functions are in
``reference.py`` (``reversible_forward``, ``reversible_reverse``).

The same blocks also run with stored activations (:meth:`ReversibleBlock.forward_stored` /
:meth:`ReversibleBlock.backward_stored`), for comparisons of memory and of gradients.

Shape letters: B batch, L length, D model width (of each stream).

References: https://arxiv.org/abs/2001.04451 (section 3); https://arxiv.org/abs/1707.04585
(RevNets); trax ``trax/layers/reversible.py`` (reverse and reverse_and_grad); Hugging Face
``modeling_reformer.py`` (``_ReversibleFunction``, ``ReformerLayer.backward_pass``).
"""

from __future__ import annotations

from typing import NamedTuple

from . import backend, checks
from .checks import check_keys

FINGERPRINT_RTOL = 1e-3  # rebuilt outputs drift by ~1e-5 of their size in float32 at 64 blocks


class BlockRecord(NamedTuple):
    """What a block's forward pass chose at random, for which block, shape and call.

    No activations: the fingerprint is two numbers per position.
    """

    block: str  # the name of the block that made it
    shape: tuple  # (B, L, D) of each stream
    mask: object  # (B, L) bool padding mask, or None
    f: object  # F's record (an AttentionRecord): rotations, buckets (B, H, R, L), its seed
    g: object  # G's record (a FeedForwardRecord): its dropout seed
    fingerprint: object  # (2, B, L) float64: the sums over D of y1 and y2 it produced


def _fingerprint(y1, y2):
    """(2, B, L) float64 sums over D of each stream at each position: which call made them."""
    xp = backend.array_module(y1, y2)
    return xp.stack([y1.sum(axis=-1, dtype=xp.float64), y2.sum(axis=-1, dtype=xp.float64)])


class StoredCache(NamedTuple):
    record: BlockRecord
    f: object  # F's full cache (its activations)
    g: object  # G's full cache


class ReversibleBlock:
    """y1 = x1 + F(x2), y2 = x2 + G(y1) (paper eqs. 7-8), reversible (eq. 9).

    Args:
        f: the attention sub-layer (e.g. :class:`AttentionSubLayer`).
        g: the feed-forward sub-layer (e.g. :class:`FeedForwardSubLayer`).
        name: identifies the block in its records (a stack uses "layer 0", "layer 1", ...).

    Parameters: {f.key: F's parameters, g.key: G's parameters}.
    """

    def __init__(self, f, g, name: str = "block"):
        self.f, self.g, self.name = f, g, str(name)

    @checks.door
    def _check_inputs(self, names, a, b, params) -> None:
        """Two (B, L, D) streams of one dtype and params {f.key, g.key}."""
        checks.streams(names, a, b)
        check_keys("params", params, (self.f.key, self.g.key))

    # --- F and G as functions of a stream (paper eqs. 7-8) ---------------------------------------

    def F(self, x, params, record):  # noqa: N802 (the paper's name)
        """F(x) (B, L, D) as this block's attention computed it in the call ``record`` records."""
        return self.f.output(x, params[self.f.key], record.f, record.mask)[0]

    def G(self, x, params, record):  # noqa: N802
        """G(x) (B, L, D), the block's feed-forward, replaying ``record``."""
        return self.g.output(x, params[self.g.key], record.g, record.mask)[0]

    def F_backward(self, x, params, record, dout):  # noqa: N802
        """(F(x), F'(x)^T dout, dF's parameters): F recomputed and differentiated at once."""
        return self.f.recompute_backward(x, params[self.f.key], record.f, record.mask, dout)

    def G_backward(self, x, params, record, dout):  # noqa: N802
        """(G(x), G'(x)^T dout, dG's parameters)."""
        return self.g.recompute_backward(x, params[self.g.key], record.g, record.mask, dout)

    # --- records ---------------------------------------------------------------------------------

    @checks.door
    def _check_record(self, record, y1, y2) -> None:
        """``record`` must be this block's, for streams of this shape, made by the call whose
        outputs are (y1, y2): their fingerprint must match up to the rebuilding's round-off,
        ``FINGERPRINT_RTOL`` of the sum of |y| at each position."""
        shape = y1.shape
        if not isinstance(record, BlockRecord):
            raise TypeError(f"record: expected a BlockRecord, got {type(record).__name__}")
        if record.block != self.name:
            raise ValueError(
                f"record: expected the record of block {self.name!r}, got that of {record.block!r}"
            )
        if tuple(record.shape) != tuple(shape):
            raise ValueError(
                f"record: made for streams of shape {record.shape}, got streams of shape {shape}"
            )
        self.f.check_record(record.f, shape)
        self.g.check_record(record.g, shape)
        xp = backend.array_module(y1, y2)
        size = xp.stack([xp.abs(y).sum(axis=-1, dtype=xp.float64) for y in (y1, y2)])  # (2, B, L)
        if not bool(
            xp.all(xp.abs(_fingerprint(y1, y2) - record.fingerprint) <= FINGERPRINT_RTOL * size)
        ):
            raise ValueError(
                "record: made by another call of this block (its fingerprint does not match the "
                "outputs y1, y2 given): reverse each call's outputs with that call's record"
            )

    def forward(self, x1, x2, params, rng, *, mask=None):
        """Run the block, keeping only its outputs and what it drew.

        Args:
            x1, x2: (B, L, D) float, the two streams.
            params: {f.key: ..., g.key: ...}.
            rng: ``numpy.random.Generator`` for the step's rotations and dropout seeds (None
                when the sub-layers draw nothing: no LSH, no dropout).
            mask: None or (B, L) bool, True for real tokens (padding keys are masked).

        Returns:
            ``(y1, y2, record)``: (B, L, D) each, and the :class:`BlockRecord`.
        """
        self._check_inputs(("x1", "x2"), x1, x2, params)
        rec_f, rec_g = self.f.draw(rng, x1.shape), self.g.draw(rng, x1.shape)
        f_out, rec_f = self.f.output(x2, params[self.f.key], rec_f, mask)
        y1 = x1 + f_out  # (B, L, D)
        del f_out
        g_out, rec_g = self.g.output(y1, params[self.g.key], rec_g, mask)
        y2 = x2 + g_out  # (B, L, D)
        record = BlockRecord(self.name, tuple(x1.shape), mask, rec_f, rec_g, _fingerprint(y1, y2))
        return y1, y2, record

    def reverse(self, y1, y2, params, record: BlockRecord):
        """Reconstruct the inputs from the outputs (paper eq. 9): (x1, x2), (B, L, D) each."""
        self._check_inputs(("y1", "y2"), y1, y2, params)
        self._check_record(record, y1, y2)
        x2 = y2 - self.G(y1, params, record)
        x1 = y1 - self.F(x2, params, record)
        return x1, x2

    def reverse_and_grad(self, y1, y2, dy1, dy2, params, record: BlockRecord):
        """Reconstruct the inputs and backpropagate through the block, each sub-layer once.

        Args:
            y1, y2: (B, L, D) the block's outputs.
            dy1, dy2: (B, L, D) gradients of the loss with respect to them.
            params: the block's parameters; record: the :class:`BlockRecord` of its forward.

        Returns:
            ``(x1, x2, dx1, dx2, dparams)``: the inputs, their gradients, and gradients mirroring
            ``params``.
        """
        self._check_inputs(("y1", "y2"), y1, y2, params)
        checks.grad("dy1", dy1, y1.shape, y1.dtype)
        checks.grad("dy2", dy2, y2.shape, y2.dtype)
        self._check_record(record, y1, y2)
        g_out, dy1_g, dp_g = self.G_backward(y1, params, record, dy2)
        x2 = y2 - g_out  # (B, L, D)
        del g_out
        dx1 = dy1 + dy1_g  # y1 = x1 + F(x2): dx1 is the full gradient reaching y1
        f_out, dx2_f, dp_f = self.F_backward(x2, params, record, dx1)
        x1 = y1 - f_out
        dx2 = dy2 + dx2_f
        return x1, x2, dx1, dx2, {self.f.key: dp_f, self.g.key: dp_g}

    def forward_stored(self, x1, x2, params, rng, *, mask=None):
        """The same computation, keeping every activation: (y1, y2, StoredCache)."""
        self._check_inputs(("x1", "x2"), x1, x2, params)
        rec_f, rec_g = self.f.draw(rng, x1.shape), self.g.draw(rng, x1.shape)
        f_out, c_f = self.f.forward(x2, params[self.f.key], rec_f, mask)
        y1 = x1 + f_out
        g_out, c_g = self.g.forward(y1, params[self.g.key], rec_g, mask)
        y2 = x2 + g_out
        shape = tuple(x1.shape)
        record = BlockRecord(self.name, shape, mask, c_f.record, c_g.record, _fingerprint(y1, y2))
        return y1, y2, StoredCache(record, c_f, c_g)

    def backward_stored(self, dy1, dy2, cache: StoredCache):
        """Backward from stored activations: (dx1, dx2, dparams)."""
        for name, dy in (("dy1", dy1), ("dy2", dy2)):
            checks.grad(name, dy, cache.record.shape, dy1.dtype)  # G's backward checks the dtype
        dy1_g, dp_g = self.g.backward(dy2, cache.g)
        dx1 = dy1 + dy1_g
        dx2_f, dp_f = self.f.backward(dx1, cache.f)
        return dx1, dy2 + dx2_f, {self.f.key: dp_f, self.g.key: dp_g}
