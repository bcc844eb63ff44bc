"""CPU against GPU: the same inputs, rotations and seeds give the same results on NumPy and CuPy.

Every test here needs CuPy and an NVIDIA GPU (the ``cupy`` fixture of conftest.py); elsewhere they
are skipped with the reason. Each builds its inputs on the host from fixed seeds inside the
function it compares, runs that function once on NumPy and once on CuPy, and compares every array
it returns: integers (bucket ids) exactly, floats to a relative error max|gpu - cpu| / max|cpu| of
1e-10 in float64 and 1e-4 in float32 (GPU reductions add in another order).
"""

import numpy as np
import pytest

from minireformer import attention, backend, layers, local_attention, lsh_attention, tree
from minireformer.measuring import memory
from minireformer.reformer_config import ReformerConfig
from minireformer.training import checkpoint, data, lm, sampling, settings, train

pytestmark = pytest.mark.gpu
DTYPES = ("float64", "float32")
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def on_both(fn):
    """``fn()`` on NumPy, then on CuPy: two lists of host arrays (the leaves of its results)."""
    results = []
    for name in ("numpy", "cupy"):
        backend.set_backend(name)
        results.append([np.asarray(backend.to_numpy(a)) for a in tree.leaves(fn())])
    backend.set_backend("numpy")
    return results


def assert_agree(cpu, gpu, dtype):
    assert len(cpu) == len(gpu)
    for i, (want, got) in enumerate(zip(cpu, gpu)):
        assert want.shape == got.shape, (i, want.shape, got.shape)
        if want.dtype.kind in "iub":
            np.testing.assert_array_equal(got, want, err_msg=f"result {i}")
            continue
        scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-30)
        err = float(np.max(np.abs(got - want), initial=0.0)) / scale
        assert err <= TOLERANCE[dtype], f"result {i}: relative error {err:.2e} ({dtype})"


def host_normal(seed, shape, dtype):
    """Standard normal numbers drawn on the host, moved to the current backend."""
    return backend.asarray(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def test_describe_names_the_gpu(cupy):
    backend.set_backend("cupy")
    assert backend.describe().startswith(f"CuPy {cupy.__version__} on ")


@pytest.mark.parametrize("dtype", DTYPES)
def test_layers_agree(cupy, dtype):
    def run():
        x = host_normal(0, (2, 8, 16), dtype)
        p = layers.init_feedforward(np.random.default_rng(1), 16, 32, dtype)
        dout = host_normal(2, (2, 8, 16), dtype)
        gamma, beta = host_normal(3, 16, dtype), host_normal(4, 16, dtype)
        ln, ln_cache = layers.layernorm_forward(x, gamma, beta)
        ff, ff_cache = layers.feedforward_forward(x, p, dropout=0.25, seed=3)
        return (
            ln,
            layers.layernorm_backward(dout, ln_cache),
            ff,
            layers.feedforward_backward(dout, ff_cache),
        )

    assert_agree(*on_both(run), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_full_and_local_attention_agree(cupy, dtype):
    def run():
        q, k, v = (host_normal(s, (2, 2, 24, 8), dtype) for s in (0, 1, 2))
        dout = host_normal(3, (2, 2, 24, 8), dtype)
        mask = backend.asarray(np.arange(24) < np.array([[24], [17]]))  # (B, L) padding
        full, full_cache = attention.attention_forward(q, k, v, causal=True, mask=mask)
        local, local_cache = local_attention.local_attention_forward(
            q, v, chunk_len=8, causal=True, mask=mask
        )
        return (
            full,
            attention.attention_backward(dout, full_cache),
            local,
            local_attention.local_attention_backward(dout, local_cache),
        )

    assert_agree(*on_both(run), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("released", [False, True])
def test_lsh_attention_agrees_for_the_same_rotations(cupy, dtype, released):
    """The same rotations give the same buckets (exactly), outputs and gradients."""

    def run():
        qk, v = host_normal(0, (2, 2, 40, 8), dtype), host_normal(1, (2, 2, 40, 8), dtype)
        rotations = host_normal(2, (2, 8, 3, 4), dtype)  # (H, Dh, R, K/2)
        out, cache = lsh_attention.lsh_attention_forward(
            qk,
            v,
            chunk_len=8,
            n_hashes=3,
            rotations=rotations,
            causal=True,
            semantics="released" if released else "paper",
        )
        dout = host_normal(3, out.shape, dtype)
        return cache.buckets, out, cache.lse, lsh_attention.lsh_attention_backward(dout, cache)

    assert_agree(*on_both(run), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", ["transformer", "reformer"])
def test_whole_model_losses_and_gradients_agree(cupy, tiny_models, dtype, which):
    """Both models (the Reformer with dropout): the same seeds give the same masks, rotations,
    losses and gradients."""
    config = tiny_models(dtype, max_len=24)[which == "reformer"]

    def run():
        params = lm.init_params(config, np.random.default_rng(0))
        tokens = backend.asarray(np.random.default_rng(1).integers(0, 11, size=(2, 24)))
        return lm.loss_and_grads(params, tokens, config, np.random.default_rng(2))

    assert_agree(*on_both(run), dtype)


TASK = data.DuplicationTask(n_symbols=7, word_len=7, eval_seed=99)  # L = 16, V = 8
TINY = ReformerConfig(
    vocab_size=8, d_model=16, n_heads=2, d_ff=32, n_layers=2, chunk_len=4, max_len=16
)
SETTINGS = settings.TrainConfig(
    steps=4, batch_size=4, warmup=2, eval_every=2, eval_batches=1, checkpoint_every=2, seed=5
)


def test_training_agrees_and_a_gpu_checkpoint_loads_on_the_cpu(cupy, tmp_path):
    """Four Adam steps in float32 (losses and weights agree), checkpointed on the GPU, loaded on
    the CPU as NumPy arrays, and the CPU-loaded weights sample the same tokens on both."""
    gpu_file = tmp_path / "gpu.npz"
    runs = {}
    for name, out in (("numpy", tmp_path / "cpu.npz"), ("cupy", gpu_file)):
        backend.set_backend(name)
        runs[name] = train.train(TINY, SETTINGS, TASK, out=out, progress=False)
    backend.set_backend("numpy")
    losses = [np.nan_to_num(runs[name].log[:, 1:4]) for name in ("numpy", "cupy")]  # NaN: no eval
    assert_agree(losses[:1], losses[1:], "float32")
    loaded = checkpoint.load(gpu_file)
    assert all(type(a) is np.ndarray for a in tree.leaves(loaded.params))
    assert_agree(
        tree.leaves(runs["numpy"].params),
        [backend.to_numpy(a) for a in tree.leaves(runs["cupy"].params)],
        "float32",
    )

    def sample():
        params = tree.map_tree(backend.asarray, loaded.params)
        return sampling.generate(params, TINY, np.array([0, 3]), 6, rng=np.random.default_rng(7))

    cpu, gpu = on_both(sample)
    np.testing.assert_array_equal(gpu[0], cpu[0])


def test_memory_is_measured_on_the_gpu(cupy):
    """CuPy's pool sees a known allocation (8 MB, in 512-byte blocks) and nothing from before."""
    backend.set_backend("cupy")
    held = cupy.ones(10**6)  # allocated before: excluded
    result, peak = memory.measure_peak(lambda: held * 2.0)
    assert peak == 8 * 10**6 and float(result[0]) == 2.0
