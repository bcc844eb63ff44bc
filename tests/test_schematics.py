"""The schematics draw what they say, into a given axes or a new figure, one image every time."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from minireformer.teaching import plotting, schematics


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


DRAWINGS = {
    "lsh_pipeline": lambda ax=None: schematics.lsh_pipeline(ax=ax),
    "reversible_forward": lambda ax=None: schematics.reversible_block(ax=ax),
    "reversible_backward": lambda ax=None: schematics.reversible_block(backward=True, ax=ax),
    "chunked_feed_forward": lambda ax=None: schematics.chunked_feed_forward(ax=ax),
}


@pytest.mark.parametrize("name", DRAWINGS)
def test_draws_into_a_given_axes_or_a_new_figure(name):
    fig = DRAWINGS[name]()
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 1
    own_fig, (left, right) = plt.subplots(1, 2)
    assert DRAWINGS[name](ax=right) is own_fig
    assert right.patches and right.texts and not left.patches  # drew into that axes only


@pytest.mark.parametrize("name", DRAWINGS)
def test_the_same_image_on_every_rebuild(name, tmp_path, monkeypatch):
    monkeypatch.setenv(plotting.FIGURES_ENV, str(tmp_path))
    first = plotting.save_figure(DRAWINGS[name](), "first").read_bytes()
    second = plotting.save_figure(DRAWINGS[name](), "second").read_bytes()
    assert first == second


def test_lsh_pipeline_names_the_five_steps_and_sorts_stably():
    buckets = (1, 0, 2, 1, 3, 0, 2, 2, 1, 3, 0, 1)
    ax = schematics.lsh_pipeline(buckets, chunk_len=4).axes[0]
    labels = " ".join(_texts(ax))
    for step in ("1. hash", "2. sort", "3. chunk", "4. attend", "5. unsort"):
        assert step in labels
    assert "(n_c, C) = (3, 4)" in labels and "K = 4" in ax.get_title()
    # row 2 shows the positions in stable (bucket, position) order
    row2 = sorted(
        (t for t in ax.texts if abs(t.get_position()[1] - 6.45) < 1e-9),
        key=lambda t: t.get_position()[0],
    )
    shown = [int(t.get_text()) for t in row2 if t.get_text().isdigit()]
    assert shown == list(np.argsort(buckets, kind="stable"))


def test_reversible_block_shows_both_ends_and_the_equations():
    forward = " ".join(_texts(schematics.reversible_block().axes[0]))
    for word in ("duplicate", "concatenate", "F(x_2)", "G(y_1)"):
        assert word in forward
    backward = " ".join(_texts(schematics.reversible_block(backward=True).axes[0]))
    assert "x_2 = y_2 - G(y_1)" in backward and "x_1 = y_1 - F(x_2)" in backward
    assert "top" in backward  # the transposed Jacobians of the gradient equations


def test_chunked_feed_forward_marks_the_chunk_being_computed():
    ax = schematics.chunked_feed_forward(n_chunks=5, current=2).axes[0]
    labels = " ".join(_texts(ax))
    assert "chunk 3 of 5" in labels and "5x larger" in labels
    assert "hidden (S, d_ff)" in labels and "input\n(L, D)" in labels  # notebook 06's letters


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: schematics.lsh_pipeline((0, 1, 2), chunk_len=2), "chunk_len"),
        (lambda: schematics.lsh_pipeline((), chunk_len=1), "buckets"),
        (lambda: schematics.lsh_pipeline((0, 12), chunk_len=1), "buckets"),
        (lambda: schematics.chunked_feed_forward(n_chunks=1), "n_chunks"),
        (lambda: schematics.chunked_feed_forward(n_chunks=4, current=4), "current"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
