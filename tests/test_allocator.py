"""allocator.keep_freed_memory: glibc accepts the settings; bad sizes are refused; the trainer
asks for them."""

import ctypes
import sys

import numpy as np
import pytest

from minireformer.training import allocator, data, settings, train
from minireformer.transformer import TransformerConfig

GLIBC = allocator._mallopt() is not None


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_glibc_accepts_every_setting():
    assert allocator.keep_freed_memory() is True


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_blocks_come_back_from_the_heap():
    """After the settings, a freed 1.5 MB block is reused by the next one of its size: the same
    address, not a fresh mapping."""
    allocator.keep_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 12 * 64 * 512 * 4
    first = libc.malloc(size)
    libc.free(first)
    second = libc.malloc(size)
    libc.free(second)
    assert first == second


def test_elsewhere_it_does_nothing(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator._mallopt() is None
    assert allocator.keep_freed_memory() is False


@pytest.mark.parametrize("kwargs", [dict(largest=0), dict(pad=-1), dict(largest=2**31),
                                    dict(largest=1.5), dict(pad=True)])  # fmt: skip
def test_bad_sizes_are_refused(kwargs):
    with pytest.raises(ValueError, match="positive number of bytes"):
        allocator.keep_freed_memory(**kwargs)


def test_the_trainer_asks_for_it(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    (tmp_path / "text.txt").write_text("abcdefgh" * 64)
    source = data.CharText(tmp_path / "text.txt", valid_fraction=0.25)
    config = TransformerConfig(vocab_size=source.vocab_size, d_model=8, n_heads=2, d_head=4,
                               d_ff=16, n_layers=1, max_len=16)  # fmt: skip
    tc = settings.TrainConfig(steps=1, batch_size=2, seq_len=8, eval_every=1, eval_batches=1)
    result = train.train(config, tc, source, progress=False)
    assert calls == [1] and result.step == 1 and np.isfinite(result.log[-1][1])
