"""Peak-memory measurement and the analytic memory model (memory.py)."""

import sys
import tracemalloc

import numpy as np
import pytest

from minireformer import transformer
from minireformer.measuring import memory, table3

MB = 10**6


# ---------------------------------------------------------------------------------------------
# measure_peak
# ---------------------------------------------------------------------------------------------


def test_measure_peak_sees_a_known_allocation():
    result, peak = memory.measure_peak(np.ones, 10**6)  # 8 MB of float64
    assert result.shape == (10**6,)
    assert 8 * MB <= peak <= 8.1 * MB


def test_measure_peak_excludes_arrays_that_existed_before():
    big = np.ones(2 * 10**6)  # 16 MB, allocated before the measurement
    total, peak = memory.measure_peak(np.sum, big)
    assert total == 2 * 10**6
    assert peak < 0.1 * MB


def test_measure_peak_counts_temporaries_while_alive():
    def two_live_buffers():
        x = np.ones(10**6)
        y = x * 2.0  # x and y alive together: 16 MB
        return float(y[0])

    def one_at_a_time():
        for _ in range(3):
            x = np.ones(10**6)  # each freed before the next: 8 MB at any time
            del x
        return 0.0

    assert 16 * MB <= memory.measure_peak(two_live_buffers)[1] <= 16.2 * MB
    assert 8 * MB <= memory.measure_peak(one_at_a_time)[1] <= 8.2 * MB


def test_measure_peak_nests_and_restores_tracing_state():
    def inner():
        x = np.ones(10**6)  # 8 MB
        return float(x[0])

    def outer():
        held = np.ones(5 * 10**5)  # 4 MB held while the inner measurement runs
        _, inner_peak = memory.measure_peak(inner)
        return inner_peak, float(held[0])

    assert not tracemalloc.is_tracing()
    (inner_peak, _), outer_peak = memory.measure_peak(outer)
    assert not tracemalloc.is_tracing()
    assert 8 * MB <= inner_peak <= 8.1 * MB
    assert 12 * MB <= outer_peak <= 12.2 * MB  # the outer peak includes the inner one

    tracemalloc.start()  # someone else is tracing: leave it on
    try:
        _, peak = memory.measure_peak(np.ones, 10**6)
        assert tracemalloc.is_tracing()
        assert 8 * MB <= peak <= 8.1 * MB
    finally:
        tracemalloc.stop()


def test_measure_peak_rejects_non_callable():
    with pytest.raises(TypeError, match="fn"):
        memory.measure_peak(3)


def test_measure_training_step_excludes_parameters():
    params = {"w": np.ones(10**6)}  # 8 MB that exist before the step

    def loss_and_grads(p, scale):
        act = p["w"] * scale  # 8 MB activation
        return float(act.sum()), {"w": np.full_like(p["w"], scale)}  # plus 8 MB of gradient

    loss, peak = memory.measure_training_step(loss_and_grads, params, 2.0)
    assert loss == 2 * 10**6
    assert 16 * MB <= peak <= 16.2 * MB
    assert memory.tree_nbytes(params) == 8 * MB


# ---------------------------------------------------------------------------------------------
# The paper's arithmetic (section 1 and section 2)
# ---------------------------------------------------------------------------------------------


def test_paper_arithmetic():
    # 0.5B parameters per layer "account for 2GB of memory"
    assert table3.param_bytes(500_000_000) == 2 * table3.GB
    # 64K tokens x 1K x batch 8 = 0.5B floats, "another 2GB" (2 GiB exactly)
    assert table3.activation_bytes(8, 64 * 1024, 1024) == 2 * memory.GiB
    # a 96-layer model of such layers needs about 400 GB
    total = table3.per_layer_estimate_bytes(
        96, params_per_layer=500_000_000, batch=8, length=64 * 1024, d_model=1024
    )
    assert total == 96 * (2 * table3.GB + 2 * memory.GiB)
    assert 390 * table3.GB < total < 410 * table3.GB
    # a 64K x 64K float32 attention matrix is 16GB (16 GiB exactly)
    assert table3.attention_matrix_bytes(64 * 1024) == 16 * memory.GiB
    assert table3.attention_matrix_bytes(64 * 1024, batch=2, n_heads=8) == 256 * memory.GiB


def test_transformer_activation_bytes_by_hand():
    # b=2, l=16, d=8, f=32, h=2, dh=4: per block 2*16*(32+32+64) + 2*2*256 = 4096 + 1024 = 5120
    got = table3.transformer_activation_bytes(2, 16, 8, 32, 2, 3, dtype_bytes=8)
    assert got == 3 * 5120 * 8
    # the output head adds 2 b l V once
    with_head = table3.transformer_activation_bytes(2, 16, 8, 32, 2, 3, vocab_size=10)
    assert with_head == (3 * 5120 + 2 * 2 * 16 * 10) * 4


# b=2, l=32, d_model=8, d_ff=48, n_h=2, n_l=3, n_r=2, C=4 (c = 8):
# b l d_ff = 3072, b n_h l^2 = 4096, b l d_model = 512, b n_h l n_r c = 2048 elements.
TABLE3_BY_HAND = {
    "transformer": max(3072, 4096) * 3,
    "reversible": max(3072, 4096),
    "chunked_reversible": max(512, 4096),
    "lsh": max(3072, 2048) * 3,
    "reformer": max(512, 2048),
}
SMALL = dict(batch=2, length=32, d_model=8, d_ff=48, n_heads=2, n_layers=3, n_hashes=2, chunk_len=4)


@pytest.mark.parametrize("arch", table3.TABLE3_ARCHS)
def test_table3_rows_by_hand(arch):
    assert table3.table3_memory(arch, **SMALL) == TABLE3_BY_HAND[arch] * 4
    assert table3.table3_memory(arch, **SMALL, dtype_bytes=8) == TABLE3_BY_HAND[arch] * 8


def test_table3_with_the_papers_c():
    # The paper writes c = 128^2; then the LSH term is b n_h l n_r 128^2.
    got = table3.table3_memory("reformer", **SMALL, c=128**2)
    assert got == 2 * 2 * 32 * 2 * 128**2 * 4


def test_table3_bad_input():
    with pytest.raises(ValueError, match="arch.*'performer'"):
        table3.table3_memory("performer", **SMALL)
    with pytest.raises(ValueError, match="n_layers"):
        table3.table3_memory("transformer", **{**SMALL, "n_layers": 0})
    with pytest.raises(ValueError, match="dtype_bytes"):
        table3.table3_memory("transformer", **SMALL, dtype_bytes=3)
    with pytest.raises(TypeError, match="length"):
        table3.table3_memory("transformer", **{**SMALL, "length": 3.5})


# ---------------------------------------------------------------------------------------------
# The stored-activation Transformer, measured against the count
# ---------------------------------------------------------------------------------------------


def test_stored_activation_memory_grows_linearly_with_depth():
    base = dict(vocab_size=32, d_model=32, n_heads=2, d_head=16, d_ff=128, max_len=128)
    tokens = np.random.default_rng(0).integers(0, 32, size=(1, 128))
    peaks = {}
    for n_layers in (2, 4, 8):
        config = transformer.TransformerConfig(**base, n_layers=n_layers)
        params = transformer.init_transformer(config, np.random.default_rng(1))
        peaks[n_layers] = memory.measure_training_step(
            transformer.loss_and_grads, params, tokens, config
        )[1]
    per_layer = table3.transformer_activation_bytes(1, 128, 32, 128, 2, 1, d_head=16)
    # equal steps in depth give equal steps in memory ...
    assert 1.9 < (peaks[8] - peaks[4]) / (peaks[4] - peaks[2]) < 2.1
    # ... of the size of one block's cached activations
    assert 0.95 < (peaks[8] - peaks[2]) / (6 * per_layer) < 1.15
    assert peaks[8] / peaks[2] > 2.5  # a fixed overhead (the head, backward temporaries) aside


# ---------------------------------------------------------------------------------------------
# The CuPy path, against a stand-in for CuPy's memory pool (no GPU needed)
# ---------------------------------------------------------------------------------------------


class _FakePool:
    """Counts used bytes like cupy's MemoryPool: malloc adds, freeing a block subtracts."""

    def __init__(self):
        self.used = 0

    def malloc(self, size):
        self.used += size
        return _FakeBlock(self, size)

    def used_bytes(self):
        return self.used


class _FakeBlock:
    def __init__(self, pool, size):
        self.pool, self.size = pool, size

    def free(self):
        self.pool.used -= self.size


def _fake_cupy():
    import contextlib
    import types

    pool = _FakePool()
    allocators = [pool.malloc]

    @contextlib.contextmanager
    def using_allocator(fn):
        allocators.append(fn)
        try:
            yield
        finally:
            allocators.pop()

    cupy = types.ModuleType("cupy")
    cupy.asarray = np.asarray
    cupy.get_default_memory_pool = lambda: pool
    cupy.cuda = types.SimpleNamespace(
        using_allocator=using_allocator,
        alloc=lambda size: allocators[-1](size),
        Device=lambda: types.SimpleNamespace(synchronize=lambda: None),
    )
    return cupy, pool


def test_measure_peak_on_the_cupy_backend_uses_the_pool(monkeypatch):
    from minireformer import backend

    cupy, pool = _fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(backend, "_xp", cupy)
    held = cupy.cuda.alloc(1000)  # allocated before the measurement: excluded

    def step():
        a = cupy.cuda.alloc(400)
        b = cupy.cuda.alloc(100)  # 500 bytes alive together
        a.free()
        cupy.cuda.alloc(300)  # 400 alive: below the peak
        b.free()
        return "done"

    assert memory.measure_peak(step) == ("done", 500)
    assert held.size == 1000 and not tracemalloc.is_tracing()
