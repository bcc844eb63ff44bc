"""The decoding cache: a new position's logits equal a full pass's last row, and cached sampling
gives the uncached sampler's tokens, wherever the attention pattern is causal."""

import numpy as np
import pytest

from minireformer import transformer
from minireformer.reformer_config import ReformerConfig
from minireformer.training import decoding, lm, sampling

COMMON = dict(vocab_size=11, d_model=16, n_heads=2, d_ff=32, max_len=20, dtype="float64")
CAUSAL_PATTERN = {
    "transformer": transformer.TransformerConfig(**COMMON, d_head=8, n_layers=2),
    "shared-qk transformer": transformer.TransformerConfig(
        **COMMON, d_head=8, n_layers=2, shared_qk=True
    ),
    "local and full": ReformerConfig(
        **COMMON, n_layers=2, attention_types=("local", "full"), chunk_len=4
    ),  # fmt: skip
    "one LSH layer, paper": ReformerConfig(
        **COMMON, n_layers=1, attention_types=("lsh",), n_hashes=3, chunk_len=4, n_buckets=4
    ),  # fmt: skip
    "one LSH layer, released": ReformerConfig(
        **COMMON,
        n_layers=1,
        attention_types=("lsh",),
        n_hashes=3,
        chunk_len=4,
        n_buckets=4,
        semantics="released",
    ),  # fmt: skip
    "one LSH layer, factorised": ReformerConfig(
        **COMMON, n_layers=1, attention_types=("lsh",), n_hashes=2, chunk_len=3, n_buckets=(2, 4)
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", list(CAUSAL_PATTERN))
def test_each_new_position_equals_a_full_pass(name):
    config = decoding.fixed_buckets(CAUSAL_PATTERN[name])
    params = lm.init_params(config, np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 11, (2, config.max_len))
    logits, cache = decoding.start(params, config, tokens[:, :3], np.random.default_rng(7))
    for length in range(3, config.max_len + 1):
        full = lm.forward_logits(params, tokens[:, :length], config, np.random.default_rng(7))
        np.testing.assert_allclose(logits, full[:, -1], rtol=0, atol=1e-10)
        if length < config.max_len:
            logits, cache = decoding.step(params, config, cache, tokens[:, length])
    assert cache.length == config.max_len
    with pytest.raises(ValueError, match="cache: full at max_len=20"):
        decoding.step(params, config, cache, tokens[:, 0])


@pytest.mark.parametrize("name", ["transformer", "local and full", "one LSH layer, paper"])
@pytest.mark.parametrize("slide", [1, 7])
def test_cached_sampling_gives_the_uncached_tokens(name, slide):
    """Past the context (20) the window slides; the cache is read again in one pass then."""
    config = CAUSAL_PATTERN[name]
    params = lm.init_params(config, np.random.default_rng(0))
    prompt = np.array([1, 2, 3])
    runs = [
        sampling.generate(
            params,
            config,
            prompt,
            40,
            rng=np.random.default_rng(5),
            temperature=0.9,
            slide=slide,
            cache=cached,
        )  # fmt: skip
        for cached in (True, False)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert len(runs[0]) == 43


def test_deeper_lsh_layers_keep_the_states_they_had():
    """Two LSH layers: the first layer's pattern is causal, the second reads states that a full
    pass recomputes with later tokens in the sort; the cached logits are finite and differ from a
    full pass only where the documented semantics says (here, at some length)."""
    config = decoding.fixed_buckets(
        ReformerConfig(**COMMON, n_layers=2, attention_types=("lsh",), n_hashes=2, chunk_len=4)
    )
    params = lm.init_params(config, np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 11, (1, config.max_len))
    logits, cache = decoding.start(params, config, tokens[:, :1], np.random.default_rng(7))
    gaps = []
    for length in range(2, config.max_len + 1):
        logits, cache = decoding.step(params, config, cache, tokens[:, length - 1])
        full = lm.forward_logits(params, tokens[:, :length], config, np.random.default_rng(7))
        assert np.all(np.isfinite(logits))
        gaps.append(np.abs(logits - full[:, -1]).max())
    assert max(gaps) > 1e-9  # the later tokens moved earlier positions' states in the full pass
    assert gaps[0] < 1e-10  # two positions: one chunk, nothing moved yet
