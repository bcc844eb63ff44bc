"""Reversible blocks (paper section 3, eqs. 7-9): reconstruction, gradients, records."""

import numpy as np
import pytest

from minireformer import layers, reference, tree
from minireformer.attention_sublayer import AttentionSubLayer
from minireformer.feedforward_sublayer import FeedForwardSubLayer
from minireformer.measuring.gradcheck import check_tree, rel_error
from minireformer.reformer import init_block_params
from minireformer.reversible import BlockRecord, ReversibleBlock
from minireformer.tree import leaves_with_paths, path_str

B, L, D, H, DH, F = 2, 16, 8, 2, 4, 16
KINDS = ("lsh", "local", "full")


def make_stack(
    rng, n_layers, *, dropout=0.0, ff_chunk=None, causal=True, kinds=KINDS, n_parallel_heads=None
):
    blocks, params = [], []
    for i in range(n_layers):
        f = AttentionSubLayer(
            kinds[i % len(kinds)],
            n_heads=H,
            d_head=DH,
            chunk_len=4,
            n_hashes=2,
            causal=causal,
            dropout=dropout,
            n_parallel_heads=n_parallel_heads,
        )
        g = FeedForwardSubLayer(chunk_len=ff_chunk, dropout=dropout)
        blocks.append(ReversibleBlock(f, g, name=f"layer {i}"))
        params.append(init_block_params(rng, D, H, DH, F, dtype="float64"))
    return blocks, params


def run_forward(blocks, params, x1, x2, rng, mask=None):
    records = []
    for block, p in zip(blocks, params):
        x1, x2, rec = block.forward(x1, x2, p, rng, mask=mask)
        records.append(rec)
    return x1, x2, records


def streams(rng):
    return rng.standard_normal((B, L, D)), rng.standard_normal((B, L, D))


@pytest.mark.parametrize("kind", KINDS)
def test_block_computes_the_papers_equations(kind):
    """forward and reverse equal reference.reversible_forward / _reverse (eqs. 7-9) with the
    block's own F and G, and F, G are the sub-layers' reference math: attention and the FF."""
    rng = np.random.default_rng(30)
    (block,), (p,) = make_stack(rng, 1, kinds=(kind,))
    x1, x2 = streams(rng)
    y1, y2, record = block.forward(x1, x2, p, rng)

    def F(x):  # noqa: N802
        return block.F(x, p, record)

    def G(x):  # noqa: N802
        return block.G(x, p, record)

    want = reference.reversible_forward(x1, x2, F, G)
    np.testing.assert_allclose(y1, want[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(y2, want[1], rtol=0, atol=1e-12)
    back = reference.reversible_reverse(y1, y2, F, G)
    for got, expected in zip(block.reverse(y1, y2, p, record), back):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    ff = {k: p["ff"][k] for k in ("w1", "b1", "w2", "b2")}
    plain_g = reference.feedforward(
        reference.layer_norm(y1, p["ff"]["ln_gamma"], p["ff"]["ln_beta"]), ff
    )
    np.testing.assert_allclose(G(y1), plain_g, rtol=0, atol=1e-12)


def test_reverse_reconstructs_the_inputs_of_12_layers():
    rng = np.random.default_rng(0)
    blocks, params = make_stack(rng, 12, dropout=0.2, ff_chunk=5)
    x1, x2 = streams(rng)
    mask = np.ones((B, L), bool)
    mask[1, -3:] = False  # padding in the second sequence
    y1, y2, records = run_forward(blocks, params, x1, x2, rng, mask)
    assert np.max(np.abs(y1 - x1)) > 0.1  # the stack did something
    for block, p, rec in zip(blocks[::-1], params[::-1], records[::-1]):
        y1, y2 = block.reverse(y1, y2, p, rec)
    err = max(np.max(np.abs(y1 - x1)), np.max(np.abs(y2 - x2)))
    assert err < 1e-10, err


def _stored_grads(blocks, params, x1, x2, dy1, dy2, seed, mask=None):
    rng = np.random.default_rng(seed)
    caches = []
    for block, p in zip(blocks, params):
        x1, x2, cache = block.forward_stored(x1, x2, p, rng, mask=mask)
        caches.append(cache)
    grads = [None] * len(blocks)
    for i in reversed(range(len(blocks))):
        dy1, dy2, grads[i] = blocks[i].backward_stored(dy1, dy2, caches[i])
    return (x1, x2), dy1, dy2, grads


def _reversible_grads(blocks, params, x1, x2, dy1, dy2, seed, mask=None):
    y1, y2, records = run_forward(blocks, params, x1, x2, np.random.default_rng(seed), mask)
    top = (y1, y2)
    grads = [None] * len(blocks)
    for i in reversed(range(len(blocks))):
        y1, y2, dy1, dy2, grads[i] = blocks[i].reverse_and_grad(
            y1, y2, dy1, dy2, params[i], records[i]
        )
    return top, (y1, y2), dy1, dy2, grads


@pytest.mark.parametrize("ff_chunk", [None, 3])
@pytest.mark.parametrize("causal", [True, False])
def test_reversible_gradients_equal_stored_activation_gradients(ff_chunk, causal):
    """Same weights, same rotations and dropout seeds: the two backward passes agree to 1e-9."""
    rng = np.random.default_rng(1)
    blocks, params = make_stack(rng, 6, dropout=0.25, ff_chunk=ff_chunk, causal=causal)
    x1, x2 = streams(rng)
    dy1, dy2 = streams(rng)
    mask = np.ones((B, L), bool)
    mask[0, -2:] = False
    top_s, dx1_s, dx2_s, grads_s = _stored_grads(blocks, params, x1, x2, dy1, dy2, 7, mask)
    top_r, inputs, dx1_r, dx2_r, grads_r = _reversible_grads(
        blocks, params, x1, x2, dy1, dy2, 7, mask
    )
    assert np.array_equal(top_s[0], top_r[0]) and np.array_equal(top_s[1], top_r[1])
    assert max(np.max(np.abs(inputs[0] - x1)), np.max(np.abs(inputs[1] - x2))) < 1e-10
    assert rel_error(dx1_r, dx1_s) < 1e-9 and rel_error(dx2_r, dx2_s) < 1e-9
    stored = dict(leaves_with_paths(grads_s))
    for path, g in leaves_with_paths(grads_r):
        assert rel_error(g, stored[path]) < 1e-9, path_str(path)
    assert len(stored) == len(list(leaves_with_paths(grads_r))) == 6 * 11


@pytest.mark.parametrize("kind", KINDS)
def test_block_gradient_check(kind):
    """reverse_and_grad against centred differences (rotations and seeds fixed by a seed)."""
    rng = np.random.default_rng(2)
    blocks, params = make_stack(rng, 2, dropout=0.2, ff_chunk=6, kinds=(kind,))
    x1, x2 = streams(rng)
    r1, r2 = streams(rng)
    tree = {"x1": x1, "x2": x2, "params": params}

    def loss_and_grads(t):
        y1, y2, records = run_forward(
            blocks, t["params"], t["x1"], t["x2"], np.random.default_rng(3)
        )
        loss = float(np.sum(y1 * r1) + np.sum(y2 * r2))
        dy1, dy2, grads = r1, r2, [None, None]
        for i in (1, 0):
            y1, y2, dy1, dy2, grads[i] = blocks[i].reverse_and_grad(
                y1, y2, dy1, dy2, t["params"][i], records[i]
            )
        return loss, {"x1": dy1, "x2": dy2, "params": grads}

    error, _ = check_tree(loss_and_grads, tree, rng=rng, max_entries_per_leaf=6)
    assert error < 1e-6, error


def test_reverse_and_grad_recomputes_each_sublayer_once(monkeypatch):
    rng = np.random.default_rng(4)
    blocks, params = make_stack(rng, 1, ff_chunk=4, kinds=("lsh",))
    x1, x2 = streams(rng)
    y1, y2, records = run_forward(blocks, params, x1, x2, rng)
    calls = {"ln": 0, "ff": 0}
    ln, ff = layers.layernorm_forward, layers.feedforward_forward

    def count_ln(*a, **k):
        calls["ln"] += 1
        return ln(*a, **k)

    def count_ff(*a, **k):
        calls["ff"] += 1
        return ff(*a, **k)

    monkeypatch.setattr(layers, "layernorm_forward", count_ln)
    monkeypatch.setattr(layers, "feedforward_forward", count_ff)
    blocks[0].reverse_and_grad(y1, y2, *streams(rng), params[0], records[0])
    assert calls == {"ln": 2, "ff": L // 4}  # one layer norm per sub-layer, one FF pass per chunk


def test_record_holds_no_activations():
    rng = np.random.default_rng(5)
    blocks, params = make_stack(rng, 3, dropout=0.1)
    x1, x2 = streams(rng)
    _, _, records = run_forward(blocks, params, x1, x2, rng)
    for rec in records:
        arrays = [a for part in (rec.f, rec.g) for a in part if hasattr(a, "shape")]
        assert all(a.shape != (B, L, D) for a in arrays)
        assert all(a.dtype.kind != "f" or a.ndim == 4 and a.shape[0] == H for a in arrays)
        assert sum(a.nbytes for a in arrays) <= x1.nbytes
        assert isinstance(rec.f.seed, int) and isinstance(rec.g.seed, int)
    # default K = 2 * ceil(L / C) = 8 buckets: K/2 = 4 rotation columns per round and head
    assert records[0].f.rotations.shape == (H, DH, 2, 4)
    assert records[0].f.buckets.shape == (B, H, 2, L)


def test_mismatched_records_are_refused():
    rng = np.random.default_rng(6)
    blocks, params = make_stack(rng, 4, dropout=0.1)
    x1, x2 = streams(rng)
    y1, y2, records = run_forward(blocks, params, x1, x2, rng)
    with pytest.raises(ValueError, match="record: expected the record of block 'layer 3'"):
        blocks[3].reverse(y1, y2, params[3], records[2])
    with pytest.raises(ValueError, match="record: made for streams of shape"):
        blocks[3].reverse(y1[:, :8], y2[:, :8], params[3], records[3])
    with pytest.raises(TypeError, match="record"):
        blocks[3].reverse(y1, y2, params[3], None)
    # a record whose attention kind, rotations or seeds do not fit the block
    lsh_rec = records[0]
    local_block = ReversibleBlock(blocks[1].f, blocks[1].g, name="layer 0")
    with pytest.raises(ValueError, match="record: expected a record of 'local' attention"):
        local_block.reverse(y1, y2, params[1], lsh_rec)
    bad_rot = lsh_rec.f._replace(rotations=lsh_rec.f.rotations[:, :, :1])
    with pytest.raises(ValueError, match="rotations"):
        blocks[0].reverse(y1, y2, params[0], lsh_rec._replace(f=bad_rot))
    with pytest.raises(ValueError, match="dropout seed"):
        blocks[0].reverse(y1, y2, params[0], lsh_rec._replace(g=lsh_rec.g._replace(seed=None)))


def test_replay_uses_the_recorded_buckets():
    """Recomputation replays the recorded buckets instead of hashing again, so a hash that would
    now come out differently (float32 round-off in the reconstructed inputs moving a vector across
    a bucket boundary, or other rotations) cannot change the gradients; foreign buckets are refused.
    """
    rng = np.random.default_rng(7)
    blocks, params = make_stack(rng, 1, kinds=("lsh",))
    x1, x2 = streams(rng)
    y1, y2, (rec,) = run_forward(blocks, params, x1, x2, rng)
    dy1, dy2 = streams(rng)
    expected = blocks[0].reverse_and_grad(y1, y2, dy1, dy2, params[0], rec)
    other = rec.f._replace(rotations=-rec.f.rotations[:, :, ::-1])  # would hash differently
    got = blocks[0].reverse_and_grad(y1, y2, dy1, dy2, params[0], rec._replace(f=other))
    for a, b in zip(tree.leaves(expected), tree.leaves(got), strict=True):
        np.testing.assert_array_equal(a, b)
    short = rec.f._replace(buckets=rec.f.buckets[..., :-1])
    with pytest.raises(ValueError, match="buckets"):
        blocks[0].reverse(y1, y2, params[0], rec._replace(f=short))


@pytest.mark.parametrize("kind", KINDS)
def test_heads_one_group_at_a_time_change_nothing(kind):
    """n_parallel_heads=1 attends head by head (bounding memory); results are identical."""
    grouped, together = (
        make_stack(np.random.default_rng(9), 2, dropout=0.1, kinds=(kind,), n_parallel_heads=n)
        for n in (1, None)
    )
    x1, x2 = streams(np.random.default_rng(10))
    dy1, dy2 = streams(np.random.default_rng(11))
    results = []
    for blocks, params in (grouped, together):
        y1, y2, records = run_forward(blocks, params, x1, x2, np.random.default_rng(12))
        walked = blocks[1].reverse_and_grad(y1, y2, dy1, dy2, params[1], records[1])
        stored = _stored_grads(blocks, params, x1, x2, dy1, dy2, seed=12)
        results.append((y1, y2, walked, stored))
        if kind == "lsh":
            results[-1] += (records[1].f.buckets,)
    for a, b in zip(tree.leaves(results[0]), tree.leaves(results[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


def test_bad_input():
    rng = np.random.default_rng(8)
    with pytest.raises(ValueError, match="kind: expected one of"):
        AttentionSubLayer("sparse", n_heads=H, d_head=DH, chunk_len=4)
    with pytest.raises(ValueError, match="chunk_len"):
        AttentionSubLayer("lsh", n_heads=H, d_head=DH, chunk_len=0)
    with pytest.raises(ValueError, match="n_buckets"):
        AttentionSubLayer("lsh", n_heads=H, d_head=DH, chunk_len=4, n_buckets=3)
    with pytest.raises(ValueError, match="dropout"):
        FeedForwardSubLayer(dropout=1.0)
    with pytest.raises(ValueError, match="ff_chunk"):
        FeedForwardSubLayer(chunk_len=0)
    with pytest.raises(ValueError, match="activation"):
        FeedForwardSubLayer(activation="tanh")
    with pytest.raises(ValueError, match="n_parallel_heads"):
        AttentionSubLayer("lsh", n_heads=H, d_head=DH, chunk_len=4, n_parallel_heads=0)
    blocks, params = make_stack(rng, 1, kinds=("full",))
    x1, x2 = streams(rng)
    with pytest.raises(ValueError, match="x2"):
        blocks[0].forward(x1, x2[:, :5], params[0], rng)
    with pytest.raises(TypeError, match="x1"):
        blocks[0].forward(x1.astype(int), x2, params[0], rng)
    assert isinstance(blocks[0].forward(x1, x2, params[0], None)[2], BlockRecord)
