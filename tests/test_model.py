"""The baseline Transformer LM (model.py): gradients, learning, causality, bad input."""

import numpy as np
import pytest

from minireformer import transformer
from minireformer.measuring import gradcheck
from minireformer.training import optim
from minireformer.tree import check_same_structure, leaves_with_paths


def tiny_config(**overrides):
    # d_head = 3 with 2 heads: H * Dh (6) need not equal d_model (8)
    base = dict(
        vocab_size=7, d_model=8, n_heads=2, d_head=3, d_ff=12, n_layers=2, max_len=7,
        dtype="float64",
    )  # fmt: skip
    return transformer.TransformerConfig(**{**base, **overrides})


def setup(config, batch=2, length=5, seed=0):
    rng = np.random.default_rng(seed)
    params = transformer.init_transformer(config, rng)
    tokens = rng.integers(0, config.vocab_size, size=(batch, length))
    return params, tokens, rng


# ---------------------------------------------------------------------------------------------
# Structure and gradients
# ---------------------------------------------------------------------------------------------


def test_param_tree_and_grads_mirror_each_other():
    config = tiny_config()
    params, tokens, _ = setup(config)
    assert len(params["blocks"]) == config.n_layers
    assert params["embed"]["tokens"].shape == (7, 8)
    assert params["embed"]["positions"].shape == (7, 8)
    assert params["blocks"][0]["attn"]["w_q"].shape == (8, 6)
    assert params["head"]["out"]["w"].shape == (8, 7)
    assert all(leaf.dtype == np.float64 for _, leaf in leaves_with_paths(params))
    loss, grads = transformer.loss_and_grads(params, tokens, config)
    assert isinstance(loss, float) and np.isfinite(loss)
    check_same_structure(params, grads)
    # the model reads 4 of the 5 tokens: positional rows 4.. (max_len = 7) get exactly zero gradient
    assert np.all(grads["embed"]["positions"][4:] == 0)
    assert np.all(np.abs(grads["embed"]["positions"][:4]).sum(axis=1) > 0)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("with_mask", [False, True])
def test_whole_lm_gradient_check(causal, with_mask):
    config = tiny_config(causal=causal)
    params, tokens, rng = setup(config)
    mask = None
    if with_mask:
        mask = np.array([[True, False, True, True], [False, False, True, False]])

    def f(p):
        return transformer.loss_and_grads(p, tokens, config, loss_mask=mask)

    # 12 random entries of every leaf (all of the small ones) keep the check to about a second
    error, per_leaf = gradcheck.check_tree(f, params, rng=rng, h=1e-5, max_entries_per_leaf=12)
    print(f"causal={causal} mask={with_mask}: rel error {error:.2e}")
    assert error < 1e-6, (error, max(per_leaf.items(), key=lambda kv: kv[1]))


def test_gradient_check_with_dropout_seeds_replayed():
    # With dropout the loss is deterministic given the Generator's state: each evaluation starts
    # from a fresh Generator with the same seed, so the masks are the same every time.
    config = tiny_config(dropout=0.3, n_layers=1)
    params, tokens, rng = setup(config)

    def f(p):
        return transformer.loss_and_grads(p, tokens, config, rng=np.random.default_rng(5))

    error, _ = gradcheck.check_tree(f, params, rng=rng, h=1e-5, max_entries_per_leaf=12)
    print(f"dropout 0.3: rel error {error:.2e}")
    assert error < 1e-6
    no_drop = transformer.loss_and_grads(params, tokens, tiny_config(n_layers=1))[0]
    assert f(params)[0] != no_drop  # dropout did change the computation


def test_loss_mask_selects_targets():
    config = tiny_config()
    params, tokens, _ = setup(config)
    logits = transformer.forward_logits(params, tokens, config)[:, :-1]  # (B, L-1, V)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]  # (B, L-1)
    assert np.isclose(transformer.loss_and_grads(params, tokens, config)[0], nll.mean(), atol=1e-12)
    mask = np.zeros(nll.shape, bool)
    mask[0, 1] = mask[1, 3] = True
    got = transformer.loss_and_grads(params, tokens, config, loss_mask=mask)[0]
    assert np.isclose(got, nll[mask].mean(), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Causality
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0, 3, 5])
def test_causal_logits_ignore_later_tokens(t):
    config = tiny_config(n_layers=3, max_len=8)
    params, tokens, _ = setup(config, length=8)
    changed = tokens.copy()
    changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % config.vocab_size
    a = transformer.forward_logits(params, tokens, config)
    b = transformer.forward_logits(params, changed, config)
    assert np.array_equal(a[:, : t + 1], b[:, : t + 1])
    assert not np.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_non_causal_logits_see_later_tokens():
    config = tiny_config(causal=False)
    params, tokens, _ = setup(config)
    changed = tokens.copy()
    changed[:, -1] = (changed[:, -1] + 1) % config.vocab_size
    a, b = (transformer.forward_logits(params, x, config) for x in (tokens, changed))
    assert not np.allclose(a[:, 0], b[:, 0])


# ---------------------------------------------------------------------------------------------
# Learning: a copy task that needs attention
# ---------------------------------------------------------------------------------------------


def copy_batch(rng, batch, word_len, vocab_size):
    """Sequences 0 w 0 w (the paper's duplication task, section 2.1), loss on the second w."""
    w = rng.integers(1, vocab_size, size=(batch, word_len))
    zero = np.zeros((batch, 1), dtype=w.dtype)
    tokens = np.concatenate([zero, w, zero, w], axis=1)  # (B, 2W + 2)
    mask = np.zeros((batch, 2 * word_len + 1), dtype=bool)
    mask[:, word_len + 1 :] = True  # targets of the second copy: unpredictable without attention
    return tokens, mask


COPY_STEPS, COPY_TARGET = 80, 0.01


def test_baseline_lm_learns_to_copy():
    vocab_size, word_len = 8, 4
    config = transformer.TransformerConfig(
        vocab_size=vocab_size, d_model=32, n_heads=2, d_head=16, d_ff=64, n_layers=1,
        max_len=2 * word_len + 2,
    )  # fmt: skip
    params = transformer.init_transformer(config, np.random.default_rng(0))
    adam = optim.Adam(lr=1e-2)
    state = adam.init(params)
    data = np.random.default_rng(1)
    losses = []
    for _ in range(COPY_STEPS):
        tokens, mask = copy_batch(data, 32, word_len, vocab_size)
        loss, grads = transformer.loss_and_grads(params, tokens, config, loss_mask=mask)
        adam.step(params, grads, state)
        losses.append(loss)
    assert losses[0] > 1.5  # about log(7): a uniform guess over the 7 word symbols
    assert min(losses[-10:]) < COPY_TARGET, losses[-10:]
    # and on fresh sequences, greedy predictions of the second copy are exact
    tokens, mask = copy_batch(np.random.default_rng(2), 64, word_len, vocab_size)
    pred = transformer.forward_logits(params, tokens, config)[:, :-1].argmax(-1)
    assert np.mean(pred[mask] == tokens[:, 1:][mask]) > 0.99


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["vocab_size", "d_model", "n_heads", "d_head", "d_ff", "n_layers", "max_len"]
)
@pytest.mark.parametrize("value", [0, -3])
def test_config_rejects_non_positive_sizes(field, value):
    with pytest.raises(ValueError, match=rf"{field}: expected a positive integer, got {value}"):
        tiny_config(**{field: value})


def test_config_rejects_bad_fields():
    with pytest.raises(TypeError, match="d_model.*2.5"):
        tiny_config(d_model=2.5)
    with pytest.raises(ValueError, match=r"dropout: expected a number in \[0, 1\), got 1.0"):
        tiny_config(dropout=1.0)
    with pytest.raises(ValueError, match="dtype.*'int32'"):
        tiny_config(dtype="int32")
    with pytest.raises(TypeError, match="causal"):
        tiny_config(causal="yes")


def test_tokens_out_of_range():
    config = tiny_config()
    params, tokens, _ = setup(config)
    bad = tokens.copy()
    bad[0, 2] = 7
    with pytest.raises(ValueError, match=r"tokens: expected token ids in \[0, 7\), got .*7\]"):
        transformer.loss_and_grads(params, bad, config)
    bad[0, 2] = -1
    with pytest.raises(ValueError, match="tokens"):
        transformer.forward_logits(params, bad, config)


def test_tokens_wrong_dtype_or_shape():
    config = tiny_config()
    params, tokens, _ = setup(config)
    with pytest.raises(TypeError, match="tokens: expected an integer array.*float64"):
        transformer.loss_and_grads(params, tokens.astype(np.float64), config)
    with pytest.raises(ValueError, match="tokens: expected 2 dimensions"):
        transformer.loss_and_grads(params, tokens[0], config)
    long = np.zeros((2, 9), dtype=np.int64)
    with pytest.raises(
        ValueError, match=r"tokens: expected length in \[2, max_len \+ 1 = 8\].*9\)"
    ):
        transformer.loss_and_grads(params, long, config)
    with pytest.raises(ValueError, match="tokens: expected length in"):
        transformer.loss_and_grads(params, tokens[:, :1], config)


def test_loss_mask_and_rng_errors():
    config = tiny_config()
    params, tokens, _ = setup(config)
    with pytest.raises(ValueError, match=r"loss_mask: expected shape \(2, 4\)"):
        transformer.loss_and_grads(params, tokens, config, loss_mask=np.ones((2, 5), bool))
    with pytest.raises(TypeError, match="loss_mask: expected a boolean"):
        transformer.loss_and_grads(params, tokens, config, loss_mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match="rng: expected a numpy.random.Generator"):
        transformer.loss_and_grads(params, tokens, tiny_config(dropout=0.1))


def test_non_finite_loss_is_an_error():
    config = tiny_config()
    params, tokens, _ = setup(config)
    params["head"]["out"]["b"][0] = np.inf  # a non-finite parameter is refused at the entry
    with pytest.raises(ValueError, match="params.head.out.b: expected finite values, got NaN"):
        transformer.loss_and_grads(params, tokens, config)
    params, tokens, _ = setup(config)
    w = params["head"]["out"]["w"]
    w[...] = np.sign(w) * 1e308  # finite parameters whose logits overflow to inf
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="loss: expected finite"):
        transformer.loss_and_grads(params, tokens, config)
    params, tokens, _ = setup(config)
    params["blocks"][0]["ff"]["w1"][0, 0] = np.nan  # caught by the next block's input check
    with pytest.raises(ValueError, match="expected finite values, got NaN or inf"):
        transformer.loss_and_grads(params, tokens, config)


def test_shared_qk_transformer_learns_the_same_interface():
    """shared_qk=True gives one w_qk projection and gradients that match finite differences."""
    cfg = transformer.TransformerConfig(
        vocab_size=7,
        d_model=8,
        n_heads=2,
        d_head=4,
        d_ff=16,
        n_layers=1,
        max_len=6,
        dtype="float64",
        shared_qk=True,
    )
    params = transformer.init_transformer(cfg, np.random.default_rng(0))
    assert "w_qk" in params["blocks"][0]["attn"] and "w_q" not in params["blocks"][0]["attn"]
    tokens = np.random.default_rng(1).integers(0, 7, (2, 6))
    err, _ = gradcheck.check_tree(
        lambda p: transformer.loss_and_grads(p, tokens, cfg), params, rng=np.random.default_rng(2)
    )
    assert err < 1e-6


def test_an_offset_window_gradient_checks_and_fills_only_its_rows():
    cfg = transformer.TransformerConfig(
        vocab_size=7, d_model=8, n_heads=2, d_head=4, d_ff=16, n_layers=1, max_len=12,
        dtype="float64",
    )  # fmt: skip
    params = transformer.init_transformer(cfg, np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 7, (2, 5))
    err, _ = gradcheck.check_tree(
        lambda p: transformer.loss_and_grads(p, tokens, cfg, offset=6), params,
        rng=np.random.default_rng(2),
    )  # fmt: skip
    assert err < 1e-6
    _, grads = transformer.loss_and_grads(params, tokens, cfg, offset=6)
    rows = np.abs(grads["embed"]["positions"]).sum(axis=1)
    assert np.all(rows[6:10] > 0) and rows[:6].sum() == 0 and rows[10:].sum() == 0  # 4 read
    with pytest.raises(ValueError, match="offset: expected offset \\+ length <= max_len=12"):
        transformer.loss_and_grads(params, tokens, cfg, offset=9)
