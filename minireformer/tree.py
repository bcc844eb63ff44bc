"""Parameter trees: nested dicts and lists whose leaves are arrays.

Parameters live in plain nested containers (``params["blocks"][3]["attn"]["w_qk"]``) and gradients
mirror that structure exactly. The optimizer and the gradient
checker walk a tree and its gradient tree together through the helpers below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator


def leaves_with_paths(tree, path: tuple = ()) -> Iterator[tuple[tuple, object]]:
    """Yield ``(path, leaf)`` for every array leaf, in a fixed order (dict keys sorted)."""
    if isinstance(tree, dict):
        for key in sorted(tree):
            yield from leaves_with_paths(tree[key], path + (key,))
    elif isinstance(tree, (list, tuple)):
        for i, sub in enumerate(tree):
            yield from leaves_with_paths(sub, path + (i,))
    else:
        yield path, tree


def leaves(tree) -> list:
    """The array leaves of ``tree`` in the order of :func:`leaves_with_paths`."""
    return [leaf for _, leaf in leaves_with_paths(tree)]


def map_tree(fn: Callable, tree, *others):
    """A tree of the same structure with ``fn(leaf, *other_leaves)`` at each leaf."""
    if isinstance(tree, dict):
        return {k: map_tree(fn, tree[k], *(o[k] for o in others)) for k in tree}
    if isinstance(tree, (list, tuple)):
        return type(tree)(map_tree(fn, t, *(o[i] for o in others)) for i, t in enumerate(tree))
    return fn(tree, *others)


def check_same_structure(a, b, name: str = "grads") -> None:
    """Raise ``ValueError`` unless trees ``a`` and ``b`` have the same paths and leaf shapes."""
    pa = [(p, getattr(x, "shape", None)) for p, x in leaves_with_paths(a)]
    pb = [(p, getattr(x, "shape", None)) for p, x in leaves_with_paths(b)]
    if pa != pb:
        missing = {p for p, _ in pa} ^ {p for p, _ in pb}
        if missing:
            detail = f"paths differ: {sorted(map(path_str, missing))[:5]}"
        else:
            p, sa, sb = next((p, sa, sb) for (p, sa), (_, sb) in zip(pa, pb) if sa != sb)
            detail = f"{path_str(p)} expected shape {sa}, got {sb}"
        raise ValueError(f"{name}: expected the structure of params, {detail}")


def path_str(path: tuple) -> str:
    """``('blocks', 0, 'attn', 'w_qk')`` -> ``'blocks[0].attn.w_qk'``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
