"""Sampling: deterministic given a seed, greedy and top-k as defined, the context slides."""

import numpy as np
import pytest

from minireformer.reformer_config import ReformerConfig
from minireformer.training import lm, sampling
from minireformer.transformer import TransformerConfig

CONFIGS = [
    ReformerConfig(
        vocab_size=9,
        d_model=16,
        n_heads=2,
        d_ff=32,
        n_layers=2,
        chunk_len=4,
        max_len=12,
        attention_types=("lsh", "local"),
        n_hashes=2,
    ),
    TransformerConfig(
        vocab_size=9, d_model=16, n_heads=2, d_head=8, d_ff=32, n_layers=1, max_len=12
    ),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["reformer", "transformer"])
def test_generation_is_deterministic_given_the_seed_and_slides_past_max_len(config):
    params = lm.init_params(config, np.random.default_rng(0))
    prompt = np.arange(1, 9)

    def run(seed, **kw):
        return sampling.generate(params, config, prompt, 10, rng=np.random.default_rng(seed), **kw)

    a, b = run(1), run(1)
    assert a.shape == (18,) and np.array_equal(a, b) and np.array_equal(a[:8], prompt)
    assert not all(np.array_equal(a, run(s)) for s in range(2, 6))  # the seed matters
    greedy = run(3, temperature=0)
    assert np.array_equal(greedy, run(3, top_k=1))  # top-1 sampling is greedy decoding
    # 18 > max_len = 12: the last tokens were produced from a window of the last 12 positions
    window = greedy[-13:-1][None]
    expected = int(
        np.argmax(lm.forward_logits(params, window, config, np.random.default_rng(0))[0, -1])
    )
    if isinstance(config, TransformerConfig):  # no LSH: the logits do not depend on the rng
        assert greedy[-1] == expected


def test_sample_next_restricts_to_top_k():
    logits = np.array([0.0, 5.0, 4.0, -3.0])
    rng = np.random.default_rng(0)
    draws = {sampling.sample_next(logits, rng, temperature=2.0, top_k=2) for _ in range(200)}
    assert draws == {1, 2}
    assert sampling.sample_next(logits, rng, temperature=0) == 1


@pytest.mark.parametrize(
    "kw, error, message",
    [
        (dict(prompt=[]), ValueError, "prompt: expected at least one token"),
        (dict(prompt=[3, 99]), ValueError, r"prompt: expected token ids in \[0, 9\)"),
        (dict(prompt=[1.0, 2.0]), TypeError, "prompt: expected integer token ids, got dtype float"),
        (dict(prompt=[[1, 2]]), ValueError, r"prompt: expected a 1-D sequence of ids, got shape"),
        (dict(prompt="hello"), TypeError, "prompt: expected integer token ids, got a str"),
        (dict(temperature=-1.0), ValueError, "temperature: expected a finite number >= 0"),
        (dict(temperature=float("inf"), top_k=1), ValueError, "temperature: expected a finite"),
        (dict(temperature=float("nan")), ValueError, "temperature: expected a finite number"),
        (dict(temperature="0.5"), TypeError, "temperature: expected a finite number"),
        (dict(temperature=True), TypeError, "temperature: expected a finite number"),
        (dict(top_k=0), ValueError, "top_k: expected a positive integer"),
        (dict(top_k=-2), ValueError, "top_k: expected a positive integer"),
        (dict(n_new=-2), ValueError, "n_new: expected an integer >= 0"),
        (dict(rng=None), TypeError, "rng: expected a numpy.random.Generator"),
    ],
)
def test_bad_sampling_arguments_are_named(kw, error, message):
    config = CONFIGS[1]
    params = lm.init_params(config, np.random.default_rng(0))
    args = dict(prompt=[1, 2], n_new=3, rng=np.random.default_rng(0))
    args.update(kw)
    prompt, n_new = args.pop("prompt"), args.pop("n_new")
    with pytest.raises(error, match=message):
        sampling.generate(params, config, prompt, n_new, **args)


@pytest.mark.parametrize(
    "logits, kw, message",
    [
        ([0.0, 1.0], dict(temperature=-1), "temperature: expected a finite number >= 0"),
        ([0.0, 1.0], dict(top_k=0), "top_k: expected a positive integer"),
        ([0.0, 1.0], dict(top_k=-2), "top_k: expected a positive integer"),
        ([0.0, np.nan], dict(temperature=0), "logits: expected a 1-D array of finite numbers"),
        ([[0.0, 1.0]], dict(), "logits: expected a 1-D array"),
    ],
)
def test_sample_next_checks_its_arguments(logits, kw, message):
    with pytest.raises((ValueError, TypeError), match=message):
        sampling.sample_next(np.array(logits), np.random.default_rng(0), **kw)


def test_sample_next_at_the_limits_of_temperature():
    logits = np.array([0.0, 2.0, 1.0, 1.5])
    rng = np.random.default_rng(0)
    # a temperature so small that logits / T overflows: the greedy limit, not NaN probabilities
    assert {sampling.sample_next(logits, rng, temperature=1e-320) for _ in range(20)} == {1}
    assert sampling.sample_next(logits, rng, temperature=np.float32(0.5)) in range(4)
    # top_k keeps the k largest logits whatever the temperature
    draws = {sampling.sample_next(logits, rng, temperature=1e6, top_k=2) for _ in range(200)}
    assert draws == {1, 3}
