"""Data parallelism on the cores of one machine: each worker thread takes a slice of the batch.

The paper trains on 8 devices, each computing the gradients of its share of every batch, which
are then averaged. A CPU has cores instead: NumPy releases Python's global lock inside its array
loops and matrix products, so two threads computing the loss and gradients of two halves of a
batch run at the same time, one core each. The averaged result is the gradient of the whole
batch: the loss is a mean over targets, so each slice's loss and gradients are weighted by its
share of the targets.

Every worker reads the same parameters (nothing writes them during the computation). Each draws
its LSH rotations and dropout seeds from its own Generator, seeded from the step's Generator, so
a run is reproducible (and resumable) for a given number of workers; with one worker this is
exactly ``lm.loss_and_grads``. Run BLAS one thread per worker (``OPENBLAS_NUM_THREADS=1``): two
workers that each ask BLAS for every core would fight over them.

Shape letters: B batch, L length.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import backend
from ..tree import map_tree
from . import lm


@functools.cache
def _pool(n: int) -> ThreadPoolExecutor:
    """n worker threads, started once per process and reused by every step."""
    return ThreadPoolExecutor(max_workers=n, thread_name_prefix="minireformer-worker")


def loss_and_grads(params, tokens, config, rng=None, loss_mask=None, *, offset=0, workers=2):
    """``lm.loss_and_grads`` of the batch ``tokens`` (B, L), computed by ``workers`` threads on
    slices of the batch: ``(loss, grads)``, the mean over all targets and its gradients."""
    batch = tokens.shape[0]
    n = max(1, min(int(workers), batch))
    if n == 1:
        return lm.loss_and_grads(params, tokens, config, rng, loss_mask, offset=offset)
    parts = np.array_split(np.arange(batch), n)
    seeds = [None] * n if rng is None else rng.integers(0, 2**63 - 1, size=n).tolist()
    xp = backend.array_module(tokens)

    def run(i):
        rows = xp.asarray(parts[i])
        mask = None if loss_mask is None else loss_mask[rows]
        worker_rng = None if seeds[i] is None else np.random.default_rng(seeds[i])
        out = lm.loss_and_grads(params, tokens[rows], config, worker_rng, mask, offset=offset)
        count = (tokens.shape[1] - 1) * len(parts[i]) if mask is None else int(xp.sum(mask))
        return out, count

    results = list(_pool(n).map(run, range(n)))
    total = sum(count for _, count in results)
    weights = [count / total for _, count in results]
    loss = sum(w * value for w, ((value, _), _) in zip(weights, results))

    def combine(*leaves):  # the targets-weighted mean of the workers' gradients, in place
        out = leaves[0]
        out *= weights[0]
        for w, g in zip(weights[1:], leaves[1:]):
            g *= w  # each worker's gradients are its own fresh arrays: scaled where they are
            out += g
        return out

    grads = map_tree(combine, *(g for (_, g), _ in results))
    return float(loss), grads
