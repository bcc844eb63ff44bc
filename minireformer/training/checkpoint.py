"""Checkpoints: a whole training state in one ``.npz`` file, written atomically, loaded safely.

One file holds the parameters, the Adam moments and step, the model config, the training and
data settings, every random Generator's state (the training batches' and the model's: LSH
rotations, dropout) and the training log, so that ``--resume`` continues *exactly*: N steps, save,
load, N more steps gives bit-identical parameters to 2N steps straight.

Layout of the archive (NumPy ``.npz``, loaded with ``allow_pickle=False``, so opening a file never
runs code)::

    "meta"               0-d str: JSON {"format": 1, "model": {"kind", fields}, "train": {...},
                         "data": {...}, "step": int, "rng": {name: bit-generator state},
                         "extra": {...}}
    "params/<path>"      one array per parameter, path as ``blocks[0].attn.w_qk``
    "adam_m/<path>"      Adam's first moments (absent in a weights-only file)
    "adam_v/<path>"      Adam's second moments
    "log"                (n, 5) float64 rows (step, train loss, eval loss, eval accuracy, seconds)

Writing goes to a temporary file in the same folder, then ``os.replace`` renames it onto the
target: a crash in the middle leaves the previous checkpoint whole. A truncated or corrupt file,
a missing array, or arrays that do not fit the config raise :class:`CheckpointError` naming what
is wrong.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .. import backend
from ..checks import check_nonnegative_int
from ..tree import check_params, leaves_with_paths, param_spec, path_str
from . import lm

FORMAT = 1
ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of every .npz (a zip archive)
LOG_COLUMNS = ("step", "train_loss", "eval_loss", "eval_accuracy", "seconds")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, incomplete, or for another model."""


def check_destination(path) -> Path:
    """Make sure a checkpoint can be written at ``path`` before any work is done for it.

    Refused with :class:`CheckpointError`: a directory, a folder that cannot be made (a file in
    its way), a folder without write permission or on a read-only file system (found by writing
    and removing a probe file there). The folder is created when missing. Returns the path.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path}: is a directory; name a file in it, such as {path / 'run.npz'}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = _temporary_beside(path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise CheckpointError(f"{path}: cannot write a checkpoint there ({reason})") from None
    return path


def _temporary_beside(path: Path) -> tuple:
    """``(fd, name)`` of a new hidden file ``.<name>.<random>.tmp`` in ``path``'s folder."""
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files (:func:`_temporary_beside`) that interrupted saves of ``path``
    left (a kill during a save leaves one the size of the checkpoint)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _flatten(prefix: str, tree) -> dict:
    return {f"{prefix}/{path_str(p)}": backend.to_numpy(x) for p, x in leaves_with_paths(tree)}


def save(
    path,
    *,
    params,
    config,
    step: int,
    adam_state=None,
    train=None,
    data=None,
    rngs=None,
    log=None,
    extra=None,
) -> Path:
    """Write a checkpoint to ``path`` atomically; returns the path.

    Args:
        params: the parameter tree; config: its ReformerConfig or TransformerConfig.
        step: optimizer steps taken so far.
        adam_state: ``Adam.init`` / ``Adam.step`` state, or None for a weights-only file.
        train, data: JSON-able dicts (training settings, the data source's ``spec()``).
        rngs: ``{name: numpy.random.Generator}`` whose states are saved.
        log: (n, 5) rows as in :data:`LOG_COLUMNS`, or None.
        extra: any further JSON-able facts (e.g. the wall time of training).
    """
    path = Path(path)
    check_params(params, config, lm.init_params)  # refused here, not when it is loaded
    step = check_nonnegative_int("step", step)
    if train and "steps" in train and step > train["steps"]:
        raise ValueError(f"step: {step} is past the run's {train['steps']} steps")
    meta = {
        "format": FORMAT,
        "model": lm.config_to_dict(config),
        "train": train or {},
        "data": data or {},
        "step": int(step),
        "rng": {name: g.bit_generator.state for name, g in (rngs or {}).items()},
        "extra": extra or {},
    }
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays.update(_flatten("params", params))
    if adam_state is not None:
        arrays.update(_flatten("adam_m", adam_state["m"]))
        arrays.update(_flatten("adam_v", adam_state["v"]))
    log = np.zeros((0, len(LOG_COLUMNS))) if log is None else np.asarray(log, dtype=np.float64)
    arrays["log"] = log.reshape(-1, len(LOG_COLUMNS))
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint follows the umask
        os.replace(tmp, path)  # atomic on POSIX and Windows: the old file or the new, never half
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class Checkpoint:
    """A loaded checkpoint: ``config``, ``params``, ``adam_state`` (or None), ``step``, ``train``,
    ``data``, ``rng_states``, ``log`` (n, 5) and ``extra``."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def generator(self, name: str) -> np.random.Generator:
        """A fresh PCG64 Generator in the saved state ``name``."""
        if name not in self.rng_states:
            raise CheckpointError(f"checkpoint: no random state {name!r} saved")
        g = np.random.Generator(np.random.PCG64())
        try:
            g.bit_generator.state = self.rng_states[name]
        except (TypeError, ValueError, KeyError):
            raise CheckpointError(
                f"checkpoint {self.path}: random state {name!r} is not a PCG64 state"
            ) from None
        return g


def _unflatten(arrays, prefix: str, spec, kind: str, source):
    """Arrays ``prefix/<path>`` as a tree shaped like ``spec`` (``tree.param_spec`` of the
    config: the structure, shapes and dtypes its init makes)."""
    used = set()

    def fill(node, path=()):
        if isinstance(node, dict):
            return {k: fill(v, path + (k,)) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v, path + (i,)) for i, v in enumerate(node)]
        key = f"{prefix}/{path_str(path)}"
        if key not in arrays:
            raise CheckpointError(f"{source}: missing array {key!r} for this {kind}")
        a = arrays[key]
        if a.shape != node.shape or a.dtype != node.dtype:
            raise CheckpointError(
                f"{source}: {key} has shape {a.shape} {a.dtype}, the config expects "
                f"{node.shape} {node.dtype}"
            )
        used.add(key)
        return backend.asarray(a)

    tree = fill(spec)
    extra = sorted(k for k in arrays if k.startswith(prefix + "/") and k not in used)
    if extra:
        raise CheckpointError(f"{source}: arrays the config has no place for: {extra[:3]}")
    return tree


def load(path, *, expect_config=None) -> Checkpoint:
    """Read a checkpoint written by :func:`save`.

    ``expect_config``: if given, the checkpoint's model config must equal it (``CheckpointError``
    listing the fields that differ), as when resuming a run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    with open(path, "rb") as f:
        if f.read(4) != ZIP_MAGIC:  # not an .npz: refused before NumPy guesses (pickle, .npy)
            raise CheckpointError(f"checkpoint {path}: not a minireformer checkpoint (.npz)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"checkpoint {path}: unreadable (truncated or corrupt): {e}"
        ) from None
    _check_meta(path, meta, arrays)
    try:
        config = lm.config_from_dict(meta["model"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: its model config is invalid: {e}") from None
    if expect_config is not None:
        _check_same_config(path, config, expect_config)
    spec = param_spec(config, lm.init_params)  # shapes and dtypes, nothing drawn or kept
    source = f"checkpoint {path}"
    params = _unflatten(arrays, "params", spec, lm.kind_of(config), source)
    adam_state = None
    if any(k.startswith("adam_m/") for k in arrays):
        adam_state = {
            "m": _unflatten(arrays, "adam_m", spec, lm.kind_of(config), source),
            "v": _unflatten(arrays, "adam_v", spec, lm.kind_of(config), source),
            "step": int(meta["step"]),
        }
    return Checkpoint(
        path=path,
        config=config,
        params=params,
        adam_state=adam_state,
        step=int(meta["step"]),
        train=meta.get("train", {}),
        data=meta.get("data", {}),
        rng_states=meta.get("rng", {}),
        log=arrays.get("log", np.zeros((0, len(LOG_COLUMNS)))),
        extra=meta.get("extra", {}),
    )


def _check_meta(path, meta, arrays) -> None:
    """The parts of a checkpoint that :func:`load` reads, before it reads them."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: its meta is not a JSON object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path}: format {meta.get('format')!r}, expected {FORMAT}"
        )
    for key in ("model", "step"):
        if key not in meta:
            raise CheckpointError(f"checkpoint {path}: its meta has no {key!r}")
    step = meta["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"checkpoint {path}: step {step!r} is not an integer >= 0")
    for key in ("train", "data", "rng", "extra"):
        if not isinstance(meta.get(key, {}), dict):
            raise CheckpointError(f"checkpoint {path}: its {key!r} is not a JSON object")
    log = arrays.get("log")
    if log is not None and (log.ndim != 2 or log.shape[1] != len(LOG_COLUMNS)):
        raise CheckpointError(
            f"checkpoint {path}: its log has shape {log.shape}, expected (n, {len(LOG_COLUMNS)})"
        )


def _check_same_config(path, got, want) -> None:
    got_d, want_d = lm.config_to_dict(got), lm.config_to_dict(want)
    if got_d["kind"] != want_d["kind"]:
        raise CheckpointError(
            f"checkpoint {path}: holds a {got_d['kind']} model, expected a {want_d['kind']}"
        )
    diff = [k for k in want_d if got_d.get(k) != want_d[k]]
    if diff:
        detail = ", ".join(f"{k}={got_d.get(k)!r} (expected {want_d[k]!r})" for k in diff[:4])
        raise CheckpointError(f"checkpoint {path}: another config: {detail}")
