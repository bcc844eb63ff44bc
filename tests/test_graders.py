"""The graders fail the wrong answers and cheats a student is likely to hand in.

Each case replaces the solution of one function in an exercise source (the lines between its
``BEGIN SOLUTION`` and ``END SOLUTION``) with a wrong or cheating body, builds the solution
notebook, runs it up to the first check cell after that function, and requires that check cell
to fail with ``ExerciseFailed``. The correct solutions pass (``test_exercises.py``); these show
that passing means something.
"""

import re
import textwrap
from pathlib import Path

import pytest
from nbclient import NotebookClient
from test_exercises import _code_cells, _errors, builder

ROOT = Path(__file__).resolve().parents[1]

# (exercise source, function, what is wrong, the body that replaces the solution)
CASES = [
    (
        "01_attention_cost", "attention_forward", "calls the library",
        """
        out, cache = attention.attention_forward(q[None, None], k[None, None], v[None, None],
                                                 causal=causal)
        return out[0, 0], cache.probs[0, 0]
        """,
    ),
    (
        "01_attention_cost", "attention_forward", "does not subtract the row maximum",
        """
        s = q @ k.T / np.sqrt(q.shape[-1])
        if causal:
            s = np.where(np.triu(np.ones(s.shape, dtype=bool), k=1), attention.NEG_MASK, s)
        p = np.exp(s)
        p /= p.sum(axis=-1, keepdims=True)
        return p @ v, p
        """,
    ),
    (
        "01_attention_cost", "attention_backward", "calls the library",
        """
        _, cache = attention.attention_forward(q[None, None], k[None, None], v[None, None])
        grads = attention.attention_backward(dout[None, None], cache)
        return tuple(g[0, 0] for g in grads)
        """,
    ),
    (
        "01_attention_cost", "table3_bytes", "calls the library",
        """
        return table3.table3_memory(arch, batch=b, length=l, d_model=d_model, d_ff=d_ff,
                                    n_heads=n_h, n_layers=n_l, n_hashes=n_r, chunk_len=c // 2)
        """,
    ),
    (
        "03_lsh_attention", "look_back", "is written in for the example of the text",
        """
        if n_before == 1:
            return np.array([[9, 10, 11, 0, 1, 2], [0, 1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8],
                             [6, 7, 8, 9, 10, 11]])
        return np.array([[6, 7, 8, 9, 10, 11, 0, 1, 2]] * 4)
        """,
    ),
    (
        "03_lsh_attention", "lsh_attention_one_round", "calls the library",
        """
        return lsh_attention_forward(qk[None, None], v[None, None], chunk_len=chunk_len,
                                     rotations=rotations, causal=causal)[0][0, 0]
        """,
    ),
    (
        "03_lsh_attention", "lsh_attention_one_round", "masks by place in the window, not time",
        """
        buckets = lsh.hash_vectors(qk[None, None], rotations)[0, 0, 0]
        _, chunks = sort_and_chunk(buckets, chunk_len)
        windows = look_back(chunks, 1)
        keys = qk / np.linalg.norm(qk, axis=-1, keepdims=True)
        out = np.zeros((qk.shape[0], v.shape[-1]))
        c = chunk_len
        for queries, window in zip(chunks, windows):
            logits = qk[queries] @ keys[window].T
            logits = mask_window(logits, queries, window, buckets[queries], buckets[window])
            if causal:  # key slot in the window after the query's slot (c + row)
                later = np.arange(2 * c)[None, :] > c + np.arange(c)[:, None]
                logits = np.where(later, NEG_MASK, logits)
            weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
            weights /= weights.sum(axis=-1, keepdims=True)
            out[queries] = weights @ v[window]
        return out
        """,
    ),
    (
        "05_reversible", "reverse", "calls the library",
        """
        return block.reverse(y1, y2, p, record)
        """,
    ),
    (
        "05_reversible", "reverse_and_grad", "runs G twice",
        """
        x2 = y2 - g_fb(y1, dy2)[0]
        dx1 = dy1 + g_fb(y1, dy2)[1]
        f_out, f_vjp = f_fb(x2, dx1)
        return y1 - f_out, x2, dx1, dy2 + f_vjp
        """,
    ),
    (
        "05_reversible", "stored_bytes_per_layer", "returns a variable of the check cell",
        """
        return globals().get("exact", globals().get("measured_per_layer", 0))
        """,
    ),
    (
        "05_reversible", "stored_bytes_per_layer", "misses one (B, L, D) array",
        """
        d_head = D // H
        floats = B * L * (3 * D + 3 * H * d_head + 2 * d_ff) + B * H * L * d_head + B * H * L * L
        return 4 * floats + 8 * 2 * B * L
        """,
    ),
    (
        "05_reversible", "stored_bytes_per_layer", "calls the library",
        """
        from minireformer.measuring import memory_model
        from minireformer.reformer_config import ReformerConfig
        c = ReformerConfig(n_layers=1, attention_types=("full",), reversible=False, d_model=D,
                           n_heads=H, d_ff=d_ff, max_len=L, vocab_size=16)
        return memory_model.stored_block_bytes(c, B, L)
        """,
    ),
    (
        "06_chunking", "chunked_ff_forward", "does not chunk",
        """
        return layers.feedforward_forward(x, p)[0]
        """,
    ),
    (
        "06_chunking", "chunked_ff_backward", "does not chunk",
        """
        _, cache = layers.feedforward_forward(x, p)
        return layers.feedforward_backward(dout, cache)
        """,
    ),
    (
        "06_chunking", "chunked_loss", "does not chunk",
        """
        z = h @ w + b
        lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
        n = targets.size
        value = float(np.sum(lse - np.take_along_axis(z, targets[..., None], -1)[..., 0])) / n
        dz = np.exp(z - lse[..., None])
        dz -= np.eye(z.shape[-1])[targets]
        dz /= n
        return value, dz @ w.T, np.einsum("bld,blv->dv", h, dz), dz.sum((0, 1))
        """,
    ),
    # the guide's common mistakes
    (
        "03_lsh_attention", "sort_and_chunk", "sorts ties out of position order",
        """
        order = np.lexsort((-np.arange(buckets.size), buckets))
        return order, order.reshape(-1, chunk_len)
        """,
    ),
    (
        "03_lsh_attention", "mask_window", "masks the query's own key with -inf",
        """
        out = np.where(q_bucket[:, None] != k_bucket[None, :], NEG_MASK, logits)
        if causal:
            out = np.where(k_pos[None, :] > q_pos[:, None], NEG_MASK, out)
        return np.where(q_pos[:, None] == k_pos[None, :], -np.inf, out)
        """,
    ),
    (
        "03_lsh_attention", "lsh_attention_one_round", "scales the logits by 1/sqrt(Dh)",
        """
        buckets = lsh.hash_vectors(qk[None, None], rotations)[0, 0, 0]
        _, chunks = sort_and_chunk(buckets, chunk_len)
        windows = look_back(chunks, 1)
        keys = qk / np.linalg.norm(qk, axis=-1, keepdims=True)
        out = np.zeros((qk.shape[0], v.shape[-1]))
        for queries, window in zip(chunks, windows):
            logits = qk[queries] @ keys[window].T / np.sqrt(qk.shape[-1])
            logits = mask_window(logits, queries, window, buckets[queries], buckets[window],
                                 causal)
            weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
            weights /= weights.sum(axis=-1, keepdims=True)
            out[queries] = weights @ v[window]
        return out
        """,
    ),
    (
        "04_multiround_lsh", "combine_rounds", "averages the rounds",
        """
        return outs.mean(axis=0), lses.max(axis=0) + np.log(lses.shape[0])
        """,
    ),
    (
        "05_reversible", "reverse", "reverses in the wrong order",
        """
        x1 = y1 - F(y2)
        return x1, y2 - G(x1)
        """,
    ),
    (
        "06_chunking", "chunked_ff_backward", "overwrites the weight gradients chunk by chunk",
        """
        dx = np.empty_like(x)
        dp = {k: np.zeros_like(v) for k, v in p.items()}
        for start in range(0, x.shape[1], S):
            s = slice(start, start + S)
            _, cache = layers.feedforward_forward(x[:, s], p)
            dx[:, s], dp_chunk = layers.feedforward_backward(dout[:, s], cache)
            for k in dp:
                dp[k] = dp_chunk[k]
        return dx, dp
        """,
    ),
]  # fmt: skip


def _with_body(source: str, function: str, body: str) -> str:
    """``source`` with the solution region of ``def function(`` replaced by ``body``."""
    start = source.index(f"def {function}(")
    begin = source.index("# BEGIN SOLUTION\n", start) + len("# BEGIN SOLUTION\n")
    end = source.index("# END SOLUTION", begin)
    end = source.rindex("\n", begin, end) + 1  # the END line's indentation stays
    return (
        source[:begin]
        + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
        + "\n"
        + source[end:]
    )


def _first_check_after(cells, function: str) -> int:
    defined = next(
        i for i, c in enumerate(cells) if re.search(rf"^def {function}\(", c.source, re.M)
    )
    return next(i for i, c in enumerate(cells) if i > defined and builder.is_check_cell(c))


@pytest.mark.parametrize(
    "exercise, function, wrong, body", CASES, ids=[f"{c[0][:2]}-{c[1]}-{c[2]}" for c in CASES]
)
def test_the_grader_fails_a_wrong_or_cheating_answer(exercise, function, wrong, body, tmp_path):
    source = ROOT / "exercises" / f"{exercise}.py"
    changed = tmp_path / source.name
    changed.write_text(_with_body(source.read_text(), function, body))
    _, solution = builder.build(changed)
    cells = _code_cells(solution)
    check = _first_check_after(cells, function)
    solution.cells = cells[: check + 1]
    NotebookClient(
        solution, timeout=120, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(ROOT / "exercises")}},
    ).execute()  # fmt: skip
    errors = _errors(solution.cells[check])
    assert errors == ["ExerciseFailed"], (
        f"an answer that {wrong} {'raised ' + errors[0] if errors else 'passed'}:\n"
        f"{solution.cells[check].source}"
    )
