"""Schematics: one picture per idea, drawn by code, for the notebooks to show before the math.

Three diagrams, each a plain function that draws into a Matplotlib axes (a new figure when none is
given) and returns the figure:

- :func:`lsh_pipeline`: LSH attention's five steps, hash, sort, chunk, attend, unsort (paper
  section 2 and Figure 2), on a small hand-picked example, with the array shape after each step
  and arrows for the look-back of every chunk.
- :func:`reversible_block`: the reversible two-stream block (paper section 3, equations 7-9): the
  input duplicated into two streams at the bottom, y1 = x1 + F(x2) and y2 = x2 + G(y1), the streams
  concatenated at the top; with ``backward=True`` the backward pass, which rebuilds x2 = y2 - G(y1)
  and x1 = y1 - F(x2) from the outputs while the gradients flow down.
- :func:`chunked_feed_forward`: the feed-forward layer applied a chunk of positions at a time
  (paper section 3, equation 10), so that only one chunk's (chunk_len, d_ff) hidden layer exists.

The drawings use no random numbers and no fonts other than Matplotlib's default, so a figure saved
with :func:`minireformer.teaching.plotting.save_figure` is the same image on every rebuild.

Shape letters (the README's notation table): L length, Dh head width, K buckets, C chunk length of
LSH attention, n_c number of chunks.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

__all__ = ["lsh_pipeline", "reversible_block", "chunked_feed_forward"]

# Bucket colours: tab10's first four, the same as notebook 03's figures use for buckets 0-3.
BUCKET_COLOURS = plt.get_cmap("tab10").colors
# One example: 12 tokens in 4 buckets; chunks of 4 after sorting (3 chunks).
EXAMPLE_BUCKETS = (1, 0, 2, 1, 3, 0, 2, 2, 1, 3, 0, 1)
STREAM_COLOURS = {"x1": "#4c72b0", "x2": "#dd8452", "grad": "#c44e52"}


def _axes(ax, figsize):
    """The figure and axes to draw into: ``ax``'s own, or a new figure of ``figsize``."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def _box(ax, x, y, w, h, text, *, colour="white", edge="0.2", fontsize=9, **text_kw):
    """A rounded box with ``text`` centred in it; (x, y) is the lower-left corner."""
    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=colour, ec=edge, lw=1.2
        )
    )
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, **text_kw)


def _arrow(ax, start, end, *, colour="0.2", style="-|>", lw=1.4, rad=0.0, ls="-"):
    """An arrow from ``start`` to ``end`` (data coordinates), optionally curved by ``rad``."""
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=12,
            color=colour,
            lw=lw,
            ls=ls,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=2,
            shrinkB=2,
        )
    )


def _finish(ax, xlim, ylim, title):
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11)


# --- LSH attention -----------------------------------------------------------------------------


def lsh_pipeline(buckets=EXAMPLE_BUCKETS, chunk_len: int = 4, *, ax=None, title=None):
    """LSH attention in five steps, top to bottom, on tokens coloured by bucket.

    Args:
        buckets: the bucket of each token in original order (ints in 0..9, so that tab10 colours
            them); the default is a 12-token example with 4 buckets.
        chunk_len: C, the number of sorted tokens per chunk; must divide ``len(buckets)``.
        ax: the axes to draw into; a new figure when None.
        title: the axes title; a default one when None, none when "".

    Each row is the sequence after one step, with its shape (one head, one round) on the right:
    the tokens in original order (1, hash), sorted by (bucket, position) (2, sort), cut into n_c
    chunks of C (3, chunk), each chunk attending to itself and, by the curved arrows, to the chunk
    before it, wrapping around at the start (4, attend), and the outputs written back to the
    original positions (5, unsort).
    """
    buckets = tuple(int(b) for b in buckets)
    length = len(buckets)
    if length == 0 or not all(0 <= b < len(BUCKET_COLOURS) for b in buckets):
        raise ValueError(f"buckets: expected a non-empty sequence of ints in 0..9, got {buckets}")
    if not isinstance(chunk_len, int) or chunk_len < 1 or length % chunk_len:
        raise ValueError(
            f"chunk_len: expected a positive int dividing len(buckets) = {length}, got {chunk_len}"
        )
    n_chunks = length // chunk_len
    order = sorted(range(length), key=lambda i: (buckets[i], i))  # sorted slot -> position
    fig, ax = _axes(ax, (11, 6.2))
    rows = [  # (y, label, token order, chunk gaps?, shape note)
        (8.0, "1. hash\nh = argmax([xR; -xR])", range(length), False, "bucket ids (L,)"),
        (6.0, "2. sort by\n(bucket, position)", order, False, "sorted slots (L,)"),
        (4.0, "3. chunk", order, True, f"(n_c, C) = ({n_chunks}, {chunk_len})"),
        (2.0, "4. attend: own chunk\n+ one chunk back", order, True, "logits (n_c, C, 2C)"),
        (0.0, "5. unsort", range(length), False, "outputs (L, Dh)"),
    ]
    gap = 0.5  # horizontal gap between chunks in rows 3 and 4
    slot_x = {}  # (row y, slot) -> x of that square's left edge
    for y, label, tokens, chunked, shape in rows:
        for slot, pos in enumerate(tokens):
            x = slot + (gap * (slot // chunk_len) if chunked else 0.0)
            slot_x[y, slot] = x
            ax.add_patch(Rectangle((x, y), 0.9, 0.9, fc=BUCKET_COLOURS[buckets[pos]], alpha=0.85))
            ax.text(x + 0.45, y + 0.45, str(pos), ha="center", va="center", fontsize=9)
        ax.text(-0.6, y + 0.45, label, ha="right", va="center", fontsize=9)
        right = max(slot_x[y, s] for s in range(length)) + 1.3
        ax.text(right, y + 0.45, shape, ha="left", va="center", fontsize=9, color="0.3")
    width = length + gap * (n_chunks - 1)
    for y in (8.0, 6.0, 4.0, 2.0):  # a down arrow between consecutive rows, left of the squares
        _arrow(ax, (-0.3, y + 0.1), (-0.3, y - 1.1))
    for c in range(n_chunks):  # frames around the chunks of row 3
        x0 = slot_x[4.0, c * chunk_len]
        ax.add_patch(Rectangle((x0 - 0.08, 3.92), chunk_len - 0.04, 1.06, fill=False, lw=1.5))

    def centre(c):
        return slot_x[2.0, c * chunk_len] + chunk_len / 2 - 0.05

    for c in range(1, n_chunks):  # row 4: each chunk looks back at the previous one
        _arrow(ax, (centre(c), 2.95), (centre(c - 1), 2.95), colour="0.35", rad=0.3, lw=1.1)
    if n_chunks > 1:  # and the first chunk, wrapping around, at the last one
        _arrow(
            ax,
            (centre(0), 1.95),
            (centre(n_chunks - 1), 1.95),
            colour="0.35",
            rad=0.06,
            lw=1.1,
            ls="--",
        )
        ax.text(
            width / 2,
            1.02,
            "chunk 0 wraps around to the last",
            ha="center",
            va="bottom",
            fontsize=8,
            color="0.35",
        )
    ax.text(
        width / 2,
        -0.75,
        "a query scores at most 2C keys of its own bucket, never all L",
        ha="center",
        fontsize=9,
        style="italic",
    )
    n_buckets = max(buckets) + 1
    for b in range(n_buckets):  # legend of bucket colours
        ax.add_patch(Rectangle((width + 4.6, 7.6 - 0.7 * b), 0.5, 0.5, fc=BUCKET_COLOURS[b]))
        ax.text(width + 5.3, 7.85 - 0.7 * b, f"bucket {b}", va="center", fontsize=9)
    default = f"LSH attention in five steps: L = {length}, K = {n_buckets}, C = {chunk_len}"
    _finish(ax, (-5.2, width + 7.5), (-1.1, 9.2), default if title is None else title)
    return fig


# --- Reversible block --------------------------------------------------------------------------


def _sum_node(ax, x, y, sign="+", colour="white"):
    ax.add_patch(plt.Circle((x, y), 0.22, fc=colour, ec="0.2", lw=1.2))
    ax.text(x, y, sign, ha="center", va="center", fontsize=11)


def reversible_block(*, backward: bool = False, ax=None, title=None):
    """The reversible two-stream block, forward (default) or backward (``backward=True``).

    Forward, bottom to top: the embedded input x is duplicated into two streams x1 = x2 = x; the
    block computes y1 = x1 + F(x2) (F: attention with its layer norm) and y2 = x2 + G(y1) (G: the
    feed-forward with its layer norm); at the top the streams are concatenated, [y1; y2], for the
    output head. A stack repeats the block between the two ends.

    Backward, top to bottom: from the outputs (y1, y2) alone the block rebuilds its inputs,
    x2 = y2 - G(y1) and then x1 = y1 - F(x2), recomputing G and F once each; the same
    recomputation gives the gradients (red): dy1' = dy1 + G'(y1)^T dy2, dx1 = dy1',
    dx2 = dy2 + F'(x2)^T dy1'. Nothing of the forward pass is stored.
    """
    fig, ax = _axes(ax, (6.2, 7.6))
    c1, c2, grad = STREAM_COLOURS["x1"], STREAM_COLOURS["x2"], STREAM_COLOURS["grad"]
    x1, x2 = 0.5, 5.5  # x positions of the two streams; sub-layer boxes sit between them
    if not backward:
        _box(ax, 0.8, 0.0, 4.4, 0.7, r"embedding $x$  (B, L, D)", colour="0.93")
        _arrow(ax, (3.0, 0.7), (x1, 1.6), colour=c1)
        _arrow(ax, (3.0, 0.7), (x2, 1.6), colour=c2)
        ax.text(3.0, 1.2, "duplicate", ha="center", fontsize=9, style="italic")
        ax.text(x1 - 0.3, 1.75, r"$x_1$", ha="right", fontsize=12, color=c1)
        ax.text(x2 + 0.3, 1.75, r"$x_2$", ha="left", fontsize=12, color=c2)
        ax.plot([x1, x1], [1.6, 3.68], color=c1, lw=2)  # stream 1 up to its sum
        ax.plot([x2, x2], [1.6, 5.68], color=c2, lw=2)  # stream 2 up to its sum
        _box(
            ax, 1.5, 2.6, 3.0, 0.8, "F: attention\n+ its layer norm", colour="#e8eef8", fontsize=8.5
        )
        _arrow(ax, (x2, 3.0), (4.5, 3.0), colour=c2)  # x2 -> F
        _arrow(ax, (1.5, 3.0), (x1 + 0.15, 3.75))  # F(x2) -> sum 1
        _sum_node(ax, x1, 3.9)
        ax.text(x1 - 0.6, 3.9, r"$y_1 = x_1 + F(x_2)$", ha="right", va="center", fontsize=10)
        ax.plot([x1, x1], [4.12, 6.9], color=c1, lw=2)
        _box(
            ax,
            1.5,
            4.6,
            3.0,
            0.8,
            "G: feed-forward\n+ its layer norm",
            colour="#fbeee4",
            fontsize=8.5,
        )
        _arrow(ax, (x1, 5.0), (1.5, 5.0), colour=c1)  # y1 -> G
        _arrow(ax, (4.5, 5.0), (x2 - 0.15, 5.75))  # G(y1) -> sum 2
        _sum_node(ax, x2, 5.9)
        ax.text(x2 + 0.35, 5.9, r"$y_2 = x_2 + G(y_1)$", ha="left", va="center", fontsize=10)
        ax.plot([x2, x2], [6.12, 6.9], color=c2, lw=2)
        _arrow(ax, (x1, 6.9), (2.6, 7.7), colour=c1)
        _arrow(ax, (x2, 6.9), (3.4, 7.7), colour=c2)
        ax.text(3.0, 7.1, "concatenate", ha="center", fontsize=9, style="italic")
        _box(ax, 0.6, 7.7, 4.8, 0.7, r"$[y_1; y_2]$  (B, L, 2D) $\to$ head", colour="0.93")
        ax.add_patch(Rectangle((-0.2, 2.2), 6.4, 4.4, fill=False, ls="--", ec="0.55"))
        ax.text(  # between the streams, where no line crosses it
            3.0,
            6.5,
            "one block (a stack repeats it)",
            ha="center",
            va="top",
            fontsize=8,
            color="0.4",
        )
        default = "Reversible block, forward"
    else:
        _box(ax, 0.0, 7.7, 6.0, 0.7, "from above: $y_1, y_2, \\bar y_1, \\bar y_2$", colour="0.93")
        ax.text(x1 - 0.3, 7.2, r"$y_1$", ha="right", fontsize=12, color=c1)
        ax.text(x2 + 0.3, 7.2, r"$y_2$", ha="left", fontsize=12, color=c2)
        ax.plot([x1, x1], [7.7, 3.12], color=c1, lw=2)  # stream 1 down to its subtraction
        ax.plot([x2, x2], [7.7, 5.12], color=c2, lw=2)  # stream 2 down to its subtraction
        _box(ax, 1.5, 6.0, 3.0, 0.8, "G recomputed\non $y_1$", colour="#fbeee4", fontsize=8.5)
        _arrow(ax, (x1, 6.4), (1.5, 6.4), colour=c1)  # y1 -> G
        _arrow(ax, (4.5, 6.4), (x2 - 0.15, 5.05))  # G(y1) -> subtract
        _sum_node(ax, x2, 4.9, sign="-")
        ax.text(x2 + 0.35, 4.9, r"$x_2 = y_2 - G(y_1)$", ha="left", va="center", fontsize=10)
        ax.plot([x2, x2], [4.68, 0.7], color=c2, lw=2)
        _box(ax, 1.5, 3.6, 3.0, 0.8, "F recomputed\non $x_2$", colour="#e8eef8", fontsize=8.5)
        _arrow(ax, (x2, 4.0), (4.5, 4.0), colour=c2)  # x2 -> F
        _arrow(ax, (1.5, 4.0), (x1 + 0.15, 3.05))  # F(x2) -> subtract
        _sum_node(ax, x1, 2.9, sign="-")
        ax.text(x1 - 0.6, 2.9, r"$x_1 = y_1 - F(x_2)$", ha="right", va="center", fontsize=10)
        ax.plot([x1, x1], [2.68, 0.7], color=c1, lw=2)
        for y, text in (
            (5.5, r"$\bar y_1' = \bar y_1 + G'(y_1)^\top \bar y_2$"),
            (3.15, r"$\bar x_2 = \bar y_2 + F'(x_2)^\top \bar y_1'$"),
            (2.3, r"$\bar x_1 = \bar y_1'$"),
        ):
            ax.text(3.0, y, text, ha="center", va="center", fontsize=10, color=grad)
        _box(
            ax,
            0.0,
            0.0,
            6.0,
            0.7,
            "to the block below: $x_1, x_2, \\bar x_1, \\bar x_2$",
            colour="0.93",
        )
        ax.text(
            3.0,
            2.0,
            "red: gradients, from the\nsame recomputation; nothing\nof the forward pass is stored",
            ha="center",
            va="top",
            fontsize=8.5,
            color="0.3",
            style="italic",
        )
        default = "Reversible block, backward: rebuild the inputs"
    _finish(ax, (-2.6, 8.6), (-0.2, 8.6), default if title is None else title)
    return fig


# --- Chunked feed-forward ----------------------------------------------------------------------


def chunked_feed_forward(n_chunks: int = 4, current: int = 1, *, ax=None, title=None):
    """The feed-forward layer a chunk of positions at a time (paper equation 10).

    Args:
        n_chunks: how many chunks the L positions are cut into (at least 2).
        current: the chunk being computed (0-based); chunks before it are done, after it pending.
        ax: the axes to draw into; a new figure when None.
        title: the axes title; a default one when None, none when "".

    Left, the input (L, D) cut into chunks of S = L / n_chunks positions; middle, the one chunk's
    hidden layer (S, d_ff) that exists at this moment (notebook 06's letters); right, the output,
    done chunks filled and later ones still empty. Below, for comparison, the (L, d_ff) hidden
    layer the unchunked layer would hold whole.
    """
    if not isinstance(n_chunks, int) or n_chunks < 2:
        raise ValueError(f"n_chunks: expected an int >= 2, got {n_chunks!r}")
    if not isinstance(current, int) or not 0 <= current < n_chunks:
        raise ValueError(f"current: expected an int in 0..{n_chunks - 1}, got {current!r}")
    fig, ax = _axes(ax, (10, 5.0))
    height, d_model, d_ff = 4.0, 1.0, 4.0  # drawn sizes: d_ff = 4 d_model as in the paper
    step = height / n_chunks
    top = 1.2 + height

    def column(x0, width, label, state):
        for c in range(n_chunks):
            y = top - (c + 1) * step
            filled = state(c)
            ax.add_patch(
                Rectangle(
                    (x0, y),
                    width,
                    step,
                    fc="#4c72b0" if filled == "now" else ("#a9bfe0" if filled else "white"),
                    ec="0.2",
                    lw=1.0,
                    hatch=None if filled else "//",
                )
            )
        ax.text(x0 + width / 2, top + 0.25, label, ha="center", fontsize=9)

    column(0.0, d_model, "input\n(L, D)", lambda c: "now" if c == current else True)
    column(8.0, d_model, "output\n(L, D)", lambda c: "now" if c == current else c < current)
    y_now = top - (current + 0.5) * step
    ax.add_patch(
        Rectangle((2.6, y_now - step / 2), d_ff, step, fc="#f0a868", ec="0.2", lw=1.2)
    )  # the one chunk's hidden layer
    ax.text(2.6 + d_ff / 2, y_now, "hidden (S, d_ff)", ha="center", va="center", fontsize=9)
    _arrow(ax, (d_model + 0.05, y_now), (2.55, y_now))
    ax.text(1.8, y_now + 0.18, "W1, act.", ha="center", fontsize=8)
    _arrow(ax, (2.6 + d_ff + 0.05, y_now), (7.95, y_now))
    ax.text(7.3, y_now + 0.18, "W2", ha="center", fontsize=8)
    ax.text(
        -0.15,
        y_now,
        f"chunk {current + 1} of {n_chunks}\n(S = L / {n_chunks})",
        ha="right",
        va="center",
        fontsize=8.5,
    )
    # the ghost of the whole hidden layer, which the unchunked layer would hold at once
    ax.add_patch(Rectangle((2.6, top - height), d_ff, height, fc="none", ec="0.5", ls="--", lw=1.0))
    ax.text(
        2.6 + d_ff / 2,
        top - height - 0.3,
        f"dashed: the whole (L, d_ff) hidden of the unchunked layer, {n_chunks}x larger",
        ha="center",
        va="top",
        fontsize=8.5,
        color="0.35",
    )
    ax.text(
        4.6,
        top + 0.95,
        "positions are independent: FF applied to each chunk, outputs concatenated",
        ha="center",
        fontsize=9,
        style="italic",
    )
    default = "Chunked feed-forward: one chunk's hidden layer at a time"
    _finish(ax, (-2.8, 9.6), (0.4, top + 1.5), default if title is None else title)
    return fig
