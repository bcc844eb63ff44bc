"""The backend: NumPy by default, CuPy on request, and no hot path that bypasses it."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from minireformer import backend

PACKAGE = Path(__file__).resolve().parents[1] / "minireformer"
# Host-side modules that may use NumPy directly: they measure, plot, prepare data, keep the
# training loop's books (Generators, logs, checkpoint files) or draw samples on the CPU. Their
# arrays reach the model through backend.asarray.
HOST_MODULES = {
    "backend.py",
    "memory.py",
    "plotting.py",
    "data.py",
    "checkpoint.py",
    "train.py",
    "sampling.py",
    "cli.py",
    "experiments.py",
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
        backend.check_rng(np.random.RandomState(0))


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


def _train_steps():
    """One training step of the baseline and of a Reformer with lsh, local and full layers."""
    from minireformer import model, reformer

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 11, size=(2, 12))
    tcfg = model.TransformerConfig(
        vocab_size=11, d_model=16, n_heads=2, d_head=8, d_ff=32, n_layers=2, max_len=12
    )
    tparams = model.init_transformer(tcfg, np.random.default_rng(1))
    rcfg = reformer.ReformerConfig(
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
        max_len=12,
    )
    rparams = reformer.init_reformer(rcfg, np.random.default_rng(2))
    t_loss, t_grads = model.loss_and_grads(tparams, tokens, tcfg)
    r_loss, r_grads = reformer.loss_and_grads(rparams, tokens, rcfg, np.random.default_rng(3))
    return t_loss, t_grads, r_loss, r_grads


def test_training_steps_run_through_the_backend_module(restore_backend):
    """Under a counting wrapper as the backend, both models give bit-identical results and the
    wrapper sees the array work; with the static scan above, nothing reaches NumPy around it."""
    from minireformer import tree

    expected = _train_steps()
    wrapper = CountingNumpy()
    backend.set_backend(wrapper)
    got = _train_steps()
    assert got[0] == expected[0] and got[2] == expected[2]
    for a, b in zip(tree.leaves(got[1:]), tree.leaves(expected[1:]), strict=True):
        np.testing.assert_array_equal(a, b)
    used = set(wrapper.calls)
    assert {"matmul", "exp", "tanh", "argsort", "argmax"} <= used, sorted(used)
    assert sum(wrapper.calls.values()) > 100


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
