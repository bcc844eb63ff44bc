"""Data for training: the duplication task (paper section 2.1, Table 2) and character-level text.

Both are *data sources* with one interface, which the trainer (``train.py``) uses:

    source.vocab_size                                 V
    source.batch(rng, batch_size, length)             (tokens (B, L+1) int64, loss_mask (B, L)
                                                      bool or None): a training batch from rng;
                                                      the model reads L tokens, predicts L
    source.eval_batches(batch_size, length, n)        a fixed list of n held-out batches
    source.spec()                                     a JSON-able dict; ``from_spec`` rebuilds it

A training batch depends only on ``rng``, so the state of that Generator *is* the data position:
a checkpoint that stores it resumes on exactly the batches that would have come next.

**Duplication** (Kitaev et al. 2020, section 2.1): a sequence ``0 w 0 w`` with ``w`` a word of
``word_len`` symbols drawn uniformly from 1..N. The first half is noise to a model; the second
half can be predicted exactly by finding the copy ``word_len + 1`` positions back. The loss and
accuracy count the second ``w`` only (``loss_mask``). A sequence has 2 * word_len + 2 tokens, of
which a model reads the first L = 2 * word_len + 1 (``length``); vocabulary N + 1.

**Character-level text**: the characters of a text file, encoded by their index in the sorted set
of characters the file uses; the first ``1 - valid_fraction`` of the text trains and the rest
validates (a fixed split, so every run measures on the same characters). Training batches are
windows at uniformly random offsets; evaluation windows tile the validation text from its start.

Shape letters: B batch, L length, V vocabulary.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..checks import check_nonnegative_int, check_positive_int, check_rng

TASKS = ("duplication", "text")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEXT = (
    "data/tinyshakespeare.txt"  # relative paths are tried in the working folder, then here
)


def resolve_path(path) -> Path:
    """``path`` as given if it exists, else relative to the project root (where ``data/`` is)."""
    p = Path(path)
    if not p.exists() and not p.is_absolute() and (PROJECT_ROOT / p).exists():
        return PROJECT_ROOT / p
    return p


class DuplicationTask:
    """Sequences ``0 w 0 w``, w uniform over 1..n_symbols: 2 * word_len + 2 tokens, of which a
    model reads ``length`` = 2 * word_len + 1 (the last token is only predicted).

    ``eval_seed`` seeds the held-out sequences; training batches come from the trainer's own
    Generator, so with different seeds the two never share a stream.
    """

    def __init__(self, n_symbols: int = 63, word_len: int = 63, eval_seed: int = 12345):
        self.n_symbols = check_positive_int("n_symbols", n_symbols)
        self.word_len = check_positive_int("word_len", word_len)
        self.eval_seed = check_nonnegative_int("eval_seed", eval_seed)
        self.vocab_size = self.n_symbols + 1
        self.length = 2 * self.word_len + 1

    def spec(self) -> dict:
        return {
            "task": "duplication",
            "n_symbols": self.n_symbols,
            "word_len": self.word_len,
            "eval_seed": self.eval_seed,
        }

    def _check_length(self, length):
        if length is not None and length != self.length:
            raise ValueError(
                f"seq_len: the duplication task with word_len={self.word_len} is read at length "
                f"{self.length}, got {length}"
            )

    def sequences(self, rng, n: int):
        """(tokens (n, L+1) int64, loss_mask (n, L) bool): n fresh sequences from ``rng``."""
        check_rng(rng)
        w = rng.integers(1, self.n_symbols + 1, size=(n, self.word_len))  # (n, |w|)
        zero = np.zeros((n, 1), dtype=np.int64)
        tokens = np.concatenate([zero, w, zero, w], axis=1)  # (n, L)
        # logit t predicts token t + 1; the second copy occupies tokens |w|+2 .. 2|w|+1
        mask = np.zeros((n, self.length), dtype=bool)
        mask[:, self.word_len + 1 :] = True
        return tokens, mask

    def batch(self, rng, batch_size: int, length: int | None = None):
        self._check_length(length)
        return self.sequences(rng, check_positive_int("batch_size", batch_size))

    def eval_batches(self, batch_size: int, length: int | None = None, n_batches: int = 1):
        """``n_batches`` batches of fresh sequences from ``eval_seed`` (the same every call)."""
        self._check_length(length)
        n_batches = check_positive_int("n_batches", n_batches)
        rng = np.random.default_rng(self.eval_seed)
        return [self.sequences(rng, batch_size) for _ in range(n_batches)]


class CharText:
    """Character-level text with a fixed train / validation split.

    Args:
        path: a UTF-8 text file.
        valid_fraction: the share of the text, taken from its end, that validates.
        sha256, vocabulary: what a checkpoint recorded of the text it was trained on (its digest
            and its characters, from :meth:`spec`); given, the file must match them, so that a
            model is never evaluated on, or decoded with, another text of the same name.
    """

    def __init__(
        self, path=DEFAULT_TEXT, valid_fraction: float = 0.1, sha256=None, vocabulary=None
    ):
        self.path = resolve_path(path)
        self.spec_path = str(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"data: no text file at {self.path}")
        raw = self.path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"data: {self.path} is not UTF-8 text (byte {e.start})") from None
        if isinstance(valid_fraction, bool) or not isinstance(valid_fraction, (int, float)):
            raise TypeError(f"valid_fraction: expected a number in (0, 1), got {valid_fraction!r}")
        if not 0 < valid_fraction < 1:
            raise ValueError(f"valid_fraction: expected a number in (0, 1), got {valid_fraction}")
        self.valid_fraction = float(valid_fraction)
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self.chars = sorted(set(text))
        for what, want, got in (("sha256", sha256, self.sha256),
                                ("vocabulary", vocabulary, "".join(self.chars))):  # fmt: skip
            if want is not None and want != got:
                raise ValueError(
                    f"data: {self.path} is not the text the model was trained on (its {what} "
                    "differs from the checkpoint's); give the original file"
                )
        self.vocab_size = len(self.chars)
        self._index = {c: i for i, c in enumerate(self.chars)}
        ids = np.array([self._index[c] for c in text], dtype=np.int64)
        cut = int(round(len(ids) * (1 - self.valid_fraction)))
        self.train_ids, self.valid_ids = ids[:cut], ids[cut:]
        if len(self.valid_ids) < 2 or len(self.train_ids) < 2:
            raise ValueError(f"data: {self.path} is too short to split ({len(ids)} characters)")

    def spec(self) -> dict:
        return {
            "task": "text",
            "path": self.spec_path,
            "valid_fraction": self.valid_fraction,
            "sha256": self.sha256,
            "vocabulary": "".join(self.chars),
        }

    def encode(self, text: str):
        """str -> (len,) int64 ids; ``ValueError`` naming a character the vocabulary lacks."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        missing = sorted(set(text) - set(self._index))
        if missing:
            raise ValueError(f"prompt: characters not in the vocabulary: {missing[:5]}")
        return np.array([self._index[c] for c in text], dtype=np.int64)

    def decode(self, ids) -> str:
        """(n,) int ids in [0, V) -> str; ``ValueError``/``TypeError`` for anything else."""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu" or ids.ndim != 1:
            raise TypeError(
                f"ids: expected a 1-D sequence of integer ids, got {ids.dtype} {ids.shape}"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(
                f"ids: expected ids in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}"
            )
        return "".join(self.chars[i] for i in ids.tolist())

    def _split(self, split: str):
        if split not in ("train", "valid"):
            raise ValueError(f"split: expected 'train' or 'valid', got {split!r}")
        return self.train_ids if split == "train" else self.valid_ids

    def batch(self, rng, batch_size: int, length: int, split: str = "train"):
        """``batch_size`` windows of ``length`` + 1 characters at random offsets: (tokens, None)
        (the model reads the first ``length`` of each and predicts the next)."""
        check_rng(rng)
        ids = self._split(split)
        length = check_positive_int("seq_len", length)
        if length + 1 > len(ids):
            raise ValueError(f"seq_len: expected at most {len(ids) - 1} characters, got {length}")
        starts = rng.integers(
            0, len(ids) - length, size=check_positive_int("batch_size", batch_size)
        )
        return np.stack([ids[s : s + length + 1] for s in starts]), None  # (B, L+1)

    def eval_batches(self, batch_size: int, length: int, n_batches: int | None = None):
        """Consecutive validation windows of ``length`` + 1 (from the start), in batches.

        Windows overlap by one character so that every validation character after the first is
        predicted exactly once. ``n_batches`` None: all of the validation text.
        """
        length = check_positive_int("seq_len", length)
        if n_batches is not None:
            n_batches = check_positive_int("n_batches", n_batches)
        n_windows = (len(self.valid_ids) - 1) // length
        if n_windows == 0:
            raise ValueError(
                f"seq_len: {length} + 1 characters do not fit the validation text "
                f"({len(self.valid_ids):,} characters)"
            )
        windows = [self.valid_ids[i * length : (i + 1) * length + 1] for i in range(n_windows)]
        batches = [
            (np.stack(windows[i : i + batch_size]), None)
            for i in range(0, len(windows), batch_size)
        ]
        return batches if n_batches is None else batches[:n_batches]


def from_spec(spec: dict):
    """The data source a :meth:`spec` dict describes (``ValueError`` for an unknown task)."""
    if not isinstance(spec, dict) or spec.get("task") not in TASKS:
        got = spec.get("task") if isinstance(spec, dict) else spec
        raise ValueError(f"task: expected one of {TASKS}, got {got!r}")
    kwargs = {k: v for k, v in spec.items() if k != "task"}
    cls = DuplicationTask if spec["task"] == "duplication" else CharText
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"data: unknown field for task {spec['task']!r}: {e}") from None
