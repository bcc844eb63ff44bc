"""An exact memory model: the arrays this implementation holds at its peak, counted from the code.

The paper's Table 3 (:func:`table3.table3_memory`) names one array per term: it says
how memory grows, not how many bytes a program needs. This module counts, for one call, the arrays
that are alive together at the moment of the peak, each from its shape and dtype, by walking the
implementation phase by phase; the peak is the largest phase. Every term names the line of code
that allocates it, so that a reader can check the count against the source, and a test compares
the total with :func:`minireformer.measuring.memory.measure_peak` over a grid of shapes.

Two calls are modelled:

- :func:`attention_peak_model`: ``*_attention_forward`` then ``*_attention_backward`` on
  (B, H, L, Dh) inputs that already exist (LSH, local or full shared-QK attention);
- :func:`step_peak_model`: one ``reformer.loss_and_grads`` of a Reformer, parameters existing:
  reversible (the peak is in the backward pass, inside one block's recomputed sub-layers) or
  with stored activations (every block's cache, plus the loss or the top block's backward).

Shape letters: B batch, H heads (h in a group of heads), L length, Lp padded length, Dh head width,
R rounds, C chunk length, W window width, D model width, F feed-forward width, V vocabulary,
S feed-forward / loss chunk length, N = B h R Lp sorted slots, P = B h Lp positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import lsh, lsh_attention
from ..chunks import padded_length
from ..windows import BLOCK_ELEMENTS

INT = 8  # int64 indices (argsort, gather)
INT32 = 4  # positions used by the masks
BOOL = 1


@dataclass
class PeakModel:
    """Predicted peak bytes of one call: ``total`` = the sum of ``terms`` (name -> bytes) of the
    phase in which the peak falls."""

    total: int
    terms: dict = field(default_factory=dict)
    phase: str = ""


def _peak(phases: dict) -> PeakModel:
    """The phase with the most bytes alive; phases: name -> {term: bytes}."""
    name, terms = max(phases.items(), key=lambda item: sum(item[1].values()))
    terms = {k: int(v) for k, v in terms.items() if v}
    return PeakModel(sum(terms.values()), terms, name)


def _block_chunks(rows: int, chunk_len: int, width: int, n_chunks: int) -> int:
    """Chunks per block of windows._blocks, for ``rows`` = B h."""
    return min(n_chunks, max(1, BLOCK_ELEMENTS // (rows * chunk_len * width)))


def _window_block(rows, chunk_len, width, n_chunks, d_head, s, *, group) -> dict:
    """The working set of one block of window_attention_backward at its largest: the weights
    and the logits' gradient (E each, E = B h m C W), the keep mask, the block's queries, upstream
    gradients, window keys and transposed window values, and the (m, W, Dh) product being added
    into the key gradients."""
    m = _block_chunks(rows, chunk_len, width, n_chunks)
    e = rows * m * chunk_len * width  # logits of the block
    slots, window = rows * m * chunk_len, rows * m * width
    terms = {
        "block weights and dlogits (2 E)": 2 * s * e,
        "block keep mask (bool E)": BOOL * e * (2 if group else 1),
        "block q, dout (m C Dh)": 2 * s * slots * d_head,
        "block window k, v^T, dk product (m W Dh)": 3 * s * window * d_head,
        "block gather indices": INT * (slots + window),
    }
    return terms


def _lsh_cache(
    batch, heads, length, d_head, n_hashes, width_r, padded, s, *, mask, across, dup, drawn
) -> dict:
    """What lsh_attention_forward's cache and Window hold until the backward ends."""
    n, p = batch * heads * n_hashes * padded, batch * heads * padded
    pad = padded != length
    terms = {
        "cache: buckets (B h R L) int64": INT * batch * heads * n_hashes * length,
        "cache: order, inverse (N) int64": 2 * INT * n,
        "cache: top, scale per slot (N)": 2 * s * n,
        "cache: lse (P)": s * p,
        "cache: unit keys (P Dh)": s * p * d_head,
        "cache: key norms (P)": s * p,
        "cache: output (P Dh)": s * p * d_head,
        "cache: window positions (N) int32": INT32 * n,
        "cache: window rows: sorted tokens (N) int64": INT * n,
        "cache: padded q and v (P Dh each)": 2 * s * p * d_head if pad else 0,
        "cache: sorted key validity (N) bool": BOOL * n if (pad or mask) else 0,
        "cache: sorted bucket codes (N) int64": 0 if across else INT * n,
        "cache: duplicate counts: chunk and location of each copy (N each) int64": 0
        if dup
        else INT * n * (1 if across else 2),
    }
    if drawn:
        terms["cache: rotations (h Dh R K/2) float64"] = 8 * heads * d_head * n_hashes * width_r
    return terms


def attention_peak_model(
    kind: str,
    *,
    batch: int,
    n_heads: int,
    length: int,
    d_head: int,
    chunk_len: int = 64,
    n_hashes: int = 1,
    n_buckets=None,
    causal: bool = True,
    mask: bool = False,
    semantics: str = "paper",
    n_chunks_before: int = 1,
    n_chunks_after: int = 0,
    dtype_bytes: int = 4,
    drawn_rotations: bool = True,
) -> PeakModel:
    """Peak bytes of ``forward`` then ``backward`` of one attention kind on existing inputs.

    Args:
        kind: "lsh", "local" or "full" (shared-QK).
        batch, n_heads, length, d_head: B, H, L, Dh of qk and v (Dv = Dh).
        chunk_len, n_hashes, n_buckets, semantics, n_chunks_before, n_chunks_after: as the
            attention takes them.
        mask: whether a (B, L) padding mask is passed. causal: the causal mask.
        dtype_bytes: 4 (float32) or 8 (float64).
        drawn_rotations: LSH rotations drawn inside the call (rng given), not passed in.

    Returns:
        a :class:`PeakModel`.
    """
    s, b, h, d = dtype_bytes, batch, n_heads, d_head
    across, dup = lsh_attention.semantics_of(semantics)
    if kind == "full":
        e = b * h * length * length  # the (L, L) logits
        lin = s * b * h * length * d
        cache = {
            "cache: weights, the logits made over in place (E)": s * e,
            "cache: keep mask, kept only with padding (bool E)": BOOL * e * int(mask),
            "cache: unit keys (L Dh)": lin,
        }
        return _peak(
            {
                "forward: logits and weights": {
                    **cache,
                    "keep mask being built (bool E)": BOOL * e * (1 - int(mask)),
                    "masks being built (bool E)": BOOL * e * (1 + int(causal or mask)),
                    "output (L Dh)": lin,
                },
                "backward: dS = P (dP - row)": {
                    **cache,
                    "dP made over into dS in place, dP P for the row sums (2 E)": 2 * s * e,
                    "output, dv (2 L Dh)": 2 * lin,
                },
            }
        )
    padded = padded_length(length, chunk_len)
    rounds = n_hashes if kind == "lsh" else 1
    n_chunks = rounds * padded // chunk_len
    width = (n_chunks_before + 1 + n_chunks_after) * chunk_len
    n, p = b * h * rounds * padded, b * h * padded
    block = _window_block(
        b * h, chunk_len, width, n_chunks, d, s, group=kind == "lsh" and not across
    )
    slot_grads = {"slot gradients dq, dk, dv (3 N Dh)": 3 * s * n * d}
    if kind == "local":
        cache = {
            "cache: q, unit keys, v in chunks (3 P Dh)": s * p * d * (3 if padded != length else 1),
            "cache: top, total (2 P)": 2 * s * p,
            "cache: output (P Dh)": s * p * d,
            "cache: key norms (P)": s * p,
        }
        return _peak(
            {
                "backward: one block": {**cache, **slot_grads, **block},
                "backward: unit-norm backward of dk": {
                    **cache,
                    **slot_grads,
                    "unit-norm temporary and result (2 P Dh)": 2 * s * p * d,
                },
            }
        )
    if n_buckets is None:
        n_buckets = lsh.default_n_buckets(length, chunk_len)
    cache = _lsh_cache(
        b,
        h,
        length,
        d,
        n_hashes,
        lsh.rotation_width(n_buckets),
        padded,
        s,
        mask=mask,
        across=across,
        dup=dup,
        drawn=drawn_rotations,
    )
    return _peak(
        {
            "backward: one block": {**cache, **slot_grads, "row (P)": s * p, **block},
            "backward: unsorting dq": {
                **cache,
                **slot_grads,
                "sum and one round (2 P Dh)": 2 * s * p * d,
            },
            "backward: unit-norm backward of dk": {
                **cache,
                "slot gradients dk, dv (2 N Dh)": 2 * s * n * d,
                "dqk, summed dk, two temporaries (4 P Dh)": 4 * s * p * d,
            },
            "forward: combining rounds": {
                **cache,
                "round outputs, weighted (2 N Dh)": 2 * s * n * d,
                "round log-sum-exps, weights (2 N)": 2 * s * n,
            },
        }
    )


def _record_bytes(config, batch: int, length: int) -> int:
    """One block's record (reversible.BlockRecord): LSH buckets and rotations, the fingerprint."""
    terms = 16 * batch * length  # (2, B, L) float64 fingerprint
    if config.attention_types and "lsh" in config.attention_types:
        n_buckets = config.n_buckets or lsh.default_n_buckets(length, config.chunk_len)
        width = lsh.rotation_width(n_buckets)
        terms += INT * batch * config.n_heads * config.n_hashes * length  # buckets (B, H, R, L)
        terms += 8 * config.n_heads * config.d_head * config.n_hashes * width  # float64
    return terms


def _param_bytes(config, s: int) -> tuple:
    """Bytes of the gradients of (one block's attention, one block's feed-forward, the head)."""
    d, f, width = config.d_model, config.d_ff, config.n_heads * config.d_head
    attn = s * (2 * d + 3 * d * width)  # ln_gamma, ln_beta, w_qk, w_v, w_o
    ff = s * (2 * d + 2 * d * f + f + d)  # ln, w1, b1, w2, b2
    head = s * (2 * 2 * d + 2 * d * config.vocab_size + config.vocab_size)
    return attn, ff, head


def _inner_attention(config, i: int, batch: int, length: int, s: int, heads: int) -> PeakModel:
    """The attention of block i on ``heads`` heads, forward and backward (rotations recorded)."""
    return attention_peak_model(
        config.attention_type(i),
        batch=batch,
        n_heads=heads,
        length=length,
        d_head=config.d_head,
        chunk_len=config.chunk_len,
        n_hashes=config.n_hashes,
        n_buckets=config.n_buckets,
        causal=config.causal,
        semantics=config.semantics,
        dtype_bytes=s,
        drawn_rotations=False,
    )


def stored_block_bytes(config, batch: int, length: int, layer: int = 0) -> int:
    """Bytes that block ``layer`` of a ``reversible=False`` Reformer keeps from its forward pass
    for its backward (``reversible.forward_stored``'s cache and the block's record), on (B, L)
    tokens: what one more stored-activation layer adds to a training step's peak."""
    return _stored_block_bytes(config, layer, batch, length, 4 if config.dtype == "float32" else 8)


def _stored_block_bytes(config, i: int, batch: int, length: int, s: int) -> int:
    """What reversible.forward_stored keeps of block i (StoredCache): both layer norms' outputs
    and caches, q, v and the merged context, the attention's cache (its terms named "cache: "),
    and for an unchunked feed-forward its two (B, L, F) hidden arrays."""
    stream = s * batch * length * config.d_model
    heads = s * batch * length * config.n_heads * config.d_head
    inner = _inner_attention(config, i, batch, length, s, config.n_heads)
    attention = sum(v for k, v in inner.terms.items() if k.startswith("cache: "))
    hidden = 0 if config.ff_chunk else 2 * s * batch * length * config.d_ff
    return 4 * stream + 3 * heads + attention + hidden + _record_bytes(config, batch, length)


def step_peak_model(config, batch: int, length: int) -> PeakModel:
    """Peak bytes of one ``reformer.loss_and_grads`` (parameters exist).

    Reversible: the backward pass walks down the blocks (reversible.reverse_and_grad): at block i
    it holds the streams and their gradients, the gradients of the blocks above and of the head,
    and the records of blocks 0..i; inside the block, first the feed-forward G is recomputed and
    differentiated chunk by chunk, then the attention F, head group by head group. The peak is the
    largest of those phases over the blocks, or the head's (the loss), modelled the same way.

    Stored activations (``reversible=False``): every block's cache (:func:`_stored_block_bytes`)
    is alive when the loss is differentiated and while the top block's backward runs.

    Args:
        config: a ``ReformerConfig``.
        batch, length: B and L of the tokens.
    """
    s = 4 if config.dtype == "float32" else 8
    b, n, d, f, v = batch, length, config.d_model, config.d_ff, config.vocab_size
    stream = s * b * n * d  # LD: one (B, L, D) array
    heads = s * b * n * config.n_heads * config.d_head  # LA: one (B, H, L, Dh) array
    attn_p, ff_p, head_p = _param_bytes(config, s)
    record = _record_bytes(config, b, n)
    group = config.n_parallel_heads or config.n_heads
    ff_chunk = min(config.ff_chunk or n, n)
    loss_chunk = min(config.loss_chunk or n - 1, n - 1)
    head = {
        "gradients of the head": head_p,
        "streams y1, y2 (2 B L D)": 2 * stream,
        "normalised [y1; y2], its cache, dh (6 B L D)": 6 * stream,
        "one chunk's logits, softmax and gradient (3 B S V)": 3 * s * b * loss_chunk * v,
    }
    if not config.reversible:
        top = config.n_layers - 1
        caches = {
            "every block's stored cache": sum(
                _stored_block_bytes(config, i, b, n, s) for i in range(config.n_layers)
            )
        }
        inner = _inner_attention(config, top, b, n, s, config.n_heads)
        backward = {k: val for k, val in inner.terms.items() if not k.startswith("cache: ")}
        return _peak(
            {
                "head: loss and its gradient": {**caches, **head},
                "top block: feed-forward G backward": {
                    **caches,
                    "gradients of the head and G": head_p + ff_p,
                    "dy1, dy2, dx (3 B L D)": 3 * stream,
                    "one chunk's hidden gradients (4 B S F)": 4 * s * b * ff_chunk * f,
                },
                f"top block: attention F backward ({inner.phase})": {
                    **caches,
                    "gradients of the head and G": head_p + ff_p,
                    "dx1, dy2, dG (3 B L D)": 3 * stream,
                    "dctx, dqk, dv (3 B H L Dh)": 3 * heads,
                    **{f"attention: {k}": val for k, val in backward.items()},
                },
            }
        )
    phases = {}
    for i in range(config.n_layers):
        above = (config.n_layers - 1 - i) * (attn_p + ff_p) + head_p  # gradients made so far
        kept = (i + 1) * record  # records of blocks 0..i
        inner = _inner_attention(config, i, b, n, s, group)
        phases[f"block {i}: attention F ({inner.phase})"] = {
            "gradients of the blocks above, the head and this G": above + ff_p,
            "records of blocks 0..i": kept,
            "streams y1, y2, dy1, dy2, x2, dx1, dG (7 B L D)": 7 * stream,
            "F's layer norm output and cache (2 B L D)": 2 * stream,
            "qk, v, dctx, ctx, dqk, dv (6 B H L Dh)": 6 * heads,
            **{f"attention: {k}": val for k, val in inner.terms.items()},
        }
        phases[f"block {i}: feed-forward G"] = {
            "gradients of the blocks above and the head": above,
            "records of blocks 0..i": kept,
            "streams y1, y2, dy1, dy2 (4 B L D)": 4 * stream,
            "G's layer norm output and cache, output, dx (4 B L D)": 4 * stream,
            # GELU's forward holds its input, 0.5 (1 + t), the output, t and the slope at once
            "one chunk's hidden arrays (5 B S F)": 5 * s * b * ff_chunk * f,
            "one chunk's weight gradients": ff_p,
        }
    phases["head: loss and its gradient"] = {
        "records of all blocks": config.n_layers * record,
        **head,
    }
    return _peak(phases)
