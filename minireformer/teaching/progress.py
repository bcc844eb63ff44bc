"""Progress bars for the notebooks' long loops that leave nothing behind in a saved notebook.

A Jupyter widget bar (``tqdm.auto``) is stored in an executed notebook as a frozen picture of its
last state, which a reader of the saved notebook (or of the site) sees as a bar that never moves.
A text bar that erases itself when the loop ends (``leave=False``) shows the progress while the
cell runs and leaves an empty line in the saved output.
"""

from __future__ import annotations

from tqdm import tqdm


def progress(iterable, desc: str):
    """``iterable``, with a text progress bar labelled ``desc`` while it runs."""
    return tqdm(iterable, desc=desc, leave=False)
