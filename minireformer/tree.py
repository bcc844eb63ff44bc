"""Parameter trees: nested dicts and lists whose leaves are arrays.

Parameters live in plain nested containers (``params["blocks"][3]["attn"]["w_qk"]``) and gradients
mirror that structure exactly. The optimizer and the gradient
checker walk a tree and its gradient tree together through the helpers below, and the models
check a tree against their config with :func:`check_params` before using it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from . import backend
from .checks import check_finite, check_float_array, check_keys


def leaves_with_paths(tree, path: tuple = ()) -> list[tuple[tuple, object]]:
    """``[(path, leaf), ...]`` for every array leaf, in a fixed order (dict keys sorted)."""
    out = []
    _collect(tree, path, out)
    return out


def _collect(tree, path: tuple, out: list) -> None:
    if isinstance(tree, dict):
        for key in sorted(tree):
            _collect(tree[key], path + (key,), out)
    elif isinstance(tree, (list, tuple)):
        for i, sub in enumerate(tree):
            _collect(sub, path + (i,), out)
    else:
        out.append((path, tree))


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


def leaf_name(root: str, path: tuple) -> str:
    """``('blocks', 0, 'w')`` under ``root`` "params" -> ``'params.blocks[0].w'``."""
    rest = path_str(path)
    return root if not rest else f"{root}{'' if rest.startswith('[') else '.'}{rest}"


# --- A parameter tree against its config ---------------------------------------------------------


class LeafSpec(NamedTuple):
    shape: tuple
    dtype: str  # its name, e.g. "float32"


_SPECS: dict = {}  # (init, config) -> (the expected tree of LeafSpec, its flat list); a few


def _specs(config, init):
    """The tree ``init(config, rng)`` returns with :class:`LeafSpec` leaves, and those leaves as a
    list of (path, shape, dtype), computed once per config (configs are frozen, so hashable)."""
    key = (init, config)
    if key not in _SPECS:
        if len(_SPECS) >= 16:
            _SPECS.clear()
        params = init(config, backend.default_rng(0))  # a private Generator: nothing drawn
        spec = map_tree(lambda a: LeafSpec(tuple(a.shape), a.dtype.name), params)
        flat = [(path, tuple(a.shape), a.dtype.name) for path, a in leaves_with_paths(params)]
        _SPECS[key] = spec, flat
    return _SPECS[key]


def param_spec(config, init):
    """The tree ``init(config, rng)`` returns, with every leaf replaced by its :class:`LeafSpec`.

    Computed once per distinct config by running ``init`` with a private Generator (nothing is
    drawn from the caller's), so that the expected structure is by construction what the model's
    init function makes; only the shapes and dtypes are kept.
    """
    return _specs(config, init)[0]


def check_params(params, config, init) -> None:
    """Check a parameter tree against what ``init(config, rng)`` would make, before any use.

    Compared: the keys of every dict, the length of every list (one block per layer), and the
    shape and dtype of every leaf (``config.dtype``); and every leaf must be finite (the one
    policy for non-finite parameters: refused at the models' entry, ``loss_and_grads`` and
    ``forward_logits``, so that NaN in a bias and NaN in an embedding fail alike). Messages name
    the leaf: ``params.head.out.w: expected shape (16, 11), got (16, 20)``.

    A well-formed tree is recognised by one walk comparing its leaves with the expected list; only
    a tree that differs is walked again to name what is wrong. What shapes cannot tell is not
    checked: parameters of another ``n_heads`` with the same H * Dh look alike (checkpoints store
    the config beside the parameters and catch that case when they are loaded).
    """
    spec, flat = _specs(config, init)
    try:
        got = [(path, tuple(a.shape), a.dtype.name) for path, a in leaves_with_paths(params)]
    except AttributeError:  # a leaf that is not an array
        got = None
    if got != flat:
        _check_subtree("params", params, spec)
    _check_finite_leaves("params", params)


def _check_finite_leaves(root: str, tree) -> None:
    """Every leaf finite, decided by one reduction over all of them: on a GPU that is one
    device-to-host transfer per call rather than one per leaf. Names the first bad leaf."""
    arrays = leaves(tree)
    xp = backend.array_module(*arrays)
    if bool(xp.all(xp.stack([xp.all(xp.isfinite(a)) for a in arrays]))):
        return
    for path, a in leaves_with_paths(tree):
        check_finite(leaf_name(root, path), a)


def _check_subtree(name: str, tree, spec) -> None:
    if isinstance(spec, LeafSpec):
        check_float_array(name, tree, shape=spec.shape, finite=False)  # see _check_finite_leaves
        if tree.dtype.name != spec.dtype:
            raise TypeError(f"{name}: expected dtype {spec.dtype} (the config's), got {tree.dtype}")
    elif isinstance(spec, dict):
        check_keys(name, tree, spec)
        for key in spec:
            _check_subtree(f"{name}.{key}", tree[key], spec[key])
    else:
        if not isinstance(tree, (list, tuple)) or len(tree) != len(spec):
            got = len(tree) if isinstance(tree, (list, tuple)) else type(tree).__name__
            raise ValueError(f"{name}: expected a list of {len(spec)} entries, got {got}")
        for i, (sub, sub_spec) in enumerate(zip(tree, spec)):
            _check_subtree(f"{name}[{i}]", sub, sub_spec)
