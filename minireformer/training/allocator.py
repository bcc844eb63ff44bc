"""Keeping freed memory in the process, so that a step's temporaries cost no page faults.

A training step of a small model makes a few hundred temporaries of 0.1-5 MB each (a (12, 64,
512) float32 activation is 1.5 MB) and frees most of them within the step. NumPy takes each from
``malloc``. glibc's ``malloc`` serves a block above its mmap threshold (128 KiB at first, moving
up to 32 MiB as such blocks are freed) with fresh pages from the kernel and gives them back when
the block is freed; it also gives back the free top of its heap once that exceeds the trim
threshold. Either way the next temporary of that size starts on pages the kernel has to fault in
and zero, one 4 KiB page at a time. On the 2-core machine this project is measured on, GELU's
forward on a (12, 64, 512) array took 2.8-3.0 ms this way against 0.6-0.7 ms with the pages
kept, and a step of the shipped Transformer 67-72 ms against 54-56 ms (one BLAS thread, two runs
each; ``benchmarks/compare_throughput.py`` measures the steps as the trainer runs them).

:func:`keep_freed_memory` asks ``malloc`` (``mallopt``) to serve blocks up to ``largest`` from its
heap and to keep what is freed, so that later temporaries reuse pages already mapped: the same
thing a deep-learning framework's caching allocator does. The cost is that the process keeps the
pages of its largest step until it exits, which is what training needs anyway. It changes the
whole process, so the trainer calls it, not the import of the package; elsewhere than glibc
(macOS, Windows, musl) it does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt's parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MiB = 1 << 20


def _mallopt():
    """glibc's ``mallopt``, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version  # present in glibc only
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    fn.argtypes, fn.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return fn


def keep_freed_memory(largest: int = 32 * MiB, pad: int = 64 * MiB) -> bool:
    """Serve blocks up to ``largest`` bytes from the heap, grow it ``pad`` bytes at a time, and
    never give its free top back: True when glibc accepted all three settings.

    ``largest`` at 32 MiB is glibc's own ceiling for the mmap threshold on 64-bit machines; a
    larger block (a long sequence's attention weights) is still mapped and unmapped each time.
    """
    for name, value in (("largest", largest), ("pad", pad)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**31:
            raise ValueError(
                f"{name} must be a positive number of bytes below 2**31, got {value!r}"
            )
    mallopt = _mallopt()
    if mallopt is None:
        return False
    settings = ((M_MMAP_THRESHOLD, largest), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, pad))
    return all(mallopt(param, value) == 1 for param, value in settings)
