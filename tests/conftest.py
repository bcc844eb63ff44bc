"""Backends for the tests: NumPy always, CuPy where it and a GPU are present, and a CuPy stand-in.

Fixtures:

- ``backend_name``: parametrised over ``"numpy"`` and ``"cupy"``; selects that backend for the test
  and restores NumPy afterwards. The CuPy case carries the ``gpu`` marker (``pytest -m gpu`` runs
  only CuPy cases) and is skipped, with the reason ``backend.load_cupy`` gives, where CuPy or a
  GPU is missing.
- ``cupy``: the real CuPy module, or a skip with that reason (for CPU-against-GPU comparisons).
- ``fake_cupy``: the CuPy stand-in of ``fake_cupy.py`` (NumPy-backed, refusing what CuPy refuses,
  counting host transfers), installed as ``sys.modules["cupy"]`` and as the backend, so that
  every CuPy-specific path of the library is exercised on a CPU.

With ``MINIREFORMER_TEST_FAKE_CUPY=1`` the stand-in is installed as ``cupy`` for the whole
session, so that the CPU-against-GPU tests (test_gpu.py) can be run, against it, on a CPU: that
checks the tests themselves, not a GPU.
"""

from __future__ import annotations

import os
import sys

import pytest
from fake_cupy import FakeCupy

from minireformer import backend
from minireformer.reformer_config import ReformerConfig

FAKE_CUPY_ENV = "MINIREFORMER_TEST_FAKE_CUPY"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: runs on the CuPy backend (needs CuPy and a GPU)")
    if os.environ.get(FAKE_CUPY_ENV) == "1":
        sys.modules["cupy"] = FakeCupy()


def _cupy_or_skip():
    try:
        return backend.load_cupy()
    except RuntimeError as err:
        pytest.skip(f"CuPy case: {err}")


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def backend_name(request):
    """Each available backend in turn, selected for the test; NumPy restored afterwards."""
    if request.param == "cupy":
        _cupy_or_skip()
    backend.set_backend(request.param)
    yield request.param
    backend.set_backend("numpy")


@pytest.fixture
def cupy():
    """The real CuPy module on a working GPU, or a skip saying what is missing."""
    yield _cupy_or_skip()
    backend.set_backend("numpy")


@pytest.fixture
def tiny_models():
    """``make(dtype, max_len) -> (TransformerConfig, ReformerConfig)``: the small models the
    backend tests train; the Reformer has lsh, local and full layers, chunking and dropout."""
    from minireformer import transformer

    def make(dtype="float32", max_len=12):
        baseline = transformer.TransformerConfig(
            vocab_size=11,
            d_model=16,
            n_heads=2,
            d_head=8,
            d_ff=32,
            n_layers=2,
            max_len=max_len,
            dtype=dtype,
        )
        lsh_reformer = ReformerConfig(
            vocab_size=11,
            d_model=16,
            n_heads=2,
            d_ff=32,
            n_layers=3,
            attention_types=("lsh", "local", "full"),
            n_hashes=2,
            chunk_len=4,
            ff_chunk=5,
            loss_chunk=5,
            dropout=0.1,
            max_len=max_len,
            dtype=dtype,
        )
        return baseline, lsh_reformer

    return make


@pytest.fixture
def fake_cupy(monkeypatch):
    """A fresh :class:`FakeCupy` as ``sys.modules["cupy"]`` and as the backend, for one test."""
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    backend.set_backend(fake)
    yield fake
    backend.set_backend("numpy")
