"""Checkpoints: round trip, atomic writes, and a named error for every unusable file."""

import json
import zipfile

import numpy as np
import pytest

from minireformer.reformer_config import ReformerConfig
from minireformer.training import checkpoint, lm
from minireformer.training.optim import Adam
from minireformer.transformer import TransformerConfig
from minireformer.tree import leaves

CFG = ReformerConfig(
    vocab_size=11,
    d_model=8,
    n_heads=2,
    d_ff=16,
    n_layers=2,
    chunk_len=4,
    max_len=16,
    attention_types=("lsh", "local"),
    n_hashes=2,
)


def saved(tmp_path, config=CFG, name="ck.npz", **kw):
    params = lm.init_params(config, np.random.default_rng(0))
    state = Adam(lr=1e-3).init(params)
    rng = np.random.default_rng(42)
    rng.standard_normal(3)  # move it off its seed state
    path = checkpoint.save(
        tmp_path / name,
        params=params,
        config=config,
        step=7,
        adam_state=state,
        rngs={"data": rng},
        log=np.ones((3, 5)),
        train={"lr": 1e-3},
        data={"task": "duplication"},
        **kw,
    )
    return path, params, rng


def test_round_trip_keeps_everything(tmp_path):
    path, params, rng = saved(tmp_path)
    ck = checkpoint.load(path)
    assert ck.config == CFG and ck.step == 7 and ck.adam_state["step"] == 7
    for a, b in zip(leaves(params), leaves(ck.params)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert np.array_equal(ck.generator("data").standard_normal(4), rng.standard_normal(4))
    assert ck.log.shape == (3, 5) and ck.train == {"lr": 1e-3}
    with np.load(path, allow_pickle=False) as z:  # plain arrays only: no pickle needed
        assert "meta" in z.files and json.loads(str(z["meta"]))["format"] == checkpoint.FORMAT


def test_a_crash_while_writing_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path, _, _ = saved(tmp_path)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint.np, "savez", crash)
    with pytest.raises(OSError, match="simulated"):
        saved(tmp_path)
    assert path.read_bytes() == before and checkpoint.load(path).step == 7
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temporary file left


def test_truncated_or_corrupt_files_are_named(tmp_path):
    path, _, _ = saved(tmp_path)
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:500])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupt"):
        checkpoint.load(tmp_path / "cut.npz")
    (tmp_path / "noise.npz").write_bytes(b"not a checkpoint at all")
    with pytest.raises(checkpoint.CheckpointError, match="not a minireformer checkpoint"):
        checkpoint.load(tmp_path / "noise.npz")
    with pytest.raises(FileNotFoundError, match="no file"):
        checkpoint.load(tmp_path / "absent.npz")


def _rewrite(path, out, drop=(), replace=None):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in drop}
    arrays.update(replace or {})
    with open(out, "wb") as f:
        np.savez(f, **arrays)
    return out


def test_missing_or_misshapen_arrays_and_bad_configs_are_named(tmp_path):
    path, _, _ = saved(tmp_path)
    key = "params/blocks[1].attn.w_qk"
    with zipfile.ZipFile(path) as z:
        assert key + ".npy" in z.namelist()
    miss = _rewrite(path, tmp_path / "miss.npz", drop=[key])
    with pytest.raises(checkpoint.CheckpointError, match=r"missing array 'params/blocks\[1\]"):
        checkpoint.load(miss)
    shape = _rewrite(path, tmp_path / "shape.npz", replace={key: np.zeros((8, 4), np.float32)})
    with pytest.raises(checkpoint.CheckpointError, match=r"shape \(8, 4\).*expects \(8, 8\)"):
        checkpoint.load(shape)
    meta = json.loads(str(np.load(path)["meta"]))
    meta["model"]["d_model"] = "eight"
    bad = _rewrite(path, tmp_path / "bad.npz", replace={"meta": np.array(json.dumps(meta))})
    with pytest.raises(checkpoint.CheckpointError, match="model config is invalid: d_model"):
        checkpoint.load(bad)


def test_another_config_or_model_kind_is_refused_when_expected(tmp_path):
    path, _, _ = saved(tmp_path)
    import dataclasses

    with pytest.raises(checkpoint.CheckpointError, match="n_heads=2 .expected 4."):
        checkpoint.load(path, expect_config=dataclasses.replace(CFG, n_heads=4, d_head=None))
    tcfg = TransformerConfig(
        vocab_size=11, d_model=8, n_heads=2, d_head=4, d_ff=16, n_layers=2, max_len=16
    )
    with pytest.raises(checkpoint.CheckpointError, match="holds a reformer model, expected a "):
        checkpoint.load(path, expect_config=tcfg)
    assert checkpoint.load(path, expect_config=CFG).step == 7


def test_weights_only_files_have_no_optimizer_state(tmp_path):
    params = lm.init_params(CFG, np.random.default_rng(0))
    path = checkpoint.save(tmp_path / "w.npz", params=params, config=CFG, step=3)
    ck = checkpoint.load(path)
    assert ck.adam_state is None and ck.step == 3
    with pytest.raises(checkpoint.CheckpointError, match="no random state 'data'"):
        ck.generator("data")
