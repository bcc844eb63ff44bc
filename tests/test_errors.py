"""Bad input gives a clear error, never a silently wrong result.

The table below lists mistaken or edge-case calls against the public API, each with the error type
and a fragment of the message it must raise: the message names the argument, what was expected and
what was got. The cases that are not errors (NumPy scalars, huge but finite vectors, a gradient
check that restores its input) follow, then a hypothesis property test: random valid small
configurations and inputs never give a non-finite output or a dtype other than the one asked for.
"""

import copy
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minireformer import attention as A
from minireformer import attention_sublayer as S
from minireformer import chunking as Ch
from minireformer import embedding as Em
from minireformer import feedforward_sublayer as G
from minireformer import layers as Ly
from minireformer import local_attention as CA
from minireformer import loss as Lo
from minireformer import lsh
from minireformer import lsh_attention as LA
from minireformer import multihead_attention as MHA
from minireformer import reformer as R
from minireformer import transformer as M
from minireformer.measuring import gradcheck as GC
from minireformer.reformer_config import ReformerConfig
from minireformer.training import optim as O
from minireformer.tree import leaves


def g(seed=0):
    return np.random.default_rng(seed)


Q = g(0).standard_normal((1, 2, 8, 4)).astype(np.float32)  # (B, H, L, Dh)
Q64 = Q.astype(np.float64)
EMPTY_B, EMPTY_L = np.zeros((0, 2, 8, 4), np.float32), np.zeros((1, 2, 0, 4), np.float32)
C = ReformerConfig(
    vocab_size=11, d_model=8, n_heads=2, d_ff=16, n_layers=2, chunk_len=4, max_len=16
)
PM = R.init_reformer(C, g(0))
TOK = g(2).integers(0, 11, (2, 12))
TC = M.TransformerConfig(
    vocab_size=11, d_model=8, n_heads=2, d_head=4, d_ff=16, n_layers=1, max_len=16
)
TP = M.init_transformer(TC, g(0))
LSH = dict(chunk_len=4, rng=g(1))


def _with(tree, path, value):
    """A deep copy of ``tree`` with the leaf at ``path`` replaced (or removed if value is None)."""
    tree = copy.deepcopy(tree)
    node = tree
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return tree


def _nan_at(tree, path):
    leaf = copy.deepcopy(tree)
    node = leaf
    for key in path:
        node = node[key]
    node.reshape(-1)[0] = np.nan
    return leaf


def _cache(forward, *args, **kwargs):
    return forward(*args, **kwargs)[1]


def _lsh_cache(length):
    x = g(3).standard_normal((1, 2, length, 4))
    return _cache(LA.lsh_attention_forward, x, x, chunk_len=4, rng=g(4))


def _block():
    return R.build_blocks(ReformerConfig(**{**vars(C), "n_layers": 1, "d_head": None}))[0]


def _reverse_with_another_calls_record():
    block, p = _block(), PM["blocks"][0]
    x = g(5).standard_normal((2, 12, 8)).astype(np.float32)
    _, _, record = block.forward(x, x, p, g(6))
    y1, y2, _ = block.forward(x[::-1].copy(), x[::-1].copy(), p, g(6))  # same shape, other call
    return block.reverse(y1, y2, p, record)


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


X32 = np.ones((2, 3), np.float32)
W64 = np.ones((3, 4), np.float64)

# (id, call, error type, message fragment)
CASES = [
    # --- silently wrong before: float16 ----------------------------------------------------------
    ("lsh-float16", lambda: LA.lsh_attention_forward(Q.astype(np.float16), Q.astype(np.float16),
     causal=True, **LSH), TypeError, "qk: expected dtype float32 or float64 (the supported"),
    ("full-float16", lambda: A.attention_forward(*(3 * [Q.astype(np.float16)])), TypeError,
     "q: expected dtype float32 or float64"),
    ("local-float16", lambda: CA.local_attention_forward(Q.astype(np.float16),
     Q.astype(np.float16), chunk_len=4), TypeError, "qk: expected dtype float32 or float64"),
    ("init-float16", lambda: MHA.init_multihead_attention(g(), 8, 2, 4, "float16"), TypeError,
     "dtype: expected a floating-point dtype, one of ('float32', 'float64'), got float16"),
    ("config-float16", lambda: ReformerConfig(**{**vars(C), "dtype": "float16",
     "d_head": None}), ValueError, "dtype: expected one of ('float32', 'float64')"),
    # --- truthy strings as flags -----------------------------------------------------------------
    ("full-causal-str", lambda: A.attention_forward(Q, Q, Q, causal="False"), TypeError,
     "causal: expected True or False, got 'False'"),
    ("shared-causal-str", lambda: A.shared_qk_attention_forward(Q, Q, causal="False"),
     TypeError, "causal: expected True or False"),
    ("local-causal-str", lambda: CA.local_attention_forward(Q, Q, chunk_len=4, causal="False"),
     TypeError, "causal: expected True or False"),
    ("lsh-causal-str", lambda: LA.lsh_attention_forward(Q, Q, causal="False", **LSH), TypeError,
     "causal: expected True or False"),
    ("lsh-semantics-str", lambda: LA.lsh_attention_forward(Q, Q, semantics="no", **LSH),
     ValueError, "semantics: expected 'paper', 'released' or a Semantics"),
    ("lsh-switch-str", lambda: LA.lsh_attention_forward(Q, Q, semantics=LA.Semantics("no",
     False), **LSH), TypeError, "attend_across_buckets: expected True or False"),
    ("multihead-causal-str", lambda: MHA.multihead_attention_forward(Q[0],
     MHA.init_multihead_attention(g(), 4, 2, 2), n_heads=2, causal="False"), TypeError,
     "causal: expected True or False"),
    ("sublayer-causal-str", lambda: S.AttentionSubLayer("full", n_heads=2, d_head=4,
     causal="False"), TypeError, "causal: expected True or False"),
    ("mask-self-str", lambda: A.mask_logits(np.zeros((4, 4)), np.arange(4), np.arange(4),
     self_mask="yes"), TypeError, "self_mask: expected True or False"),
    ("train-str", lambda: R.forward_logits(PM, TOK, C, g(), train="no"), TypeError,
     "train: expected True or False, got 'no'"),
    ("init-linear-bias-str", lambda: Ly.init_linear(g(), 2, 3, bias="no"), TypeError,
     "bias: expected True or False"),
    # --- a backward's dout against its cache -----------------------------------------------------
    ("lsh-backward-dout", lambda: LA.lsh_attention_backward(np.ones((1, 2, 8, 4)),
     _lsh_cache(12)), ValueError, "dout: expected shape (1, 2, 12, 4) (that of the forward's"),
    ("lsh-backward-dtype", lambda: LA.lsh_attention_backward(np.ones((1, 2, 12, 4), np.float32),
     _lsh_cache(12)), TypeError, "dout: expected dtype float64 (that of the forward's output)"),
    ("full-backward-dout", lambda: A.attention_backward(np.ones((1, 2, 7, 4), np.float32),
     _cache(A.attention_forward, Q, Q, Q)), ValueError, "dout: expected shape (1, 2, 8, 4)"),
    ("local-backward-dout", lambda: CA.local_attention_backward(np.ones((1, 2, 7, 4), np.float32),
     _cache(CA.local_attention_forward, Q, Q, chunk_len=4)), ValueError,
     "dout: expected shape (1, 2, 8, 4)"),
    ("linear-backward-dout", lambda: Ly.linear_backward(np.ones((2, 5), np.float32),
     _cache(Ly.linear_forward, X32, np.ones((3, 4), np.float32))), ValueError,
     "dout: expected shape (2, 4)"),
    ("layernorm-backward-dout", lambda: Ly.layernorm_backward(np.ones((3, 3)),
     _cache(Ly.layernorm_forward, np.ones((2, 3)), np.ones(3), np.zeros(3))), ValueError,
     "dout: expected shape (2, 3)"),
    ("softmax-backward-dout", lambda: Lo.softmax_backward(np.ones(3), _cache(Lo.softmax_forward,
     np.ones((2, 3)))), ValueError, "dout: expected shape (2, 3)"),
    ("dropout-backward-dout", lambda: Ly.dropout_backward(np.ones(3), _cache(Ly.dropout_forward,
     np.ones((2, 3)), 0.5, 1)), ValueError, "dout: expected shape (2, 3)"),
    ("embedding-backward-dout", lambda: Em.embedding_backward(np.ones((2, 5)), _cache(
     Em.embedding_forward, np.array([0, 1]), np.ones((3, 4)))), ValueError,
     "dout: expected shape (2, 4)"),
    ("ce-backward-dloss", lambda: Lo.softmax_cross_entropy_backward(np.ones(2), _cache(
     Lo.softmax_cross_entropy_forward, np.ones((2, 3)), np.array([0, 1]))), ValueError,
     "dloss: expected a scalar"),
    ("reversible-dy-dtype", lambda: _block().reverse_and_grad(*(2 * [np.ones((1, 4, 8),
     np.float32)]), *(2 * [np.ones((1, 4, 8))]), PM["blocks"][0], None), TypeError,
     "dy1: expected dtype float32"),
    # --- empty inputs: one policy, a ValueError naming the argument ------------------------------
    ("chunked-ff-L0", lambda: Ch.chunked_feedforward_forward(np.zeros((1, 0, 3)),
     Ly.init_feedforward(g(), 3, 4, "float64"), chunk_len=2), ValueError,
     "x: expected a non-empty array (every axis of size >= 1), got shape (1, 0, 3)"),
    ("lsh-B0", lambda: LA.lsh_attention_forward(EMPTY_B, EMPTY_B, **LSH), ValueError,
     "qk: expected a non-empty array"),
    ("lsh-L0", lambda: LA.lsh_attention_forward(EMPTY_L, EMPTY_L, **LSH), ValueError,
     "qk: expected a non-empty array"),
    ("local-L0", lambda: CA.local_attention_forward(EMPTY_L, EMPTY_L, chunk_len=4), ValueError,
     "qk: expected a non-empty array"),
    ("full-L0", lambda: A.attention_forward(EMPTY_L, EMPTY_L, EMPTY_L), ValueError,
     "q: expected a non-empty array"),
    ("shared-L0", lambda: A.shared_qk_attention_forward(EMPTY_L, EMPTY_L), ValueError,
     "qk: expected a non-empty array"),
    ("hash-B0", lambda: lsh.hash_vectors(EMPTY_B, lsh.random_rotations(g(), 4, 1, 2)),
     ValueError, "x: expected a non-empty array"),
    ("reformer-loss-B0", lambda: R.loss_and_grads(PM, TOK[:0], C, g()), ValueError,
     "tokens: expected a non-empty array"),
    ("reformer-logits-L0", lambda: R.forward_logits(PM, TOK[:, :0], C, g()), ValueError,
     "tokens: expected a non-empty array"),
    ("transformer-loss-B0", lambda: M.loss_and_grads(TP, TOK[:0], TC), ValueError,
     "tokens: expected a non-empty array"),
    ("transformer-logits-L0", lambda: M.forward_logits(TP, TOK[:, :0], TC), ValueError,
     "tokens: expected a non-empty array"),
    ("ce-B0", lambda: Lo.softmax_cross_entropy_forward(np.zeros((0, 3, 5)),
     np.zeros((0, 3), int)), ValueError, "logits: expected a non-empty array"),
    ("ce-L0", lambda: Lo.softmax_cross_entropy_forward(np.zeros((2, 0, 5)),
     np.zeros((2, 0), int)), ValueError, "logits: expected a non-empty array"),
    ("chunked-loss-L0", lambda: Ch.chunked_output_loss_forward(np.zeros((2, 0, 3)),
     np.ones((3, 5)), None, np.zeros((2, 0), int), chunk_len=2), ValueError,
     "h: expected a non-empty array"),
    # --- non-finite gradients and gradient checks ------------------------------------------------
    ("clip-nan", lambda: O.clip_by_global_norm({"a": np.array([1.0, np.nan])}, 1.0), ValueError,
     "grads: expected finite values, got global norm nan"),
    ("clip-inf", lambda: O.clip_by_global_norm({"a": np.array([1.0, np.inf])}, 1.0), ValueError,
     "grads: expected finite values, got global norm inf"),
    ("numgrad-int", lambda: GC.numerical_gradient(lambda: 0.0, np.arange(3)), TypeError,
     "x: expected a floating-point array, got dtype int64"),
    # --- parameter trees against their config ----------------------------------------------------
    ("reformer-float64-params", lambda: R.loss_and_grads(
     R.init_reformer(ReformerConfig(**{**vars(C), "dtype": "float64", "d_head": None}), g()),
     TOK, C, g()), TypeError, "params.embed.tokens: expected dtype float32 (the config's)"),
    ("transformer-3-blocks", lambda: M.loss_and_grads(M.init_transformer(M.TransformerConfig(
     **{**vars(TC), "n_layers": 3}), g()), TOK, TC), ValueError,
     "params.blocks: expected a list of 1 entries, got 3"),
    ("reformer-head-vocab", lambda: R.forward_logits(R.init_reformer(ReformerConfig(
     **{**vars(C), "vocab_size": 20, "d_head": None}), g()), TOK, C, g()), ValueError,
     "params.embed.tokens: expected shape (11, 8), got (20, 8)"),
    ("reformer-head-only-vocab", lambda: R.forward_logits(_with(PM, ("head", "out", "w"),
     np.ones((16, 20), np.float32)), TOK, C, g()), ValueError,
     "params.head.out.w: expected shape (16, 11), got (16, 20)"),
    ("reformer-no-head", lambda: R.loss_and_grads(_with(PM, ("head",), None), TOK, C, g()),
     ValueError, "params: expected a dict with keys ['blocks', 'embed', 'head'], got "
     "['blocks', 'embed'] (missing ['head']"),
    ("transformer-no-head", lambda: M.forward_logits(_with(TP, ("head",), None), TOK, TC),
     ValueError, "missing ['head']"),
    ("reformer-w_qk-shape", lambda: R.loss_and_grads(_with(PM, ("blocks", 0, "attn", "w_qk"),
     np.ones((8, 6), np.float32)), TOK, C, g()), ValueError,
     "params.blocks[0].attn.w_qk: expected shape (8, 8), got (8, 6)"),
    ("sublayer-w_qk-shape", lambda: S.AttentionSubLayer("lsh", n_heads=2, d_head=4, chunk_len=4)
     .forward(np.ones((1, 4, 8), np.float32), _with(PM["blocks"][0]["attn"], ("w_qk",),
     np.ones((8, 6), np.float32)), S.AttentionRecord("lsh")), ValueError,
     "w_qk: expected shape (8, 8), got (8, 6)"),
    ("reversible-missing-key", lambda: _block().forward(*(2 * [np.ones((1, 4, 8), np.float32)]),
     {"attn": PM["blocks"][0]["attn"]}, g()), ValueError, "params: expected a dict with keys"),
    # --- non-finite parameters: one policy, refused at the models' entry -------------------------
    ("reformer-nan-head-bias", lambda: R.forward_logits(_nan_at(PM, ("head", "out", "b")), TOK,
     C, g()), ValueError, "params.head.out.b: expected finite values, got NaN or inf"),
    ("reformer-nan-embedding", lambda: R.forward_logits(_nan_at(PM, ("embed", "tokens")), TOK, C,
     g()), ValueError, "params.embed.tokens: expected finite values"),
    ("transformer-nan-head-bias", lambda: M.forward_logits(_nan_at(TP, ("head", "out", "b")),
     TOK, TC), ValueError, "params.head.out.b: expected finite values"),
    # --- mixed float32 / float64: one dtype per call ---------------------------------------------
    ("linear-mixed", lambda: Ly.linear_forward(X32, W64), TypeError,
     "w: expected dtype float32 (that of x), got float64: one dtype per call"),
    ("layernorm-mixed", lambda: Ly.layernorm_forward(X32, np.ones(3), np.zeros(3)), TypeError,
     "gamma: expected dtype float32 (that of x), got float64"),
    ("reversible-mixed", lambda: _block().forward(np.ones((1, 4, 8), np.float32),
     np.ones((1, 4, 8)), PM["blocks"][0], g()), TypeError,
     "x2: expected dtype float32 (that of x1), got float64"),
    ("lsh-mixed", lambda: LA.lsh_attention_forward(Q, Q64, **LSH), TypeError,
     "v: expected dtype float32 (that of qk), got float64"),
    ("chunked-loss-mixed", lambda: Ch.chunked_output_loss_forward(np.ones((1, 2, 3), np.float32),
     np.ones((3, 5)), None, np.zeros((1, 2), int), chunk_len=2), TypeError,
     "w: expected dtype float32 (that of h)"),
    # --- records from another call ---------------------------------------------------------------
    ("reverse-other-call", _reverse_with_another_calls_record, ValueError,
     "record: made by another call of this block"),
    # --- NumPy internals before ------------------------------------------------------------------
    ("layernorm-eps-str", lambda: Ly.layernorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3),
     eps="1e-5"), TypeError, "eps: expected a positive number, got '1e-5'"),
    ("adam-int-params", lambda: O.Adam(lr=0.1).init({"w": np.arange(3)}), TypeError,
     "params.w: expected a floating-point array, got dtype int64"),
    ("mask-read-only", lambda: A.mask_logits(_read_only(np.zeros((4, 4))), np.arange(4),
     np.arange(4), causal=True), ValueError, "logits: expected a writable array"),
    ("adam-lr-str", lambda: O.Adam(lr="0.1"), TypeError, "lr: expected a positive number"),
]  # fmt: skip


@pytest.mark.parametrize("call, error, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(call, error, fragment):
    with pytest.raises(error, match=re.escape(fragment)):
        call()


# --- cases whose answer is a correct result ------------------------------------------------------


def test_numpy_scalars_are_accepted_as_numbers():
    x = np.ones((2, 3))
    out, _ = Ly.dropout_forward(x, np.float32(0.5), 1)
    expected, _ = Ly.dropout_forward(x, 0.5, 1)
    assert np.array_equal(out, expected)
    adam = O.Adam(lr=np.float32(1e-3), beta1=np.float32(0.9), beta2=np.float64(0.99))
    params = {"w": np.ones(3)}
    adam.step(params, {"w": np.ones(3)}, adam.init(params))
    assert np.all(params["w"] < 1)
    config = ReformerConfig(**{**vars(C), "dropout": np.float32(0.5), "d_head": None})
    assert type(config.dropout) is float and config.dropout == 0.5
    assert G.FeedForwardSubLayer(dropout=np.float32(0.25)).dropout == 0.25
    _, norm = O.clip_by_global_norm({"a": np.ones(4)}, np.float32(1.0))
    assert norm == 2.0
    assert (
        Ly.layernorm_forward(x, np.ones(3), np.zeros(3), eps=np.float32(1e-5))[0].shape == x.shape
    )


def test_huge_finite_queries_keep_their_attention():
    """float32 qk near 1e20 used to overflow |qk|^2 and give uniform attention."""
    qk = (1e20 * g(7).standard_normal((1, 2, 8, 4))).astype(np.float32)
    v = g(8).standard_normal((1, 2, 8, 4)).astype(np.float32)
    keys, _ = A.unit_norm_forward(qk)
    assert np.allclose(np.linalg.norm(keys, axis=-1), 1, atol=1e-6)
    out32, _ = A.shared_qk_attention_forward(qk, v)
    out64, _ = A.shared_qk_attention_forward(qk.astype(np.float64), v.astype(np.float64))
    assert np.all(np.isfinite(out32)) and np.allclose(out32, out64, atol=1e-5)
    uniform = v.mean(axis=2, keepdims=True)
    assert not np.allclose(out32, uniform, atol=1e-2)
    out_lsh, _ = LA.lsh_attention_forward(qk, v, chunk_len=4, n_buckets=2, rng=g(9))
    assert np.all(np.isfinite(out_lsh))


def test_numerical_gradient_restores_its_input_when_f_raises():
    x = np.array([1.0, 2.0, 3.0])
    calls = []

    def f():
        calls.append(x.copy())
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        GC.numerical_gradient(f, x)
    assert calls and not np.array_equal(calls[0], [1.0, 2.0, 3.0])  # it was perturbed, then
    assert np.array_equal(x, [1.0, 2.0, 3.0])  # restored


def test_float32_gradient_check_warns_that_it_is_meaningless():
    x = g(10).standard_normal((2, 3)).astype(np.float32)
    with pytest.warns(GC.PrecisionWarning, match="meaningful in float64 only"):
        GC.check_op(Ly.gelu_forward, Ly.gelu_backward, (x,), rng=g(11))


def test_record_of_the_same_call_is_accepted_after_rebuilding():
    """The fingerprint check leaves the intended use alone: a stack reversed to its input."""
    config = ReformerConfig(**{**vars(C), "d_head": None, "attention_types": ("lsh", "full")})
    blocks, params = R.build_blocks(config), R.init_reformer(config, g(12))["blocks"]
    x = g(13).standard_normal((2, 12, 8)).astype(np.float32)
    y1, y2, records = x, x, []
    for block, p in zip(blocks, params):
        y1, y2, rec = block.forward(y1, y2, p, g(14))
        records.append(rec)
    for block, p, rec in zip(blocks[::-1], params[::-1], records[::-1]):
        y1, y2 = block.reverse(y1, y2, p, rec)
    assert np.allclose(y1, x, atol=1e-5) and np.allclose(y2, x, atol=1e-5)


# --- property: valid inputs give finite outputs of the dtype asked for ---------------------------

DTYPES = st.sampled_from(["float32", "float64"])


@settings(max_examples=25, deadline=None)
@given(
    dtype=DTYPES,
    batch=st.integers(1, 2),
    heads=st.integers(1, 2),
    length=st.integers(1, 13),
    d_head=st.integers(1, 5),
    chunk_len=st.integers(1, 5),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_attention_outputs_are_finite_and_keep_the_dtype(
    dtype, batch, heads, length, d_head, chunk_len, causal, seed
):
    rng = g(seed)
    qk, v = (rng.standard_normal((batch, heads, length, d_head)).astype(dtype) for _ in range(2))
    dout = rng.standard_normal(qk.shape).astype(dtype)
    runs = [
        (A.shared_qk_attention_forward(qk, v, causal=causal), A.shared_qk_attention_backward),
        (A.attention_forward(qk, qk, v, causal=causal), A.attention_backward),
        (
            CA.local_attention_forward(qk, v, chunk_len=chunk_len, causal=causal),
            CA.local_attention_backward,
        ),
        (
            LA.lsh_attention_forward(
                qk, v, chunk_len=chunk_len, n_hashes=2, causal=causal, rng=rng
            ),
            LA.lsh_attention_backward,
        ),
    ]
    for (out, cache), backward in runs:
        for a in (out, *backward(dout, cache)):
            assert a.dtype == np.dtype(dtype)
            assert np.all(np.isfinite(a))


@settings(max_examples=15, deadline=None)
@given(
    dtype=DTYPES,
    kinds=st.lists(st.sampled_from(["lsh", "local", "full"]), min_size=1, max_size=2),
    n_layers=st.integers(1, 2),
    heads=st.integers(1, 2),
    d_head=st.integers(1, 4),
    length=st.integers(2, 9),
    reversible=st.booleans(),
    dropout=st.sampled_from([0.0, 0.1]),
    loss_chunk=st.sampled_from([None, 3]),
    seed=st.integers(0, 2**16),
)
def test_models_give_finite_results_of_the_config_dtype(
    dtype, kinds, n_layers, heads, d_head, length, reversible, dropout, loss_chunk, seed
):
    rng = g(seed)
    config = ReformerConfig(
        vocab_size=7, d_model=heads * d_head, n_heads=heads, d_ff=6, n_layers=n_layers,
        attention_types=tuple(kinds), chunk_len=3, max_len=9, dtype=dtype, dropout=dropout,
        reversible=reversible, loss_chunk=loss_chunk, ff_chunk=loss_chunk,
    )  # fmt: skip
    params = R.init_reformer(config, rng)
    tokens = rng.integers(0, 7, (2, length))
    loss, grads = R.loss_and_grads(params, tokens, config, rng)
    logits = R.forward_logits(params, tokens, config, rng)
    baseline = M.TransformerConfig(
        vocab_size=7, d_model=heads * d_head, n_heads=heads, d_head=d_head, d_ff=6,
        n_layers=n_layers, max_len=9, dtype=dtype, dropout=dropout, shared_qk=reversible,
    )  # fmt: skip
    t_params = M.init_transformer(baseline, rng)
    t_loss, t_grads = M.loss_and_grads(t_params, tokens, baseline, rng)
    t_logits = M.forward_logits(t_params, tokens, baseline)
    assert np.isfinite(loss) and np.isfinite(t_loss)
    for a in (logits, t_logits, *leaves(grads), *leaves(t_grads)):
        assert a.dtype == np.dtype(dtype)
        assert np.all(np.isfinite(a))
