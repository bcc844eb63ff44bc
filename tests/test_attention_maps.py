"""attention_map: the (L, L) weights it returns are the ones the layer really mixes values with."""

import numpy as np
import pytest

from minireformer import layers
from minireformer.attention import merge_heads, split_heads
from minireformer.embedding import embed_forward
from minireformer.reformer import build_blocks
from minireformer.reformer_config import ReformerConfig
from minireformer.teaching import attention_maps
from minireformer.training import lm


def tiny(kind, **kw):
    return ReformerConfig(vocab_size=11, d_model=16, n_heads=2, d_ff=32, n_layers=1, chunk_len=4,
                          max_len=16, attention_types=(kind,), **kw)  # fmt: skip


@pytest.mark.parametrize("kind", ["full", "local", "lsh"])
def test_the_map_times_the_values_is_the_layers_attention_output(kind):
    cfg = tiny(kind, n_hashes=3, dtype="float64")
    params = lm.init_params(cfg, np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 11, (2, 16))
    weights = attention_maps.attention_map(params, tokens, cfg, rng=np.random.default_rng(5))
    assert weights.shape == (2, 2, 16, 16)
    assert np.allclose(weights.sum(-1), 1) and np.triu(weights, 1).max() == 0  # causal
    # the block's F output, with the same rotations: y1 - x1 = merge(P v) W_o
    x, _ = embed_forward(params["embed"], tokens)
    y1, _, _ = build_blocks(cfg)[0].forward(x, x, params["blocks"][0], np.random.default_rng(5))
    p = params["blocks"][0]["attn"]
    h, _ = layers.layernorm_forward(x, p["ln_gamma"], p["ln_beta"])
    v = split_heads(h @ p["w_v"], 2)  # (B, H, L, Dh)
    assert np.allclose(y1 - x, merge_heads(weights @ v) @ p["w_o"], atol=1e-12)


def test_a_layer_out_of_range_is_named():
    cfg = tiny("full")
    params = lm.init_params(cfg, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"layer: expected an index in \[0, 1\), got 1"):
        attention_maps.attention_map(params, np.zeros((1, 4), np.int64), cfg, layer=1)
