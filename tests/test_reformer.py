"""The Reformer LM (reformer.py) and its positional encodings (positional.py)."""

import numpy as np
import pytest

from minireformer import loss, positional
from minireformer.measuring import gradcheck, memory
from minireformer.reformer import forward_logits, init_reformer, loss_and_grads
from minireformer.reformer_config import ReformerConfig
from minireformer.tree import check_same_structure, leaves_with_paths, path_str


def tiny_config(**overrides):
    base = dict(
        vocab_size=11, d_model=8, n_heads=2, d_head=4, d_ff=12, n_layers=3,
        attention_types=("lsh", "local", "full"), n_hashes=2, chunk_len=4, causal=True,
        ff_chunk=5, loss_chunk=4, dropout=0.1, positional="axial", axial_shape=(4, 4),
        dtype="float64",
    )  # fmt: skip
    return ReformerConfig(**{**base, **overrides})


def setup(config, batch=2, length=13, seed=0):
    rng = np.random.default_rng(seed)
    params = init_reformer(config, rng)
    tokens = rng.integers(0, config.vocab_size, size=(batch, length))
    return params, tokens, rng


def step(config, params, tokens, seed=5, loss_mask=None):
    """One training step whose rotations and dropout seeds come from a fixed seed."""
    return loss_and_grads(params, tokens, config, np.random.default_rng(seed), loss_mask)


# ---------------------------------------------------------------------------------------------
# Parameters and gradients
# ---------------------------------------------------------------------------------------------


def test_param_tree_and_grads_mirror_each_other():
    config = tiny_config()
    params, tokens, _ = setup(config)
    assert set(params) == {"embed", "blocks", "head"}
    assert params["embed"]["tokens"].shape == (11, 8)
    assert params["embed"]["axial_1"].shape == (4, 4) and params["embed"]["axial_2"].shape == (4, 4)
    assert params["blocks"][0]["attn"]["w_qk"].shape == (8, 8)
    assert params["head"]["out"]["w"].shape == (16, 11)  # the two streams side by side
    assert all(leaf.dtype == np.float64 for _, leaf in leaves_with_paths(params))
    loss, grads = step(config, params, tokens)
    assert isinstance(loss, float) and np.isfinite(loss)
    check_same_structure(params, grads)


def test_whole_lm_gradient_check():
    """lsh, local and full layers, axial positions (L=13 < 4*4), chunked FF and loss, dropout,
    a loss mask."""
    config = tiny_config()
    params, tokens, rng = setup(config)
    mask = rng.random((2, 12)) < 0.6

    def f(p):  # rotations and dropout seeds drawn from a fixed seed: held fixed
        return step(config, p, tokens, loss_mask=mask)

    error, per_leaf = gradcheck.check_tree(f, params, rng=rng, h=1e-5, max_entries_per_leaf=4)
    assert error < 1e-6, (error, max(per_leaf.items(), key=lambda kv: kv[1]))


def test_learned_positions_gradient_check():
    config = tiny_config(positional="learned", max_len=16, attention_types=("lsh",), n_layers=2)
    params, tokens, rng = setup(config, length=10)
    assert params["embed"]["positions"].shape == (16, 8)
    error, _ = gradcheck.check_tree(
        lambda p: step(config, p, tokens), params, rng=rng, max_entries_per_leaf=5
    )
    assert error < 1e-6
    _, grads = step(config, params, tokens)
    assert np.all(grads["embed"]["positions"][10:] == 0)


def _assert_same(a, b, tol):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert abs(loss_a - loss_b) <= tol * abs(loss_a)
    ref = dict(leaves_with_paths(grads_b))
    for path, g in leaves_with_paths(grads_a):
        err = gradcheck.rel_error(g, ref[path])
        assert err < tol, (path_str(path), err)


def test_reversible_equals_stored_activations():
    """The same weights, rotations and dropout: reversal changes nothing (to 1e-9)."""
    config = tiny_config(n_layers=6, dropout=0.2)
    params, tokens, _ = setup(config, length=16)
    stored = tiny_config(n_layers=6, dropout=0.2, reversible=False)
    _assert_same(step(config, params, tokens), step(stored, params, tokens), 1e-9)


def test_chunked_equals_unchunked():
    """ff_chunk and loss_chunk change the memory, not the numbers (no dropout: same masks)."""
    config = tiny_config(dropout=0.0)
    params, tokens, _ = setup(config)
    whole = tiny_config(dropout=0.0, ff_chunk=None, loss_chunk=None)
    _assert_same(step(config, params, tokens), step(whole, params, tokens), 1e-12)


def test_forward_logits_give_the_training_loss():
    config = tiny_config(dropout=0.0)
    params, tokens, _ = setup(config)
    logits = forward_logits(params, tokens[:, :-1], config, np.random.default_rng(5))
    assert logits.shape == (2, 12, 11)  # the model reads tokens 0..11 and predicts 1..12
    value, _ = loss.softmax_cross_entropy_forward(logits, tokens[:, 1:])
    assert abs(float(value) - step(config, params, tokens)[0]) < 1e-12


def test_local_and_full_layers_are_causal():
    config = tiny_config(attention_types=("local", "full"), dropout=0.0)
    params, tokens, _ = setup(config)
    changed = tokens.copy()
    changed[:, 7:] = (changed[:, 7:] + 1) % config.vocab_size
    a = forward_logits(params, tokens, config)
    b = forward_logits(params, changed, config)
    np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-12)
    assert np.max(np.abs(a[:, 7:] - b[:, 7:])) > 1e-3


# ---------------------------------------------------------------------------------------------
# Memory: reversible layers do not grow with depth, stored activations do
# ---------------------------------------------------------------------------------------------


def _peak(n_layers, reversible):
    # activations dominate: 1024 positions, a wide ReLU feed-forward, a handful of tiny weights
    config = ReformerConfig(
        vocab_size=16, d_model=16, n_heads=2, d_head=8, d_ff=256, n_layers=n_layers,
        attention_types=("lsh", "local"), n_hashes=2, chunk_len=16, loss_chunk=128,
        max_len=1024, dtype="float64", activation="relu", reversible=reversible,
    )  # fmt: skip
    params = init_reformer(config, np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 16, size=(1, 1024))
    _, peak = memory.measure_training_step(
        loss_and_grads, params, tokens, config, np.random.default_rng(2)
    )
    return peak, memory.tree_nbytes(params)


def test_peak_memory_against_depth():
    rev = {n: _peak(n, True) for n in (2, 8)}
    stored = {n: _peak(n, False) for n in (2, 4, 8)}
    mb = {f"reversible {n}": f"{v[0] / 2**20:.2f} MiB" for n, v in rev.items()}
    mb.update({f"stored {n}": f"{v[0] / 2**20:.2f} MiB" for n, v in stored.items()})
    print(mb)
    # the gradients (of size params) are built during the step: small here by construction
    assert rev[8][1] < 0.1 * rev[8][0]
    # reversible: only one block's working memory at a time, whatever the depth
    assert rev[8][0] < 1.25 * rev[2][0], mb
    # stored activations: the peak is w + a N, one block's backward working memory w (the same at
    # any depth) plus a per layer. Measured at 2 and 4 layers, the line predicts 8 layers: the
    # activations a N grow 4x from 2 to 8 layers (the peak, which includes w, about 3x).
    per_layer = (stored[4][0] - stored[2][0]) / 2
    working = stored[2][0] - 2 * per_layer
    predicted_8 = working + 8 * per_layer
    assert abs(stored[8][0] - predicted_8) < 0.05 * (8 * per_layer), mb
    assert 0 < working < 2 * per_layer, mb
    assert stored[8][0] > 2.5 * stored[2][0], mb


# ---------------------------------------------------------------------------------------------
# Axial positional embeddings
# ---------------------------------------------------------------------------------------------


def test_axial_layout_matches_the_broadcast_grid():
    rng = np.random.default_rng(1)
    p = positional.init_axial(rng, (3, 4), (2, 5), dtype="float64")
    e1, e2 = p["axial_1"], p["axial_2"]
    full, _ = positional.axial_forward(p, 12)
    assert full.shape == (12, 7)
    for i in range(3):
        for j in range(4):
            np.testing.assert_array_equal(full[i * 4 + j], np.concatenate([e1[i], e2[j]]))
    for length in (1, 4, 5, 11):
        np.testing.assert_array_equal(positional.axial_forward(p, length)[0], full[:length])


@pytest.mark.parametrize("length", [1, 4, 7, 12])
def test_axial_gradient_check(length):
    rng = np.random.default_rng(2)
    p = positional.init_axial(rng, (3, 4), (2, 3), dtype="float64")

    def forward(e1, e2):
        return positional.axial_forward({"axial_1": e1, "axial_2": e2}, length)

    def backward(dout, cache):
        g = positional.axial_backward(dout, cache)
        return g["axial_1"], g["axial_2"]

    errors = gradcheck.check_op(forward, backward, [p["axial_1"], p["axial_2"]], rng=rng)
    assert max(errors.values()) < 1e-7, errors


def test_axial_rows_past_the_length_get_zero_gradient():
    p = positional.init_axial(np.random.default_rng(3), (4, 3), (2, 2), dtype="float64")
    _, cache = positional.axial_forward(p, 5)  # grid rows 0 and 1 are touched
    g = positional.axial_backward(np.ones((5, 4)), cache)
    np.testing.assert_array_equal(g["axial_1"], [[3, 3], [2, 2], [0, 0], [0, 0]])
    np.testing.assert_array_equal(g["axial_2"], [[2, 2], [2, 2], [1, 1]])


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(d_model=9, d_head=None), "d_model"),
        (dict(ff_chunk=0), "ff_chunk"),
        (dict(loss_chunk=-1), "loss_chunk"),
        (dict(chunk_len=0), "chunk_len"),
        (dict(axial_shape=(4, 4), max_len=17), "axial_shape"),
        (dict(axial_shape=None), "axial_shape"),
        (dict(axial_dims=(3, 4)), "axial_dims"),
        (dict(attention_types=("lsh", "sparse")), "attention_types"),
        (dict(attention_types=()), "attention_types"),
        (dict(attention_types="lsh"), "attention_types"),
        (dict(n_buckets=5), "n_buckets"),
        (dict(dropout=1.0), "dropout"),
        (dict(positional="rotary"), "positional"),
        (dict(positional="learned", max_len=None), "max_len"),
        (dict(dtype="float16"), "dtype"),
        (dict(n_layers=0), "n_layers"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


@pytest.mark.parametrize("field", ["causal", "reversible"])
def test_truthy_non_bool_switches_are_refused(field):
    with pytest.raises(TypeError, match=f"^{field}: expected True or False, got 'no'"):
        tiny_config(**{field: "no"})


def test_bad_call_inputs():
    config = tiny_config()
    params, tokens, rng = setup(config)
    with pytest.raises(ValueError, match="tokens"):
        step(config, params, tokens + config.vocab_size)
    with pytest.raises(ValueError, match="tokens"):
        step(config, params, np.zeros((2, 18), dtype=int))  # reads 17 > 4 * 4 positions
    with pytest.raises(ValueError, match="tokens"):
        step(config, params, tokens[:, :1])
    with pytest.raises(ValueError, match="loss_mask"):
        step(config, params, tokens, loss_mask=np.ones((2, 13), bool))
    with pytest.raises(TypeError, match="rng"):
        loss_and_grads(params, tokens, config)  # LSH layers need a Generator
    with pytest.raises(ValueError, match="params"):
        step(tiny_config(n_layers=4), params, tokens)
    with pytest.raises(TypeError, match="config"):
        loss_and_grads(params, tokens, {"d_model": 8}, rng)


def test_semantics_switches_reach_the_lsh_layers():
    """ReformerConfig's semantics reaches the LSH layers' output; parameters are shared."""
    import dataclasses

    cfg = ReformerConfig(
        vocab_size=11,
        d_model=8,
        n_heads=2,
        d_ff=16,
        n_layers=1,
        chunk_len=4,
        max_len=32,
        n_hashes=2,
        dtype="float64",
    )
    params = init_reformer(cfg, np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 11, (2, 32))
    paper = forward_logits(params, tokens, cfg, np.random.default_rng(2))
    released_cfg = dataclasses.replace(cfg, semantics="released")
    released = forward_logits(params, tokens, released_cfg, np.random.default_rng(2))
    assert np.abs(paper - released).max() > 1e-6
    again = forward_logits(params, tokens, cfg, np.random.default_rng(2))
    assert np.array_equal(paper, again)
    with pytest.raises(ValueError, match="semantics: expected one of"):
        dataclasses.replace(cfg, semantics="yes")
    # evaluating with more rounds or full attention needs no new parameters
    for other in (
        dataclasses.replace(cfg, n_hashes=8),
        dataclasses.replace(cfg, attention_types=("full",)),
    ):
        assert forward_logits(params, tokens, other, np.random.default_rng(2)).shape == paper.shape


@pytest.mark.parametrize("positional_type", ["axial", "learned"])
def test_an_offset_window_uses_and_trains_only_its_own_positions(positional_type):
    """offset=o embeds the positions o..o+L-2 the model reads: gradients check, and the rows
    outside the window get zero (every row inside is trained: the last token is only a target)."""
    config = tiny_config(positional=positional_type, max_len=16, n_layers=2)
    params, tokens, rng = setup(config, length=6)

    def f(p):
        return loss_and_grads(p, tokens, config, np.random.default_rng(5), offset=7)

    error, _ = gradcheck.check_tree(f, params, rng=rng, max_entries_per_leaf=4)
    assert error < 1e-6
    _, grads = f(params)
    if positional_type == "learned":
        rows = np.abs(grads["embed"]["positions"]).sum(axis=1)
        assert np.all(rows[7:12] > 0) and np.all(rows[:7] == 0) and np.all(rows[12:] == 0)
    else:  # positions 7..11 of a 4 x 4 grid: rows 1 and 2 of the first table
        rows = np.abs(grads["embed"]["axial_1"]).sum(axis=1)
        assert rows[0] == 0 and np.all(rows[1:3] > 0) and rows[3] == 0
    with pytest.raises(ValueError, match="offset: expected offset \\+ length <= max_len=16"):
        loss_and_grads(params, tokens, config, np.random.default_rng(5), offset=12)


def test_axial_offset_is_a_slice_of_the_whole_table():
    p = positional.init_axial(np.random.default_rng(1), (3, 4), (2, 5), dtype="float64")
    full, _ = positional.axial_forward(p, 12)
    for offset, length in ((0, 12), (3, 2), (5, 7), (11, 1), (4, 4)):
        window, cache = positional.axial_forward(p, length, offset)
        np.testing.assert_array_equal(window, full[offset : offset + length])
        dpos = np.random.default_rng(offset).standard_normal(window.shape)
        g = positional.axial_backward(dpos, cache)
        padded = np.zeros_like(full)
        padded[offset : offset + length] = dpos
        whole = positional.axial_backward(padded, positional.axial_forward(p, 12)[1])
        np.testing.assert_allclose(g["axial_1"], whole["axial_1"], atol=1e-15)
        np.testing.assert_allclose(g["axial_2"], whole["axial_2"], atol=1e-15)


def test_sinusoidal_positions_follow_the_formula_and_slice_by_offset():
    table = positional.sinusoidal(50, 6, dtype="float64")
    p, k = 37, 1  # column 2k holds sin(p / 10000^(2k/D)), column 2k+1 the cosine
    assert table[p, 2 * k] == pytest.approx(np.sin(p / 10000 ** (2 * k / 6)) / 6**0.5)
    assert table[p, 2 * k + 1] == pytest.approx(np.cos(p / 10000 ** (2 * k / 6)) / 6**0.5)
    np.testing.assert_array_equal(positional.sinusoidal(10, 6, 20, "float64"), table[20:30])
    assert positional.sinusoidal(4, 5).shape == (4, 5)  # odd widths: one more sine than cosine


def test_sinusoidal_reformer_has_no_position_parameters_and_checks_gradients():
    config = tiny_config(positional="sinusoidal", max_len=32, n_layers=2)
    params, tokens, rng = setup(config, length=9)
    assert set(params["embed"]) == {"tokens"}
    error, _ = gradcheck.check_tree(
        lambda p: loss_and_grads(p, tokens, config, np.random.default_rng(5), offset=11),
        params, rng=rng, max_entries_per_leaf=4,
    )  # fmt: skip
    assert error < 1e-6
