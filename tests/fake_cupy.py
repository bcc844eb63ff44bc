"""A CuPy stand-in for the tests: NumPy underneath, CuPy's refusals and bookkeeping on top.

:class:`FakeCupy` is a module-like object that behaves like CuPy where it matters for portability.
Its arrays (:class:`DeviceArray`) refuse to mix with NumPy arrays and to be converted to them
implicitly, exactly where CuPy raises; it counts host transfers and keeps a memory pool that
``cupy.cuda.using_allocator`` can watch. So every CuPy-specific path of the library (the backend's
dispatch, ``to_numpy``, checkpoints, memory measurement) runs on a CPU (``conftest.py`` installs
it for the tests that ask for the ``fake_cupy`` fixture).
"""

from __future__ import annotations

import weakref
from types import ModuleType, SimpleNamespace

import numpy as np

CUPY_MESSAGE = (
    "Implicit conversion to a NumPy array is not allowed. "
    "Please use `.get()` to construct a NumPy array explicitly."
)


class _Memory:
    """A block handed out by :class:`FakeMemoryPool`; returned to the pool when collected."""

    def __init__(self, pool, size):
        self.size = size
        weakref.finalize(self, pool.release, size)


class FakeMemoryPool:
    """CuPy's ``MemoryPool`` API as the library uses it: ``malloc`` and ``used_bytes``."""

    BLOCK = 512  # CuPy rounds every allocation up to 512 bytes

    def __init__(self):
        self.used = 0

    def malloc(self, size):
        size = -(-max(size, 1) // self.BLOCK) * self.BLOCK
        self.used += size
        return _Memory(self, size)

    def release(self, size):
        self.used -= size

    def used_bytes(self):
        return self.used

    def free_all_blocks(self):
        """CuPy returns its cached blocks to the driver here; the stand-in caches none."""


class FakeOutOfMemoryError(MemoryError):
    """``cupy.cuda.memory.OutOfMemoryError``."""


def _unwrap(value, where):
    """DeviceArrays to their NumPy data, recursively; a NumPy array here is a CuPy error."""
    if isinstance(value, DeviceArray):
        return value.data
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)} in {where} (a host array on the device)")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, where) for v in value)
    return value


def _unwrap_call(where, args, kwargs):
    return _unwrap(args, where), {k: _unwrap(v, where) for k, v in kwargs.items()}


class DeviceArray:
    """An array "on the device": a NumPy array that moves to the host only when asked.

    As with ``cupy.ndarray``: NumPy arrays are refused as operands (``TypeError``), ``__array__``
    raises (so ``numpy.asarray(x)`` fails), ``.get()`` copies to the host, reductions return 0-d
    arrays, and ``float(x)``, ``int(x)``, ``bool(x)`` and ``x.item()`` synchronise (counted in
    ``FakeCupy.implicit_transfers``).
    """

    __array_ufunc__ = None  # NumPy defers to our operators, which refuse NumPy operands

    def __init__(self, module, data):
        self.module, self.data = module, data
        owner = data
        while isinstance(owner.base, np.ndarray):
            owner = owner.base  # views share their owner's block
        if id(owner) not in module.blocks:
            block = module.allocator()(owner.nbytes)
            module.blocks[id(owner)] = block
            weakref.finalize(owner, module.blocks.pop, id(owner))

    def __array__(self, *args, **kwargs):
        raise TypeError(CUPY_MESSAGE)

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    nbytes = property(lambda self: self.data.nbytes)
    T = property(lambda self: self.module.wrap(self.data.T))

    @property
    def flags(self):  # CuPy's flags have no "writeable": device arrays always are
        f = self.data.flags
        return SimpleNamespace(
            c_contiguous=f.c_contiguous, f_contiguous=f.f_contiguous, owndata=f.owndata
        )

    def get(self):
        self.module.explicit_transfers += 1
        return self.data.copy()

    def _sync(self, convert):
        self.module.implicit_transfers += 1
        return convert(self.data)

    def item(self):
        return self._sync(lambda a: a.item())

    def __float__(self):
        return self._sync(float)

    def __int__(self):
        return self._sync(int)

    def __index__(self):
        return self._sync(lambda a: a.__index__())

    def __bool__(self):
        return self._sync(bool)

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        return (self.module.wrap(row) for row in self.data)

    def __repr__(self):
        return f"DeviceArray({self.data!r})"

    def __getitem__(self, key):
        return self.module.wrap(self.data[_unwrap(key, "an index")])

    def __setitem__(self, key, value):
        self.data[_unwrap(key, "an index")] = _unwrap(value, "an assignment")

    def __getattr__(self, name):  # methods: reshape, astype, sum, max, copy, ...
        method = getattr(self.data, name)
        if not callable(method):
            raise AttributeError(name)

        def call(*args, **kwargs):
            args, kwargs = _unwrap_call(f"ndarray.{name}", args, kwargs)
            return self.module.wrap(method(*args, **kwargs))

        return call


_BINARY = "add sub mul truediv floordiv mod pow matmul and or xor lshift rshift".split()
_IN_PLACE = {f"__i{n}__" for n in _BINARY}


def _operator(name):
    def op(self, *other):
        result = getattr(self.data, name)(*_unwrap(other, f"operator {name}"))
        if result is NotImplemented:
            return result
        if name in _IN_PLACE:  # in place: the same array, as NumPy and CuPy keep it
            return self
        return self.module.wrap(result)

    op.__name__ = name
    return op


for _name in (
    [f"__{n}__" for n in _BINARY]
    + [f"__r{n}__" for n in _BINARY]
    + sorted(_IN_PLACE)
    + [f"__{n}__" for n in "eq ne lt le gt ge neg pos abs invert".split()]
):
    setattr(DeviceArray, _name, _operator(_name))
DeviceArray.__hash__ = None
DeviceArray.__module__ = "cupy"  # what backend.array_module looks for


class _Function:
    """A NumPy function or ufunc run on DeviceArrays (and its ``.at``, ``.reduce`` ...)."""

    def __init__(self, module, fn, name):
        self.module, self.fn, self.name = module, fn, name

    def __call__(self, *args, **kwargs):
        self.module.calls[self.name] = self.module.calls.get(self.name, 0) + 1
        args, kwargs = _unwrap_call(f"cupy.{self.name}", args, kwargs)
        return self.module.wrap(self.fn(*args, **kwargs))

    def __getattr__(self, name):
        return _Function(self.module, getattr(self.fn, name), f"{self.name}.{name}")


class FakeCupy(ModuleType):
    """A module named ``cupy`` computing with NumPy on DeviceArrays (see the module docstring).

    Attributes: ``calls`` (function name -> count), ``implicit_transfers`` and
    ``explicit_transfers`` (device-to-host moves), ``pool`` (:class:`FakeMemoryPool`).
    """

    __version__ = "0.0-stand-in"

    def __init__(self):
        super().__init__("cupy")
        self.calls, self.blocks = {}, {}
        self.implicit_transfers = self.explicit_transfers = 0
        self.pool = FakeMemoryPool()
        self._allocators = [self.pool.malloc]
        self.ndarray = DeviceArray
        self.cuda = SimpleNamespace(
            runtime=SimpleNamespace(
                getDeviceCount=lambda: 1,
                getDeviceProperties=lambda i: {"name": b"Fake GPU", "totalGlobalMem": 2**34},
            ),
            Device=lambda: SimpleNamespace(id=0, synchronize=lambda: None),
            using_allocator=self._using_allocator,
            memory=SimpleNamespace(OutOfMemoryError=FakeOutOfMemoryError),
        )

    def __getattr__(self, name):
        attr = getattr(np, name)
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes (cupy.float32 is numpy.float32), constants
        return _Function(self, attr, name)

    def wrap(self, value):
        """NumPy results as DeviceArrays (scalars as 0-d arrays, as CuPy's reductions give)."""
        if isinstance(value, (np.ndarray, np.generic)):
            return DeviceArray(self, np.asarray(value))
        if isinstance(value, (list, tuple)):
            return type(value)(self.wrap(v) for v in value)
        return value

    # host <-> device, as CuPy names them
    def asarray(self, a, dtype=None):
        if isinstance(a, DeviceArray):
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        return DeviceArray(self, np.array(a, dtype=dtype))

    array = asarray

    def asnumpy(self, a):
        return a.get() if isinstance(a, DeviceArray) else np.asarray(a)

    def get_array_module(self, *arrays):
        return self if any(isinstance(a, DeviceArray) for a in arrays) else np

    # memory
    def get_default_memory_pool(self):
        return self.pool

    def allocator(self):
        return self._allocators[-1]

    def _using_allocator(self, allocator):
        module = self

        class Using:
            def __enter__(self):
                module._allocators.append(allocator)

            def __exit__(self, *exc):
                module._allocators.pop()

        return Using()
