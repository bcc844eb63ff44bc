"""Array backend: NumPy by default, CuPy on request.

Every array operation in the library goes through an *array module* ``xp`` that has NumPy's
interface: NumPy itself, CuPy (the same code on an NVIDIA GPU), or any module-like object with the
same functions (the tests use a thin counting wrapper around NumPy to prove that no hot path
bypasses the backend).

Choosing the backend:

- the environment variable ``MINIREFORMER_BACKEND=numpy|cupy``, read the first time it is needed;
- or a call: ``minireformer.backend.set_backend("cupy")``.

Library code asks ``array_module(*arrays)`` for the module that owns its inputs (CuPy arrays stay
on the GPU) and ``get_xp()`` when it creates arrays from nothing. Random numbers are always drawn on
the host from an explicit ``numpy.random.Generator`` and moved with
``asarray``. CuPy is imported only when it is asked for, never when this module is imported.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import numpy

ENV_VAR = "MINIREFORMER_BACKEND"
BOOL_TYPES = (bool, numpy.bool_)  # Python's and NumPy's booleans (CuPy's scalars are NumPy's)
GENERATOR = numpy.random.Generator  # every random draw comes from one, on the host
_BACKENDS = ("numpy", "cupy")
_xp: ModuleType | None = None


def load_cupy() -> ModuleType:
    """Import CuPy and check that a GPU is visible; else ``RuntimeError`` saying what to install."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as err:
        raise RuntimeError(
            "backend 'cupy' needs the package cupy on a machine with an NVIDIA GPU: install it "
            "with `pip install 'minireformer[gpu]'` (CUDA 12, cupy-cuda12x) or "
            "`pip install 'minireformer[gpu-cuda13]'` (CUDA 13, cupy-cuda13x)"
        ) from err
    try:
        n_gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDA driver missing or broken
        raise RuntimeError(f"backend 'cupy': CuPy is installed but no GPU works ({err})") from err
    if n_gpus < 1:
        raise RuntimeError("backend 'cupy': CuPy is installed but no GPU is present")
    return cupy


def set_backend(backend: str | ModuleType) -> ModuleType:
    """Select the array module used by the library and return it.

    Args:
        backend: ``"numpy"``, ``"cupy"``, or a module-like object exposing NumPy's interface.
    """
    global _xp
    if isinstance(backend, str):
        if backend not in _BACKENDS:
            raise ValueError(f"backend: expected one of {_BACKENDS}, got {backend!r}")
        _xp = numpy if backend == "numpy" else load_cupy()
    else:
        if not hasattr(backend, "asarray"):
            raise TypeError(f"backend: expected a name or an array module, got {type(backend)}")
        _xp = backend
    return _xp


def get_xp() -> ModuleType:
    """The current array module (NumPy unless ``MINIREFORMER_BACKEND`` or ``set_backend`` says)."""
    if _xp is None:
        set_backend(os.environ.get(ENV_VAR, "numpy").strip().lower() or "numpy")
    return _xp


def describe() -> str:
    """One line naming the current backend and where it computes, for a notebook's opening.

    For example ``"NumPy 2.1.3 on the CPU"`` or ``"CuPy 14.0.0 on NVIDIA H200 (139 GiB)"``; a
    stand-in module (as the tests use) is named by its type.
    """
    xp = get_xp()
    if xp is numpy:
        return f"NumPy {numpy.__version__} on the CPU"
    if getattr(xp, "__name__", "") == "cupy":
        device = xp.cuda.Device()
        props = xp.cuda.runtime.getDeviceProperties(device.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        gib = props["totalGlobalMem"] // 2**30
        return f"CuPy {xp.__version__} on {name} ({gib} GiB)"
    return f"{type(xp).__name__}, a stand-in array module with NumPy's interface"


def _is_cupy_array(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def array_module(*arrays) -> ModuleType:
    """The module owning ``arrays``: CuPy if any is a CuPy array, else the current backend."""
    for a in arrays:
        if _is_cupy_array(a):
            return importlib.import_module("cupy")
    return get_xp()


def asarray(a, dtype=None):
    """``a`` as an array of the current backend (host data is copied to the GPU under CuPy)."""
    return get_xp().asarray(a, dtype=dtype)


def to_numpy(a) -> numpy.ndarray:
    """``a`` as a NumPy array on the host (a no-op for NumPy arrays; scalars become 0-d arrays)."""
    if _is_cupy_array(a):
        return a.get()
    return numpy.asarray(a)


def default_rng(seed) -> numpy.random.Generator:
    """A host ``numpy.random.Generator`` from ``seed``; random draws always happen on the host."""
    return numpy.random.default_rng(seed)
