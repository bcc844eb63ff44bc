"""The backend: NumPy by default, CuPy on request, and no hot path that bypasses it."""

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from minireformer import backend, checks
from minireformer.reformer_config import ReformerConfig

PACKAGE = Path(__file__).resolve().parents[1] / "minireformer"
# Host-side modules that may use NumPy directly: they measure, plot, prepare data, keep the
# training loop's books (Generators, logs, checkpoint files), draw samples or grade exercises on
# the CPU. Their arrays reach the model through backend.asarray and leave it through to_numpy.
HOST_MODULES = {  # modules of the package root that compute on the host by design
    "backend.py",  # it chooses the array module
    "reference.py",  # the plain NumPy versions the fast code is tested against
}


@pytest.fixture
def restore_backend():
    yield
    backend.set_backend("numpy")


def test_default_backend_is_numpy():
    assert backend.get_xp() is np


def test_unknown_backend_name_is_rejected(restore_backend):
    with pytest.raises(ValueError, match="backend: expected one of"):
        backend.set_backend("torch")


def test_missing_cupy_names_the_package_to_install(restore_backend):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed here")
    with pytest.raises(RuntimeError, match="cupy-cuda12x"):
        backend.set_backend("cupy")


def test_environment_variable_selects_backend():
    code = "import minireformer.backend as b; b.get_xp()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"MINIREFORMER_BACKEND": "nonsense", "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "nonsense" in result.stderr


def test_importing_the_package_does_not_import_cupy():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__main__")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('minireformer.' + m)\n"
        "print('cupy' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_to_numpy_and_asarray_round_trip():
    x = backend.asarray([[1.0, 2.0]])
    assert isinstance(backend.to_numpy(x), np.ndarray)
    np.testing.assert_array_equal(backend.to_numpy(x), [[1.0, 2.0]])


def test_check_rng_rejects_legacy_random_state():
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        checks.check_rng(np.random.RandomState(0))


def _numpy_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "numpy"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "numpy":
            found.append(node.module)
    return found


def test_hot_path_modules_never_import_numpy():
    """Static scan: library code gets its array module from the backend, never from numpy."""
    scanned = [p for p in sorted(PACKAGE.glob("*.py")) if p.name not in HOST_MODULES]
    assert len(scanned) >= 5, "the scan found too few modules to mean anything"
    offenders = {p.name: imps for p in scanned if (imps := _numpy_imports(p))}
    assert offenders == {}


class CountingNumpy:
    """A thin wrapper around NumPy that counts the functions the library asks it for."""

    def __init__(self):
        self.calls = {}

    def __getattr__(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1
        return getattr(np, name)


def _train_steps(configs):
    """One training step of the baseline and of the Reformer of ``configs`` (conftest's
    tiny_models: lsh, local and full layers)."""
    from minireformer.training import lm

    tokens = backend.asarray(np.random.default_rng(0).integers(0, 11, size=(2, 12)))
    results = ()
    for seed, config in enumerate(configs):
        params = lm.init_params(config, np.random.default_rng(seed + 1))
        results += lm.loss_and_grads(params, tokens, config, np.random.default_rng(3))
    return results


def test_training_steps_run_through_the_backend_module(restore_backend, tiny_models):
    """Under a counting wrapper as the backend, both models give bit-identical results and the
    wrapper sees the array work; with the static scan above, nothing reaches NumPy around it."""
    from minireformer import tree

    expected = _train_steps(tiny_models())
    wrapper = CountingNumpy()
    backend.set_backend(wrapper)
    got = _train_steps(tiny_models())
    assert got[0] == expected[0] and got[2] == expected[2]
    for a, b in zip(tree.leaves(got[1:]), tree.leaves(expected[1:]), strict=True):
        np.testing.assert_array_equal(a, b)
    used = set(wrapper.calls)
    assert {"matmul", "exp", "tanh", "argsort", "argmax"} <= used, sorted(used)
    assert sum(wrapper.calls.values()) > 100


def test_both_models_train_on_each_available_backend(backend_name, tiny_models):
    """Parametrised over the backends (conftest.py): the CuPy case is skipped without a GPU."""
    from minireformer import tree

    got = _train_steps(tiny_models())
    assert all(backend.array_module(g) is backend.get_xp() for g in tree.leaves(got[1:]))


def test_describe_names_numpy_and_its_version():
    assert backend.describe() == f"NumPy {np.__version__} on the CPU"


def test_describe_names_a_stand_in_module(restore_backend):
    backend.set_backend(CountingNumpy())
    assert backend.describe().startswith("CountingNumpy, a stand-in")


def test_describe_names_the_gpu_under_cupy(restore_backend):
    """CuPy's device properties give the name as bytes and the memory in bytes."""
    runtime = SimpleNamespace(
        getDeviceProperties=lambda i: {"name": b"NVIDIA H200", "totalGlobalMem": 150_100_000_000}
    )
    fake = ModuleType("cupy")
    fake.__version__ = "14.0.0"
    fake.asarray = np.asarray
    fake.cuda = SimpleNamespace(Device=lambda: SimpleNamespace(id=0), runtime=runtime)
    backend.set_backend(fake)
    assert backend.describe() == "CuPy 14.0.0 on NVIDIA H200 (139 GiB)"


# ---------------------------------------------------------------------------------------------
# The CuPy code paths, on the CuPy stand-in (fake_cupy.FakeCupy)
# ---------------------------------------------------------------------------------------------


def test_the_cupy_stand_in_refuses_what_cupy_refuses(fake_cupy):
    """The stand-in is only a check if it fails where CuPy fails."""
    x = backend.asarray([1.0, 2.0])
    assert backend.array_module(x) is fake_cupy
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(x)
    with pytest.raises(TypeError, match="Unsupported type"):
        x + np.ones(2)
    with pytest.raises(TypeError, match="Unsupported type"):
        fake_cupy.matmul(np.ones(2), x)
    assert isinstance(backend.to_numpy(x), np.ndarray) and fake_cupy.explicit_transfers == 1
    assert float(fake_cupy.sum(x)) == 3.0 and fake_cupy.implicit_transfers == 1
    assert backend.describe() == "CuPy 0.0-stand-in on Fake GPU (16 GiB)"


def test_training_steps_on_the_cupy_stand_in_match_numpy(fake_cupy, tiny_models):
    """Both models (lsh, local and full attention, chunking, dropout, reversible blocks): the
    same losses and gradients as on NumPy, and every gradient stays on the device."""
    from minireformer import tree

    backend.set_backend("numpy")
    expected = _train_steps(tiny_models())
    backend.set_backend(fake_cupy)
    got = _train_steps(tiny_models())
    assert got[0] == expected[0] and got[2] == expected[2]
    for a, b in zip(tree.leaves(got[1:]), tree.leaves(expected[1:]), strict=True):
        assert backend.array_module(a) is fake_cupy
        np.testing.assert_array_equal(backend.to_numpy(a), b)


def _tiny_run(out, progress=False):
    """Six steps of a one-layer LSH Reformer on the duplication task, checkpointed to ``out``."""
    from minireformer.training import data, settings, train

    config = ReformerConfig(
        vocab_size=8, d_model=16, n_heads=2, d_ff=32, n_layers=1, chunk_len=4, max_len=16
    )
    settings = settings.TrainConfig(
        steps=6, batch_size=4, warmup=2, eval_every=3, eval_batches=1, checkpoint_every=3, seed=5
    )
    task = data.DuplicationTask(n_symbols=7, word_len=7, eval_seed=99)
    return train.train(config, settings, task, out=out, progress=progress)


def test_training_on_the_cupy_stand_in_matches_numpy_and_syncs_little(fake_cupy, tmp_path):
    """Training (Adam, evaluation, progress bar, checkpoints) on the device gives NumPy's run,
    and the host waits for the device a bounded number of times per step: the loss, the gradient
    norm and the checks at the public boundaries (about 30 a step for this one-layer model).
    A finiteness check per parameter array (17 of them) would add 17 a step and fail here."""
    from minireformer import tree

    backend.set_backend("numpy")
    expected = _tiny_run(tmp_path / "cpu.npz")
    backend.set_backend(fake_cupy)
    got = _tiny_run(tmp_path / "gpu.npz", progress=True)
    np.testing.assert_array_equal(got.log[:, :4], expected.log[:, :4])
    for a, b in zip(tree.leaves(got.params), tree.leaves(expected.params), strict=True):
        assert backend.array_module(a) is fake_cupy
        np.testing.assert_array_equal(backend.to_numpy(a), b)
    assert fake_cupy.implicit_transfers <= 40 * got.step, fake_cupy.implicit_transfers


def test_a_checkpoint_written_on_the_device_loads_on_the_host_and_back(fake_cupy, tmp_path):
    from minireformer import tree
    from minireformer.training import checkpoint

    run = _tiny_run(tmp_path / "run.npz")
    on_device = checkpoint.load(tmp_path / "run.npz")
    backend.set_backend("numpy")
    on_host = checkpoint.load(tmp_path / "run.npz")
    for a, b, c in zip(*(tree.leaves(r) for r in (run.params, on_host.params, on_device.params))):
        assert type(b) is np.ndarray and backend.array_module(c) is fake_cupy
        np.testing.assert_array_equal(b, backend.to_numpy(a))
        np.testing.assert_array_equal(b, backend.to_numpy(c))


def test_sampling_on_the_cupy_stand_in_matches_numpy(fake_cupy):
    from minireformer import tree
    from minireformer.training import sampling

    run = _tiny_run(None)

    def sample(params):
        return sampling.generate(
            params, run.config, np.array([0, 3]), 5, rng=np.random.default_rng(7), top_k=3
        )

    on_device = sample(run.params)
    backend.set_backend("numpy")
    np.testing.assert_array_equal(on_device, sample(tree.map_tree(backend.to_numpy, run.params)))


def test_memory_is_measured_from_the_cupy_pool(fake_cupy):
    """memory.measure_peak on CuPy watches the pool through cupy.cuda.using_allocator: arrays
    from before are excluded, temporaries count while alive, nested calls see their own peak
    and raise the enclosing one."""
    from minireformer.measuring import memory

    held = fake_cupy.ones(10**6)  # 8 MB allocated before the measurements
    mb8 = 8 * 10**6  # a multiple of the pool's 512-byte blocks

    def inner():
        return fake_cupy.ones(10**6)[:1]  # 8 MB, kept alive by the returned view

    def outer():
        x = fake_cupy.ones(10**6)  # 8 MB alive while inner runs
        _, inner_peak = memory.measure_peak(inner)
        return inner_peak, x[:1]

    assert memory.measure_peak(lambda: (held * 2.0) * 3.0)[1] == 2 * mb8  # temporary + result
    (inner_peak, _), outer_peak = memory.measure_peak(outer)
    assert inner_peak == mb8 and outer_peak == 2 * mb8


def test_the_gpu_comparisons_run_against_the_cupy_stand_in():
    """tests/test_gpu.py, skipped without a GPU, is itself run here with the stand-in as cupy
    (conftest's MINIREFORMER_TEST_FAKE_CUPY): every comparison runs, none is skipped."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            str(Path(__file__).with_name("test_gpu.py")),
        ],
        env={**os.environ, "MINIREFORMER_TEST_FAKE_CUPY": "1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-500:]
